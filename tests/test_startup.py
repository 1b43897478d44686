"""Ctrl-C before training has started (imports, the corpus build, Hydra's start): one line,
exit 130, and nothing half-made left behind: no cache folder, no datasets temp folder, no run
folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import w2v
from w2v import corpus as corpus_mod
from w2v import textlines as textlines_mod
from w2v.cli import report_errors
from w2v.config import DataConfig
from w2v.errors import INTERRUPTED, TERMINATED

ROOT = Path(__file__).resolve().parents[1]


# `python -m w2v.train ARGS`, run once the interpreter's own start-up is over. A signal that
# lands while Python is still importing `site` (another package's .pth file, 50 ms in on a
# loaded CI machine) is the interpreter's "Fatal Python error", before any w2v code exists.
_AFTER_PYTHONS_START_UP = """
import pathlib, runpy, sys
sys.orig_argv = [sys.executable, "-m", "w2v.train", *sys.argv[1:]]
sys.argv = ["w2v.train", *sys.argv[1:]]
print("up", flush=True)
runpy.run_module("w2v.train", run_name="__main__", alter_sys=True)
"""


def _signal_a_training_run(planted, tmp_path: Path, run: Path, delay: float, signum: int
                           ) -> tuple[int, str]:
    """`python -m w2v.train` on the planted corpus (cache under tmp_path), sent `signum`
    `delay` seconds after it starts: its exit code and stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "W2V_CACHE": str(tmp_path / "cache")}
    args = ["data=local", f"data.path={planted.path}", "trainer.progress=false",
            f"hydra.run.dir={run}"]
    proc = subprocess.Popen([sys.executable, "-c", _AFTER_PYTHONS_START_UP, *args],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "up\n"
    time.sleep(delay)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.3, 0.35, 0.4, 0.6, 0.9])
def test_ctrl_c_during_start_up_is_one_line_and_leaves_nothing(planted, tmp_path, delay):
    """SIGINT at any moment of start-up (the imports, the corpus build with `datasets`, the
    engine): exit 130, one line, no run dir, no cache. Raised as a KeyboardInterrupt inside a
    library, 0.3-0.4 s in was measured ending in exit 0, "maximum recursion depth exceeded"
    or SIGABRT; the handler (errors.stop_at_once) now stops the program itself."""
    run = tmp_path / "run"
    code, err = _signal_a_training_run(planted, tmp_path, run, delay, signal.SIGINT)
    if "checkpoint written" in err:  # a slow machine reached the training loop: its own rule
        assert code == 130
        return
    assert code == 130, err
    assert err == INTERRUPTED + "\n", err
    assert not run.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0])
def test_sigterm_during_start_up_is_one_line_143_and_leaves_nothing(planted, tmp_path, delay):
    """SIGTERM (a job scheduler, `timeout`, `docker stop`) gets Ctrl-C's handler: it used to
    kill the program outright, leaving the corpus build's temporary folder or an empty run
    dir behind."""
    run = tmp_path / "run"
    code, err = _signal_a_training_run(planted, tmp_path, run, delay, signal.SIGTERM)
    assert code == 143, err
    if "checkpoint written" in err:  # a fast machine reached the training loop: its own rule
        return
    assert err == TERMINATED + "\n", err
    assert not run.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("argv,ours", [
    (["python", "-m", "w2v.train", "model=cbow"], True),
    (["python", "-X", "importtime", "-m", "w2v.evaluate"], True),
    (["python", "-mw2v.query"], True),
    (["/venv/bin/python", "/venv/bin/w2v-train", "trainer.epochs=1"], True),
    (["python", "-m", "pytest", "tests"], False),
    (["python", "train_my_model.py"], False),
    (["python", "-c", "import w2v"], False),
    (["python"], False),
])
def test_the_quiet_interrupt_is_installed_only_for_our_programs(argv, ours):
    assert w2v._program_is_w2v(argv) is ours


def test_our_programs_collect_cyclic_garbage_less_often_and_libraries_are_left_alone():
    """A w2v program raises the collector's thresholds when w2v is imported, before torch and
    numba are (their imports ran full collections); importing w2v in someone else's program
    leaves them as they were."""
    def thresholds(program: list[str] | None) -> str:
        pose = f"sys.orig_argv = {program!r}; " if program else ""
        code = f"import gc, sys; {pose}import w2v; print(gc.get_threshold())"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True)
        return done.stdout.strip()

    default = thresholds(None)
    assert default != str(w2v.GC_THRESHOLDS)
    assert thresholds(["python", "-m", "w2v.train"]) == str(w2v.GC_THRESHOLDS)


def test_entry_points_turn_ctrl_c_into_one_line_and_130(capsys):
    @report_errors
    def main() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 130
    assert capsys.readouterr().err == INTERRUPTED + "\n"


def test_ctrl_c_during_the_corpus_build_leaves_no_cache(planted, tmp_path, monkeypatch):
    root = tmp_path / "fresh" / "cache"  # neither folder exists yet
    cfg = DataConfig(path=str(planted.path), min_count=1, cache_dir=str(root))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_mod, "_encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        corpus_mod.build_corpus(cfg, progress=False)
    assert not (tmp_path / "fresh").exists()  # no temp folder, no empty cache root
    monkeypatch.undo()
    built = corpus_mod.build_corpus(cfg, progress=False)  # and a later run builds it whole
    assert not built.cache_hit and len(built.vocab) > 0


def test_ctrl_c_inside_datasets_leaves_no_half_made_arrow_cache(tmp_path, monkeypatch):
    """Interrupted while `datasets` writes its Arrow copy of the text: datasets removes its
    `.incomplete` folder, and a rerun prepares the dataset from scratch."""
    import datasets

    text = tmp_path / "corpus.txt"
    text.write_text("a b c d\n" * 50, encoding="utf-8")
    cfg = DataConfig(path=str(text), min_count=1, cache_dir=str(tmp_path / "w2v"))
    hf = Path(datasets.config.HF_DATASETS_CACHE) / "w2v_text_lines"
    before = set(hf.rglob("*")) if hf.exists() else set()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(textlines_mod, "_rows_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        corpus_mod.build_corpus(cfg, progress=False)
    new = set(hf.rglob("*")) - before if hf.exists() else set()
    assert not [p for p in new if ".incomplete" in p.name or p.suffix == ".arrow"], new
    assert not (tmp_path / "w2v").exists()
    monkeypatch.undo()
    assert corpus_mod.build_corpus(cfg, progress=False).raw_tokens == 200


def test_a_second_ctrl_c_stops_a_long_step_at_once():
    """The first SIGINT asks the loop to checkpoint after the step; a second one (the user
    will not wait out a 20 s first compile) stops at once."""
    from w2v.train import StopFlag

    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT  # the loop sees it between steps
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here


def test_a_second_ctrl_c_in_a_w2v_program_goes_to_its_quiet_handler(monkeypatch):
    """Where the replaced SIGINT handler is a w2v program's (errors.stop_at_once), the second
    Ctrl-C is handed to it (cleanups, one line, exit 130 from the handler) rather than raised
    as a KeyboardInterrupt into whatever library code is running."""
    from w2v import train as train_mod

    calls = []

    def quiet(signum, frame):
        calls.append(signum)
        raise SystemExit(130)  # stands in for os._exit, which would end the test process

    monkeypatch.setattr(train_mod, "stop_at_once", quiet)
    previous = signal.signal(signal.SIGINT, quiet)
    try:
        with train_mod.StopFlag() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.signum == signal.SIGINT and calls == []
            with pytest.raises(SystemExit):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
        assert calls == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_w2v_program_stopping_on_a_signal_ignores_further_ctrl_c(monkeypatch):
    """Once the loop stops on a signal (its checkpoint written), the program only prints its
    line and exits 130: a later Ctrl-C is ignored there, not turned into a second line or a
    -2 death in interpreter shutdown. Leaving normally hands the handler back unchanged."""
    from w2v import train as train_mod

    def quiet(signum, frame):
        raise AssertionError("not called here")

    monkeypatch.setattr(train_mod, "stop_at_once", quiet)
    previous = {sig: signal.signal(sig, quiet) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with train_mod.StopFlag():
            pass
        assert signal.getsignal(signal.SIGINT) is quiet
        assert signal.getsignal(signal.SIGTERM) is quiet
        with pytest.raises(train_mod.TrainingInterrupted), train_mod.StopFlag():
            raise train_mod.TrainingInterrupted("SIGINT: checkpoint written", 130)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
