"""corpus.py: index tensors that decode back to the text, the cache, errors, gensim parity."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from tests.conftest import docs_of
from w2v import corpus as corpus_mod
from w2v.config import DataConfig
from w2v.corpus import build_corpus, load_corpus
from w2v.errors import W2VError
from w2v.tokenizer import Tokenizer
from w2v.vocab import Vocab

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path, monkeypatch):
    """Keep the datasets Arrow cache of each test in tmp, not ~/.cache/huggingface."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))


def reference_docs(lines: list[str], min_count: int, m: int) -> tuple[Vocab, list[list[str]]]:
    """The spec, written the slow obvious way: cut rows every m raw words, then drop OOV."""
    tok = Tokenizer()
    rows = [tok(line) for line in lines]
    counts = Counter(t for r in rows for t in r)
    first = list(dict.fromkeys(t for r in rows for t in r))
    vocab = Vocab.from_counts(first, [counts[w] for w in first], min_count)
    docs = []
    for r in rows:
        for i in range(0, len(r), m):
            d = [t for t in r[i : i + m] if t in vocab]
            if d:
                docs.append(d)
    return vocab, docs


def test_ids_decode_to_the_text_minus_oov(tmp_path, planted):
    lines = planted.path.read_text().splitlines()
    lines[5:5] = ["", "   ", "UNIQUE1 UNIQUE2"]  # an empty row, a blank row, an all-OOV row
    lines.append("e0f0 " * 25)  # a long row: cut into pseudo-documents of 7 raw words
    path = tmp_path / "c.txt"
    path.write_text("\n".join(lines))
    c = build_corpus(DataConfig(path=str(path), min_count=3, max_doc_words=7), progress=False)
    vocab, docs = reference_docs(lines, 3, 7)
    assert c.vocab.words == vocab.words and c.vocab.counts.tolist() == vocab.counts.tolist()
    assert docs_of(c) == docs
    assert c.ids.dtype == torch.int32 and c.doc_offsets.dtype == torch.int64
    assert int(c.doc_offsets[-1]) == len(c.ids) == c.vocab.total
    assert c.raw_tokens == sum(len(line.split()) for line in lines)
    assert c.meta["documents"] == c.num_docs == len(docs)


def test_max_vocab_keeps_the_most_frequent(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a a a a b b b c c d\n")
    c = build_corpus(DataConfig(path=str(path), min_count=1, max_vocab=2), progress=False)
    assert c.vocab.words == ["a", "b"] and c.raw_tokens == 10
    assert docs_of(c) == [["a", "a", "a", "a", "b", "b", "b"]]


def test_regex_tokenizer_is_recorded(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("Don't stop, don't!\n")
    c = build_corpus(DataConfig(path=str(path), min_count=1, token_pattern=r"[a-z']+"),
                     progress=False)
    assert c.vocab.words == ["don't", "stop"]
    assert Vocab.load(c.path / "vocab.json").tokenizer == Tokenizer(True, r"[a-z']+")


def test_streaming_builds_the_same_corpus(tmp_path, planted):
    plain = build_corpus(DataConfig(path=str(planted.path), cache_dir=str(tmp_path / "a")),
                         progress=False)
    streamed = build_corpus(DataConfig(path=str(planted.path), streaming=True,
                                       cache_dir=str(tmp_path / "b")), progress=False)
    assert torch.equal(plain.ids, streamed.ids)
    assert torch.equal(plain.doc_offsets, streamed.doc_offsets)


# --- the cache ---------------------------------------------------------------------------------


def test_rerun_hits_the_cache_without_datasets(tmp_path, planted, monkeypatch):
    cfg = DataConfig(path=str(planted.path))
    first = build_corpus(cfg, progress=False)
    assert not first.cache_hit
    assert first.path.parent == Path(os.environ["W2V_CACHE"])
    assert {p.name for p in first.path.iterdir()} == {"ids.npy", "doc_offsets.npy",
                                                     "vocab.json", "meta.json"}

    def no_load(*args, **kwargs):
        raise AssertionError("a cache hit must not load the dataset")

    monkeypatch.setattr("w2v.sources.load_text_dataset", no_load)
    again = build_corpus(cfg, progress=False)
    assert again.cache_hit and again.path == first.path
    assert torch.equal(again.ids, first.ids) and again.vocab.words == first.vocab.words
    # Memory-mapped from the cache file, not read into memory.
    assert isinstance(np.load(again.path / "ids.npy", mmap_mode="r"), np.memmap)


def test_a_cache_hit_imports_neither_datasets_nor_pyarrow(tmp_path, planted):
    """A training run on a cached corpus must not pay for `datasets` and pyarrow (about a
    second and a large part of its memory): a fresh process imports the trainer, hits the
    cache, and neither library is in sys.modules."""
    cache = tmp_path / "cache"
    cfg = DataConfig(path=str(planted.path), cache_dir=str(cache))
    built = build_corpus(cfg, progress=False)
    code = (
        "import sys, w2v.train\n"
        "from w2v.config import DataConfig\n"
        "from w2v.corpus import build_corpus\n"
        f"c = build_corpus(DataConfig(path={str(planted.path)!r}, cache_dir={str(cache)!r}),"
        " progress=False)\n"
        "assert c.cache_hit and len(c.ids) > 0\n"
        "print(sorted(m for m in ('datasets', 'pyarrow') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
    assert len(built.ids) > 0


def test_cache_key_follows_settings_and_file(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a b c a b a\n")
    base = corpus_mod.cache_path(DataConfig(path=str(path), min_count=1))
    for change in ({"min_count": 2}, {"max_vocab": 2}, {"lowercase": False},
                   {"token_pattern": "a"}, {"max_doc_words": 3}, {"text_column": "body"}):
        assert corpus_mod.cache_path(DataConfig(path=str(path), **{"min_count": 1, **change})
                                     ) != base
    assert corpus_mod.cache_path(DataConfig(path=str(path), min_count=1, streaming=True)) == base
    path.write_text("a b c a b a d\n")
    assert corpus_mod.cache_path(DataConfig(path=str(path), min_count=1)) != base
    assert corpus_mod.cache_path(DataConfig(path=str(path), cache_dir=str(tmp_path / "x"),
                                            min_count=1)).parent == tmp_path / "x"


def test_interrupted_build_leaves_nothing_trusted(tmp_path, planted, monkeypatch):
    cfg = DataConfig(path=str(planted.path))

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_mod, "_encode", boom)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(cfg, progress=False)
    root = Path(os.environ["W2V_CACHE"])
    # Neither a final folder nor a stray temp folder, nor the cache root the build created.
    assert not root.exists()
    monkeypatch.undo()
    monkeypatch.setenv("W2V_CACHE", str(root))
    c = build_corpus(cfg, progress=False)
    assert not c.cache_hit and len(c.ids) > 0


def test_load_corpus_rejects_other_formats(tmp_path, planted):
    c = build_corpus(DataConfig(path=str(planted.path)), progress=False)
    (c.path / "meta.json").write_text('{"format": 999}')
    with pytest.raises(W2VError, match="delete it to rebuild"):
        load_corpus(c.path)


# --- bad input --------------------------------------------------------------------------------


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n\n")
    with pytest.raises(W2VError, match="has no words"):
        build_corpus(DataConfig(path=str(tmp_path / "empty.txt")), progress=False)


def test_every_word_under_min_count(tmp_path):
    (tmp_path / "c.txt").write_text("a b c a b a\n")
    with pytest.raises(W2VError, match=r"min_count=5.*3 word types.*\('a'\) occurs 3 times"):
        build_corpus(DataConfig(path=str(tmp_path / "c.txt")), progress=False)


def test_undecodable_bytes_are_counted(tmp_path):
    # a few stray bytes (under corpus.MAX_UNDECODABLE of the tokens) are replaced and counted
    (tmp_path / "c.txt").write_bytes(b"caf\xe9 caf\xe9" + b" ok" * 20 + b"\n")
    c = build_corpus(DataConfig(path=str(tmp_path / "c.txt"), min_count=1), progress=False)
    assert c.vocab.words == ["ok", "caf\ufffd"] and c.meta["replaced_tokens"] == 2


def run_cli(*args: str, env_extra: dict | None = None, cwd: Path = REPO
            ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "w2v.data", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_summary_then_cache_hit(tmp_path, planted):
    """The summary, then a cache hit; the command leaves nothing in the current directory
    (no Hydra run folder, no log file)."""
    args = ("data=local", f"data.path={planted.path}", "trainer.progress=false")
    here = tmp_path / "here"
    here.mkdir()
    first = run_cli(*args, cwd=here)
    assert first.returncode == 0, first.stderr
    assert "types:" in first.stdout and "retained tokens:" in first.stdout
    assert "built now" in first.stdout
    second = run_cli(*args, cwd=here)
    assert second.returncode == 0 and "(hit)" in second.stdout
    assert list(here.iterdir()) == []


def test_cli_prints_one_error_line(tmp_path):
    res = run_cli("data=local", f"data.path={tmp_path / 'missing.txt'}",
                  f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: data.path='{tmp_path / 'missing.txt'}' does not exist; give a file, "
        "directory or glob"]


# --- real data ----------------------------------------------------------------------------------


def test_text8_prefix_vocab_equals_gensim(text8_prefix, tmp_path):
    word2vec = pytest.importorskip("gensim.models.word2vec")
    model = word2vec.Word2Vec(min_count=5)
    model.build_vocab(word2vec.Text8Corpus(str(text8_prefix)))
    theirs = {w: model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key}

    c = build_corpus(DataConfig(path=str(text8_prefix), min_count=5), progress=False)
    ours = dict(zip(c.vocab.words, c.vocab.counts.tolist(), strict=True))
    assert len(ours) == len(theirs) == 22_541
    assert ours == theirs
    assert len(c.ids) == c.vocab.total == sum(theirs.values())
    assert c.raw_tokens == model.corpus_total_words == 2_139_748
    # text8 is one row: pseudo-documents of 10,000 raw words, like Text8Corpus's sentences.
    assert c.num_docs == -(-c.raw_tokens // 10_000)


# --- data.max_vocab_size ------------------------------------------------------------------------


def reduce_vocab_reference(tokens: list[str], max_size: int) -> tuple[dict[str, int], list[int]]:
    """word2vec.c's ReduceVocab after every token, the slow obvious way: word -> count in
    (re)insertion order, and the positions whose occurrence is still counted at the end."""
    counts: dict[str, int] = {}
    since: dict[str, list[int]] = {}  # positions counted since the word's last insertion
    min_reduce = 1
    for pos, t in enumerate(tokens):
        counts[t] = counts.get(t, 0) + 1
        since.setdefault(t, []).append(pos)
        while len(counts) > max_size:
            for w in [w for w, c in counts.items() if c <= min_reduce]:
                del counts[w], since[w]
            min_reduce += 1
    return counts, sorted(p for ps in since.values() for p in ps)


def test_max_vocab_size_prunes_like_word2vec(tmp_path, monkeypatch):
    # One token per chunk and per group, so pruning is checked after every token (word2vec.c's
    # granularity); the real build checks after each group of about GROUP_TOKENS tokens.
    monkeypatch.setattr(corpus_mod, "GROUP_TOKENS", 1)
    monkeypatch.setattr("w2v.tokens.CHUNK_BYTES", 1)
    rng = np.random.default_rng(0)
    tokens = [f"w{r}" for r in np.minimum(rng.zipf(1.3, 1500), 400)]
    lines = [" ".join(tokens[i : i + 50]) for i in range(0, len(tokens), 50)]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(lines) + "\n")
    c = build_corpus(DataConfig(path=str(path), min_count=2, max_vocab_size=40,
                                max_doc_words=50), progress=False)
    counts, positions = reduce_vocab_reference(tokens, 40)
    first = list(counts)
    vocab = Vocab.from_counts(first, [counts[w] for w in first], min_count=2)
    assert c.meta["pruned"] > 1
    assert c.vocab.words == vocab.words and c.vocab.counts.tolist() == vocab.counts.tolist()
    expected = [vocab[tokens[p]] for p in positions if tokens[p] in vocab]
    assert c.ids.tolist() == expected and len(c.ids) == c.vocab.total
    # Documents (rows of 50 words) keep their boundaries through the drop.
    rows = [sum(1 for p in positions if lo <= p < lo + 50 and tokens[p] in vocab)
            for lo in range(0, len(tokens), 50)]
    assert np.diff(c.doc_offsets.numpy()).tolist() == [n for n in rows if n]


def test_max_vocab_size_above_the_vocabulary_changes_nothing(tmp_path, planted):
    plain = build_corpus(DataConfig(path=str(planted.path)), progress=False)
    capped = build_corpus(DataConfig(path=str(planted.path), max_vocab_size=10_000),
                          progress=False)
    assert capped.path != plain.path and capped.meta["pruned"] == 0
    assert capped.vocab.words == plain.vocab.words and torch.equal(capped.ids, plain.ids)


def test_leading_empty_rows_and_whitespace_only_pieces(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n\n  \na b a b c\nb a\n\n")
    c = build_corpus(DataConfig(path=str(path), min_count=1), progress=False)
    assert docs_of(c) == [["a", "b", "a", "b", "c"], ["b", "a"]]


def test_full_disk_while_building_the_cache_is_one_clear_error(tmp_path, monkeypatch):
    import errno

    import w2v.corpus as corpus_mod
    from w2v.config import DataConfig
    from w2v.errors import W2VError

    text = tmp_path / "c.txt"
    text.write_text("a b c a b a\n" * 20)
    cfg = DataConfig(path=str(text), min_count=1, cache_dir=str(tmp_path / "cache"))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(corpus_mod, "_build", full)
    with pytest.raises(W2VError, match="No space left on device.*data.cache_dir"):
        corpus_mod.build_corpus(cfg, progress=False)
    assert not (tmp_path / "cache").exists()  # no half-written cache, not even its folder
    monkeypatch.undo()
    assert len(corpus_mod.build_corpus(cfg, progress=False).vocab) == 3


# --- a full disk while ids.npy is written (docs/reliability.md, "Inputs and numbers") ---------


def _zipf_corpus(path: Path, tokens: int, words: int = 1000, per_line: int = 1000) -> Path:
    rng = np.random.default_rng(0)
    ids = rng.zipf(1.3, tokens) % words
    lines = [" ".join(f"w{i}" for i in ids[s : s + per_line]) for s in range(0, tokens, per_line)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs (tests run as root in this project's containers); skipped where mounting
    is not allowed."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_while_writing_ids_is_one_line_not_sigbus(tmp_path, small_tmpfs):
    """600k tokens: raw ids (2.4 MB) fit in the 4 MiB tmpfs, ids.npy (2.4 MB more) does not.
    ids.npy used to be written through a memory map: the process died of SIGBUS (exit 135,
    no message) and left its temp folder."""
    text = _zipf_corpus(tmp_path / "c.txt", 600_000)
    cache = small_tmpfs / "cache"
    res = run_cli("data=local", f"data.path={text}", f"data.cache_dir={cache}",
                  "trainer.progress=false",
                  env_extra={"HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert res.stderr.splitlines() == [
        f"error: cannot write the corpus cache under {cache}: No space left on device; free "
        "some space or point data.cache_dir (or $W2V_CACHE) at a writable folder"]
    assert list(small_tmpfs.iterdir()) == []  # no temp folder, not even the cache root


def test_a_write_error_in_ids_npy_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """The same without a tmpfs: ids.npy's writes fail with ENOSPC after 1 KB."""
    import builtins
    import errno

    text = _zipf_corpus(tmp_path / "c.txt", 5_000)
    cfg = DataConfig(path=str(text), min_count=1, cache_dir=str(tmp_path / "cache"))

    class Full:
        def __init__(self, f):
            self.f, self.left = f, 1024

        def write(self, data):
            if len(data) > self.left:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def failing_open(file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 (returned open)
        return Full(f) if str(file).endswith("ids.npy") and "w" in mode else f

    monkeypatch.setattr(corpus_mod, "open", failing_open, raising=False)
    with pytest.raises(W2VError, match="No space left on device; free some space"):
        build_corpus(cfg, progress=False)
    assert not (tmp_path / "cache").exists()
    monkeypatch.undo()
    assert build_corpus(cfg, progress=False).ids.numel() == 5_000


# --- a damaged cache is one line, not a traceback mid-run --------------------------------------


def _damage_ids(folder: Path) -> None:
    ids = np.load(folder / "ids.npy")
    ids[7] = 10_000  # past any vocabulary here
    np.save(folder / "ids.npy", ids)


def _damage_offsets(folder: Path) -> None:
    offsets = np.load(folder / "doc_offsets.npy")
    offsets[1], offsets[2] = offsets[2], offsets[1]  # a document that runs backwards
    np.save(folder / "doc_offsets.npy", offsets)


def _truncate_offsets(folder: Path) -> None:
    np.save(folder / "doc_offsets.npy", np.load(folder / "doc_offsets.npy")[:-1])


@pytest.mark.parametrize("damage", [_damage_ids, _damage_offsets, _truncate_offsets],
                         ids=["ids-out-of-range", "offsets-backwards", "offsets-short"])
def test_a_damaged_cache_is_refused_at_load(tmp_path, planted, damage):
    from tests.conftest import planted_cfg
    from w2v.train import train

    cfg = planted_cfg(planted, "trainer.engine=autograd", "trainer.epochs=1",
                      f"data.cache_dir={tmp_path / 'cache'}", "eval.projector_words=0")
    corpus = build_corpus(cfg.data, progress=False)
    damage(corpus.path)
    with pytest.raises(W2VError) as err:
        load_corpus(corpus.path)
    assert str(err.value).startswith(f"corpus cache {corpus.path} is damaged: ")
    assert str(err.value).endswith("; delete it to rebuild")
    # The autograd engine used to fail mid-run (IndexError, or batches past the ids).
    with pytest.raises(W2VError, match="is damaged"):
        train(cfg, tmp_path / "run")
