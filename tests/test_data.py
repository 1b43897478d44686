"""The data stages: every local format through `datasets` (sources.py), the Hub failing fast,
plain text in bounded blocks (textlines.py), chunked tokenization (tokens.py)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import time

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from w2v import sources, textlines, tokens
from w2v.config import DataConfig
from w2v.errors import W2VError
from w2v.tokenizer import Tokenizer

ROWS = ["The cat sat", "", "  on the MAT  ", "dog\tand cat"]


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path, monkeypatch):
    """Keep the datasets Arrow cache of each test in tmp, not ~/.cache/huggingface."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    datasets.disable_progress_bars()


def tokens_of(ds, column="text", lowercase=True, pattern=None, max_doc_words=10_000):
    """All tokens and the (pseudo-)documents, decoded from iter_token_chunks."""
    toks, ends, pos = [], [], 0
    for chunk in tokens.iter_token_chunks(ds, column, lowercase, pattern, max_doc_words,
                                        progress=False):
        words = chunk.words.to_pylist()
        toks += [words[c] for c in chunk.codes]
        ends += (chunk.doc_ends + pos).tolist()
        pos += len(chunk.codes)
    bounds = sorted(set([0, *ends]))
    return toks, [toks[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def expected_docs(rows, tokenizer=None, m=10_000):
    tokenizer = tokenizer or Tokenizer()
    docs = []
    for row in rows:
        t = tokenizer(row or "")
        docs += [t[i : i + m] for i in range(0, len(t), m)]
    return docs


def load(path, **kw) -> datasets.Dataset:
    return sources.load_text_dataset(DataConfig(path=str(path), **kw), progress=False)


# --- local formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix,opener", [
    ("txt", open), ("", open), ("txt.gz", gzip.open), ("bz2", bz2.open), ("txt.xz", lzma.open),
])
def test_plain_text_one_document_per_line(tmp_path, suffix, opener):
    path = tmp_path / (f"corpus.{suffix}" if suffix else "corpus")
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(ROWS) + "\n")
    toks, docs = tokens_of(load(path))
    assert docs == [d for d in expected_docs(ROWS) if d]
    assert toks == ["the", "cat", "sat", "on", "the", "mat", "dog", "and", "cat"]


def test_parquet_json_jsonl_with_a_text_column(tmp_path):
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "body": ROWS}), tmp_path / "c.parquet")
    (tmp_path / "c.jsonl").write_text("\n".join(f'{{"body": "{r}"}}'.replace("\t", "\\t")
                                                for r in ROWS))
    (tmp_path / "c.json").write_text('[{"body": "The cat sat"}, {"body": "on the MAT"}]')
    want = expected_docs(ROWS)
    assert tokens_of(load(tmp_path / "c.parquet", text_column="body"), "body")[1] == [
        d for d in want if d]
    assert tokens_of(load(tmp_path / "c.jsonl", text_column="body"), "body")[1] == [
        d for d in want if d]
    assert tokens_of(load(tmp_path / "c.json", text_column="body"), "body")[0] == [
        "the", "cat", "sat", "on", "the", "mat"]


def test_directory_and_glob(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("one two\n")
    (tmp_path / "d" / "b.txt").write_text("three\n")
    (tmp_path / "d" / ".hidden").write_text("not me\n")
    assert sorted(tokens_of(load(tmp_path / "d"))[0]) == ["one", "three", "two"]
    assert tokens_of(load(tmp_path / "d" / "b*.txt"))[0] == ["three"]


def test_save_to_disk_folder_and_split(tmp_path):
    ds = datasets.Dataset.from_dict({"text": ROWS})
    ds.save_to_disk(str(tmp_path / "saved"))
    assert tokens_of(load(tmp_path / "saved"))[1] == [d for d in expected_docs(ROWS) if d]
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(
        str(tmp_path / "dd"))
    assert tokens_of(load(tmp_path / "dd", split="test"))[0] == ["the", "cat", "sat"]
    with pytest.raises(W2VError, match="splits are: train, test"):
        load(tmp_path / "dd", split="validation")


def test_streaming_gives_the_same_tokens(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(ROWS * 50))
    streamed = sources.load_text_dataset(DataConfig(path=str(path), streaming=True), False)
    assert isinstance(streamed, datasets.IterableDataset)
    assert tokens_of(streamed) == tokens_of(load(path))


def test_undecodable_bytes_are_replaced(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"good caf\xe9 word\n")
    toks, _ = tokens_of(load(tmp_path / "bad.txt"))
    assert toks == ["good", "caf\ufffd", "word"]


# --- plain text in bounded blocks ----------------------------------------------------------------

# Bytes that stress the reader: newlines of every kind (a "\r\n" may straddle blocks), Unicode
# and ASCII-control whitespace, multi-byte characters (cut anywhere by the block size) and
# undecodable bytes (a lone lead byte, a truncated emoji, 0xff) next to whitespace.
raw_pieces = st.sampled_from([b"a", b"Bc", b"word ", b" ", b"  ", b"\t", b"\n", b"\r", b"\r\n",
                              b"\x0b", b"\x1c", b"\xc2\x85", b"\xe2\x80\xa8", b"\xc3\xa9",
                              b"\xe3\x80\x80", b"\xc3", b"\xf0\x9f\x98", b"\xff", b"\x00"])
_example = iter(range(10**9))


def text_rows(path):
    """The reader's rows as lines (rows flagged LINE_CONTINUES joined with the next)."""
    lines, line = [], ""
    for table in textlines.text_line_tables(path):
        for text, goes_on in zip(*table.to_pydict().values(), strict=True):
            line += text
            if not goes_on:
                lines.append(line)
                line = ""
    assert line == ""  # the last row of a file never goes on
    return lines


@settings(max_examples=80, deadline=None)
@given(raw=st.lists(raw_pieces, max_size=120).map(b"".join), read=st.integers(1, 12),
       segment=st.integers(1, 12), lowercase=st.booleans(), m=st.integers(2, 7),
       suffix=st.sampled_from(["txt", "txt.gz"]))
def test_plain_text_rows_equal_the_text_builders(tmp_path_factory, raw, read, segment,
                                                  lowercase, m, suffix):
    # Tiny blocks and segments: every line is cut, at every kind of boundary.
    path = tmp_path_factory.mktemp(f"t{next(_example)}") / f"c.{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith("gz") else raw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(textlines, "READ_BYTES", read)
        mp.setattr(textlines, "SEGMENT_BYTES", segment)
        mp.setattr(tokens, "CHUNK_BYTES", 5)
        # datasets' text builder: open(encoding="utf-8", errors="replace"), rows = readlines()
        with open(path.with_suffix(".plain"), "wb") as f:
            f.write(raw)
        with open(path.with_suffix(".plain"), encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
        assert text_rows(path) == lines
        if not raw:
            return
        tok = Tokenizer(lowercase=lowercase)
        want = [t for line in lines for t in tok(line)], [d for d in expected_docs(lines, tok, m)
                                                          if d]
        for streaming in (False, True):
            ds = sources.load_text_dataset(DataConfig(path=str(path), streaming=streaming), False)
            assert tokens_of(ds, lowercase=lowercase, max_doc_words=m) == want


def test_plain_text_rows_equal_datasets_text_builder_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(textlines, "READ_BYTES", 7)
    monkeypatch.setattr(textlines, "SEGMENT_BYTES", 5)
    raw = (b"\xef\xbb\xbfThe caf\xc3\xa9\r\nsat\ron a\xff mat\x00\n\n\xe3\x80\x80 x\xc3 "
           b"\xf0\x9f\x98\x1cend" + b" long" * 30 + b"\r")
    path = tmp_path / "c.txt"
    path.write_bytes(raw)
    theirs = datasets.load_dataset("text", data_files=str(path), split="train",
                                   keep_linebreaks=True, encoding_errors="replace")
    assert text_rows(path) == theirs["text"]
    assert tokens_of(load(path)) == tokens_of(theirs)


def test_long_lines_are_stored_as_bounded_rows_cut_at_whitespace(tmp_path, monkeypatch):
    monkeypatch.setattr(textlines, "SEGMENT_BYTES", 1000)
    monkeypatch.setattr(textlines, "READ_BYTES", 4096)
    words = [f"w{i % 97}" for i in range(20_000)]
    path = tmp_path / "c.txt"
    path.write_text("short line\n" + " ".join(words) + "\nend\n")
    rows = load(path).to_dict()
    assert max(map(len, rows["text"])) < 1010 and len(rows["text"]) > 50
    # A cut is always just before whitespace, and only the long line's rows go on.
    flagged = [i for i, f in enumerate(rows[textlines.LINE_CONTINUES]) if f]
    assert all(rows["text"][i + 1][0] == " " for i in flagged)
    assert flagged == list(range(1, len(rows["text"]) - 2))
    toks, docs = tokens_of(load(path), max_doc_words=3000)
    assert toks == ["short", "line", *words, "end"]
    assert [len(d) for d in docs] == [2, *[3000] * 6, 2000, 1]


def test_plain_text_arrow_cache_is_reused_and_follows_the_file(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a b c\n")
    first = load(path)
    again = load(path)
    assert again.cache_files == first.cache_files and "w2v_text_lines" in str(first.cache_files)
    path.write_text("a b c d\n")
    changed = load(path)
    assert changed.cache_files != first.cache_files
    assert tokens_of(changed)[0] == ["a", "b", "c", "d"]


def test_source_fingerprint_changes_with_the_file(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a b c\n")
    before = sources.source_fingerprint(DataConfig(path=str(path)))
    path.write_text("a b c d\n")
    assert sources.source_fingerprint(DataConfig(path=str(path))) != before
    hub = sources.source_fingerprint(DataConfig(hub_id="afmck/text8"))
    assert hub == {"hub_id": "afmck/text8", "hub_config": None, "split": "train",
                   "revision": None}


# --- bad input: one clear W2VError each ---------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(W2VError, match="data.path=.*does not exist"):
        load(tmp_path / "nope.txt")
    with pytest.raises(W2VError, match="matches no files"):
        load(tmp_path / "*.nope")


def test_mixed_kinds_in_a_directory(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    pq.write_table(pa.table({"text": ["y"]}), tmp_path / "b.parquet")
    with pytest.raises(W2VError, match="mixes file kinds"):
        load(tmp_path)


def test_missing_text_column_lists_columns(tmp_path):
    pq.write_table(pa.table({"id": [1], "body": ["x"]}), tmp_path / "c.parquet")
    with pytest.raises(W2VError, match="no column data.text_column='text'.*id, body"):
        load(tmp_path / "c.parquet")


def test_column_that_is_not_text(tmp_path):
    pq.write_table(pa.table({"id": [1], "body": ["x"]}), tmp_path / "c.parquet")
    with pytest.raises(W2VError, match="'id'.*not text; text columns: body"):
        load(tmp_path / "c.parquet", text_column="id")


def test_unreadable_json_names_the_file(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(W2VError, match="cannot read data.path=.*c.jsonl"):
        load(tmp_path / "c.jsonl")


def test_hub_unreachable_fails_fast_naming_data_path(monkeypatch):
    # Nothing listens on port 9 of localhost: the probe fails at once, like a machine offline.
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(W2VError, match="cannot reach 127.0.0.1.*data.path"):
        sources.load_text_dataset(DataConfig(name="text8", hub_id="afmck/text8"), False)
    assert time.perf_counter() - start < 10


def test_hub_offline_mode_uses_only_the_cache(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(W2VError, match="offline mode.*data.path"):
        sources.load_text_dataset(DataConfig(hub_id="Salesforce/wikitext",
                                          hub_config="wikitext-2-raw-v1"), False)
    assert datasets.config.HF_HUB_OFFLINE is True  # restored, not left changed


def test_unknown_hub_id_names_data_path(monkeypatch):
    from datasets.exceptions import DatasetNotFoundError

    def not_found(*args, **kwargs):
        raise DatasetNotFoundError("Dataset 'nobody/nothing' doesn't exist on the Hub")

    monkeypatch.setattr(sources, "hub_reachable", lambda endpoint: True)
    monkeypatch.setattr(datasets, "load_dataset", not_found)
    with pytest.raises(W2VError, match="'nobody/nothing' is not on the Hugging Face.*data.path"):
        sources.load_text_dataset(DataConfig(hub_id="nobody/nothing"), False)


def test_hub_probe_is_bounded():
    start = time.perf_counter()
    assert not sources.hub_reachable("http://127.0.0.1:9", timeout=1.0)
    assert time.perf_counter() - start < 2


# --- tokenization and documents ---------------------------------------------------------------

# Python's and Arrow's corner cases: Unicode spaces, \x1c, İ (lowercases to 2 code points).
pieces = st.sampled_from(list("aAbBzZ  \t\n\x1c\x85\xa0\u3000İßΣσÉé,.-'") + ["word ", "The "])
rows_strategy = st.lists(st.lists(pieces, max_size=40).map("".join), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, lowercase=st.booleans(), m=st.integers(2, 7))
def test_chunked_tokens_equal_tokenizer(rows, lowercase, m):
    # Tiny chunks force long rows to be cut (at whitespace) into many pieces.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tokens, "CHUNK_BYTES", 7)
        ds = datasets.Dataset.from_dict({"text": rows})
        toks, docs = tokens_of(ds, lowercase=lowercase, max_doc_words=m)
    tok = Tokenizer(lowercase=lowercase)
    assert toks == [t for r in rows for t in tok(r)]
    assert docs == [d for d in expected_docs(rows, tok, m) if d]


@settings(max_examples=30, deadline=None)
@given(rows=rows_strategy)
def test_regex_tokens_equal_tokenizer(rows):
    pattern = r"[^\W\d_]+(?:'[^\W\d_]+)?"
    ds = datasets.Dataset.from_dict({"text": rows})
    toks, _ = tokens_of(ds, pattern=pattern)
    assert toks == [t for r in rows for t in Tokenizer(True, pattern)(r)]


def test_long_row_is_cut_into_bounded_pieces(monkeypatch):
    monkeypatch.setattr(tokens, "CHUNK_BYTES", 1000)
    words = [f"w{i % 97}" for i in range(5000)]
    ds = datasets.Dataset.from_dict({"text": [" ".join(words)]})
    chunks = list(tokens.iter_token_chunks(ds, "text", max_doc_words=1234, progress=False))
    assert len(chunks) > 10 and max(c.nbytes for c in chunks) < 1100
    toks = [w for c in chunks for w in np.array(c.words.to_pylist())[c.codes].tolist()]
    assert toks == words
    _, docs = tokens_of(ds, max_doc_words=1234)
    assert [len(d) for d in docs] == [1234, 1234, 1234, 1234, 64]


def test_doc_ends_cuts_every_m_raw_words_across_pieces():
    # A 10-word row in pieces of 4, 4, 2 words with m=3: ends after words 3, 6, 9 and 10.
    assert tokens.doc_ends(np.array([4]), 0, True, 3).tolist() == [3]
    assert tokens.doc_ends(np.array([4]), 4, True, 3).tolist() == [2]
    assert tokens.doc_ends(np.array([2]), 8, False, 3).tolist() == [1, 2]
    assert tokens.doc_ends(np.array([2, 0, 5]), 0, False, 3).tolist() == [2, 5, 7]
