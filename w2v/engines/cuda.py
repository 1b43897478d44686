"""The CUDA engine: word2vec's per-pair update as one GPU kernel on the model's own weights.

    python -m w2v.train trainer=gpu model=skipgram      # trainer.engine=auto picks it on CUDA
    engine = CudaEngine(model, corpus, cfg, torch.device("cuda"))   # what train.py does

A batched autograd step on a GPU spends its time building (B, K, D) tensors and summing stale
per-example steps; word2vec's work per pair is a few length-D dot products and axpys on rows
that are already there. This kernel runs exactly that loop, as the fused CPU engine does, with
one warp per worker instead of one CPU thread:

- W warps are in flight (`trainer.cuda_warps`; default 16 per SM, 2,112 on an H100, capped at
  one warp per MIN_WARP_TOKENS kept tokens so a small corpus is not cut into slivers). Each warp
  owns one contiguous stretch of the epoch's subsampled, compacted token ids, so warps in
  flight work far apart in the text and rarely touch the same rows at the same time.
- Lane l of a warp holds dimensions l, l+32, l+64, ... of the vectors in registers (a local
  array of ceil(dim / 32) floats, a compile-time size: any model.dim works; a very large dim
  spills to local memory, which is slower, not wrong). Per (context, centre) pair the context
  row is read once; for the target and each noise word (or each Huffman node) the dot product
  is reduced by warp shuffle, so every lane holds the same f and takes the same branch.
- A warp's time per pair is mostly waiting for rows from memory. The output rows of a
  pair's target and noise words (or hierarchical softmax's path nodes), and CBOW's context
  rows, are loaded a chunk at a time (up to MAX_CHUNK, 3, the fastest on an H100; as many as
  ROW_FLOATS registers per lane hold), so their loads overlap; then they are trained in
  word2vec's order, a noise word drawn twice in a chunk seeing its own first update as the
  sequential loop would. The kernel is capped at MAX_REGISTERS a thread so that the default
  warps per SM are all resident.
- Both tables are written with atomicAdd of the change. Plain read-modify-write stores lose
  concurrent updates to the same row (frequent words), which costs accuracy measurably
  (docs/measurements.md).
- An epoch is cut into steps (kernel launches) of about `trainer.cuda_step_words` words: step
  s trains, for every warp, the s-th slice of its stretch, so the loop logs, evaluates,
  checkpoints and honours SIGINT between launches (about every second or less). The loss and
  example count are summed on the device (float64 atomics) in CURVE_PARTS parts of the
  step, and read only at log time.
- The corpus lives on the GPU as int32; subsampling and compaction run there each epoch
  (torch.rand with a generator seeded by (seed, epoch, range)). A corpus whose ids do not fit
  in free GPU memory (or `trainer.cuda_resident_tokens`) is trained in document ranges copied
  from the memory-mapped ids, one range after another, never an out-of-memory traceback.

Semantics are the fused engine's (see w2v.engines.fused, word2vec.c, gensim 4): the dynamic
window b uniform in 1..window, windows never cross documents, skip-gram's context row predicts
the centre, CBOW's mean (error back unscaled) or sum (error divided by the count), a noise
word equal to the target skipped, word2vec's sigmoid and loss tables with +-6 clipping
(negative sampling takes the saturated value, hierarchical softmax skips the node), the same
Walker alias noise table, and the learning rate decaying linearly over all words of all
epochs (within a step, along each warp's slice). Randomness per warp is splitmix64 seeded by
(seed, epoch, step, warp): every lane draws the same numbers, so no broadcast is needed, and a
run resumed at a step boundary draws what an uninterrupted one would have drawn. What is not
bit-exact on a GPU is the order in which concurrent float atomics land (as with Hogwild
threads); under numba's CUDA simulator, which runs blocks one after another, runs are exact.

The kernel is written with numba-cuda (`pip install 'w2v[cuda12]'`): no CUDA toolkit or C
compiler on the user's machine (pyproject.toml says why not Triton). numba.cuda is imported
on first use only, so a CPU run never imports it. With NUMBA_ENABLE_CUDASIM=1 the same engine
runs on CPU tensors in numba's CUDA simulator (a Python thread per CUDA thread: tests only);
there a warp has SIM_LANES lanes (default 1, which is 30x faster than 32; tests use 4 to run
the shuffle reduction too).
"""

from __future__ import annotations

import bisect
import functools
import importlib.util
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from w2v.engines import Step, rules, simulated
from w2v.engines.rules import (
    LOSS_TABLE,
    LOW32,
    MAX_EXP,
    SIGMOID_TABLE,
    InputRows,
    build_noise_table,
    plan_jobs,
)
from w2v.errors import W2VError

LANES = 32  # threads per worker: one warp, so the shuffle's full mask is the worker's lanes
WARPS_PER_SM = 16  # the default concurrency; the probe measured 2,112 (16/SM) best on an H100
WARPS_PER_BLOCK = 4
MIN_WARP_TOKENS = 256  # a warp's stretch is at least this many kept tokens (small corpora)
MIN_RESIDENT_TOKENS = 1 << 20  # fewer than this on the GPU at once: refuse (free memory)
SUBSAMPLE_BLOCK = 1 << 24  # tokens subsampled at once: bounds the temporaries (~13 B/token)
SIM_LANES = 1  # lanes per simulated warp (tests set 4 to exercise the shuffle)
# How the kernel loads weight rows: "cached" (plain loads; L1 may serve a row stale after other
# SMs' atomics) or "coherent" (ld.global.cg, from L2): no measurable difference, so plain loads.
READS = "cached"
# A step (a launch of about cuda_step_words words) reports its loss in this many equal parts,
# so the loss curve keeps its spacing (trainer.log_points, 200) when steps are longer than
# it: text8-prefix is 2 launches an epoch, and would otherwise draw 2 points an epoch.
CURVE_PARTS = 128
# An example's output rows are loaded up to MAX_CHUNK at once (ROW_FLOATS floats per lane in
# registers) so their loads overlap: a warp's time per pair is mostly that waiting.
MAX_CHUNK = 3
ROW_FLOATS = 24
# Registers per thread at most: 16 warps of 32 threads then fit an SM's 65,536, so the default
# concurrency (WARPS_PER_SM) is resident at once, in one wave, at any dim (ptxas spills the
# rest to local memory; scripts/cuda_ptx.py reports both).
MAX_REGISTERS = 65536 // (WARPS_PER_SM * LANES)
_FULL_MASK = 0xFFFFFFFF
SHIFT = 1 << 31  # uint32 -> int32 in the same order (`signed`)

cuda = None  # numba.cuda, imported on first use (the simulator swaps this global in kernels)


def _numba_cuda():
    """numba.cuda, imported now; one clear error when the GPU path cannot work."""
    global cuda
    if cuda is not None:
        return cuda
    if not simulated() and importlib.util.find_spec("numba_cuda") is None:
        raise W2VError(
            "trainer.engine=cuda needs numba-cuda (the CUDA target of numba): pip install "
            "'w2v[cuda12]' beside a CUDA 12 build of torch ('w2v[cuda13]' for CUDA 13), or use "
            "trainer.engine=autograd"
        )
    try:
        from numba import cuda as numba_cuda
    except Exception as err:  # numba-cuda against a numpy or CUDA it does not support
        raise W2VError(
            f"trainer.engine=cuda cannot import numba-cuda ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); reinstall with "
            "pip install 'w2v[cuda12]' (or 'w2v[cuda13]'), which also keeps numpy below 2.5, "
            "or use trainer.engine=autograd"
        ) from err

    if simulated():
        _install_simulator_shuffle(numba_cuda)
    # numba-cuda's driver logs its housekeeping at INFO, which Hydra's job logging would print
    # into every run ("init", "add pending dealloc"): keep its warnings only.
    logging.getLogger("numba.cuda").setLevel(logging.WARNING)
    cuda = numba_cuda
    return cuda


def _install_simulator_shuffle(numba_cuda) -> None:
    """numba's CUDA simulator has no warp shuffle: add shfl_xor_sync, exchanging values
    through a per-block buffer between two barriers. Valid here because a simulated block is
    one warp whose lanes all call it together (every lane takes the same branches)."""
    from numba.cuda.simulator import kernelapi

    if hasattr(kernelapi.FakeCUDAModule, "shfl_xor_sync"):
        return

    def shfl_xor_sync(self, mask, value, lane_mask):
        slots = self.__dict__.setdefault("_w2v_shuffle", {})
        lane = self.threadIdx.x
        slots[lane] = value
        self.syncthreads()
        out = slots[lane ^ lane_mask]
        self.syncthreads()
        return out

    kernelapi.FakeCUDAModule.shfl_xor_sync = shfl_xor_sync


# ----------------------------------------------------------------------------- the kernel


@functools.cache
def _kernel(per_lane: int, lanes: int, sg: bool, hs: bool, coherent: bool = False,
            chunk: int = 1, subwords: bool = False, ring: int = 1):
    """The training kernel for ceil(dim / lanes) floats per lane, compiled on first launch.

    Sizes and the architecture are compile-time constants (closure variables), so the
    register arrays have fixed sizes, the loops over them unroll and the unused branches go.
    coherent: weight rows are loaded from L2 (see READS); the simulator has one memory.
    chunk: rows loaded at once (`chunk_rows`; 1 is word2vec's one-row-at-a-time loop).
    subwords: a word's input vector is the mean of its input rows (in_offsets/in_rows, CSR:
    fastText's n-grams), as in the fused engine: skip-gram in fastText's orientation (the
    centre's rows, their mean taken once, predict each context word; the window's error is
    added to them after it), CBOW over all the context words' rows.
    ring: the subword CBOW's positions in a window (2 window + 1), whose row sums a lane keeps
    as the fused engine does (read when they enter the window, the errors added to the rows
    when they leave it).
    """
    _numba_cuda()  # sets the global `cuda`: kernels must name it so (the simulator swaps it)
    # Casts are numpy's, as in the fused engine (numba types as casts cost 10 us each in the
    # simulator, which runs this code as Python).
    float32, float64, int32, int64 = np.float32, np.float64, np.int32, np.int64
    uint64 = np.uint64
    # Device functions. The simulator would wrap each in a proxy that rescans this module's
    # globals at every call; as plain functions they run 3x faster and see the same `cuda`.
    device = (lambda f: f) if simulated() else cuda.jit(device=True)

    sigmoid_table, loss_table = SIGMOID_TABLE, LOSS_TABLE

    if coherent and not simulated():
        @device
        def weight(table, row, col):
            """table[row, col] from L2, which every warp's atomics update."""
            return cuda.ldcg(table, (int64(row), int64(col)))
    else:
        @device
        def weight(table, row, col):
            return table[row, col]

    # The rules the fused engine follows too (w2v.engines.rules), compiled for the device.
    next_bits = device(rules.next_bits)
    below = device(rules.below)
    hash_in = device(rules.hash_in)
    sigmoid_rule = device(rules.sigmoid)
    loss_rule = device(rules.loss)

    @device
    def warp_state(seed, epoch, step, worker):
        """The generator state of one warp's slice: a hash of (seed, epoch, step, warp)."""
        return hash_in(hash_in(hash_in(next_bits(uint64(seed))[1], epoch), step), worker)

    @device
    def sigmoid(f):
        return sigmoid_rule(f, cuda.const.array_like(sigmoid_table))

    @device
    def loss_of(f):
        return loss_rule(f, cuda.const.array_like(loss_table))

    @device
    def warp_sum(v):
        """The sum of v over the warp's lanes, in every lane (xor butterfly: the additions
        commute, so every lane gets the same bits and takes the same branches after)."""
        offset = lanes // 2
        while offset > 0:
            v += cuda.shfl_xor_sync(_FULL_MASK, v, offset)
            offset //= 2
        return v

    @device
    def train_rows(h, e, rows, targets, n, w, out_w, codes, d0, lr, lane, dim):
        """word2vec's update for a chunk of n targets (output rows): their rows are loaded
        together, so the loads overlap instead of each waiting for the one before; then, in
        order, f = h . row, g = (label - sigmoid(f)) * lr, neu1e += g * row (the row before
        this update) and row += g * h (an atomic add of the change, and the same change to a
        later copy of the row in this chunk, a noise word drawn again, as word2vec's
        sequential loop would read it). targets[m] < 0: a skipped slot. The label: 1 for the
        target word w (a noise word equal to it is skipped), or 1 - the node's branch (hs,
        whose chunk starts at node d0 of w's path)."""
        for m in range(chunk):
            if m < n and targets[m] >= 0:
                for k in range(per_lane):
                    col = lane + k * lanes
                    rows[m, k] = weight(out_w, targets[m], col) if col < dim else float32(0.0)
        loss = 0.0
        for m in range(chunk):
            if m < n and targets[m] >= 0:
                t = targets[m]
                f = float32(0.0)
                for k in range(per_lane):
                    f += h[k] * rows[m, k]
                f = warp_sum(f)
                if hs:
                    label = float32(1.0 - codes[w, d0 + m])
                else:
                    label = float32(1.0) if t == w else float32(0.0)
                loss += loss_of(f) if label > 0.5 else loss_of(-f)
                if hs and (f <= -MAX_EXP or f >= MAX_EXP):
                    continue  # word2vec.c and gensim skip saturated nodes
                g = float32((label - sigmoid(f)) * lr)
                for k in range(per_lane):
                    col = lane + k * lanes
                    if col < dim:
                        e[k] += g * rows[m, k]
                        cuda.atomic.add(out_w, (t, col), g * h[k])
                if not hs:  # hs's path has no repeated node
                    for later in range(m + 1, chunk):
                        if targets[later] == t:
                            for k in range(per_lane):
                                rows[later, k] += g * h[k]
        return loss

    @device
    def sum_rows(h, rows, targets, ids, start, stop, i, in_w, lane, dim):
        """h += the input rows of the context ids[start:stop] but position i (CBOW), loaded a
        chunk at a time (the ids, then the rows), so the loads overlap; added in order."""
        for j0 in range(start, stop, chunk):
            for m in range(chunk):
                j = j0 + m
                targets[m] = ids[j] if j < stop and j != i else -1
            for m in range(chunk):
                if targets[m] >= 0:
                    for k in range(per_lane):
                        col = lane + k * lanes
                        rows[m, k] = weight(in_w, targets[m], col) if col < dim else \
                            float32(0.0)
            for m in range(chunk):
                if targets[m] >= 0:
                    for k in range(per_lane):
                        h[k] += rows[m, k]

    @device
    def negative_sampling(h, e, rows, targets, coins, cuts, others, w, out_w, threshold, alias,
                          n_noise, negative, codes, lr, state, lane, dim):
        """The target word, then `negative` noise words drawn from the alias table (one
        equal to the target is skipped, as word2vec.c does), in chunks."""
        loss = 0.0
        for d0 in range(0, negative + 1, chunk):
            n = min(chunk, negative + 1 - d0)
            # The draws in three passes, so the chunk's alias-table reads are in flight
            # together: the random bits (a candidate word and a 32-bit coin each), the
            # table's threshold and alias for each candidate, then the choice.
            for m in range(chunk):
                if m < n and d0 + m > 0:
                    state, bits = next_bits(state)
                    targets[m] = below(bits, n_noise)
                    coins[m] = int64(bits & LOW32) - SHIFT  # as the thresholds: `signed`
            for m in range(chunk):
                if m < n and d0 + m > 0:
                    cuts[m] = threshold[targets[m]]
                    others[m] = alias[targets[m]]
            for m in range(chunk):
                if m < n:
                    t = w if d0 + m == 0 else (others[m] if coins[m] >= cuts[m] else targets[m])
                    targets[m] = -1 if d0 + m > 0 and t == w else t
            loss += train_rows(h, e, rows, targets, n, w, out_w, codes, d0, lr, lane, dim)
        return loss, state

    @device
    def hierarchical_softmax(h, e, rows, targets, w, out_w, codes, points, lengths, lr, lane,
                             dim):
        """The inner nodes on w's Huffman path, in chunks."""
        loss = 0.0
        length = lengths[w]
        for d0 in range(0, length, chunk):
            n = min(chunk, length - d0)
            for m in range(chunk):
                if m < n:
                    targets[m] = points[w, d0 + m]
            loss += train_rows(h, e, rows, targets, n, w, out_w, codes, d0, lr, lane, dim)
        return loss

    @device
    def sum_word_rows(h, in_offsets, in_rows, word, in_w, lane, dim):
        """h += `word`'s input rows; returns how many."""
        for p in range(in_offsets[word], in_offsets[word + 1]):
            r = in_rows[p]
            for k in range(per_lane):
                col = lane + k * lanes
                if col < dim:
                    h[k] += weight(in_w, r, col)
        return in_offsets[word + 1] - in_offsets[word]

    @device
    def mean_rows(h, in_offsets, in_rows, word, in_w, lane, dim):
        """h = the mean of `word`'s input rows (fastText's computeHidden), in row order."""
        for k in range(per_lane):
            h[k] = float32(0.0)
        inv = float32(1.0 / sum_word_rows(h, in_offsets, in_rows, word, in_w, lane, dim))
        for k in range(per_lane):
            h[k] *= inv

    @device
    def add_to_rows(e, in_offsets, in_rows, word, in_w, lane, dim):
        """Every input row of `word` += e, unscaled (fastText), by atomic adds."""
        for p in range(in_offsets[word], in_offsets[word + 1]):
            r = in_rows[p]
            for k in range(per_lane):
                col = lane + k * lanes
                if col < dim:
                    cuda.atomic.add(in_w, (r, col), e[k])

    @device
    def load_position(sums, read, slot, in_offsets, in_rows, word, in_w, lane, dim):
        """sums[slot] = `word`'s input rows' sum, read[slot] a copy (fused: _load_position)."""
        for k in range(per_lane):
            sums[slot, k] = float32(0.0)
        for p in range(in_offsets[word], in_offsets[word + 1]):
            r = in_rows[p]
            for k in range(per_lane):
                col = lane + k * lanes
                if col < dim:
                    sums[slot, k] += weight(in_w, r, col)
        for k in range(per_lane):
            read[slot, k] = sums[slot, k]

    @device
    def flush_position(sums, read, slot, in_offsets, in_rows, word, in_w, lane, dim):
        """`word`'s rows += the errors its position collected (fused: _flush_position)."""
        lo = in_offsets[word]
        hi = in_offsets[word + 1]
        inv = float32(1.0 / (hi - lo))
        for k in range(per_lane):
            sums[slot, k] = (sums[slot, k] - read[slot, k]) * inv
        for p in range(lo, hi):
            r = in_rows[p]
            for k in range(per_lane):
                col = lane + k * lanes
                if col < dim:
                    cuda.atomic.add(in_w, (r, col), sums[slot, k])

    @device
    def example(h, e, rows, targets, coins, cuts, others, w, out_w, threshold, alias,
                n_noise, negative, codes, points, lengths, lr, state, lane, dim):
        """h predicts word w: negative sampling or hierarchical softmax; (loss, state)."""
        if hs:
            return hierarchical_softmax(h, e, rows, targets, w, out_w, codes, points, lengths,
                                        lr, lane, dim), state
        return negative_sampling(h, e, rows, targets, coins, cuts, others, w, out_w, threshold,
                                 alias, n_noise, negative, codes, lr, state, lane, dim)

    @device
    def first_document(kept_offsets, n_docs, pos):
        """The document holding kept position pos: kept_offsets[d] <= pos < kept_offsets[d+1]."""
        lo = 0
        hi = n_docs
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if kept_offsets[mid] <= pos:
                lo = mid
            else:
                hi = mid
        return lo

    cap = {} if simulated() else {"max_registers": MAX_REGISTERS}  # no such option there

    @cuda.jit(fastmath=True, **cap)
    def train(in_w, out_w, ids, kept_offsets, n_docs, n_tokens, workers, part, parts, dim,
              window, negative, cbow_mean, threshold, alias, n_noise, codes, points, lengths,
              in_offsets, in_rows, lr_start, lr_end, seed, epoch, step, stats):
        thread = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        worker = thread // lanes
        lane = thread % lanes
        if worker >= workers:
            return  # whole warps only: workers are warp-aligned
        # This warp's stretch of the epoch's kept tokens, and the slice of it this step trains.
        first = n_tokens * worker // workers
        length = n_tokens * (worker + 1) // workers - first
        lo = first + length * part // parts
        hi = first + length * (part + 1) // parts
        if lo >= hi:
            return
        h = cuda.local.array(per_lane, float32)  # the hidden vector: context row or CBOW mean
        e = cuda.local.array(per_lane, float32)  # neu1e: the error for the input row(s)
        rows = cuda.local.array((chunk, per_lane), float32)  # a chunk's output rows
        targets = cuda.local.array(chunk, int32)  # their row indices (-1: skipped)
        coins = cuda.local.array(chunk, int32)  # noise draws: the alias method's coin,
        cuts = cuda.local.array(chunk, int32)  # the candidate's threshold
        others = cuda.local.array(chunk, int32)  # and its alias
        sums = cuda.local.array((ring, per_lane), float32)  # subword CBOW: positions' row sums
        read = cuda.local.array((ring, per_lane), float32)  # and their values when read
        ring_doc = -1  # the document whose positions the ring holds
        ring_first = 0  # its first position read into the ring
        entered = 0  # the positions read into the ring are those before this one
        state = warp_state(seed, epoch, step, worker)
        doc = first_document(kept_offsets, n_docs, lo)
        slope = (lr_end - lr_start) / (hi - lo)
        # The sums below belong to part part_now of n_parts equal parts of the slice: i in
        # [lo + ceil(k L / P), lo + ceil((k + 1) L / P)) is part k (L = hi - lo).
        n_parts = stats.shape[0]
        part_now = 0
        part_end = lo + (hi - lo + n_parts - 1) // n_parts
        loss = 0.0
        examples = 0
        for i in range(lo, hi):
            if i >= part_end:
                if lane == 0:
                    cuda.atomic.add(stats, (part_now, 0), loss)
                    cuda.atomic.add(stats, (part_now, 1), float64(examples))
                loss = 0.0
                examples = 0
                part_now = (i - lo) * n_parts // (hi - lo)
                part_end = lo + ((part_now + 1) * (hi - lo) + n_parts - 1) // n_parts
            while kept_offsets[doc + 1] <= i:
                doc += 1
            state, bits = next_bits(state)
            b = window - below(bits, window)  # effective window in 1..window
            start = max(i - b, kept_offsets[doc])
            stop = min(i + b + 1, kept_offsets[doc + 1])
            w = ids[i]
            lr = lr_start + slope * (i - lo)
            if subwords and not sg:
                if doc != ring_doc:  # the previous document's errors reach their rows
                    if ring_doc >= 0:
                        for p in range(max(entered - ring, ring_first), entered):
                            flush_position(sums, read, p % ring, in_offsets, in_rows, ids[p],
                                           in_w, lane, dim)
                    ring_doc = doc
                    ring_first = max(i - window, kept_offsets[doc])
                    entered = ring_first
                while entered < min(i + window + 1, kept_offsets[doc + 1]):
                    if entered - ring >= ring_first:
                        flush_position(sums, read, (entered - ring) % ring, in_offsets,
                                       in_rows, ids[entered - ring], in_w, lane, dim)
                    load_position(sums, read, entered % ring, in_offsets, in_rows,
                                  ids[entered], in_w, lane, dim)
                    entered += 1
            if subwords and stop - start - 1 <= 0:
                continue  # no context: nothing to learn (as the fused engine)
            if sg and subwords:  # fastText's orientation: the centre's rows
                mean_rows(h, in_offsets, in_rows, w, in_w, lane, dim)
                for k in range(per_lane):
                    e[k] = float32(0.0)
                for j in range(start, stop):
                    if j != i:
                        ls, state = example(h, e, rows, targets, coins, cuts, others, ids[j],
                                            out_w, threshold, alias, n_noise, negative, codes,
                                            points, lengths, lr, state, lane, dim)
                        loss += ls
                        examples += 1
                add_to_rows(e, in_offsets, in_rows, w, in_w, lane, dim)
            elif subwords:  # CBOW over every row of every context word (their positions' sums)
                for k in range(per_lane):
                    h[k] = float32(0.0)
                    e[k] = float32(0.0)
                count = 0
                for j in range(start, stop):
                    if j != i:
                        for k in range(per_lane):
                            h[k] += sums[j % ring, k]
                        count += in_offsets[ids[j] + 1] - in_offsets[ids[j]]
                inv = float32(1.0 / count)
                if cbow_mean:
                    for k in range(per_lane):
                        h[k] *= inv
                ls, state = example(h, e, rows, targets, coins, cuts, others, w, out_w,
                                    threshold, alias, n_noise, negative, codes, points, lengths,
                                    lr, state, lane, dim)
                loss += ls
                if not cbow_mean:
                    for k in range(per_lane):
                        e[k] *= inv
                for j in range(start, stop):
                    if j != i:
                        scale = float32(in_offsets[ids[j] + 1] - in_offsets[ids[j]])
                        for k in range(per_lane):
                            sums[j % ring, k] += scale * e[k]
                examples += 1
            elif sg:
                for j in range(start, stop):
                    if j == i:
                        continue
                    c = ids[j]
                    for k in range(per_lane):
                        col = lane + k * lanes
                        h[k] = weight(in_w, c, col) if col < dim else float32(0.0)
                        e[k] = float32(0.0)
                    if hs:
                        loss += hierarchical_softmax(h, e, rows, targets, w,
                                                     out_w, codes, points, lengths, lr, lane,
                                                     dim)
                    else:
                        ls, state = negative_sampling(h, e, rows, targets, coins, cuts,
                                                      others, w, out_w, threshold, alias,
                                                      n_noise, negative, codes, lr, state,
                                                      lane, dim)
                        loss += ls
                    for k in range(per_lane):
                        col = lane + k * lanes
                        if col < dim:
                            cuda.atomic.add(in_w, (c, col), e[k])
                    examples += 1
            else:
                count = stop - start - 1
                if count <= 0:
                    continue  # no context: nothing to learn (as the fused engine)
                for k in range(per_lane):
                    h[k] = float32(0.0)
                    e[k] = float32(0.0)
                sum_rows(h, rows, targets, ids, start, stop, i, in_w, lane, dim)
                inv = float32(1.0 / count)
                if cbow_mean:
                    for k in range(per_lane):
                        h[k] *= inv
                if hs:
                    loss += hierarchical_softmax(h, e, rows, targets, w, out_w,
                                                 codes, points, lengths, lr, lane, dim)
                else:
                    ls, state = negative_sampling(h, e, rows, targets, coins, cuts, others,
                                                  w, out_w, threshold, alias, n_noise,
                                                  negative, codes, lr, state, lane, dim)
                    loss += ls
                if not cbow_mean:  # gensim 4: "divide error over summed window vectors"
                    for k in range(per_lane):
                        e[k] *= inv
                for j in range(start, stop):
                    if j != i:
                        c = ids[j]
                        for k in range(per_lane):
                            col = lane + k * lanes
                            if col < dim:
                                cuda.atomic.add(in_w, (c, col), e[k])
                examples += 1
        if subwords and not sg and ring_doc >= 0:  # the errors of the positions still held
            for p in range(max(entered - ring, ring_first), entered):
                flush_position(sums, read, p % ring, in_offsets, in_rows, ids[p], in_w, lane,
                               dim)
        if lane == 0:
            cuda.atomic.add(stats, (part_now, 0), loss)
            cuda.atomic.add(stats, (part_now, 1), float64(examples))

    return train


# ----------------------------------------------------------------------------- host side


@dataclass(frozen=True)
class Tables:
    """What the kernel reads besides the corpus, as device tensors (dummies when unused)."""

    threshold: torch.Tensor  # int32 (V,) alias-table thresholds, shifted (`signed`)
    alias: torch.Tensor  # int32 (V,)
    codes: torch.Tensor  # int8 (V, L) Huffman branches
    points: torch.Tensor  # int32 (V, L) Huffman inner nodes
    lengths: torch.Tensor  # int32 (V,)
    # Each word's input rows (CSR, rules.InputRows) for the subword model; (1,) dummies and
    # the word-level kernel otherwise.
    in_offsets: torch.Tensor  # int64 (V+1,)
    in_rows: torch.Tensor  # int32 (R,)

    @property
    def subwords(self) -> bool:
        return self.in_offsets.numel() > 1


def signed(values) -> np.ndarray:
    """uint32 values as int32 in the same order (minus 2^31): the kernel compares the alias
    method's 32-bit coin with a threshold in 4 bytes of registers instead of 8."""
    return (np.asarray(values, dtype=np.int64) - SHIFT).astype(np.int32)


def make_tables(vocab, loss: str, ns_exponent: float, device: torch.device,
                input_rows: InputRows | None = None) -> Tables:
    """The noise table (negative) or the Huffman tree (hs), and the subword model's input
    rows (input_rows), on the device."""
    one = torch.zeros(1, dtype=torch.int32, device=device)
    rows = (torch.from_numpy(np.asarray(input_rows.offsets, np.int64)).to(device),
            torch.from_numpy(np.asarray(input_rows.rows, np.int32)).to(device)) \
        if input_rows is not None else (one.long(), one)
    if loss == "negative":
        noise = build_noise_table(vocab.noise_probs(ns_exponent))
        return Tables(torch.from_numpy(signed(noise.threshold)).to(device),
                      torch.from_numpy(noise.alias).to(device),
                      torch.zeros((1, 1), dtype=torch.int8, device=device), one.view(1, 1), one,
                      *rows)
    huff = vocab.huffman()
    return Tables(one, one,
                  torch.from_numpy(huff.codes.astype(np.int8)).to(device),
                  torch.from_numpy(huff.points.astype(np.int32)).to(device),
                  torch.from_numpy(huff.lengths.astype(np.int32)).to(device), *rows)


def subsample(ids: torch.Tensor, doc_offsets: np.ndarray, keep: torch.Tensor,
              generator: torch.Generator, block: int = SUBSAMPLE_BLOCK
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Word2vec's subsampling on the device: token t is kept with probability keep[ids[t]].

    ids int32 (N,) on the device, doc_offsets int64 (D+1,) on the host (N at the end).
    Returns the kept ids, compacted, int32 (M,), and the documents' offsets among them, int64
    (D+1,): kept document d is kept_ids[kept_offsets[d]:kept_offsets[d+1]]. Works through the
    ids `block` tokens at a time, so the temporaries stay bounded whatever N is.
    """
    device, n = ids.device, ids.numel()
    offsets = np.asarray(doc_offsets, dtype=np.int64)
    kept_offsets = torch.empty(len(offsets), dtype=torch.int64, device=device)
    parts = []
    running = 0  # kept tokens before this block
    doc = 0  # first document starting at or after this block's start
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        chunk = ids[b0:b1]
        draw = torch.rand(b1 - b0, generator=generator, device=device)  # (n_b,)
        kept = draw < keep[chunk]
        del draw
        before = torch.cumsum(kept, 0, dtype=torch.int32)  # (n_b,) kept up to and at each
        parts.append(chunk[kept])
        end = int(np.searchsorted(offsets, b1, side="left"))  # documents starting in block
        if end > doc:
            at = torch.from_numpy(offsets[doc:end] - b0).to(device)  # (d_b,) positions
            counted = torch.where(at > 0, before[(at - 1).clamp_min(0)].long(), 0)
            kept_offsets[doc:end] = counted + running
        running += int(before[-1])
        doc = end
    kept_offsets[doc:] = running  # the end offset (and empty trailing documents)
    kept_ids = torch.cat(parts) if parts else ids[:0]
    return kept_ids.to(torch.int32), kept_offsets


def plan_ranges(doc_offsets: np.ndarray, resident: int | None) -> np.ndarray:
    """Document ranges of at most about `resident` tokens each (whole documents):
    bounds int64 (R+1,), range r = documents bounds[r] .. bounds[r+1]-1. One range when the
    corpus fits (resident None or >= its tokens)."""
    offsets = np.asarray(doc_offsets, dtype=np.int64)
    n_docs = len(offsets) - 1
    if resident is None or offsets[-1] <= resident or n_docs <= 1:
        return np.array([0, max(n_docs, 0)], dtype=np.int64)
    longest = int(np.diff(offsets).max())
    # plan_jobs lets a range run past its mark by up to one document: leave room for it.
    return plan_jobs(offsets, max(1, resident - longest))


def default_warps(device: torch.device) -> int:
    """Warps in flight when trainer.cuda_warps is null: WARPS_PER_SM per SM of the GPU."""
    if device.type != "cuda":
        return 8  # numba's CUDA simulator on CPU tensors (tests)
    return WARPS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count


def resident_tokens(device: torch.device, table_bytes: int) -> int:
    """Corpus tokens that fit on the GPU now, at 8 bytes a token (the int32 ids and the
    epoch's compacted int32 copy): the free memory less room for copies of the tables
    (`table_bytes`: both), one for evaluation's normalised vectors and two for torchrun's
    synchronisation, and 512 MiB for subsampling's temporaries and the allocator."""
    free, _ = torch.cuda.mem_get_info(device)
    spare = free - 3 * table_bytes // 2 - (512 << 20)
    if spare < MIN_RESIDENT_TOKENS * 8:
        raise W2VError(
            f"trainer.engine=cuda: the GPU has {free >> 20} MiB free, too little beside the "
            f"model's tables ({table_bytes >> 20} MiB) for even {MIN_RESIDENT_TOKENS:,} corpus "
            "tokens at a time; free the GPU, lower model.dim or data.max_vocab, or set "
            "trainer.cuda_resident_tokens"
        )
    return spare // 8


def chunk_rows(per_lane: int) -> int:
    """Rows a warp loads at once with per_lane floats of each row in a lane's registers."""
    return max(1, min(MAX_CHUNK, ROW_FLOATS // per_lane))


def _array(tensor: torch.Tensor):
    """A kernel argument viewing `tensor` (no copy): numba's device array on a GPU (no stream
    sync: the kernel runs on torch's current stream). In the simulator a memoryview of the CPU
    tensor: the simulator would copy numpy arguments in and out at every launch and proxy
    every element access, 20x slower than a memoryview's."""
    if simulated():
        return memoryview(tensor.detach().numpy())
    return cuda.as_cuda_array(tensor.detach(), sync=False)


def train_slice(in_w: torch.Tensor, out_w: torch.Tensor, kept_ids: torch.Tensor,
                kept_offsets: torch.Tensor, tables: Tables, stats: torch.Tensor, *, arch: str,
                loss: str, window: int, negative: int = 5, cbow_mean: bool = True,
                lr_start: float, lr_end: float, seed: int, epoch: int = 0, step: int = 0,
                workers: int = 1, part: int = 0, parts: int = 1, reads: str = "cached") -> None:
    """One kernel launch: each of `workers` warps trains slice `part` of `parts` of its
    stretch of the kept tokens, updating in_w (V, D) and out_w in place (atomic adds), and
    adds (loss, examples) into stats float64 (P, 2): row p sums the p-th of P equal parts of
    every warp's slice (the loss curve's points inside a step; P=1 for the totals alone).
    Asynchronous on a GPU (torch's current stream); CPU tensors under the simulator.

    kept_ids int32 (M,) and kept_offsets int64 (D+1,) are an epoch's subsampled corpus (see
    `subsample`), tables the noise table or Huffman tree (`make_tables`). The learning rate
    goes linearly from lr_start to lr_end along each warp's slice; randomness depends on
    (seed, epoch, step, warp) only. reads: how weight rows are loaded (see READS).
    """
    nb = _numba_cuda()
    sim = simulated()
    lanes = SIM_LANES if sim else LANES
    dim = in_w.shape[1]
    per_lane = -(-dim // lanes)
    cbow_rows = tables.subwords and arch == "cbow"
    kernel = _kernel(per_lane, lanes, arch == "skipgram", loss == "hs", reads == "coherent",
                     chunk_rows(per_lane), tables.subwords, 2 * window + 1 if cbow_rows else 1)
    args = (
        _array(in_w), _array(out_w), _array(kept_ids), _array(kept_offsets),
        kept_offsets.numel() - 1, kept_ids.numel(), workers, part, parts, dim, window, negative,
        bool(cbow_mean), _array(tables.threshold), _array(tables.alias),
        tables.threshold.numel(), _array(tables.codes), _array(tables.points),
        _array(tables.lengths), _array(tables.in_offsets), _array(tables.in_rows),
        float(lr_start), float(lr_end), seed, epoch, step,
        _array(stats),
    )
    per_block = lanes if sim else lanes * WARPS_PER_BLOCK  # a simulated block is one warp
    blocks = max(1, -(-workers * lanes // per_block))
    if sim:
        with warnings.catch_warnings():  # splitmix64 wraps around on purpose; numpy warns
            warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
            kernel[blocks, per_block](*args)
    else:
        handle = torch.cuda.current_stream(in_w.device).cuda_stream  # 0: the legacy default
        stream = nb.external_stream(handle) if handle else nb.default_stream()
        kernel[blocks, per_block, stream](*args)


@dataclass
class EpochRange:
    """One range of documents as this epoch trains it: the subsampled ids on the device."""

    key: tuple[int, int]  # (epoch, range)
    kept_ids: torch.Tensor  # int32 (M,)
    kept_offsets: torch.Tensor  # int64 (D_r+1,)
    workers: int  # warps training it


class CudaEngine:
    """train.py's view of the kernel: an epoch is its ranges' steps, each one kernel launch
    in which every warp trains the next slice of its stretch."""

    name = "cuda"
    reduction = "sum"  # every pair is a full SGD step, as in word2vec.c
    combine = "sum"  # ranks add their changes, as warps sharing one model do

    def __init__(self, model, corpus, cfg, device: torch.device):
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        m, t = cfg.model, cfg.trainer
        self.sim = simulated()
        if self.sim != (self.device.type == "cpu"):
            raise W2VError("trainer.engine=cuda runs on trainer.device=cuda (on CPU tensors "
                           "only under numba's CUDA simulator, NUMBA_ENABLE_CUDASIM=1)")
        nb = _numba_cuda()
        if not self.sim:
            if not nb.is_available():
                raise W2VError("trainer.engine=cuda: numba-cuda finds no usable GPU (check the "
                               "NVIDIA driver, or use trainer.engine=autograd)")
            index = self.device.index if self.device.index is not None else \
                torch.cuda.current_device()
            nb.select_device(index)
        vocab = corpus.vocab
        self.ids = corpus.ids  # int32 (N,) memory-mapped, on the host
        self.doc_offsets = corpus.doc_offsets.numpy().astype(np.int64)  # (D+1,)
        self.keep = torch.from_numpy(vocab.keep_probs(m.sample)).to(self.device)
        input_rows = InputRows.of(model)
        if input_rows is not None:
            input_rows.check(len(vocab), model.input.weight.shape[0], "cuda engine")
        self.tables = make_tables(vocab, m.loss, m.ns_exponent, self.device, input_rows)
        weight = model.input.weight
        table_bytes = 2 * weight.numel() * weight.element_size()
        resident = t.cuda_resident_tokens
        if resident is None and not self.sim:
            resident = resident_tokens(self.device, table_bytes)
        self.ranges = plan_ranges(self.doc_offsets, resident)  # (R+1,) document bounds
        self.warps = t.cuda_warps or default_warps(self.device)
        self.step_words = t.cuda_step_words
        # Steps per range: about cuda_step_words (in-vocabulary) tokens each.
        steps = [max(1, math.ceil(self._tokens(r) / self.step_words))
                 for r in range(len(self.ranges) - 1)]
        self.first_step = np.concatenate([[0], np.cumsum(steps)]).astype(np.int64).tolist()
        self.resident_ids = None
        if len(self.ranges) == 2:  # the whole corpus fits: copy it once, keep it
            self.resident_ids = self._checked(self.ids.to(self.device, torch.int32))
        self.current: EpochRange | None = None
        self._compile()

    # -- the Engine protocol

    def begin_epoch(self, epoch: int) -> int:
        return self.first_step[-1]

    def step(self, epoch: int, step: int, steps: int, lr: float, lr_end: float) -> Step:
        if step >= self.first_step[-1]:
            return Step(step, steps, 0.0, 0)  # this rank's shard is done (distributed)
        r = bisect.bisect_right(self.first_step, step) - 1
        part, parts = step - self.first_step[r], self.first_step[r + 1] - self.first_step[r]
        span = self._prepare(epoch, r)
        # (loss, examples) of each of CURVE_PARTS equal parts of the step, in order
        stats = torch.zeros((CURVE_PARTS, 2), dtype=torch.float64, device=self.device)
        if span.kept_ids.numel():
            self._launch(span, part, parts, lr, lr_end, epoch, step, stats)
        totals = stats.sum(0)
        if self.sim:
            return Step(step, steps, totals[0], totals[1], curve=stats)
        # A pinned copy queued behind this launch, and an event after it: the loop reads the
        # parts while the next launch runs, without waiting for that one too.
        curve = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
        curve.copy_(stats, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(self.device))
        return Step(step, steps, totals[0], totals[1], curve=curve, ready=ready)

    def pause(self) -> None:
        pass  # kernels run on torch's current stream: whatever reads the weights next waits

    def state_dict(self) -> None:
        return None  # plain SGD: nothing beyond the weights; randomness is positional

    def load_state_dict(self, state) -> None:
        pass

    # -- ranges and epochs

    def _tokens(self, r: int) -> int:
        lo, hi = self.ranges[r], self.ranges[r + 1]
        return int(self.doc_offsets[hi] - self.doc_offsets[lo])

    def _prepare(self, epoch: int, r: int) -> EpochRange:
        """Range r's subsampled ids for this epoch (drawn once, when its first step runs)."""
        if self.current is not None and self.current.key == (epoch, r):
            return self.current
        self.current = None  # free the previous range before copying the next one
        d0, d1 = int(self.ranges[r]), int(self.ranges[r + 1])
        t0, t1 = int(self.doc_offsets[d0]), int(self.doc_offsets[d1])
        if self.resident_ids is not None:
            ids = self.resident_ids  # checked once, when it was copied
        else:  # streamed: this range's ids, copied from the memory map
            ids = self._checked(self.ids[t0:t1].to(self.device, torch.int32))
        seed = int(np.random.SeedSequence([self.cfg.trainer.seed, epoch, r])
                   .generate_state(1, np.uint64)[0])
        gen = torch.Generator(device=self.device).manual_seed(seed)
        kept_ids, kept_offsets = subsample(ids, self.doc_offsets[d0:d1 + 1] - t0, self.keep,
                                           gen)
        workers = max(1, min(self.warps, kept_ids.numel() // MIN_WARP_TOKENS))
        self.current = EpochRange((epoch, r), kept_ids, kept_offsets, workers)
        return self.current

    def _checked(self, ids: torch.Tensor) -> torch.Tensor:
        """ids, after checking they index the tables: the kernel does not bounds-check, and
        an id past the tables would write outside them. (Two reductions and reads: done once
        per copy, not every epoch, where each read would leave the GPU idle.)"""
        if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < len(self.keep):
            raise W2VError(f"cuda engine: token ids must be in [0, {len(self.keep)}): the "
                           "corpus and the model come from different vocabularies")
        return ids

    # -- launching

    def _launch(self, span: EpochRange, part: int, parts: int, lr: float, lr_end: float,
                epoch: int, step: int, stats: torch.Tensor) -> None:
        m = self.cfg.model
        # The weights are viewed afresh at every launch: whatever replaced them since (a
        # checkpoint restore, a distributed sync) is what trains.
        train_slice(self.model.input.weight, self.model.output.weight, span.kept_ids,
                    span.kept_offsets, self.tables, stats, arch=m.arch, loss=m.loss,
                    window=m.window, negative=m.negative, cbow_mean=m.cbow_mean,
                    lr_start=lr, lr_end=lr_end, seed=self.cfg.trainer.seed, epoch=epoch,
                    step=step, workers=span.workers, part=part, parts=parts, reads=READS)

    def _compile(self) -> None:
        """Compile the kernel now (a launch with no work), so training time excludes it; and
        run the epoch's subsampling once on a few tokens, so torch's kernels for it are loaded
        (lazily, at first use: a fixed cost per process) before the clock starts too."""
        one = torch.zeros(1, dtype=torch.int32, device=self.device)
        span = EpochRange((-1, -1), one, torch.zeros(2, dtype=torch.int64, device=self.device),
                          0)
        stats = torch.zeros((1, 2), dtype=torch.float64, device=self.device)
        if not self.sim:  # the first page-locked block for the steps' loss parts (milliseconds)
            torch.empty((CURVE_PARTS, 2), dtype=torch.float64, pin_memory=True)
        few = torch.zeros(min(1024, len(self.keep)), dtype=torch.int32, device=self.device)
        subsample(few, np.array([0, few.numel()], np.int64), self.keep,
                  torch.Generator(device=self.device).manual_seed(0))
        try:
            self._launch(span, 0, 1, 0.0, 0.0, 0, 0, stats)
        except W2VError:
            raise
        except Exception as err:  # numba-cuda raises many types (no NVVM, no driver, ...)
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise W2VError(
                f"trainer.engine=cuda could not compile its kernel ({type(err).__name__}: "
                f"{first}); reinstall with pip install 'w2v[cuda12]' (or 'w2v[cuda13]', the "
                "CUDA major version of torch.version.cuda; it also keeps numpy below 2.5), or "
                "use trainer.engine=autograd"
            ) from err
