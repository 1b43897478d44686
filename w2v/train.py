"""The training loop and the Hydra entry point.

    python -m w2v.train model=cbow trainer.epochs=5 data=local data.path=corpus.txt

One visible loop (nanoGPT's shape): learning rate at step, update, log every N, evaluate every
N, checkpoint every N. A step is one autograd batch, or one fused-engine job of documents.
Everything a run writes lands in its Hydra run dir: vectors.pt, vectors.txt, metrics.json,
tb/ (TensorBoard) and checkpoints/.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from w2v import checkpoint as ckpt
from w2v import distributed, rundir
from w2v.atomic import atomic_write_text
from w2v.cli import CONF_DIR, Usage, report_errors, run_hydra, to_config
from w2v.config import Config
from w2v.corpus import build_corpus
from w2v.engines import choose_engine, make_engine
from w2v.errors import W2VError, stop_at_once
from w2v.init_from import init_weights, load_init
from w2v.memory import give_back
from w2v.model import (
    LOSS_FACTOR,
    MAX_WEIGHT,
    build_model,
    largest_weight,
    tables_too_large,
    untrained_loss,
)
from w2v.monitor import Interval, LossCurve, TensorBoard

log = logging.getLogger("w2v.train")  # not __main__ under python -m w2v.train


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
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps. A second Ctrl-C stops at
    once (one line, exit 130, the checkpoints so far intact), for a step that takes long, such
    as the fused engine's first compile in a fresh install: through the SIGINT handler this
    one replaced where that is a w2v program's (errors.stop_at_once, which removes a
    checkpoint half-written in the background and exits from the handler), else by raising
    KeyboardInterrupt (train() called from someone else's program)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum == signal.SIGINT == signum:
            previous = self._previous.get(signal.SIGINT)
            if previous is stop_at_once:
                previous(signum, frame)  # does not return
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, exc_type, exc, tb) -> None:
        stopping = exc_type is TrainingInterrupted
        for sig, handler in self._previous.items():
            if stopping and handler is stop_at_once:
                # A w2v program stopping on a signal has its checkpoint and only its line to
                # print: a further Ctrl-C would add a second line, or, once the interpreter
                # shuts down (SIGINT back to the default there), kill it with -2 instead of 130.
                handler = signal.SIG_IGN
            signal.signal(sig, handler)


def train(cfg: Config, run_dir: str | Path) -> dict:
    """Train on cfg's corpus; write vectors, metrics, TensorBoard logs and checkpoints.

    With trainer.resume the run continues from its checkpoint under the checkpoint's config
    (rundir.prepare: harmless changes applied, contradicting ones refused); a finished run is
    left untouched and its metrics returned."""
    run_dir = Path(run_dir)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 holds the run dir
        return _train(cfg, run_dir)
    with rundir.claimed(run_dir, rundir.continues(cfg.trainer.resume, run_dir),
                        cfg.trainer.overwrite):
        return _train(cfg, run_dir)


def _train(cfg: Config, run_dir: Path) -> dict:
    resume = rundir.prepare(cfg, run_dir) if cfg.trainer.resume else None
    if resume is not None:
        if resume.finished:
            log.info("%s is finished (%d epochs): nothing to do", run_dir, resume.position.epoch)
            return resume.metrics
        cfg = resume.config
        for change in resume.changes:
            log.info("resume changes %s", change)
    t = cfg.trainer
    torch.manual_seed(t.seed)
    torch.set_num_threads(t.threads)
    device = choose_device(t.device)
    engine_name = choose_engine(cfg, device)
    world = distributed.init_from_env(device)
    try:
        if world.main:
            _describe(cfg, engine_name, device, world)
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
            how = "cache hit" if corpus.cache_hit else "built"
            log.info("vocabulary: %s words (min_count %d) from %s words in %s documents "
                     "(%s, %.2f s)", f"{len(corpus.vocab):,}", cfg.data.min_count,
                     f"{corpus.raw_tokens:,}", f"{corpus.num_docs:,}", how, corpus.seconds)
        if not bool((corpus.doc_offsets.diff() >= 2).any()):  # else the loss is NaN throughout
            raise W2VError(
                f"no document of {corpus.meta.get('source')} has two in-vocabulary words, so "
                "there is no (context, centre) pair to train on; join the short rows into "
                "longer documents or lower data.min_count"
            )
        if world.main:
            _warn_costly(cfg, device, len(corpus.vocab))
        shard = distributed.shard(corpus, world)
        model = _on_device(build_model(cfg.model, corpus.vocab), device)
        if world.main:
            log.info("%s", _weights_line(model, device))
        if init is not None:  # (a resumed run's checkpoint then overwrites what it holds: all
            init_weights(model, init, corpus.vocab, cfg)  # but a subword model's untrained rows)
        engine = make_engine(engine_name, model, shard, cfg, device)

        position = ckpt.Position()
        if resume is not None:
            position = ckpt.restore(resume.path, model, engine, corpus.vocab, cfg)
            if world.main:
                log.info("resumed from %s %s (%s words done)", resume.path,
                         _where(position, t.epochs), f"{position.words_done:,}")

        writer = TensorBoard(run_dir / "tb") if world.main else None
        loop = Loop(cfg, run_dir, model, engine, corpus, writer, position, world)
        # Log lines print above the progress bar, not through it.
        with StopFlag() as stop, logging_redirect_tqdm():
            try:
                loop.run(stop)
            finally:
                engine.pause()  # no engine thread may outlive the loop, even on an error
        return loop.finish()
    finally:
        distributed.shutdown(world)


def _on_device(model, device: torch.device):
    """The model moved to `device`; tables the device cannot hold are one line naming
    model.dim (and model.bucket for a subword model), checked against the GPU's free memory
    before copying (build_model checks the host's memory the same way)."""
    need = _table_bytes(model)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need > free:
            raise W2VError(_too_large_for(model, need, device, free))
    try:
        return model.to(device)
    except torch.OutOfMemoryError:
        raise W2VError(_too_large_for(model, need, device, None)) from None


def _weights_line(model, device: torch.device) -> str:
    """What the weight tables hold and take (a subword model's n-gram rows are most of it)."""
    words, dim = model.vocab_size, model.dim
    rows = f"{words:,} words"
    if model.subwords is not None:
        rows += f" + {model.subwords.bucket:,} n-gram buckets"
    return (f"weights: input {rows}, output {model.output.weight.shape[0]:,} rows, dim {dim}: "
            f"{_table_bytes(model) / 2**20:,.0f} MiB on {device}")


def _table_bytes(model) -> int:
    """The bytes of the model's weights and buffers (a subword model's n-gram rows table)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def _too_large_for(model, need: int, device: torch.device, free: int | None) -> str:
    have = f"the {free / 2**30:.1f} GiB {device} has free" if free is not None else (
        f"what {device} has free")
    return (tables_too_large(model.dim, model.input.weight.shape[0], need, have,
                             model.subwords is not None)
            + ", or train on the CPU (trainer.device=cpu)")


def _where(position: ckpt.Position, epochs: int) -> str:
    """Where a resumed run stands, epochs counted from 1 as the epoch lines count them."""
    if position.epoch >= epochs:
        return f"after its last epoch ({epochs})"
    return f"in epoch {position.epoch + 1}/{epochs}, {position.step} steps into it"


def _describe(cfg: Config, engine: str, device: torch.device, world) -> None:
    """The run's settings in two lines, for the console and train.log."""
    m, t = cfg.model, cfg.trainer
    loss = f"negative {m.negative}" if m.loss == "negative" else m.loss
    log.info("model: %s, dim %d, window %d, %s, sample %g; lr %g -> %g over %d epoch%s; "
             "data: %s", m.arch, m.dim, m.window, loss, m.sample, t.lr, t.min_lr, t.epochs,
             "s" * (t.epochs != 1), cfg.data.path or cfg.data.hub_id)
    ranks = f", {world.size} ranks" if world.active else ""
    log.info("engine: %s on %s, %d thread%s%s", engine, device, t.threads,
             "s" * (t.threads != 1), ranks)


def _warn_costly(cfg: Config, device: torch.device, vocab_size: int) -> None:
    """Full softmax scores every word of the vocabulary for every example: fine on a GPU or
    a small vocabulary, hours on a CPU for a real corpus. Say so before the hours start."""
    m = cfg.model
    if m.loss != "softmax" or device.type != "cpu":
        return
    rows = m.negative + 1  # the output rows one negative-sampling example touches
    log.warning(
        "model.loss=softmax on the CPU scores all %s words of the vocabulary for every "
        "example: about %s times the work of model.loss=negative (%d output rows); with tens "
        "of thousands of words that is a few hundred words/s, hours per epoch of a text8-sized "
        "corpus. Use model.loss=negative (the default) or model.loss=hs, or trainer.device=cuda",
        f"{vocab_size:,}", f"{vocab_size / rows:,.0f}", rows)


class Loop:
    """The state of one training run; `run` is the loop, `finish` the exports.

    In a distributed run every rank runs the loop on its shard; only rank 0 (`world.main`)
    logs, evaluates, checkpoints and exports, and words are counted for the whole world."""

    def __init__(self, cfg, run_dir, model, engine, corpus, writer, position, world):
        self.cfg, self.run_dir, self.model, self.engine = cfg, run_dir, model, engine
        self.corpus, self.writer, self.pos, self.world = corpus, writer, position, world
        self.lr_at = cfg.trainer.lr_at  # the fused engine reads the same schedule per token
        self.ckpt_dir = run_dir / "checkpoints"
        # Rank 0 alone writes; under torchrun the others wait at a barrier until it is on disk.
        self.checkpoints = ckpt.Writer(self.ckpt_dir, ckpt.run_record(corpus.vocab, cfg),
                                       background=not world.active)
        if world.main:
            self.checkpoints.reserve(model, copies=2 if model.input.weight.is_cuda else 1)
        self.params = [p.data for p in model.parameters()]
        self.sync = distributed.Sync(world, self.params, engine.combine, cfg.trainer.sync_every)
        self.eval_metrics: dict[str, float] = {}
        self.evaluated_at: int | None = None  # words_done of the last evaluation
        # Evaluations at epoch ends: only where there are suites to run (else every epoch
        # would log that there are none).
        self.epoch_evals = cfg.trainer.eval_epochs and world.main and _has_suites(cfg)
        self.pending: tuple | None = None  # the last step, until its loss joins the curve
        self.untrained = untrained_loss(model, cfg.model.negative)

    def run(self, stop: StopFlag) -> None:
        cfg, t, main = self.cfg, self.cfg.trainer, self.world.main
        total = self.corpus.raw_tokens * t.epochs
        bar = tqdm(total=total, initial=self.pos.words_done, unit="w", unit_scale=True,
                   disable=not (t.progress and main), desc=f"{cfg.model.arch}/{self.engine.name}")
        curve = LossCurve(t, self.writer, bar, total, self.pos.words_done, self._check_loss)
        clock = Clock(self.pos)
        for epoch in range(self.pos.epoch, t.epochs):
            steps = distributed.agree_steps(self.world, self.engine.begin_epoch(epoch))
            first = self.pos.step if epoch == self.pos.epoch else 0
            # A resumed epoch's mean counts the steps before its checkpoint too (final_loss).
            epoch_total = Interval(self.pos.epoch_loss_sum, self.pos.epoch_examples)
            stopping = False
            for step in range(first, steps):
                lr, lr_end = self.lr_at(epoch, step / steps), self.lr_at(epoch, (step + 1) / steps)
                s = self.engine.step(epoch, step, steps, lr, lr_end)
                g = self.pos.global_step + 1  # the global step this one completes
                mid = any(n and g % n == 0 for n in (t.eval_every, t.ckpt_every))
                due = step + 1 == steps or mid
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
                clock.tick()
                epoch_total.add(s, words)
                bar.update(words)
                if main:
                    # Points come from the step before this one, now that this one is queued:
                    # on a GPU their host work (reading the loss, TensorBoard) runs while this
                    # step's kernel does, instead of leaving the GPU idle between the two.
                    self._curve_points(curve)
                    self.pending = (s, words, epoch, step, steps, self.pos.words_done)
                    # Every point in before a mid-epoch evaluation, checkpoint or stop (a
                    # diverged loss stops there); an epoch's last points wait for the next
                    # launch, so the GPU does not idle at the epoch's end (the epoch's mean
                    # loss, checked below, covers them).
                    if mid or stopping:
                        self._curve_points(curve)
                if main and t.eval_every and g % t.eval_every == 0:
                    self._evaluate()
                if t.ckpt_every and g % t.ckpt_every == 0:
                    self._keep_epoch_sum(epoch_total)
                    self._checkpoint()
                if stopping:
                    self._keep_epoch_sum(epoch_total)
                    break
            if self.pos.step >= steps:  # the epoch is done, even when a stop came at its end
                # A whole epoch of one process without a pair (a distributed rank's shard may
                # be empty while the others train).
                if main and not self.world.active and first == 0 < steps and not float(
                        epoch_total.examples):
                    self._no_pairs(epoch)
                self._end_epoch(curve, epoch, epoch_total)
                if not stopping:  # (a stop's own checkpoint follows)
                    self._checkpoint()
                # The epoch's loss was read (a GPU's queued steps are done) and its
                # checkpoint taken: both are the epoch's time.
                clock.tick()
                if self.epoch_evals and not stopping:  # (a stop ends the process at once)
                    # A point per epoch on the eval/* curves; its seconds are not training's
                    # (words/s). The epoch's checkpoint is on disk first and its copy's memory
                    # handed back: the evaluation's own would come on top of it (a subword
                    # model's rows: the run's peak).
                    with clock.stopped():
                        self.checkpoints.wait()
                        self._evaluate()
                        give_back()  # the evaluation's tables, before the next epoch's
                    curve.exclude(clock.paused)
            if stopping:
                bar.close()
                self._interrupted(stop.signum)
        if main:
            self._curve_points(curve)  # the last step's points
        self.checkpoints.wait()  # the last epoch's checkpoint is on disk before the exports
        bar.close()

    def _end_epoch(self, curve: LossCurve, epoch: int, epoch_total: Interval) -> None:
        """The epoch's record (its mean loss in the log and TensorBoard), then the position
        moves to the next epoch."""
        if self.world.main and float(epoch_total.examples):
            mean = epoch_total.mean()
            self._check_loss(mean)
            self.pos.epoch_loss = mean
            curve.epoch_end(epoch, self.cfg.trainer.epochs, mean, epoch_total.words_per_sec(),
                            self.lr_at(epoch + 1, 0.0))
        self.pos.next_epoch()

    def _keep_epoch_sum(self, epoch_total: Interval) -> None:
        """The epoch's loss so far into the position, for a checkpoint inside the epoch (one
        read of the loss: a checkpoint syncs the device anyway)."""
        self.pos.epoch_loss_sum = float(epoch_total.loss)
        self.pos.epoch_examples = float(epoch_total.examples)

    def _curve_points(self, curve: LossCurve) -> None:
        """The pending step's loss into the curve: a point wherever one falls due (reading
        the loss is one device sync), inside the step where it reports its parts."""
        if self.pending is None:
            return
        (s, words, epoch, step, steps, words_done), self.pending = self.pending, None
        start = words_done - words
        done = start
        for part, part_words in curve.parts(s, words, words_done):
            done += part_words
            curve.add(part, part_words)
            if curve.due(done):
                at = (done - start) / words if words else 1.0
                curve.write(done, self.lr_at(epoch, (step + at) / steps))

    def _check_loss(self, loss: float) -> None:
        """Stop a run whose loss is not a number, or past LOSS_FACTOR x that of untrained
        weights (a divergence with a finite loss: model.LOSS_FACTOR)."""
        if not math.isfinite(loss):
            raise W2VError(f"the training loss became {loss} at step {self.pos.global_step}; "
                           f"{self._kept()}; lower trainer.lr or check the corpus")
        if loss > LOSS_FACTOR * self.untrained:
            raise W2VError(
                f"the training diverged: the loss reached {loss:.4g} at step "
                f"{self.pos.global_step}, {loss / self.untrained:.3g} times the "
                f"{self.untrained:.3g} of untrained weights (training lowers it); "
                f"{self._kept()}; lower trainer.lr (now {self.cfg.trainer.lr:g})"
            )

    def _check_weights(self) -> None:
        """Stop a run whose weights left any sane range (model.MAX_WEIGHT) or hold NaN,
        before they are checkpointed: one pass over the tables, at checkpoints and epoch
        ends only."""
        largest = max(largest_weight(p) for p in self.params)
        if not largest <= MAX_WEIGHT:  # NaN fails the comparison too
            raise W2VError(
                f"the training diverged: the weights reached |w| = {largest:.4g} at step "
                f"{self.pos.global_step} (a run that learns stays far below {MAX_WEIGHT:g}); "
                f"{self._kept()}; lower trainer.lr (now {self.cfg.trainer.lr:g})"
            )

    def _kept(self) -> str:
        self.checkpoints.wait()  # a checkpoint still being written is a good one
        last = ckpt.latest(self.ckpt_dir)
        return f"the last good checkpoint is {last}" if last else "no checkpoint was written"

    def _no_pairs(self, epoch: int) -> None:
        """A whole epoch without one (context, centre) pair: the run would end with its
        random initial vectors and exit 0."""
        m = self.cfg.model
        raise W2VError(
            f"epoch {epoch + 1} trained no (context, centre) pair: subsampling "
            f"(model.sample={m.sample:g}) left no document of {self.corpus.meta.get('source')} "
            f"({len(self.corpus.ids):,} tokens) with two words within model.window={m.window}; "
            "set model.sample=0 (no subsampling) or a smaller value, or use a larger corpus"
        )

    def _checkpoint(self, wait: bool = False) -> Path | None:
        if not self.world.main:
            distributed.barrier(self.world)  # wait until rank 0 has it on disk
            return None
        self._check_weights()  # a diverged run's weights are never a "good" checkpoint
        path = self.checkpoints.save(self.model, self.engine, self.pos, wait=wait)
        log.debug("checkpoint %s", path)
        distributed.barrier(self.world)
        return path

    def _interrupted(self, signum: int | None) -> None:
        path = self._checkpoint(wait=True)  # on disk before the process exits
        name = signal.Signals(signum).name if signum else "a stop signal on another rank"
        # The command continues in this run dir (resume=<path> alone would too; the command
        # says where), so the vectors, train.log and TensorBoard curve stay in one place.
        where = (f"written to {path}; continue with: "
                 f"{rundir.resume_command(USAGE.prog, self.run_dir)}") if path else "written"
        raise TrainingInterrupted(f"{name}: checkpoint {where}", 128 + (signum or 15))

    def _evaluate(self) -> dict[str, float]:
        from w2v.evaluate import headline, run_suites
        from w2v.vectors import KeyedVectors, Ngrams

        sub, vocab = self.model.subwords, self.corpus.vocab
        # A subword model scores unseen words too, with their n-grams' vectors.
        ngrams = None if sub is None else Ngrams(
            sub.minn, sub.maxn, sub.bucket, self.model.input.weight.detach()[len(vocab):])
        kv = KeyedVectors(vocab.words, self.model.word_vectors(), counts=vocab.counts,
                          tokenizer=vocab.tokenizer, ngrams=ngrams)
        metrics = run_suites(kv, self.cfg.eval)
        for key, value in metrics.items():
            self.writer.add_scalar(f"eval/{key}", value, self.pos.words_done)
        if metrics:
            log.info("evaluation at %s words: %s", f"{self.pos.words_done:,}", headline(metrics))
        self.eval_metrics, self.evaluated_at = metrics, self.pos.words_done
        return metrics

    def finish(self) -> dict:
        synced = distributed.in_sync(self.world, self.params)
        pos = self.pos
        metrics = {
            # The words and seconds of the work this model holds, over every part of the run.
            "words_per_sec": pos.words_done / max(pos.train_seconds, 1e-9),
            "train_seconds": pos.train_seconds,
            "epochs": self.cfg.trainer.epochs,
            "final_loss": pos.epoch_loss,
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

        written = export_run(self.run_dir, self.model, self.corpus.vocab, self.cfg.export,
                             self.cfg)
        if self.evaluated_at != self.pos.words_done:  # the last epoch's end evaluated these
            self._evaluate()
        self._projector()
        metrics.update({f"eval/{k}": v for k, v in self.eval_metrics.items()})
        self.writer.add_hparams(_hparams(self.cfg), _numeric(metrics), run_name="hparams")
        self.writer.close()
        atomic_write_text(self.run_dir / "metrics.json", strict_json(metrics))
        log.info("wrote %s, metrics.json, tb/ and checkpoints/ in %s",
                 ", ".join(p.name for p in written), self.run_dir)
        return metrics

    def _projector(self) -> None:
        n = min(self.cfg.eval.projector_words, len(self.corpus.vocab))
        if n == 0:
            return
        rundir.refuse_symlinks(self.run_dir / "tb")  # the projector's files are plain writes
        vocab = self.corpus.vocab
        labels = [[w, str(int(c))] for w, c in zip(vocab.words[:n], vocab.counts[:n])]
        self.writer.add_embedding(self.model.word_vectors()[:n].cpu(), metadata=labels,
                                  metadata_header=["word", "count"], tag="input_vectors")


class Clock:
    """Seconds in the loop, added to the position's total (which a checkpoint carries, so a
    resumed run's words/s counts every part's time once); `stopped` leaves out the seconds
    of work that is not training (an epoch's evaluation)."""

    def __init__(self, pos: ckpt.Position) -> None:
        self.pos, self.base, self.start = pos, pos.train_seconds, time.perf_counter()
        self.paused = 0.0

    def tick(self) -> None:
        self.pos.train_seconds = self.base + time.perf_counter() - self.start

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Seconds inside are not counted; `paused` holds them after."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.paused = time.perf_counter() - start
            self.start += self.paused


def _has_suites(cfg: Config) -> bool:
    from w2v.evaluate import find_suites

    return bool(find_suites(cfg.eval))


def strict_json(metrics: dict) -> str:
    """metrics.json as strict JSON: a value that is not a finite number (a loss never
    measured, a correlation over no pairs) is null, never NaN, which strict parsers refuse."""
    def finite(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps({k: finite(v) for k, v in metrics.items()}, indent=2,
                      allow_nan=False) + "\n"


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
        vectors.txt, metrics.json, TensorBoard logs (tb/) and checkpoints (checkpoints/: the
        newest 3 are kept; python -m w2v.export makes word2vec files from any of them or from
        vectors.pt) into its Hydra run dir (outputs/<date>/<time>/, or hydra.run.dir=...).
        Every setting is a Hydra override.
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

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    with rundir.discard_if_unused(run_dir):  # a run that fails before any output leaves none
        try:
            cfg = to_config(dict_cfg)
            if cfg.trainer.resume:
                cfg = _resume(cfg, dict_cfg, run_dir, list(hc.overrides.task))
                if cfg is None:
                    return None
            metrics = train(cfg, run_dir)
        except W2VError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except TrainingInterrupted as stop:
            print(str(stop), file=sys.stderr)
            sys.exit(stop.code)
    if metrics["rank"] == 0:
        loss = metrics["final_loss"]
        log.info("done: %s words/s over %.1f s of training, final loss %s -> %s",
                 f"{metrics['words_per_sec']:,.0f}", metrics["train_seconds"],
                 "n/a" if loss is None else f"{loss:.4f}", run_dir)
    return metrics["final_loss"]


def _resume(cfg: Config, dict_cfg: DictConfig, run_dir: Path, overrides: list[str]
            ) -> Config | None:
    """The command line's resume: the run's config from its checkpoint, with the settings this
    command line names checked against it (rundir.prepare); None when the run is finished."""
    from hydra import compose

    named = rundir.named_keys(overrides, dict_cfg, compose("config"))
    resume = rundir.prepare(cfg, run_dir, named)
    if resume.finished:
        # Printed, not logged: a finished run's train.log stays as the run left it.
        print(f"{run_dir} is finished ({resume.position.epoch} epochs, checkpoint "
              f"{resume.path.name}); nothing to do: its vectors and metrics.json are there")
        return None
    if os.environ.get("RANK", "0") == "0":  # torchrun: every rank resumes, rank 0 records it
        rundir.record(run_dir, resume, overrides)
    return resume.config


@report_errors
def main() -> None:
    # The run dir is claimed before Hydra writes into it, and a resume keeps the run's .hydra/
    # record (rundir.before_hydra).
    run_hydra(_hydra_main, USAGE, hydra_args=rundir.before_hydra)


if __name__ == "__main__":
    main()
