"""Tokens -> cached index tensors: one flat int32 id array and int64 document offsets.

    python -c "from w2v.config import DataConfig; from w2v.corpus import build_corpus; \
print(build_corpus(DataConfig(path='corpus.txt')).ids[:10])"

One pass over the text (data.py) gives every token a raw id, its word's first-occurrence rank,
written to a temp file while counts accumulate; the vocabulary (vocab.py) is then chosen from
the counts, and one vectorised lookup (-1 = out of vocabulary) turns raw ids into vocab ids,
dropping OOV tokens. Pseudo-documents (rows cut every data.max_doc_words raw words, see
data.py) keep their boundaries through the drop; documents left empty are dropped.

Cache: <cache_root>/<name>-<key>/ with ids.npy (memory-mapped, so corpora larger than RAM
work), doc_offsets.npy, vocab.json and meta.json. The key hashes the source fingerprint (local
files: paths, sizes, mtimes; no `datasets` call, so a rerun is fast), the tokenizer, min_count,
max_vocab, max_doc_words, the text column and CACHE_FORMAT. A build writes into a temp folder
renamed into place at the end, so an interrupted build never leaves a cache a later run trusts.
cache_root: data.cache_dir, else $W2V_CACHE, else ~/.cache/w2v.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from w2v.atomic import atomic_write_text
from w2v.config import DataConfig
from w2v.data import (
    TokenChunk,
    describe_source,
    iter_token_chunks,
    load_text_dataset,
    source_fingerprint,
)
from w2v.errors import W2VError
from w2v.vocab import Tokenizer, Vocab, select_ids

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the cached files or their meaning change
ENCODE_BLOCK = 1 << 22  # raw tokens remapped per step (bounded memory on huge corpora)
GROUP_TOKENS = 1 << 23  # tokens whose chunks get raw ids together (see _ScanState.add)
MAX_UNDECODABLE = 0.1  # share of tokens with undecodable bytes above which a source is refused


@dataclass
class Corpus:
    """Document d is ids[doc_offsets[d]:doc_offsets[d+1]]."""

    ids: torch.Tensor  # int32 (N,), memory-mapped, OOV dropped
    doc_offsets: torch.Tensor  # int64 (D+1,)
    vocab: Vocab
    raw_tokens: int  # words before the OOV drop (raw words/s counts these)
    path: Path  # the cache folder
    meta: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False
    seconds: float = 0.0  # this call: a cache load or a full build

    @property
    def num_docs(self) -> int:
        return len(self.doc_offsets) - 1


def cache_root(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("W2V_CACHE") or "~/.cache/w2v"
    return Path(root).expanduser()


def cache_path(cfg: DataConfig) -> Path:
    """The cache folder for `cfg` (cheap: stats files, reads no data)."""
    tokenizer = Tokenizer(cfg.lowercase, cfg.token_pattern)
    key = {
        "format": CACHE_FORMAT,
        "source": source_fingerprint(cfg),
        "text_column": cfg.text_column,
        "tokenizer": tokenizer.to_dict(),
        "min_count": cfg.min_count,
        "max_vocab": cfg.max_vocab,
        "max_doc_words": cfg.max_doc_words,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.name) or "corpus"
    return cache_root(cfg) / f"{name}-{digest}"


def build_corpus(cfg: DataConfig, progress: bool = True) -> Corpus:
    """Load, count, build the vocabulary, encode and cache; reuse the cache when it exists."""
    start = time.perf_counter()
    path = cache_path(cfg)
    if (path / "meta.json").is_file():
        corpus = load_corpus(path)
        corpus.cache_hit = True
        corpus.seconds = time.perf_counter() - start
        return corpus
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        _build(cfg, tmp, progress, start)
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "meta.json").is_file():  # not a concurrent build finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    corpus = load_corpus(path)
    corpus.seconds = time.perf_counter() - start
    return corpus


def load_corpus(path: str | os.PathLike) -> Corpus:
    """Open a cache folder: ids memory-mapped, the rest read."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        vocab = Vocab.load(path / "vocab.json")
        # Copy-on-write mapping: writable for torch (no warning), pages shared with the file.
        ids = np.load(path / "ids.npy", mmap_mode="c")
        offsets = np.load(path / "doc_offsets.npy")
    except (OSError, ValueError) as err:
        raise W2VError(f"corpus cache {path} is unreadable ({err}); delete it to rebuild") from err
    if meta.get("format") != CACHE_FORMAT:
        raise W2VError(f"corpus cache {path} has format {meta.get('format')}, expected "
                       f"{CACHE_FORMAT}; delete it to rebuild")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids_t = torch.from_numpy(ids)
    return Corpus(ids=ids_t, doc_offsets=torch.from_numpy(offsets), vocab=vocab,
                  raw_tokens=int(meta["raw_tokens"]), path=path, meta=meta)


# --- the build ---------------------------------------------------------------------------------


@dataclass
class _Scan:
    """One pass over the text: words in first-occurrence order and the raw id stream."""

    words: list[str]
    counts: np.ndarray  # int64 (G,)
    raw_path: Path  # int32 raw ids, one per token
    raw_tokens: int
    doc_ends: np.ndarray  # int64, raw positions where documents end (sorted, may repeat)


def _build(cfg: DataConfig, tmp: Path, progress: bool, start: float) -> None:
    tokenizer = Tokenizer(cfg.lowercase, cfg.token_pattern)
    source = describe_source(cfg)
    ds = load_text_dataset(cfg, progress=progress)
    scan = _scan(ds, cfg, tmp / "raw.i32", progress)
    _check_text(scan, source)
    vocab = _choose_vocab(scan, cfg, tokenizer, source)
    offsets = _encode(scan, vocab, tmp / "ids.npy", progress)
    scan.raw_path.unlink()
    np.save(tmp / "doc_offsets.npy", offsets)
    vocab.save(tmp / "vocab.json")
    replaced = int(sum(c for w, c in zip(scan.words, scan.counts.tolist(), strict=True)
                       if "\ufffd" in w))
    if replaced:
        log.warning("%s: %d tokens contain undecodable bytes (replaced with U+FFFD)", source,
                    replaced)
    meta = {
        "format": CACHE_FORMAT,
        "source": source,
        "fingerprint": source_fingerprint(cfg),
        "raw_tokens": scan.raw_tokens,
        "tokens": vocab.total,
        "types": len(vocab),
        "documents": len(offsets) - 1,
        "replaced_tokens": replaced,
        "seconds": round(time.perf_counter() - start, 3),
    }
    # Written last: a folder with meta.json is complete (and only renamed into place after).
    atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))


def _scan(ds: Any, cfg: DataConfig, raw_path: Path, progress: bool) -> _Scan:
    state = _ScanState(raw=open(raw_path, "wb"))  # noqa: SIM115 (closed below)
    group: list[TokenChunk] = []
    try:
        for chunk in iter_token_chunks(ds, cfg.text_column, cfg.lowercase, cfg.token_pattern,
                                       cfg.max_doc_words, progress):
            group.append(chunk)
            if sum(len(c.codes) for c in group) >= GROUP_TOKENS:
                state.add(group)
                group = []
        state.add(group)
    finally:
        state.raw.close()
    return _Scan(words=list(state.index), counts=state.counts[: len(state.index)],
                 raw_path=raw_path, raw_tokens=state.pos,
                 doc_ends=np.concatenate(state.ends) if state.ends else np.zeros(0, np.int64))


@dataclass
class _ScanState:
    raw: Any  # the open raw-id file
    index: dict[str, int] = field(default_factory=dict)  # word -> raw id (first occurrence)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(1 << 16, dtype=np.int64))
    ends: list[np.ndarray] = field(default_factory=list)
    pos: int = 0

    def add(self, group: list[TokenChunk]) -> None:
        """Give a group of chunks' tokens raw ids: append them, count them, note doc ends."""
        if not group:
            return
        # The chunks' word lists overlap heavily; Arrow merges them in C first (the first
        # occurrence in the concatenation is the first in the text), so the Python dict sees
        # each distinct word of the group once instead of once per chunk.
        merged = pc.dictionary_encode(pa.concat_arrays([c.words.cast(pa.large_string())
                                                        for c in group]))
        distinct = merged.dictionary.to_pylist()
        index = self.index
        gid = np.fromiter((index.setdefault(w, len(index)) for w in distinct),
                          dtype=np.int32, count=len(distinct))
        gids = gid[merged.indices.to_numpy(zero_copy_only=False)]
        if len(index) > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(len(index), np.int64)])
        start = 0
        for chunk in group:
            chunk_gids = gids[start : start + len(chunk.words)]
            start += len(chunk.words)
            raw_ids = chunk_gids[chunk.codes]
            # A chunk's words are distinct, so its raw ids are too: a plain += is exact.
            self.counts[chunk_gids] += np.bincount(chunk.codes, minlength=len(chunk_gids))
            self.raw.write(raw_ids.tobytes())
            self.ends.append(chunk.doc_ends + self.pos)
            self.pos += len(raw_ids)


def _check_text(scan: _Scan, source: str) -> None:
    """Refuse binary files and other encodings: a few undecodable bytes (mixed encodings) are
    replaced and warned about, but a corpus where many tokens hold them is not UTF-8 text."""
    bad = sum(c for w, c in zip(scan.words, scan.counts.tolist(), strict=True)
              if "\ufffd" in w or "\x00" in w)
    if bad > MAX_UNDECODABLE * scan.raw_tokens:
        raise W2VError(
            f"{source} is not UTF-8 text: {bad:,} of {scan.raw_tokens:,} tokens hold undecodable "
            "bytes or NULs (a binary file, or another encoding such as UTF-16 or Latin-1); "
            "re-encode it as UTF-8 (iconv -t utf-8) or point data.path at text files"
        )


def _choose_vocab(scan: _Scan, cfg: DataConfig, tokenizer: Tokenizer, source: str) -> Vocab:
    if scan.raw_tokens == 0:
        raise W2VError(
            f"{source} has no words in column data.text_column={cfg.text_column!r} "
            "(empty files or empty rows); point data.path at a non-empty corpus"
        )
    if not (scan.counts >= cfg.min_count).any():
        top = int(np.argmax(scan.counts))
        raise W2VError(
            f"no word of {source} occurs data.min_count={cfg.min_count} times: "
            f"{len(scan.words)} word types, the most frequent ({scan.words[top]!r}) occurs "
            f"{int(scan.counts[top])} times; lower data.min_count or use a larger corpus"
        )
    return Vocab.from_counts(scan.words, scan.counts, cfg.min_count, cfg.max_vocab, tokenizer)


def _encode(scan: _Scan, vocab: Vocab, ids_path: Path, progress: bool) -> np.ndarray:
    """Write vocab ids (OOV dropped) to ids.npy; return the retained documents' offsets."""
    lut = np.full(len(scan.words), -1, dtype=np.int32)
    lut[select_ids(scan.counts, vocab.min_count, vocab.max_vocab)] = np.arange(len(vocab),
                                                                               dtype=np.int32)
    ids = np.lib.format.open_memmap(ids_path, mode="w+", dtype=np.int32, shape=(vocab.total,))
    raw = np.memmap(scan.raw_path, dtype=np.int32, mode="r", shape=(scan.raw_tokens,))
    ends = scan.doc_ends
    kept_ends = np.empty_like(ends)
    out = 0
    bar = tqdm(total=scan.raw_tokens, unit="tok", unit_scale=True, desc="encode",
               disable=not progress)
    with bar:
        for b0 in range(0, scan.raw_tokens, ENCODE_BLOCK):
            b1 = min(b0 + ENCODE_BLOCK, scan.raw_tokens)
            block = lut[raw[b0:b1]]
            keep = block >= 0
            kept = block[keep]
            ids[out : out + len(kept)] = kept
            # A document ending at raw position e (in (b0, b1]) ends at retained position
            # out + (tokens kept in block[:e - b0]).
            lo, hi = np.searchsorted(ends, [b0, b1], side="right")
            kept_ends[lo:hi] = out + np.cumsum(keep, dtype=np.int32)[ends[lo:hi] - b0 - 1]
            out += len(kept)
            bar.update(b1 - b0)
    ids.flush()
    del ids, raw
    # Empty documents (blank rows, all-OOV rows) repeat the previous offset: unique drops them.
    return np.unique(np.concatenate([[0], kept_ends])).astype(np.int64)


def summary(corpus: Corpus, top: int = 10) -> str:
    """A few lines for the CLI: sizes, the most frequent words, time and cache."""
    v = corpus.vocab
    words = ", ".join(f"{w} ({c})" for w, c in zip(v.words[:top], v.counts[:top].tolist(),
                                                    strict=True))
    how = "cache hit" if corpus.cache_hit else f"built in {corpus.meta.get('seconds', 0):.2f} s"
    return "\n".join([
        f"source:          {corpus.meta.get('source')}",
        f"types:           {len(v):,} (min_count={v.min_count}, max_vocab={v.max_vocab})",
        f"retained tokens: {len(corpus.ids):,}",
        f"raw tokens:      {corpus.raw_tokens:,}",
        f"documents:       {corpus.num_docs:,}",
        f"top words:       {words}",
        f"seconds:         {corpus.seconds:.2f} ({how})",
        f"cache:           {corpus.path} ({'hit' if corpus.cache_hit else 'built now'})",
    ])
