"""Vocab: selection and order, persistence, and the derived tables against word2vec.c."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from w2v.errors import W2VError
from w2v.tokenizer import Tokenizer
from w2v.vocab import Vocab, build_huffman

# --- selection and order ----------------------------------------------------------------------

corpora = st.lists(st.sampled_from([f"w{i}" for i in range(30)]), min_size=1, max_size=300)


def first_occurrence_counts(tokens: list[str]) -> tuple[list[str], np.ndarray]:
    words = list(dict.fromkeys(tokens))
    return words, np.array([tokens.count(w) for w in words], dtype=np.int64)


@settings(max_examples=200, deadline=None)
@given(tokens=corpora, min_count=st.integers(1, 6),
       max_vocab=st.one_of(st.none(), st.integers(1, 40)))
def test_from_counts_properties(tokens, min_count, max_vocab):
    words, counts = first_occurrence_counts(tokens)
    v = Vocab.from_counts(words, counts, min_count, max_vocab)
    kept = [w for w, c in zip(words, counts, strict=True) if c >= min_count]
    # min_count and max_vocab respected; the most frequent survive max_vocab.
    assert len(v) == min(len(kept), max_vocab or len(kept))
    assert all(c >= min_count for c in v.counts)
    dropped = set(kept) - set(v.words)
    assert all(tokens.count(w) <= v.counts.min() for w in dropped)
    # Counts are exact and sum to the retained tokens.
    assert [tokens.count(w) for w in v.words] == v.counts.tolist()
    assert v.total == sum(1 for t in tokens if t in v)
    # Order: count descending, ties by first occurrence.
    keys = [(-c, tokens.index(w)) for w, c in zip(v.words, v.counts, strict=True)]
    assert keys == sorted(keys)
    assert all(v[w] == i for i, w in enumerate(v.words))


@settings(max_examples=50, deadline=None)
@given(tokens=corpora)
def test_order_is_deterministic(tokens):
    words, counts = first_occurrence_counts(tokens)
    a = Vocab.from_counts(words, counts, 1)
    b = Vocab.from_counts(list(words), counts.copy(), 1)
    assert a.words == b.words


def test_save_load_round_trip_is_json(tmp_path):
    v = Vocab.from_counts(["b", "a", "ü"], [3, 5, 3], 1, None, Tokenizer(False, r"\w+"))
    v.save(tmp_path / "vocab.json")
    d = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert d["words"] == ["a", "b", "ü"] and d["tokenizer"] == {"lowercase": False,
                                                                "pattern": r"\w+"}
    w = Vocab.load(tmp_path / "vocab.json")
    assert w.words == v.words and w.counts.tolist() == v.counts.tolist()
    assert w.tokenizer == v.tokenizer and w.min_count == 1 and "ü" in w


def test_load_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(W2VError, match="not a w2v vocabulary"):
        Vocab.load(tmp_path / "x.json")


# --- subsampling and noise ----------------------------------------------------------------------


def test_keep_probs_is_word2vec_formula():
    counts = np.array([1000, 100, 10, 1])
    v = Vocab([f"w{i}" for i in range(4)], counts)
    sample = 1e-2
    t = sample * counts.sum()
    expected = np.minimum((np.sqrt(counts / t) + 1) * t / counts, 1.0)
    np.testing.assert_allclose(v.keep_probs(sample), expected, rtol=1e-6)
    assert v.keep_probs(sample).dtype == np.float32
    assert v.keep_probs(sample)[0] < 1.0 and v.keep_probs(sample)[-1] == 1.0
    assert (v.keep_probs(0) == 1).all()


def test_keep_probs_matches_gensim():
    gensim = pytest.importorskip("gensim.models.word2vec")
    rng = np.random.default_rng(0)
    sentences = [[f"w{int(x)}" for x in rng.zipf(1.3, 50) if x < 500] for _ in range(200)]
    model = gensim.Word2Vec(min_count=1, sample=1e-3)
    model.build_vocab(sentences)
    words = list(model.wv.index_to_key)
    counts = np.array([model.wv.get_vecattr(w, "count") for w in words])
    v = Vocab(words, counts)
    ours = v.keep_probs(1e-3)
    theirs = np.array([model.wv.get_vecattr(w, "sample_int") for w in words]) / 2**32
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_noise_probs():
    v = Vocab(["a", "b", "c"], [8, 1, 0])
    p = v.noise_probs(0.75)
    np.testing.assert_allclose(p, np.array([8**0.75, 1, 0]) / (8**0.75 + 1))
    assert p.dtype == np.float64 and abs(p.sum() - 1) < 1e-12
    np.testing.assert_allclose(v.noise_probs(0.0), [1 / 3] * 3)


# --- Huffman ------------------------------------------------------------------------------------


def word2vec_c_tree(counts: list[int]) -> tuple[list[list[int]], list[list[int]]]:
    """A line-by-line port of word2vec.c's CreateBinaryTree (the reference)."""
    v = len(counts)
    count = list(counts) + [10**15] * v
    binary = [0] * (2 * v)
    parent = [0] * (2 * v)
    pos1, pos2 = v - 1, v
    for a in range(v - 1):
        if pos1 >= 0 and count[pos1] < count[pos2]:
            min1, pos1 = pos1, pos1 - 1
        else:
            min1, pos2 = pos2, pos2 + 1
        if pos1 >= 0 and count[pos1] < count[pos2]:
            min2, pos1 = pos1, pos1 - 1
        else:
            min2, pos2 = pos2, pos2 + 1
        count[v + a] = count[min1] + count[min2]
        parent[min1] = parent[min2] = v + a
        binary[min2] = 1
    codes, points = [], []
    for a in range(v):
        code, point = [], []
        b = a
        while True:
            code.append(binary[b])
            point.append(b)
            b = parent[b]
            if b == 2 * v - 2:
                break
        n = len(code)
        full_point = [0] * (n + 1)
        full_point[0] = v - 2
        rev_code = [0] * n
        for i in range(n):
            rev_code[n - i - 1] = code[i]
            full_point[n - i] = point[i] - v
        codes.append(rev_code)
        points.append(full_point[:n])
    return codes, points


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=2, max_size=60))
def test_huffman_matches_word2vec_c(raw_counts):
    counts = sorted(raw_counts, reverse=True)
    h = build_huffman(np.array(counts, dtype=np.int64))
    codes, points = word2vec_c_tree(counts)
    v = len(counts)
    assert h.codes.dtype == np.int8 and h.points.dtype == np.int32
    for w in range(v):
        n = h.lengths[w]
        assert h.codes[w, :n].tolist() == codes[w]
        assert h.points[w, :n].tolist() == points[w]
        assert (h.codes[w, n:] == 0).all() and (h.points[w, n:] == 0).all()
    assert (h.points[:, 0] == v - 2).all()  # the root
    assert h.points.max() <= v - 2 and h.points.min() >= 0


def test_huffman_prefix_free_and_short_for_frequent():
    v = Vocab([f"w{i}" for i in range(6)], [50, 20, 10, 5, 2, 1])
    h = v.huffman()
    paths = {tuple(h.codes[w, : h.lengths[w]]) for w in range(6)}
    assert len(paths) == 6
    for a in paths:
        for b in paths:
            assert a == b or a != b[: len(a)]
    assert h.lengths[0] <= h.lengths[-1]


def test_huffman_degenerate_sizes():
    assert build_huffman(np.array([3])).codes.shape == (1, 0)
    h = build_huffman(np.array([3, 1]))
    assert h.codes.tolist() == [[1], [0]] and h.points.tolist() == [[0], [0]]
