"""phrases.py: multi-word tokens equal to gensim 4.4's Phrases (text8-prefix and planted
collocations), passes, connector words, documents, bounded memory, and the saved model."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from tests.conftest import docs_of, planted_cfg
from w2v import phrases as phrases_mod
from w2v.config import DataConfig, PhrasesConfig
from w2v.corpus import build_corpus, cache_path
from w2v.errors import W2VError
from w2v.export import load_tokenizer, load_vectors, tokenize
from w2v.tokenizer import Phrases, Tokenizer
from w2v.vocab import Vocab

FILLERS = [f"w{i}" for i in range(80)]
UNITS = [["new", "york"], ["san", "francisco"], ["bank", "of", "america"],
         ["state", "of", "the", "art"], ["new", "york", "city"], ["los", "angeles"],
         ["new", "jersey"], ["city", "of", "london"]]
CONNECT = ["the", "of", "in", "and", "a", "to"]


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))


def collocations(path: Path, lines: int = 1200, seed: int = 0, literal: bool = False) -> list[str]:
    """Zipf-ish filler words, planted collocations (some through connector words), runs of
    connectors of every length, and (literal=True) the token `new_york` written as one word."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(FILLERS))]
    out = []
    for _ in range(lines):
        toks: list[str] = []
        while len(toks) < rng.randrange(5, 30):
            r = rng.random()
            if r < 0.25:
                toks += rng.choice(UNITS)
            elif r < 0.4:
                toks.append(rng.choice(CONNECT))
            elif r < 0.42:
                toks += [rng.choice(FILLERS), *rng.choices(CONNECT, k=rng.randrange(1, 20)),
                         rng.choice(FILLERS)]
            elif literal and r < 0.45:
                toks.append("new_york")
            else:
                toks += rng.choices(FILLERS, weights)
        out.append(" ".join(toks))
    path.write_text("\n".join(out) + "\n")
    return out


def gensim_phrased(docs: list[list[str]], passes: int, **kw) -> list[list[str]]:
    """gensim's stacked Phrases models, applied as gensim applies them (analyze_sentence)."""
    phrases = pytest.importorskip("gensim.models.phrases")
    if kw.get("connector_words") == "english":
        kw["connector_words"] = phrases.ENGLISH_CONNECTOR_WORDS
    for _ in range(passes):
        model = phrases.Phrases(docs, **kw)
        docs = [model[d] for d in docs]
    return docs


def pseudo_docs(lines: list[str], m: int) -> list[list[str]]:
    rows = [line.split() for line in lines]
    return [r[i : i + m] for r in rows for i in range(0, len(r), m)]


def phrased_corpus(path, passes=1, m=10_000, **kw):
    cfg = DataConfig(path=str(path), min_count=1, max_doc_words=m,
                     phrases=PhrasesConfig(passes=passes, **kw))
    return build_corpus(cfg, progress=False)


# --- gensim parity -------------------------------------------------------------------------------


@pytest.mark.parametrize("passes, kw", [
    (1, {"threshold": 1.0}),
    (2, {"threshold": 1.0}),
    (1, {"threshold": 1.0, "connectors": "english"}),
    (2, {"threshold": 0.5, "connectors": "english"}),
    (1, {"scoring": "npmi", "threshold": 0.3}),
    (2, {"scoring": "npmi", "threshold": 0.2, "connectors": "english", "min_count": 3}),
])
def test_phrased_documents_equal_gensim(tmp_path, passes, kw):
    lines = collocations(tmp_path / "c.txt")
    c = phrased_corpus(tmp_path / "c.txt", passes, m=40, **kw)
    gensim_kw = {"min_count": kw.get("min_count", 5), "threshold": kw["threshold"],
                 "scoring": kw.get("scoring", "default"),
                 "connector_words": kw.get("connectors", ())}
    theirs = gensim_phrased(pseudo_docs(lines, 40), passes, **gensim_kw)
    assert docs_of(c) == [d for d in theirs if d]  # token for token, document for document
    if passes == 1:  # a connector inside a phrase: only with connectors (or a second pass)
        assert any("_of_" in w for w in c.vocab.words) == ("connectors" in kw)
    assert any(w.count("_") >= 1 for w in c.vocab.words)


def test_a_token_equal_to_a_joined_pair_counts_as_one_string(tmp_path):
    """gensim (and word2phrase) count per string: `new_york` in the text and the pair
    (new, york) are one entry, and one word after phrasing."""
    lines = collocations(tmp_path / "c.txt", literal=True)
    c = phrased_corpus(tmp_path / "c.txt", 2, threshold=1.0)
    assert docs_of(c) == gensim_phrased([line.split() for line in lines], 2, threshold=1.0)
    assert c.vocab.words.count("new_york") == 1


def test_long_connector_runs_are_exact(tmp_path, monkeypatch):
    """Runs longer than a gap code holds (15 English connectors; here 2) are interned."""
    monkeypatch.setattr(phrases_mod, "LONG_GAP", 1 << 5)
    lines = collocations(tmp_path / "c.txt")
    c = phrased_corpus(tmp_path / "c.txt", 1, threshold=0.5, min_count=2, connector_words=CONNECT)
    theirs = gensim_phrased([line.split() for line in lines], 1, threshold=0.5, min_count=2,
                            connector_words=frozenset(CONNECT))
    assert docs_of(c) == theirs
    assert "state_of_the_art" in c.vocab.words  # two connectors: a long run at this setting


def test_blocks_windows_and_merges_do_not_change_the_result(tmp_path, monkeypatch):
    lines = collocations(tmp_path / "c.txt")
    whole = phrased_corpus(tmp_path / "c.txt", 2, m=50, threshold=1.0, connectors="english")
    monkeypatch.setattr(phrases_mod, "BLOCK", 7)  # windows carried across blocks
    monkeypatch.setattr(phrases_mod, "MERGE_MIN", 5)  # many merges of the pair counts
    monkeypatch.setenv("W2V_CACHE", str(tmp_path / "other"))
    cut = phrased_corpus(tmp_path / "c.txt", 2, m=50, threshold=1.0, connectors="english")
    assert docs_of(cut) == docs_of(whole) and cut.vocab.words == whole.vocab.words
    assert len(lines) > 1000


def test_phrases_never_cross_a_document(tmp_path):
    (tmp_path / "c.txt").write_text("x new\nyork y\n" + "new york\n" * 20 + "a b new york c\n")
    c = phrased_corpus(tmp_path / "c.txt", 1, m=3, threshold=0.1, min_count=2)
    docs = docs_of(c)
    assert docs[2] == ["new_york"]  # a phrase within a line
    assert docs[:2] == [["x", "new"], ["york", "y"]]  # but not across lines
    # nor across pseudo-documents of 3 raw words: "a b new | york c"
    assert docs[-2:] == [["a", "b", "new"], ["york", "c"]]


# --- text8-prefix -------------------------------------------------------------------------------


def test_text8_prefix_phrases_equal_gensim(text8_prefix):
    """The issue's figures: 6,834 bigrams (export_phrases), 6,302 of them at least 5 times in
    the phrased corpus; scores, the phrased vocabulary and its length equal gensim's."""
    word2vec = pytest.importorskip("gensim.models.word2vec")
    phrases = pytest.importorskip("gensim.models.phrases")
    model = phrases.Phrases(word2vec.Text8Corpus(str(text8_prefix)), min_count=5, threshold=10)
    theirs = model.export_phrases()
    c = build_corpus(DataConfig(path=str(text8_prefix), min_count=5,
                                phrases=PhrasesConfig(passes=1)), progress=False)
    ours = c.vocab.tokenizer.phrases.phrases()
    assert len(ours) == len(theirs) == 6834
    assert ours == theirs  # the same bigrams with bit-equal scores
    assert c.meta["phrases"][0]["types"] == len(model.vocab) == 893_906

    w2v_model = word2vec.Word2Vec(min_count=5)
    w2v_model.build_vocab(model.freeze()[word2vec.Text8Corpus(str(text8_prefix))])
    vocab = {w: w2v_model.wv.get_vecattr(w, "count") for w in w2v_model.wv.index_to_key}
    assert dict(zip(c.vocab.words, c.vocab.counts.tolist(), strict=True)) == vocab
    assert sum("_" in w for w in vocab) == 6302
    assert c.raw_tokens == w2v_model.corpus_total_words and c.meta["text_tokens"] == 2_139_748


@pytest.mark.slow
@pytest.mark.parametrize("kw", [{"scoring": "npmi", "threshold": 0.5},
                                {"connectors": "english"}])
def test_text8_prefix_npmi_and_connectors_equal_gensim(text8_prefix, kw):
    word2vec = pytest.importorskip("gensim.models.word2vec")
    phrases = pytest.importorskip("gensim.models.phrases")
    conn = phrases.ENGLISH_CONNECTOR_WORDS if kw.get("connectors") else ()
    model = phrases.Phrases(word2vec.Text8Corpus(str(text8_prefix)), min_count=5,
                            threshold=kw.get("threshold", 10.0),
                            scoring=kw.get("scoring", "default"), connector_words=conn)
    c = build_corpus(DataConfig(path=str(text8_prefix), phrases=PhrasesConfig(passes=1, **kw)),
                     progress=False)
    assert c.vocab.tokenizer.phrases.phrases() == model.export_phrases()


@pytest.mark.slow
def test_text8_prefix_two_passes_equal_stacked_gensim(text8_prefix):
    word2vec = pytest.importorskip("gensim.models.word2vec")
    phrases = pytest.importorskip("gensim.models.phrases")
    sentences = list(word2vec.Text8Corpus(str(text8_prefix)))
    once = phrases.Phrases(sentences, min_count=5, threshold=10).freeze()
    sentences = [once[s] for s in sentences]
    twice = phrases.Phrases(sentences, min_count=5, threshold=10)
    counts = Counter(t for s in sentences for t in twice[s])
    c = build_corpus(DataConfig(path=str(text8_prefix), min_count=1,
                                phrases=PhrasesConfig(passes=2)), progress=False)
    assert dict(zip(c.vocab.words, c.vocab.counts.tolist(), strict=True)) == counts
    assert c.meta["phrases"][1]["types"] == len(twice.vocab)
    assert "new_york_city" in counts


# --- memory, cache, config ----------------------------------------------------------------------


def test_bigram_counts_are_pruned_like_reduce_vocab(tmp_path, monkeypatch):
    monkeypatch.setattr(phrases_mod, "BLOCK", 2000)
    monkeypatch.setattr(phrases_mod, "MERGE_MIN", 1)
    collocations(tmp_path / "c.txt")
    full = phrased_corpus(tmp_path / "c.txt", 1, threshold=1.0)
    monkeypatch.setenv("W2V_CACHE", str(tmp_path / "other"))
    c = phrased_corpus(tmp_path / "c.txt", 1, threshold=1.0, max_vocab_size=2000)
    stats, unpruned = c.meta["phrases"][0], full.meta["phrases"][0]
    assert unpruned["bigrams"] > 2000 and unpruned["pruned"] == 0
    # At the prune, bigrams counted once so far were forgotten (ReduceVocab, min_reduce 1).
    assert stats["pruned"] == 1 and stats["bigrams"] <= 2000
    assert unpruned["types"] - stats["types"] == unpruned["bigrams"] - stats["bigrams"]
    # The planted collocations are frequent enough to survive every prune.
    assert {"new_york", "san_francisco", "los_angeles"} <= set(c.vocab.words)


def test_with_max_vocab_size_forgotten_words_join_nothing(tmp_path):
    collocations(tmp_path / "c.txt")
    c = phrased_corpus(tmp_path / "c.txt", 1, threshold=1.0)
    pruned = build_corpus(DataConfig(path=str(tmp_path / "c.txt"), min_count=1,
                                     max_vocab_size=40, phrases=PhrasesConfig(
                                         passes=1, threshold=1.0)), progress=False)
    assert pruned.meta["pruned"] >= 1
    assert len(pruned.ids) == pruned.vocab.total
    assert "new_york" in pruned.vocab.words and len(pruned.vocab) < len(c.vocab)


def test_cache_key_holds_phrase_settings_only_when_on(tmp_path):
    (tmp_path / "c.txt").write_text("a b\n")
    base = DataConfig(path=str(tmp_path / "c.txt"))
    paths = {cache_path(base)}
    paths.add(cache_path(DataConfig(path=base.path, phrases=PhrasesConfig(passes=1))))
    paths.add(cache_path(DataConfig(path=base.path, phrases=PhrasesConfig(passes=2))))
    paths.add(cache_path(DataConfig(path=base.path, phrases=PhrasesConfig(passes=1,
                                                                           threshold=5.0))))
    paths.add(cache_path(DataConfig(path=base.path, phrases=PhrasesConfig(
        passes=1, connector_words=["of"]))))
    assert len(paths) == 5
    # Off: the settings do not enter the key, so caches built before phrases existed stay valid.
    assert cache_path(DataConfig(path=base.path, phrases=PhrasesConfig(threshold=3.0))) == \
        cache_path(base)


@pytest.mark.parametrize("kw, match", [
    ({"passes": -1}, "data.phrases.passes"),
    ({"scoring": "pmi"}, "data.phrases.scoring"),
    ({"scoring": "npmi", "threshold": 10.0}, r"in \[-1, 1\] with data.phrases.scoring=npmi"),
    ({"threshold": 0.0}, r"> 0 with data.phrases.scoring=default"),
    ({"delimiter": " "}, "data.phrases.delimiter"),
    ({"connectors": "german"}, "data.phrases.connectors"),
    ({"min_count": 0}, "data.phrases.min_count"),
])
def test_bad_settings_name_the_key(kw, match):
    with pytest.raises(W2VError, match=match):
        PhrasesConfig(**kw)


def test_compose_from_the_command_line():
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["data=local", "data.path=x", "data.phrases.passes=2",
                       "data.phrases.connectors=english", "data.phrases.connector_words=[der,die]"])
    assert cfg.data.phrases.passes == 2 and cfg.data.phrases.connector_words == ["der", "die"]
    words = phrases_mod.connector_words(cfg.data.phrases, lowercase=True)
    assert {"of", "the", "der", "die"} <= set(words)


# --- the saved model: query time -----------------------------------------------------------------


def test_tokenizer_applies_the_phrases_as_the_corpus_was_phrased(tmp_path):
    lines = collocations(tmp_path / "c.txt")
    c = phrased_corpus(tmp_path / "c.txt", 2, threshold=1.0, connectors="english")
    tok = c.vocab.tokenizer
    assert [tok(line) for line in lines] == docs_of(c)
    assert tok("New York City") == ["new_york_city"] and tok("Bank of America") == \
        ["bank_of_america"]
    # JSON round trip (vocab.json in the cache).
    again = Vocab.load(c.path / "vocab.json").tokenizer
    assert again == tok and again.phrases == Phrases.from_dict(tok.phrases.to_dict())


def test_vectors_query_and_tokenize_after_training(tmp_path):
    collocations(tmp_path / "c.txt")
    from w2v.train import train

    cfg = planted_cfg(type("P", (), {"path": tmp_path / "c.txt"})(), "trainer.epochs=1",
                      "data.phrases.passes=1", "data.phrases.threshold=1.0",
                      "trainer.ckpt_every=0")
    train(cfg, tmp_path / "run")
    vectors = tmp_path / "run" / "vectors.pt"
    raw = torch.load(vectors, weights_only=True)
    assert raw["tokenizer"]["phrases"]["passes"][0]["phrases"]
    assert tokenize("Flights to New York", vectors) == ["flights", "to", "new_york"]
    ckpt = sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1]
    assert load_tokenizer(ckpt)("san francisco") == ["san_francisco"]
    kv = load_vectors(vectors)
    assert torch.equal(kv["New York"], kv["new_york"])
    assert kv.most_similar("new york", topn=3)
    # word2vec text files record no tokenizer: a whitespace split.
    assert load_tokenizer(tmp_path / "run" / "vectors.txt")("New York") == ["New", "York"]

    from w2v.query import answer

    assert answer(kv, "new york", topn=2).startswith("nearest to new_york")
    ids = [kv.index[w] for w in kv.tokenize("new york and los angeles")]
    assert np.array(ids).min() >= 0 and len(ids) == 3


def test_query_cli_finds_a_phrase(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    words = ["new_york", "city", "new", "york"]
    from w2v.export import save_vectors

    phrases = Phrases([{("new", "york"): 12.0}], "_", (), {"passes": 1})
    save_vectors(tmp_path / "v.pt", words, None, torch.eye(4), Tokenizer(phrases=phrases))
    done = subprocess.run([sys.executable, "-m", "w2v.query", f"vectors={tmp_path}/v.pt",
                           "new york"], capture_output=True, text=True, cwd=repo,
                          env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nearest to new_york")
