"""A run's directory: resume from the run dir alone (the checkpoint's config is the run's),
harmless overrides applied, contradicting ones refused by name, the run's .hydra/ record kept,
a finished run left untouched, words/s over the parts of an interrupted run, strict JSON, and
no empty run folder after a run that failed before writing anything."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import StopAfter, planted_cfg, stamped_snapshot
from w2v import checkpoint
from w2v import train as train_mod
from w2v.rundir import hydra_args
from w2v.train import TrainingInterrupted, strict_json, train

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "w2v.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def strict_load(path: Path) -> dict:
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


@pytest.fixture(scope="module")
def cli_run(planted, tmp_path_factory):
    """A CBOW run started from the command line with several overrides, interrupted as if at
    the end of its first epoch (outputs and the last checkpoint removed)."""
    root = tmp_path_factory.mktemp("cli-run")
    run = root / "run"
    original = ["data=local", f"data.path={planted.path}", "data.min_count=1", "model=cbow",
                "model.dim=16", "trainer.epochs=2", "trainer.threads=1",
                "trainer.progress=false", "eval.dir=null", "eval.projector_words=0",
                f"hydra.run.dir={run}"]
    done = cli(*original, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    first, last = sorted((run / "checkpoints").glob("step-*.pt"))
    for path in (last, run / "metrics.json", run / "vectors.pt", run / "vectors.txt"):
        path.unlink()
    return SimpleNamespace(root=root, run=run, first=first)


def test_resume_with_the_run_dir_alone_continues_with_the_runs_config(cli_run):
    run = cli_run.run
    record = stamped_snapshot(run / ".hydra")
    # A contradicting override is refused by name, and nothing is written or changed.
    before = stamped_snapshot(run)
    bad = cli("trainer.resume=latest", f"hydra.run.dir={run}", "model.dim=8", cwd=cli_run.root)
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"error: cannot resume from {cli_run.first} with model.dim=8 "
                                 "(the run has 16)") and bad.stderr.count("\n") == 1
    assert stamped_snapshot(run) == before

    # The run dir alone (no data, model or trainer overrides) continues the CBOW run; a
    # harmless override is applied and reported.
    done = cli("trainer.resume=latest", f"hydra.run.dir={run}", "trainer.threads=2",
               cwd=cli_run.root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resume changes trainer.threads: 1 -> 2" in done.stdout
    # Epochs counted from 1 in every line: the first epoch's checkpoint resumes the second.
    assert f"resumed from {cli_run.first} in epoch 2/2, 0 steps into it" in done.stdout
    assert "epoch 2/2: loss" in done.stdout and "epoch 1/2" not in done.stdout
    vectors = torch.load(run / "vectors.pt", weights_only=True)["vectors"]
    assert vectors.shape[1] == 16
    final, _ = checkpoint.peek(sorted((run / "checkpoints").glob("step-*.pt"))[-1])
    assert (final["model"]["arch"], final["trainer"]["lr"]) == ("cbow", 0.05)
    assert final["trainer"]["threads"] == 2
    # The run's own record is as the first run wrote it; the resume is recorded beside it.
    assert {k: v for k, v in stamped_snapshot(run / ".hydra").items() if k in record} == record
    resumes = list((run / ".hydra").glob("resume-*.yaml"))
    assert len(resumes) == 1 and "trainer.threads=2" in resumes[0].read_text()
    assert strict_load(run / "metrics.json")["epochs"] == 2


def test_a_checkpoint_path_alone_resumes_in_the_run_dir_it_belongs_to(planted, tmp_path):
    """trainer.resume=<run>/checkpoints/step-N.pt without hydra.run.dir continues in <run>:
    the vectors, metrics and the TensorBoard curve land where the run started, and no new
    outputs/ folder appears."""
    run = tmp_path / "run"
    done = cli("data=local", f"data.path={planted.path}", "data.min_count=1", "model.dim=8",
               "trainer.epochs=2", "trainer.threads=1", "trainer.progress=false",
               "eval.dir=null", "eval.projector_words=0", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    first, last = sorted((run / "checkpoints").glob("step-*.pt"))
    for path in (last, run / "metrics.json", run / "vectors.pt", run / "vectors.txt"):
        path.unlink()
    events = set((run / "tb").iterdir())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = cli(f"trainer.resume={first}", cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {first} in epoch 2/2" in done.stdout
    assert not list(elsewhere.iterdir())  # no outputs/ folder
    assert (run / "vectors.pt").is_file() and strict_load(run / "metrics.json")["epochs"] == 2
    assert set((run / "tb").iterdir()) > events  # the curve goes on in the run's tb/
    assert len(list((run / ".hydra").glob("resume-*.yaml"))) == 1


def test_hydra_args_send_a_checkpoint_path_to_its_run_dir(tmp_path):
    ckpt = tmp_path / "model.dim=50,model=cbow" / "checkpoints" / "step-00000001.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    run = f"hydra.run.dir='{ckpt.parent.parent}'"  # quoted: Hydra's grammar reads '=' and ','
    assert hydra_args([f"trainer.resume={ckpt}"]) == [
        f"trainer.resume={ckpt}", run, "hydra.output_subdir=null"]
    given = [f"trainer.resume={ckpt}", "hydra.run.dir=elsewhere"]  # an explicit dir wins
    assert hydra_args(given) == [*given, "hydra.output_subdir=null"]
    loose = tmp_path / "step-00000001.pt"  # not in a run's checkpoints/: a new run dir
    loose.write_bytes(b"")
    assert hydra_args([f"trainer.resume={loose}"]) == [
        f"trainer.resume={loose}", "hydra.output_subdir=null"]


def test_resume_command_reads_back_through_the_shell_and_hydra(tmp_path):
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from w2v.rundir import resume_command

    for name in ("plain", "model.dim=50,model=cbow", "it's here"):
        argv = shlex.split(resume_command("w2v-train", tmp_path / name))
        assert argv[:2] == ["w2v-train", "trainer.resume=latest"]
        override = OverridesParser.create().parse_override(argv[2])
        assert override.key_or_group == "hydra.run.dir"
        assert override.value() == str(tmp_path / name)


def test_resuming_a_finished_run_changes_nothing(cli_run):
    run = cli_run.run
    if not (run / "metrics.json").exists():  # (when run alone) finish it first
        assert cli("trainer.resume=latest", f"hydra.run.dir={run}", cwd=cli_run.root
                   ).returncode == 0
    before = stamped_snapshot(run)
    done = cli("trainer.resume=latest", f"hydra.run.dir={run}", cwd=cli_run.root)
    assert done.returncode == 0, done.stderr
    assert f"{run} is finished (2 epochs" in done.stdout and "nothing to do" in done.stdout
    assert stamped_snapshot(run) == before  # not even train.log or .hydra/ was touched


def test_words_per_sec_counts_each_part_of_an_interrupted_run_once(planted, tmp_path,
                                                                    monkeypatch):
    """A fake clock ticks 1 s per read: the loop's seconds are then its steps plus one read per
    epoch end (after the epoch's loss and checkpoint). Cut late and
    resumed, the run's train_seconds must be all its steps (both parts), and words/s all its
    words over that - not all the words over the resumed part's few seconds."""
    # No evaluation (a suites folder would give it): its clock reads would count too.
    over = ("trainer.engine=fused", "trainer.epochs=2", "trainer.chunk_words=3000",
            "eval.dir=null")
    ticks = iter(range(10**6))
    monkeypatch.setattr(train_mod, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    monkeypatch.setattr(train_mod, "StopFlag", lambda: StopAfter(20))  # of 24 steps
    with pytest.raises(TrainingInterrupted):
        train(planted_cfg(planted, *over), tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(train_mod, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    _, cut = checkpoint.peek(checkpoint.latest(tmp_path / "checkpoints"))
    assert cut.train_seconds == 21 + 1  # 21 steps done when the stop was seen, 1 epoch end
    metrics = train(planted_cfg(planted, *over, "trainer.resume=latest"), tmp_path)
    seconds = 2 * math.ceil(36_000 / 3_000) + 2
    assert metrics["train_seconds"] == seconds
    assert metrics["words_per_sec"] == pytest.approx(2 * 36_000 / seconds)
    assert strict_load(tmp_path / "metrics.json")["train_seconds"] == seconds


def test_metrics_json_is_strict_json():
    text = strict_json({"final_loss": float("nan"), "x": float("inf"), "words_per_sec": 1.5,
                        "engine": "fused"})
    assert json.loads(text, parse_constant=lambda t: pytest.fail(t)) == {
        "final_loss": None, "x": None, "words_per_sec": 1.5, "engine": "fused"}


def test_a_run_that_fails_before_writing_anything_leaves_no_run_folder(tmp_path):
    run = tmp_path / "outputs" / "run"
    done = cli("data=local", f"data.path={tmp_path / 'missing.txt'}", f"hydra.run.dir={run}",
               cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert not run.exists()


def test_a_failed_resume_keeps_the_run_dir(tmp_path):
    """The folder is removed only when it holds nothing but what Hydra wrote at start."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    done = cli("trainer.resume=latest", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 2 and "found no checkpoint" in done.stderr
    assert (run / "notes.txt").read_text() == "mine"


def test_hydra_is_told_not_to_overwrite_the_runs_record_on_resume():
    from w2v.rundir import hydra_args

    assert hydra_args(["trainer.resume=latest", "hydra.run.dir=x"])[-1] == \
        "hydra.output_subdir=null"
    assert hydra_args(["model=cbow"]) == ["model=cbow"]
    assert hydra_args(["trainer.resume=null"]) == ["trainer.resume=null"]
    assert hydra_args(["-m", "trainer.resume=latest"]) == ["-m", "trainer.resume=latest"]


def test_resume_in_process_applies_harmless_changes(planted, tmp_path, monkeypatch, caplog):
    """train() with trainer.resume checks the whole config against the checkpoint's: the
    same config resumes, another threads value is applied and reported."""
    over = ("trainer.engine=autograd", "trainer.epochs=2", "trainer.batch_size=512")
    monkeypatch.setattr(train_mod, "StopFlag", lambda: StopAfter(5))
    with pytest.raises(TrainingInterrupted) as stop:
        train(planted_cfg(planted, *over), tmp_path)
    assert stop.value.code == 128 + signal.SIGTERM
    monkeypatch.undo()
    caplog.set_level("INFO", logger="w2v.train")
    metrics = train(planted_cfg(planted, *over, "trainer.threads=2", "trainer.resume=latest"),
                    tmp_path)
    assert metrics["epochs"] == 2 and math.isfinite(metrics["final_loss"])
    assert "resume changes trainer.threads: 1 -> 2" in caplog.text
