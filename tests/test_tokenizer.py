"""w2v.tokenizer: the tokenizer and phrases that travel with the vectors (light to import), and
fastText's n-gram rules against fastText itself and gensim."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import modules_loaded
from w2v.errors import W2VError
from w2v.tokenizer import (
    Phrases,
    Tokenizer,
    ngram_hash,
    oov_rows,
    subword_rows,
    word_ngrams,
)

WORDS = ["where", "naïve", "日本語", "a", "🙂ok", "straße"]


# --- tokenizer and phrases ---------------------------------------------------------------------


def test_tokenizer_default_and_pattern():
    assert Tokenizer()("The CAT\tsat\n") == ["the", "cat", "sat"]
    assert Tokenizer(lowercase=False)("The CAT") == ["The", "CAT"]
    assert Tokenizer(pattern=r"[a-z]+")("Don't stop!") == ["don", "t", "stop"]
    t = Tokenizer.from_dict(Tokenizer(True, r"\w+").to_dict())
    assert t == Tokenizer(True, r"\w+")


def test_tokenizer_bad_pattern_names_the_key():
    with pytest.raises(W2VError, match="data.token_pattern"):
        Tokenizer(pattern="(")


def test_tokenizer_with_phrases_round_trips_as_a_plain_dict():
    phrases = Phrases([{("new", "york"): 12.0}, {("new_york", "city"): 3.0}], "_", ("of",),
                      {"passes": 2})
    tok = Tokenizer(phrases=phrases)
    assert tok("New York City of New York") == ["new_york_city", "of", "new_york"]
    d = tok.to_dict()
    assert d["phrases"]["passes"][0] == {"phrases": [["new", "york"]], "scores": [12.0]}
    assert Tokenizer.from_dict(d) == tok and "phrases" not in Tokenizer().to_dict()


def test_importing_the_tokenizer_imports_neither_numba_nor_pyarrow():
    # load_embedding and tokenize users load this module; phrases.py (numba) is the learner.
    assert modules_loaded("import w2v.tokenizer", ("numba", "pyarrow", "w2v.phrases")) == []


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


@pytest.mark.parametrize(("minn", "maxn"), [(3, 6), (1, 2), (1, 1), (2, 4), (5, 5), (4, 3)])
def test_rows_of_many_words_at_once_are_each_words_own(monkeypatch, minn, maxn):
    """subword_rows hashes every word's n-grams at once, a few words at a time here (so the
    parts meet mid-vocabulary): each word's rows are its own row, then its n-grams' rows as
    oov_rows gives them for the word alone (fastText's "</s>" none)."""
    import w2v.tokenizer as tokenizer

    monkeypatch.setattr(tokenizer, "_WORDS_AT_ONCE", 4)
    words = ["</s>", *WORDS, "x", "ab", "é", "abcdefghijk", "日"]
    offsets, rows = subword_rows(words, minn, maxn, 97)
    assert offsets[0] == 0 and len(offsets) == len(words) + 1
    for i, word in enumerate(words):
        grams = [] if word == "</s>" else oov_rows(word, minn, maxn, 97, len(words))
        assert rows[offsets[i]:offsets[i + 1]].tolist() == [i, *grams], word
    assert subword_rows([], 3, 6, 10)[0].tolist() == [0]


def test_one_row_per_word_without_ngrams():
    offsets, rows = subword_rows(["a", "b", "c"], 3, 0, 100)
    assert offsets.tolist() == [0, 1, 2, 3] and rows.tolist() == [0, 1, 2]
    assert rows.dtype == np.int32
