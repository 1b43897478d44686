"""What a run reports while it trains: the loss curve, TensorBoard, and its story in the logs.

    curve = LossCurve(cfg.trainer, writer, bar, total_words, words_done)
    curve.add(step, words)                              # after every step: no device sync
    if curve.due(words_done): curve.write(words_done, lr)   # reads the loss: one sync

The loss curve (TensorBoard `train/*` against words processed, and the progress bar) is spaced
by words, about `trainer.log_points` points per run, and by time, at least one point every
`trainer.log_seconds`. Whether a point is due is decided after each step from the words and
seconds since the last one, so the curve looks the same whatever the step: an autograd batch of
a few thousand words, a fused-engine job of 100k, or a step bounded by time. A step longer
than the spacing (a cuda launch of 2M words) reports its loss in parts (Step.curve), and the
points due inside it are taken from those (`LossCurve.parts`). The loss stays on the device
between points.

The story of a run (config, engine, vocabulary, progress lines, evaluation, files written) goes
through `logging`; under `python -m w2v.train` Hydra sends it to the console and to the run's
train.log (conf/config.yaml, `hydra.job_logging`). ConsoleFormatter keeps the console plain,
and the loop runs under tqdm's `logging_redirect_tqdm` so log lines never break the bar.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from w2v.engines import Step
from w2v.errors import W2VError

log = logging.getLogger(__name__)

# Progress lines in the console and train.log: at each epoch end, and at least this often
# within a long epoch (the full curve is in TensorBoard; the log stays readable).
LINE_SECONDS = 60.0


class ConsoleFormatter(logging.Formatter):
    """The console's voice: an INFO record is its message; a warning or worse is prefixed
    `warning:` / `error:`, as the CLIs print their own errors. (train.log keeps timestamps.)"""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno > logging.INFO:
            return f"{record.levelname.lower()}: {text}"
        return text


class Interval:
    """Loss and words over an interval; the loss may stay on the device until read.
    loss, examples: what an earlier part of the interval summed (a resumed epoch's steps
    before its checkpoint), added to as the uninterrupted run added to them."""

    def __init__(self, loss: float = 0.0, examples: float = 0) -> None:
        self.loss: torch.Tensor | float = loss
        self.examples: int | float | torch.Tensor = examples
        self.words = 0
        self.start = time.perf_counter()

    def add(self, s: Step, words: int) -> None:
        self.loss = self.loss + s.loss_sum
        self.examples = self.examples + s.examples
        self.words += words

    def mean(self) -> float:
        examples = float(self.examples)  # a device tensor syncs here, once per interval
        return float(self.loss) / examples if examples else float("nan")

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def words_per_sec(self) -> float:
        return self.words / max(self.seconds(), 1e-9)


class LossCurve:
    """When to read the loss, and where it goes: TensorBoard, the progress bar, the log.

    Points sit on a grid of `every_words` words (so a resumed run continues the same grid)
    or come after `log_seconds` without one. `check(mean)` runs on every loss read before it
    is recorded (train.py stops a diverged run there)."""

    def __init__(self, t, writer, bar, total_words: int, words_done: int,
                 check: Callable[[float], None] = lambda mean: None) -> None:
        self.writer, self.bar, self.check = writer, bar, check
        self.total_words = total_words
        self.every_words = max(1, math.ceil(total_words / t.log_points))
        self.every_seconds = t.log_seconds
        self.interval = Interval()
        self.next_words = self._next(words_done)
        self.last_line = time.perf_counter()
        self.points = 0
        self.burst_speed: float | None = None  # words/s for points taken from a step's parts

    def _next(self, words_done: int) -> int:
        return (words_done // self.every_words + 1) * self.every_words

    def parts(self, s: Step, words: int, words_done: int) -> list[tuple[Step, int]]:
        """The step as points are taken from it (words_done: after it): whole, or, when a
        point falls due in a step that reports its parts (Step.curve), those parts in order
        with their shares of the words, so the curve keeps its spacing when steps are longer
        than it; all its points get the speed since the last point (they are written in one
        burst). A step with parts is read every time (after its `ready` event where it has
        one: its own kernel, not the later ones), so an interval never holds a device number
        whose read would wait for the steps queued since."""
        if s.curve is None:
            self.burst_speed = None
            return [(s, words)]
        if s.ready is not None:
            s.ready.synchronize()  # this step's kernel and its copy, not the ones after it
        rows = s.curve.detach().to("cpu", torch.float64).tolist()
        if not self.due(words_done):  # the step whole, in host numbers (no later device read)
            self.burst_speed = None
            return [(Step(s.step, s.steps, sum(r[0] for r in rows), sum(r[1] for r in rows)),
                     words)]
        self.burst_speed = (self.interval.words + words) / max(self.interval.seconds(), 1e-9)
        n = len(rows)
        return [(Step(s.step, s.steps, loss, examples), words * (k + 1) // n - words * k // n)
                for k, (loss, examples) in enumerate(rows)]

    def add(self, s: Step, words: int) -> None:
        self.interval.add(s, words)

    def exclude(self, seconds: float) -> None:
        """Leave out `seconds` of work that is not training (an epoch's evaluation) from the
        speed of the next point and from the time-based spacing."""
        self.interval.start += seconds

    def due(self, words_done: int) -> bool:
        return words_done >= self.next_words or self.interval.seconds() >= self.every_seconds

    def write(self, words_done: int, lr: float) -> float | None:
        """Read the interval's mean loss and record one point; None when nothing trained."""
        interval, self.interval = self.interval, Interval()
        self.next_words = self._next(words_done)
        if not float(interval.examples):  # e.g. a rank whose shard ran out: no loss to show
            return None
        mean = interval.mean()
        speed = self.burst_speed if self.burst_speed is not None else interval.words_per_sec()
        self.check(mean)
        self.writer.add_scalar("train/loss", mean, words_done)
        self.writer.add_scalar("train/lr", lr, words_done)
        self.writer.add_scalar("train/words_per_sec", speed, words_done)
        self.bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.5f}", refresh=False)
        self.points += 1
        if time.perf_counter() - self.last_line >= LINE_SECONDS:
            self.last_line = time.perf_counter()
            log.info("%5.1f%% of %s words: loss %.4f, %s words/s, lr %.6f",
                     100 * words_done / max(self.total_words, 1), f"{self.total_words:,}",
                     mean, f"{speed:,.0f}", lr)
        return mean

    def epoch_end(self, epoch: int, epochs: int, mean: float, speed: float, lr: float) -> None:
        self.writer.add_scalar("epoch/loss", mean, epoch + 1)
        self.last_line = time.perf_counter()
        log.info("epoch %d/%d: loss %.4f, %s words/s, lr %.6f", epoch + 1, epochs, mean,
                 f"{speed:,.0f}", lr)


class TensorBoard:
    """SummaryWriter whose write errors (disk full, no permission) are one W2VError.

    torch.utils.tensorboard (and tensorboard, protobuf) is imported here, when a run starts
    writing, not by `import w2v.train`. TensorBoard writes from a background thread and
    raises a failure at the next call, so every call goes through `_guard`."""

    def __init__(self, logdir: Path) -> None:
        SummaryWriter = _summary_writer()  # noqa: N806 (a class)
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


def _summary_writer() -> type:
    """torch.utils.tensorboard.SummaryWriter, imported without boto3.

    TensorBoard's file layer imports boto3 whenever it is installed, to read and write s3://
    paths; a run's logs go to its local run dir, and boto3 costs ~10 MiB and ~0.4 s. It is
    hidden for this one import when nothing has imported it yet (tensorboard then keeps
    `boto3 = None` and S3 paths unsupported); the process can import it normally after."""
    hidden = [m for m in ("boto3", "botocore") if m not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  (an import of it fails)
    try:
        from torch.utils.tensorboard import SummaryWriter
    finally:
        for name in hidden:
            del sys.modules[name]
    return SummaryWriter


def _quiet_writer_thread(args) -> None:
    """TensorBoard's writer thread dies printing its OSError, then hands it to our next call
    (one error line there): print nothing for it here."""
    if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
        return
    _quiet_writer_thread.previous(args)


_quiet_writer_thread.previous = threading.excepthook
