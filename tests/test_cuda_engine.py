"""The cuda engine: its kernel against the fused engine's arithmetic, learning, document
ranges, resume, the loss kept on the device, torchrun.

Without a GPU these run the real kernel in numba's CUDA simulator on CPU tensors (turned on by
tests/conftest.py; a Python thread per CUDA thread, so the corpora are small); with a GPU and
numba-cuda the same tests run on it, and the `cuda`-marked ones add text8-prefix quality and
torchrun across GPUs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import (
    StopAfter,
    analogies_recovered,
    free_port,
    neighbours_recovered,
    planted_cfg,
    scalars,
    write_planted_corpus,
)
from tests.reference import huffman, reference, warp_windows
from w2v import train as train_mod
from w2v.corpus import build_corpus
from w2v.engines import cuda as engine_mod
from w2v.engines import fused, simulated
from w2v.engines.rules import InputRows
from w2v.errors import W2VError
from w2v.model import build_model
from w2v.train import TrainingInterrupted, train
from w2v.vocab import build_huffman

ROOT = Path(__file__).resolve().parents[1]
# numba's own numba.cuda holds the simulator today; should numba drop it, numba-cuda (no
# extra needed for the simulator) provides it.
SIM = simulated() and importlib.util.find_spec("numba.cuda") is not None
GPU = torch.cuda.is_available() and importlib.util.find_spec("numba_cuda") is not None
DEVICE = torch.device("cpu" if SIM else "cuda")
pytestmark = pytest.mark.skipif(
    not (SIM or GPU), reason="needs numba's CUDA simulator (tests/conftest.py turns it on "
    "when there is no GPU) or a GPU with numba-cuda (pip install 'w2v[cuda12]')")


@pytest.fixture
def shuffle_lanes(monkeypatch):
    """In the simulator, 4 lanes per warp, so the warp-shuffle reduction runs too."""
    if SIM:
        monkeypatch.setattr(engine_mod, "SIM_LANES", 4)


def run_fused(in_w, out_w, ids, offsets, **kw):
    in_w, out_w = in_w.copy(), out_w.copy()
    stats = fused.train_job(in_w, out_w, ids, offsets, 0, len(offsets) - 1,
                            np.ones(in_w.shape[0], np.float32), **kw)
    return in_w, out_w, stats


def run_kernel(in_w, out_w, ids, offsets, vocab, *, arch, loss, workers=1, curve_parts=1,
               **kw):
    """One launch; returns the tables and (loss, examples), or with curve_parts > 1 the
    (curve_parts, 2) sums of the slices' equal parts."""
    in_t = torch.from_numpy(in_w.copy()).to(DEVICE)
    out_t = torch.from_numpy(out_w.copy()).to(DEVICE)
    stats = torch.zeros((curve_parts, 2), dtype=torch.float64, device=DEVICE)
    tables = engine_mod.make_tables(vocab, loss, 0.75, DEVICE)
    engine_mod.train_slice(in_t, out_t, torch.from_numpy(ids).to(DEVICE),
                           torch.from_numpy(offsets).to(DEVICE), tables, stats, arch=arch,
                           loss=loss, workers=workers, **kw)
    return in_t.cpu().numpy(), out_t.cpu().numpy(), stats.cpu()[0] if curve_parts == 1 else \
        stats.cpu()


CASES = [("skipgram", "negative", True, 6), ("skipgram", "negative", True, 37),
         ("skipgram", "hs", True, 6), ("cbow", "negative", True, 6),
         ("cbow", "negative", False, 6), ("cbow", "hs", True, 6), ("cbow", "hs", False, 6)]


@pytest.mark.parametrize("max_chunk", [1, 2, 3, 6])
@pytest.mark.parametrize(("arch", "loss", "cbow_mean", "dim"), CASES)
def test_one_warp_updates_as_the_fused_engine(shuffle_lanes, monkeypatch, max_chunk, arch,
                                              loss, cbow_mean, dim):
    """Same ids, same negatives (a noise table that always draws word 1, sometimes the
    target: skipped), window 1 (b is always 1): the kernel's updates, loss and example count
    equal the fused engine's, across document ends, a one-word document, a decaying lr and
    dims that do not divide among the lanes. Weights of order 1 and lr 0.3 make any
    difference in the order of the updates show far above float rounding. Rows loaded one
    at a time and in chunks (dim 6: the target and its 3 noise words in one chunk, where
    word 1 drawn twice must see its own first update; dim 37: chunks of 2) alike."""
    monkeypatch.setattr(engine_mod, "MAX_CHUNK", max_chunk)
    rng = np.random.default_rng(0)
    counts = np.array([50, 30, 20, 10, 5, 3])
    ids = np.array([0, 1, 2, 0, 3, 1, 4, 5, 2, 4, 0, 3], np.int32)
    offsets = np.array([0, 2, 7, 8, 12], np.int64)  # documents of 2, 5, 1 and 4 words
    probs = np.zeros(len(counts))
    probs[1] = 1.0
    huff = build_huffman(counts)
    vocab = SimpleNamespace(noise_probs=lambda e: probs, huffman=lambda: huff)
    in_w = rng.uniform(-1, 1, (len(counts), dim)).astype(np.float32)
    out_w = rng.uniform(-1, 1, (len(counts) - (loss == "hs"), dim)).astype(np.float32)
    kw = dict(arch=arch, loss=loss, window=1, negative=3, cbow_mean=cbow_mean,
              lr_start=0.3, lr_end=0.1, seed=1)
    want_in, want_out, want = run_fused(in_w, out_w, ids, offsets, huffman=huff,
                                        noise=fused.build_noise_table(probs), **kw)
    got_in, got_out, got = run_kernel(in_w, out_w, ids, offsets, vocab, **kw)
    assert np.abs(want_in - in_w).max() > 0.1  # it did train
    np.testing.assert_allclose(got_in, want_in, atol=2e-6)
    np.testing.assert_allclose(got_out, want_out, atol=2e-6)
    assert float(got[0]) == pytest.approx(want.loss_sum, rel=1e-6)
    assert float(got[1]) == want.pairs


SUBWORD_CASES = [("skipgram", "negative", True, 6), ("skipgram", "hs", True, 37),
                 ("cbow", "negative", True, 6), ("cbow", "negative", False, 37),
                 ("cbow", "hs", True, 6)]


@pytest.mark.parametrize(("arch", "loss", "cbow_mean", "dim"), SUBWORD_CASES)
def test_one_warp_updates_a_subword_model_as_the_fused_engine(shuffle_lanes, arch, loss,
                                                               cbow_mean, dim):
    """fastText's subword model (6 words over 11 input rows, shared and repeated n-gram
    rows): the kernel's updates, loss and example count equal the fused engine's."""
    rng = np.random.default_rng(0)
    counts = np.array([50, 30, 20, 10, 5, 3])
    rows = [[0, 6, 7], [1, 7], [2, 8, 8, 9], [3], [4, 6, 10], [5, 9, 10]]
    input_rows = InputRows(np.cumsum([0] + [len(r) for r in rows]), np.concatenate(rows))
    ids = np.array([0, 1, 2, 0, 3, 1, 4, 5, 2, 4, 0, 3], np.int32)
    offsets = np.array([0, 2, 7, 8, 12], np.int64)
    probs = np.zeros(len(counts))
    probs[1] = 1.0
    huff = build_huffman(counts)
    vocab = SimpleNamespace(noise_probs=lambda e: probs, huffman=lambda: huff)
    in_w = rng.uniform(-1, 1, (11, dim)).astype(np.float32)
    out_w = rng.uniform(-1, 1, (len(counts) - (loss == "hs"), dim)).astype(np.float32)
    kw = dict(arch=arch, loss=loss, window=1, negative=3, cbow_mean=cbow_mean,
              lr_start=0.3, lr_end=0.1, seed=1)
    in_f, out_f = in_w.copy(), out_w.copy()
    want = fused.train_job(in_f, out_f, ids, offsets, 0, len(offsets) - 1,
                           np.ones(len(counts), np.float32), huffman=huff,
                           noise=fused.build_noise_table(probs), input_rows=input_rows, **kw)
    in_t, out_t = torch.from_numpy(in_w.copy()).to(DEVICE), torch.from_numpy(out_w.copy()).to(
        DEVICE)
    stats = torch.zeros((1, 2), dtype=torch.float64, device=DEVICE)
    tables = engine_mod.make_tables(vocab, loss, 0.75, DEVICE, input_rows)
    engine_mod.train_slice(in_t, out_t, torch.from_numpy(ids).to(DEVICE),
                           torch.from_numpy(offsets).to(DEVICE), tables, stats, **kw)
    assert np.abs(in_f - in_w).max() > 0.1  # it did train
    np.testing.assert_allclose(in_t.cpu().numpy(), in_f, atol=2e-6)
    np.testing.assert_allclose(out_t.cpu().numpy(), out_f, atol=2e-6)
    assert float(stats[0, 0]) == pytest.approx(want.loss_sum, rel=1e-6)
    assert float(stats[0, 1]) == want.pairs


@pytest.mark.parametrize(("arch", "subwords", "cbow_mean"),
                         [("skipgram", True, True), ("cbow", True, True), ("cbow", True, False),
                          ("cbow", False, True)])
def test_random_windows_update_as_the_reference(shuffle_lanes, arch, subwords, cbow_mean):
    """Window 3, each centre's window drawn in 1..3 by the warp's generator (replayed by
    warp_windows), hs (no other draws), across two documents: the kernel's updates equal
    the reference's over the same windows; for subword CBOW, each lane's ring of 7 window
    positions read and written back as the fused engine does (tests/test_fused.py checks
    the fused engine against the same reference)."""
    v, dim, lr, window = 6, 7, 0.3, 3
    rows = [[0, 6, 7], [1, 7], [2, 8, 8, 9], [3], [4, 6, 10], [5, 9, 10]] if subwords else None
    ids = np.array([0, 1, 3, 2, 1, 4, 5, 0, 2, 3, 5, 1, 4, 0, 3, 2, 5, 1], np.int32)
    offsets = np.array([0, 14, 18], np.int64)
    rng = np.random.default_rng(2)  # small weights: every dot product inside the table
    in_w = rng.normal(0, 0.1, (11 if subwords else v, dim)).astype(np.float32)
    out_w = rng.normal(0, 0.1, (v - 1, dim)).astype(np.float32)
    tree = huffman(np.array([6, 5, 4, 3, 2, 1]))
    windows = warp_windows(seed=4, epoch=0, step=0, warp=0, n=len(ids), window=window)
    assert len(set(windows[:14])) == 3  # windows of 1, 2 and 3 all occur
    want_in, want_out, want_loss = in_w, out_w, 0.0
    for d0, d1 in zip(offsets[:-1], offsets[1:], strict=True):  # one document after another
        want_in, want_out, part = reference(want_in, want_out, ids[d0:d1].tolist(), arch, "hs",
                                            0, 0, tree, cbow_mean, [lr] * (d1 - d0), rows,
                                            window, windows[d0:d1])
        want_in, want_out = want_in.astype(np.float32), want_out.astype(np.float32)
        want_loss += part
    input_rows = InputRows(np.cumsum([0] + [len(r) for r in rows]), np.concatenate(rows)) \
        if subwords else None
    vocab = SimpleNamespace(huffman=lambda: tree)
    in_t, out_t = torch.from_numpy(in_w.copy()).to(DEVICE), torch.from_numpy(out_w.copy()).to(
        DEVICE)
    stats = torch.zeros((1, 2), dtype=torch.float64, device=DEVICE)
    tables = engine_mod.make_tables(vocab, "hs", 0.75, DEVICE, input_rows)
    engine_mod.train_slice(in_t, out_t, torch.from_numpy(ids).to(DEVICE),
                           torch.from_numpy(offsets).to(DEVICE), tables, stats, arch=arch,
                           loss="hs", window=window, cbow_mean=cbow_mean, lr_start=lr,
                           lr_end=lr, seed=4)
    got_in, got_out = in_t.cpu().numpy(), out_t.cpu().numpy()
    np.testing.assert_allclose(got_in - in_w, want_in - in_w, rtol=0.03, atol=3e-3)
    np.testing.assert_allclose(got_out - out_w, want_out - out_w, rtol=0.03, atol=3e-3)
    assert np.abs(got_in - in_w).max() > 0.02
    assert float(stats[0, 0]) == pytest.approx(want_loss, rel=0.01)


def test_dynamic_window_gives_word2vec_pair_counts():
    """b uniform in 1..window: a long document gives about (window + 1) pairs per word in
    skip-gram; a window never crosses a document (two-word documents give exactly 2 each)."""
    n, window = 3000, 4
    ids = np.zeros(n, np.int32)
    vocab = SimpleNamespace(noise_probs=lambda e: np.array([0.5, 0.5]), huffman=None)
    w = np.zeros((2, 1), np.float32)
    kw = dict(arch="skipgram", loss="negative", window=window, negative=1, lr_start=0.0,
              lr_end=0.0, seed=3)
    _, _, stats = run_kernel(w, w, ids, np.array([0, n], np.int64), vocab, **kw)
    assert float(stats[1]) / n == pytest.approx(window + 1, rel=0.05)
    _, _, stats = run_kernel(w, w, ids[:40], np.arange(0, 41, 2, dtype=np.int64), vocab,
                             workers=3, **kw)
    assert float(stats[1]) == 40


def test_noise_words_are_drawn_with_the_noise_tables_probabilities():
    """The kernel's alias-method draws (a chunk's coins against the thresholds, held as int32
    in the same order as the uint32 ones) follow the noise distribution. Measured through the
    updates: with h = -1 and a tiny lr, f stays within a bin or two of 0 and each draw of
    word t moves out[t] by about +lr / 2 (the sigmoid table's value there: 0.497-0.5)."""
    probs = np.array([0.0, 0.5, 0.3, 0.15, 0.05])  # word 0 is the corpus, never noise
    n, lr = 2000, 1e-6
    vocab = SimpleNamespace(noise_probs=lambda e: probs, huffman=None)
    in_w = -np.ones((len(probs), 1), np.float32)
    out_w = np.zeros((len(probs), 1), np.float32)
    kw = dict(arch="skipgram", loss="negative", window=1, negative=5, lr_start=lr, lr_end=lr,
              seed=5)
    _, got_out, stats = run_kernel(in_w, out_w, np.zeros(n, np.int32),
                                   np.array([0, n], np.int64), vocab, **kw)
    draws = got_out[1:, 0] / (lr / 2)
    assert draws.sum() == pytest.approx(5 * float(stats[1]), rel=0.01)  # 5 per pair
    np.testing.assert_allclose(draws / draws.sum(), probs[1:], atol=0.01)


def test_the_loss_comes_in_equal_parts_of_every_slice_that_add_up_to_the_totals():
    """stats (P, 2): part p sums the p-th P-th of each warp's slice, so the parts are the
    loss curve inside one launch; the same launch with P=1 gives their sums, and the
    training is the same (the parts change only where the sums go)."""
    n, window = 3000, 4
    ids = np.zeros(n, np.int32)
    vocab = SimpleNamespace(noise_probs=lambda e: np.array([0.5, 0.5]), huffman=None)
    rng = np.random.default_rng(1)
    w = rng.uniform(-0.5, 0.5, (2, 4)).astype(np.float32)
    kw = dict(arch="skipgram", loss="negative", window=window, negative=1, lr_start=0.05,
              lr_end=0.0, seed=3, workers=3)
    in_1, out_1, totals = run_kernel(w, w, ids, np.array([0, n], np.int64), vocab, **kw)
    in_p, out_p, parts = run_kernel(w, w, ids, np.array([0, n], np.int64), vocab,
                                    curve_parts=7, **kw)
    # The simulator runs the warps one after another: the same updates, bit for bit. On a GPU
    # the three warps race on the same two rows (Hogwild), so the float sums' order varies.
    atol, rel = (0.0, 1e-12) if SIM else (1e-3, 1e-3)
    np.testing.assert_allclose(in_p, in_1, rtol=0, atol=atol)
    np.testing.assert_allclose(out_p, out_1, rtol=0, atol=atol)
    assert float(parts[:, 1].sum()) == float(totals[1])
    assert float(parts[:, 0].sum()) == pytest.approx(float(totals[0]), rel=rel)
    share = parts[:, 1].numpy() / float(totals[1])
    np.testing.assert_allclose(share, np.full(7, 1 / 7), atol=0.02)  # 1,000 tokens a warp
    assert float(parts[0, 0] / parts[0, 1]) > float(parts[-1, 0] / parts[-1, 1])  # it learns


def test_subsampling_keeps_each_token_with_its_probability_and_document_bounds():
    """Blocks smaller than the corpus and than its documents: the compacted ids and the
    documents' offsets among them equal a one-pass reference drawing the same numbers."""
    rng = np.random.default_rng(1)
    lengths = np.array([5, 0, 9, 1, 0, 13, 4])  # empty documents, ones across blocks
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = torch.from_numpy(rng.integers(0, 4, offsets[-1]).astype(np.int32)).to(DEVICE)
    keep = torch.tensor([0.2, 0.5, 1.0, 0.0], device=DEVICE)
    gen = lambda: torch.Generator(device=DEVICE).manual_seed(7)  # noqa: E731
    kept, kept_offsets = engine_mod.subsample(ids, offsets, keep, gen(), block=6)
    g = gen()
    draws = torch.cat([torch.rand(min(6, len(ids) - b), generator=g, device=DEVICE)
                       for b in range(0, len(ids), 6)])
    mask = draws < keep[ids]
    assert torch.equal(kept, ids[mask])
    counted = torch.cat([torch.zeros(1, dtype=torch.long, device=DEVICE), mask.cumsum(0)])
    assert torch.equal(kept_offsets, counted[torch.from_numpy(offsets).to(DEVICE)])
    assert not bool((kept == 3).any())  # keep 0: never kept

    many = torch.from_numpy(rng.integers(0, 4, 200_000).astype(np.int32)).to(DEVICE)
    kept, _ = engine_mod.subsample(many, np.array([0, len(many)]), keep, gen())
    for word, p in enumerate([0.2, 0.5, 1.0]):
        share = (kept == word).sum().item() / (many == word).sum().item()
        assert share == pytest.approx(p, abs=0.01)


def test_plan_ranges_cover_every_document_once_within_the_budget():
    offsets = np.concatenate([[0], np.cumsum([7, 3, 9, 1, 12, 4, 4, 8])]).astype(np.int64)
    bounds = engine_mod.plan_ranges(offsets, 20)
    assert bounds[0] == 0 and bounds[-1] == len(offsets) - 1 and len(bounds) > 2
    sizes = offsets[bounds[1:]] - offsets[bounds[:-1]]
    assert (sizes <= 20).all() and (sizes > 0).all()
    assert engine_mod.plan_ranges(offsets, None).tolist() == [0, len(offsets) - 1]
    assert engine_mod.plan_ranges(offsets, 1000).tolist() == [0, len(offsets) - 1]


def _line_corpus(tmp_path, docs: int = 12, length: int = 10) -> Path:
    rng = np.random.default_rng(2)
    words = [f"w{i}" for i in range(15)]
    lines = [" ".join(rng.choice(words, length)) for _ in range(docs)]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _engine(path, *overrides):
    cfg = planted_cfg(SimpleNamespace(path=path), "trainer.engine=cuda",
                      f"trainer.device={DEVICE.type}", "model.dim=8", *overrides)
    corpus = build_corpus(cfg.data, progress=False)
    torch.manual_seed(0)
    model = build_model(cfg.model, corpus.vocab).to(DEVICE)
    return engine_mod.CudaEngine(model, corpus, cfg, DEVICE), model


def _train_epoch(engine, epoch: int = 0) -> list:
    steps = engine.begin_epoch(epoch)
    return [engine.step(epoch, s, steps, 0.05 - 0.01 * s / steps, 0.05 - 0.01 * (s + 1) / steps)
            for s in range(steps)]


def test_streamed_document_ranges_train_as_the_resident_corpus(tmp_path):
    """A corpus trained in ranges copied one at a time (trainer.cuda_resident_tokens) equals
    the corpus held whole: one warp, steps on the same token boundaries, no subsampling."""
    path = _line_corpus(tmp_path)  # 12 documents of 10 words
    common = ("trainer.cuda_warps=1", "trainer.cuda_step_words=20", "model.sample=0")
    whole, whole_model = _engine(path, *common)
    streamed, streamed_model = _engine(path, *common, "trainer.cuda_resident_tokens=50")
    assert len(whole.ranges) == 2 and whole.resident_ids is not None
    assert len(streamed.ranges) == 4 and streamed.resident_ids is None  # 3 ranges of 40
    assert whole.begin_epoch(0) == streamed.begin_epoch(0) == 6
    a, b = _train_epoch(whole), _train_epoch(streamed)
    assert [float(s.loss_sum) for s in a] == [float(s.loss_sum) for s in b]
    assert torch.equal(whole_model.input.weight, streamed_model.input.weight)
    assert torch.equal(whole_model.output.weight, streamed_model.output.weight)


def test_loss_and_examples_stay_on_the_device_until_read(tmp_path):
    path = _line_corpus(tmp_path, docs=6)
    engine, _ = _engine(path, "trainer.cuda_warps=2", "trainer.cuda_step_words=15")
    steps = _train_epoch(engine)
    assert len(steps) == 4
    for s in steps:
        assert isinstance(s.loss_sum, torch.Tensor) and s.loss_sum.device.type == DEVICE.type
        assert isinstance(s.examples, torch.Tensor) and s.examples.device.type == DEVICE.type
    loss = sum(float(s.loss_sum) for s in steps) / sum(float(s.examples) for s in steps)
    assert 0 < loss < 6 * 0.7  # per pair: about 6 log 2 at the start, falling


def test_ids_outside_the_tables_are_refused_before_the_kernel_sees_them(tmp_path):
    """The kernel does not bounds-check: ids from another vocabulary are one clear error, for
    the resident corpus (checked once, when copied) and for each streamed range."""
    path = _line_corpus(tmp_path, docs=6)
    engine, _ = _engine(path)
    vocab_size = len(engine.keep)
    with pytest.raises(W2VError, match=rf"token ids must be in \[0, {vocab_size}\)"):
        engine._checked(torch.tensor([0, vocab_size], dtype=torch.int32, device=DEVICE))
    engine.resident_ids, engine.ids = None, torch.full((60,), vocab_size, dtype=torch.int32)
    with pytest.raises(W2VError, match="different vocabularies"):
        engine._prepare(0, 0)


def test_warps_default_and_cap(tmp_path):
    path = _line_corpus(tmp_path, docs=80)  # 800 words: at most 3 warps of 256 words
    engine, _ = _engine(path, "model.sample=0")
    assert engine.warps == engine_mod.default_warps(DEVICE)
    engine.begin_epoch(0)
    engine.step(0, 0, 1, 0.025, 0.02)
    assert engine.current.workers == 800 // engine_mod.MIN_WARP_TOKENS


LEARN = [("skipgram", "negative", 2, "true"), ("skipgram", "hs", 2, "true"),
         ("cbow", "negative", 4, "true"), ("cbow", "hs", 4, "false")]


@pytest.fixture(scope="module")
def small_planted(tmp_path_factory):
    """The planted corpus, small enough for the simulator (4,800 words, 4 entities)."""
    return write_planted_corpus(tmp_path_factory.mktemp("small") / "planted.txt", entities=4,
                                context_per_entity=5, context_per_form=3, sentences=600,
                                length=8)


def small_cfg(planted, *overrides):
    return planted_cfg(planted, "trainer.engine=cuda", f"trainer.device={DEVICE.type}",
                       "model.dim=12", "model.negative=3", "trainer.lr=0.1",
                       "trainer.cuda_warps=4", "trainer.cuda_step_words=2000",
                       "trainer.log_points=1000", *overrides)


@pytest.mark.parametrize(("arch", "loss", "epochs", "cbow_mean"), LEARN)
def test_learns_planted_structure(small_planted, tmp_path, arch, loss, epochs, cbow_mean):
    cfg = small_cfg(small_planted, f"model={arch}", f"model.loss={loss}",
                    f"trainer.epochs={epochs}", f"model.cbow_mean={cbow_mean}")
    metrics = train(cfg, tmp_path)
    vec = torch.load(tmp_path / "vectors.pt", weights_only=True)
    assert metrics["engine"] == "cuda"
    assert neighbours_recovered(vec["vectors"], vec["words"], small_planted) >= 0.75
    assert analogies_recovered(vec["vectors"], vec["words"], small_planted) >= 0.5
    losses = scalars(tmp_path / "tb", "train/loss")
    assert losses[-1] < losses[0]  # the loss summed on the device falls


def test_the_loss_curve_keeps_its_points_when_a_launch_is_the_whole_epoch(small_planted,
                                                                           tmp_path):
    """One launch per epoch (cuda_step_words above the corpus) drew one point per epoch; the
    launch's parts give the curve its trainer.log_points points, spread over the words."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small_cfg(small_planted, "trainer.epochs=2", "trainer.cuda_step_words=1000000",
                    "trainer.log_points=40")
    train(cfg, tmp_path)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    points = acc.Scalars("train/loss")
    xs = [p.step for p in points]
    assert len(points) == pytest.approx(40, abs=2)
    assert xs == sorted(xs) and len(set(xs)) == len(xs) and xs[0] < xs[-1] / 10
    lrs = [p.value for p in acc.Scalars("train/lr")]
    assert lrs == sorted(lrs, reverse=True) and len(set(lrs)) == len(lrs)  # lr at each point


def test_interrupted_and_resumed_equals_uninterrupted(small_planted, tmp_path, monkeypatch):
    """Randomness depends on (seed, epoch, step, warp) only, so a run resumed at a step
    boundary trains what an uninterrupted one would. Exact where atomics land in a fixed
    order: the simulator (blocks run one after another), or one warp on a GPU."""
    over = ("model=cbow", "model.dim=4", "trainer.epochs=2", "trainer.cuda_step_words=400",
            f"trainer.cuda_warps={3 if SIM else 1}")
    train(small_cfg(small_planted, *over), tmp_path / "full")
    full = torch.load(tmp_path / "full" / "vectors.pt", weights_only=True)["vectors"]

    monkeypatch.setattr(train_mod, "StopFlag", lambda: StopAfter(4))
    with pytest.raises(TrainingInterrupted) as stop:
        train(small_cfg(small_planted, *over), tmp_path / "cut")
    assert stop.value.code == 128 + signal.SIGTERM
    monkeypatch.undo()
    train(small_cfg(small_planted, *over, "trainer.resume=latest"), tmp_path / "cut")
    resumed = torch.load(tmp_path / "cut" / "vectors.pt", weights_only=True)["vectors"]
    assert torch.equal(full, resumed)


@pytest.mark.parametrize("subwords", [False, True])
def test_two_ranks_stay_in_sync_and_learn(small_planted, tmp_path, subwords):
    """torchrun: each rank trains its shard with the kernel, the ranks' changes summed (gloo
    on CPU tensors in the simulator; NCCL on GPUs, which needs one GPU per rank); the
    subword model's n-gram rows too, rank 0 writing its fasttext.bin."""
    if not SIM and torch.cuda.device_count() < 2:
        pytest.skip("NCCL needs one GPU per rank: 2 GPUs")
    run_dir = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "w2v.train",
           "data=local", f"data.path={small_planted.path}", "data.min_count=1",
           "model=cbow", "model.dim=12", "model.negative=3", "model.sample=0",
           "model.window=3", "trainer.lr=0.1", "trainer.epochs=4", "trainer.engine=cuda",
           f"trainer.device={DEVICE.type}", "trainer.cuda_warps=2",
           "trainer.cuda_step_words=300", "trainer.progress=false", "trainer.ckpt_every=0",
           "eval.projector_words=0", f"hydra.run.dir={run_dir}"]
    cmd += ["model.minn=2", "model.maxn=4", "model.bucket=200"] if subwords else []
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    assert metrics["engine"] == "cuda"
    vec = torch.load(run_dir / "vectors.pt", weights_only=True)
    assert neighbours_recovered(vec["vectors"], vec["words"], small_planted) >= 0.75
    assert analogies_recovered(vec["vectors"], vec["words"], small_planted) >= 0.5
    assert (run_dir / "fasttext.bin").is_file() == subwords == ("subwords" in vec)


def test_a_missing_numba_cuda_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setattr(engine_mod, "cuda", None)
    monkeypatch.setattr(engine_mod, "simulated", lambda: False)
    monkeypatch.setattr(engine_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(W2VError, match=r"pip install 'w2v\[cuda12\]'"):
        engine_mod._numba_cuda()


def test_the_kernel_compiles_for_gpus_without_one():
    """With numba-cuda (and its NVVM wheel) installed, every kernel variant compiles to PTX
    for sm_80 and sm_90, no GPU needed (scripts/cuda_ptx.py; skipped without numba-cuda),
    and the "coherent" reads load weight rows with ld.global.cg (the script checks)."""
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed (pip install 'w2v[cuda12]')")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "cuda_ptx.py")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert sum(": ok" in line for line in lines) == len(lines) == 64  # 2 cc x 2 dims x 16
    assert sum("coherent: ok" in line for line in lines) == 32
    assert sum(line.startswith("subwords ") for line in lines) == 32


# ----------------------------------------------------------------------------- on a GPU only


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU and numba-cuda")
def test_text8_prefix_reaches_gensims_quality(text8_prefix, eval_dir, tmp_path):
    """5 epochs of skip-gram at the default concurrency: within gensim's seed noise of its
    scores (README: analogy 0.0823, WS353 0.4565, SimLex 0.2196 for gensim 4.4)."""
    cfg = planted_cfg(SimpleNamespace(path=text8_prefix), "trainer=gpu", "data.min_count=5",
                      "model.dim=100", "model.window=5", "model.sample=1e-3",
                      "trainer.epochs=5", f"eval.dir={eval_dir}")
    metrics = train(cfg, tmp_path)
    assert metrics["engine"] == "cuda"
    assert metrics["eval/analogy/questions-words/accuracy"] >= 0.0823 - 0.01
    assert metrics["eval/similarity/wordsim353/spearman"] >= 0.4565 - 0.02
    assert metrics["eval/similarity/simlex999/spearman"] >= 0.2196 - 0.02


@pytest.mark.parametrize(("arch", "epochs"), [("skipgram", 2), ("cbow", 4)])
def test_a_subword_model_learns_planted_structure_and_resumes_exactly(small_planted, tmp_path,
                                                                       monkeypatch, arch,
                                                                       epochs):
    from tests.conftest import StopAfter
    from w2v import train as train_mod
    from w2v.export import load_vectors

    over = (f"model={arch}", f"trainer.epochs={epochs}", "model.minn=2", "model.maxn=4",
            "model.bucket=200", "trainer.cuda_warps=1")
    train(small_cfg(small_planted, *over), tmp_path / "full")
    kv = load_vectors(tmp_path / "full" / "vectors.pt")
    assert neighbours_recovered(kv.vectors, kv.words, small_planted) >= 0.75
    assert analogies_recovered(kv.vectors, kv.words, small_planted) >= 0.5
    monkeypatch.setattr(train_mod, "StopFlag", lambda: StopAfter(3))
    with pytest.raises(TrainingInterrupted):
        train(small_cfg(small_planted, *over), tmp_path / "cut")
    monkeypatch.undo()
    train(small_cfg(small_planted, *over, "trainer.resume=latest"), tmp_path / "cut")
    a = torch.load(tmp_path / "full" / "vectors.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "vectors.pt", weights_only=True)
    assert torch.equal(a["subwords"]["input"], b["subwords"]["input"])
