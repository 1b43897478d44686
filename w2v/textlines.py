"""Plain-text files -> `datasets` rows, read in bounded blocks: the TextLines builder.

    python -c "from w2v.textlines import text_line_tables; \
print(next(text_line_tables('corpus.txt')).to_pydict())"

datasets' own "text" builder reads a line whole (f.read(10 MB) + f.readline(), then copies):
about 5 copies of the longest line at once, 5 GB for a 1 GB line. TextLines reads each file
READ_BYTES at a time and stores a line longer than SEGMENT_BYTES as several rows cut at
whitespace, each flagged LINE_CONTINUES but the last; tokens.py joins them back into one
document. The rows are otherwise exactly the text builder's (one per line, line break kept,
universal newlines, undecodable bytes replaced with U+FFFD), and they go through datasets'
ArrowBasedBuilder, so the Arrow cache, its fingerprint and streaming are datasets' own.
Archives other than gzip/bz2/xz are left to datasets' text builder (sources.py decides).

Long rows are cut one way everywhere (`whitespace_cuts`): here into SEGMENT_BYTES rows, and in
tokens.py into CHUNK_BYTES pieces of rows from any source.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import json
import lzma
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

READ_BYTES = 1 << 20  # plain-text files are read this much at a time
SEGMENT_BYTES = 1 << 16  # a longer line is stored as several rows of about this size
LINE_CONTINUES = "line_continues"  # row flag: the line goes on in the next row
TEXT_LINES_VERSION = 2  # in the datasets cache id: bump when the rows change

# Bytes that Python's str.split() treats as whitespace and that never occur inside a
# multi-byte UTF-8 sequence: safe places to cut a long row.
_WS_BYTES = np.zeros(256, dtype=bool)
_WS_BYTES[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True


# --- cutting long rows -------------------------------------------------------------------------


def whitespace_cuts(data: np.ndarray, lo: int, hi: int, size: int) -> list[int]:
    """Where to cut the bytes data[lo:hi] into pieces of at least `size` bytes (uint8 array).

    Each cut is the first whitespace byte at or after its piece's start + size, so no token
    straddles a cut and every piece after the first starts with whitespace. No cut is made
    where no whitespace follows, nor one that would leave only the last byte (a line's break).
    """
    cuts, pos = [], lo
    while hi - pos > size:
        cut = _next_whitespace(data, pos + size, hi)
        if cut >= hi - 1:
            break
        cuts.append(cut)
        pos = cut
    return cuts


def _next_whitespace(data: np.ndarray, start: int, hi: int) -> int:
    """First whitespace byte at or after `start` (or `hi`)."""
    window = 256  # words are short: look close first, then further
    while start < hi:
        found = np.flatnonzero(_WS_BYTES[data[start : min(start + window, hi)]])
        if len(found):
            return start + int(found[0])
        start += window
        window = min(window * 2, 1 << 16)
    return hi


# --- the builder -------------------------------------------------------------------------------


def load_text_lines(files: Sequence[Path], fingerprint: Any, streaming: bool) -> Any:
    """The files' rows as a `datasets` Dataset (IterableDataset when streaming).

    `fingerprint` identifies the files' contents (sources.source_fingerprint: paths, sizes,
    mtimes); with how rows are cut it is the cache id, so a rerun on unchanged files reuses
    the Arrow cache and a changed file gets a new one.
    """
    key = {"files": fingerprint, "version": TEXT_LINES_VERSION, "read": READ_BYTES,
           "segment": SEGMENT_BYTES}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    builder = _text_lines_builder()(
        dataset_name="w2v_text_lines", config_id=f"lines-{digest}",
        files=tuple(str(f) for f in files),
    )
    if streaming:
        return builder.as_streaming_dataset(split="train")
    builder.download_and_prepare()
    return builder.as_dataset(split="train")


@functools.cache
def _text_lines_builder() -> type:
    """The datasets builder class (made on first use: importing datasets costs ~1 s)."""
    import datasets

    try:
        from datasets.builder import Key
    except ImportError:  # datasets < 4: keys are plain tuples
        def Key(shard: int, batch: int) -> tuple[int, int]:  # noqa: N802
            return shard, batch

    @dataclass
    class TextLinesConfig(datasets.BuilderConfig):
        files: tuple[str, ...] = field(default_factory=tuple)

    class TextLines(datasets.ArrowBasedBuilder):
        BUILDER_CONFIG_CLASS = TextLinesConfig

        def _info(self):
            return datasets.DatasetInfo(features=datasets.Features(
                {"text": datasets.Value("string"), LINE_CONTINUES: datasets.Value("bool")}))

        def _split_generators(self, dl_manager):
            return [datasets.SplitGenerator(name=datasets.Split.TRAIN,
                                            gen_kwargs={"files": list(self.config.files)})]

        def _generate_shards(self, files):
            yield from files

        def _generate_tables(self, files):
            for i, path in enumerate(files):
                for j, table in enumerate(text_line_tables(path)):
                    yield Key(i, j), table

    return TextLines


def compression(path: Path) -> str | None:
    """The format datasets would extract the file as (by magic number), or None."""
    from datasets.utils.extract import Extractor

    return Extractor.infer_extractor_format(path)


# --- reading a file ----------------------------------------------------------------------------


def text_line_tables(path: str | os.PathLike) -> Iterator[pa.Table]:
    """A plain-text file (gzip, bz2 or xz by magic number) as tables of rows `text` (a line
    with its line break, or a piece of a long line) and LINE_CONTINUES; memory is bounded by
    READ_BYTES, SEGMENT_BYTES and the longest word, not the longest line."""
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(compression(Path(path)),
                                                                       open)
    with opener(path, "rb") as f:
        for block, goes_on in _line_blocks(f):
            yield _rows_table(block, goes_on)


def _line_blocks(f: Any) -> Iterator[tuple[memoryview, bool]]:
    """Blocks of a binary stream, each ending at a line end or, inside a long line, at the
    last of its whitespace cuts (`goes_on`), with "\r\n" and "\r" turned into "\n" (as open()
    does)."""
    pending = b""
    while True:
        # Read at least as much as is pending, so a word longer than READ_BYTES costs linear
        # time, not quadratic.
        data = f.read(max(READ_BYTES, len(pending)))
        eof = not data
        buf, hold = pending + data, b""
        if not eof and buf.endswith(b"\r"):  # maybe the first half of "\r\n"
            buf, hold = buf[:-1], b"\r"
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end, goes_on = len(buf), False
        if not eof:
            end = buf.rfind(b"\n") + 1
            # A long unfinished line: emit it up to its last cut; the rest (at most about
            # SEGMENT_BYTES and a word) waits for the next block.
            cuts = whitespace_cuts(np.frombuffer(buf, dtype=np.uint8), end, len(buf),
                                   SEGMENT_BYTES)
            if cuts:
                end, goes_on = cuts[-1], True
        if end:
            yield memoryview(buf)[:end], goes_on
        if eof:
            return
        pending = buf[end:] + hold


def _rows_table(block: memoryview, goes_on: bool) -> pa.Table:
    """One block as rows: its lines, lines longer than SEGMENT_BYTES cut at whitespace."""
    try:
        str(block, "utf-8")
        text: Any = block
    except UnicodeDecodeError:
        # The text builder's encoding_errors="replace". A block ends at an ASCII byte (or the
        # end of the file), so decoding it alone replaces exactly what decoding the file would.
        text = str(block, "utf-8", "replace").encode("utf-8")
    data = np.frombuffer(text, dtype=np.uint8)
    ends = np.flatnonzero(data == 10) + 1
    if not len(ends) or ends[-1] != len(data):
        ends = np.append(ends, len(data))
    starts = np.concatenate([[0], ends[:-1]])
    cuts = [cut for i in np.flatnonzero(ends - starts > SEGMENT_BYTES).tolist()
            for cut in whitespace_cuts(data, int(starts[i]), int(ends[i]), SEGMENT_BYTES)]
    # Row r ends at bounds[r]; it goes on in the next row when that end is a cut.
    bounds = np.concatenate([ends, np.asarray(cuts, dtype=ends.dtype)])
    continues = np.arange(len(bounds)) >= len(ends)
    order = np.argsort(bounds, kind="stable")
    bounds, continues = bounds[order], continues[order]
    continues[-1] |= goes_on
    offsets = np.concatenate([[0], bounds]).astype(np.int32)
    rows = pa.Array.from_buffers(pa.string(), len(bounds),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(text)])
    return pa.table({"text": rows, LINE_CONTINUES: pa.array(continues, pa.bool_())})
