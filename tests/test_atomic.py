"""Atomic writes create files as open() would: the mode follows the user's umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import planted_cfg
from w2v.atomic import atomic_torch_save, atomic_write_text, umask
from w2v.train import train


@pytest.fixture
def set_umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_get_the_umasks_mode(tmp_path, set_umask, mask, expected):
    set_umask(mask)
    assert umask() == mask
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_torch_save({"x": 1}, tmp_path / "b.pt")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what any other tool would create
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "b.pt") == mode(plain) == expected


def test_a_runs_outputs_and_cache_are_readable_by_the_group(planted, tmp_path, set_umask,
                                                           monkeypatch):
    set_umask(0o022)
    monkeypatch.setenv("W2V_CACHE", str(tmp_path / "cache"))
    train(planted_cfg(planted, "trainer.epochs=1", "eval.projector_words=0"), tmp_path / "run")
    run = tmp_path / "run"
    written = [run / "vectors.pt", run / "vectors.txt", run / "metrics.json",
               *(run / "checkpoints").glob("step-*.pt")]
    assert {p.name: mode(p) for p in written} == {p.name: 0o644 for p in written}
    (cache,) = (tmp_path / "cache").iterdir()
    assert mode(cache) == 0o755  # the cache folder is built in a 0700 temp folder, then opened
    assert {mode(p) for p in cache.iterdir()} == {0o644}
