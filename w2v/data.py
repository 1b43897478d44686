"""Hugging Face dataset -> token stream: load the text, cut it into bounded chunks, tokenize.

    python -m w2v.data data=local data.path=corpus.txt

Sources (all through the `datasets` library):
- the Hub: `load_dataset(hub_id, hub_config, split=..., revision=...)`, column `text_column`;
- `data.path` (replaces the Hub with any data group): plain text, one row per line (.txt, or
  no/unknown extension, optionally .gz/.bz2/.xz), parquet, json/jsonl (with a text column), a
  directory or glob of one kind of these, or a `save_to_disk` folder. Plain text goes through
  a small datasets builder (TextLines) that reads files in 1 MB blocks and stores a line
  longer than 64 KB as several rows flagged LINE_CONTINUES, so a 1 GB line is never held
  whole; datasets' own "text" builder (which reads each line whole) only unpacks archives.
  `data.split` applies to Hub ids and save_to_disk DatasetDicts; data files have one split.
- `data.streaming=true` reads an IterableDataset instead of building the Arrow cache.

Without network the Hub fails fast: one short socket probe (skipped when HF_HUB_OFFLINE is
set), then the local datasets cache in offline mode, then a W2VError naming `data.path`.

Documents: each row is a document (a row flagged LINE_CONTINUES is joined with the next, so a
plain-text document is a line). A row longer than `data.max_doc_words` raw words is cut into
pseudo-documents of that many raw words (gensim's Text8Corpus / word2vec's 10,000-word
sentences), counted before out-of-vocabulary words are dropped; corpus.py drops documents that
end up empty. Rows are tokenized in chunks of about 1 MB cut at whitespace, so memory stays
bounded (by the longest row itself for parquet/json; text8 is one 100 MB line) and no Python
loop runs per token.
Tokens therefore never contain whitespace: a `data.token_pattern` must not match across it.

Undecodable bytes in text files are replaced with U+FFFD (as open(errors="replace") does), so
one stray byte does not stop a long build; corpus.py counts and logs the words that contain
one. Parquet and json must be valid UTF-8 (Arrow checks it).
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import glob
import gzip
import hashlib
import itertools
import json
import logging
import lzma
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import hydra
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from w2v.config import Config, DataConfig, config_dir, register_configs
from w2v.errors import W2VError, report_errors

if TYPE_CHECKING:  # `datasets` costs ~1 s to import; a cached corpus never needs it.
    import datasets

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # tokenize about this much text at a time
ROWS_PER_BATCH = 1000  # rows per Arrow batch read from the dataset
HUB_PROBE_TIMEOUT = 3.0  # seconds; a plain offline load_dataset retries for ~24 s instead
READ_BYTES = 1 << 20  # plain-text files are read this much at a time
SEGMENT_BYTES = 1 << 16  # a longer line is stored as several rows of about this size
LINE_CONTINUES = "line_continues"  # plain-text row flag: the line goes on in the next row
TEXT_LINES_VERSION = 1  # in the datasets cache id of plain-text files: bump when rows change

_COMPRESSION = {".gz", ".bz2", ".xz"}
_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".ndjson": "json"}
# Bytes that Python's str.split() treats as whitespace and that never occur inside a
# multi-byte UTF-8 sequence: safe places to cut a long row.
_WS_BYTES = np.zeros(256, dtype=bool)
_WS_BYTES[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True


# --- where the text comes from -----------------------------------------------------------------


@dataclass(frozen=True)
class LocalSource:
    """Resolved `data.path`: data files of one builder kind, or a save_to_disk folder."""

    path: str
    builder: str  # "text", "parquet", "json", or "disk" (load_from_disk)
    files: tuple[Path, ...]  # the data files (for "disk": the folder's state/info json files)


def resolve_local(path: str) -> LocalSource:
    """Expand `data.path` (file, directory, glob, save_to_disk folder) without reading data."""
    p = Path(path).expanduser()
    if p.is_dir() and _is_saved_dataset(p):
        marks = sorted(q for q in p.rglob("*.json") if q.name in _DISK_MARKS)
        return LocalSource(path, "disk", tuple(marks))
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file() and not _hidden(q.relative_to(p)))
        where = f"directory data.path={path!r}"
    elif p.is_file():
        files = [p]
        where = ""
    elif glob.has_magic(path):
        files = sorted(Path(q) for q in glob.glob(os.path.expanduser(path), recursive=True))
        files = [q for q in files if q.is_file()]
        where = f"glob data.path={path!r}"
    else:
        raise W2VError(f"data.path={path!r} does not exist; give a file, directory or glob")
    if not files:
        raise W2VError(f"{where} matches no files; give a file, directory or glob of data files")
    kinds = {_builder_for(f) for f in files}
    if len(kinds) > 1:
        raise W2VError(
            f"{where} mixes file kinds ({', '.join(sorted(kinds))}); point data.path at files "
            "of one kind (a glob such as 'dir/*.txt')"
        )
    return LocalSource(path, kinds.pop(), tuple(f.resolve() for f in files))


_DISK_MARKS = {"state.json", "dataset_info.json", "dataset_dict.json"}


def _is_saved_dataset(p: Path) -> bool:
    return (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _builder_for(f: Path) -> str:
    suffixes = [s.lower() for s in f.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    return _BUILDERS.get(suffixes[-1] if suffixes else "", "text")


def source_fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """What identifies the source, cheaply (no `datasets` call): the cache key's first part.

    Local files: resolved paths, sizes and mtimes. save_to_disk folders: their state.json
    files (which carry the dataset's fingerprint). Hub: id, config, split, revision.
    """
    if cfg.path is None:
        if cfg.hub_id is None:
            raise W2VError("no data source: set data.path (a local corpus) or data.hub_id")
        return {"hub_id": cfg.hub_id, "hub_config": cfg.hub_config, "split": cfg.split,
                "revision": cfg.revision}
    src = resolve_local(cfg.path)
    if src.builder == "disk":
        digest = hashlib.sha256()
        for f in src.files:
            digest.update(str(f.relative_to(Path(cfg.path).expanduser())).encode())
            digest.update(f.read_bytes())
        return {"disk": str(Path(cfg.path).expanduser().resolve()), "split": cfg.split,
                "state": digest.hexdigest()}
    files = []
    for f in src.files:
        st = f.stat()
        files.append([str(f), st.st_size, st.st_mtime_ns])
    return {"builder": src.builder, "files": files}


def describe_source(cfg: DataConfig) -> str:
    if cfg.path is not None:
        return cfg.path
    return ":".join(str(x) for x in (cfg.hub_id, cfg.hub_config, cfg.split) if x is not None)


# --- loading -----------------------------------------------------------------------------------


def load_text_dataset(
    cfg: DataConfig, progress: bool = True
) -> datasets.Dataset | datasets.IterableDataset:
    """The corpus as a `datasets` Dataset (IterableDataset with data.streaming), column checked."""
    import datasets

    with _datasets_progress(progress):
        ds = _load_local(resolve_local(cfg.path), cfg) if cfg.path else _load_hub(cfg)
    if ds.features is not None:  # streamed json may not know its columns until read
        check_text_column(ds.features, cfg.text_column, describe_source(cfg))
    assert isinstance(ds, (datasets.Dataset, datasets.IterableDataset))
    return ds


def check_text_column(features: Any, column: str, source: str) -> None:
    """Raise a W2VError unless `column` exists and holds strings."""
    names = list(features)
    if column not in names:
        raise W2VError(
            f"{source} has no column data.text_column={column!r}; its columns are: "
            f"{', '.join(names) or '(none)'}"
        )
    feature = features[column]
    dtype = getattr(feature, "dtype", None)
    if dtype not in ("string", "large_string"):
        texts = [n for n in names if getattr(features[n], "dtype", None) in ("string",
                                                                             "large_string")]
        hint = f"text columns: {', '.join(texts)}" if texts else "it has no text column"
        raise W2VError(
            f"column data.text_column={column!r} of {source} is {feature}, not text; {hint}"
        )


def _load_local(src: LocalSource, cfg: DataConfig):
    import datasets

    try:
        if src.builder == "disk":
            ds = datasets.load_from_disk(str(Path(src.path).expanduser()))
            if isinstance(ds, datasets.DatasetDict):
                if cfg.split not in ds:
                    raise W2VError(
                        f"data.split={cfg.split!r} is not in the saved DatasetDict {src.path}; "
                        f"its splits are: {', '.join(ds)}"
                    )
                ds = ds[cfg.split]
            return ds.to_iterable_dataset() if cfg.streaming else ds
        if src.builder == "text" and not _archives(src.files):
            return _load_text_lines(src, cfg)
        # Archives (zip, tar, zstd, ...) that datasets' "text" builder unpacks. It reads each
        # line whole, so their lines are not bounded. keep_linebreaks: a trailing "\n" is
        # whitespace to the tokenizer, and keeping it saves the builder a copy of every line.
        kwargs = ({"encoding_errors": "replace", "keep_linebreaks": True}
                  if src.builder == "text" else {})
        return datasets.load_dataset(
            src.builder,
            data_files=[str(f) for f in src.files],
            split="train",
            streaming=cfg.streaming,
            **kwargs,
        )
    except W2VError:
        raise
    except Exception as err:  # the user's files: name them rather than show a traceback
        # datasets wraps the real problem ("An error occurred while generating the dataset"):
        # report the innermost cause (permission denied, a JSON parse error, ...).
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        empty = src.builder != "disk" and all(f.stat().st_size == 0 for f in src.files)
        if empty or type(cause).__name__ == "SchemaInferenceError":  # not one row in any file
            raise W2VError(
                f"data.path={src.path!r} is empty (no rows); point data.path at a non-empty corpus"
            ) from err
        hint = "; make the files readable (chmod +r)" if isinstance(cause, PermissionError) else ""
        raise W2VError(
            f"cannot read data.path={src.path!r} as {src.builder}: {_first_line(cause)}{hint}"
        ) from err


# --- plain text, read in bounded blocks ----------------------------------------------------------
#
# datasets' own "text" builder reads a line whole (f.read(10 MB) + f.readline(), then copies):
# about 5 copies of the longest line at once, 5 GB for a 1 GB line. This builder reads each file
# READ_BYTES at a time and stores a line longer than SEGMENT_BYTES as several rows cut at
# whitespace, each flagged LINE_CONTINUES but the last; iter_token_chunks joins them back into
# one document. The rows are otherwise exactly the text builder's (one per line, line break
# kept, universal newlines, undecodable bytes replaced), and they go through datasets'
# ArrowBasedBuilder, so the Arrow cache, its fingerprint and streaming are datasets' own.


def _archives(files: tuple[Path, ...]) -> bool:
    """Whether any file is an archive that only datasets' text builder unpacks."""
    return any(_compression(f) not in (None, "gzip", "bz2", "xz") for f in files)


def _compression(path: Path) -> str | None:
    """The format datasets would extract the file as (by magic number), or None."""
    from datasets.utils.extract import Extractor

    return Extractor.infer_extractor_format(path)


def _load_text_lines(src: LocalSource, cfg: DataConfig):
    if all(f.stat().st_size == 0 for f in src.files):
        raise W2VError(
            f"data.path={src.path!r} is empty (no rows); point data.path at a non-empty corpus"
        )
    # The cache id is what source_fingerprint checks (paths, sizes, mtimes) plus how rows are
    # cut: a rerun on unchanged files reuses the Arrow cache, a changed file gets a new one.
    key = {"files": source_fingerprint(cfg)["files"], "version": TEXT_LINES_VERSION,
           "read": READ_BYTES, "segment": SEGMENT_BYTES}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    builder = _text_lines_builder()(
        dataset_name="w2v_text_lines", config_id=f"lines-{digest}",
        files=tuple(str(f) for f in src.files),
    )
    if cfg.streaming:
        return builder.as_streaming_dataset(split="train")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
    if ds.num_rows == 0:  # compressed files holding nothing
        raise W2VError(
            f"data.path={src.path!r} is empty (no rows); point data.path at a non-empty corpus"
        )
    return ds


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


def text_line_tables(path: str | os.PathLike) -> Iterator[pa.Table]:
    """A plain-text file (gzip, bz2 or xz by magic number) as tables of rows `text` (a line
    with its line break, or a piece of a long line) and LINE_CONTINUES; memory is bounded by
    READ_BYTES and the longest word, not the longest line."""
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(_compression(Path(path)),
                                                                       open)
    with opener(path, "rb") as f:
        for block, goes_on in _line_blocks(f):
            yield _rows_table(block, goes_on)


def _line_blocks(f: Any) -> Iterator[tuple[memoryview, bool]]:
    """Blocks of a binary stream, each ending at a line end or, inside a long line, just before
    a whitespace byte (`goes_on`), with "\r\n" and "\r" turned into "\n" (as open() does)."""
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
            if len(buf) - end > SEGMENT_BYTES:  # a long line: emit it up to its last whitespace
                data_view = np.frombuffer(buf, dtype=np.uint8)
                cut = _last_whitespace(data_view, end, len(buf))
                if cut > end:
                    end, goes_on = cut, True
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
    ends, continues = _cut_long_lines(data, ends)
    continues[-1] |= goes_on
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    rows = pa.Array.from_buffers(pa.string(), len(ends),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(text)])
    return pa.table({"text": rows, LINE_CONTINUES: pa.array(continues, pa.bool_())})


def _cut_long_lines(data: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row ends (lines longer than SEGMENT_BYTES also end a row before a whitespace byte about
    every SEGMENT_BYTES) and, per row, whether its line goes on in the next row."""
    starts = np.concatenate([[0], ends[:-1]])
    cuts = []
    for i in np.flatnonzero(ends - starts > SEGMENT_BYTES).tolist():
        pos, hi = int(starts[i]), int(ends[i])
        while hi - pos > SEGMENT_BYTES:
            cut = _next_whitespace(data, pos + SEGMENT_BYTES, hi)
            if cut >= hi - 1:  # nothing but the line break (or no whitespace) left
                break
            cuts.append(cut)
            pos = cut
    if not cuts:
        return ends, np.zeros(len(ends), dtype=bool)
    bounds = np.concatenate([ends, cuts])
    order = np.argsort(bounds, kind="stable")
    return bounds[order], np.concatenate([np.zeros(len(ends), bool), np.ones(len(cuts), bool)]
                                         )[order]


def _last_whitespace(data: np.ndarray, lo: int, hi: int) -> int:
    """Last whitespace byte in data[lo:hi] (searched backwards), or `lo` if there is none."""
    window, stop = 256, hi
    while stop > lo:
        start = max(lo, stop - window)
        found = np.flatnonzero(_WS_BYTES[data[start:stop]])
        if len(found):
            return start + int(found[-1])
        stop, window = start, min(window * 2, 1 << 16)
    return lo


def _load_hub(cfg: DataConfig):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    name = f"data.hub_id={cfg.hub_id!r}" + (f" (config {cfg.hub_config!r})" if cfg.hub_config
                                            else "")
    env_offline = bool(datasets.config.HF_HUB_OFFLINE)
    host = urlparse(datasets.config.HF_ENDPOINT).hostname or "huggingface.co"
    unreachable = not env_offline and not hub_reachable(datasets.config.HF_ENDPOINT)
    if unreachable:
        log.warning("the Hugging Face Hub (%s) is unreachable; trying the local datasets cache",
                    host)
    try:
        with _hub_offline(env_offline or unreachable):
            return datasets.load_dataset(
                cfg.hub_id, cfg.hub_config, split=cfg.split, revision=cfg.revision,
                streaming=cfg.streaming,
            )
    except DatasetNotFoundError as err:
        raise W2VError(
            f"{name} is not on the Hugging Face Hub ({_first_line(err)}); check the id, or set "
            "data.path to a local copy"
        ) from err
    except (ConnectionError, OSError) as err:
        why = f"cannot reach {host}" if unreachable else "offline mode (HF_HUB_OFFLINE)"
        if not (unreachable or env_offline):
            why = f"download failed ({_first_line(err)})"
        raise W2VError(
            f"{name} cannot be loaded: {why}, and it is not in the local datasets cache; "
            "set data.path to a local copy (txt, parquet, json, or a save_to_disk folder)"
        ) from err
    except ValueError as err:  # unknown config name or split
        raise W2VError(
            f"{name} split data.split={cfg.split!r}: {_first_line(err)}; check data.hub_config "
            "and data.split"
        ) from err


def hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """One TCP connection to the Hub's host, bounded by `timeout` including the DNS lookup."""
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    ok: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            ok.append(False)

    # getaddrinfo ignores socket timeouts, so the probe runs in a thread we stop waiting for.
    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Offline mode for one load: what HF_HUB_OFFLINE=1 does, set after import."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


@contextlib.contextmanager
def _datasets_progress(enabled: bool) -> Iterator[None]:
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            datasets.enable_progress_bars()


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


# --- tokens ------------------------------------------------------------------------------------


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
    """Tokenize `ds[column]` in bounded chunks; tokens agree with vocab.Tokenizer exactly."""
    total = _text_bytes(ds, column)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenize", disable=not progress)
    carry = 0  # raw words of a long row already emitted in earlier pieces
    with bar:
        for batch in ds.with_format("arrow").iter(batch_size=ROWS_PER_BATCH):
            if column not in batch.column_names or not _is_string(batch.schema.field(column)):
                check_text_column(_arrow_features(batch), column, "the dataset")
            for piece, goes_on in _pieces(batch.column(column), _goes_on(batch)):
                words, codes, row_lengths = _tokenize(piece, lowercase, pattern)
                lengths = _join_rows(row_lengths, goes_on)
                continues = bool(goes_on[-1])
                ends = doc_ends(lengths, carry, continues, max_doc_words)
                carry = carry + int(lengths[-1]) if continues else 0
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


def _goes_on(batch: pa.Table) -> np.ndarray:
    """Per row: its line goes on in the next row (plain-text rows flagged LINE_CONTINUES)."""
    if LINE_CONTINUES in batch.column_names:
        return pc.fill_null(batch.column(LINE_CONTINUES), False).to_numpy(zero_copy_only=False)
    return np.zeros(batch.num_rows, dtype=bool)


def _join_rows(row_lengths: np.ndarray, goes_on: np.ndarray) -> np.ndarray:
    """Tokens per line of a piece: rows flagged `goes_on` are joined with the next row."""
    if not goes_on[:-1].any():
        return row_lengths
    first = np.flatnonzero(np.concatenate([[True], ~goes_on[:-1]]))  # rows that start a line
    return np.add.reduceat(np.asarray(row_lengths, dtype=np.int64), first)


def _pieces(col: pa.ChunkedArray, goes_on: np.ndarray) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """Split a column into arrays of about CHUNK_BYTES, each with its rows' `goes_on` flags;
    rows longer than that are cut at whitespace into several single-row arrays, all but the
    last flagged (the last keeps the row's own flag)."""
    first = 0
    for arr in col.chunks:
        flags = goes_on[first : first + len(arr)]
        first += len(arr)
        lengths = pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False)
        long_rows = np.flatnonzero(lengths > CHUNK_BYTES)
        start = 0
        for stop in [*long_rows.tolist(), len(arr)]:
            yield from _row_groups(arr, lengths, flags, start, stop)
            if stop < len(arr):
                for piece, continues in _cut_long_row(arr.slice(stop, 1)):
                    yield piece, np.array([continues or flags[stop]])
            start = stop + 1


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


def _cut_long_row(row: pa.Array) -> Iterator[tuple[pa.Array, bool]]:
    """One long row as zero-copy pieces of about CHUNK_BYTES, cut at ASCII whitespace."""
    large = pa.types.is_large_string(row.type)
    offsets = np.frombuffer(row.buffers()[1], dtype=np.int64 if large else np.int32)
    lo, hi = int(offsets[row.offset]), int(offsets[row.offset + 1])
    data_buf = row.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8)
    pos = lo
    while pos < hi:
        cut = _next_whitespace(data, min(pos + CHUNK_BYTES, hi), hi)
        n = cut - pos
        piece = pa.Array.from_buffers(
            pa.large_string() if large else pa.string(),
            1,
            [None, pa.array([0, n], pa.int64() if large else pa.int32()).buffers()[1],
             data_buf.slice(pos, n)],
        )
        pos = cut
        yield piece, pos < hi


def _next_whitespace(data: np.ndarray, start: int, hi: int) -> int:
    """First whitespace byte at or after `start` (or `hi`): tokens never straddle a cut."""
    window = 256  # words are short: look close first, then further
    while start < hi:
        found = np.flatnonzero(_WS_BYTES[data[start : min(start + window, hi)]])
        if len(found):
            return start + int(found[0])
        start += window
        window = min(window * 2, 1 << 16)
    return hi


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


# --- the stage alone ---------------------------------------------------------------------------


@hydra.main(config_path=str(config_dir()), config_name="config", version_base=None)
@report_errors
def _hydra_main(cfg: Config) -> None:
    cfg = OmegaConf.to_object(cfg)
    # The CLI runs the whole data stage through to the cached index tensors, which corpus.py
    # owns; imported here only, so data.py itself stays upstream of corpus.py.
    from w2v.corpus import build_corpus, summary

    corpus = build_corpus(cfg.data, progress=cfg.trainer.progress)
    print(summary(corpus))


@report_errors
def main() -> None:
    """`python -m w2v.data ...` and the w2v-data console script."""
    register_configs()
    _hydra_main()


if __name__ == "__main__":
    main()
