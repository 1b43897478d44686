"""Shared fixtures and helpers: paths to ../shared/data, a planted-structure synthetic corpus,
the config of a small run on it and the checks that it was learnt.

The planted corpus makes learning checkable in seconds. Its words are `e{i}f{j}`: entity i in
form j (think "king"/"kings"). Each sentence is about one entity in one form, so a word's
context mixes entity-specific words `c{i}_*` and form-specific words `g{j}_*`. Vectors that
learn the co-occurrence therefore decompose as entity + form, which plants:
  - neighbours: e{i}f0 and e{i}f1 share all entity contexts, so each is the other's neighbour;
  - analogies: e{a}f0 : e{a}f1 :: e{b}f0 : e{b}f1 (3CosAdd recovers the form offset).
"""

from __future__ import annotations

import ast
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from w2v.config import Config


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
    """Keep every test's index-tensor cache in its own tmp dir, and its default eval.dir
    there too (empty): a test evaluates only with the suites it names, so a run with
    $W2V_EVAL_DIR set (a user's shell, once CI's) tests what a run without it does."""
    monkeypatch.setenv("W2V_CACHE", str(tmp_path / "w2v-cache"))
    monkeypatch.delenv("W2V_EVAL_DIR", raising=False)


# --- what many test files share: composing configs, the planted corpus's run and checks ------


def compose_cfg(overrides: list[str]) -> Config:
    """conf/ composed with `overrides` as `python -m w2v.train` composes it, as the typed Config."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from w2v.cli import CONF_DIR
    from w2v.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return OmegaConf.to_object(compose("config", overrides=overrides))


def planted_cfg(planted, *overrides: str) -> Config:
    """A small, fast run on the planted corpus (24 dims, one thread, no progress bar), plus
    `overrides`."""
    return compose_cfg([
        "data=local", f"data.path={planted.path}", "data.min_count=1",
        "model.dim=24", "model.window=3", "model.sample=0",
        "trainer.threads=1", "trainer.progress=false", "trainer.batch_size=256",
        "trainer.ckpt_every=0", "eval.projector_words=50",
        # One rate for both architectures: on this 76-word corpus CBOW's default 0.05 (right
        # for real corpora, docs/performance.md) overshoots with hierarchical softmax.
        "trainer.lr=0.025",
        *overrides,
    ])


def planted_table(vectors: torch.Tensor, words: list[str], planted):
    """Unit vectors of the planted e{i}f{j} words only, as (entities, forms, D)."""
    index = {w: i for i, w in enumerate(words)}
    rows = [[index[planted.word(e, f)] for f in range(planted.forms)]
            for e in range(planted.entities)]
    return torch.nn.functional.normalize(vectors[torch.tensor(rows)], dim=-1)


def neighbours_recovered(vectors: torch.Tensor, words: list[str], planted, k: int = 5) -> float:
    """Share of planted words e{i}f{j} whose k nearest words all belong to entity i
    (its context words c{i}_* or its other form): the planted neighbourhoods."""
    unit = torch.nn.functional.normalize(vectors, dim=1)
    hits = 0
    for e in range(planted.entities):
        for f in range(planted.forms):
            q = words.index(planted.word(e, f))
            sims = unit @ unit[q]
            sims[q] = -2
            near = [words[i] for i in sims.topk(k).indices.tolist()]
            hits += all(w.startswith((f"c{e}_", f"e{e}f")) for w in near)
    return hits / (planted.entities * planted.forms)


def analogies_recovered(vectors, words, planted) -> float:
    """e_a f0 : e_a f1 :: e_c f0 : ?  answered by 3CosAdd among the planted words."""
    table = planted_table(vectors, words, planted)  # (E, 2, D)
    flat = table.reshape(-1, vectors.shape[1])
    ok = total = 0
    for a in range(planted.entities):
        for c in range(planted.entities):
            if a == c:
                continue
            sims = flat @ (table[a, 1] - table[a, 0] + table[c, 0])
            sims[[2 * a, 2 * a + 1, 2 * c]] = -9
            ok += int(sims.argmax()) == 2 * c + 1
            total += 1
    return ok / total


def write_planted_suites(folder: Path, planted) -> Path:
    """questions-words.txt and wordsim353.tsv in the standard formats, over planted words."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [": planted-forms"] + [" ".join(q) for q in planted.analogies()]
    (folder / "questions-words.txt").write_text("\n".join(lines) + "\n")
    pairs = ["# w1\tw2\tscore"]
    for e in range(planted.entities):
        pairs.append(f"{planted.word(e, 0)}\t{planted.word(e, 1)}\t9.0")
        pairs.append(f"{planted.word(e, 0)}\tc{e}_0\t7.0")
        pairs.append(f"{planted.word(e, 0)}\t{planted.word((e + 1) % planted.entities, 1)}\t1.0")
    (folder / "wordsim353.tsv").write_text("\n".join(pairs) + "\n")
    return folder


def scalars(logdir: Path, tag: str) -> list[float]:
    """A TensorBoard scalar's values, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


class StopAfter:
    """Stands in for train.StopFlag: reports SIGTERM after `n` steps (an interrupted run)."""

    def __init__(self, n: int) -> None:
        self.n, self.checks = n, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    @property
    def signum(self):
        self.checks += 1
        return signal.SIGTERM if self.checks > self.n else None


def free_port() -> int:
    """A free TCP port on loopback, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- what failure tests share: one-line errors, folders that must survive unchanged ---------


def one_line(err: pytest.ExceptionInfo) -> str:
    """The error's message, checked to be a single line (what the CLI edge prints)."""
    text = str(err.value)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    return text


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`: what must survive a failed command unchanged."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def stamped_snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under folder: content hash and mtime (a rewrite with equal bytes shows)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                         p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_intact(before: dict[str, str], folder: Path) -> None:
    after = snapshot(folder)
    assert {k: after.get(k) for k in before} == before  # no earlier file changed or vanished
    assert not [k for k in after if k.endswith(".tmp")]


def docs_of(c) -> list[list[str]]:
    """A corpus's documents as lists of words (its ids read back through the vocabulary)."""
    ids, off = c.ids.numpy(), c.doc_offsets.numpy()
    return [[c.vocab.words[i] for i in ids[a:b]] for a, b in zip(off[:-1], off[1:], strict=True)]
