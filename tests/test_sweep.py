"""sweep.py: a multirun's jobs in folders named by their overrides, and one table comparing
them at the sweep's end (multirun.csv, multirun.md, the console)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_planted_suites
from w2v.sweep import job_dir_name, table, to_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_a_two_job_multirun_ends_with_one_comparison_table(planted, tmp_path):
    suites = write_planted_suites(tmp_path / "suites", planted)
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "w2v.train", "-m", "model.dim=8,16", "data=local",
           f"data.path={planted.path}", "data.min_count=1", "trainer.epochs=1",
           "trainer.progress=false", "trainer.threads=1", f"eval.dir={suites}",
           "eval.projector_words=0", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr and "Callback" not in done.stderr, done.stderr
    # Job dirs named by number and overrides, as Hydra sorts them; paths left out.
    names = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert names == [f"{n}_data.min_count=1,data=local,eval.projector_words=0,model.dim={d},"
                     "trainer.epochs=1,trainer.threads=1" for n, d in ((0, 8), (1, 16))]
    # The table: the swept setting, loss, words/s and each suite's score, per job.
    with open(sweep / "multirun.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model.dim"] for r in rows] == ["8", "16"]
    assert "data.path" not in rows[0]  # the same in every job: not a column
    for row, name in zip(rows, names):
        metrics = json.loads((sweep / name / "metrics.json").read_text())
        assert float(row["final_loss"]) == metrics["final_loss"]
        assert float(row["words/s"]) == metrics["words_per_sec"]
        assert float(row["questions-words"]) == metrics["eval/analogy/questions-words/accuracy"]
        assert float(row["wordsim353"]) == metrics["eval/similarity/wordsim353/spearman"]
        assert row["dir"] == name
    md = (sweep / "multirun.md").read_text()
    assert md.splitlines()[0] == ("| job | model.dim | final_loss | words/s | questions-words "
                                  "| wordsim353 |")
    assert len(md.splitlines()) == 4
    assert md in done.stdout  # printed at the end too


def test_job_dir_names_are_one_short_folder_each():
    assert job_dir_name(3, "model.dim=50,model=cbow") == "3_model.dim=50,model=cbow"
    assert job_dir_name(0, "") == "0"
    assert job_dir_name(1, "data.path=/a/b.txt") == "1_data.path=_a_b.txt"
    assert len(job_dir_name(12, "x=" + "y" * 500)) == 200
    assert len(job_dir_name(12, "x=" + "é" * 500).encode()) <= 200  # bytes, not characters


def test_an_unfinished_job_is_a_row_without_figures(tmp_path):
    jobs = [{"dir": tmp_path / "0_lr=1", "overrides": {"trainer.lr": "1"},
             "metrics": {"final_loss": 2.5, "words_per_sec": 1234.5}},
            {"dir": tmp_path / "1_lr=2", "overrides": {"trainer.lr": "2"}, "metrics": {}}]
    header, rows = table(jobs, tmp_path)
    assert header == ["job", "trainer.lr", "final_loss", "words/s", "dir"]
    assert to_markdown(header, rows).splitlines()[2:] == [
        "| 0 | 1 | 2.5000 | 1,234 |", "| 1 | 2 | n/a | n/a |"]


def test_a_single_run_says_nothing_of_the_callback(planted, tmp_path):
    """Hydra calls the callbacks of single runs too: every hook it has must exist."""
    done = subprocess.run([sys.executable, "-m", "w2v.train", "data=local",
                           f"data.path={planted.path}", "data.min_count=1", "trainer.epochs=1",
                           "trainer.progress=false", "model.dim=8", "eval.dir=null",
                           "eval.projector_words=0", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Callback" not in done.stderr and "multirun" not in done.stdout, done.stderr
