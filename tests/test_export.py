"""export.py: vectors.pt, word2vec text/binary (checked against gensim), nn.Embedding, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors as GensimKV
from torch import nn

from w2v.config import ExportConfig
from w2v.errors import W2VError
from w2v.export import (
    export_run,
    load_embedding,
    load_vectors,
    save_vectors,
    write_word2vec,
)
from w2v.export import (
    main as export_main,
)

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["the", "of", "été", "日本語", "naïve", "Zürich", "emoji🙂", "a.b", "x"]
TOKENIZER = {"lowercase": True, "pattern": None}


def table(v: int = len(WORDS), d: int = 7, seed: int = 0) -> torch.Tensor:
    # Spread magnitudes so formatting sees tiny, huge and negative floats.
    g = torch.Generator().manual_seed(seed)
    return torch.randn(v, d, generator=g) * torch.logspace(-6, 6, d)


def counts(v: int = len(WORDS)) -> np.ndarray:
    return np.arange(v, 0, -1, dtype=np.int64) * 10


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


# ---- vectors.pt ----------------------------------------------------------------------------


def test_vectors_pt_format_loads_with_weights_only(tmp_path):
    vec, out = table(), table(seed=1)
    save_vectors(tmp_path / "v.pt", WORDS, counts(), vec, TOKENIZER, output=out)
    obj = torch.load(tmp_path / "v.pt", weights_only=True)
    assert obj["format"] == "w2v.vectors/1"
    assert obj["words"] == WORDS
    assert obj["counts"].dtype == torch.int64 and obj["counts"].tolist() == counts().tolist()
    assert obj["vectors"].dtype == torch.float32 and torch.equal(obj["vectors"], vec)
    assert torch.equal(obj["output"], out)
    assert obj["tokenizer"] == TOKENIZER
    kv = load_vectors(tmp_path / "v.pt")
    assert kv.words == WORDS and torch.equal(kv.vectors, vec)
    assert kv.counts.tolist() == counts().tolist() and kv.tokenizer == TOKENIZER


def test_save_vectors_checks_shapes(tmp_path):
    with pytest.raises(W2VError, match="expected"):
        save_vectors(tmp_path / "v.pt", WORDS, counts(), table(v=3), TOKENIZER)
    assert not (tmp_path / "v.pt").exists()


# ---- word2vec formats against gensim -------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_files_read_back_identically_by_gensim(tmp_path, binary):
    vec = table()
    path = tmp_path / ("v.bin" if binary else "v.txt")
    write_word2vec(path, WORDS, vec, binary=binary)
    g = GensimKV.load_word2vec_format(str(path), binary=binary)
    assert g.index_to_key == WORDS
    # '%.9g' round-trips float32, so the text format is exact too, not just close.
    np.testing.assert_array_equal(g.vectors, vec.numpy())
    ours = load_vectors(path)
    assert ours.words == WORDS and torch.equal(ours.vectors, vec)


@pytest.mark.parametrize("binary", [False, True])
def test_gensim_written_files_load_identically(tmp_path, binary):
    vec = table().numpy()
    g = GensimKV(vec.shape[1])
    g.add_vectors(WORDS, vec)
    path = tmp_path / "gensim.w2v"  # no telling extension: the content decides
    g.save_word2vec_format(str(path), binary=binary)
    kv = load_vectors(path)
    assert kv.words == WORDS
    np.testing.assert_array_equal(kv.vectors.numpy(), vec)


def test_word2vec_c_text_layout_with_trailing_spaces_and_no_header(tmp_path):
    # word2vec.c writes "%lf " per value (a trailing space); GloVe files have no header.
    (tmp_path / "c.txt").write_text("2 3\nfoo 0.5 -1 2e-3 \nbar 1 2 3 \n", encoding="utf-8")
    (tmp_path / "glove.txt").write_text("foo 0.5 -1 2e-3\nbar 1 2 3\n", encoding="utf-8")
    for name in ("c.txt", "glove.txt"):
        kv = load_vectors(tmp_path / name)
        assert kv.words == ["foo", "bar"]
        torch.testing.assert_close(kv.vectors, torch.tensor([[0.5, -1, 2e-3], [1.0, 2, 3]]))


def test_binary_written_as_word2vec_c_does(tmp_path):
    vec = table(v=2, d=3)
    write_word2vec(tmp_path / "v.bin", ["ab", "c"], vec, binary=True)
    data = (tmp_path / "v.bin").read_bytes()
    rows = vec.numpy().astype("<f4")
    assert data == b"2 3\nab " + rows[0].tobytes() + b"\nc " + rows[1].tobytes() + b"\n"


@pytest.mark.parametrize("suffix", [".txt", ".bin"])
def test_export_load_export_is_byte_identical(tmp_path, suffix):
    vec = table()
    if suffix == ".txt":
        write_word2vec(tmp_path / "a.txt", WORDS, vec, binary=False)
        write_word2vec(tmp_path / "b.txt", WORDS, load_vectors(tmp_path / "a.txt").vectors,
                       binary=False)
    else:
        write_word2vec(tmp_path / "a.bin", WORDS, vec, binary=True)
        write_word2vec(tmp_path / "b.bin", WORDS, load_vectors(tmp_path / "a.bin").vectors,
                       binary=True)
    assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()


def test_vectors_pt_export_load_export_is_byte_identical(tmp_path):
    save_vectors(tmp_path / "a.pt", WORDS, counts(), table(), TOKENIZER)
    kv = load_vectors(tmp_path / "a.pt")
    save_vectors(tmp_path / "b.pt", kv.words, kv.counts, kv.vectors, kv.tokenizer)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_words_with_whitespace_become_underscores_with_a_warning(tmp_path):
    words = ["new york", "tab\there", "plain"]
    with pytest.warns(UserWarning, match="2 words contain whitespace"):
        write_word2vec(tmp_path / "v.txt", words, table(v=3), binary=False)
    assert load_vectors(tmp_path / "v.txt").words == ["new_york", "tab_here", "plain"]
    with pytest.warns(UserWarning):
        write_word2vec(tmp_path / "v.bin", words, table(v=3), binary=True)
    assert GensimKV.load_word2vec_format(str(tmp_path / "v.bin"), binary=True).index_to_key == [
        "new_york", "tab_here", "plain"]
    save_vectors(tmp_path / "v.pt", words, None, table(v=3), TOKENIZER)  # kept verbatim
    assert load_vectors(tmp_path / "v.pt").words == words


def test_whitespace_collision_and_empty_word_are_refused(tmp_path):
    with warnings.catch_warnings(), pytest.raises(W2VError, match="both become 'a_b'"):
        warnings.simplefilter("ignore")
        write_word2vec(tmp_path / "v.txt", ["a b", "a_b"], table(v=2), binary=False)
    with pytest.raises(W2VError, match="empty word"):
        write_word2vec(tmp_path / "v.txt", ["", "a"], table(v=2), binary=False)
    assert not (tmp_path / "v.txt").exists()


# ---- damaged input -------------------------------------------------------------------------


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    write_word2vec(tmp_path / "good.bin", WORDS, table(), binary=True)
    write_word2vec(tmp_path / "good.txt", WORDS, table(), binary=False)
    good_bin = (tmp_path / "good.bin").read_bytes()
    good_txt = (tmp_path / "good.txt").read_text(encoding="utf-8")
    lines = good_txt.splitlines(keepends=True)
    n = len(WORDS)
    cases = {
        "empty.txt": (b"", "is empty"),
        "blank.bin": (b"\n\n", "is empty"),
        "truncated.txt": ("".join(lines[:-2]).encode(), f"header says {n} words but"),
        "truncated.bin": (good_bin[:-20], "truncated"),
        "more.txt": (good_txt.replace(f"{n} 7", f"{n - 2} 7", 1).encode(), "header says"),
        "more.bin": (good_bin.replace(f"{n} 7".encode(), f"{n - 2} 7".encode(), 1),
                     "bytes follow"),
        "dims.txt": (good_txt.replace(f"{n} 7", f"{n} 8", 1).encode(), "has 7 values, expected 8"),
        "notnum.txt": (good_txt.replace(lines[1].split()[1], "abc", 1).encode(), "not numbers"),
        "noheader.bin": (good_bin.split(b"\n", 1)[1], "header"),
        "latin1.txt": ("1 1\ncaf\xe9 0.5\n".encode("latin-1"), "not UTF-8"),
        "damaged.pt": (b"PK\x03\x04garbage", "not a readable vectors.pt"),
    }
    out = {}
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        out[name] = (tmp_path / name, msg)
    return out


def test_damaged_files_raise_one_clear_error(tmp_path):
    for name, (path, msg) in _bad_files(tmp_path).items():
        with pytest.raises(W2VError, match=msg):
            load_vectors(path)
        assert name  # (for the traceback when one fails)
    with pytest.raises(W2VError, match="does not exist"):
        load_vectors(tmp_path / "missing.pt")


def test_checkpoint_given_as_vectors_points_to_export(tmp_path):
    torch.save({"format": "w2v.checkpoint/1", "model": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(W2VError, match="python -m w2v.export"):
        load_vectors(tmp_path / "ckpt.pt")


# ---- nn.Embedding --------------------------------------------------------------------------


def test_load_embedding_rows_equal_the_vectors(tmp_path):
    vec = table()
    save_vectors(tmp_path / "v.pt", WORDS, counts(), vec, TOKENIZER)
    emb, index = load_embedding(tmp_path / "v.pt")
    assert isinstance(emb, nn.Embedding) and not emb.weight.requires_grad
    assert index == {w: i for i, w in enumerate(WORDS)}
    assert torch.equal(emb(torch.tensor([index["日本語"]]))[0], vec[3])
    assert emb.padding_idx is None and emb.weight.shape == vec.shape


def test_load_embedding_padding_and_unknown_rows(tmp_path):
    vec = table()
    write_word2vec(tmp_path / "v.bin", WORDS, vec, binary=True)
    emb, index = load_embedding(tmp_path / "v.bin", freeze=False, padding=True, unknown=True)
    n = len(WORDS)
    assert index["<pad>"] == n and index["<unk>"] == n + 1 and index["x"] == n - 1
    assert emb.padding_idx == n and emb.weight.requires_grad
    assert torch.equal(emb.weight[:n], vec)
    assert torch.equal(emb.weight[n], torch.zeros(7))
    torch.testing.assert_close(emb.weight[n + 1], vec.mean(0))
    emb0, index0 = load_embedding(tmp_path / "v.bin", unknown=True, unknown_init="zeros")
    assert index0["<unk>"] == n and "<pad>" not in index0
    assert torch.equal(emb0.weight[n], torch.zeros(7))


def test_load_embedding_refuses_a_clashing_special_word(tmp_path):
    save_vectors(tmp_path / "v.pt", ["a", "<unk>"], None, table(v=2), TOKENIZER)
    with pytest.raises(W2VError, match="already has '<unk>'"):
        load_embedding(tmp_path / "v.pt", unknown=True)


def test_pretrained_embedding_trains_a_downstream_classifier(tmp_path):
    # Class = which half of the vocabulary a sentence's words come from; the frozen embedding
    # has to carry that information for the linear head to learn it.
    g = torch.Generator().manual_seed(0)
    v, d = 40, 8
    centers = torch.randn(2, d, generator=g) * 2
    labels_of_word = torch.arange(v) % 2
    vec = centers[labels_of_word] + 0.3 * torch.randn(v, d, generator=g)
    save_vectors(tmp_path / "v.pt", [f"w{i}" for i in range(v)], None, vec, TOKENIZER)
    emb, index = load_embedding(tmp_path / "v.pt", padding=True)

    class MeanPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = emb, nn.Linear(d, 2)

        def forward(self, ids):
            mask = (ids != index["<pad>"]).unsqueeze(-1).float()
            pooled = (self.emb(ids) * mask).sum(1) / mask.sum(1)  # (B, D)
            return self.head(pooled)

    y = torch.randint(0, 2, (64,), generator=g)
    pool = [torch.nonzero(labels_of_word == c).flatten() for c in range(2)]
    ids = torch.stack([pool[c][torch.randint(0, len(pool[c]), (6,), generator=g)] for c in y])
    ids[:, -2:] = index["<pad>"]  # padded sentences
    model = MeanPool()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(ids), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert torch.equal(model.emb.weight[:v], vec)  # frozen: the pretrained rows are untouched


def test_load_embedding_passes_the_from_pretrained_options_through(tmp_path):
    vec = table() * 10  # rows with norms well above 1
    save_vectors(tmp_path / "v.pt", WORDS, counts(), vec, TOKENIZER)
    emb, _ = load_embedding(tmp_path / "v.pt", max_norm=1.0, norm_type=2.0,
                            scale_grad_by_freq=True, sparse=True)
    assert (emb.max_norm, emb.norm_type, emb.scale_grad_by_freq, emb.sparse) == (
        1.0, 2.0, True, True)
    emb(torch.tensor([0, 1]))  # max_norm renormalises the looked-up rows in place
    assert emb.weight[:2].norm(dim=1).max() <= 1.0 + 1e-5
    assert torch.equal(emb.weight[2:], vec[2:])


def test_a_sparse_pretrained_embedding_trains_with_sparse_adam(tmp_path):
    """sparse=True: the gradient holds only the rows a batch used, so torch.optim.SparseAdam
    can train a large-vocabulary embedding; rows no batch uses stay as loaded."""
    g = torch.Generator().manual_seed(0)
    v, d = 200, 8
    vec = torch.randn(v, d, generator=g)
    save_vectors(tmp_path / "v.pt", [f"w{i}" for i in range(v)], None, vec, TOKENIZER)
    emb, index = load_embedding(tmp_path / "v.pt", freeze=False, sparse=True, padding=True)
    head = nn.Linear(d, 2)
    used = torch.arange(0, 100)  # the batches draw from the first half of the vocabulary only
    ids = used[torch.randint(0, 100, (128, 5), generator=g)]
    y = (ids % 2 == 0).sum(1).gt(2).long()  # a label the embedding must learn to carry
    sparse_opt = torch.optim.SparseAdam(list(emb.parameters()), lr=0.05)
    dense_opt = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        loss = nn.functional.cross_entropy(head(emb(ids).mean(1)), y)
        sparse_opt.zero_grad()
        dense_opt.zero_grad()
        loss.backward()
        assert emb.weight.grad.is_sparse
        sparse_opt.step()
        dense_opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(emb.weight[:100], vec[:100])
    assert torch.equal(emb.weight[100:v], vec[100:])  # untouched rows: sparse updates only
    assert torch.equal(emb.weight[index["<pad>"]], torch.zeros(d))


# ---- a run's exports and the CLI -----------------------------------------------------------


def stand_in(v_out: int | None = None, v: int = len(WORDS), d: int = 7):
    """Objects shaped like w2v.model.Word2Vec and w2v.vocab.Vocab."""
    model = SimpleNamespace(input=nn.Embedding(v, d), output=nn.Linear(d, v_out or v, bias=False),
                            subwords=None)
    model.word_vectors = lambda: model.input.weight.detach()
    tok = SimpleNamespace(to_dict=lambda: dict(TOKENIZER))
    return model, SimpleNamespace(words=WORDS[:v], counts=counts(v), tokenizer=tok)


def test_export_run_writes_every_requested_file(tmp_path):
    model, vocab = stand_in()
    paths = export_run(tmp_path, model, vocab, ExportConfig(binary=True, average_output=True))
    names = sorted(p.name for p in paths)
    assert names == ["vectors.bin", "vectors.pt", "vectors.txt",
                     "vectors_avg.bin", "vectors_avg.pt", "vectors_avg.txt"]
    inp, out = model.input.weight.detach(), model.output.weight.detach()
    obj = torch.load(tmp_path / "vectors.pt", weights_only=True)
    assert torch.equal(obj["vectors"], inp) and torch.equal(obj["output"], out)
    assert torch.equal(load_vectors(tmp_path / "vectors.bin").vectors, inp)
    assert torch.equal(load_vectors(tmp_path / "vectors_avg.txt").vectors, (inp + out) / 2)


def test_export_run_with_hierarchical_softmax_has_no_output_vectors(tmp_path):
    model, vocab = stand_in(v_out=len(WORDS) - 1)
    with pytest.warns(UserWarning, match="hierarchical softmax"):
        paths = export_run(tmp_path, model, vocab, ExportConfig(average_output=True))
    assert sorted(p.name for p in paths) == ["vectors.pt", "vectors.txt"]
    assert "output" not in torch.load(tmp_path / "vectors.pt", weights_only=True)


def test_export_cli_from_a_checkpoint(tmp_path):
    model, vocab = stand_in()
    ckpt = {"format": "w2v.checkpoint/1",
            "model": {"input.weight": model.input.weight.detach(),
                      "output.weight": model.output.weight.detach()},
            "vocab": {"words": WORDS, "counts": counts().tolist(), "tokenizer": TOKENIZER},
            "step": 3}
    torch.save(ckpt, tmp_path / "step-00000003.pt")
    res = run_cli("-m", "w2v.export", f"checkpoint={tmp_path / 'step-00000003.pt'}",
                  f"out={tmp_path / 'out'}", "binary=true")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "vectors.bin", "vectors.pt", "vectors.txt"]
    kv = load_vectors(tmp_path / "out" / "vectors.pt")
    assert kv.words == WORDS and torch.equal(kv.vectors, model.input.weight.detach())


def test_export_reads_checkpoints_as_train_writes_them(tmp_path):
    """One checkpoint reader: a checkpoint from checkpoint.Writer (its vocab is Vocab.to_dict())
    exports through checkpoint.load, which checks the format; a file without it is refused."""
    from w2v import checkpoint
    from w2v.config import Config, ModelConfig
    from w2v.export import export_checkpoint
    from w2v.model import Word2Vec
    from w2v.tokenizer import Tokenizer
    from w2v.vocab import Vocab

    vocab = Vocab(WORDS, counts(), Tokenizer(lowercase=False), min_count=3, max_vocab=50)
    model = Word2Vec(len(WORDS), 7, arch="skipgram")
    engine = SimpleNamespace(state_dict=lambda: None)
    cfg = Config(model=ModelConfig(arch="skipgram", dim=7))
    writer = checkpoint.Writer(tmp_path / "ckpt", checkpoint.run_record(vocab, cfg))
    path = writer.save(model, engine, checkpoint.Position(), wait=True)
    raw = torch.load(path, weights_only=True)["vocab"]
    assert isinstance(raw, str)  # one JSON string (format 2), read back by checkpoint.load
    assert checkpoint.load(path)["vocab"] == vocab.to_dict()
    paths = export_checkpoint(path, tmp_path / "out", ExportConfig())
    assert [p.name for p in paths] == ["vectors.pt", "vectors.txt"]
    kv = load_vectors(tmp_path / "out" / "vectors.pt")
    assert kv.words == WORDS and kv.counts.tolist() == counts().tolist()
    assert torch.equal(kv.vectors, model.input.weight.detach())
    assert kv.tokenizer == {"lowercase": False, "pattern": None}
    state = torch.load(path, weights_only=True)
    del state["format"]
    torch.save(state, tmp_path / "no-format.pt")
    with pytest.raises(W2VError, match="is not a w2v checkpoint"):
        export_checkpoint(tmp_path / "no-format.pt", tmp_path / "out2", ExportConfig())


@pytest.mark.parametrize("key", ["vectors", "checkpoint"])
def test_a_runs_vectors_pt_exports_to_word2vec_files_gensim_reads(tmp_path, key, capsys):
    """A run that wrote only vectors.pt (export.text=false) gets its word2vec files
    afterwards, under either key (the content decides); gensim reads back equal vectors."""
    model, vocab = stand_in()
    run = tmp_path / "run"
    export_run(run, model, vocab, ExportConfig(text=False))
    assert [p.name for p in run.iterdir()] == ["vectors.pt"]
    export_main([f"{key}={run / 'vectors.pt'}", f"out={run}", "binary=true",
                 "average_output=true"])
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in printed) == [
        "vectors.bin", "vectors.pt", "vectors.txt",
        "vectors_avg.bin", "vectors_avg.pt", "vectors_avg.txt"]
    inp, out = model.input.weight.detach().numpy(), model.output.weight.detach().numpy()
    for name, binary in (("vectors.txt", False), ("vectors.bin", True)):
        gkv = GensimKV.load_word2vec_format(str(run / name), binary=binary)
        assert gkv.index_to_key == WORDS
        np.testing.assert_array_equal(gkv.vectors, inp)
    gavg = GensimKV.load_word2vec_format(str(run / "vectors_avg.bin"), binary=True)
    np.testing.assert_array_equal(gavg.vectors, (torch.from_numpy(inp + out) / 2).numpy())
    kv = load_vectors(run / "vectors.pt")  # rewritten from itself: unchanged
    assert kv.counts.tolist() == counts().tolist() and kv.tokenizer == TOKENIZER


def test_word2vec_text_converts_to_binary(tmp_path):
    write_word2vec(tmp_path / "in.txt", WORDS, table(), binary=False)
    export_main([f"vectors={tmp_path / 'in.txt'}", f"out={tmp_path / 'out'}", "binary=true",
                 "text=false"])
    gkv = GensimKV.load_word2vec_format(str(tmp_path / "out" / "vectors.bin"), binary=True)
    np.testing.assert_array_equal(gkv.vectors, table().numpy())


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    torch.save({"format": "w2v.checkpoint/1", "model": {}}, tmp_path / "broken.pt")
    for argv, msg in (([f"checkpoint={tmp_path / 'nope.pt'}", f"out={tmp_path}"],
                       "does not exist"),
                      ([f"out={tmp_path}"], "checkpoint=PATH"),
                      ([f"checkpoint={tmp_path / 'broken.pt'}", f"vectors={tmp_path}",
                        f"out={tmp_path}"], "one of the two"),
                      ([f"checkpoint={tmp_path / 'broken.pt'}", f"out={tmp_path}"],
                       "not a w2v checkpoint"),
                      (["checkpoint"], "key=value")):
        with pytest.raises(SystemExit) as exit_info:
            export_main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and msg in err, err
