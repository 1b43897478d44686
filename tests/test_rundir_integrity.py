"""A run dir holds one run, whole: the loss and the epoch records a resume continues, one
run at a time in a run dir, no write through a planted symlink, no stale temporary files.

Each test backs a row of docs/reliability.md ("Run directories")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import (
    StopAfter,
    compose_cfg,
    planted_cfg,
    stamped_snapshot,
    write_planted_corpus,
)
from w2v import checkpoint, rundir
from w2v import train as train_mod
from w2v.errors import W2VError
from w2v.train import TrainingInterrupted, train

ROOT = Path(__file__).resolve().parents[1]

# 36,000 words in 3,000-word steps: 12 steps per epoch.
FUSED = ("trainer.engine=fused", "trainer.epochs=2", "trainer.chunk_words=3000")
STEPS = 12


def _cut_and_resume(planted, run, monkeypatch, after: int, *over: str) -> dict:
    """Train until a stop is seen after `after` steps, then resume in a new train() call."""
    monkeypatch.setattr(train_mod, "StopFlag", lambda: StopAfter(after))
    with pytest.raises(TrainingInterrupted):
        train(planted_cfg(planted, *FUSED, *over), run)
    monkeypatch.undo()
    return train(planted_cfg(planted, *FUSED, *over, "trainer.resume=latest"), run)


def test_final_loss_after_a_resume_inside_the_last_epoch_equals_the_uninterrupted(
        planted, tmp_path, monkeypatch):
    full = train(planted_cfg(planted, *FUSED), tmp_path / "full")
    resumed = _cut_and_resume(planted, tmp_path / "cut", monkeypatch, STEPS + 5)
    _, cut = checkpoint.peek(tmp_path / "cut" / "checkpoints" / "step-00000018.pt")
    assert (cut.epoch, cut.step) == (1, 6)  # the stop landed inside the last epoch
    assert resumed["final_loss"] == full["final_loss"]


def test_a_stop_at_an_epoch_boundary_keeps_the_epochs_record(planted, tmp_path, monkeypatch,
                                                              caplog):
    """The stop is seen at the epoch's last step: the epoch's line and its epoch/loss point
    are written before the stop's checkpoint (they used to be lost, the resume starting the
    next epoch)."""
    caplog.set_level("INFO", logger="w2v")
    full = train(planted_cfg(planted, *FUSED), tmp_path / "full")
    caplog.clear()
    resumed = _cut_and_resume(planted, tmp_path / "cut", monkeypatch, STEPS - 1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    _, cut = checkpoint.peek(tmp_path / "cut" / "checkpoints" / f"step-{STEPS:08d}.pt")
    assert (cut.epoch, cut.step) == (1, 0) and cut.epoch_loss is not None
    assert _epoch_points(tmp_path / "cut" / "tb") == [1, 2]
    assert resumed["final_loss"] == full["final_loss"]


def _epoch_points(tb) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for events in sorted(tb.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if "epoch/loss" in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars("epoch/loss")]
    return sorted(steps)


# ---- one run in a run dir ---------------------------------------------------------------


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "w2v.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small corpus and the command line of a quick run on it (2 epochs, a checkpoint
    every 2 steps)."""
    root = tmp_path_factory.mktemp("one-run")
    corpus = write_planted_corpus(root / "small.txt", sentences=400).path
    args = ["data=local", f"data.path={corpus}", "data.min_count=1", "model.dim=8",
            "trainer.threads=1", "trainer.progress=false", "trainer.epochs=2",
            "trainer.chunk_words=1000", "trainer.ckpt_every=2", "eval.dir=null",
            "eval.projector_words=0"]
    return SimpleNamespace(root=root, corpus=corpus, args=args,
                           env={"W2V_CACHE": str(root / "cache")})


def test_a_new_run_in_another_runs_dir_is_refused_or_replaces_it(small):
    run = small.root / "exp"
    first = _cli(*small.args, f"hydra.run.dir={run}", cwd=small.root, env=small.env)
    assert first.returncode == 0, first.stderr[-2000:]
    before = stamped_snapshot(run)
    again = _cli(*small.args, "trainer.lr=0.05", f"hydra.run.dir={run}", cwd=small.root,
                 env=small.env)
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr.startswith(f"error: {run} holds another run (checkpoints, vectors.pt")
    assert "trainer.resume=latest" in again.stderr and "trainer.overwrite=true" in again.stderr
    # its .hydra/config.yaml too: refused before Hydra wrote it
    assert stamped_snapshot(run) == before

    # trainer.overwrite=true replaces the run: the dir then holds the new run alone.
    new = _cli(*small.args, "trainer.lr=0.05", "trainer.epochs=1", "trainer.overwrite=true",
               f"hydra.run.dir={run}", cwd=small.root, env=small.env)
    assert new.returncode == 0, new.stderr[-2000:]
    steps = sorted((run / "checkpoints").glob("step-*.pt"))
    assert steps and all(checkpoint.peek(p)[0]["trainer"]["lr"] == 0.05 for p in steps)
    assert checkpoint.peek(checkpoint.latest(run / "checkpoints"))[1].epoch == 1
    assert "lr: 0.05" in (run / ".hydra" / "config.yaml").read_text()
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1


def test_train_in_process_refuses_another_runs_dir(planted, tmp_path):
    (tmp_path / "vectors.pt").write_bytes(b"an earlier run's vectors")
    with pytest.raises(W2VError, match="holds another run \\(vectors.pt\\)"):
        train(planted_cfg(planted, *FUSED), tmp_path)
    assert (tmp_path / "vectors.pt").read_bytes() == b"an earlier run's vectors"


def test_a_checkpoint_from_elsewhere_is_not_continued_in_another_runs_dir(planted, tmp_path):
    train(planted_cfg(planted, *FUSED, "trainer.epochs=1"), tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.json").write_text("{}")  # run b's
    elsewhere = checkpoint.latest(tmp_path / "a" / "checkpoints")
    with pytest.raises(W2VError, match="b holds another run \\(metrics.json\\)"):
        train(planted_cfg(planted, *FUSED, f"trainer.resume={elsewhere}"), tmp_path / "b")
    assert rundir.continues("latest", tmp_path / "b")
    assert rundir.continues(str(elsewhere), tmp_path / "a")


def test_pruning_keeps_the_checkpoint_just_written(tmp_path):
    """Checkpoints past the one written (an older run's higher steps, a branch a resume from
    an earlier checkpoint left) are not what pruning removes: the one written stays."""
    for step in (30, 60, 90):
        checkpoint.write(tmp_path, step, {"step": step})
    for step in (3, 6, 9, 12):
        path = checkpoint.write(tmp_path, step, {"step": step})
        assert path.is_file()
    names = sorted(p.name for p in tmp_path.glob("step-*.pt"))
    assert names == ["step-00000006.pt", "step-00000009.pt", "step-00000012.pt",
                     "step-00000030.pt", "step-00000060.pt", "step-00000090.pt"]
    checkpoint.write(tmp_path, 10**8, {})  # a longer name sorts by its number
    assert checkpoint.latest(tmp_path).name == "step-100000000.pt"


# ---- one run at a time --------------------------------------------------------------------

HOLD = """
import sys, time
from w2v import rundir
rundir.claim(sys.argv[1], resuming=True, overwrite=False)
print("held", flush=True)
time.sleep(600)
"""


def _holder(run: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_in_a_run_dir_in_use_is_refused_and_a_killed_one_leaves_no_lock(
        small, planted, tmp_path):
    run = tmp_path / "busy"
    holder = _holder(run)
    try:
        busy = _cli(*small.args, f"hydra.run.dir={run}", cwd=small.root, env=small.env)
        assert busy.returncode == 2 and busy.stderr.count("\n") == 1, busy.stderr
        assert busy.stderr.startswith(f"error: {run} is in use by another w2v run")
        assert sorted(p.name for p in run.iterdir()) == [".w2v-run.lock"]  # no .hydra/, no tb/
        with pytest.raises(W2VError, match="is in use by another w2v run"):
            train(planted_cfg(planted, *FUSED), run)
    finally:
        holder.kill()  # kill -9: the kernel drops its lock
        holder.wait()
    metrics = train(planted_cfg(planted, *FUSED, "trainer.epochs=1"), run)
    assert metrics["epochs"] == 1


# ---- no write through a planted symlink ----------------------------------------------------

LINKED = (".hydra/config.yaml", "train.log", "tb/projector_config.pbtxt",
          "tb/00000/input_vectors/tensors.tsv")


@pytest.mark.parametrize("rel", LINKED)
def test_a_symlink_planted_in_the_run_dir_is_refused(planted, tmp_path, rel):
    target = tmp_path / "target.txt"
    target.write_text("mine")
    run = tmp_path / "run"
    (run / rel).parent.mkdir(parents=True)
    (run / rel).symlink_to(target)
    with pytest.raises(W2VError, match=f"{run / rel} is a symlink .*remove the link"):
        train(planted_cfg(planted, *FUSED), run)
    assert target.read_text() == "mine" and (run / rel).is_symlink()


def test_the_command_line_refuses_a_planted_symlink_before_hydra_writes(small, tmp_path):
    """Hydra writes .hydra/config.yaml and train.log itself (plain opens, which follow
    links): the run dir is checked before Hydra starts."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    targets = {rel: tmp_path / f"target-{i}" for i, rel in enumerate(LINKED[:2])}
    for rel, target in targets.items():
        target.write_text("mine")
        (run / rel).symlink_to(target)
    done = _cli(*small.args, f"hydra.run.dir={run}", cwd=small.root, env=small.env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is a symlink" in done.stderr
    assert all(t.read_text() == "mine" for t in targets.values())


# ---- what killed runs leave -------------------------------------------------------------

HOLD_FILE = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def _hold_file(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_FILE, str(path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_temp_files_a_killed_run_left_are_removed_and_live_ones_kept(tmp_path):
    from w2v import atomic

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stale = [run / "checkpoints" / ".step-00000002.pt.k1x2.tmp", run / ".metrics.json.a9.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    live = run / ".vectors.pt.b7.tmp"
    holder = _hold_file(live)  # another process writing it now (atomic.hold)
    try:
        assert rundir.claim(run, resuming=True, overwrite=False)
        rundir.release(run)
        assert not any(p.exists() for p in stale) and live.exists()
    finally:
        holder.kill()
        holder.wait()
    # The atomic writer holds its own temporary file while it writes.
    with atomic.atomic_open(run / "x.bin") as f:
        (tmp,) = run.glob(".x.bin.*.tmp")
        assert atomic.in_use(tmp)
        f.write(b"x")
    assert not atomic.in_use(run / "x.bin")


def test_cache_build_folders_a_killed_build_left_are_removed(planted, tmp_path):
    from w2v import corpus

    root = tmp_path / "w2v-cache"  # the test's W2V_CACHE (conftest)
    dead, live, old, young = (root / f".local-{n}.tmp-x" for n in ("dead", "live", "old", "new"))
    for folder in (dead, live, old, young):
        folder.mkdir(parents=True)
        (folder / "ids.npy").write_bytes(b"half")
    (dead / corpus.BUILDING).write_bytes(b"")  # its build was killed: nobody holds it
    holder = _hold_file(live / corpus.BUILDING)  # a build running now
    past = time.time() - 2 * corpus.STALE_SECONDS
    os.utime(old, (past, past))  # an earlier version's folder, untouched for two hours
    try:
        corpus.build_corpus(planted_cfg(planted).data, progress=False)
        assert not dead.exists() and not old.exists()
        assert live.exists() and young.exists()
    finally:
        holder.kill()
        holder.wait()
    (built,) = [p for p in root.iterdir() if not p.name.startswith(".")]
    assert not (built / corpus.BUILDING).exists()  # the finished cache holds no marker


# ---- what a resume reads and what a finished run has -------------------------------------


def test_a_foreign_checkpoint_cannot_choose_what_a_resume_reads(small, tmp_path):
    """A checkpoint names its corpus; resumed in a run dir whose record does not name that
    corpus, it is refused before anything is read, naming the file it would read."""
    secret = tmp_path / "secret.txt"
    secret.write_text("private words " * 50)
    run = small.root / "exp-foreign-src"
    done = _cli(*small.args, "trainer.epochs=1", f"hydra.run.dir={run}", cwd=small.root,
                env=small.env)
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(checkpoint.latest(run / "checkpoints"), weights_only=True)
    state["config"]["data"]["path"] = str(secret)
    forged = tmp_path / "foreign.pt"
    torch.save(state, forged)
    cache = tmp_path / "cache"
    there = tmp_path / "elsewhere"
    refused = _cli(f"trainer.resume={forged}", f"hydra.run.dir={there}", cwd=tmp_path,
                   env={"W2V_CACHE": str(cache)})
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith(f"error: {forged} would read data.path={secret}")
    assert not cache.exists() and not there.exists()  # nothing read, nothing written

    # Resumed by its path into a new run dir, a checkpoint is read with the record of the run
    # dir it sits in (the Ctrl-C line's `trainer.resume=<path>`); in the run dir it came from,
    # with that dir's own record.
    own = checkpoint.latest(run / "checkpoints")
    assert rundir.prepare(compose_cfg([f"trainer.resume={own}"]), tmp_path / "new",
                          {"trainer.resume"}).config.data.path == str(small.corpus)
    (run / "metrics.json").unlink()
    resumed = _cli("trainer.resume=latest", f"hydra.run.dir={run}", cwd=tmp_path,
                   env=small.env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_a_relative_data_path_in_the_record_is_read_from_where_the_run_started(tmp_path):
    hydra = tmp_path / "run" / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "config.yaml").write_text("data:\n  path: corpus/small.txt\n")
    (hydra / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {tmp_path}\n")
    assert rundir.recorded_data_path(tmp_path / "run") == str(tmp_path / "corpus/small.txt")


def test_a_finished_run_whose_vectors_were_deleted_is_finished_again(planted, tmp_path,
                                                                      caplog):
    full = train(planted_cfg(planted, *FUSED), tmp_path)
    (tmp_path / "vectors.txt").unlink()
    caplog.set_level("INFO", logger="w2v")
    again = train(planted_cfg(planted, *FUSED, "trainer.resume=latest"), tmp_path)
    assert "is finished" not in caplog.text
    assert (tmp_path / "vectors.txt").is_file()
    assert again["final_loss"] == full["final_loss"]


def test_a_run_dir_inside_the_corpus_folder_is_not_read_as_corpus(planted, tmp_path):
    from w2v.sources import resolve_local

    data = tmp_path / "data"
    data.mkdir()
    (data / "planted.txt").write_bytes(planted.path.read_bytes())
    run = data / "runs" / "exp"
    (run / ".hydra").mkdir(parents=True)
    (run / "train.log").write_text("zzlogword " * 1000)
    assert resolve_local(str(data)).files == ((data / "planted.txt").resolve(),)
    assert resolve_local(str(data / "**" / "*.*")).files == ((data / "planted.txt").resolve(),)
    train(planted_cfg(planted, *FUSED, f"data.path={data}", "trainer.epochs=1"), run)
    words = torch.load(run / "vectors.pt", weights_only=True)["words"]
    assert "zzlogword" not in words and "e0f0" in words


@pytest.mark.parametrize("value", ["/data/ünïcode.txt", "/data/part[1].txt"])
def test_an_unquoted_path_hydra_cannot_read_says_to_quote_it(value):
    from w2v.cli import precheck

    with pytest.raises(W2VError) as refused:
        precheck(["data=local", f"data.path={value}"])
    assert str(refused.value).endswith(f"""quote the value, e.g. 'data.path="{value}"' in the """
                                       "shell")
    precheck(["data=local", f'data.path="{value}"'])  # quoted, it is read
