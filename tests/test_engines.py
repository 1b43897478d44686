"""The engine table: the automatic choice, refusals naming what runs instead, lazy imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_cfg, modules_loaded
from w2v.config import ENGINE_NAMES
from w2v.engines import ENGINES, choose_engine, spec
from w2v.errors import W2VError

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], "fused"),
    (["model.loss=hs"], "fused"),
    (["model.loss=softmax", "trainer.batch_size=256"], "autograd"),
    (["trainer.optimizer=adam"], "autograd"),
    (["model.sparse=true"], "autograd"),
])
def test_auto_takes_the_first_row_that_runs_the_config(overrides, expected):
    assert choose_engine(compose_cfg(["data.path=x", *overrides]), CPU) == expected


def test_a_refused_engine_names_its_rule_and_the_engine_to_use():
    cfg = compose_cfg(["data.path=x", "trainer.engine=fused", "trainer.optimizer=adam"])
    with pytest.raises(W2VError, match=r"trainer.engine=fused runs on cpu with "
                                       r"trainer.optimizer=sgd .* use trainer.engine=autograd"):
        choose_engine(cfg, CPU)


def test_every_row_names_an_importable_engine_with_its_rules():
    import importlib

    for row in ENGINES:
        cls = getattr(importlib.import_module(f"w2v.engines.{row.module}"), row.cls)
        assert cls.name == row.name
        assert callable(cls.pause)  # the loop pauses every engine before checkpoints
    assert spec("fused").runs("cpu", "sgd", "negative", False)
    assert not spec("fused").runs("cpu", "sgd", "negative", True)


def test_trainer_engine_accepts_exactly_the_tables_engines():
    # config.py checks trainer.engine when the config is composed, without importing the table
    assert ("auto", *(row.name for row in ENGINES)) == ENGINE_NAMES


def test_importing_the_engine_table_imports_no_backend():
    assert modules_loaded("import w2v.engines", ("numba", "w2v.engines.fused")) == []


CUDA = torch.device("cuda")  # choose_engine reads only the device's type: no GPU needed


@pytest.mark.parametrize(("overrides", "expected"), [
    (["trainer=gpu"], "cuda"),
    (["trainer=gpu", "model=cbow", "model.loss=hs"], "cuda"),
    (["trainer=gpu", "model.loss=softmax"], "autograd"),
    (["trainer=gpu", "trainer.optimizer=adam"], "autograd"),
    (["trainer=gpu", "model.sparse=true"], "autograd"),
])
def test_auto_on_a_gpu_takes_the_cuda_kernel_for_sgd_with_negative_or_hs(overrides, expected):
    assert choose_engine(compose_cfg(["data.path=x", *overrides]), CUDA) == expected


def test_the_cuda_engine_is_refused_on_cpu_outside_the_simulator(monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    cfg = compose_cfg(["data.path=x", "trainer.engine=cuda"])
    with pytest.raises(W2VError, match=r"trainer.engine=cuda runs on cuda .* "
                                       r"use trainer.engine=fused"):
        choose_engine(cfg, CPU)


def test_a_cpu_run_never_imports_numba_cuda(tmp_path):
    """Training with the fused and autograd engines, and importing the cuda engine's module,
    leave numba.cuda unimported (it is the optional numba-cuda extra on a GPU)."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c d a b c d e f\n" * 50)
    code = (
        "import sys\n"
        "from tests.conftest import compose_cfg\n"
        "from w2v.train import train\n"
        "import w2v.engines.cuda\n"
        "for engine in ('fused', 'autograd'):\n"
        f"    cfg = compose_cfg(['data=local', 'data.path={corpus}', 'data.min_count=1',\n"
        "        'model.dim=8', 'trainer.epochs=1', 'trainer.progress=false',\n"
        f"        'trainer.device=cpu', 'trainer.engine=' + engine, 'eval.projector_words=0',\n"
        f"        'data.cache_dir={tmp_path / 'cache'}'])\n"
        f"    train(cfg, '{tmp_path}/' + engine)\n"
        "print(sorted(m for m in sys.modules if m.startswith('numba.cuda')))\n"
    )
    # The simulator off, as in a user's run (importing conftest turns it on without a GPU).
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_docs_engine_table_is_the_engine_table():
    """docs/engines.md's engine table is engine_table()'s output: every row of ENGINES, as it
    is."""
    from w2v.engines import engine_table

    page = (ROOT / "docs" / "engines.md").read_text()
    assert engine_table() in page
    assert all(f"| `{row.name}` |" in engine_table() for row in ENGINES)
