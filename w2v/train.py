"""The training loop and the Hydra entry point.

    python -m w2v.train model=cbow trainer.epochs=5 data=local data.path=corpus.txt

One visible loop (nanoGPT's shape): learning rate at step, update, log every N, evaluate every
N, checkpoint every N. A step is one autograd batch, or one fused-engine job of documents.
Everything a run writes lands in its Hydra run dir: vectors.pt, vectors.txt, metrics.json,
tb/ (TensorBoard) and checkpoints/.
"""

from __future__ import annotations

import functools
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from w2v import checkpoint as ckpt
from w2v import distributed
from w2v.atomic import atomic_write_text
from w2v.cli import CONF_DIR, Usage, report_errors, run_hydra, to_config
from w2v.config import Config
from w2v.corpus import build_corpus
from w2v.engines import Step, choose_engine, make_engine
from w2v.errors import W2VError
from w2v.init_from import init_weights, load_init
from w2v.model import build_model


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived: a checkpoint was written; exit with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise W2VError("trainer.device=cuda but no CUDA GPU is visible; use trainer.device=cpu")
    return torch.device(name)


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
    return cfg.trainer.lr_at  # (the fused engine applies it per token, from the same place)


def train(cfg: Config, run_dir: str | Path) -> dict:
    """Train on cfg's corpus; write vectors, metrics, TensorBoard logs and checkpoints."""
    run_dir = Path(run_dir)
    t = cfg.trainer
    torch.manual_seed(t.seed)
    torch.set_num_threads(t.threads)
    device = choose_device(t.device)
    engine_name = choose_engine(cfg, device)
    world = distributed.init_from_env(device)
    try:
        if world.main:
            run_dir.mkdir(parents=True, exist_ok=True)
        # Continued training: the old vocabulary decides the ids, so it is read first.
        init = load_init(cfg) if t.init_from else None
        # Rank 0 builds (or finds) the cached index tensors; the others then open the cache.
        if not world.main:
            distributed.barrier(world)
        corpus = build_corpus(cfg.data, progress=t.progress and world.main,
                              base=init.vocab if init else None)
        if world.main:
            distributed.barrier(world)
        if not bool((corpus.doc_offsets.diff() >= 2).any()):  # else the loss is NaN throughout
            raise W2VError(
                f"no document of {corpus.meta.get('source')} has two in-vocabulary words, so "
                "there is no (context, centre) pair to train on; join the short rows into "
                "longer documents or lower data.min_count"
            )
        shard = distributed.shard(corpus, world)
        model = build_model(cfg.model, corpus.vocab).to(device)
        if init is not None and not t.resume:  # a resumed run's weights are its checkpoint's
            init_weights(model, init, corpus.vocab, cfg)
        engine = make_engine(engine_name, model, shard, cfg, device)

        position = ckpt.Position()
        if t.resume:
            path = ckpt.resolve(t.resume, run_dir)
            position = ckpt.restore(path, model, engine, corpus.vocab, cfg)
            if world.main:
                print(f"resumed from {path} at epoch {position.epoch}, step {position.step}")

        writer = TensorBoard(run_dir / "tb") if world.main else None
        loop = Loop(cfg, run_dir, model, engine, corpus, writer, position, world)
        with StopFlag() as stop:
            try:
                loop.run(stop)
            finally:
                engine.pause()  # no engine thread may outlive the loop, even on an error
        return loop.finish()
    finally:
        distributed.shutdown(world)


class Loop:
    """The state of one training run; `run` is the loop, `finish` the exports.

    In a distributed run every rank runs the loop on its shard; only rank 0 (`world.main`)
    logs, evaluates, checkpoints and exports, and words are counted for the whole world."""

    def __init__(self, cfg, run_dir, model, engine, corpus, writer, position, world):
        self.cfg, self.run_dir, self.model, self.engine = cfg, run_dir, model, engine
        self.corpus, self.writer, self.pos, self.world = corpus, writer, position, world
        self.lr_at = lr_schedule(cfg)
        self.ckpt_dir = run_dir / "checkpoints"
        self.params = [p.data for p in model.parameters()]
        self.sync = distributed.Sync(world, self.params, engine.combine, cfg.trainer.sync_every)
        self.train_seconds = 0.0
        self.eval_metrics: dict[str, float] = {}
        self.last_loss = float("nan")

    def run(self, stop: StopFlag) -> None:
        cfg, t, main = self.cfg, self.cfg.trainer, self.world.main
        bar = tqdm(total=self.corpus.raw_tokens * t.epochs, initial=self.pos.words_done,
                   unit="w", unit_scale=True, disable=not (t.progress and main),
                   desc=f"{cfg.model.arch}/{self.engine.name}")
        interval = Interval()
        start = time.perf_counter()
        for epoch in range(self.pos.epoch, t.epochs):
            steps = distributed.agree_steps(self.world, self.engine.begin_epoch(epoch))
            first = self.pos.step if epoch == self.pos.epoch else 0
            epoch_total = Interval()
            for step in range(first, steps):
                lr, lr_end = self.lr_at(epoch, step / steps), self.lr_at(epoch, (step + 1) / steps)
                s = self.engine.step(epoch, step, steps, lr, lr_end)
                g = self.pos.global_step + 1  # the global step this one completes
                due = step + 1 == steps or any(n and g % n == 0 for n in (t.eval_every,
                                                                           t.ckpt_every))
                # Read the signal once: one arriving later is acted on after the next step.
                stop_now = stop.signum is not None
                if due or stop_now:
                    # The fused engine's threads run on past a step: make the model whole for
                    # the checkpoint, evaluation, sync or epoch end that follows. (Under
                    # torchrun it pauses after every step itself, as any sync may be due.)
                    self.engine.pause()
                stopping = self.sync(stop_now, force=due)
                words = _share(self.corpus.raw_tokens, step, steps)
                self.pos.advance(epoch, step + 1, words)
                interval.add(s, words)
                epoch_total.add(s, words)
                bar.update(words)
                if main and g % t.log_every == 0:
                    self._log_step(interval, lr_end, bar)  # reads the loss: one sync per interval
                    interval = Interval()
                if main and t.eval_every and g % t.eval_every == 0:
                    self._evaluate()
                if t.ckpt_every and g % t.ckpt_every == 0:
                    self._checkpoint()
                if stopping:
                    self.train_seconds += time.perf_counter() - start
                    bar.close()
                    self._interrupted(stop.signum)
            if main and float(epoch_total.examples):
                mean = epoch_total.mean()
                self._check_finite(mean)
                self.writer.add_scalar("epoch/loss", mean, epoch + 1)
                self.last_loss = mean
            self.pos.next_epoch()
            self._checkpoint()
        self.train_seconds += time.perf_counter() - start
        bar.close()

    def _log_step(self, interval: Interval, lr: float, bar) -> None:
        mean = interval.mean()
        self._check_finite(mean)
        g = self.pos.global_step
        self.writer.add_scalar("train/loss", mean, g)
        self.writer.add_scalar("train/lr", lr, g)
        self.writer.add_scalar("train/words_per_sec", interval.words_per_sec(), g)
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

    def _checkpoint(self) -> Path | None:
        if not self.world.main:
            distributed.barrier(self.world)  # wait until rank 0 has it on disk
            return None
        path = ckpt.save(self.ckpt_dir, self.model, self.engine, self.corpus.vocab, self.cfg,
                         self.pos)
        distributed.barrier(self.world)
        return path

    def _interrupted(self, signum: int | None) -> None:
        path = self._checkpoint()
        name = signal.Signals(signum).name if signum else "a stop signal on another rank"
        where = f"written to {path}; continue with trainer.resume={path}" if path else "written"
        raise TrainingInterrupted(f"{name}: checkpoint {where}", 128 + (signum or 15))

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
        synced = distributed.in_sync(self.world, self.params)
        words = self.corpus.raw_tokens * self.cfg.trainer.epochs
        metrics = {
            "words_per_sec": words / max(self.train_seconds, 1e-9),
            "train_seconds": self.train_seconds,
            "epochs": self.cfg.trainer.epochs,
            "final_loss": self.last_loss,
            "engine": self.engine.name,
            "vocab_size": len(self.corpus.vocab),
            "corpus_words": self.corpus.raw_tokens,
            "world_size": self.world.size,
            "rank": self.world.rank,
            "ranks_in_sync": synced,
        }
        if not self.world.main:
            return metrics
        from w2v.export import export_run

        export_run(self.run_dir, self.model, self.corpus.vocab, self.cfg.export)
        self._evaluate()
        self._projector()
        metrics.update({f"eval/{k}": v for k, v in self.eval_metrics.items()})
        self.writer.add_hparams(_hparams(self.cfg), _numeric(metrics), run_name="hparams")
        self.writer.close()
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


class TensorBoard:
    """SummaryWriter whose write errors (disk full, no permission) are one W2VError.

    TensorBoard writes from a background thread and raises a failure at the next call, so
    every call goes through `_guard`."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        if threading.excepthook is not _quiet_writer_thread:
            _quiet_writer_thread.previous = threading.excepthook
            threading.excepthook = _quiet_writer_thread
        self._writer = self._guard(SummaryWriter, str(logdir))

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return functools.partial(self._guard, getattr(self._writer, name))

    def _guard(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as err:
            raise W2VError(
                f"cannot write TensorBoard logs to {self.logdir}: {err.strerror or err}; free "
                "some space or choose a writable hydra.run.dir (checkpoints so far are intact)"
            ) from err


def _quiet_writer_thread(args) -> None:
    """TensorBoard's writer thread dies printing its OSError, then hands it to our next call
    (one error line there): print nothing for it here."""
    if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
        return
    _quiet_writer_thread.previous(args)


_quiet_writer_thread.previous = threading.excepthook


class Interval:
    """Loss and words over a logging interval; the loss may stay on the device until read."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | float = 0.0
        self.examples = 0
        self.words = 0
        self.start = time.perf_counter()

    def add(self, s: Step, words: int) -> None:
        self.loss = self.loss + s.loss_sum
        self.examples = self.examples + s.examples
        self.words += words

    def mean(self) -> float:
        examples = float(self.examples)  # a tensor syncs here, once per log interval
        return float(self.loss) / examples if examples else float("nan")

    def words_per_sec(self) -> float:
        return self.words / max(time.perf_counter() - self.start, 1e-9)


def _share(total: int, step: int, steps: int) -> int:
    """Raw words accounted to one step: steps split an epoch's words evenly."""
    return total * (step + 1) // steps - total * step // steps


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

USAGE = Usage(
    module="w2v.train",
    synopsis="[group=option ...] [key=value ...]",
    about="""
        Train word2vec (skip-gram or CBOW) on a corpus; the run writes vectors.pt,
        vectors.txt, metrics.json, TensorBoard logs (tb/) and checkpoints into its Hydra run
        dir (outputs/<date>/<time>/, or hydra.run.dir=...). Every setting is a Hydra override.
    """,
    examples=(
        "data.path=corpus.txt",
        "model=cbow model.dim=200 trainer.epochs=10 data.path=corpus.txt",
        "data=wikitext2 data.path=wiki.train.raw",
        "+experiment=text8_prefix_bench model=cbow",
        "model.loss=hs trainer.engine=autograd trainer.device=cuda",
        "-m model=skipgram,cbow model.dim=50,100",
        "trainer.resume=latest hydra.run.dir=outputs/2024-01-01/12-00-00",
        "--cfg job",
    ),
)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
@report_errors
def _hydra_main(dict_cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    cfg = to_config(dict_cfg)
    try:
        metrics = train(cfg, HydraConfig.get().runtime.output_dir)
    except TrainingInterrupted as stop:
        print(str(stop), file=sys.stderr)
        sys.exit(stop.code)
    if metrics["rank"] == 0:
        print(f"done: {metrics['words_per_sec']:,.0f} words/s, "
              f"final loss {metrics['final_loss']:.4f} -> {HydraConfig.get().runtime.output_dir}")
    return metrics["final_loss"]


@report_errors
def main() -> None:
    run_hydra(_hydra_main, USAGE)


if __name__ == "__main__":
    main()
