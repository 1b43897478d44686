"""Inputs and numbers: non-finite weights, a divergence with a finite
loss, a run that trains nothing, files that declare more than they hold, files of the wrong
shape, and strict JSON from the evaluator.

Each test backs a row of docs/reliability.md ("Inputs and numbers"); each failed on
the code before the change (a traceback, a silent export of NaN, or exit 0).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import one_line, planted_cfg, snapshot, write_planted_corpus
from w2v import checkpoint
from w2v import train as train_mod
from w2v.config import ExportConfig
from w2v.errors import W2VError
from w2v.export import export_checkpoint, export_tensors, load_vectors, save_vectors
from w2v.init_from import load_init
from w2v.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short real run on a small planted corpus: its checkpoint and vectors are the good
    files the tests damage."""
    root = tmp_path_factory.mktemp("numbers")
    planted = write_planted_corpus(root / "planted.txt", sentences=300)
    cfg = planted_cfg(planted, "trainer.epochs=1", f"data.cache_dir={root / 'cache'}",
                      "eval.projector_words=0")
    train(cfg, root / "run")
    return SimpleNamespace(root=root, planted=planted, dir=root / "run",
                           ckpt=checkpoint.latest(root / "run" / "checkpoints"))


def cfg_of(run, *overrides):
    return planted_cfg(run.planted, "trainer.epochs=1", f"data.cache_dir={run.root / 'cache'}",
                       "eval.projector_words=0", *overrides)


def rewrite_checkpoint(src: Path, dst: Path, change) -> Path:
    state = torch.load(src, map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, dst)
    return dst


# ---- non-finite weights are refused at load and before any export ---------------------------


def _nan_row(state: dict) -> None:
    state["model"]["input.weight"][3, 1] = float("nan")


def test_a_checkpoint_holding_nan_is_refused_by_resume_export_and_init_from(run, tmp_path):
    bad = rewrite_checkpoint(run.ckpt, tmp_path / "step-00000099.pt", _nan_row)
    with pytest.raises(W2VError) as err:
        export_checkpoint(bad, tmp_path / "out", ExportConfig())
    msg = one_line(err)
    assert "holds non-finite weights in input.weight" in msg and "row 3" in msg
    assert "use an earlier checkpoint" in msg
    assert not (tmp_path / "out").exists()
    with pytest.raises(W2VError, match="non-finite weights"):
        train(cfg_of(run, f"trainer.resume={bad}"), tmp_path / "resumed")
    with pytest.raises(W2VError, match="non-finite weights"):
        load_init(cfg_of(run, f"trainer.init_from={bad}"))


def test_init_from_vectors_with_a_nan_row_for_a_word_the_corpus_lacks(run, tmp_path):
    """No training step touches the row of a word the corpus lacks: the NaN used to travel to
    the exported vectors with exit 0."""
    kv = load_vectors(run.dir / "vectors.pt")
    table = torch.cat([kv.vectors, torch.full((1, kv.dim), float("nan"))])
    init = tmp_path / "init.pt"
    save_vectors(init, [*kv.words, "notinthecorpus"], None, table, kv.tokenizer)
    with pytest.raises(W2VError) as err:
        train(cfg_of(run, f"trainer.init_from={init}"), tmp_path / "continued")
    msg = one_line(err)
    assert "non-finite vectors" in msg and "'notinthecorpus'" in msg
    assert not (tmp_path / "continued" / "vectors.pt").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("suffix", [".txt", ".bin"])
def test_word2vec_files_with_nan_or_inf_are_refused(tmp_path, suffix, value):
    path = tmp_path / f"v{suffix}"
    rows = np.array([[0.1, 0.2], [float(value), 0.5], [0.3, 0.4]], dtype="<f4")
    words = ["a", "b", "c"]
    if suffix == ".txt":
        path.write_text("3 2\n" + "".join(f"{w} {r[0]} {r[1]}\n" for w, r in zip(words, rows)))
    else:
        path.write_bytes(b"3 2\n" + b"".join(w.encode() + b" " + r.tobytes() + b"\n"
                                             for w, r in zip(words, rows)))
    with pytest.raises(W2VError) as err:
        load_vectors(path)
    assert "1 NaN or infinite values, the first in row 1, 'b'" in one_line(err)


def test_export_refuses_non_finite_weights_before_writing_anything(tmp_path):
    words = ["a", "b", "c"]
    export_tensors(tmp_path, words, [3, 2, 1], None, torch.ones(3, 4), None, ExportConfig())
    before = snapshot(tmp_path)
    out = torch.zeros(3, 4)
    out[2, 0] = float("inf")
    with pytest.raises(W2VError) as err:
        export_tensors(tmp_path, words, [3, 2, 1], None, torch.ones(3, 4), out,
                       ExportConfig(binary=True))
    assert "refusing to export: the output vectors hold 1 NaN or infinite values" in \
        one_line(err)
    assert snapshot(tmp_path) == before


# ---- a divergence with a finite loss stops the run -------------------------------------------


def test_a_diverging_fused_run_stops_naming_trainer_lr(run, tmp_path):
    """hs at lr 1e4: the loss stays finite (1e17 and more), the weights reach 1e7; it used to
    finish with exit 0 and export them."""
    with pytest.raises(W2VError) as err:
        train(cfg_of(run, "model.loss=hs", "trainer.lr=1e4"), tmp_path / "r")
    msg = one_line(err)
    assert msg.startswith("the training diverged") and "lower trainer.lr (now 10000)" in msg
    assert not (tmp_path / "r" / "vectors.pt").exists()


def test_a_diverging_autograd_run_stops_naming_trainer_lr(run, tmp_path):
    """Adam at lr 2 ends an epoch at a loss far above that of untrained weights, all finite."""
    with pytest.raises(W2VError) as err:
        train(cfg_of(run, "trainer.engine=autograd", "trainer.optimizer=adam", "trainer.lr=2",
                     "trainer.epochs=3"), tmp_path / "r")
    msg = one_line(err)
    assert "the training diverged: the loss reached" in msg and "times the" in msg
    assert "lower trainer.lr (now 2)" in msg


def test_weights_past_the_bound_stop_the_run_before_they_are_checkpointed(run, tmp_path,
                                                                           monkeypatch):
    """The weight check itself, with a bound every run passes (0.01): the first checkpoint
    is never written, the message says so."""
    monkeypatch.setattr(train_mod, "MAX_WEIGHT", 0.01)
    with pytest.raises(W2VError) as err:
        train(cfg_of(run), tmp_path / "r")
    msg = one_line(err)
    assert "the weights reached |w| = " in msg and "no checkpoint was written" in msg
    assert checkpoint.latest(tmp_path / "r" / "checkpoints") is None


def test_normal_runs_pass_the_bounds(run):
    """The planted run of the fixture trained under the default bounds: its weights and loss
    are far inside them (the bounds' margin, model.MAX_WEIGHT and LOSS_FACTOR)."""
    from w2v.model import MAX_WEIGHT, largest_weight

    state = checkpoint.load(run.ckpt)
    assert max(largest_weight(t) for t in state["model"].values()) < MAX_WEIGHT / 100
    assert math.isfinite(state["position"]["epoch_loss"])


# ---- a run that trains nothing ---------------------------------------------------------------


def test_a_run_whose_subsampling_leaves_no_pair_is_refused(tmp_path):
    """Two words, 20 tokens: word2vec's subsampling keeps each with p ~ 0.05, so no epoch
    has a pair. It used to exit 0 with the random initial vectors."""
    two = tmp_path / "two.txt"
    two.write_text("a b a b a b a b a b a b a b\nb a b a b a\n")
    base = ["data=local", f"data.path={two}", "data.min_count=1", "trainer.epochs=3",
            "trainer.threads=1", "trainer.progress=false", "eval.dir=null",
            "eval.projector_words=0"]
    from tests.conftest import compose_cfg

    with pytest.raises(W2VError) as err:
        train(compose_cfg(base), tmp_path / "r")
    msg = one_line(err)
    assert msg.startswith("epoch 1 trained no (context, centre) pair")
    assert "set model.sample=0" in msg
    assert not (tmp_path / "r" / "vectors.pt").exists()
    metrics = train(compose_cfg([*base, "model.sample=0"]), tmp_path / "r0")  # the fix works
    assert math.isfinite(metrics["final_loss"])


# ---- files that declare more than they hold --------------------------------------------------


def deflated(obj: dict, path: Path) -> Path:
    """torch.save's archive re-zipped with deflate: what torch.load reads, a zip bomb when the
    tables are zeros."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return path


def test_a_zip_bomb_vectors_pt_is_refused_before_torch_load(tmp_path, run):
    from w2v.export import FORMAT

    words = [f"w{i}" for i in range(3000)]
    tables = {"counts": torch.zeros(3000, dtype=torch.long), "vectors": torch.zeros(3000, 2000)}
    bomb = deflated({"format": FORMAT, "words": words, **tables,
                     "tokenizer": {"lowercase": True, "pattern": None}}, tmp_path / "bomb.pt")
    assert bomb.stat().st_size < 1 << 20  # 24 MB of tables in under 1 MB
    state = torch.load(run.ckpt, map_location="cpu", weights_only=True)
    state["model"]["input.weight"] = torch.zeros(3000, 2000)
    ckpt_bomb = deflated(state, tmp_path / "step-00000001.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran on a zip bomb"))
        for load in (load_vectors, checkpoint.load,
                     lambda p: load_init(cfg_of(run, f"trainer.init_from={p}"))):
            for path in (bomb, ckpt_bomb):
                with pytest.raises(W2VError) as err:
                    load(path)
                assert "bytes in a" in one_line(err) and "torch.save writes none" in one_line(err)


def test_a_deflated_but_honest_vectors_pt_still_loads(tmp_path):
    """Re-zipping a real file with deflate is not refused: random weights do not compress."""
    from w2v.export import read_vectors_pt

    save_vectors(tmp_path / "v.pt", ["a", "b"], [2, 1], torch.randn(2, 3000), None)
    obj = read_vectors_pt(tmp_path / "v.pt")
    deflated(obj, tmp_path / "deflated.pt")
    assert torch.equal(load_vectors(tmp_path / "deflated.pt").vectors, obj["vectors"])


def test_a_word2vec_bin_header_of_1e14_words_is_one_line(tmp_path):
    path = tmp_path / "huge.bin"
    path.write_bytes(b"100000000000000 3\nab " + np.ones(3, "<f4").tobytes() + b"\n")
    with pytest.raises(W2VError) as err:
        load_vectors(path)
    assert "header says 100,000,000,000,000 words of 3 floats" in one_line(err)


# ---- vectors.pt and checkpoints of the wrong types or with missing keys -----------------------


VECTORS_DAMAGE = {
    "no-vectors": lambda o: o.pop("vectors"),
    "words-a-string": lambda o: o.update(words="abc"),
    "vectors-1d": lambda o: o.update(vectors=o["vectors"][0]),
    "vectors-ints": lambda o: o.update(vectors=o["vectors"].long()),
    "counts-short": lambda o: o.update(counts=o["counts"][:1]),
    "no-tokenizer": lambda o: o.pop("tokenizer"),
    "tokenizer-a-list": lambda o: o.update(tokenizer=[1]),
    "output-of-another-dim": lambda o: o.update(output=torch.zeros(len(o["words"]), 2)),
}


@pytest.mark.parametrize("how", VECTORS_DAMAGE)
def test_a_vectors_pt_of_the_wrong_shape_is_one_line(run, tmp_path, how):
    from w2v.export import load_embedding, load_tokenizer

    obj = torch.load(run.dir / "vectors.pt", map_location="cpu", weights_only=True)
    VECTORS_DAMAGE[how](obj)
    bad = tmp_path / "vectors.pt"
    torch.save(obj, bad)
    for load in (load_vectors, load_embedding,
                 lambda p: load_init(cfg_of(run, f"trainer.init_from={p}"))):
        with pytest.raises(W2VError) as err:
            load(bad)
        assert "is not a valid vectors.pt" in one_line(err) and "re-export it" in one_line(err)
    if how in ("no-tokenizer", "tokenizer-a-list"):
        with pytest.raises(W2VError):
            load_tokenizer(bad)


CHECKPOINT_DAMAGE = {  # entries every reader uses: export, init_from and resume refuse it
    "no-input-weight": lambda s: s["model"].pop("input.weight"),
    "input-weight-a-list": lambda s: s["model"].update({"input.weight": [1.0]}),
    "output-weight-1d": lambda s: s["model"].update({"output.weight": torch.zeros(3)}),
    "model-entry-a-string": lambda s: s["model"].update({"extra": "x"}),
    "words-a-number": lambda s: s.update(vocab=json.dumps({**json.loads(s["vocab"]),
                                                           "words": 3})),
    "config-a-string": lambda s: s.update(config="x"),
}
RESUME_DAMAGE = {  # entries only a resume uses: an export of the tables still works
    "no-position": lambda s: s.pop("position"),
    "position-a-list": lambda s: s.update(position=[1, 2]),
    "position-of-strings": lambda s: s["position"].update(epoch="one"),
    "no-rng": lambda s: s.pop("rng"),
    "rng-a-float-tensor": lambda s: s.update(rng={"torch": torch.zeros(3)}),
    "optimizer-a-list": lambda s: s.update(optimizer=[]),
}


def _resume(run, bad, tmp_path):
    train(cfg_of(run, f"trainer.resume={bad}"), tmp_path / "resumed")


@pytest.mark.parametrize("how", CHECKPOINT_DAMAGE)
def test_a_checkpoint_of_the_wrong_shape_is_one_line(run, tmp_path, how):
    bad = rewrite_checkpoint(run.ckpt, tmp_path / "step-00000099.pt", CHECKPOINT_DAMAGE[how])
    with pytest.raises(W2VError) as err:
        export_checkpoint(bad, tmp_path / "out", ExportConfig())
    assert "is not a valid w2v checkpoint" in one_line(err)
    assert not (tmp_path / "out").exists()
    for action in (lambda: _resume(run, bad, tmp_path),
                   lambda: load_init(cfg_of(run, f"trainer.init_from={bad}"))):
        with pytest.raises(W2VError) as err:
            action()
        assert "is not a valid w2v checkpoint" in one_line(err)


@pytest.mark.parametrize("how", RESUME_DAMAGE)
def test_a_checkpoint_that_cannot_resume_is_one_line(run, tmp_path, how):
    bad = rewrite_checkpoint(run.ckpt, tmp_path / "step-00000099.pt", RESUME_DAMAGE[how])
    with pytest.raises(W2VError) as err:
        _resume(run, bad, tmp_path)
    assert "is not a valid w2v checkpoint to resume" in one_line(err)
    assert export_checkpoint(bad, tmp_path / "out", ExportConfig())  # the tables are fine


# ---- the evaluator's JSON is strict -----------------------------------------------------------


def test_evaluate_json_with_one_known_pair_is_null_and_says_why(tmp_path, capsys, caplog):
    from w2v.evaluate import main as evaluate_main

    save_vectors(tmp_path / "v.pt", ["a", "b", "c"], [3, 2, 1], torch.randn(3, 4), None)
    suite = tmp_path / "pairs.tsv"
    suite.write_text("a\tb\t5.0\na\tzz\t3.0\nyy\tzz\t1.0\n")  # one pair with both words known
    out = tmp_path / "eval.json"
    with caplog.at_level("WARNING"):
        evaluate_main([f"vectors={tmp_path / 'v.pt'}", f"eval.similarities=[{suite}]",
                       "eval.dir=null", f"json={out}"])

    def refuse(name):
        raise ValueError(f"{name} is not strict JSON")

    metrics = json.loads(out.read_text(), parse_constant=refuse)
    assert metrics["similarity/pairs/spearman"] is None
    assert metrics["similarity/pairs/oov"] == pytest.approx(2 / 3)
    assert "only 1 of its pairs has both words in the vocabulary" in caplog.text


# ---- tables that cannot be allocated ----------------------------------------------------------


def test_a_model_dim_past_the_memory_is_one_line_naming_model_dim(run, tmp_path):
    """Tables of 8x the machine's memory: Linux refuses such an allocation outright, and torch
    raised it as a traceback (a smaller excess is killed while the tables are filled)."""
    from w2v.model import available_memory

    have = available_memory()
    if have is None:
        pytest.skip("no /proc/meminfo: the memory available is unknown here")
    words = len(load_vectors(run.dir / "vectors.pt"))
    dim = 8 * have // (2 * words * 4)
    with pytest.raises(W2VError) as err:
        train(cfg_of(run, f"model.dim={dim}"), tmp_path / "r")
    msg = one_line(err)
    assert msg.startswith(f"model.dim={dim} needs ") and "lower model.dim" in msg


def test_tables_larger_than_the_memory_available_are_refused_before_allocating(monkeypatch):
    from w2v import model as model_mod
    from w2v.config import ModelConfig
    from w2v.vocab import Vocab

    vocab = Vocab([f"w{i}" for i in range(1000)], np.arange(1000, 0, -1))
    monkeypatch.setattr(model_mod, "available_memory", lambda: 1 << 20)  # 1 MiB free
    monkeypatch.setattr(model_mod, "Word2Vec", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(W2VError) as err:
        model_mod.build_model(ModelConfig(dim=300), vocab)
    assert "model.dim=300 needs 0.0 GiB" in one_line(err)
    assert "more than the 0.0 GiB of memory available" in one_line(err)


# ---- the run dir Hydra makes ------------------------------------------------------------------


def test_a_run_dir_that_is_a_file_is_one_line(tmp_path):
    from w2v.cli import precheck

    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for run_dir in (afile, afile / "sub"):
        with pytest.raises(W2VError) as err:
            precheck(["data=local", "data.path=c.txt", f"hydra.run.dir={run_dir}"])
        assert one_line(err) == (f"hydra.run.dir={run_dir}: {afile} is a file, not a folder; "
                                 "set hydra.run.dir to a folder")
    assert afile.read_text() == "not a folder"


def test_a_run_dir_in_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    """Simulated (tests run as root, where a chmod'ed folder is still writable): os.access
    says no for `ro`; the real read-only filesystem is the CLI test below."""
    import os

    from w2v.cli import precheck

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access",
                        lambda p, mode: False if Path(p).resolve() == ro else real(p, mode))
    with pytest.raises(W2VError) as err:
        precheck(["data=local", "data.path=c.txt", f"hydra.run.dir={ro / 'run'}"])
    assert one_line(err).startswith(f"cannot make the run folder {ro / 'run'} in {ro}: it is "
                                    "not writable")
    monkeypatch.chdir(ro)  # the default outputs/<date>/<time> under a read-only working dir
    with pytest.raises(W2VError, match=r"cannot make the run folder outputs/.* in .*/ro: it "):
        precheck(["data=local", "data.path=c.txt"])
    precheck(["data=local", "data.path=c.txt", f"hydra.run.dir={tmp_path / 'ok'}"])


@pytest.fixture(scope="module")
def cli_cases(run, tmp_path_factory):
    """The real entry points, started at once (imports dominate): a run dir that is a file,
    run dirs on a read-only tmpfs (skipped where it cannot be mounted), a zip bomb for query."""
    import os
    import subprocess
    import sys

    from w2v.export import FORMAT

    root = tmp_path_factory.mktemp("cli")
    (root / "afile").write_text("x")
    train_args = ["-m", "w2v.train", "data=local", f"data.path={run.planted.path}",
                  "data.min_count=1", "trainer.epochs=1", "trainer.progress=false",
                  "eval.dir=null"]
    words = [f"w{i}" for i in range(3000)]
    deflated({"format": FORMAT, "words": words, "counts": torch.zeros(3000, dtype=torch.long),
              "vectors": torch.zeros(3000, 2000),
              "tokenizer": {"lowercase": True, "pattern": None}}, root / "bomb.pt")
    cases = {"run-dir-a-file": ([*train_args, f"hydra.run.dir={root / 'afile'}"], root),
             "query-zip-bomb": (["-m", "w2v.query", f"vectors={root / 'bomb.pt'}", "w1"], root)}
    ro = root / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0
    if mounted:
        cases["run-dir-read-only"] = ([*train_args, f"hydra.run.dir={ro / 'run'}"], root)
        cases["cwd-read-only"] = (train_args, ro)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "W2V_CACHE": str(run.root / "cache"), "HF_HUB_OFFLINE": "1"}
    try:
        procs = {name: subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, (argv, cwd) in cases.items()}
        out = {name: (p.wait(timeout=300), *p.communicate()) for name, p in procs.items()}
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(ro)], check=False)
    return SimpleNamespace(root=root, out=out, mounted=mounted)


@pytest.mark.parametrize("name,expect", [
    ("run-dir-a-file", "is a file, not a folder; set hydra.run.dir to a folder"),
    ("run-dir-read-only", "/ro: it is not writable (a read-only folder or filesystem)"),
    ("cwd-read-only", "cannot make the run folder outputs/"),
    ("query-zip-bomb", "torch.save writes none"),
])
def test_the_cli_edge_is_one_line_and_exit_2(cli_cases, name, expect):
    if name not in cli_cases.out:
        pytest.skip("a read-only tmpfs cannot be mounted here (not root, or no mount)")
    code, stdout, stderr = cli_cases.out[name]
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr + stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], stderr
    assert (cli_cases.root / "afile").read_text() == "x"
