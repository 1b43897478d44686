"""Shared fixtures: paths to ../shared/data and a planted-structure synthetic corpus.

The planted corpus makes learning checkable in seconds. Its words are `e{i}f{j}`: entity i in
form j (think "king"/"kings"). Each sentence is about one entity in one form, so a word's
context mixes entity-specific words `c{i}_*` and form-specific words `g{j}_*`. Vectors that
learn the co-occurrence therefore decompose as entity + form, which plants:
  - neighbours: e{i}f0 and e{i}f1 share all entity contexts, so each is the other's neighbour;
  - analogies: e{a}f0 : e{a}f1 :: e{b}f0 : e{b}f1 (3CosAdd recovers the form offset).
"""

from __future__ import annotations

import ast
import os
import random
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest


def _simulate_cuda_without_a_gpu() -> None:
    """Without a GPU, the cuda engine's tests run its kernel in numba's CUDA simulator (a
    Python thread per CUDA thread, on CPU tensors). numba reads NUMBA_ENABLE_CUDASIM when it is
    first imported, so this must run before any test imports numba; it changes nothing else
    (the fused engine's CPU kernels ignore it). With a GPU the same tests run on it."""
    if "numba" in sys.modules or "NUMBA_ENABLE_CUDASIM" in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


_simulate_cuda_without_a_gpu()

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
TEXT8_PREFIX = SHARED_DATA / "text8-prefix" / "text8-prefix"
EVAL_DIR = SHARED_DATA / "eval"


@dataclass(frozen=True)
class Planted:
    path: Path
    entities: int
    forms: int

    def word(self, entity: int, form: int) -> str:
        return f"e{entity}f{form}"

    def analogies(self) -> list[tuple[str, str, str, str]]:
        """(a, b, c, expected d) with a:b :: c:d across the form offset."""
        out = []
        for a in range(self.entities):
            for c in range(self.entities):
                if a != c:
                    out.append((self.word(a, 0), self.word(a, 1), self.word(c, 0), self.word(c, 1)))
        return out


def write_planted_corpus(
    path: Path,
    entities: int = 8,
    forms: int = 2,
    sentences: int = 3000,
    context_per_entity: int = 6,
    context_per_form: int = 6,
    length: int = 12,
    seed: int = 0,
) -> Planted:
    """Write one sentence per line; see the module docstring for the structure."""
    rng = random.Random(seed)
    lines = []
    for _ in range(sentences):
        e, f = rng.randrange(entities), rng.randrange(forms)
        words = []
        for _ in range(length):
            r = rng.random()
            if r < 0.25:
                words.append(f"e{e}f{f}")
            elif r < 0.75:
                words.append(f"c{e}_{rng.randrange(context_per_entity)}")
            else:
                words.append(f"g{f}_{rng.randrange(context_per_form)}")
        lines.append(" ".join(words))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Planted(path=path, entities=entities, forms=forms)


@pytest.fixture(scope="session")
def planted(tmp_path_factory) -> Planted:
    return write_planted_corpus(tmp_path_factory.mktemp("planted") / "planted.txt")


@pytest.fixture(scope="session")
def text8_prefix() -> Path:
    if not TEXT8_PREFIX.exists():
        pytest.skip(f"real-data test: {TEXT8_PREFIX} is not here (../shared/data missing)")
    return TEXT8_PREFIX


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    if not EVAL_DIR.exists():
        pytest.skip(f"real-data test: {EVAL_DIR} is not here (../shared/data missing)")
    return EVAL_DIR


def modules_loaded(code: str, modules: Iterable[str]) -> list[str]:
    """Which of `modules` a fresh interpreter in the checkout holds after running `code`: what
    an import or a run costs its user."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {tuple(modules)!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO,
                         check=True).stdout
    return ast.literal_eval(out.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keep every test's index-tensor cache in its own tmp dir."""
    monkeypatch.setenv("W2V_CACHE", str(tmp_path / "w2v-cache"))
