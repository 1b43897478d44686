"""word2vec's and fastText's updates written plainly, one centre at a time: what the engines'
exactness tests (tests/test_fused.py, tests/test_cuda_engine.py) compare each engine with.
Each engine draws its windows from its own generator; `fused_windows` and `warp_windows`
replay those draws (w2v.engines.rules, the functions both engines compile) so the reference
can take the same windows."""

from __future__ import annotations

import heapq

import numpy as np
import torch

from w2v.engines import rules
from w2v.vocab import Huffman


def huffman(counts: np.ndarray) -> Huffman:
    """A Huffman tree as word2vec.c lays it out: points from the root (inner node V-2) down,
    codes[b] the branch taken at points[b] (the smaller of two merged nodes is branch 0)."""
    v = len(counts)
    heap = [(int(c), i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    parent = np.zeros(2 * v - 1, np.int64)
    branch = np.zeros(2 * v - 1, np.int8)
    for node in range(v, 2 * v - 1):
        c0, a = heapq.heappop(heap)
        c1, b = heapq.heappop(heap)
        parent[a], parent[b], branch[b] = node, node, 1
        heapq.heappush(heap, (c0 + c1, node))
    paths = []
    for w in range(v):
        path, node = [], w
        while node != 2 * v - 2:
            path.append((branch[node], parent[node] - v))
            node = parent[node]
        paths.append(path[::-1])
    depth = max(len(p) for p in paths)
    codes = np.zeros((v, depth), np.int8)
    points = np.zeros((v, depth), np.int32)
    for w, path in enumerate(paths):
        for m, (code, point) in enumerate(path):
            codes[w, m], points[w, m] = code, point
    return Huffman(codes, points, np.array([len(p) for p in paths], np.int32))


def fused_windows(seed: int, epoch: int, doc: int, n: int, window: int) -> list[int]:
    """The effective windows (1..window) the fused engine draws for a document's n kept
    positions: its generator is seeded by (seed, epoch, document), and with no subsampling
    and hs (no noise draws) it draws once per position."""
    with np.errstate(over="ignore"):  # splitmix64 wraps around on purpose
        state = rules.hash_in(rules.hash_in(rules.next_bits(np.uint64(seed))[1], epoch), doc)
        return _windows(state, n, window)


def warp_windows(seed: int, epoch: int, step: int, warp: int, n: int, window: int
                 ) -> list[int]:
    """The same for a cuda kernel warp's slice of n positions (across its documents): its
    generator is seeded by (seed, epoch, step, warp)."""
    with np.errstate(over="ignore"):
        state = rules.hash_in(rules.hash_in(rules.hash_in(rules.next_bits(np.uint64(seed))[1],
                                                          epoch), step), warp)
        return _windows(state, n, window)


def _windows(state, n: int, window: int) -> list[int]:
    out = []
    for _ in range(n):
        state, bits = rules.next_bits(state)
        out.append(int(window - rules.below(bits, window)))
    return out


def reference(in_w, out_w, doc, arch, loss, negative, noise_word, tree, cbow_mean, lrs,
              rows=None, window=1, windows=None):
    """word2vec's update order for one document, all noise on one word; centre i trains with
    learning rate lrs[i] over the positions within windows[i] of it (default: window 1, no
    randomness left), `window` the largest.

    Each target's gradient comes from torch autograd on -log sigmoid(+-h.u); the output row
    moves at once, the input row(s) get the summed input gradient after the example (CBOW:
    unscaled with the mean, divided by the count with the sum, as gensim 4).
    rows: each word's input rows (fastText's subwords, a list of lists); the hidden vector is
    the mean of a word's rows (skip-gram) or of all the context's rows (CBOW), and each of
    those rows takes the error unscaled (fastText's Model::update); skip-gram then takes
    fastText's orientation (the centre's rows predict its context words), and CBOW reads a
    position's rows when it enters the largest window (at centre p - window) and adds its
    errors to its rows when it leaves it, or at the document's end (the engines' rule: a
    row shared within a window sees the other word's errors late).
    """
    subwords = rows is not None
    rows = rows or [[w] for w in range(len(in_w))]
    windows = windows or [1] * len(doc)
    in_w, out_w = torch.tensor(in_w, dtype=torch.float64), torch.tensor(out_w, dtype=torch.float64)
    total = 0.0

    def step(h, target, lr):
        nonlocal total
        if loss == "negative":
            targets = [(target, 1.0)] + [(noise_word, 0.0)] * negative * (noise_word != target)
        else:
            targets = [(int(p), 1.0 - int(c)) for p, c in zip(tree.points[target][:tree.lengths[
                target]], tree.codes[target][:tree.lengths[target]])]
        grad_h = torch.zeros_like(h)
        for row, label in targets:
            hh = h.clone().requires_grad_(True)
            u = out_w[row].clone().requires_grad_(True)
            f = hh @ u
            nll = -torch.nn.functional.logsigmoid(f if label == 1.0 else -f)
            nll.backward()
            total += nll.item()
            grad_h -= lr * hh.grad
            out_w[row] -= lr * u.grad
        return grad_h

    sums, read = {}, {}  # subword CBOW: each position's row sum, and its value when read
    ring = 2 * window + 1

    def flush(p):  # position p's errors reach its rows: the growth of its sum / its rows
        for r in rows[doc[p]]:
            in_w[r] += (sums[p] - read[p]) / len(rows[doc[p]])

    entered = 0
    for i, w in enumerate(doc):
        b = windows[i]
        ctx_at = [j for j in range(max(i - b, 0), min(i + b + 1, len(doc))) if j != i]
        ctx = [doc[j] for j in ctx_at]
        if arch == "skipgram" and subwords:
            # fastText's orientation: the centre's rows predict each context word; their
            # mean is taken once and the window's summed error added after it
            if not ctx:
                continue
            h, g = in_w[rows[w]].mean(0), 0
            for c in ctx:
                g = g + step(h, c, lrs[i])
            for r in rows[w]:
                in_w[r] += g
        elif arch == "skipgram":
            for c in ctx:
                in_w[c] += step(in_w[c].clone(), w, lrs[i])
        elif subwords:
            # fastText's CBOW, each position's row sum read when it enters the largest
            # window and its errors added to its rows when it leaves it
            while entered < min(i + window + 1, len(doc)):
                if entered >= ring:
                    flush(entered - ring)
                sums[entered] = in_w[rows[doc[entered]]].sum(0)
                read[entered] = sums[entered].clone()
                entered += 1
            if not ctx:
                continue
            n = sum(len(rows[doc[j]]) for j in ctx_at)
            h = sum(sums[j] for j in ctx_at) / (n if cbow_mean else 1)
            g = step(h, w, lrs[i]) / (1 if cbow_mean else n)
            for j in ctx_at:
                sums[j] = sums[j] + len(rows[doc[j]]) * g
        else:
            if not ctx:
                continue
            ctx_rows = [r for c in ctx for r in rows[c]]
            h = in_w[ctx_rows].sum(0) / (len(ctx_rows) if cbow_mean else 1)
            g = step(h, w, lrs[i])
            for r in ctx_rows:
                in_w[r] += g if cbow_mean else g / len(ctx_rows)
    for p in range(max(entered - ring, 0), entered):  # the document's last positions
        flush(p)
    return in_w.numpy(), out_w.numpy(), total
