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

# With SGD every example's full word2vec step is summed over the batch, so a row trained by
# many examples of one batch moves by that many stale steps at once: a frequent noise word
# ("the" is 1.7% of text8-prefix's noise draws), hierarchical softmax's nodes near the root
# (on every word's path), every row under full softmax. Past some learning rate x examples per
# batch (batch_size centres x (window + 1) skip-gram pairs each, or batch_size CBOW centres)
# the loss explodes. The largest values known to train, per loss, and what was measured
# (text8-prefix, skip-gram, window 5, lr 0.025, on the CPU with the GPU's arithmetic):
SGD_MAX_STEP_SUM = {
    "negative": 0.025 * 1024 * 6,  # 1,024 centres train; 4,096 give NaN at step 70
    "hs": 0.025 * 256 * 6,  # 256 train (3,000 steps, loss falling); 1,024 give NaN at step 60
    "softmax": 0.025 * 256 * 6,  # 256 train (600 steps); 1,024 explode at step 80-90
}
MEASURED = {"negative": "1024 centres train, 4096 give NaN within 100 steps",
            "hs": "256 centres train, 1024 give NaN within 100 steps",
            "softmax": "256 centres train, 1024 explode within 100 steps"}
# Corpora without subsampling or with tiny vocabularies can need less (the planted test
# corpus with sample=0 diverges with negative sampling at 1,024).


class AutogradEngine:
    """Batched forward/backward with a torch optimizer (CPU or CUDA, dense or sparse)."""

    name = "autograd"

    @staticmethod
    def check(cfg, device: torch.device) -> None:
        """Refuse SGD batches whose summed steps are past what is known to train."""
        t, m = cfg.trainer, cfg.model
        per_centre = m.window + 1 if m.arch == "skipgram" else 1
        total = t.lr * t.batch_size * per_centre
        limit = SGD_MAX_STEP_SUM[m.loss]
        if t.optimizer == "sgd" and total > limit * (1 + 1e-9):
            raise W2VError(
                f"trainer.engine=autograd with trainer.optimizer=sgd sums every example's full "
                f"word2vec step over a batch: trainer.lr={t.lr} x trainer.batch_size="
                f"{t.batch_size} x {per_centre} examples per centre = {total:g} is past the "
                f"{limit:g} known to train with model.loss={m.loss} (skip-gram on "
                f"text8-prefix at lr 0.025: {MEASURED[m.loss]}); lower trainer.batch_size or "
                "trainer.lr, or use word2vec's per-pair updates (trainer.engine=auto: cuda on a "
                "GPU, fused on CPU, for negative/hs), or trainer.optimizer=adam"
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

    def pause(self) -> None:
        pass  # every step ends with the weights updated

    def state_dict(self) -> dict | None:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None and state.get("engine") == "fused":
            raise W2VError("this checkpoint was written by the fused engine, whose steps are "
                           "jobs of documents, not batches: resume it with trainer.engine=fused")
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
