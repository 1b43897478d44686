"""The fused CPU engine: word2vec's per-pair loop compiled with numba, Hogwild over threads.

    engine = FusedEngine(model, corpus, cfg, torch.device("cpu"))   # what train.py uses
    stats = train_job(model.input.weight.data.numpy(), model.output.weight.data.numpy(),
                      ids, doc_offsets, 0, n_docs, vocab.keep_probs(1e-3), arch="skipgram",
                      loss="negative", noise=build_noise_table(vocab.noise_probs(0.75)),
                      lr_start=0.025, lr_end=0.0001, seed=1, threads=4)

A batched autograd step spends its time building (B, K, D) tensors, gathering and scattering;
word2vec's work per pair is three length-D loops (a dot product and two axpys) on rows already
in cache. This module runs exactly that loop, as in word2vec.c and gensim's word2vec_inner.pyx,
on numpy views of the model's own weight tensors (`nn.Embedding.weight` = syn0, `nn.Linear
.weight` = syn1neg or syn1), updated in place, by threads that write the shared tables without
locks (Hogwild, as word2vec.c and gensim do).

Threads (word2vec.c's model, w2v.engines.hogwild): `threads` Python threads each run `_work`
for a whole epoch, claiming documents one at a time from a shared counter. Nobody waits at a job
boundary: `step` returns once all documents of its job are done, while the threads run on into
the next jobs, and `pause` stops them when the loop needs the model whole (checkpoint,
evaluation, epoch end, SIGINT). After a pause every document below the counter is done and none
above it started, so the counter is an exact resume point (the engine's state in a checkpoint).
Under torchrun the ranks combine their models after every step, so there each step runs its
job to the end (`lockstep`).

Input rows (fastText's subword model): a word's input vector is the mean of its rows of the
input table, `rules.InputRows` (CSR: its own row and its character n-grams' rows, built once
by the data stages). That mean is the hidden vector (skip-gram), or the mean over all the
context words' rows is (CBOW, as fastText computes it), and the error is added, unscaled, to
every one of those rows (fastText's Model::update). Word2vec is the case of one row per word,
which runs the original loop (`identity`).

Why numba rather than a torch C++ extension: it compiles at first use and caches the machine
code on disk (`cache=True`), so users need no compiler, and it ships wheels wherever torch does.
The first run after install compiles the kernel (about 10 s); later processes load it from
the cache in under a second. `warmup()` does either, and the engine calls it when it is built,
before the training clock starts.

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
- sigmoid: word2vec.c's table (1000 entries over [-MAX_EXP, MAX_EXP], MAX_EXP = 6; in
  w2v.engines.rules, shared with the cuda engine). Outside the range negative sampling uses
  the saturated value (word2vec.c's clamp: g = (label - 1 or 0) * lr) and hierarchical
  softmax skips the node (word2vec.c and gensim). The loss, -log sigmoid(f) for
  positives and -log sigmoid(-f) for negatives, comes from a second table, so logging it is free.
- the learning rate decays linearly with the centre's position in the token stream: over the
  job's tokens in `train_job`, over the epoch's (from lr_at(epoch, 0) to lr_at(epoch, 1)) in the
  engine. word2vec.c takes it from a shared count of words done; threads claim documents in
  order, so the two differ by the documents in flight, and the position does not depend on
  timing, which keeps threads=1 exact.

Randomness: each document has its own generator (splitmix64) seeded from (seed, epoch, document
index), so with threads=1 a run is bit-reproducible and a run resumed at any document boundary
equals an uninterrupted one. With more than one thread updates race (Hogwild): results are
statistically equivalent but not bit-reproducible.

Negative sampling draws from a Walker/Vose alias table (O(1) per draw, 8 bytes per word, so it
stays in cache) instead of word2vec's 1e8-entry unigram table or gensim's binary search.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import namedtuple
from dataclasses import dataclass

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from w2v.engines import Step, hogwild, rules
from w2v.engines.rules import (
    INV24,
    LOSS_TABLE,
    LOW32,
    MAX_EXP,
    SIGMOID_TABLE,
    InputRows,
    NoiseTable,
    build_noise_table,
    plan_jobs,
)
from w2v.errors import W2VError
from w2v.vocab import Huffman

log = logging.getLogger(__name__)

# numba caches a compiled function by its own file's timestamp only: after an edit of
# rules.py or hogwild.py, clear w2v/engines/__pycache__ (an install rewrites every file).
_JIT = dict(fastmath=True, cache=True, nogil=True)
_inline = njit(inline="always", **_JIT)

# The kernel's arguments, in named groups (numba passes namedtuples as structs).
Corpus = namedtuple("Corpus", "ids doc_offsets keep_prob max_len")
Settings = namedtuple("Settings", "sg hs window negative cbow_mean")
# identity: one input row per word (word2vec), which takes the original loop.
Tables = namedtuple("Tables", "threshold alias codes points lengths in_offsets in_rows identity")
Schedule = namedtuple("Schedule", "doc_end lr_start lr_end lr_base lr_total seed epoch")


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


# ----------------------------------------------------------------------------- random numbers


_next = _inline(rules.next_bits)
_below = _inline(rules.below)
_hash_in = _inline(rules.hash_in)


@njit(**_JIT)
def _doc_state(seed, epoch, doc):
    """The generator state of one document: a hash of (seed, epoch, document index)."""
    return _hash_in(_hash_in(_next(np.uint64(seed))[1], epoch), doc)


@njit(inline="always", **_JIT)
def _noise(bits, threshold, alias):
    i = _below(bits, threshold.shape[0])
    # The alias is read either way and picked by a select: a branch on the coin mispredicts
    # for every word whose threshold is mid-way (3-8% of the engine's time, measured).
    other = np.int64(alias[i])
    return i if (bits & LOW32) < threshold[i] else other


# ----------------------------------------------------------------------------- the kernels


_sigmoid_rule = _inline(rules.sigmoid)
_loss_rule = _inline(rules.loss)


@_inline
def _loss(f):
    return _loss_rule(f, LOSS_TABLE)


@_inline
def _sigmoid(f):
    return _sigmoid_rule(f, SIGMOID_TABLE)


# Rows are indexed as w[row, k] rather than taken as views (w[row]): a view increments the
# array's shared reference count atomically, and two threads doing that for every pair fight
# over one cache line.


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """A hint that arr[i, j]'s cache line is about to be written (x86: prefetchw), so the
    load, and under threads the line's ownership, overlap the work before its use."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        array = context.make_array(aryty)(context, builder, args[0])
        index = [context.cast(builder, args[1], sig.args[1], types.intp),
                 context.cast(builder, args[2], sig.args[2], types.intp)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, array, index, wraparound=False)
        bytes_ptr, i32 = ir.PointerType(ir.IntType(8)), ir.IntType(32)
        # The unsuffixed name: LLVM renames it to its pointer type's overload (p0i8 or p0).
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [bytes_ptr, i32, i32, i32]),
            "llvm.prefetch")
        builder.call(fn, [builder.bitcast(ptr, bytes_ptr), ir.Constant(i32, 1),  # write
                          ir.Constant(i32, 3), ir.Constant(i32, 1)])  # keep in cache; data
        return context.get_dummy_value()

    return types.void(arr, i, j), codegen


@njit(inline="always", **_JIT)
def _prefetch_row(w, row):
    for k in range(0, w.shape[1], 16):  # one hint per 64-byte line of float32
        _prefetch(w, row, k)


@njit(**_JIT)
def _ns_example(h, hrow, target, out_w, neu1e, threshold, alias, negative, lr, state, picks):
    """Negative sampling for hidden vector h[hrow] (D,) and target word; adds to neu1e (D,).
    picks (negative + 1,) is the thread's scratch for the target and its noise words.

    Returns (loss, state). Output rows are updated immediately (word2vec.c).
    """
    dim = h.shape[1]
    # The noise words are drawn first (the same draws, in the same order) and their rows
    # prefetched: they are random rows of out_w, mostly outside L1 and L2, and would
    # otherwise be fetched one after another (measured: 12-13% less CPU per word on one
    # thread, 11-25% on two, SG and CBOW, on the 2-core build machine; identical weights).
    picks[0] = target
    n = 1
    for _ in range(negative):
        state, bits = _next(state)
        t = _noise(bits, threshold, alias)
        if t == target:
            continue  # word2vec.c skips a noise word equal to the target
        picks[n] = t
        n += 1
        _prefetch_row(out_w, t)
    loss = 0.0
    for d in range(n):
        t = picks[d]
        label = 1.0 if d == 0 else 0.0
        f = np.float32(0.0)
        for k in range(dim):
            f += h[hrow, k] * out_w[t, k]
        g = np.float32((label - _sigmoid(f)) * lr)
        loss += _loss(f) if d == 0 else _loss(-f)
        for k in range(dim):  # one pass: the error takes the row before its update
            u = out_w[t, k]
            neu1e[k] += g * u
            out_w[t, k] = u + g * h[hrow, k]
    return loss, state


@njit(**_JIT)
def _hs_example(h, hrow, target, out_w, neu1e, codes, points, lengths, lr):
    """Hierarchical softmax for hidden vector h[hrow] (D,) along target's Huffman path."""
    dim = h.shape[1]
    loss = 0.0
    depth = lengths[target]
    for m in range(depth):
        node = np.int64(points[target, m])
        code = codes[target, m]
        if m + 1 < depth:
            _prefetch_row(out_w, points[target, m + 1])  # the next node's row, one step ahead
        f = np.float32(0.0)
        for k in range(dim):
            f += h[hrow, k] * out_w[node, k]
        loss += _loss(f) if code == 0 else _loss(-f)
        if f <= -MAX_EXP or f >= MAX_EXP:
            continue  # word2vec.c and gensim skip saturated nodes
        g = np.float32((1.0 - code - _sigmoid(f)) * lr)
        for k in range(dim):  # one pass: the error takes the row before its update
            u = out_w[node, k]
            neu1e[k] += g * u
            out_w[node, k] = u + g * h[hrow, k]
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
            if np.float64(bits >> np.uint64(40)) * INV24 >= keep:
                continue
        sen[n] = w
        at[n] = p - lo
        n += 1
    return n, state


@njit(inline="always", **_JIT)
def _zero(a):
    for k in range(a.shape[0]):
        a[k] = 0.0


@_inline
def _prefetch_rows(in_w, offsets, rows, word):
    """Hint every input row of `word` into cache: a subword model's n-gram rows are random
    rows of a table far larger than the caches, read one after another otherwise."""
    for p in range(offsets[word], offsets[word + 1]):
        _prefetch_row(in_w, rows[p])


@_inline
def _mean_rows(in_w, offsets, rows, word, h):
    """h[0] (D,) = the mean of `word`'s input rows (fastText's computeHidden)."""
    dim = in_w.shape[1]
    lo = offsets[word]
    hi = offsets[word + 1]
    for k in range(dim):
        h[0, k] = 0.0
    for p in range(lo, hi):
        r = np.int64(rows[p])
        for k in range(dim):
            h[0, k] += in_w[r, k]
    inv = np.float32(1.0 / (hi - lo))
    for k in range(dim):
        h[0, k] *= inv


@_inline
def _add_to_rows(in_w, offsets, rows, word, e):
    """Every input row of `word` += e (D,): the error goes to each row unscaled (fastText)."""
    dim = in_w.shape[1]
    for p in range(offsets[word], offsets[word + 1]):
        r = np.int64(rows[p])
        for k in range(dim):
            in_w[r, k] += e[k]


@_inline
def _load_position(in_w, offsets, rows, word, neu1, slot, ring):
    """neu1[1 + slot] (D,) = the sum of `word`'s input rows, and neu1[1 + ring + slot] a copy
    (what the rows held when read: _flush_position adds the difference)."""
    dim = in_w.shape[1]
    s = 1 + slot
    for k in range(dim):
        neu1[s, k] = 0.0
    for p in range(offsets[word], offsets[word + 1]):
        r = np.int64(rows[p])
        for k in range(dim):
            neu1[s, k] += in_w[r, k]
    for k in range(dim):
        neu1[s + ring, k] = neu1[s, k]


@_inline
def _flush_position(in_w, offsets, rows, word, neu1, slot, ring):
    """Every input row of `word` += the errors its position collected: the growth of its row
    sum since _load_position, over its row count."""
    dim = in_w.shape[1]
    s = 1 + slot
    lo = offsets[word]
    hi = offsets[word + 1]
    inv = np.float32(1.0 / (hi - lo))
    for k in range(dim):
        neu1[s, k] = (neu1[s, k] - neu1[s + ring, k]) * inv
    for p in range(lo, hi):
        r = np.int64(rows[p])
        for k in range(dim):
            in_w[r, k] += neu1[s, k]


@_inline
def _example(h, w, out_w, neu1e, settings, tables, lr, state, picks):
    """One example: hidden vector h[0] predicts word w (negative sampling or hs)."""
    if settings.hs:
        return _hs_example(h, 0, w, out_w, neu1e, tables.codes, tables.points,
                           tables.lengths, lr), state
    return _ns_example(h, 0, w, out_w, neu1e, tables.threshold, tables.alias,
                       settings.negative, lr, state, picks)


@njit(**_JIT)
def _train_doc(in_w, out_w, sen, at, n, doc_pos, total, settings, tables, lr_start, lr_end,
               state, neu1, neu1e, picks):
    """Train on one subsampled document sen[:n], whose first token is token doc_pos of the
    `total` over which the learning rate goes from lr_start to lr_end. neu1 (1 + 2 (2 window
    + 1), D), neu1e (D,) and picks (negative + 1,) are the calling thread's scratch. Returns
    (loss, examples)."""
    dim = in_w.shape[1]
    window, hs = settings.window, settings.hs
    offsets, rows = tables.in_offsets, tables.in_rows
    loss = 0.0
    examples = 0
    slope = (lr_end - lr_start) / max(total, 1)
    cbow_rows = not settings.sg and not tables.identity
    ring = 2 * window + 1  # positions a window spans: neu1's rows 1..ring and ring+1..2 ring
    entered = 0  # the positions whose row sums are in the ring: those before `entered`
    for i in range(n):
        state, bits = _next(state)
        b = window - _below(bits, window)  # effective window in 1..window
        lo = max(i - b, 0)
        hi = min(i + b + 1, n)
        w = np.int64(sen[i])
        lr = lr_start + slope * (doc_pos + at[i])
        if not hs and i + 1 < n:
            _prefetch_row(out_w, sen[i + 1])  # the next centre's output row
        if not tables.identity:  # the input rows the next centre reads first
            if settings.sg and i + 1 < n:
                _prefetch_rows(in_w, offsets, rows, sen[i + 1])
            elif not settings.sg and i + window + 1 < n:
                _prefetch_rows(in_w, offsets, rows, sen[i + window + 1])
        if settings.sg and not tables.identity:
            # fastText's skip-gram: the centre's rows predict each context word. Their mean is
            # taken once per centre and the window's summed error added to them once after
            # it (fastText re-reads them per pair: the same update to first order in lr,
            # with 2b times fewer passes over the ~15 rows a word has at minn 3, maxn 6).
            if hi - lo - 1 <= 0:
                continue
            _mean_rows(in_w, offsets, rows, w, neu1)
            _zero(neu1e)
            for j in range(lo, hi):
                if j != i:
                    ls, state = _example(neu1, np.int64(sen[j]), out_w, neu1e, settings,
                                         tables, lr, state, picks)
                    loss += ls
                    examples += 1
            _add_to_rows(in_w, offsets, rows, w, neu1e)
        elif settings.sg:
            for j in range(lo, hi):
                if j == i:
                    continue
                c = np.int64(sen[j])  # word2vec: the context's own row is the hidden vector
                _zero(neu1e)
                if hs:
                    loss += _hs_example(in_w, c, w, out_w, neu1e, tables.codes,
                                        tables.points, tables.lengths, lr)
                else:
                    ls, state = _ns_example(in_w, c, w, out_w, neu1e, tables.threshold,
                                            tables.alias, settings.negative, lr, state, picks)
                    loss += ls
                for k in range(dim):
                    in_w[c, k] += neu1e[k]
                examples += 1
        elif tables.identity:
            # word2vec's CBOW, one row per word (kept apart from the rows' loop below: that
            # loop's CSR reads cost word2vec's CBOW ~20% of its speed, measured)
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
            if settings.cbow_mean:
                for k in range(dim):
                    neu1[0, k] *= inv
            _zero(neu1e)
            if hs:
                loss += _hs_example(neu1, 0, w, out_w, neu1e, tables.codes, tables.points,
                                    tables.lengths, lr)
            else:
                ls, state = _ns_example(neu1, 0, w, out_w, neu1e, tables.threshold,
                                        tables.alias, settings.negative, lr, state, picks)
                loss += ls
            if not settings.cbow_mean:  # gensim 4: "divide error over summed window vectors"
                for k in range(dim):
                    neu1e[k] *= inv
            for j in range(lo, hi):
                if j != i:
                    c = np.int64(sen[j])
                    for k in range(dim):
                        in_w[c, k] += neu1e[k]
            examples += 1
        else:
            # fastText's CBOW: the mean (or sum) over every input row of every context word,
            # each row then += the error. Each position's row sum is read once, when it enters
            # the window, and kept up to date (+= its row count x the error); the errors reach
            # the rows once, when it leaves (_flush_position): 2 x window times fewer passes
            # over the ~15 rows a word has at minn 3, maxn 6. The same update as fastText's
            # but that a row shared by two words of one window sees the other's errors up
            # to 2 x window centres late (a Hogwild-sized delay).
            while entered < min(i + window + 1, n):
                if entered >= ring:
                    _flush_position(in_w, offsets, rows, sen[entered - ring], neu1,
                                    (entered - ring) % ring, ring)
                _load_position(in_w, offsets, rows, sen[entered], neu1, entered % ring, ring)
                entered += 1
            if hi - lo - 1 <= 0:
                continue
            for k in range(dim):
                neu1[0, k] = 0.0
            count = 0
            for j in range(lo, hi):
                if j != i:
                    slot = 1 + j % ring
                    for k in range(dim):
                        neu1[0, k] += neu1[slot, k]
                    c = np.int64(sen[j])
                    count += offsets[c + 1] - offsets[c]
            inv = np.float32(1.0 / count)
            if settings.cbow_mean:
                for k in range(dim):
                    neu1[0, k] *= inv
            _zero(neu1e)
            ls, state = _example(neu1, w, out_w, neu1e, settings, tables, lr, state, picks)
            loss += ls
            if not settings.cbow_mean:  # the error over the summed rows, as gensim's sum
                for k in range(dim):
                    neu1e[k] *= inv
            for j in range(lo, hi):
                if j != i:
                    slot = 1 + j % ring
                    c = np.int64(sen[j])
                    scale = np.float32(offsets[c + 1] - offsets[c])
                    for k in range(dim):
                        neu1[slot, k] += scale * neu1e[k]
            examples += 1
    if cbow_rows:  # the errors of the positions still in the window reach their rows
        for p in range(max(entered - ring, 0), entered):
            _flush_position(in_w, offsets, rows, sen[p], neu1, p % ring, ring)
    return loss, examples


# ----------------------------------------------------------------------------- threads


@njit(**_JIT)
def _work(in_w, out_w, corpus, settings, tables, schedule, shared, slot):
    """One thread's share of an epoch: claim documents (hogwild.claim) and train them until
    schedule.doc_end or the stop flag. Document d's token p trains with lr_start + (lr_end -
    lr_start) * (p - lr_base) / lr_total. Each document's loss, examples and kept tokens are
    added to its job's totals (hogwild.report)."""
    dim = in_w.shape[1]
    sen = np.empty(corpus.max_len, np.int32)  # kept ids of the document
    at = np.empty(corpus.max_len, np.int32)  # their offsets in the document (for the lr)
    # (1 + 2 (2 window + 1), D): the hidden vector (a mean of input rows), then the subword
    # CBOW's row sums of the positions in the window, and their values when read
    neu1 = np.empty((1 + 2 * (2 * settings.window + 1), dim), np.float32)
    neu1e = np.empty(dim, np.float32)  # (D,) error for the input row(s)
    picks = np.empty(settings.negative + 1, np.int64)  # a target and its noise words
    s = schedule
    while True:
        d = hogwild.claim(shared, slot, s.doc_end)
        if d < 0:
            break
        lo = corpus.doc_offsets[d]
        hi = corpus.doc_offsets[d + 1]
        state = _doc_state(s.seed, s.epoch, d)
        n, state = _subsample(corpus.ids, lo, hi, corpus.keep_prob, sen, at, state)
        ls, ex = _train_doc(in_w, out_w, sen, at, n, lo - s.lr_base, s.lr_total, settings,
                            tables, s.lr_start, s.lr_end, state, neu1, neu1e, picks)
        hogwild.report(shared, d, ls, ex, n)
    hogwild.leave(shared, slot)


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


@dataclass(frozen=True)
class Task:
    """A corpus and settings checked against the weights' shapes, ready for the kernel (the
    weights themselves are passed per run: views are never kept)."""

    corpus: Corpus
    settings: Settings
    tables: Tables
    bounds: np.ndarray  # int64 (J+1,): job j is documents bounds[j]..bounds[j+1]-1

    @property
    def doc_offsets(self) -> np.ndarray:
        return self.corpus.doc_offsets  # int64 (D+1,)

    @property
    def num_docs(self) -> int:
        return self.doc_offsets.shape[0] - 1

    def args(self, in_w, out_w, schedule: Schedule) -> tuple:
        """_work's arguments before the threads' own (hogwild.Threads adds those)."""
        return (_weights(in_w, "in_w"), _weights(out_w, "out_w"), self.corpus, self.settings,
                self.tables, schedule)


def prepare(in_w, out_w, ids, doc_offsets, keep_prob, *, arch: str, loss: str, window: int,
            negative: int = 5, cbow_mean: bool = True, noise: NoiseTable | None = None,
            huffman=None, input_rows: InputRows | None = None, doc_start: int = 0,
            doc_end: int | None = None, chunk_words: int | None = None) -> Task:
    """Check the corpus and settings against in_w/out_w (the kernel does not bounds-check, so
    everything it indexes with is checked here, once) and return them ready for the kernel.
    Only the token ids of documents doc_start..doc_end-1 are checked. Jobs: plan_jobs(...,
    chunk_words) over all documents, or doc_start..doc_end-1 as one job. input_rows: each
    word's rows of in_w (None: one row per word, word w's being row w)."""
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
    n_docs = offsets.shape[0] - 1
    doc_end = n_docs if doc_end is None else doc_end
    if not 0 <= doc_start <= doc_end <= n_docs:
        raise W2VError(f"fused engine: documents {doc_start}..{doc_end} are outside 0..{n_docs}")
    words = keep.shape[0]
    if input_rows is None:
        if words != in_w.shape[0]:
            raise W2VError(f"fused engine: keep_prob has {words} words, in_w {in_w.shape[0]}")
        input_rows = InputRows.identity(words)
    input_rows = InputRows(_as(input_rows.offsets, np.int64, "input offsets", 1),
                           _as(input_rows.rows, np.int32, "input rows", 1))
    input_rows.check(words, in_w.shape[0], "fused engine")
    # The kernels do not bounds-check: an id past the table would write outside it.
    span = ids[offsets[doc_start]:offsets[doc_end]]
    if span.size and (span.min() < 0 or span.max() >= words):
        raise W2VError(f"fused engine: token ids must be in [0, {words}): the corpus "
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
        _check_huffman(huff, words, out_w.shape[0])
        noise = _NO_NOISE
    sizes = np.diff(offsets[doc_start:doc_end + 1])
    max_len = int(sizes.max()) if sizes.size else 0
    corpus = Corpus(ids, offsets, keep, np.int64(max_len))
    settings = Settings(arch == "skipgram", loss == "hs", np.int64(window), np.int64(negative),
                        bool(cbow_mean))
    tables = Tables(noise.threshold, noise.alias, huff.codes, huff.points, huff.lengths,
                    input_rows.offsets, input_rows.rows, input_rows.is_identity)
    bounds = (plan_jobs(offsets, chunk_words) if chunk_words
              else np.array([doc_start, doc_end], np.int64))
    return Task(corpus, settings, tables, bounds)


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
    input_rows: InputRows | None = None,
    lr_start: float,
    lr_end: float,
    seed: int,
    epoch: int = 0,
    threads: int = 1,
) -> JobStats:
    """Train on documents doc_start..doc_end-1, updating in_w (V, D) and out_w in place.

    ids int32 (N,) and doc_offsets int64 (D+1,) are the corpus (numpy or torch); keep_prob
    float32 (V,) the subsampling keep probabilities (1 everywhere for no subsampling). noise
    (from build_noise_table) is needed for loss="negative", huffman (anything with codes,
    points, lengths: vocab.huffman()) for loss="hs"; out_w then has V-1 rows. The learning
    rate goes linearly from lr_start to lr_end over the job's tokens. Randomness depends on
    (seed, epoch, document index) only. `threads` threads take the documents one at a time.
    input_rows: each word's rows of in_w (fastText's n-grams); None: row w is word w.
    """
    task = prepare(in_w, out_w, ids, doc_offsets, keep_prob, arch=arch, loss=loss,
                   window=window, negative=negative, cbow_mean=cbow_mean, noise=noise,
                   huffman=huffman, input_rows=input_rows, doc_start=doc_start,
                   doc_end=doc_end)
    if threads < 1:
        raise W2VError(f"fused engine: threads={threads!r} must be >= 1")
    workers = threads_for(task, threads)
    base, total = int(task.doc_offsets[doc_start]), int(task.doc_offsets[doc_end])
    schedule = Schedule(np.int64(doc_end), float(lr_start), float(lr_end), np.int64(base),
                        np.int64(max(total - base, 1)), np.int64(seed), np.int64(epoch))
    workers.start(task.args(in_w, out_w, schedule), doc_start, doc_end, inline=threads == 1)
    workers.join()
    loss_sum, examples, kept = workers.job(0)
    return JobStats(loss_sum=loss_sum, pairs=examples, words=total - base, effective_words=kept)


def threads_for(task: Task, count: int) -> hogwild.Threads:
    """`count` Hogwild threads running this module's kernel over the task's jobs."""
    return hogwild.Threads(count, jobs=len(task.bounds) - 1, work=_work, bounds=task.bounds)


_ready = False


def warmup() -> float:
    """Compile the kernel (the first run after install) or load it from numba's cache, and
    log which; returns the seconds taken (0 once done in this process). One machine-code
    variant serves every arch and loss: they are runtime flags."""
    global _ready
    if _ready:
        return 0.0
    t0 = time.perf_counter()
    notice = threading.Timer(1.0, log.info, ("compiling the fused engine (first run after "
                                             "install only, ~10 s) ...",))
    notice.start()
    try:
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
                train_job(in_w, out_w, ids, offsets, 0, 1, keep, arch=arch, loss=loss,
                          window=2, noise=noise, huffman=huff, lr_start=0.025, lr_end=0.0001,
                          seed=0)
        hogwild.Threads(1, jobs=1, work=_work, bounds=np.zeros(2, np.int64)).done_below()
    finally:
        notice.cancel()
    seconds = time.perf_counter() - t0
    compiled = any(sum(f.stats.cache_misses.values()) for f in (_work, hogwild._done_below))
    log.info("fused engine %s in %.1f s", "compiled (cached for later runs)" if compiled
             else "loaded from numba's cache", seconds)
    _ready = True
    return seconds


# ----------------------------------------------------------------------------- the engine


def _lockstep() -> bool:
    """Whether torchrun ranks combine their models after every step (see FusedEngine)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# trainer.chunk_words=null: jobs sized so a run has about this many steps, which is what lets
# the loss curve have its trainer.log_points (200) points: a point needs a finished step.
STEPS_PER_RUN = 256
JOB_WORDS = (10_000, 1_000_000)  # auto job sizes stay within these (one document .. a lot)
LOCKSTEP_JOB_WORDS = 100_000  # under torchrun every step is a sync of both tables: not smaller


def job_words(chunk_words: int | None, tokens: int, epochs: int, lockstep: bool) -> int:
    """Words per job: trainer.chunk_words, or (null) a run's tokens over STEPS_PER_RUN."""
    if chunk_words:
        return chunk_words
    lo, hi = JOB_WORDS
    words = -(-tokens * epochs // STEPS_PER_RUN)
    return int(min(max(words, LOCKSTEP_JOB_WORDS if lockstep else lo), hi))


class FusedEngine:
    """train.py's view of this module.

    A step is a job of whole documents (`job_words`: trainer.chunk_words words, or by default
    a run's words over STEPS_PER_RUN, within JOB_WORDS; plan_jobs): `step` returns
    once all of its documents are done, but the threads do not stop there, they run on through
    the epoch; `pause` stops them when the loop needs the model whole. The learning rate falls
    linearly with the token position over the epoch (trainer.lr_at), so where steps and pauses
    fall changes nothing. The next document after a pause is the engine's state, saved with
    checkpoints. Under torchrun (`lockstep`) each step runs its job to the end, as the ranks
    combine their models after it.
    """

    name = "fused"
    reduction = "sum"  # every example is a full SGD step, as in word2vec.c
    combine = "sum"  # ranks add their changes, as threads sharing one model do

    def __init__(self, model, corpus, cfg, device=None):
        self.model, self.cfg = model, cfg
        warmup()  # here, so the training clock never counts compiling
        m, vocab = cfg.model, corpus.vocab
        tables = ({"noise": build_noise_table(vocab.noise_probs(m.ns_exponent))}
                  if m.loss == "negative" else {"huffman": vocab.huffman()})
        in_w, out_w = self._views()
        self.lockstep = _lockstep()
        self.chunk_words = job_words(cfg.trainer.chunk_words, int(corpus.doc_offsets[-1]),
                                     cfg.trainer.epochs, self.lockstep)
        self.task = prepare(in_w, out_w, corpus.ids, corpus.doc_offsets,
                            vocab.keep_probs(m.sample), arch=m.arch, loss=m.loss,
                            window=m.window, negative=m.negative, cbow_mean=m.cbow_mean,
                            input_rows=InputRows.of(model), chunk_words=self.chunk_words,
                            **tables)
        self.bounds = self.task.bounds  # (J+1,)
        self.threads = threads_for(self.task, cfg.trainer.threads)
        self.epoch, self.next_doc = 0, 0  # where the threads start next (when paused)

    def _views(self):
        # Taken per run, never kept: whatever replaced the weights since is what trains.
        return self.model.input.weight.data.numpy(), self.model.output.weight.data.numpy()

    def begin_epoch(self, epoch: int) -> int:
        self.pause()
        if epoch != self.epoch:  # (the same epoch: resumed from a checkpoint)
            self.epoch, self.next_doc = epoch, 0
            self.threads.clear()
        return len(self.bounds) - 1

    def step(self, epoch: int, step: int, steps: int, lr: float, lr_end: float) -> Step:
        # lr and lr_end (the loop's even split by steps) are not used: the threads take the
        # learning rate from each token's position in the epoch.
        if step >= len(self.bounds) - 1:
            return Step(step, steps, 0.0, 0)  # this rank's shard is done (distributed)
        job_end = int(self.bounds[step + 1])
        if not self.threads.active and self.next_doc < job_end:
            first = max(self.next_doc, int(self.bounds[step]))
            end = job_end if self.lockstep else self.task.num_docs
            t = self.cfg.trainer
            schedule = Schedule(np.int64(end), float(t.lr_at(epoch, 0.0)),
                                float(t.lr_at(epoch, 1.0)), np.int64(0),
                                np.int64(max(int(self.task.doc_offsets[-1]), 1)),
                                np.int64(t.seed), np.int64(epoch))
            self.threads.start(self.task.args(*self._views(), schedule), first, end)
        self.threads.wait(job_end)
        if self.lockstep or not self.threads.running:
            self.pause()
        # This job's own documents, whichever threads trained them and whenever.
        loss_sum, examples, _ = self.threads.job(step)
        return Step(step, steps, loss_sum, examples)

    def pause(self) -> None:
        """Stop the threads after the documents in hand: the model is then whole, and every
        document below self.next_doc is trained."""
        if self.threads.active:
            self.next_doc = self.threads.stop()

    def state_dict(self) -> dict:
        """Where the threads continue, and the totals of the epoch's jobs (the threads may
        have finished jobs past the loop's step; a resumed run still reports them). Plain
        SGD has no other state."""
        self.pause()
        return {"engine": "fused", "chunk_words": self.chunk_words,
                "epoch": self.epoch, "next_doc": self.next_doc,
                "job_loss": torch.from_numpy(self.threads.job_loss.copy()),
                "job_counts": torch.from_numpy(self.threads.job_counts.copy())}

    def load_state_dict(self, state: dict | None) -> None:
        if state is None:
            return  # a checkpoint from before the engine saved its state: starts at its step
        if state.get("engine") != "fused":
            raise W2VError("this checkpoint holds another engine's optimizer state: resume it "
                           "with the engine that wrote it (trainer.engine=autograd)")
        if state["chunk_words"] != self.chunk_words:
            raise W2VError(f"this checkpoint counts steps in jobs of trainer.chunk_words="
                           f"{state['chunk_words']} words (this run's are {self.chunk_words}): "
                           f"resume with trainer.chunk_words={state['chunk_words']}")
        if self.lockstep:
            return  # every step ended at its job's end, where the loop's step resumes (and
            # rank 0's documents are not this rank's)
        self.epoch, self.next_doc = int(state["epoch"]), int(state["next_doc"])
        self.threads.job_loss[:] = state["job_loss"].numpy()
        self.threads.job_counts[:] = state["job_counts"].numpy()
