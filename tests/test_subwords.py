"""fastText's subword model in w2v: learning, exports, unseen words, continued training.

The planted corpus's words e{i}f{j} share character n-grams by entity ("<e3f") and by form
("f1>"), so a subword model also recovers the planted structure, and an unseen form of an
entity (e3f7) lands next to that entity's words through its n-grams alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import analogies_recovered, neighbours_recovered, planted_cfg
from w2v.errors import W2VError
from w2v.export import load_embedding, load_vectors
from w2v.model import Subwords, Word2Vec
from w2v.tokenizer import subword_rows
from w2v.train import train

NGRAMS = ("model.minn=2", "model.maxn=4", "model.bucket=1000")


def subword_cfg(planted, *overrides):
    return planted_cfg(planted, *NGRAMS, "trainer.chunk_words=2000", *overrides)


CASES = [("skipgram", "negative", "fused"), ("cbow", "negative", "fused"),
         ("skipgram", "hs", "fused"), ("cbow", "hs", "fused"),
         ("skipgram", "negative", "autograd"), ("cbow", "negative", "autograd"),
         ("skipgram", "hs", "autograd"), ("cbow", "hs", "autograd")]


@pytest.mark.parametrize("arch,loss,engine", CASES)
def test_a_subword_model_learns_planted_structure(planted, tmp_path, arch, loss, engine):
    extra = ["trainer.optimizer=adam", "trainer.lr=0.01"] if engine == "autograd" else []
    metrics = train(subword_cfg(planted, f"model={arch}", f"model.loss={loss}",
                                f"trainer.engine={engine}", "trainer.epochs=4", *extra), tmp_path)
    assert metrics["engine"] == engine
    kv = load_vectors(tmp_path / "vectors.pt")
    assert kv.ngrams is not None
    assert neighbours_recovered(kv.vectors, kv.words, planted) >= 0.75
    assert analogies_recovered(kv.vectors, kv.words, planted) >= 0.5
    # An unseen form of entity 3 is placed by its n-grams next to entity 3's words.
    near = [w for w, _ in kv.most_similar("e3f7", topn=3)]
    assert all(w.startswith(("e3f", "c3_")) for w in near), near
    assert (tmp_path / "fasttext.bin").is_file()


def test_word_vectors_are_each_words_mean_of_its_rows():
    words = ["king", "kings", "queen"]
    offsets, rows = subword_rows(words, 3, 4, 50)
    m = Word2Vec(3, 8, subwords=Subwords(3, 4, 50, offsets, rows))
    assert isinstance(m.input, torch.nn.EmbeddingBag) and m.input.weight.shape == (53, 8)
    want = torch.stack([m.input.weight[rows[offsets[i]:offsets[i + 1]]].mean(0)
                        for i in range(3)])
    torch.testing.assert_close(m.word_vectors(), want.detach())
    # fastText's initialisation: every row uniform in +-1/dim
    assert m.input.weight.abs().max() <= 1 / 8 and m.input.weight.abs().max() > 0.5 / 8


def test_one_fused_update_is_the_autograd_update_with_fasttexts_unscaled_rows():
    """One CBOW centre with one context word: the fused engine adds the error to each of the
    context's rows unscaled (fastText's Model::update), where autograd's SGD takes the
    gradient of the mean, 1/n of it; the output rows move alike."""
    from w2v.engines import fused

    words = ["ab", "abc", "b"]
    offsets, rows = subword_rows(words, 2, 3, 20)
    torch.manual_seed(0)
    model = Word2Vec(3, 6, arch="cbow", subwords=Subwords(2, 3, 20, offsets, rows))
    torch.nn.init.normal_(model.output.weight, std=0.3)
    in0, out0 = model.input.weight.detach().clone(), model.output.weight.detach().clone()
    # fused: the document [abc, ab]: centre abc (context ab), then centre ab (context abc),
    # with the noise word fixed to "b"; the first centre alone is compared (lr 0 after it).
    noise = fused.build_noise_table(np.eye(3)[2])
    got_in, got_out = in0.numpy().copy(), out0.numpy().copy()
    fused.train_job(got_in, got_out, np.array([1, 0], np.int32), np.array([0, 2]), 0, 1,
                    np.ones(3, np.float32), arch="cbow", loss="negative", window=1,
                    negative=1, noise=noise, input_rows=fused.InputRows(offsets, rows),
                    lr_start=0.5, lr_end=-0.5, seed=0)  # centre 0 at lr 0.5, centre 1 at 0
    loss = model(torch.tensor([[0]]), torch.tensor([1]), negatives=torch.tensor([[2]]))
    loss.backward()
    with torch.no_grad():
        step_in = -0.5 * model.input.weight.grad
        step_out = -0.5 * model.output.weight.grad
    n = offsets[1] - offsets[0]  # rows of the context word "ab"
    np.testing.assert_allclose(got_out - out0.numpy(), step_out.numpy(), atol=3e-3)
    np.testing.assert_allclose(got_in - in0.numpy(), n * step_in.numpy(), atol=3e-3)
    assert np.abs(got_in - in0.numpy()).max() > 0.01


def test_the_fasttext_bin_gives_gensim_and_fasttext_our_vectors(planted, tmp_path):
    train(subword_cfg(planted, "trainer.epochs=1"), tmp_path)
    kv = load_vectors(tmp_path / "vectors.pt")
    gensim_models = pytest.importorskip("gensim.models.fasttext")
    ft = gensim_models.load_facebook_vectors(str(tmp_path / "fasttext.bin"))
    for word in ("e1f0", "c2_3", "e3f7", "zz"):  # seen and unseen
        np.testing.assert_allclose(ft[word], kv[word].numpy(), atol=1e-6)
    fasttext = pytest.importorskip("fasttext")
    model = fasttext.load_model(str(tmp_path / "fasttext.bin"))
    for word in ("e1f0", "e3f7"):
        np.testing.assert_allclose(model.get_word_vector(word), kv[word].numpy(), atol=1e-6)


def test_subword_embedding_maps_any_words_and_trains(planted, tmp_path):
    train(subword_cfg(planted, "trainer.epochs=1"), tmp_path)
    kv = load_vectors(tmp_path / "vectors.pt")
    emb, vocab = load_embedding(tmp_path / "vectors.pt", freeze=False, sparse=True)
    assert isinstance(emb.bag, torch.nn.EmbeddingBag) and "e1f0" in vocab
    out = emb(["e1f0", "e3f7"])  # seen, unseen
    torch.testing.assert_close(out[0].detach(), kv["e1f0"])
    torch.testing.assert_close(out[1].detach(), kv["e3f7"])
    out.sum().backward()
    assert emb.bag.weight.grad.is_sparse
    with pytest.raises(W2VError, match="every word a vector"):
        load_embedding(tmp_path / "vectors.pt", unknown=True)


def test_evaluation_scores_unseen_words_through_ngrams(planted, tmp_path):
    from w2v.evaluate import evaluate_pairs

    train(subword_cfg(planted, "trainer.epochs=1"), tmp_path)
    suite = tmp_path / "pairs.txt"
    suite.write_text("e1f0\te1f1\t9\ne1f0\te3f7\t1\ne3f0\te3f9\t8\nc1_0\tc2_0\t2\n")
    r = evaluate_pairs(load_vectors(tmp_path / "vectors.pt"), suite)
    assert (r.pairs, r.oov, r.ngrams) == (4, 0, 2)
    word_level = tmp_path / "word"
    train(planted_cfg(planted, "trainer.epochs=1"), word_level)
    r = evaluate_pairs(load_vectors(word_level / "vectors.pt"), suite)
    assert (r.pairs, r.oov, r.ngrams) == (2, 2, 0)


@pytest.mark.parametrize("arch", ["skipgram", "cbow"])
def test_interrupted_and_resumed_equals_uninterrupted(planted, tmp_path, monkeypatch, arch):
    from tests.conftest import StopAfter
    from w2v import train as train_mod
    from w2v.train import TrainingInterrupted

    over = (f"model={arch}", "trainer.epochs=2", "trainer.chunk_words=3000")
    train(subword_cfg(planted, *over), tmp_path / "full")
    monkeypatch.setattr(train_mod, "StopFlag", lambda: StopAfter(7))
    with pytest.raises(TrainingInterrupted):
        train(subword_cfg(planted, *over), tmp_path / "cut")
    monkeypatch.undo()
    train(subword_cfg(planted, *over, "trainer.resume=latest"), tmp_path / "cut")
    a = torch.load(tmp_path / "full" / "vectors.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "vectors.pt", weights_only=True)
    assert torch.equal(a["subwords"]["input"], b["subwords"]["input"])
    assert torch.equal(a["vectors"], b["vectors"])


def test_a_run_continues_from_a_subword_model_and_its_ngrams(planted, tmp_path):
    first = tmp_path / "first"
    train(subword_cfg(planted, "trainer.epochs=1"), first)
    old = load_vectors(first / "vectors.pt")
    cfg = subword_cfg(planted, "trainer.epochs=1", f"trainer.init_from={first}/fasttext.bin",
                      "trainer.lr=1e-9", "trainer.min_lr=1e-9")
    train(cfg, tmp_path / "second")
    new = load_vectors(tmp_path / "second" / "vectors.pt")
    for word in ("e1f0", "e3f7"):  # seen, and unseen (its n-gram rows were copied)
        np.testing.assert_allclose(new[word].numpy(), old[word].numpy(), atol=1e-3)
    with pytest.raises(W2VError, match="model.bucket=1000"):
        train(planted_cfg(planted, "model.maxn=4", "model.minn=2",
                          f"trainer.init_from={first}/fasttext.bin"), tmp_path / "third")
    with pytest.raises(W2VError, match="without n-grams"):
        train(planted_cfg(planted, "trainer.epochs=1"), tmp_path / "word")
        train(subword_cfg(planted, f"trainer.init_from={tmp_path}/word/vectors.pt"),
              tmp_path / "fourth")


def test_a_fasttext_written_bin_initialises_a_run(planted, tmp_path):
    fasttext = pytest.importorskip("fasttext")
    model = fasttext.train_unsupervised(str(planted.path), model="skipgram", dim=24, minn=2,
                                        maxn=4, bucket=1000, epoch=1, minCount=1, thread=1,
                                        verbose=0)
    model.save_model(str(tmp_path / "ft.bin"))
    cfg = subword_cfg(planted, "trainer.epochs=1", f"trainer.init_from={tmp_path}/ft.bin",
                      "trainer.lr=1e-9", "trainer.min_lr=1e-9")
    train(cfg, tmp_path / "run")
    kv = load_vectors(tmp_path / "run" / "vectors.pt")
    for word in ("e1f0", "e3f7"):
        np.testing.assert_allclose(kv[word].numpy(), model.get_word_vector(word), atol=1e-3)


def test_auto_on_a_gpu_takes_the_cuda_kernel_for_the_subword_model():
    from tests.conftest import compose_cfg
    from w2v.engines import _pick

    cfg = compose_cfg(["model=fasttext", "data.path=x.txt"])
    assert _pick(cfg, torch.device("cuda")) == "cuda"
    assert _pick(cfg, torch.device("cpu")) == "fused"


@pytest.mark.parametrize("subwords", [True, False])
def test_tables_a_gpu_cannot_hold_are_one_line_before_any_copy(monkeypatch, subwords):
    """2M n-gram rows at dim 300 are 2.4 GB: a GPU without that much free memory is told in
    one line naming model.bucket (model.dim for word2vec) before anything is copied to it,
    not a CUDA out-of-memory traceback from inside torch."""
    from w2v import train as train_mod

    offsets, rows = np.array([0, 2, 3]), np.array([0, 3, 1])
    model = Word2Vec(2, 8, subwords=Subwords(2, 3, 10, offsets, rows) if subwords else None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (16, 2**34))
    monkeypatch.setattr(model, "to", lambda *a, **k: pytest.fail("copied to the GPU"))
    with pytest.raises(W2VError) as err:
        train_mod._on_device(model, torch.device("cuda"))
    msg = str(err.value)
    assert "more than the 0.0 GiB cuda has free" in msg and "trainer.device=cpu" in msg
    assert ("model.bucket" in msg) is subwords and "\n" not in msg
