"""The autograd engine: batched Word2Vec.forward + loss.backward() + a torch optimizer.

    engine = AutogradEngine(model, corpus, cfg, torch.device("cpu"))

The reference engine: any device, any loss (negative sampling, hierarchical or full softmax),
any optimizer (SGD, SparseAdam with sparse gradients, Adam, AdamW). Batches come from
w2v.batches (subsampling, dynamic windows and negatives drawn on the device).
"""

from __future__ import annotations

import torch

from w2v.batches import Batches
from w2v.engines import Step
from w2v.errors import W2VError

# The largest learning rate x examples per batch SGD takes. With SGD every example's full
# word2vec step is summed over the batch, so a word drawn many times in one batch (a frequent
# noise word: "the" is 1.7% of text8-prefix's noise draws, in one skip-gram pair in twelve at
# negative=5) moves by that many stale steps at once. Examples per batch: batch_size centres x
# (window + 1) skip-gram pairs each on average, or batch_size CBOW centres. Measured on
# text8-prefix, skip-gram, window 5: 0.025 x 4,096 x 6 gives NaN by step 70 (CPU) or 100 (GPU);
# 0.025 x 1,024 x 6 (the defaults) trains; 512 centres on a GPU reached analogy 0.087 / WS353
# 0.501 / SimLex 0.227 after 5 epochs (issue 10). Corpora without subsampling or with tiny
# vocabularies can need less (the planted test corpus with sample=0 diverges at the defaults).
SGD_MAX_STEP_SUM = 0.025 * 1024 * 6


class AutogradEngine:
    """Batched forward/backward with a torch optimizer (CPU or CUDA, dense or sparse)."""

    name = "autograd"

    @staticmethod
    def check(cfg, device: torch.device) -> None:
        """Refuse SGD batches whose summed steps diverge (see SGD_MAX_STEP_SUM)."""
        t, m = cfg.trainer, cfg.model
        per_centre = m.window + 1 if m.arch == "skipgram" else 1
        total = t.lr * t.batch_size * per_centre
        if t.optimizer == "sgd" and total > SGD_MAX_STEP_SUM * (1 + 1e-9):
            raise W2VError(
                f"trainer.engine=autograd with trainer.optimizer=sgd sums every example's full "
                f"word2vec step over a batch: trainer.lr={t.lr} x trainer.batch_size="
                f"{t.batch_size} x {per_centre} examples per centre = {total:g} is above the "
                f"{SGD_MAX_STEP_SUM:g} known to train (0.025 x 1024 x 6: the defaults; "
                "skip-gram on text8-prefix gives NaN within 100 steps at 614): lower "
                "trainer.batch_size or trainer.lr, or use word2vec's per-pair updates "
                "(trainer.engine=auto: cuda on a GPU, fused on CPU), or trainer.optimizer=adam"
            )

    def __init__(self, model, corpus, cfg, device: torch.device):
        self.model, self.cfg = model, cfg
        sgd = cfg.trainer.optimizer == "sgd"
        # With SGD every example takes a full word2vec step and ranks' changes add up, as
        # Hogwild threads' do; Adam-family steps are normalised, so they take means.
        self.reduction = self.combine = "sum" if sgd else "mean"
        model.reduction = self.reduction
        self.optimizer = make_optimizer(model, cfg)
        vocab = corpus.vocab
        self.batches = Batches(
            corpus.ids,
            corpus.doc_offsets,
            vocab.keep_probs(cfg.model.sample),
            vocab.noise_probs(cfg.model.ns_exponent) if cfg.model.loss == "negative" else None,
            window=cfg.model.window,
            negative=cfg.model.negative,
            arch=cfg.model.arch,
            batch_size=cfg.trainer.batch_size,
            device=device,
            seed=cfg.trainer.seed,
        )

    def begin_epoch(self, epoch: int) -> int:
        """Redraw the epoch's subsampling and order; return its number of steps."""
        self.view = self.batches.view(epoch)
        return self.batches.steps(self.view)

    def step(self, epoch: int, step: int, steps: int, lr: float, lr_end: float) -> Step:
        if step * self.batches.batch_size >= len(self.view.order):
            return Step(step, steps, 0.0, 0)  # this rank's shard is done (distributed)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.batches.batch(self.view, epoch, step)
        if self.batches.compact and batch.examples == 0:  # an int when compact: no sync
            return Step(step, steps, 0.0, 0)
        loss = self.model(batch.inputs, batch.targets, batch.mask, batch.negatives,
                          batch.weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        loss = loss.detach()
        total = loss if self.reduction == "sum" else loss * batch.examples
        return Step(step, steps, total, batch.examples)

    def state_dict(self) -> dict | None:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None:
            self.optimizer.load_state_dict(state)


def make_optimizer(model, cfg) -> torch.optim.Optimizer:
    name, lr = cfg.trainer.optimizer, cfg.trainer.lr
    params = list(model.parameters())
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sparse_adam":
        return torch.optim.SparseAdam(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr)
