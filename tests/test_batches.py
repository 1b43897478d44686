"""Batches: the pair distribution equals word2vec's, windows never cross documents,
subsampling keeps each word with its formula probability, and batches are reproducible."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from w2v.batches import Batches


def make(ids, offsets, window=3, arch="skipgram", keep=None, batch_size=7, seed=1, negative=2):
    ids = torch.tensor(ids, dtype=torch.int32)
    vocab = int(ids.max()) + 1
    keep = np.ones(vocab, dtype=np.float32) if keep is None else keep
    noise = np.full(vocab, 1.0 / vocab)
    return Batches(ids, torch.tensor(offsets), keep, noise, window=window, negative=negative,
                   arch=arch, batch_size=batch_size, seed=seed)


def epoch_batches(b: Batches, epoch: int, start_step: int = 0):
    """(step, batch) over an epoch from `start_step` on, as the autograd engine draws them."""
    view = b.view(epoch)
    for step in range(start_step, b.steps(view)):
        yield step, b.batch(view, epoch, step)


def brute_force_expected_pairs(docs, window):
    """E[count of (context word, centre word)] per epoch under word2vec's dynamic window:
    a context at distance d is used when the reduced window b >= d, P = (W - d + 1) / W."""
    expect = Counter()
    for doc in docs:
        for i, centre in enumerate(doc):
            for j, ctx in enumerate(doc):
                d = abs(i - j)
                if 0 < d <= window:
                    expect[(ctx, centre)] += (window - d + 1) / window
    return expect


def test_pair_distribution_matches_brute_force_reference():
    docs = [[0, 1, 2, 3, 1, 4], [2, 2, 5, 0], [3]]
    flat = [w for d in docs for w in d]
    offsets = np.cumsum([0] + [len(d) for d in docs])
    expect = brute_force_expected_pairs(docs, window=3)
    epochs = 800
    seen = Counter()
    b = make(flat, offsets, window=3)
    for epoch in range(epochs):
        for _, batch in epoch_batches(b, epoch):
            seen.update(zip(batch.inputs.tolist(), batch.targets.tolist()))
    assert set(seen) == set(expect)  # exactly the pairs that can occur, no others
    for pair, e in expect.items():
        # a pair's count per epoch is a sum of Bernoullis: variance <= mean; allow 4 sigma
        assert abs(seen[pair] / epochs - e) <= 4 * (e / epochs) ** 0.5, pair


def test_cbow_contexts_are_the_same_windows():
    docs = [[0, 1, 2, 3, 4, 5, 6]]
    b = make(docs[0], [0, 7], window=2, arch="cbow", batch_size=100)
    (_, batch), = list(epoch_batches(b, 0))
    assert batch.inputs.shape == (7, 4) and batch.mask.shape == (7, 4)
    for ctx, mask, centre in zip(batch.inputs, batch.mask, batch.targets):
        i = int(centre)  # ids equal positions in this corpus
        used = sorted(int(c) for c, m in zip(ctx, mask) if m)
        assert used and all(0 < abs(c - i) <= 2 for c in used)


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    window=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_pairs_stay_within_window_and_document(lengths, window, seed):
    # ids encode (document, position) so every pair can be checked
    flat = [d * 100 + p for d, n in enumerate(lengths) for p in range(n)]
    offsets = np.cumsum([0] + lengths)
    b = make(flat, offsets, window=window, seed=seed)
    for _, batch in epoch_batches(b, 0):
        for ctx, centre in zip(batch.inputs.tolist(), batch.targets.tolist()):
            assert ctx // 100 == centre // 100  # same document
            assert 0 < abs(ctx % 100 - centre % 100) <= window


def test_subsampling_keeps_each_word_with_its_probability():
    rng = np.random.default_rng(0)
    flat = rng.integers(0, 4, 40_000)
    keep = np.array([1.0, 0.5, 0.2, 0.05], dtype=np.float32)
    b = make(flat, [0, len(flat)], keep=keep)
    view = b.view(0)
    kept = np.bincount(view.ids.numpy(), minlength=4)
    total = np.bincount(flat, minlength=4)
    # binomial standard error at n ~ 10,000 is < 0.005; allow 4 sigma
    assert np.allclose(kept / total, keep, atol=0.02)
    redrawn = b.view(1).ids
    assert not torch.equal(view.ids, redrawn)  # subsampling is redrawn every epoch


def test_windows_span_the_subsampled_sequence():
    # word 9 is always dropped, so 0 and 1 become neighbours (word2vec drops before windowing)
    flat = [0, 9, 9, 9, 1]
    keep = np.array([1, 1] + [1] * 7 + [0], dtype=np.float32)
    b = make(flat, [0, 5], window=1, keep=keep, batch_size=10)
    pairs = set()
    for e in range(5):
        for _, batch in epoch_batches(b, e):
            pairs.update(zip(batch.inputs.tolist(), batch.targets.tolist()))
    assert pairs == {(0, 1), (1, 0)}


def test_negatives_follow_the_noise_distribution():
    flat = list(range(4)) * 10
    b = make(flat, [0, 40])
    b.noise_cdf = torch.cumsum(torch.tensor([0.1, 0.2, 0.3, 0.4]), 0)
    draws = b.draw_negatives(20_000, torch.Generator().manual_seed(0))
    freq = np.bincount(draws.flatten().numpy(), minlength=4) / draws.numel()
    assert np.allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.01)


def test_batches_depend_only_on_position():
    flat = np.random.default_rng(1).integers(0, 20, 500)
    b = make(flat, [0, 200, 500])
    full = [(s, x.inputs.clone(), x.negatives.clone()) for s, x in epoch_batches(b, 3)]
    resumed = [(s, x.inputs, x.negatives) for s, x in epoch_batches(b, 3, start_step=5)]
    assert [s for s, *_ in resumed] == [s for s, *_ in full[5:]]
    for (_, a, na), (_, c, nc) in zip(full[5:], resumed):
        assert torch.equal(a, c) and torch.equal(na, nc)


@pytest.mark.parametrize("arch", ["skipgram", "cbow"])
def test_fixed_shape_batches_give_the_same_loss_as_compact_ones(arch):
    """GPU batches keep fixed shapes (no host sync) with 0/1 weights: same examples, same
    loss and gradients as the compact CPU batches."""
    from w2v.model import Word2Vec

    flat = np.random.default_rng(2).integers(0, 30, 400)
    compact = make(flat, [0, 150, 400], arch=arch, batch_size=64)
    fixed = make(flat, [0, 150, 400], arch=arch, batch_size=64)
    fixed.compact = False
    view_c, view_f = compact.view(0), fixed.view(0)
    torch.manual_seed(0)
    model = Word2Vec(30, 8, arch=arch)
    torch.nn.init.normal_(model.output.weight)
    for step in range(3):
        a, b = compact.batch(view_c, 0, step), fixed.batch(view_f, 0, step)
        assert int(b.examples) == a.examples
        real = b.weights.bool()
        assert torch.equal(b.targets[real], a.targets)
        if arch == "skipgram":
            assert torch.equal(b.inputs[real], a.inputs)
        # same loss once the padded slots' negatives are the compact batch's
        negatives = b.negatives.clone()
        negatives[real] = a.negatives
        la = model(a.inputs, a.targets, a.mask, a.negatives)
        lb = model(b.inputs, b.targets, b.mask, negatives, b.weights)
        assert lb.item() == pytest.approx(la.item(), rel=1e-5)
