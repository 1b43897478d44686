"""Faults during a run: signals, kill -9, a full disk, no permission; and exact resume.

Each test backs a row of docs/reliability.md. Signals are sent to real `python -m w2v.train`
processes; a full disk and a denied directory are simulated (tests run as root, where
read-only directories do not stop writes), by making atomic_open's or TensorBoard's writes
fail the way the OS would.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import (
    assert_intact,
    compose_cfg,
    one_line,
    planted_cfg,
    snapshot,
    write_planted_corpus,
)
from w2v import atomic, checkpoint
from w2v.config import ExportConfig
from w2v.errors import INTERRUPTED, W2VError
from w2v.export import export_tensors, load_vectors
from w2v.train import train

ROOT = Path(__file__).resolve().parents[1]


# ---- signals and kill -9 on real training processes --------------------------------------

# Long enough (~80 epochs of the planted corpus, ~1 s of training) that a signal lands mid-run
# even with four runs sharing two cores (at 30 epochs one finished first once), small enough
# that a whole run takes a few seconds; threads=1: the fused engine is then bit-exact.
RUN = ["data=local", "data.min_count=1", "model.dim=24", "model.window=3",
       "trainer.threads=1", "trainer.progress=false", "trainer.epochs=80",
       "trainer.chunk_words=6000", "trainer.ckpt_every=20", "eval.projector_words=0"]
STOPS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL,
         "SIGINT twice": signal.SIGINT}  # the impatient user: a second Ctrl-C right after


def _step_files(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    return sorted(folder.glob("step-*.pt")) if folder.is_dir() else []


@pytest.fixture(scope="module")
def signal_runs(tmp_path_factory):
    """One run stopped by each of SIGINT, SIGTERM and SIGKILL (sent once its first checkpoint
    exists; SIGKILL after a further random delay) and one by two SIGINTs a random 0-50 ms
    apart, each then resumed with
    trainer.resume=latest in the same run dir, and an uninterrupted reference run."""
    root = tmp_path_factory.mktemp("signals")
    corpus = write_planted_corpus(root / "planted.txt").path
    env = {**os.environ, "PYTHONPATH": str(ROOT), "W2V_CACHE": str(root / "cache")}

    def start(run_dir: Path, *extra: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "w2v.train", *RUN, f"data.path={corpus}",
                f"hydra.run.dir={run_dir}", *extra]
        return subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    runs = {name: SimpleNamespace(dir=root / name, proc=start(root / name), sent_at=None)
            for name in STOPS}
    rng = random.Random()
    deadline = time.monotonic() + 300
    while any(r.sent_at is None for r in runs.values()):
        assert time.monotonic() < deadline, "no checkpoint appeared within 300 s"
        for name, r in runs.items():
            if r.sent_at is not None:
                continue
            if r.proc.poll() is not None:
                pytest.fail(f"{name} run ended before its first checkpoint: "
                            f"{r.proc.communicate()[1]}")
            if _step_files(r.dir):
                if name == "SIGKILL":  # a random moment after the first checkpoint
                    r.delay = rng.uniform(0.0, 0.5)
                    time.sleep(r.delay)
                r.proc.send_signal(STOPS[name])
                if name == "SIGINT twice":
                    time.sleep(rng.uniform(0.0, 0.05))
                    r.proc.send_signal(signal.SIGINT)
                r.sent_at = time.monotonic()
        time.sleep(0.01)
    for r in runs.values():
        r.stdout, r.stderr = r.proc.communicate(timeout=300)
        r.rc = r.proc.returncode
        r.left = _step_files(r.dir)  # what the stop left on disk, before resuming
        r.loads = {p.name: _loads(p) for p in r.left}
        r.exported = (r.dir / "vectors.pt").exists()
        r.resume = start(r.dir, "trainer.resume=latest")
    # The uninterrupted reference runs here while the resumes run (a process costs seconds of
    # imports): the same composed config, so the same numbers as the CLI.
    cfg = compose_cfg([*RUN, f"data.path={corpus}"])
    cfg.data.cache_dir = str(root / "cache")
    train(cfg, root / "reference")
    for r in runs.values():
        r.resume_out, r.resume_err = r.resume.communicate(timeout=300)
    return SimpleNamespace(reference=root / "reference", runs=runs)


def _loads(path: Path) -> str:
    try:
        checkpoint.load(path)
        return "ok"
    except W2VError as err:
        return str(err)


def _assert_resumed_equals_reference(signal_runs, r) -> None:
    assert r.resume.returncode == 0, r.resume_err
    assert "resumed from" in r.resume_out
    ref = torch.load(signal_runs.reference / "vectors.pt", weights_only=True)
    got = torch.load(r.dir / "vectors.pt", weights_only=True)
    assert got["words"] == ref["words"]
    assert torch.equal(got["vectors"], ref["vectors"])  # bit-identical, not merely close
    assert (r.dir / "vectors.pt").read_bytes() == (signal_runs.reference / "vectors.pt"
                                                   ).read_bytes()
    assert (r.dir / "vectors.txt").read_bytes() == (signal_runs.reference / "vectors.txt"
                                                    ).read_bytes()


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_signal_writes_a_checkpoint_exits_128_plus_signum_and_resumes_exactly(signal_runs,
                                                                              name):
    r = signal_runs.runs[name]
    assert r.rc == 128 + STOPS[name], r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    latest = r.left[-1]
    # The command that continues the run in place, as the fixture's resume does.
    assert lines[0] == (f"{name}: checkpoint written to {latest}; continue with: "
                        f"python -m w2v.train trainer.resume=latest hydra.run.dir={r.dir}")
    assert r.loads[latest.name] == "ok"
    assert not r.exported  # a stopped run exports nothing: only the checkpoint
    _assert_resumed_equals_reference(signal_runs, r)


def test_a_second_ctrl_c_stops_at_once_in_one_line_and_keeps_nothing_half_written(
        signal_runs):
    """Whether the second SIGINT lands while the first one's checkpoint is written or after,
    the run ends with 130 and one line (no KeyboardInterrupt traceback from inside a library),
    no temporary file is left beside the checkpoints, and the newest one resumes exactly."""
    r = signal_runs.runs["SIGINT twice"]
    assert r.rc == 130, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0] == INTERRUPTED or lines[0].startswith("SIGINT: checkpoint written to ")
    assert not [p.name for p in (r.dir / "checkpoints").iterdir() if p.suffix == ".tmp"]
    assert r.left and all(v == "ok" for v in r.loads.values()), r.loads
    _assert_resumed_equals_reference(signal_runs, r)


def test_kill_9_leaves_loadable_checkpoints_and_resumes_exactly(signal_runs):
    r = signal_runs.runs["SIGKILL"]
    assert r.rc == -signal.SIGKILL, f"the run ended before the kill ({r.delay:.2f} s): {r.rc}"
    assert r.left and all(v == "ok" for v in r.loads.values()), r.loads  # atomic writes
    _assert_resumed_equals_reference(signal_runs, r)


# ---- a full disk and denied permissions, simulated -----------------------------------------


class FailingWrites:
    """atomic_open's writes of files matching `pattern` fail the way the OS fails them.

    After `after` matching files went through: at="write" writes half of the first write,
    then raises ENOSPC (a full disk); at="create" makes creating the temp file raise EACCES
    (a directory without write permission)."""

    def __init__(self, monkeypatch, pattern: str, after: int = 0, at: str = "write") -> None:
        self.pattern, self.after, self.at = pattern, after, at
        self.seen, self.failed, self._armed = 0, [], set()
        monkeypatch.setattr(atomic, "tempfile", self)
        monkeypatch.setattr(atomic, "os", _Os(self))

    def mkstemp(self, **kwargs):
        import tempfile

        name = kwargs["prefix"][1:-1]  # atomic_open's prefix is ".<name>."
        armed = False
        if fnmatch.fnmatch(name, self.pattern):
            self.seen += 1
            armed = self.seen > self.after
        if armed and self.at == "create":
            self.failed.append(name)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs["dir"])
        fd, tmp = tempfile.mkstemp(**kwargs)
        if armed:
            self._armed.add(fd)
            self.failed.append(name)
        return fd, tmp


class _Os:
    def __init__(self, owner: FailingWrites) -> None:
        self._owner = owner

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, *args, **kwargs):
        f = os.fdopen(fd, *args, **kwargs)
        return _FullFile(f) if fd in self._owner._armed else f


class _FullFile:
    def __init__(self, f) -> None:
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def corpus(tmp_path):
    return write_planted_corpus(tmp_path / "planted.txt", sentences=600)


def run_cfg(corpus, *overrides):
    return planted_cfg(corpus, "trainer.epochs=2", "trainer.chunk_words=1200",
                       "trainer.ckpt_every=3", "eval.projector_words=0", *overrides)


def test_disk_full_while_writing_a_checkpoint(corpus, tmp_path, monkeypatch):
    run = tmp_path / "run"
    full = FailingWrites(monkeypatch, "step-*.pt", after=1)
    with pytest.raises(W2VError) as err:
        train(run_cfg(corpus), run)
    msg = one_line(err)
    assert f"cannot write {run / 'checkpoints' / full.failed[0]}: No space left on device" in msg
    assert "free some space" in msg and "earlier files are intact" in msg
    left = _step_files(run)
    assert [p.name for p in left] == ["step-00000003.pt"]  # the one before the failure
    assert checkpoint.load(left[0])["position"]["global_step"] == 3
    assert not list((run / "checkpoints").glob(".*.tmp"))  # the half-written file is gone
    # space freed: the run continues from the last good checkpoint to the end
    monkeypatch.undo()
    train(run_cfg(corpus, "trainer.resume=latest"), run)
    assert load_vectors(run / "vectors.pt").words


def test_no_permission_to_write_checkpoints(corpus, tmp_path, monkeypatch):
    FailingWrites(monkeypatch, "step-*.pt", at="create")
    with pytest.raises(W2VError) as err:
        train(run_cfg(corpus), tmp_path / "run")
    assert "Permission denied; choose a writable location" in one_line(err)
    assert not _step_files(tmp_path / "run")


def test_disk_full_while_exporting_keeps_the_earlier_export(corpus, tmp_path, monkeypatch):
    words, vec = ["a", "b", "c"], torch.randn(3, 4)
    cfg = ExportConfig(text=True, binary=True)
    export_tensors(tmp_path, words, [3, 2, 1], None, vec, None, cfg)
    before = snapshot(tmp_path)
    FailingWrites(monkeypatch, "vectors.*")
    with pytest.raises(W2VError) as err:
        export_tensors(tmp_path, words, [3, 2, 1], None, vec * 2, None, cfg)
    assert "cannot write" in one_line(err) and "No space left on device" in one_line(err)
    assert_intact(before, tmp_path)
    assert torch.equal(load_vectors(tmp_path / "vectors.pt").vectors, vec)


@pytest.mark.parametrize("pattern", ["vectors.txt", "metrics.json"])
def test_disk_full_at_the_end_of_a_run_then_resume_finishes_it(corpus, tmp_path, monkeypatch,
                                                                pattern):
    run = tmp_path / "run"
    FailingWrites(monkeypatch, pattern)
    with pytest.raises(W2VError) as err:
        train(run_cfg(corpus), run)
    assert f"cannot write {run / pattern}: No space left on device" in one_line(err)
    assert not (run / pattern).exists()
    last = checkpoint.latest(run / "checkpoints")  # the final epoch's checkpoint is whole
    assert checkpoint.load(last)["position"]["epoch"] == 2
    monkeypatch.undo()
    train(run_cfg(corpus, "trainer.resume=latest"), run)  # only the exports remain to do
    assert (run / "vectors.txt").is_file() and (run / "metrics.json").is_file()


def test_export_cli_on_a_full_disk_is_one_line(corpus, tmp_path, monkeypatch, capsys):
    from w2v.export import main as export_main

    train(run_cfg(corpus, "trainer.epochs=1"), tmp_path / "run")
    ckpt = checkpoint.latest(tmp_path / "run" / "checkpoints")
    before = snapshot(tmp_path / "run")
    capsys.readouterr()  # (the training run's own output)
    FailingWrites(monkeypatch, "vectors.pt")
    with pytest.raises(SystemExit) as stop:
        export_main([f"checkpoint={ckpt}", f"out={tmp_path / 'run'}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot write") and \
        "No space left on device" in err
    assert_intact(before, tmp_path / "run")


def _tensorboard_fails(monkeypatch, after: int, error: int, where: str = "_write") -> None:
    """TensorBoard's own file layer (its gfile stub) fails after `after` successful calls."""
    from tensorboard.compat.tensorflow_stub.io import gfile

    real = getattr(gfile.LocalFileSystem, where)
    calls = []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise OSError(error, os.strerror(error))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(gfile.LocalFileSystem, where, failing)


def test_disk_full_while_writing_tensorboard_logs(corpus, tmp_path, monkeypatch, capfd):
    run = tmp_path / "run"
    _tensorboard_fails(monkeypatch, after=3, error=errno.ENOSPC)
    with pytest.raises(W2VError) as err:
        train(run_cfg(corpus), run)
    msg = one_line(err)
    assert f"cannot write TensorBoard logs to {run / 'tb'}: No space left on device" in msg
    assert "checkpoints so far are intact" in msg
    assert all(checkpoint.load(p) for p in _step_files(run))
    assert "Traceback" not in capfd.readouterr().err  # the writer thread printed nothing


def test_no_permission_for_the_tensorboard_dir(corpus, tmp_path, monkeypatch):
    _tensorboard_fails(monkeypatch, after=0, error=errno.EACCES, where="makedirs")
    with pytest.raises(W2VError) as err:
        train(run_cfg(corpus), tmp_path / "run")
    assert "cannot write TensorBoard logs" in one_line(err) and "Permission denied" in \
        one_line(err)
    assert not _step_files(tmp_path / "run")  # it stopped before training, not after
