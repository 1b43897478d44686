"""The engine table: the automatic choice, refusals naming what runs instead, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_config import compose_cfg
from w2v.engines import ENGINES, choose_engine, spec
from w2v.errors import W2VError

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], "fused"),
    (["model.loss=hs"], "fused"),
    (["model.loss=softmax"], "autograd"),
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


def test_importing_the_engine_table_imports_no_backend():
    code = ("import sys, w2v.engines; "
            "print(sorted(m for m in ('numba', 'w2v.engines.fused') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
