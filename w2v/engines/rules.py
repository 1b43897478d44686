"""The rules every numba engine follows: word2vec's tables, the random generator, job plans.

    from w2v.engines import rules
    _sigmoid = njit(inline="always")(rules.sigmoid)      # the fused engine (CPU)
    sigmoid = cuda.jit(device=True)(rules.sigmoid)       # the cuda engine (GPU)

The scalar rules are plain Python functions that each engine compiles its own way, so the
fused and cuda engines score, draw and decay by the same code and learn alike (numba's CUDA
simulator runs them as they are). Each is self-contained (it calls no other rule): numba
cannot call a plain function from compiled code, and an engine composes them after
compiling. Tables are arguments, not globals, because the engines keep them differently
(the fused engine as frozen module constants, the cuda engine in constant memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from w2v.errors import W2VError

# word2vec.c's tables: entry i is x_i = (2 i / SIZE - 1) * MAX_EXP.
MAX_EXP = 6.0
EXP_TABLE_SIZE = 1000
_X = (np.arange(EXP_TABLE_SIZE, dtype=np.float64) / EXP_TABLE_SIZE * 2 - 1) * MAX_EXP
SIGMOID_TABLE = (1.0 / (1.0 + np.exp(-_X))).astype(np.float32)  # sigmoid(x_i)
LOSS_TABLE = np.logaddexp(0.0, -_X).astype(np.float32)  # -log sigmoid(x_i)
SCALE = EXP_TABLE_SIZE / MAX_EXP / 2

# splitmix64's constants.
_U = np.uint64
GOLDEN = _U(0x9E3779B97F4A7C15)
MIX1 = _U(0xBF58476D1CE4E5B9)
MIX2 = _U(0x94D049BB133111EB)
S30, S27, S31, S32 = _U(30), _U(27), _U(31), _U(32)
LOW32 = _U(0xFFFFFFFF)
INV24 = 1.0 / (1 << 24)  # a 24-bit draw as a float in [0, 1)


# ----------------------------------------------------------------------------- scalar rules


def next_bits(state):
    """splitmix64: returns (new state, 64 random bits)."""
    state = state + GOLDEN
    z = state
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return state, z ^ (z >> S31)


def hash_in(h, value):
    """h with `value` mixed in (one splitmix64 step of h ^ value): seeds of (seed, epoch, ...)
    are chains of these, so a stream depends on its position and nothing else."""
    z = (h ^ np.uint64(value)) + GOLDEN
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


def below(bits, n):
    """An integer uniform in [0, n) from the top 32 bits (multiply-shift, no modulo)."""
    return np.int64(((bits >> S32) * np.uint64(n)) >> S32)


def sigmoid(f, table):
    """sigmoid(f) from word2vec's table (SIGMOID_TABLE), saturated outside +-MAX_EXP."""
    if f >= MAX_EXP:
        return np.float32(1.0)
    if f <= -MAX_EXP:
        return np.float32(0.0)
    return table[np.int64((f + MAX_EXP) * SCALE)]


def loss(f, table):
    """-log sigmoid(f), by table (LOSS_TABLE) inside [-MAX_EXP, MAX_EXP]; outside, its
    asymptotes (0 and -f, off by at most log(1 + e^-6) = 0.0025) so saturated examples stay
    cheap."""
    if f >= MAX_EXP:
        return 0.0
    if f <= -MAX_EXP:
        return np.float64(-f)
    return np.float64(table[np.int64((f + MAX_EXP) * SCALE)])


# ----------------------------------------------------------------------------- host tables


@dataclass(frozen=True)
class NoiseTable:
    """Walker alias table: draw i uniform in [0, V); keep i if u32 < threshold[i], else alias[i]."""

    threshold: np.ndarray  # uint32 (V,)
    alias: np.ndarray  # int32 (V,)


@njit(cache=True)
def _alias_table(p):
    """Vose's alias method on probabilities p (V,) float64 summing to 1."""
    n = p.shape[0]
    scaled = p * n
    alias = np.arange(n).astype(np.int32)
    prob = np.ones(n)
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    ns = 0
    nl = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        g = large[nl - 1]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            nl -= 1
            small[ns] = g
            ns += 1
    # Leftovers are 1 up to rounding: keep them always (prob stays 1).
    return prob, alias


def build_noise_table(probs: np.ndarray) -> NoiseTable:
    """The negative-sampling table for `probs` (V,), e.g. vocab.noise_probs(0.75)."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    if p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise W2VError("noise probabilities must be finite, >= 0 and not all 0")
    prob, alias = _alias_table(p / p.sum())
    threshold = np.minimum(np.round(prob * 2.0**32), 2.0**32 - 1).astype(np.uint32)
    return NoiseTable(threshold=threshold, alias=alias)


def plan_jobs(doc_offsets, chunk_words: int) -> np.ndarray:
    """Split documents into jobs of about `chunk_words` tokens (whole documents each).

    Returns bounds int64 (J+1,): job j covers documents bounds[j] .. bounds[j+1]-1. A document
    starts a new job when it begins past the next multiple of chunk_words.
    """
    offsets = np.asarray(doc_offsets, dtype=np.int64)
    n_docs = offsets.shape[0] - 1
    if chunk_words < 1:
        raise W2VError(f"trainer.chunk_words={chunk_words!r} must be >= 1")
    if n_docs <= 0:
        return np.zeros(1, dtype=np.int64)
    marks = np.arange(0, offsets[-1], chunk_words, dtype=np.int64)
    starts = np.searchsorted(offsets[:-1], marks, side="left")
    return np.unique(np.concatenate([starts, [0, n_docs]])).astype(np.int64)


@dataclass(frozen=True)
class InputRows:
    """Each word's input rows as CSR: word w's input vector is the mean of
    table[rows[offsets[w]:offsets[w+1]]]. Word2vec has one row per word (the identity);
    fastText's subword model a word's own row and the rows of its character n-grams."""

    offsets: np.ndarray  # int64 (V+1,)
    rows: np.ndarray  # int32 (R,)

    @staticmethod
    def of(model) -> InputRows | None:
        """The model's input rows (w2v.model.Subwords), or None for one row per word."""
        sub = getattr(model, "subwords", None)
        return None if sub is None else InputRows(sub.offsets, sub.rows)

    @staticmethod
    def identity(vocab_size: int) -> InputRows:
        return InputRows(np.arange(vocab_size + 1, dtype=np.int64),
                         np.arange(vocab_size, dtype=np.int32))

    @property
    def is_identity(self) -> bool:
        """One row per word, word w's being row w (word2vec): the engines' fast path."""
        n = self.offsets.shape[0] - 1
        return (self.rows.shape[0] == n and bool(np.array_equal(self.offsets, np.arange(n + 1)))
                and bool(np.array_equal(self.rows, np.arange(n))))

    def check(self, vocab_size: int, table_rows: int, who: str) -> None:
        """The kernels do not bounds-check: a row past the table would write outside it."""
        o, r = self.offsets, self.rows
        ok = (o.ndim == 1 and o.shape[0] == vocab_size + 1 and o[0] == 0
              and o[-1] == r.shape[0] and bool(np.all(np.diff(o) >= 1)))
        ok = ok and (r.size == 0 or (int(r.min()) >= 0 and int(r.max()) < table_rows))
        if not ok:
            raise W2VError(f"{who}: the input rows do not fit {vocab_size} words and "
                           f"{table_rows} input rows (use the model's input_rows)")
