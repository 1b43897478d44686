"""The fused CPU engine: word2vec's per-pair loop compiled with numba, Hogwild over threads.

    engine = FusedEngine(model, corpus, cfg, torch.device("cpu"))   # what train.py uses
    stats = train_job(model.input.weight.data.numpy(), model.output.weight.data.numpy(),
                      ids, doc_offsets, 0, n_docs, vocab.keep_probs(1e-3), arch="skipgram",
                      loss="negative", noise=build_noise_table(vocab.noise_probs(0.75)),
                      lr_start=0.025, lr_end=0.0001, seed=1)

A batched autograd step spends its time building (B, K, D) tensors, gathering and scattering;
word2vec's work per pair is three length-D loops (a dot product and two axpys) on rows already
in cache. This module runs exactly that loop, as in word2vec.c and gensim's word2vec_inner.pyx,
on numpy views of the model's own weight tensors (`nn.Embedding.weight` = syn0, `nn.Linear
.weight` = syn1neg or syn1), updated in place. Documents are split over threads with `prange`
and every thread writes the shared tables without locks (Hogwild, as word2vec.c and gensim do).

Why numba rather than a torch C++ extension: it compiles at first use and caches the machine
code on disk (`cache=True`), so users need no compiler, and it ships wheels wherever torch does.
The first call in a fresh install compiles every variant at once: about 10 s on an idle 2-core
machine (20 s on a busy one); later processes load the cache in under a second. `warmup()` does
either eagerly and returns the time taken.

Semantics (word2vec.c / gensim 4 `train_batch_sg` / `train_batch_cbow`):
- per document, each token is kept with probability `keep_prob[id]` (fresh randomness per
  epoch), and the window runs over the kept tokens, never across documents;
- each centre draws its window b uniformly in 1..window;
- skip-gram: for each context word c of centre w, in_w[c] predicts w (gensim's train_sg_pair);
- CBOW: the mean (cbow_mean) or sum of the context rows predicts w; the error goes back to every
  context row unscaled with the mean, divided by the count with the sum (gensim 4's
  `fast_sentence_cbow_neg`: "if not cbow_mean: sscal(inv_count, work)");
- negative sampling: `negative` noise words from count**0.75; a noise word equal to the target is
  skipped (word2vec.c); g = (label - sigmoid(f)) * lr; output rows are updated at once, the input
  row(s) after all targets of the example;
- hierarchical softmax: walk the word's Huffman codes/points, g = (1 - code - sigmoid(f)) * lr.
- sigmoid: word2vec.c's table (1000 entries over [-MAX_EXP, MAX_EXP], MAX_EXP = 6). Outside the
  range negative sampling uses the saturated value (word2vec.c's clamp: g = (label - 1 or 0) * lr)
  and hierarchical softmax skips the node (word2vec.c and gensim). The loss, -log sigmoid(f) for
  positives and -log sigmoid(-f) for negatives, comes from a second table, so logging it is free.
- the learning rate decays linearly from lr_start to lr_end over the job's tokens (per centre).

Randomness: each document has its own generator (splitmix64) seeded from (seed, epoch, document
index), so with threads=1 a job is bit-reproducible and a run resumed at a job boundary equals an
uninterrupted one. With more than one thread updates race (Hogwild): results are statistically
equivalent but not bit-reproducible. Threads take whole documents (dynamic scheduling), so a
job should span several documents per thread. Call train_job from one Python thread at a time.

Negative sampling draws from a Walker/Vose alias table (O(1) per draw, 8 bytes per word, so it
stays in cache) instead of word2vec's 1e8-entry unigram table or gensim's binary search.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from w2v.engines import Step
from w2v.errors import W2VError
from w2v.vocab import Huffman

MAX_EXP = 6.0
EXP_TABLE_SIZE = 1000

_JIT = dict(fastmath=True, cache=True, nogil=True)

# word2vec.c's tables: entry i is x_i = (2 i / SIZE - 1) * MAX_EXP.
_X = (np.arange(EXP_TABLE_SIZE, dtype=np.float64) / EXP_TABLE_SIZE * 2 - 1) * MAX_EXP
SIGMOID_TABLE = (1.0 / (1.0 + np.exp(-_X))).astype(np.float32)  # sigmoid(x_i)
LOSS_TABLE = np.logaddexp(0.0, -_X).astype(np.float32)  # -log sigmoid(x_i)
_SCALE = EXP_TABLE_SIZE / MAX_EXP / 2

_U = np.uint64
_GOLDEN = _U(0x9E3779B97F4A7C15)
_MIX1 = _U(0xBF58476D1CE4E5B9)
_MIX2 = _U(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = _U(30), _U(27), _U(31), _U(32)
_LOW32 = _U(0xFFFFFFFF)
_INV24 = 1.0 / (1 << 24)


@dataclass(frozen=True)
class JobStats:
    """What one job did: summed loss over all (positive + negative) predictions, examples
    trained (skip-gram pairs, CBOW centres), tokens read and tokens kept by subsampling."""

    loss_sum: float
    pairs: int
    words: int
    effective_words: int

    def __add__(self, other: JobStats) -> JobStats:
        return JobStats(self.loss_sum + other.loss_sum, self.pairs + other.pairs,
                        self.words + other.words, self.effective_words + other.effective_words)


@dataclass(frozen=True)
class NoiseTable:
    """Walker alias table: draw i uniform in [0, V); keep i if u32 < threshold[i], else alias[i]."""

    threshold: np.ndarray  # uint32 (V,)
    alias: np.ndarray  # int32 (V,)


# ----------------------------------------------------------------------------- random numbers


@njit(inline="always", **_JIT)
def _next(state):
    """splitmix64: returns (new state, 64 random bits)."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return state, z ^ (z >> _S31)


@njit(inline="always", **_JIT)
def _below(bits, n):
    """An integer uniform in [0, n) from the top 32 bits (multiply-shift, no modulo)."""
    return np.int64(((bits >> _S32) * _U(n)) >> _S32)


@njit(**_JIT)
def _doc_state(seed, epoch, doc):
    """The generator state of one document: a hash of (seed, epoch, document index)."""
    s = _U(seed)
    s, a = _next(s)
    s = a ^ _U(epoch)
    s, a = _next(s)
    s = a ^ _U(doc)
    s, a = _next(s)
    return a


@njit(inline="always", **_JIT)
def _noise(bits, threshold, alias):
    i = _below(bits, threshold.shape[0])
    if (bits & _LOW32) < threshold[i]:
        return i
    return np.int64(alias[i])


@njit(**_JIT)
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


# ----------------------------------------------------------------------------- the kernels


@njit(inline="always", **_JIT)
def _loss(f):
    """-log sigmoid(f), by table inside [-MAX_EXP, MAX_EXP]; outside, its asymptotes
    (0 and -f, off by at most log(1 + e^-6) = 0.0025) so saturated examples stay cheap."""
    if f >= MAX_EXP:
        return 0.0
    if f <= -MAX_EXP:
        return -f
    return LOSS_TABLE[int((f + MAX_EXP) * _SCALE)]


@njit(inline="always", **_JIT)
def _sigmoid(f):
    if f >= MAX_EXP:
        return 1.0
    if f <= -MAX_EXP:
        return 0.0
    return SIGMOID_TABLE[int((f + MAX_EXP) * _SCALE)]


# Rows are indexed as w[row, k] rather than taken as views (w[row]): a view increments the
# array's shared reference count atomically, and two threads doing that for every pair fight
# over one cache line.


@njit(**_JIT)
def _ns_example(h, hrow, target, out_w, neu1e, threshold, alias, negative, lr, state):
    """Negative sampling for hidden vector h[hrow] (D,) and target word; adds to neu1e (D,).

    Returns (loss, state). Output rows are updated immediately (word2vec.c).
    """
    dim = h.shape[1]
    loss = 0.0
    for d in range(negative + 1):
        if d == 0:
            t = target
            label = 1.0
        else:
            state, bits = _next(state)
            t = _noise(bits, threshold, alias)
            if t == target:
                continue
            label = 0.0
        f = np.float32(0.0)
        for k in range(dim):
            f += h[hrow, k] * out_w[t, k]
        g = np.float32((label - _sigmoid(f)) * lr)
        loss += _loss(f) if d == 0 else _loss(-f)
        for k in range(dim):
            neu1e[k] += g * out_w[t, k]
        for k in range(dim):
            out_w[t, k] += g * h[hrow, k]
    return loss, state


@njit(**_JIT)
def _hs_example(h, hrow, target, out_w, neu1e, codes, points, lengths, lr):
    """Hierarchical softmax for hidden vector h[hrow] (D,) along target's Huffman path."""
    dim = h.shape[1]
    loss = 0.0
    for m in range(lengths[target]):
        node = np.int64(points[target, m])
        code = codes[target, m]
        f = np.float32(0.0)
        for k in range(dim):
            f += h[hrow, k] * out_w[node, k]
        loss += _loss(f) if code == 0 else _loss(-f)
        if f <= -MAX_EXP or f >= MAX_EXP:
            continue  # word2vec.c and gensim skip saturated nodes
        g = np.float32((1.0 - code - _sigmoid(f)) * lr)
        for k in range(dim):
            neu1e[k] += g * out_w[node, k]
        for k in range(dim):
            out_w[node, k] += g * h[hrow, k]
    return loss


@njit(inline="always", **_JIT)
def _subsample(ids, lo, hi, keep_prob, sen, at, state):
    """Kept tokens of ids[lo:hi] into sen, their offsets in the document into at."""
    n = 0
    for p in range(lo, hi):
        w = ids[p]
        keep = keep_prob[w]
        if keep < 1.0:
            state, bits = _next(state)
            if np.float64(bits >> _U(40)) * _INV24 >= keep:
                continue
        sen[n] = w
        at[n] = p - lo
        n += 1
    return n, state


@njit(inline="always", **_JIT)
def _zero(a):
    for k in range(a.shape[0]):
        a[k] = 0.0


@njit(**_JIT)
def _train_doc(in_w, out_w, sen, at, n, doc_pos, total, sg, hs, window, negative, cbow_mean,
               threshold, alias, codes, points, lengths, lr_start, lr_end, state):
    """Train on one subsampled document sen[:n]. Returns (loss, examples)."""
    dim = in_w.shape[1]
    neu1 = np.empty((1, dim), np.float32)  # (1, D) CBOW hidden vector
    neu1e = np.empty(dim, np.float32)  # (D,) error for the input row(s)
    loss = 0.0
    examples = 0
    slope = (lr_end - lr_start) / max(total, 1)
    for i in range(n):
        state, bits = _next(state)
        b = window - _below(bits, window)  # effective window in 1..window
        lo = max(i - b, 0)
        hi = min(i + b + 1, n)
        w = np.int64(sen[i])
        lr = lr_start + slope * (doc_pos + at[i])
        if sg:
            for j in range(lo, hi):
                if j == i:
                    continue
                c = np.int64(sen[j])
                _zero(neu1e)
                if hs:
                    loss += _hs_example(in_w, c, w, out_w, neu1e, codes, points, lengths, lr)
                else:
                    ls, state = _ns_example(in_w, c, w, out_w, neu1e, threshold, alias,
                                            negative, lr, state)
                    loss += ls
                for k in range(dim):
                    in_w[c, k] += neu1e[k]
                examples += 1
        else:
            count = hi - lo - 1
            if count <= 0:
                continue  # no context: nothing to learn (gensim would add only a constant loss)
            for k in range(dim):
                neu1[0, k] = 0.0
            for j in range(lo, hi):
                if j != i:
                    c = np.int64(sen[j])
                    for k in range(dim):
                        neu1[0, k] += in_w[c, k]
            inv = np.float32(1.0 / count)
            if cbow_mean:
                for k in range(dim):
                    neu1[0, k] *= inv
            _zero(neu1e)
            if hs:
                loss += _hs_example(neu1, 0, w, out_w, neu1e, codes, points, lengths, lr)
            else:
                ls, state = _ns_example(neu1, 0, w, out_w, neu1e, threshold, alias, negative,
                                        lr, state)
                loss += ls
            if not cbow_mean:  # gensim 4: "divide error over summed window vectors"
                for k in range(dim):
                    neu1e[k] *= inv
            for j in range(lo, hi):
                if j != i:
                    c = np.int64(sen[j])
                    for k in range(dim):
                        in_w[c, k] += neu1e[k]
            examples += 1
    return loss, examples


@njit(parallel=True, **_JIT)
def _train_docs(in_w, out_w, ids, doc_offsets, doc_start, doc_end, keep_prob, sg, hs, window,
                negative, cbow_mean, threshold, alias, codes, points, lengths, lr_start, lr_end,
                seed, epoch, out_loss, out_examples, out_kept):
    """Documents doc_start..doc_end-1 over threads; per-document stats into the out_* arrays."""
    base = doc_offsets[doc_start]
    total = doc_offsets[doc_end] - base
    for k in prange(doc_end - doc_start):
        d = doc_start + k
        lo = doc_offsets[d]
        hi = doc_offsets[d + 1]
        state = _doc_state(seed, epoch, d)
        sen = np.empty(hi - lo, np.int32)  # kept ids
        at = np.empty(hi - lo, np.int32)  # their offsets in the document (for the lr)
        n, state = _subsample(ids, lo, hi, keep_prob, sen, at, state)
        loss, examples = _train_doc(in_w, out_w, sen, at, n, lo - base, total, sg, hs, window,
                                    negative, cbow_mean, threshold, alias, codes, points,
                                    lengths, lr_start, lr_end, state)
        out_loss[k] = loss
        out_examples[k] = examples
        out_kept[k] = n


# ----------------------------------------------------------------------------- the Python API


def _as(a, dtype, name: str, ndim: int) -> np.ndarray:
    if hasattr(a, "numpy"):  # a torch tensor (CPU)
        a = a.numpy()
    out = np.ascontiguousarray(a, dtype=dtype)
    if out.ndim != ndim:
        raise W2VError(f"fused engine: {name} must be {ndim}-d, got shape {out.shape}")
    return out


def _weights(w, name: str) -> np.ndarray:
    if hasattr(w, "numpy"):
        w = w.detach().numpy()
    if not (isinstance(w, np.ndarray) and w.dtype == np.float32 and w.ndim == 2
            and w.flags.c_contiguous and w.flags.writeable):
        raise W2VError(
            f"fused engine: {name} must be a writable C-contiguous float32 (rows, dim) array "
            "(model.input.weight.data.numpy() of a float32 CPU model)"
        )
    return w


_NO_HUFFMAN = Huffman(np.zeros((1, 1), np.int8), np.zeros((1, 1), np.int32),
                            np.zeros(1, np.int32))
_NO_NOISE = NoiseTable(np.zeros(1, np.uint32), np.zeros(1, np.int32))


def _check_huffman(huff: Huffman, vocab_size: int, out_rows: int) -> None:
    """The kernels trust these arrays, so a tree from another vocabulary is caught here."""
    depth = huff.codes.shape[1]
    ok = (huff.lengths.shape[0] == vocab_size and huff.codes.shape == huff.points.shape
          and huff.codes.shape[0] == vocab_size and huff.lengths.min() >= 0
          and huff.lengths.max() <= depth)
    if ok:
        used = huff.points[np.arange(depth)[None, :] < huff.lengths[:, None]]
        ok = used.size == 0 or (used.min() >= 0 and used.max() < out_rows)
    if not ok:
        raise W2VError(f"fused engine: the Huffman tree does not fit {vocab_size} words and "
                       f"{out_rows} output rows (use vocab.huffman() of the model's vocabulary)")


def set_threads(threads: int) -> int:
    """Use `threads` numba threads (capped at NUMBA_NUM_THREADS); returns the number used."""
    n = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def train_job(
    in_w,
    out_w,
    ids,
    doc_offsets,
    doc_start: int,
    doc_end: int,
    keep_prob,
    *,
    arch: str,
    loss: str,
    window: int,
    negative: int = 5,
    cbow_mean: bool = True,
    noise: NoiseTable | None = None,
    huffman: Huffman | None = None,
    lr_start: float,
    lr_end: float,
    seed: int,
    epoch: int = 0,
    threads: int = 1,
) -> JobStats:
    """Train on documents doc_start..doc_end-1, updating in_w (V, D) and out_w in place.

    ids int32 (N,) and doc_offsets int64 (D+1,) are the corpus (numpy or torch); keep_prob
    float32 (V,) the subsampling keep probabilities (1 everywhere for no subsampling). noise
    (from build_noise_table) is needed for loss="negative", huffman (vocab.huffman()) for
    loss="hs"; out_w then has V-1 rows. The learning rate goes linearly from lr_start to
    lr_end over the job's tokens. Randomness depends on (seed, epoch, document index) only.
    """
    if arch not in ("skipgram", "cbow"):
        raise W2VError(f"model.arch={arch!r} is unknown to the fused engine: skipgram or cbow")
    if loss not in ("negative", "hs"):
        raise W2VError(f"model.loss={loss!r} is not supported by the fused engine: use "
                       "negative or hs, or trainer.engine=autograd")
    in_w = _weights(in_w, "in_w")
    out_w = _weights(out_w, "out_w")
    if in_w.shape[1] != out_w.shape[1]:
        raise W2VError(f"fused engine: in_w {in_w.shape} and out_w {out_w.shape} differ in dim")
    ids = _as(ids, np.int32, "ids", 1)
    offsets = _as(doc_offsets, np.int64, "doc_offsets", 1)
    keep = _as(keep_prob, np.float32, "keep_prob", 1)
    if not 0 <= doc_start <= doc_end <= offsets.shape[0] - 1:
        raise W2VError(f"fused engine: documents {doc_start}..{doc_end} are outside "
                       f"0..{offsets.shape[0] - 1}")
    if keep.shape[0] != in_w.shape[0]:
        raise W2VError(f"fused engine: keep_prob has {keep.shape[0]} words, in_w {in_w.shape[0]}")
    # The kernels do not bounds-check: an id past the table would write outside it.
    span = ids[offsets[doc_start]:offsets[doc_end]]
    if span.size and (span.min() < 0 or span.max() >= in_w.shape[0]):
        raise W2VError(f"fused engine: token ids must be in [0, {in_w.shape[0]}): the corpus "
                       "and the model come from different vocabularies")
    if window < 1:
        raise W2VError(f"model.window={window!r} must be >= 1")
    if loss == "negative":
        if noise is None or negative < 1:
            raise W2VError("fused engine: loss=negative needs negative >= 1 and a noise table "
                           "(build_noise_table(vocab.noise_probs(ns_exponent)))")
        if noise.threshold.shape[0] != out_w.shape[0]:
            raise W2VError(f"fused engine: noise table has {noise.threshold.shape[0]} words, "
                           f"out_w {out_w.shape[0]} rows")
        huff = _NO_HUFFMAN
    else:
        if huffman is None:
            raise W2VError("fused engine: loss=hs needs the Huffman tree (vocab.huffman())")
        huff = Huffman(_as(huffman.codes, np.int8, "codes", 2),
                             _as(huffman.points, np.int32, "points", 2),
                             _as(huffman.lengths, np.int32, "lengths", 1))
        _check_huffman(huff, in_w.shape[0], out_w.shape[0])
        noise = _NO_NOISE
    set_threads(threads)
    n = doc_end - doc_start
    out_loss = np.zeros(n, np.float64)
    out_examples = np.zeros(n, np.int64)
    out_kept = np.zeros(n, np.int64)
    # Threads take documents one at a time (dynamic scheduling): on a busy machine an even
    # static split waits for its slowest thread (measured: 30% slower on a loaded 2-core box).
    old_chunk = numba.set_parallel_chunksize(1)
    try:
        _train_docs(in_w, out_w, ids, offsets, np.int64(doc_start), np.int64(doc_end), keep,
                    arch == "skipgram", loss == "hs", np.int64(window), np.int64(negative),
                    bool(cbow_mean), noise.threshold, noise.alias, huff.codes, huff.points,
                    huff.lengths, float(lr_start), float(lr_end), np.int64(seed),
                    np.int64(epoch), out_loss, out_examples, out_kept)
    finally:
        numba.set_parallel_chunksize(old_chunk)
    return JobStats(
        loss_sum=float(out_loss.sum()),
        pairs=int(out_examples.sum()),
        words=int(offsets[doc_end] - offsets[doc_start]),
        effective_words=int(out_kept.sum()),
    )


def warmup() -> float:
    """Compile (first run) or load from the cache every kernel variant; returns seconds.

    Training never calls it (its first job compiles what it uses); scripts/bench.py does, so
    that compile time stays out of the measured training time."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    in_w = rng.standard_normal((4, 3)).astype(np.float32)
    ids = np.array([0, 1, 2, 3, 1, 2], np.int32)
    offsets = np.array([0, 6], np.int64)
    keep = np.ones(4, np.float32)
    noise = build_noise_table(np.ones(4))
    huff = Huffman(np.zeros((4, 2), np.int8), np.zeros((4, 2), np.int32),
                         np.full(4, 2, np.int32))
    for arch in ("skipgram", "cbow"):
        for loss in ("negative", "hs"):
            out_w = np.zeros((4 if loss == "negative" else 3, 3), np.float32)
            train_job(in_w, out_w, ids, offsets, 0, 1, keep, arch=arch, loss=loss, window=2,
                      noise=noise, huffman=huff, lr_start=0.025, lr_end=0.0001, seed=0)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- the engine


class FusedEngine:
    """train.py's view of this module: one step is one job of whole documents
    (trainer.chunk_words words), run over trainer.threads threads on the model's weights."""

    name = "fused"
    reduction = "sum"  # every example is a full SGD step, as in word2vec.c
    combine = "sum"  # ranks add their changes, as threads sharing one model do

    def __init__(self, model, corpus, cfg, device=None):
        self.model, self.cfg = model, cfg
        vocab = corpus.vocab
        self.ids = corpus.ids.numpy()
        self.doc_offsets = corpus.doc_offsets.numpy()
        self.keep = vocab.keep_probs(cfg.model.sample)
        if cfg.model.loss == "negative":
            self.tables = {"noise": build_noise_table(vocab.noise_probs(cfg.model.ns_exponent))}
        else:
            self.tables = {"huffman": vocab.huffman()}
        self.bounds = plan_jobs(self.doc_offsets, cfg.trainer.chunk_words)  # (J+1,)

    def begin_epoch(self, epoch: int) -> int:
        return len(self.bounds) - 1

    def step(self, epoch: int, step: int, steps: int, lr: float, lr_end: float) -> Step:
        if step >= len(self.bounds) - 1:
            return Step(step, steps, 0.0, 0)  # this rank's shard is done (distributed)
        m = self.cfg.model
        doc_start, doc_end = self.bounds[step], self.bounds[step + 1]
        # Views taken per step, never kept: whatever replaced the weights since is what trains.
        stats = train_job(
            self.model.input.weight.data.numpy(), self.model.output.weight.data.numpy(),
            self.ids, self.doc_offsets, int(doc_start), int(doc_end),
            self.keep, arch=m.arch, loss=m.loss, window=m.window, negative=m.negative,
            cbow_mean=m.cbow_mean, lr_start=lr, lr_end=lr_end, seed=self.cfg.trainer.seed,
            epoch=epoch, threads=self.cfg.trainer.threads, **self.tables,
        )
        return Step(step, steps, stats.loss_sum, stats.pairs)

    def state_dict(self) -> None:
        return None  # plain SGD: nothing beyond the weights

    def load_state_dict(self, state) -> None:
        pass
