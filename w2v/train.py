"""The training loop and the Hydra entry point.

    python -m w2v.train model=cbow trainer.epochs=5 data=local data.path=corpus.txt

One visible loop (nanoGPT's shape): learning rate at step, update, log every N, evaluate every
N, checkpoint every N. A step is one autograd batch, or one fused-engine job of documents.
Everything a run writes lands in its Hydra run dir: vectors.pt, vectors.txt, metrics.json,
tb/ (TensorBoard) and checkpoints/.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from w2v import checkpoint as ckpt
from w2v.atomic import atomic_write_text
from w2v.batches import Batches, _seed
from w2v.config import Config, register_configs
from w2v.corpus import Corpus, build_corpus
from w2v.errors import W2VError
from w2v.model import Word2Vec, build_model


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived: a checkpoint was written; exit with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Step:
    """What one step reports; `loss_sum` may stay on the device until log time."""

    step: int  # index within the epoch
    steps: int  # steps in this epoch
    loss_sum: torch.Tensor | float
    examples: int


# ---------------------------------------------------------------------------------------------
# Engines: how one step updates the model.


class AutogradEngine:
    """Batched forward/backward with a torch optimizer (CPU or CUDA, dense or sparse)."""

    name = "autograd"

    def __init__(self, model: Word2Vec, corpus: Corpus, cfg: Config, device: torch.device):
        self.model, self.cfg = model, cfg
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

    def epoch(self, epoch: int, start: int, lr_at) -> Iterator[Step]:
        view = self.batches.view(epoch)
        steps = self.batches.steps(view)
        for step in range(start, steps):
            lr = lr_at(epoch, step / steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batch = self.batches.batch(view, epoch, step)
            if batch.examples == 0:
                yield Step(step, steps, 0.0, 0)
                continue
            loss = self.model(batch.inputs, batch.targets, batch.mask, batch.negatives)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            per_example = loss.detach() if self.model.reduction == "sum" else loss.detach() * batch.examples
            yield Step(step, steps, per_example, batch.examples)

    def state_dict(self) -> dict | None:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None:
            self.optimizer.load_state_dict(state)


class FusedEngine:
    """word2vec's per-pair loop compiled with numba, Hogwild over threads, on the model's
    own weight tensors (see w2v/fused.py). One step is one job of whole documents."""

    name = "fused"

    def __init__(self, model: Word2Vec, corpus: Corpus, cfg: Config):
        from w2v import fused

        self.fused, self.model, self.cfg = fused, model, cfg
        vocab = corpus.vocab
        self.ids = corpus.ids.numpy()
        self.doc_offsets = corpus.doc_offsets.numpy()
        self.keep = vocab.keep_probs(cfg.model.sample)
        self.tables = {}
        if cfg.model.loss == "negative":
            self.tables["noise"] = fused.noise_table(vocab.noise_probs(cfg.model.ns_exponent))
        else:
            huff = vocab.huffman()
            self.tables.update(codes=huff.codes, points=huff.points, lengths=huff.lengths)
        self.jobs = fused.plan_jobs(self.doc_offsets, cfg.trainer.chunk_words)
        fused.set_threads(cfg.trainer.threads)

    def epoch(self, epoch: int, start: int, lr_at) -> Iterator[Step]:
        steps, m = len(self.jobs), self.cfg.model
        in_w = self.model.input.weight.data.numpy()
        out_w = self.model.output.weight.data.numpy()
        for step in range(start, steps):
            doc_start, doc_end = self.jobs[step]
            stats = self.fused.train_job(
                in_w, out_w, self.ids, self.doc_offsets, doc_start, doc_end, self.keep,
                arch=m.arch, loss=m.loss, window=m.window, negative=m.negative,
                cbow_mean=m.cbow_mean, lr_start=lr_at(epoch, step / steps),
                lr_end=lr_at(epoch, (step + 1) / steps),
                seed=_seed(self.cfg.trainer.seed, epoch, step), **self.tables,
            )
            yield Step(step, steps, stats.loss_sum, stats.pairs)

    def state_dict(self) -> None:
        return None  # plain SGD: nothing beyond the weights

    def load_state_dict(self, state) -> None:
        pass


def make_optimizer(model: Word2Vec, cfg: Config) -> torch.optim.Optimizer:
    name, lr = cfg.trainer.optimizer, cfg.trainer.lr
    params = list(model.parameters())
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sparse_adam":
        return torch.optim.SparseAdam(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr)


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise W2VError("trainer.device=cuda but no CUDA GPU is visible; use trainer.device=cpu")
    return torch.device(name)


def choose_engine(cfg: Config, device: torch.device) -> str:
    t, m = cfg.trainer, cfg.model
    fusable = device.type == "cpu" and t.optimizer == "sgd" and m.loss in ("negative", "hs")
    if t.engine == "auto":
        return "fused" if fusable and not m.sparse else "autograd"
    if t.engine == "fused" and not fusable:
        raise W2VError(
            "trainer.engine=fused runs plain SGD on the CPU with model.loss=negative or hs; "
            f"got device={device.type}, optimizer={t.optimizer}, loss={m.loss}: "
            "use trainer.engine=autograd"
        )
    return t.engine


# ---------------------------------------------------------------------------------------------
# The loop.


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def lr_schedule(cfg: Config):
    """word2vec's linear decay from lr to min_lr over all epochs, by words processed."""
    t = cfg.trainer

    def lr_at(epoch: int, fraction: float) -> float:
        progress = (epoch + fraction) / t.epochs
        return t.lr - (t.lr - t.min_lr) * progress

    return lr_at


def train(cfg: Config, run_dir: str | Path) -> dict:
    """Train on cfg's corpus; write vectors, metrics, TensorBoard logs and checkpoints."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t = cfg.trainer
    torch.manual_seed(t.seed)
    torch.set_num_threads(t.threads)
    device = choose_device(t.device)
    engine_name = choose_engine(cfg, device)

    corpus = build_corpus(cfg.data, progress=t.progress)
    reduction = "sum" if t.optimizer == "sgd" else "mean"
    model = build_model(cfg.model, corpus.vocab, reduction=reduction).to(device)
    if engine_name == "fused":
        engine = FusedEngine(model, corpus, cfg)
    else:
        engine = AutogradEngine(model, corpus, cfg, device)

    position = ckpt.Position()
    if t.resume:
        path = ckpt.resolve(t.resume, run_dir)
        position = ckpt.restore(path, model, engine, corpus.vocab, cfg)
        print(f"resumed from {path} at epoch {position.epoch}, step {position.step}")

    writer = SummaryWriter(str(run_dir / "tb"))
    loop = Loop(cfg, run_dir, model, engine, corpus, writer, position)
    with StopFlag() as stop:
        loop.run(stop)
    metrics = loop.finish()
    writer.close()
    return metrics


class Loop:
    """The state of one training run; `run` is the loop, `finish` the exports."""

    def __init__(self, cfg, run_dir, model, engine, corpus, writer, position):
        self.cfg, self.run_dir, self.model, self.engine = cfg, run_dir, model, engine
        self.corpus, self.writer, self.pos = corpus, writer, position
        self.lr_at = lr_schedule(cfg)
        self.ckpt_dir = run_dir / "checkpoints"
        # Raw words (before OOV drop and subsampling) per retained token, for raw words/s.
        self.raw_per_token = corpus.raw_tokens / max(len(corpus.ids), 1)
        self.train_seconds = 0.0
        self.eval_metrics: dict[str, float] = {}
        self.last_loss = float("nan")

    def run(self, stop: StopFlag) -> None:
        cfg, t = self.cfg, self.cfg.trainer
        total_words = self.corpus.raw_tokens * t.epochs
        bar = tqdm(total=total_words, initial=self.pos.words_done, unit="w", unit_scale=True,
                   disable=not t.progress, desc=f"{cfg.model.arch}/{self.engine.name}")
        interval_loss, interval_examples = 0.0, 0
        epoch_loss, epoch_examples = 0.0, 0
        interval_start, interval_words = time.perf_counter(), 0
        start = time.perf_counter()
        for epoch in range(self.pos.epoch, t.epochs):
            first = self.pos.step if epoch == self.pos.epoch else 0
            for s in self.engine.epoch(epoch, first, self.lr_at):
                words = self._words_in_step(s)
                self.pos.advance(epoch, s.step + 1, words)
                interval_loss = interval_loss + s.loss_sum
                epoch_loss = epoch_loss + s.loss_sum
                interval_examples += s.examples
                epoch_examples += s.examples
                interval_words += words
                bar.update(words)
                if self.pos.global_step % t.log_every == 0:
                    # The only device sync: the loss is read here, at log time.
                    mean = _mean(interval_loss, interval_examples)
                    elapsed = time.perf_counter() - interval_start
                    self._log_step(mean, interval_words / max(elapsed, 1e-9), epoch, s, bar)
                    interval_loss, interval_examples = 0.0, 0
                    interval_start, interval_words = time.perf_counter(), 0
                if t.eval_every and self.pos.global_step % t.eval_every == 0:
                    self._evaluate()
                if t.ckpt_every and self.pos.global_step % t.ckpt_every == 0:
                    self._checkpoint()
                if stop.signum is not None:
                    self.train_seconds += time.perf_counter() - start
                    self._interrupted(stop.signum, bar)
            if epoch_examples:
                mean = _mean(epoch_loss, epoch_examples)
                self._check_finite(mean)
                self.writer.add_scalar("epoch/loss", mean, epoch + 1)
                self.last_loss = mean
            epoch_loss, epoch_examples = 0.0, 0
            self.pos.next_epoch()
            self._checkpoint()
        self.train_seconds += time.perf_counter() - start
        bar.close()

    def _words_in_step(self, s: Step) -> int:
        # Steps split the epoch evenly enough that each accounts for its share of raw words.
        per_epoch = self.corpus.raw_tokens
        return int(per_epoch * (s.step + 1) / s.steps) - int(per_epoch * s.step / s.steps)

    def _log_step(self, mean: float, words_per_sec: float, epoch: int, s: Step, bar) -> None:
        self._check_finite(mean)
        lr = self.lr_at(epoch, (s.step + 1) / s.steps)
        g = self.pos.global_step
        self.writer.add_scalar("train/loss", mean, g)
        self.writer.add_scalar("train/lr", lr, g)
        self.writer.add_scalar("train/words_per_sec", words_per_sec, g)
        self.last_loss = mean
        bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.5f}", refresh=False)

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            last = ckpt.latest(self.ckpt_dir)
            kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
            raise W2VError(
                f"the training loss became {loss} at step {self.pos.global_step}; "
                f"{kept}; lower trainer.lr or check the corpus"
            )

    def _checkpoint(self) -> Path:
        return ckpt.save(self.ckpt_dir, self.model, self.engine, self.corpus.vocab, self.cfg,
                         self.pos)

    def _interrupted(self, signum: int, bar) -> None:
        bar.close()
        path = self._checkpoint()
        name = signal.Signals(signum).name
        raise TrainingInterrupted(
            f"{name}: checkpoint written to {path}; continue with trainer.resume={path}",
            128 + signum,
        )

    def _evaluate(self) -> dict[str, float]:
        from w2v.evaluate import run_suites
        from w2v.vectors import KeyedVectors

        kv = KeyedVectors(self.corpus.vocab.words, self.model.input.weight.detach(),
                          counts=self.corpus.vocab.counts)
        metrics = run_suites(kv, self.cfg.eval)
        for key, value in metrics.items():
            self.writer.add_scalar(f"eval/{key}", value, self.pos.global_step)
        self.eval_metrics = metrics
        return metrics

    def finish(self) -> dict:
        from w2v.export import export_run

        export_run(self.run_dir, self.model, self.corpus.vocab, self.cfg.export)
        self._evaluate()
        self._projector()
        words = self.corpus.raw_tokens * self.cfg.trainer.epochs
        metrics = {
            "words_per_sec": words / max(self.train_seconds, 1e-9),
            "train_seconds": self.train_seconds,
            "epochs": self.cfg.trainer.epochs,
            "final_loss": self.last_loss,
            "engine": self.engine.name,
            "vocab_size": len(self.corpus.vocab),
            "corpus_words": self.corpus.raw_tokens,
            **{f"eval/{k}": v for k, v in self.eval_metrics.items()},
        }
        self.writer.add_hparams(_hparams(self.cfg), _numeric(metrics), run_name="hparams")
        atomic_write_text(self.run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        return metrics

    def _projector(self) -> None:
        n = min(self.cfg.eval.projector_words, len(self.corpus.vocab))
        if n == 0:
            return
        vocab = self.corpus.vocab
        labels = [[w, str(int(c))] for w, c in zip(vocab.words[:n], vocab.counts[:n])]
        self.writer.add_embedding(self.model.input.weight.detach()[:n].cpu(), metadata=labels,
                                  metadata_header=["word", "count"], tag="input_vectors")


def _mean(loss_sum, examples: int) -> float:
    value = float(loss_sum)  # a tensor syncs here, once per log interval
    return value / examples if examples else float("nan")


def _hparams(cfg: Config) -> dict:
    flat = {}
    for group in ("model", "trainer"):
        for key, value in OmegaConf.to_container(OmegaConf.structured(getattr(cfg, group))).items():
            if isinstance(value, (int, float, str, bool)):
                flat[f"{group}.{key}"] = value
    flat["data.name"] = cfg.data.name
    return flat


def _numeric(metrics: dict) -> dict:
    return {f"final/{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(v)}


# ---------------------------------------------------------------------------------------------
# The Hydra entry point: thin, so tests can call train() without Hydra.


def to_config(cfg: DictConfig) -> Config:
    """Compose-time validation: the dataclasses' __post_init__ checks every range."""
    return OmegaConf.to_object(cfg)


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def _hydra_main(dict_cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        cfg = to_config(dict_cfg)
        metrics = train(cfg, HydraConfig.get().runtime.output_dir)
    except W2VError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as stop:
        print(str(stop), file=sys.stderr)
        sys.exit(stop.code)
    print(f"done: {metrics['words_per_sec']:,.0f} words/s, final loss {metrics['final_loss']:.4f}")
    return metrics["final_loss"]


def main() -> None:
    register_configs()
    _hydra_main()


if __name__ == "__main__":
    main()
