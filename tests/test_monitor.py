"""What a run reports: the loss curve's spacing (by words and by time, whatever the step size),
TensorBoard's train/* points, and the run's story in the console and train.log."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import planted_cfg, write_planted_suites
from w2v import monitor
from w2v.engines import Step
from w2v.train import train

ROOT = Path(__file__).resolve().parents[1]


class FakeWriter:
    def __init__(self) -> None:
        self.points: dict[str, list[tuple[int, float]]] = {}

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.points.setdefault(tag, []).append((step, value))


class FakeBar:
    def __init__(self) -> None:
        self.postfix: dict = {}

    def set_postfix(self, refresh: bool = True, **kwargs) -> None:
        self.postfix = kwargs


def run_curve(step_words: list[int], log_points: int = 200, log_seconds: float = 10.0,
              seconds_per_step: float = 0.0, monkeypatch=None):
    """Feed a LossCurve steps of the given sizes as the loop does; return writer and bar."""
    clock = SimpleNamespace(now=0.0)
    if monkeypatch is not None:
        monkeypatch.setattr(monitor.time, "perf_counter", lambda: clock.now)
    t = SimpleNamespace(log_points=log_points, log_seconds=log_seconds)
    writer, bar = FakeWriter(), FakeBar()
    curve = monitor.LossCurve(t, writer, bar, sum(step_words), 0)
    done = 0
    for words in step_words:
        clock.now += seconds_per_step
        done += words
        curve.add(Step(0, 1, 2.0 * words, words), words)
        if curve.due(done):
            curve.write(done, 0.01)
    return writer, bar


@pytest.mark.parametrize("step", [7, 1_000, 4_096, 100_000])
def test_about_log_points_points_whatever_the_step_size(step):
    total = 2_000_000
    writer, bar = run_curve([step] * (total // step))
    points = writer.points["train/loss"]
    steps = total // step
    # ~200 points evenly spaced in words, or one per step when steps are coarser than that
    assert len(points) == pytest.approx(min(200, steps), abs=2)
    assert all(v == pytest.approx(2.0) for _, v in points)  # the interval's mean loss
    xs = [x for x, _ in points]
    assert xs == sorted(xs) and xs[0] < max(total // 200, step) + step  # the first: early
    assert bar.postfix["loss"] == "2.0000"


def test_uneven_steps_still_give_evenly_spaced_points():
    import random

    rng = random.Random(0)
    steps = [rng.choice([50, 3_000, 20_000]) for _ in range(3_000)]
    writer, _ = run_curve(steps, log_points=100)
    xs = [x for x, _ in writer.points["train/loss"]]
    assert len(xs) == pytest.approx(100, abs=3)
    gaps = [b - a for a, b in zip(xs, xs[1:])]
    assert max(gaps) < 2 * sum(steps) / 100 + 20_000  # no long silent stretch


def test_at_least_one_point_every_log_seconds(monkeypatch):
    # One point per run by words, but a step every 3 s: a point every 10 s (4 steps) anyway.
    writer, _ = run_curve([1_000] * 40, log_points=1, log_seconds=10.0, seconds_per_step=3.0,
                          monkeypatch=monkeypatch)
    assert len(writer.points["train/loss"]) == 10


def test_steps_longer_than_the_spacing_give_points_from_their_parts(monkeypatch):
    """A step reporting its loss in parts (Step.curve: the cuda engine's 2M-word launches)
    still gives ~log_points points, at the parts' words and with the parts' losses, read
    once per step; their words/s is the burst's, not a part's share over no time."""
    import torch

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(monitor.time, "perf_counter", lambda: clock.now)
    t = SimpleNamespace(log_points=200, log_seconds=10.0)
    writer = FakeWriter()
    total, steps, parts = 2_000_000, 4, 64
    curve = monitor.LossCurve(t, writer, FakeBar(), total, 0)
    done = 0
    for i in range(steps):
        words = total // steps
        clock.now += 0.5  # a launch of 500k words takes 0.5 s: 1M words/s
        # the loss falls along the step: part k's mean is 3 - k/parts
        rows = [[(3.0 - k / parts) * 100, 100.0] for k in range(parts)]
        s = Step(i, steps, 0.0, 0.0, curve=torch.tensor(rows, dtype=torch.float64))
        start = done
        for part, part_words in curve.parts(s, words, start + words):
            done += part_words
            curve.add(part, part_words)
            if curve.due(done):
                curve.write(done, 0.01)
        assert done == start + words
    points = writer.points["train/loss"]
    assert len(points) == pytest.approx(200, abs=2)
    xs = [x for x, _ in points]
    assert xs == sorted(xs) and xs[-1] == total
    assert max(b - a for a, b in zip(xs, xs[1:])) < 2 * total / 200
    first_step = [v for x, v in points if x <= total // steps]
    assert first_step[0] > first_step[-1]  # the curve follows the loss inside the step
    speeds = [v for _, v in writer.points["train/words_per_sec"]]
    assert all(v == pytest.approx(1e6) for v in speeds)


def test_a_step_whose_parts_hold_no_due_point_is_taken_whole_in_host_numbers():
    """No point inside: the step is one part, its sums read from the parts (so the interval
    holds no device number whose later read would wait for the steps queued since); a step
    without parts (the other engines) is passed on as it is."""
    import torch

    t = SimpleNamespace(log_points=1, log_seconds=1e9)
    curve = monitor.LossCurve(t, FakeWriter(), FakeBar(), 1_000_000, 0)
    rows = torch.tensor([[1.5, 1.0]] * 32, dtype=torch.float64)
    [(whole, words)] = curve.parts(Step(0, 10, torch.tensor(48.0), torch.tensor(32.0),
                                        curve=rows), 1_000, 1_000)
    assert (whole.loss_sum, whole.examples, words) == (48.0, 32.0, 1_000)
    assert isinstance(whole.loss_sum, float)
    plain = Step(0, 10, torch.tensor(5.0), torch.tensor(2.0))
    assert curve.parts(plain, 1_000, 1_000) == [(plain, 1_000)]


def test_a_step_with_no_examples_is_no_point():
    t = SimpleNamespace(log_points=10, log_seconds=10.0)
    writer = FakeWriter()
    curve = monitor.LossCurve(t, writer, FakeBar(), 100, 0)
    curve.add(Step(0, 1, 0.0, 0), 50)  # e.g. a rank whose shard ran out: no loss, not NaN
    assert curve.due(50) and curve.write(50, 0.01) is None
    assert "train/loss" not in writer.points


def _loss_points(run: Path) -> list:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return acc.Scalars("train/loss")


@pytest.mark.parametrize("engine,extra,expected", [
    # 3000 planted sentences x 12 words x 2 epochs = 72k words in steps of ~256 words (282
    # autograd steps): the default curve has its ~200 points.
    ("autograd", [], 200),
    ("autograd", ["trainer.log_points=25"], 25),
    # 10 fused jobs of 7,200 words: fewer steps than points, so one point per step.
    ("fused", ["trainer.chunk_words=7200"], 10),
])
def test_tensorboard_has_the_planted_runs_loss_curve(planted, tmp_path, engine, extra, expected):
    cfg = planted_cfg(planted, f"trainer.engine={engine}", "trainer.epochs=2", *extra)
    train(cfg, tmp_path)
    points = _loss_points(tmp_path)
    assert len(points) == pytest.approx(expected, abs=2)
    steps = [p.step for p in points]  # x axis: words processed
    assert steps == sorted(steps) and steps[-1] <= 72_000


def test_console_formatter_speaks_like_the_cli():
    fmt = monitor.ConsoleFormatter("%(message)s")
    info = logging.LogRecord("w2v.train", logging.INFO, "", 0, "epoch 1/5: loss 2.5", None, None)
    warn = logging.LogRecord("w2v.train", logging.WARNING, "", 0, "softmax is slow", None, None)
    assert fmt.format(info) == "epoch 1/5: loss 2.5"
    assert fmt.format(warn) == "warning: softmax is slow"


def test_the_runs_story_goes_to_the_console_and_train_log(planted, tmp_path):
    suites = write_planted_suites(tmp_path / "suites", planted)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "w2v.train", "data=local", f"data.path={planted.path}",
           "data.min_count=1", "model.dim=16", "trainer.epochs=2", "trainer.threads=1",
           f"eval.dir={suites}", "eval.projector_words=0", f"hydra.run.dir={run}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    log = (run / "train.log").read_text()
    story = ["model: skipgram, dim 16, window 5, negative 5", "lr 0.025 -> 0.0001 over 2 epochs",
             "engine: fused on cpu, 1 thread", "vocabulary: ", "epoch 1/2: loss ",
             "epoch 2/2: loss ", "words/s", "evaluation at 72,000 words: questions-words ",
             "wrote vectors.pt, vectors.txt, metrics.json", "done: "]
    for line in story:
        assert line in log, line
        assert line in done.stdout, line  # the console tells the same story...
    assert "[w2v.train][INFO]" in log and "[INFO]" not in done.stdout  # ...without stamps
    assert "skipgram/fused" in done.stderr  # the tqdm bar, on stderr as always


def test_the_fused_engines_default_steps_give_the_default_run_its_curve(text8_prefix):
    """trainer.chunk_words=null sizes the fused engine's jobs by the run: the default 5-epoch
    run on text8-prefix gets ~256 steps, so its loss curve has its ~200 points (100k-word
    jobs gave 107 steps; log_every=50 of them gave 2 points)."""
    from w2v.config import DataConfig
    from w2v.corpus import build_corpus
    from w2v.engines.fused import job_words, plan_jobs

    corpus = build_corpus(DataConfig(path=str(text8_prefix)), progress=False)
    offsets = corpus.doc_offsets.numpy()
    words = job_words(None, int(offsets[-1]), epochs=5, lockstep=False)
    steps = 5 * (len(plan_jobs(offsets, words)) - 1)
    assert 240 <= steps <= 270
    assert job_words(None, 36_000, epochs=2, lockstep=False) == 10_000  # small: one document
    assert job_words(None, int(offsets[-1]), epochs=5, lockstep=True) == 100_000  # torchrun
    assert job_words(None, 10**10, epochs=5, lockstep=False) == 1_000_000
    assert job_words(7_200, int(offsets[-1]), epochs=5, lockstep=False) == 7_200
    # The loop's steps share out the epoch's raw words; the curve takes ~200 of them.
    per_epoch = len(plan_jobs(offsets, words)) - 1
    raw = corpus.raw_tokens
    step_words = [raw * (i + 1) // per_epoch - raw * i // per_epoch
                  for _ in range(5) for i in range(per_epoch)]
    writer, _ = run_curve(step_words)
    assert len(writer.points["train/loss"]) == pytest.approx(200, abs=5)


def test_the_loop_takes_a_steps_points_after_queueing_the_next_step(planted, tmp_path,
                                                                     monkeypatch):
    """On a GPU a step's loss is read after the next step is launched, so the host's work
    for the points overlaps that step's kernel; every step still joins the curve. An
    epoch's last step waits too, for the next epoch's first launch (not for its checkpoint:
    the epoch's mean loss, checked before it, covers that step); the run's last step joins
    before the run ends."""
    import torch

    from w2v import train as train_mod
    from w2v.checkpoint import Writer

    events = []

    class Recording:
        name, reduction, combine = "recording", "sum", "sum"

        def begin_epoch(self, epoch):
            return 3

        def step(self, epoch, step, steps, lr, lr_end):
            events.append(("launch", epoch, step))
            rows = torch.tensor([[2.0, 1.0]] * 4, dtype=torch.float64)
            return Step(step, steps, torch.tensor(8.0), torch.tensor(4.0), curve=rows)

        def pause(self):
            pass

        def state_dict(self):
            return None

        def load_state_dict(self, state):
            pass

    monkeypatch.setattr(train_mod, "make_engine", lambda *a, **k: Recording())
    parts = monitor.LossCurve.parts

    def recorded(self, s, words, words_done):
        events.append(("points", s.step))
        return parts(self, s, words, words_done)

    monkeypatch.setattr(monitor.LossCurve, "parts", recorded)
    save = Writer.save
    monkeypatch.setattr(Writer, "save", lambda self, *a, **k: events.append(("checkpoint",))
                        or save(self, *a, **k))
    train(planted_cfg(planted, "trainer.epochs=2", "eval.dir=null"), tmp_path)
    first = [("launch", 0), ("launch", 1), ("points", 0), ("launch", 2), ("points", 1),
             ("checkpoint",)]
    second = [("launch", 0), ("points", 2), ("launch", 1), ("points", 0), ("launch", 2),
              ("points", 1), ("checkpoint",), ("points", 2)]
    assert [e[:1] + e[2:] if e[0] == "launch" else e for e in events] == first + second
    assert len(_loss_points(tmp_path)) == 2 * 3 * 4  # parts coarser than the spacing: each
