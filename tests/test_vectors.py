"""KeyedVectors: lookups, cosine queries equal to gensim's, batched analogies, planted structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors as GensimKV

from w2v import vectors
from w2v.errors import W2VError
from w2v.vectors import KeyedVectors


def random_kv(v: int = 300, d: int = 16, seed: int = 0) -> tuple[KeyedVectors, GensimKV]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(v)]
    table = rng.normal(size=(v, d)).astype(np.float32)
    g = GensimKV(d)
    g.add_vectors(words, table)
    return KeyedVectors(words, torch.from_numpy(table)), g


def planted_kv(entities: int = 8, forms: int = 2, d: int = 32, noise: float = 0.1):
    """Vectors that are entity + form + noise: e{i}f{j} (as in conftest's planted corpus)."""
    g = torch.Generator().manual_seed(0)
    ent, form = torch.randn(entities, d, generator=g), torch.randn(forms, d, generator=g)
    words, rows = [], []
    for i in range(entities):
        for j in range(forms):
            words.append(f"e{i}f{j}")
            rows.append(ent[i] + form[j] + noise * torch.randn(d, generator=g))
    return KeyedVectors(words, torch.stack(rows))


def test_lookup_index_and_contains():
    kv = KeyedVectors(["the", "cat"], torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    assert kv.index == {"the": 0, "cat": 1}
    assert "cat" in kv and "dog" not in kv and 3 not in kv
    assert torch.equal(kv["cat"], torch.tensor([0.0, 2.0]))
    assert len(kv) == 2 and kv.dim == 2


def test_tokenizer_lowercasing_applies_to_queries():
    words = ["king", "queen"]
    lower = KeyedVectors(words, torch.eye(2), tokenizer={"lowercase": True, "pattern": None})
    assert "King" in lower and lower.id("KING") == 0
    # Not lowercased, and the vocabulary has case: words are matched as written.
    exact = KeyedVectors(["king", "Queen"], torch.eye(2),
                         tokenizer={"lowercase": False, "pattern": None})
    assert "King" not in exact and "queen" not in exact and "Queen" in exact
    # A vocabulary without one uppercase letter (word2vec files record no tokenizer) was
    # built lowercased: `King` can only mean `king`.
    folded = KeyedVectors(words, torch.eye(2), tokenizer={"lowercase": False, "pattern": None})
    assert folded.id("King") == 0 and KeyedVectors(words, torch.eye(2)).id("QUEEN") == 1


def test_tokenizer_object_with_to_dict_is_recorded():
    class Tok:
        def to_dict(self):
            return {"lowercase": True, "pattern": None}

    kv = KeyedVectors(["a"], torch.ones(1, 2), tokenizer=Tok())
    assert kv.tokenizer == {"lowercase": True, "pattern": None}


def test_unknown_word_error_suggests_close_words():
    kv = KeyedVectors(["paris", "london", "berlin"], torch.randn(3, 4))
    with pytest.raises(W2VError, match=r"'pariss' is not in the vocabulary.*did you mean 'paris'"):
        kv.most_similar("pariss")


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(W2VError, match="3 words"):
        KeyedVectors(["a", "b", "c"], torch.randn(2, 4))


def test_similarity_equals_gensim():
    kv, g = random_kv()
    for a, b in [("w0", "w1"), ("w5", "w200"), ("w7", "w7")]:
        assert kv.similarity(a, b) == pytest.approx(float(g.similarity(a, b)), abs=1e-6)


@pytest.mark.parametrize(
    "positive,negative,restrict",
    [(["w3"], [], None), (["w1", "w2"], ["w0"], None), (["w1", "w2"], ["w0"], 100),
     (["w10", "w11", "w12"], ["w13", "w14"], 250)],
)
def test_most_similar_equals_gensim(positive, negative, restrict):
    kv, g = random_kv()
    ours = kv.most_similar(positive, negative, topn=10, restrict_vocab=restrict)
    theirs = g.most_similar(positive=positive, negative=negative, topn=10,
                            restrict_vocab=restrict)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-5)
    assert not set(positive + negative) & {w for w, _ in ours}  # query words excluded


@pytest.mark.filterwarnings("ignore:Call to deprecated `init_sims`:DeprecationWarning")
@pytest.mark.parametrize("positive,negative", [(["w3"], []), (["w1", "w2"], ["w0"])])
def test_most_similar_cosmul_equals_gensim(positive, negative):
    kv, g = random_kv()
    ours = kv.most_similar_cosmul(positive, negative, topn=10)
    theirs = g.most_similar_cosmul(positive=positive, negative=negative, topn=10)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-5)


def test_unit_table_is_cached_and_normalised():
    kv, _ = random_kv()
    assert kv.unit is kv.unit
    torch.testing.assert_close(kv.unit.norm(dim=1), torch.ones(len(kv)))


@pytest.mark.parametrize("method", ["add", "mul"])
def test_analogy_batch_equals_one_query_at_a_time(method, monkeypatch):
    monkeypatch.setattr(vectors, "SCORE_BLOCK", 400 * 128)  # chunks of 128 questions
    kv, _ = random_kv(v=500)
    rng = np.random.default_rng(1)
    q = torch.from_numpy(rng.integers(0, 500, size=(1200, 3)))
    pred = kv.analogy_batch(q[:, 0], q[:, 1], q[:, 2], restrict_vocab=400, method=method)
    single = kv.most_similar if method == "add" else kv.most_similar_cosmul
    for (a, b, c), p in list(zip(q.tolist(), pred.tolist()))[:: 37]:
        top = single([f"w{b}", f"w{c}"], [f"w{a}"], topn=1, restrict_vocab=400)
        assert kv.words[p] == top[0][0]
    assert pred.max() < 400


def test_analogy_batch_skips_query_word_groups():
    # Row 1 is a variant of row 0 ("Paris"/"paris") and the best answer: it must be skipped.
    table = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.9, 0.3], [0.5, 0.5]])
    kv = KeyedVectors(["paris", "Paris", "x", "y", "z"], table)
    a = torch.tensor([2]), torch.tensor([2]), torch.tensor([0])  # x:x :: paris:?
    assert kv.analogy_batch(*a).item() == 1
    groups = torch.tensor([0, 0, 2, 3, 4])
    assert kv.analogy_batch(*a, groups=groups).item() == 3


def test_planted_neighbours_and_analogies():
    kv = planted_kv()
    assert kv.most_similar("e3f0", topn=1)[0][0] == "e3f1"
    ids = torch.tensor([[kv.id(f"e{a}f0"), kv.id(f"e{a}f1"), kv.id(f"e{c}f0"), kv.id(f"e{c}f1")]
                        for a in range(8) for c in range(8) if a != c])
    pred = kv.analogy_batch(ids[:, 0], ids[:, 1], ids[:, 2])
    assert (pred == ids[:, 3]).float().mean() == 1.0
    assert kv.most_similar(["e1f1", "e2f0"], ["e1f0"], topn=1)[0][0] == "e2f1"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_queries_run_on_the_vectors_device():
    kv = planted_kv().to("cuda")
    assert kv.unit.is_cuda
    assert kv.most_similar("e3f0", topn=1)[0][0] == "e3f1"
    q = torch.tensor([kv.id("e1f0")]), torch.tensor([kv.id("e1f1")]), torch.tensor([kv.id("e2f0")])
    assert kv.words[kv.analogy_batch(*q).item()] == "e2f1"
