"""Continued training (trainer.init_from, data.vocab_update): train on corpus A, continue on
corpus B; old ids, untouched rows, new rows, counts, word2vec files from gensim, errors."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import StopAfter, free_port, planted_cfg
from w2v import train as train_mod
from w2v.config import DataConfig
from w2v.corpus import build_corpus
from w2v.errors import W2VError
from w2v.init_from import init_weights, load_init
from w2v.model import build_model
from w2v.train import TrainingInterrupted, train
from w2v.vocab import Vocab, build_huffman, continue_vocab


def write_corpus(path, words: list[str], sentences: int = 400, length: int = 10, seed: int = 0):
    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(length))
                              for _ in range(sentences)) + "\n")
    return path


SHARED = [f"both{i}" for i in range(20)]
A_ONLY = [f"aonly{i}" for i in range(10)]
B_ONLY = [f"bonly{i}" for i in range(10)]


@pytest.fixture
def corpora(tmp_path):
    a = write_corpus(tmp_path / "a.txt", SHARED + A_ONLY, seed=1)
    b = write_corpus(tmp_path / "b.txt", SHARED + B_ONLY, seed=2)
    return a, b


def cfg_for(path, *over):
    return planted_cfg(type("P", (), {"path": path})(), "trainer.epochs=1",
                       "eval.projector_words=0", *over)


def token_counts(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for w in path.read_text().split():
        counts[w] = counts.get(w, 0) + 1
    return counts


@pytest.mark.parametrize("engine", ["fused", "autograd"])
def test_continue_on_b_keeps_old_ids_and_untouched_rows(corpora, tmp_path, engine):
    a, b = corpora
    train(cfg_for(a, f"trainer.engine={engine}"), tmp_path / "a")
    old = torch.load(tmp_path / "a" / "vectors.pt", weights_only=True)
    train(cfg_for(b, f"trainer.engine={engine}", f"trainer.init_from={tmp_path}/a/vectors.pt",
                  "data.vocab_update=true"), tmp_path / "b")
    new = torch.load(tmp_path / "b" / "vectors.pt", weights_only=True)

    v = len(old["words"])
    assert new["words"][:v] == old["words"]  # old ids kept
    assert sorted(new["words"][v:]) == sorted(B_ONLY)  # B's new words appended
    index = {w: i for i, w in enumerate(new["words"])}
    # A word only in A is never a context word in B: its input vector is untouched, bit for bit.
    for w in A_ONLY:
        assert torch.equal(new["vectors"][index[w]], old["vectors"][index[w]])
    # A word in both moves; a word only in B has a row of its own, trained.
    moved = [not torch.equal(new["vectors"][index[w]], old["vectors"][index[w]]) for w in SHARED]
    assert all(moved)
    assert all(new["vectors"][index[w]].abs().sum() > 0 for w in B_ONLY)
    # Counts summed for the old words; B's counts for the new ones.
    in_b = token_counts(b)
    for w, c_old, c_new in zip(old["words"], old["counts"].tolist(),
                               new["counts"][:v].tolist(), strict=True):
        assert c_new == c_old + in_b.get(w, 0)
    assert [new["counts"][index[w]].item() for w in B_ONLY] == [in_b[w] for w in B_ONLY]


def test_without_vocab_update_the_old_vocabulary_is_kept(corpora, tmp_path, caplog):
    a, b = corpora
    train(cfg_for(a), tmp_path / "a")
    old = torch.load(tmp_path / "a" / "vectors.pt", weights_only=True)
    with caplog.at_level("INFO", logger="w2v.corpus"):
        train(cfg_for(b, f"trainer.init_from={tmp_path}/a/vectors.pt"), tmp_path / "b")
    new = torch.load(tmp_path / "b" / "vectors.pt", weights_only=True)
    assert new["words"] == old["words"]
    assert torch.equal(new["counts"], old["counts"])  # the old counts: same noise table, tree
    in_b = token_counts(b)
    dropped = sum(in_b[w] for w in B_ONLY)
    assert f"{dropped} of {sum(in_b.values())} tokens are not in the trainer.init_from " \
           "vocabulary" in caplog.text
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["vocab_size"] == len(old["words"])


def test_cache_key_follows_the_base_vocabulary(corpora, tmp_path):
    a, b = corpora
    base = Vocab(["both0", "aonly0"], np.array([5, 3]))
    plain = build_corpus(DataConfig(path=str(b), min_count=1), progress=False)
    kept = build_corpus(DataConfig(path=str(b), min_count=1), progress=False, base=base)
    upd = build_corpus(DataConfig(path=str(b), min_count=1, vocab_update=True), progress=False,
                       base=base)
    assert len({plain.path, kept.path, upd.path}) == 3
    assert kept.vocab.words == ["both0", "aonly0"]
    assert kept.ids.unique().tolist() == [0]  # only both0 occurs in B
    assert upd.vocab.words[:2] == ["both0", "aonly0"] and len(upd.vocab) == 31
    other = Vocab(["both0", "aonly1"], np.array([5, 3]))
    assert build_corpus(DataConfig(path=str(b), min_count=1), progress=False,
                        base=other).path != kept.path


def test_gensim_word2vec_text_file_as_init_from(corpora, tmp_path):
    word2vec = pytest.importorskip("gensim.models.word2vec")
    a, b = corpora
    g = word2vec.Word2Vec(corpus_file=str(a), vector_size=24, min_count=1, epochs=1, workers=1,
                          seed=1)
    g.wv.save_word2vec_format(str(tmp_path / "g.txt"))
    train(cfg_for(b, f"trainer.init_from={tmp_path}/g.txt", "data.vocab_update=true"),
          tmp_path / "b")
    new = torch.load(tmp_path / "b" / "vectors.pt", weights_only=True)
    assert new["words"][: len(g.wv)] == g.wv.index_to_key
    index = {w: i for i, w in enumerate(new["words"])}
    for w in A_ONLY:  # gensim's float32 values, read back exactly and never touched
        assert torch.equal(new["vectors"][index[w]], torch.tensor(g.wv[w]))
    # A word2vec file has no counts: the old words count their occurrences in B (at least 1).
    in_b = token_counts(b)
    assert [new["counts"][index[w]].item() for w in SHARED] == [in_b[w] for w in SHARED]
    assert all(new["counts"][index[w]].item() == 1 for w in A_ONLY)


def test_checkpoint_as_init_from_copies_both_tables(corpora, tmp_path):
    a, b = corpora
    train(cfg_for(a), tmp_path / "a")
    ck = sorted((tmp_path / "a" / "checkpoints").glob("step-*.pt"))[-1]
    state = torch.load(ck, weights_only=True)["model"]
    cfg = cfg_for(b, f"trainer.init_from={ck}", "data.vocab_update=true")
    init = load_init(cfg)
    corpus = build_corpus(cfg.data, progress=False, base=init.vocab)
    model = build_model(cfg.model, corpus.vocab)
    fresh = model.input.weight.detach().clone()
    init_weights(model, init, corpus.vocab, cfg)
    v = len(init.vocab)
    assert torch.equal(model.input.weight[:v], state["input.weight"])
    assert torch.equal(model.output.weight[:v], state["output.weight"])
    # New words start as word2vec starts every word: the seeded random rows, zero output rows.
    assert torch.equal(model.input.weight[v:], fresh[v:])
    assert not model.output.weight[v:].any()


def test_hierarchical_softmax_tree_and_output_rows(corpora, tmp_path):
    a, b = corpora
    train(cfg_for(a, "model.loss=hs"), tmp_path / "a")
    ck = sorted((tmp_path / "a" / "checkpoints").glob("step-*.pt"))[-1]
    nodes = torch.load(ck, weights_only=True)["model"]["output.weight"]
    for update, copied in ((False, True), (True, False)):
        cfg = cfg_for(b, "model.loss=hs", f"trainer.init_from={ck}",
                      f"data.vocab_update={str(update).lower()}")
        init = load_init(cfg)
        corpus = build_corpus(cfg.data, progress=False, base=init.vocab)
        model = build_model(cfg.model, corpus.vocab)
        init_weights(model, init, corpus.vocab, cfg)
        # Same counts, same tree: the node rows are copied; an updated tree starts from zeros.
        assert torch.equal(model.output.weight, nodes) is copied
        assert copied or not model.output.weight.any()
    # The tree of an extended vocabulary (not sorted by count) is a true Huffman tree over
    # the combined counts: the same code lengths as the tree of the sorted counts.
    counts = corpus.vocab.counts
    order = np.argsort(-counts, kind="stable")
    assert np.array_equal(build_huffman(counts).lengths[order],
                          build_huffman(counts[order]).lengths)


@pytest.mark.parametrize("over, match", [
    (("model.dim=12",), r"holds 24-dimensional vectors but model.dim=12; set model.dim=24"),
    (("model.loss=hs",), r"holds per-word output vectors .* model.loss=hs cannot use"),
], ids=["dim", "output-layer"])
def test_shapes_that_cannot_fit_are_one_line_errors(corpora, tmp_path, over, match):
    a, b = corpora
    train(cfg_for(a, "export.text=true"), tmp_path / "a")
    cfg = cfg_for(b, f"trainer.init_from={tmp_path}/a/checkpoints/"
                  + sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())[-1], *over)
    with pytest.raises(W2VError, match=match):
        load_init(cfg)
    # The word2vec export holds input vectors only: any loss can start from it.
    load_init(cfg_for(b, "model.loss=hs", f"trainer.init_from={tmp_path}/a/vectors.txt"))


def test_bad_init_from_and_vocab_update_alone(corpora, tmp_path):
    a, b = corpora
    with pytest.raises(W2VError, match="does not exist"):
        load_init(cfg_for(b, f"trainer.init_from={tmp_path}/none.pt"))
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(W2VError, match="cannot be read"):
        load_init(cfg_for(b, f"trainer.init_from={tmp_path}/junk.pt"))
    with pytest.raises(W2VError, match="data.vocab_update=true extends .* set trainer.init_from"):
        cfg_for(b, "data.vocab_update=true")


def test_continue_vocab_rules():
    base = Vocab(["x", "y", "z"], np.array([9, 4, 2]))
    words, counts = ["y", "new", "rare", "x"], np.array([3, 5, 1, 1])
    up = continue_vocab(base, words, counts, update=True, min_count=2)
    assert up.words == ["x", "y", "z", "new"] and up.counts.tolist() == [10, 7, 2, 5]
    keep = continue_vocab(base, words, counts, update=False, min_count=2)
    assert keep.words == ["x", "y", "z"] and keep.counts.tolist() == [9, 4, 2]
    # No counts in the file (word2vec formats): this corpus's, and 1 for words it lacks.
    bare = Vocab(["x", "y", "z"], np.zeros(3, np.int64))
    assert continue_vocab(bare, words, counts, update=False).counts.tolist() == [1, 3, 1]
    assert continue_vocab(bare, words, counts, update=True, min_count=2).counts.tolist() == [
        1, 3, 1, 5]


def test_resume_of_a_continued_run(corpora, tmp_path, monkeypatch):
    """A continued run resumes like any run (same trainer.init_from); weights come from the
    checkpoint, and leaving init_from out is refused with a message that names it."""
    a, b = corpora
    train(cfg_for(a), tmp_path / "a")
    over = (f"trainer.init_from={tmp_path}/a/vectors.pt", "data.vocab_update=true",
            "trainer.epochs=2", "trainer.chunk_words=1000", "trainer.engine=fused")
    train(cfg_for(b, *over), tmp_path / "full")
    full = torch.load(tmp_path / "full" / "vectors.pt", weights_only=True)["vectors"]
    monkeypatch.setattr(train_mod, "StopFlag", lambda: StopAfter(3))
    with pytest.raises(TrainingInterrupted) as stop:
        train(cfg_for(b, *over), tmp_path / "cut")
    assert stop.value.code == 128 + signal.SIGTERM
    monkeypatch.undo()
    with pytest.raises(W2VError, match="trainer.init_from"):
        train(cfg_for(b, "trainer.epochs=2", "trainer.chunk_words=1000", "trainer.engine=fused",
                      "trainer.resume=latest"), tmp_path / "cut")
    train(cfg_for(b, *over, "trainer.resume=latest"), tmp_path / "cut")
    resumed = torch.load(tmp_path / "cut" / "vectors.pt", weights_only=True)["vectors"]
    assert torch.equal(full, resumed)


@pytest.mark.slow
def test_torchrun_ranks_start_from_the_same_file(corpora, tmp_path):
    a, b = corpora
    train(cfg_for(a), tmp_path / "a")
    old = torch.load(tmp_path / "a" / "vectors.pt", weights_only=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "w2v.train",
           "data=local", f"data.path={b}", "data.min_count=1", "model.dim=24", "model.window=3",
           "trainer.threads=1", "trainer.progress=false", "trainer.epochs=1",
           "trainer.chunk_words=1000", "trainer.ckpt_every=0", "eval.projector_words=0",
           f"trainer.init_from={tmp_path}/a/vectors.pt", "data.vocab_update=true",
           f"hydra.run.dir={tmp_path}/dist"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "dist" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    new = torch.load(tmp_path / "dist" / "vectors.pt", weights_only=True)
    v = len(old["words"])
    assert new["words"][:v] == old["words"]
    index = {w: i for i, w in enumerate(new["words"])}
    for w in A_ONLY:
        assert torch.equal(new["vectors"][index[w]], old["vectors"][index[w]])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_continue_on_cuda_from_a_cpu_run(corpora, tmp_path):
    a, b = corpora
    train(cfg_for(a), tmp_path / "a")
    old = torch.load(tmp_path / "a" / "vectors.pt", weights_only=True)
    train(cfg_for(b, "trainer=gpu", "trainer.progress=false", "trainer.batch_size=256",
                  f"trainer.init_from={tmp_path}/a/vectors.pt", "data.vocab_update=true"),
          tmp_path / "b")
    new = torch.load(tmp_path / "b" / "vectors.pt", weights_only=True)
    assert new["words"][: len(old["words"])] == old["words"]
    index = {w: i for i, w in enumerate(new["words"])}
    for w in A_ONLY:
        assert torch.equal(new["vectors"][index[w]], old["vectors"][index[w]])
