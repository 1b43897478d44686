"""Properties (hypothesis) across stages, extending tests/test_vocab.py and tests/test_batches.py:

- the whole data path (text file -> datasets -> bounded chunks -> vocabulary -> index tensors)
  keeps exact counts, a deterministic order, min_count/max_vocab, and pseudo-documents;
- batches stay inside the window and the document after subsampling, for skip-gram and CBOW;
- subsampling keeps each word with word2vec's formula probability (statistical, fixed seed);
- export -> load -> export is byte-identical and every unicode word survives every format.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from w2v import tokens as tokens_mod
from w2v.batches import Batches
from w2v.config import DataConfig
from w2v.corpus import build_corpus
from w2v.export import load_embedding, load_vectors, save_vectors, write_word2vec
from w2v.tokenizer import Tokenizer
from w2v.vocab import Vocab

# ---- the data path: text -> vocabulary and index tensors -------------------------------------

# Few distinct words (so counts tie and min_count bites), case variants (lowercasing merges
# them) and non-ASCII letters (the tokenizer's unicode path).
WORDS = ["the", "The", "THE", "cat", "Cat", "été", "ÉTÉ", "日本", "naïve", "x", "ß", "İ"]
lines_st = st.lists(st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join),
                    min_size=1, max_size=12)


def expected_docs(lines: list[str], tok: Tokenizer, keep: set[str], m: int) -> list[list[str]]:
    """Each line cut every m raw words, out-of-vocabulary words dropped, empty docs dropped."""
    docs = []
    for line in lines:
        raw = tok(line)
        for start in range(0, len(raw), m):
            doc = [w for w in raw[start:start + m] if w in keep]
            if doc:
                docs.append(doc)
    return docs


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=lines_st, min_count=st.integers(1, 4),
       max_vocab=st.one_of(st.none(), st.integers(1, 6)), lowercase=st.booleans(),
       max_doc_words=st.integers(2, 7), chunk_bytes=st.sampled_from([8, 32, 1 << 20]))
def test_corpus_counts_order_limits_and_documents(lines, min_count, max_vocab, lowercase,
                                                  max_doc_words, chunk_bytes):
    tok = Tokenizer(lowercase)
    tokens = [w for line in lines for w in tok(line)]
    counts = Counter(tokens)
    # (a corpus with no word at min_count is refused: tests/test_bad_input.py)
    assume(tokens and max(counts.values()) >= min_count)
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(tokens_mod, "CHUNK_BYTES",
                                                                 chunk_bytes):
        path = Path(tmp) / "corpus.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cfg = DataConfig(path=str(path), min_count=min_count, max_vocab=max_vocab,
                         lowercase=lowercase, max_doc_words=max_doc_words,
                         cache_dir=str(Path(tmp) / "cache"))
        corpus = build_corpus(cfg, progress=False)
        again = build_corpus(DataConfig(**{**cfg.__dict__, "cache_dir": str(Path(tmp) / "b")}),
                             progress=False)
        v = corpus.vocab
        ids, offsets = corpus.ids.numpy(), corpus.doc_offsets.numpy()
        # counts are exact and sum to the retained tokens
        assert v.counts.tolist() == [counts[w] for w in v.words]
        assert v.total == len(ids) == sum(1 for t in tokens if t in v)
        assert corpus.raw_tokens == len(tokens)
        # min_count, max_vocab; what max_vocab dropped is no more frequent than what it kept
        assert all(c >= min_count for c in v.counts)
        eligible = [w for w in counts if counts[w] >= min_count]
        assert len(v) == min(len(eligible), max_vocab or len(eligible))
        assert all(counts[w] <= v.counts.min() for w in set(eligible) - set(v.words))
        # order: count descending, ties by first occurrence; the same on a rebuild
        first = {w: tokens.index(w) for w in v.words}
        keys = [(-counts[w], first[w]) for w in v.words]
        assert keys == sorted(keys)
        assert again.vocab.words == v.words and torch.equal(again.ids, corpus.ids)
        # the documents are the lines cut every max_doc_words raw words, minus OOV
        docs = [[v.words[i] for i in ids[a:b]] for a, b in zip(offsets[:-1], offsets[1:])]
        assert docs == expected_docs(lines, tok, set(v.words), max_doc_words)


# ---- batches: windows and documents after subsampling ----------------------------------------


def _positions(view_ids: torch.Tensor) -> dict[int, int]:
    return {int(t): i for i, t in enumerate(view_ids.tolist())}


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 15), min_size=1, max_size=6),
       window=st.integers(1, 4), seed=st.integers(0, 10_000), arch=st.sampled_from(
           ["skipgram", "cbow"]), keep=st.floats(0.2, 1.0), batch_size=st.integers(1, 20))
def test_every_pair_is_within_the_window_of_the_subsampled_document(lengths, window, seed,
                                                                     arch, keep, batch_size):
    # token ids encode (document, position), so each pair can be checked against the view
    flat = [d * 100 + p for d, n in enumerate(lengths) for p in range(n)]
    vocab = max(flat) + 1
    keep_prob = np.full(vocab, keep, dtype=np.float32)
    b = Batches(torch.tensor(flat, dtype=torch.int32), torch.tensor(np.cumsum([0, *lengths])),
                keep_prob, np.full(vocab, 1.0 / vocab), window=window, negative=2, arch=arch,
                batch_size=batch_size, seed=seed)
    for epoch in range(2):
        view = b.view(epoch)
        pos = _positions(view.ids)  # position of each kept token in the kept stream
        centres = 0
        for step in range(b.steps(view)):
            batch = b.batch(view, epoch, step)
            if arch == "skipgram":
                pairs = zip(batch.inputs.tolist(), batch.targets.tolist())
            else:
                pairs = [(c, t) for row, mask, t in zip(batch.inputs.tolist(),
                                                        batch.mask.tolist(),
                                                        batch.targets.tolist())
                         for c, m in zip(row, mask) if m]
                assert all(any(m) for m in batch.mask.tolist())  # no empty CBOW context
            for ctx, centre in pairs:
                assert ctx // 100 == centre // 100  # never across a document
                assert 0 < abs(pos[ctx] - pos[centre]) <= window  # within the window
            centres += len(set(batch.targets.tolist()))
        assert centres <= len(pos)


def test_subsampling_keeps_each_word_with_its_formula_probability():
    """word2vec's keep probability, written out here, against what Batches actually keeps."""
    rng = np.random.default_rng(0)
    counts = np.array([20_000, 8_000, 3_000, 1_000, 300, 50, 10], dtype=np.int64)
    vocab = Vocab([f"w{i}" for i in range(len(counts))], counts)
    sample = 1e-2
    t = sample * counts.sum()
    formula = np.minimum((np.sqrt(counts / t) + 1) * t / counts, 1.0)
    assert np.allclose(vocab.keep_probs(sample), formula, rtol=1e-6)
    ids = rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int32)
    b = Batches(torch.from_numpy(ids), torch.tensor([0, len(ids)]), vocab.keep_probs(sample),
                None, window=2, negative=0, arch="skipgram", batch_size=1024, seed=7)
    epochs = 20
    kept = sum(np.bincount(b.view(e).ids.numpy(), minlength=len(counts)) for e in range(epochs))
    n = counts * epochs
    rate = kept / n
    sigma = np.sqrt(formula * (1 - formula) / n) + 1e-12
    assert np.all(np.abs(rate - formula) <= 4 * sigma + 1e-9), (rate, formula)
    assert formula[0] < 0.5 and formula[-1] == 1.0  # the test spans kept and thinned words


# ---- round trips: vectors.pt, word2vec text and binary ---------------------------------------

# Any unicode word a tokenizer can produce: no whitespace (it separates tokens), no surrogates
# (not encodable in UTF-8).
word_st = st.text(st.characters(exclude_categories=["Cs", "Zs", "Zl", "Zp", "Cc"]),
                  min_size=1, max_size=8).filter(lambda w: not any(c.isspace() for c in w))


@st.composite
def tables(draw, words=word_st):
    ws = draw(st.lists(words, min_size=1, max_size=12, unique=True))
    dim = draw(st.integers(1, 6))
    values = draw(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False),
                           min_size=len(ws) * dim, max_size=len(ws) * dim))
    return ws, torch.tensor(values, dtype=torch.float32).reshape(len(ws), dim)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)  # compares -0.0 and 0.0 apart


@settings(max_examples=60, deadline=None)
@given(table=tables(), suffix=st.sampled_from([".txt", ".bin"]))
def test_word2vec_export_load_export_is_byte_identical(table, suffix):
    words, vec = table
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / f"a{suffix}", Path(tmp) / f"b{suffix}"
        write_word2vec(a, words, vec, binary=suffix == ".bin")
        kv = load_vectors(a)
        assert kv.words == words  # every unicode word survives
        assert torch.equal(_bits(kv.vectors), _bits(vec))  # every float32, bit for bit
        write_word2vec(b, kv.words, kv.vectors, binary=suffix == ".bin")
        assert a.read_bytes() == b.read_bytes()
        emb, index = load_embedding(a)
        assert [index[w] for w in words] == list(range(len(words)))
        assert torch.equal(_bits(emb.weight.detach()), _bits(vec))


@settings(max_examples=40, deadline=None)
@given(table=tables(words=st.text(st.characters(exclude_categories=["Cs"]), min_size=1,
                                  max_size=8)), counts_seed=st.integers(0, 100))
def test_vectors_pt_export_load_export_is_byte_identical(table, counts_seed):
    words, vec = table
    counts = np.random.default_rng(counts_seed).integers(1, 1000, len(words))
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.pt", Path(tmp) / "b.pt"
        save_vectors(a, words, counts, vec, Tokenizer(False, r"\S+"))
        kv = load_vectors(a)
        assert kv.words == words  # vectors.pt keeps any word, whitespace included
        assert kv.counts.tolist() == counts.tolist()
        assert torch.equal(_bits(kv.vectors), _bits(vec))
        save_vectors(b, kv.words, kv.counts, kv.vectors, kv.tokenizer)
        assert a.read_bytes() == b.read_bytes()
