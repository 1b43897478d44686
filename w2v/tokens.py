"""Rows of text -> tokens in bounded chunks, with the positions where documents end.

    python -c "import datasets; from w2v.tokens import iter_token_chunks; \
print(next(iter_token_chunks(datasets.Dataset.from_dict({'text': ['a b a']}), 'text')))"

Documents: each row is a document (a row flagged LINE_CONTINUES, see textlines.py, is joined
with the next, so a plain-text document is a line). A row longer than `data.max_doc_words` raw
words is cut into pseudo-documents of that many raw words (gensim's Text8Corpus / word2vec's
10,000-word sentences), counted before out-of-vocabulary words are dropped; corpus.py drops
documents that end up empty. Rows are tokenized in chunks of about CHUNK_BYTES cut at
whitespace (textlines.whitespace_cuts), so memory stays bounded (by the longest row itself for
parquet/json; text8 is one 100 MB line) and no Python loop runs per token. Tokens therefore
never contain whitespace: a `data.token_pattern` must not match across it.

Tokens agree exactly with tokenizer.Tokenizer (lowercase, then str.split() or re.findall), which
is the reference; ASCII text takes Arrow's kernels.

Undecodable bytes in text files are replaced with U+FFFD (as open(errors="replace") does), so
one stray byte does not stop a long build; corpus.py counts and logs the words that contain
one. Parquet and json must be valid UTF-8 (Arrow checks it).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from w2v.sources import check_text_column
from w2v.textlines import LINE_CONTINUES, whitespace_cuts

if TYPE_CHECKING:
    import datasets

CHUNK_BYTES = 1 << 20  # tokenize about this much text at a time
ROWS_PER_BATCH = 1000  # rows per Arrow batch read from the dataset


@dataclass
class TokenChunk:
    """About CHUNK_BYTES of text, tokenized.

    words: the chunk's distinct tokens in first-occurrence order (an Arrow string array, so
    corpus.py can merge many chunks' words in C); codes: int32 (n,) index into words per
    token, in text order; doc_ends: int64, sorted positions in [1, n] where a
    (pseudo-)document ends (possibly repeated for empty rows); nbytes: text bytes consumed.
    """

    words: pa.Array
    codes: np.ndarray
    doc_ends: np.ndarray
    nbytes: int


def iter_token_chunks(
    ds: datasets.Dataset | datasets.IterableDataset,
    column: str,
    lowercase: bool = True,
    pattern: str | None = None,
    max_doc_words: int = 10_000,
    progress: bool = True,
) -> Iterator[TokenChunk]:
    """Tokenize `ds[column]` in bounded chunks; tokens agree with tokenizer.Tokenizer exactly."""
    total = _text_bytes(ds, column)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenize", disable=not progress)
    carry = 0  # raw words of the current line already emitted in earlier pieces
    with bar:
        for batch in ds.with_format("arrow").iter(batch_size=ROWS_PER_BATCH):
            if column not in batch.column_names or not _is_string(batch.schema.field(column)):
                check_text_column(_arrow_features(batch), column, "the dataset")
            for piece, goes_on in _pieces(batch, column):
                words, codes, row_lengths = _tokenize(piece, lowercase, pattern)
                lengths = _join_rows(row_lengths, goes_on)  # tokens per line
                ends = doc_ends(lengths, carry, bool(goes_on[-1]), max_doc_words)
                carry = carry + int(lengths[-1]) if goes_on[-1] else 0
                nbytes = int(pc.sum(pc.binary_length(piece)).as_py() or 0)
                bar.update(nbytes)
                yield TokenChunk(words, codes, ends, nbytes)


def doc_ends(row_lengths: np.ndarray, carry: int, continues: bool, max_doc_words: int
             ) -> np.ndarray:
    """Positions (in the chunk's tokens) where pseudo-documents end.

    Row r has row_lengths[r] tokens here; row 0 had `carry` raw words in earlier chunks; the
    last row goes on in the next chunk when `continues`. A row ends a document at its end and
    after every max_doc_words of its raw words.
    """
    m = max_doc_words
    lengths = np.asarray(row_lengths, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    prior = np.zeros_like(lengths)
    if len(prior):
        prior[0] = carry
    # Multiples k*m of a row's raw-word count that fall inside this chunk's part of the row.
    first = prior // m + 1
    last = (prior + lengths) // m
    n = np.maximum(last - first + 1, 0)
    row = np.repeat(np.arange(len(lengths)), n)
    k = first[row] + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    cuts = starts[row] + k * m - prior[row]
    finished = starts + lengths
    if continues and len(finished):
        finished = finished[:-1]
    return np.union1d(cuts, finished).astype(np.int64)


def _text_bytes(ds: Any, column: str) -> int | None:
    import datasets

    if not isinstance(ds, datasets.Dataset):
        return None
    col = ds.with_format("arrow")[column]
    return int(pc.sum(pc.binary_length(col)).as_py() or 0)


def _is_string(field: pa.Field) -> bool:
    return pa.types.is_string(field.type) or pa.types.is_large_string(field.type)


def _arrow_features(batch: pa.Table) -> Any:
    import datasets

    return datasets.Features.from_arrow_schema(batch.schema)


# --- pieces of about CHUNK_BYTES ---------------------------------------------------------------


def _pieces(batch: pa.Table, column: str) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """The batch's column as arrays of about CHUNK_BYTES, each with its rows' flags: the row's
    line goes on in the next row (textlines' LINE_CONTINUES). A row longer than CHUNK_BYTES is
    cut into single-row pieces the same way textlines cuts a long line: all flagged but the
    last, which keeps the row's own flag."""
    goes_on = np.zeros(batch.num_rows, dtype=bool)
    if LINE_CONTINUES in batch.column_names:
        goes_on = pc.fill_null(batch.column(LINE_CONTINUES), False).to_numpy(zero_copy_only=False)
    first = 0
    for arr in batch.column(column).chunks:
        flags = goes_on[first : first + len(arr)]
        first += len(arr)
        lengths = pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False)
        start = 0
        for long_row in [*np.flatnonzero(lengths > CHUNK_BYTES).tolist(), len(arr)]:
            yield from _row_groups(arr, lengths, flags, start, long_row)
            if long_row < len(arr):
                pieces = _cut_long_row(arr.slice(long_row, 1))
                for i, piece in enumerate(pieces):
                    yield piece, np.array([i + 1 < len(pieces) or flags[long_row]])
            start = long_row + 1


def _row_groups(arr: pa.Array, lengths: np.ndarray, flags: np.ndarray, start: int, stop: int
                ) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """Rows start..stop (each short) as slices of about CHUNK_BYTES."""
    if stop <= start:
        return
    ends = np.cumsum(lengths[start:stop])
    # Group g holds the rows whose running byte count falls in [g, g+1) * CHUNK_BYTES.
    groups = ends // CHUNK_BYTES
    bounds = np.flatnonzero(np.diff(groups)) + 1
    for a, b in zip([0, *bounds.tolist()], [*bounds.tolist(), stop - start], strict=True):
        yield arr.slice(start + a, b - a), flags[start + a : start + b]


def _cut_long_row(row: pa.Array) -> list[pa.Array]:
    """One long row as zero-copy single-row pieces of about CHUNK_BYTES, cut at whitespace."""
    large = pa.types.is_large_string(row.type)
    offsets = np.frombuffer(row.buffers()[1], dtype=np.int64 if large else np.int32)
    lo, hi = int(offsets[row.offset]), int(offsets[row.offset + 1])
    data_buf = row.buffers()[2]
    bounds = [lo, *whitespace_cuts(np.frombuffer(data_buf, dtype=np.uint8), lo, hi,
                                   CHUNK_BYTES), hi]
    offset_type = pa.int64() if large else pa.int32()
    return [pa.Array.from_buffers(pa.large_string() if large else pa.string(), 1,
                                  [None, pa.array([0, b - a], offset_type).buffers()[1],
                                   data_buf.slice(a, b - a)])
            for a, b in itertools.pairwise(bounds)]


def _join_rows(row_lengths: np.ndarray, goes_on: np.ndarray) -> np.ndarray:
    """Tokens per line of a piece: rows flagged `goes_on` are joined with the next row."""
    if not goes_on[:-1].any():
        return row_lengths
    first = np.flatnonzero(np.concatenate([[True], ~goes_on[:-1]]))  # rows that start a line
    return np.add.reduceat(np.asarray(row_lengths, dtype=np.int64), first)


# --- tokenizing a piece ------------------------------------------------------------------------


def _tokenize(arr: pa.Array, lowercase: bool, pattern: str | None
              ) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(distinct words in first-occurrence order, int32 codes, tokens per row) of a piece."""
    if pattern is not None:
        return _tokenize_python(arr, lowercase, re.compile(pattern).findall)
    # ASCII text (text8, most English) takes Arrow's ASCII kernels: ascii_lower equals
    # str.lower() there, and ascii_split_whitespace misses only \x1c-\x1f of str.split()'s
    # separators, checked on the distinct words (the piece is redone if one appears).
    if pc.all(pc.string_is_ascii(arr)).as_py() is True:
        words, codes, rows = _split_encode_ascii(pc.ascii_lower(arr) if lowercase else arr)
        if not pc.any(pc.match_substring_regex(words, "[\x1c-\x1f]")).as_py():
            return words, codes, np.bincount(rows, minlength=len(arr))
    # Anything else goes through str.split() itself. (Arrow's utf8_split_whitespace gave
    # wrong, non-deterministic splits at multi-byte spaces in pyarrow 26 - the test in
    # tests/test_data.py found it - so it is not used.)
    return _tokenize_python(arr, lowercase, str.split)


def _split_encode_ascii(arr: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Whitespace split + dictionary encoding: (distinct words, int32 codes, row per token)."""
    lists = pc.ascii_split_whitespace(arr)
    rows = pc.list_parent_indices(lists).to_numpy()
    encoded = pc.dictionary_encode(pc.list_flatten(lists))
    words = encoded.dictionary
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    # Leading/trailing whitespace gives "" tokens: drop them on the int codes, not the strings.
    empty = pc.index(words, "").as_py()
    if empty >= 0:
        keep = codes != empty
        codes, rows = codes[keep], rows[keep]
        codes -= codes > empty
        words = pa.concat_arrays([words[:empty], words[empty + 1 :]])
    return words, codes, rows


def _tokenize_python(arr: pa.Array, lowercase: bool, split: Callable[[str], list[str]]
                     ) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Tokenizer's own calls per row (C inside); Arrow joins and encodes the token lists."""
    per_row = [split(t.lower() if lowercase else t) if t else [] for t in arr.to_pylist()]
    row_lengths = np.fromiter(map(len, per_row), dtype=np.int64, count=len(per_row))
    flat = pa.array(itertools.chain.from_iterable(per_row), type=pa.large_string())
    encoded = pc.dictionary_encode(flat)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return encoded.dictionary, codes, row_lengths
