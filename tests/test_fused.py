"""The fused engine: exact word2vec updates, learning on the planted corpus, determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tests.reference import fused_windows, huffman, reference
from w2v.engines import fused, hogwild
from w2v.engines.rules import InputRows
from w2v.errors import W2VError

# --------------------------------------------------------------------------- helpers


def encode(path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """One document per line; vocabulary by count descending (first occurrence breaks ties)."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    counts = Counter(w for line in lines for w in line)
    words = sorted(counts, key=lambda w: -counts[w])
    index = {w: i for i, w in enumerate(words)}
    ids = np.array([index[w] for line in lines for w in line], np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(line) for line in lines])]).astype(np.int64)
    return words, np.array([counts[w] for w in words], np.int64), ids, offsets


def init_weights(v: int, v_out: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    in_w = ((rng.random((v, dim)) - 0.5) / dim).astype(np.float32)
    return in_w, np.zeros((v_out, dim), np.float32)


# --------------------------------------------------------------------------- exact updates


@pytest.mark.parametrize(
    "arch,loss,cbow_mean",
    [("skipgram", "negative", True), ("skipgram", "hs", True), ("cbow", "negative", True),
     ("cbow", "negative", False), ("cbow", "hs", True)],
)
def test_updates_equal_word2vec_gradient_steps(arch, loss, cbow_mean):
    v, dim, lr, negative, noise_word = 5, 8, 0.5, 2, 3
    doc = [0, 1, 3, 2, 1, 4]  # word 3 is the noise word: its negatives are skipped
    rng = np.random.default_rng(1)
    in_w = rng.normal(0, 0.3, (v, dim)).astype(np.float32)
    out_w = rng.normal(0, 0.3, (v if loss == "negative" else v - 1, dim)).astype(np.float32)
    tree = huffman(np.array([5, 4, 3, 2, 1]))
    noise = fused.build_noise_table(np.eye(v)[noise_word])
    want_in, want_out, want_loss = reference(in_w, out_w, doc, arch, loss, negative, noise_word,
                                             tree, cbow_mean, [lr] * len(doc))
    got_in, got_out = in_w.copy(), out_w.copy()
    stats = fused.train_job(got_in, got_out, np.array(doc, np.int32), np.array([0, len(doc)]),
                            0, 1, np.ones(v, np.float32), arch=arch, loss=loss, window=1,
                            negative=negative, cbow_mean=cbow_mean, noise=noise, huffman=tree,
                            lr_start=lr, lr_end=lr, seed=0)
    # The engine's sigmoid is word2vec's table (error <= 0.003), so compare the changes.
    np.testing.assert_allclose(got_in - in_w, want_in - in_w, rtol=0.03, atol=3e-3)
    np.testing.assert_allclose(got_out - out_w, want_out - out_w, rtol=0.03, atol=3e-3)
    assert np.abs(got_in - in_w).max() > 0.02  # the step was not vanishingly small
    assert stats.loss_sum == pytest.approx(want_loss, rel=0.01)
    pairs = 2 * (len(doc) - 1) if arch == "skipgram" else len(doc)
    assert (stats.pairs, stats.words, stats.effective_words) == (pairs, len(doc), len(doc))


@pytest.mark.parametrize(
    "arch,loss,cbow_mean",
    [("skipgram", "negative", True), ("skipgram", "hs", True), ("cbow", "negative", True),
     ("cbow", "negative", False), ("cbow", "hs", True)],
)
def test_updates_with_several_input_rows_per_word_equal_fasttexts(arch, loss, cbow_mean):
    """fastText's subword model: 5 words over 9 input rows (each word's own row and shared
    'n-gram' rows, one repeated within a word, as fastText keeps repeated n-grams)."""
    v, table, dim, lr, negative, noise_word = 5, 9, 8, 0.5, 2, 3
    rows = [[0, 5, 6], [1, 6], [2, 7, 7, 8], [3], [4, 5, 8]]
    doc = [0, 1, 3, 2, 1, 4]  # skip-gram: word 3 is the noise word as a context too
    rng = np.random.default_rng(1)
    in_w = rng.normal(0, 0.3, (table, dim)).astype(np.float32)
    out_w = rng.normal(0, 0.3, (v if loss == "negative" else v - 1, dim)).astype(np.float32)
    tree = huffman(np.array([5, 4, 3, 2, 1]))
    noise = fused.build_noise_table(np.eye(v)[noise_word])
    want_in, want_out, want_loss = reference(in_w, out_w, doc, arch, loss, negative, noise_word,
                                             tree, cbow_mean, [lr] * len(doc), rows)
    got_in, got_out = in_w.copy(), out_w.copy()
    offsets = np.cumsum([0] + [len(r) for r in rows])
    stats = fused.train_job(got_in, got_out, np.array(doc, np.int32), np.array([0, len(doc)]),
                            0, 1, np.ones(v, np.float32), arch=arch, loss=loss, window=1,
                            negative=negative, cbow_mean=cbow_mean, noise=noise, huffman=tree,
                            input_rows=InputRows(offsets, np.concatenate(rows)),
                            lr_start=lr, lr_end=lr, seed=0)
    np.testing.assert_allclose(got_in - in_w, want_in - in_w, rtol=0.03, atol=3e-3)
    np.testing.assert_allclose(got_out - out_w, want_out - out_w, rtol=0.03, atol=3e-3)
    assert np.abs(got_in[5:] - in_w[5:]).max() > 0.02  # the shared rows moved
    assert stats.loss_sum == pytest.approx(want_loss, rel=0.01)


RANDOM_WINDOW_CASES = [("skipgram", False, True), ("cbow", False, True), ("skipgram", True, True),
                       ("cbow", True, True), ("cbow", True, False)]


@pytest.mark.parametrize(("arch", "subwords", "cbow_mean"), RANDOM_WINDOW_CASES)
def test_random_windows_update_as_the_reference(arch, subwords, cbow_mean):
    """Window 3, each centre's window drawn in 1..3 by the engine's generator (replayed by
    fused_windows), hs (no other draws): the updates equal the reference's over the same
    windows; for subword CBOW, each position's row sum read when it enters the largest
    window and its errors written when it leaves, positions wrapping around the ring of 7."""
    v, dim, lr, window = 6, 8, 0.3, 3
    rows = [[0, 6, 7], [1, 7], [2, 8, 8, 9], [3], [4, 6, 10], [5, 9, 10]] if subwords else None
    doc = [0, 1, 3, 2, 1, 4, 5, 0, 2, 3, 5, 1, 4, 0]
    # Weights small enough that no dot product leaves word2vec's sigmoid table (|f| < 6,
    # where the engines skip the update and autograd would not), even summed over the ~18
    # rows of a CBOW window: differences in the order of updates still show above rounding.
    rng = np.random.default_rng(2)
    in_w = rng.normal(0, 0.1, (11 if subwords else v, dim)).astype(np.float32)
    out_w = rng.normal(0, 0.1, (v - 1, dim)).astype(np.float32)
    tree = huffman(np.array([6, 5, 4, 3, 2, 1]))
    windows = fused_windows(seed=4, epoch=0, doc=0, n=len(doc), window=window)
    assert len(set(windows)) == 3  # windows of 1, 2 and 3 all occur
    want_in, want_out, want_loss = reference(in_w, out_w, doc, arch, "hs", 0, 0, tree,
                                             cbow_mean, [lr] * len(doc), rows, window, windows)
    got_in, got_out = in_w.copy(), out_w.copy()
    input_rows = InputRows(np.cumsum([0] + [len(r) for r in rows]), np.concatenate(rows)) \
        if subwords else None
    stats = fused.train_job(got_in, got_out, np.array(doc, np.int32), np.array([0, len(doc)]),
                            0, 1, np.ones(v, np.float32), arch=arch, loss="hs", window=window,
                            cbow_mean=cbow_mean, huffman=tree, input_rows=input_rows,
                            lr_start=lr, lr_end=lr, seed=4)
    np.testing.assert_allclose(got_in - in_w, want_in - in_w, rtol=0.03, atol=3e-3)
    np.testing.assert_allclose(got_out - out_w, want_out - out_w, rtol=0.03, atol=3e-3)
    assert np.abs(got_in - in_w).max() > 0.02
    assert stats.loss_sum == pytest.approx(want_loss, rel=0.01)


def test_input_rows_that_do_not_fit_the_table_are_refused():
    in_w, out_w = np.zeros((4, 3), np.float32), np.zeros((3, 3), np.float32)
    noise = fused.build_noise_table(np.ones(3))
    bad = InputRows(np.array([0, 1, 2, 3]), np.array([0, 1, 4], np.int32))  # row 4 of 4
    with pytest.raises(W2VError, match="input rows do not fit"):
        fused.prepare(in_w, out_w, np.zeros(2, np.int32), np.array([0, 2]), np.ones(3),
                      arch="skipgram", loss="negative", window=1, noise=noise, input_rows=bad)


def test_learning_rate_decays_linearly_over_the_job():
    """Centre i of an n-token job trains with lr_start + (lr_end - lr_start) * i / n."""
    v, dim, doc = 4, 6, [0, 1, 2, 3, 1, 0]
    rng = np.random.default_rng(2)
    in_w = rng.normal(0, 0.3, (v, dim)).astype(np.float32)
    out_w = rng.normal(0, 0.3, (v - 1, dim)).astype(np.float32)
    tree = huffman(np.array([4, 3, 2, 1]))
    lrs = [0.8 + (0.1 - 0.8) * i / len(doc) for i in range(len(doc))]
    want_in, want_out, _ = reference(in_w, out_w, doc, "skipgram", "hs", 0, 0, tree, True, lrs)
    got_in, got_out = in_w.copy(), out_w.copy()
    fused.train_job(got_in, got_out, np.array(doc, np.int32), np.array([0, len(doc)]), 0, 1,
                    np.ones(v, np.float32), arch="skipgram", loss="hs", window=1, huffman=tree,
                    lr_start=0.8, lr_end=0.1, seed=0)
    np.testing.assert_allclose(got_in - in_w, want_in - in_w, rtol=0.03, atol=3e-3)
    np.testing.assert_allclose(got_out - out_w, want_out - out_w, rtol=0.03, atol=3e-3)


# --------------------------------------------------------------------------- learning


def cosine_top(vectors: np.ndarray, query: np.ndarray, exclude: set[int], k: int) -> list[int]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ (query / np.linalg.norm(query))
    order = [int(i) for i in np.argsort(-sims) if int(i) not in exclude]
    return order[:k]


def train_planted(planted, arch, loss, threads=1, dim=24, epochs=10, lr=0.025):
    """word2vec's schedule on the planted corpus (no subsampling: its vocabulary is tiny).
    Returns (input vectors (V, dim), word -> id, mean loss per example of each epoch)."""
    words, counts, ids, offsets = encode(planted.path)
    v = len(words)
    in_w, out_w = init_weights(v, v if loss == "negative" else v - 1, dim)
    noise, tree = fused.build_noise_table(counts**0.75), huffman(counts)
    plan = fused.plan_jobs(offsets, 5000)
    total, done, losses = offsets[-1] * epochs, 0, []
    for epoch in range(epochs):
        epoch_stats = fused.JobStats(0.0, 0, 0, 0)
        for a, b in zip(plan[:-1], plan[1:]):
            n = offsets[b] - offsets[a]
            epoch_stats += fused.train_job(
                in_w, out_w, ids, offsets, int(a), int(b), np.ones(v, np.float32), arch=arch,
                loss=loss, window=5, negative=5, noise=noise, huffman=tree,
                lr_start=lr * (1 - done / total), lr_end=lr * (1 - (done + n) / total), seed=1,
                epoch=epoch, threads=threads)
            done += n
        assert epoch_stats.words == offsets[-1]
        losses.append(epoch_stats.loss_sum / epoch_stats.pairs)
    return in_w, {w: i for i, w in enumerate(words)}, losses


def planted_scores(planted, vectors, index) -> tuple[int, float]:
    """(entities whose other form is among their 3 nearest planted words, 3CosAdd accuracy)."""
    planted_ids = [index[planted.word(e, f)] for e in range(planted.entities)
                   for f in range(planted.forms)]
    sub = vectors[planted_ids]
    neighbours = 0
    for e in range(planted.entities):
        q, other = (planted_ids.index(index[planted.word(e, f)]) for f in (0, 1))
        neighbours += other in cosine_top(sub, sub[q], {q}, 3)
    hits = 0
    analogies = planted.analogies()
    for a, b, c, d in analogies:
        ia, ib, ic = index[a], index[b], index[c]
        top = cosine_top(vectors, vectors[ib] - vectors[ia] + vectors[ic], {ia, ib, ic}, 1)
        hits += top[0] == index[d]
    return neighbours, hits / len(analogies)


@pytest.mark.parametrize(
    "arch,loss,threads",
    [("skipgram", "negative", 1), ("skipgram", "hs", 1), ("cbow", "negative", 2),
     ("cbow", "hs", 1)],
)
def test_learns_planted_structure(planted, arch, loss, threads):
    """Thresholds are what gensim 4 reaches with the same settings (see the parity test):
    negative sampling recovers the analogies, hierarchical softmax (whose per-node log-odds are
    not additive in entity + form) well above chance (1/70); skip-gram also puts each entity's
    other form among its 3 nearest planted words, CBOW puts the same form there instead."""
    vectors, index, losses = train_planted(planted, arch, loss, threads)
    neighbours, accuracy = planted_scores(planted, vectors, index)
    assert losses[-1] < (0.9 if loss == "negative" else 0.99) * losses[0]
    assert accuracy >= (0.9 if loss == "negative" else 0.1)
    if arch == "skipgram":
        assert neighbours >= planted.entities - (0 if loss == "negative" else 2)


@pytest.mark.slow
@pytest.mark.parametrize("arch,loss", [("skipgram", "negative"), ("skipgram", "hs"),
                                       ("cbow", "negative"), ("cbow", "hs")])
def test_quality_matches_gensim_on_planted(planted, arch, loss):
    gensim = pytest.importorskip("gensim")
    sentences = [line.split() for line in planted.path.read_text().splitlines()]
    peer = gensim.models.Word2Vec(
        sentences, vector_size=24, window=5, sg=int(arch == "skipgram"), hs=int(loss == "hs"),
        negative=5 if loss == "negative" else 0, sample=0, min_count=1, epochs=10, alpha=0.025,
        min_alpha=0.0, workers=1, seed=1)
    want = planted_scores(planted, peer.wv.vectors, peer.wv.key_to_index)
    vectors, index, _ = train_planted(planted, arch, loss)
    got = planted_scores(planted, vectors, index)
    assert got[0] >= want[0] - 1
    assert got[1] >= want[1] - 0.1


# --------------------------------------------------------------------------- determinism


def small_run(planted, jobs, lr=0.025, seed=5, epoch=0, weights=None):
    words, counts, ids, offsets = encode(planted.path)
    in_w, out_w = weights if weights is not None else init_weights(len(words), len(words), 16)
    keep = np.minimum((np.sqrt(counts / (1e-2 * counts.sum())) + 1) * 1e-2 * counts.sum()
                      / counts, 1).astype(np.float32)  # some subsampling, so it is exercised
    noise = fused.build_noise_table(counts**0.75)
    for a, b in jobs:
        fused.train_job(in_w, out_w, ids, offsets, a, b, keep, arch="skipgram", loss="negative",
                        window=5, negative=5, noise=noise, lr_start=lr, lr_end=lr, seed=seed,
                        epoch=epoch, threads=1)
    return in_w, out_w


def test_same_seed_same_weights(planted):
    a = small_run(planted, [(0, 1000)])
    b = small_run(planted, [(0, 1000)])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = small_run(planted, [(0, 1000)], seed=6)
    d = small_run(planted, [(0, 1000)], epoch=1)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], d[0])


def test_resume_at_job_boundary_equals_one_run(planted):
    whole = small_run(planted, [(0, 1000)])
    back_to_back = small_run(planted, [(0, 400), (400, 1000)])
    first = small_run(planted, [(0, 400)])
    saved = (first[0].copy(), first[1].copy())  # as a checkpoint would
    resumed = small_run(planted, [(400, 1000)], weights=saved)
    for got in (back_to_back, resumed):
        np.testing.assert_array_equal(got[0], whole[0])
        np.testing.assert_array_equal(got[1], whole[1])


def test_updates_torch_tensors_in_place(planted):
    words, counts, ids, offsets = encode(planted.path)
    emb = torch.nn.Embedding(len(words), 8)
    out = torch.nn.Linear(8, len(words), bias=False)
    before = emb.weight.detach().clone()
    fused.train_job(emb.weight.data.numpy(), out.weight.data.numpy(), torch.from_numpy(ids),
                    torch.from_numpy(offsets), 0, 50, np.ones(len(words), np.float32),
                    arch="cbow", loss="negative", window=3,
                    noise=fused.build_noise_table(counts**0.75), lr_start=0.1, lr_end=0.1,
                    seed=0)
    assert not torch.equal(before, emb.weight.detach())


# --------------------------------------------------------------------------- tables and plans


def test_noise_table_reproduces_the_distribution():
    p = np.random.default_rng(0).random(50) ** 3
    table = fused.build_noise_table(p)
    keep = table.threshold / 2.0**32
    got = keep.copy()
    np.add.at(got, table.alias, 1 - keep)
    np.testing.assert_allclose(got / len(p), p / p.sum(), atol=1e-6)


def test_plan_jobs_covers_every_document_once():
    offsets = np.concatenate([[0], np.cumsum([3, 40, 2, 2, 2, 30, 1, 5])])
    plan = fused.plan_jobs(offsets, 10)
    assert plan[0] == 0 and plan[-1] == len(offsets) - 1
    assert np.all(np.diff(plan) > 0)
    sizes = offsets[plan[1:]] - offsets[plan[:-1]]
    assert sizes.sum() == offsets[-1] and len(plan) > 3
    np.testing.assert_array_equal(fused.plan_jobs(np.array([0]), 10), [0])


def test_unsupported_settings_are_user_errors():
    w = np.zeros((3, 2), np.float32)
    args = (w, w.copy(), np.zeros(2, np.int32), np.array([0, 2]), 0, 1, np.ones(3, np.float32))
    with pytest.raises(W2VError, match="softmax"):
        fused.train_job(*args, arch="skipgram", loss="softmax", window=2, lr_start=0.1,
                        lr_end=0.1, seed=0)
    with pytest.raises(W2VError, match="noise table"):
        fused.train_job(*args, arch="skipgram", loss="negative", window=2, lr_start=0.1,
                        lr_end=0.1, seed=0)
    with pytest.raises(W2VError, match="token ids"):
        fused.train_job(w, w.copy(), np.array([0, 3], np.int32), *args[3:], arch="cbow",
                        loss="negative", window=2, noise=fused.build_noise_table(np.ones(3)),
                        lr_start=0.1, lr_end=0.1, seed=0)
    with pytest.raises(W2VError, match="Huffman"):
        fused.train_job(*args, arch="skipgram", loss="hs", window=2, lr_start=0.1, lr_end=0.1,
                        seed=0, huffman=huffman(np.array([5, 4, 3, 2])))
    with pytest.raises(W2VError, match="float32"):
        fused.train_job(w.astype(np.float64), *args[1:], arch="cbow", loss="negative", window=2,
                        noise=fused.build_noise_table(np.ones(3)), lr_start=0.1, lr_end=0.1,
                        seed=0)


def test_warmup_compiles_every_variant():
    assert fused.warmup() >= 0.0


# --------------------------------------------------------------------------- threads and the engine


def planted_engine(planted, tmp_path, *overrides):
    """A FusedEngine on the planted corpus (no subsampling), as train() builds it."""
    from tests.conftest import planted_cfg
    from w2v.corpus import build_corpus
    from w2v.model import build_model

    cfg = planted_cfg(planted, f"data.cache_dir={tmp_path / 'cache'}", *overrides)
    corpus = build_corpus(cfg.data, progress=False)
    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg.model, corpus.vocab)
    return fused.FusedEngine(model, corpus, cfg), model


def run_epoch(engine, epoch: int = 0, pause_every: int = 0) -> list:
    """The loop's calls for one epoch (pausing after every pause_every-th step); the Steps."""
    steps = engine.begin_epoch(epoch)
    out = []
    for k in range(steps):
        out.append(engine.step(epoch, k, steps, 0.0, 0.0))
        if pause_every and (k + 1) % pause_every == 0:
            engine.pause()
    engine.pause()
    return out


@pytest.mark.parametrize("threads", [2, 4])
def test_threads_train_every_document_once_and_report_each_job(planted, tmp_path, threads):
    """However the threads share the documents, each is trained once per epoch: without
    subsampling the examples per job (a function of each document's own random windows) equal
    a single thread's, job by job, and nothing is left running after the epoch."""
    one, _ = planted_engine(planted, tmp_path, "trainer.threads=1", "trainer.chunk_words=2000")
    many, _ = planted_engine(planted, tmp_path, f"trainer.threads={threads}",
                             "trainer.chunk_words=2000")
    a, b = run_epoch(one), run_epoch(many, pause_every=3)
    assert len(a) == len(b) > 10
    assert [s.examples for s in a] == [s.examples for s in b]
    assert all(s.examples > 0 and s.loss_sum > 0 for s in b)
    assert not many.threads.running and many.next_doc == many.task.num_docs


def test_threads_run_on_past_a_step_until_paused(planted, tmp_path):
    """A step returns once its own job is done, without stopping the threads; after a pause
    every document below next_doc is done and none above it started."""
    engine, _ = planted_engine(planted, tmp_path, "trainer.threads=2", "trainer.chunk_words=500",
                               "trainer.epochs=1")
    steps = engine.begin_epoch(0)
    engine.step(0, 0, steps, 0.0, 0.0)
    assert engine.threads.done_below() >= engine.bounds[1]
    engine.pause()
    assert not engine.threads.running
    done = engine.next_doc
    assert engine.bounds[1] <= done <= engine.task.num_docs
    kept = engine.threads.job_counts[1::2].sum()  # no subsampling: every token of every doc
    assert kept == engine.task.doc_offsets[done]
    for k in range(1, steps):
        engine.step(0, k, steps, 0.0, 0.0)
    engine.pause()
    assert engine.threads.job_counts[1::2].sum() == engine.task.doc_offsets[-1]


def test_one_thread_is_exact_whatever_the_pauses(planted, tmp_path):
    """With one thread the weights do not depend on where steps end or the loop pauses (the
    learning rate follows the token position, randomness the document), so a checkpoint at any
    pause resumes to the same weights."""
    plain, m1 = planted_engine(planted, tmp_path, "trainer.threads=1", "trainer.chunk_words=700")
    paused, m2 = planted_engine(planted, tmp_path, "trainer.threads=1",
                                "trainer.chunk_words=700")
    for epoch in range(2):
        run_epoch(plain, epoch)
        run_epoch(paused, epoch, pause_every=1)
    assert torch.equal(m1.input.weight, m2.input.weight)
    assert torch.equal(m1.output.weight, m2.output.weight)


def test_engine_state_resumes_at_the_next_document(planted, tmp_path):
    """A checkpoint taken mid-epoch (threads paused past the loop's step) carries the next
    document and the jobs' totals; an engine loaded from it finishes the epoch to the same
    weights and the same per-job reports as one that never stopped."""
    ref, m_ref = planted_engine(planted, tmp_path, "trainer.threads=1", "trainer.chunk_words=700")
    ref_steps = run_epoch(ref)

    cut, m_cut = planted_engine(planted, tmp_path, "trainer.threads=1", "trainer.chunk_words=700")
    steps = cut.begin_epoch(0)
    for k in range(3):
        cut.step(0, k, steps, 0.0, 0.0)
    cut.pause()
    state = cut.state_dict()
    assert state["next_doc"] >= cut.bounds[3]
    weights = {k: v.clone() for k, v in m_cut.state_dict().items()}

    resumed, m_res = planted_engine(planted, tmp_path, "trainer.threads=1",
                                    "trainer.chunk_words=700")
    m_res.load_state_dict(weights)
    resumed.load_state_dict(state)
    steps = resumed.begin_epoch(0)
    tail = [resumed.step(0, k, steps, 0.0, 0.0) for k in range(3, steps)]
    resumed.pause()
    assert torch.equal(m_res.input.weight, m_ref.input.weight)
    assert torch.equal(m_res.output.weight, m_ref.output.weight)
    assert [(s.loss_sum, s.examples) for s in tail] == [(s.loss_sum, s.examples)
                                                        for s in ref_steps[3:]]


def test_engine_state_refuses_another_plan_or_engine(planted, tmp_path):
    engine, _ = planted_engine(planted, tmp_path, "trainer.chunk_words=700")
    other, _ = planted_engine(planted, tmp_path, "trainer.chunk_words=900")
    with pytest.raises(W2VError, match="chunk_words=700"):
        other.load_state_dict(engine.state_dict())
    with pytest.raises(W2VError, match="another engine"):
        engine.load_state_dict({"state": {}, "param_groups": []})  # an optimizer's
    engine.load_state_dict(None)  # a checkpoint from before the engine kept state
    assert engine.next_doc == 0


def test_warmup_says_whether_it_compiled_or_loaded(caplog, monkeypatch):
    import logging

    monkeypatch.setattr(fused, "_ready", False)
    with caplog.at_level(logging.INFO, logger="w2v.engines.fused"):
        fused.warmup()
    assert any(r.getMessage().startswith("fused engine ") and
               ("loaded from numba's cache" in r.getMessage() or "compiled" in r.getMessage())
               for r in caplog.records)
    assert fused.warmup() == 0.0  # once per process


def test_a_fused_checkpoint_is_refused_by_the_autograd_engine(planted, tmp_path):
    from tests.conftest import planted_cfg
    from w2v.train import train

    train(planted_cfg(planted, "trainer.engine=fused", "trainer.epochs=1"), tmp_path)
    # The resume compares configs first: the engine is named before any state is loaded.
    with pytest.raises(W2VError, match=r"trainer.engine='autograd' \(the run has 'fused'\)"):
        train(planted_cfg(planted, "trainer.engine=autograd", "trainer.epochs=2",
                          "trainer.resume=latest"), tmp_path)


def test_an_error_in_a_thread_reaches_the_caller_and_stops_the_others():
    calls = []

    def failing(*args):
        calls.append(args[-1])
        if args[-1] == np.int64(1):
            raise MemoryError("thread 1")
        while threads.control[hogwild.STOP] == 0:  # the others run until told to stop
            pass

    threads = hogwild.Threads(3, jobs=1, work=failing, bounds=np.array([0, 1]))
    threads.start((), 0, 1)
    with pytest.raises(MemoryError, match="thread 1"):
        threads.wait(1)
    assert not threads.running and sorted(calls) == [0, 1, 2]
