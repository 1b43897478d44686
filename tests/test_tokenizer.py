"""fastText's n-gram rules (w2v.tokenizer) against fastText itself and gensim."""

from __future__ import annotations

import numpy as np
import pytest

from w2v.tokenizer import ngram_hash, oov_rows, subword_rows, word_ngrams

WORDS = ["where", "naïve", "日本語", "a", "🙂ok", "straße"]


def test_ngrams_follow_fasttexts_rules():
    assert word_ngrams("where", 3, 4) == ["<wh", "<whe", "whe", "wher", "her", "here", "ere",
                                          "ere>", "re>"]
    assert word_ngrams("a", 1, 2) == ["<a", "a", "a>"]  # a lone '<' or '>' is no n-gram
    assert word_ngrams("日本", 1, 2)[:3] == ["<日", "日", "日本"]  # characters, not bytes
    assert word_ngrams("where", 3, 0) == []


def test_the_hash_is_fnv1a_over_signed_bytes():
    assert ngram_hash("") == 2166136261
    assert ngram_hash("a") == (2166136261 ^ 97) * 16777619 % 2**32
    # a byte >= 0x80 is sign-extended first (fastText's int8_t cast): 0xC3 -> 0xFFFFFFC3
    assert ngram_hash(b"\xc3") == ((2166136261 ^ 0xFFFFFFC3) * 16777619) % 2**32


def test_hashes_equal_gensims():
    ft_hash = pytest.importorskip("gensim.models.fasttext_inner").ft_hash_bytes
    for word in WORDS:
        for gram in word_ngrams(word, 1, 6):
            assert ngram_hash(gram) == ft_hash(gram.encode("utf-8")), gram


@pytest.fixture(scope="module")
def fasttext_model(tmp_path_factory):
    fasttext = pytest.importorskip("fasttext")
    path = tmp_path_factory.mktemp("ft") / "corpus.txt"
    path.write_text(" ".join(WORDS[:3] * 50) + "\n", encoding="utf-8")
    return fasttext.train_unsupervised(str(path), minn=2, maxn=5, bucket=1000, dim=4,
                                       epoch=1, minCount=1, verbose=0)


def test_ngrams_and_rows_equal_fasttexts(fasttext_model):
    words = fasttext_model.words
    offsets, rows = subword_rows(words, 2, 5, 1000)
    for i, word in enumerate(words):
        grams, ids = fasttext_model.get_subwords(word)
        assert rows[offsets[i]:offsets[i + 1]].tolist() == list(ids)
        if word != "</s>":  # fastText gives its end-of-line token no n-grams
            assert list(grams[1:]) == word_ngrams(word, 2, 5)
    for unseen in ("wherever", "naïveté", "日本人", "🙂"):
        grams, ids = fasttext_model.get_subwords(unseen)
        assert list(grams) == word_ngrams(unseen, 2, 5)
        assert oov_rows(unseen, 2, 5, 1000, len(words)) == list(ids)


def test_one_row_per_word_without_ngrams():
    offsets, rows = subword_rows(["a", "b", "c"], 3, 0, 100)
    assert offsets.tolist() == [0, 1, 2, 3] and rows.tolist() == [0, 1, 2]
    assert rows.dtype == np.int32
