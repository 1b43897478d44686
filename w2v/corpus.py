"""Tokens -> cached index tensors: one flat int32 id array and int64 document offsets.

    python -c "from w2v.config import DataConfig; from w2v.corpus import build_corpus; \
print(build_corpus(DataConfig(path='corpus.txt')).ids[:10])"

One pass over the text (sources.py loads it, tokens.py tokenizes it) gives every token a raw
id, its word's first-occurrence rank, written to a temp file while counts accumulate; the
vocabulary (vocab.py) is then chosen from the counts, and one vectorised lookup (-1 = out of
vocabulary) turns raw ids into vocab ids, dropping OOV tokens. Pseudo-documents (rows cut every
data.max_doc_words raw words, see tokens.py) keep their boundaries through the drop; documents
left empty are dropped.

Memory does not grow with the corpus: text is tokenized in ~1 MB chunks, counted in groups of
GROUP_TOKENS tokens, and raw ids and document ends go straight to temp files; the encode step
reads them back ENCODE_BLOCK tokens at a time and appends them to ids.npy. What does grow
is the counting dict (one entry per distinct word) and 12 bytes of numpy per distinct word;
data.max_vocab_size bounds the dict the way word2vec.c's ReduceVocab and gensim do (a word
forgotten by a prune and seen again is counted afresh, and only the occurrences it is counted
for are encoded, so the ids always hold exactly vocab.total tokens). data.streaming=true
reads the source as an IterableDataset, so not even the Arrow copy of the text is written.

Cache: <cache_root>/<name>-<key>/ with ids.npy (memory-mapped, so corpora larger than RAM
work), doc_offsets.npy, vocab.json and meta.json. The key hashes the source fingerprint (local
files: paths, sizes, mtimes; no `datasets` call, so a rerun is fast), the tokenizer, min_count,
max_vocab, max_vocab_size (when set), max_doc_words, the text column and CACHE_FORMAT. A build
writes into a temp folder renamed into place at the end, so an interrupted build never leaves a
cache a later run trusts.
cache_root: data.cache_dir, else $W2V_CACHE, else ~/.cache/w2v.

A cache hit imports neither `datasets` nor pyarrow: the build machinery is imported by the
build alone (pyarrow was 36 MiB of the peak RSS of importing w2v.train and opening a cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from w2v.atomic import atomic_write_text, hold, in_use, umask
from w2v.config import DataConfig
from w2v.errors import W2VError, unfinished
from w2v.memory import give_back
from w2v.sources import describe_source, source_fingerprint
from w2v.tokenizer import Phrases, Tokenizer
from w2v.vocab import Vocab, continue_vocab

if TYPE_CHECKING:  # imported where used: a cache hit needs neither numba nor pyarrow
    from w2v import phrases
    from w2v.tokens import TokenChunk

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the cached files or their meaning change
# A build's temp folder holds this file locked while the build runs (remove_stale_builds).
BUILDING = ".building"
# A temp folder without that file (an earlier version's build) is left this long after its
# last change before it counts as abandoned: a build that has just made it is not.
STALE_SECONDS = 3600.0
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


def cache_path(cfg: DataConfig, base: Vocab | None = None) -> Path:
    """The cache folder for `cfg` (cheap: stats files, reads no data); `base` is the
    vocabulary of trainer.init_from, which decides the ids."""
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
    # Each of these is absent when unset, so existing caches keep their keys.
    if cfg.max_vocab_size is not None:
        key["max_vocab_size"] = cfg.max_vocab_size
    if cfg.phrases.passes:
        from w2v import phrases

        key["phrases"] = phrases.settings_key(cfg.phrases, cfg.lowercase)
    if base is not None:
        key["base_vocab"] = {"sha256": vocab_digest(base), "update": cfg.vocab_update}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.name) or "corpus"
    return cache_root(cfg) / f"{name}-{digest}"


def vocab_digest(vocab: Vocab) -> str:
    """A hash of a vocabulary's words and counts (ids follow them)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(vocab.words, ensure_ascii=False).encode())
    digest.update(np.ascontiguousarray(vocab.counts, dtype="<i8").tobytes())
    return digest.hexdigest()


def build_corpus(cfg: DataConfig, progress: bool = True, base: Vocab | None = None) -> Corpus:
    """Load, count, build the vocabulary, encode and cache; reuse the cache when it exists.

    base: the vocabulary of trainer.init_from: its words keep their ids, and data.vocab_update
    says whether this corpus's other words are appended (vocab.continue_vocab) or dropped."""
    start = time.perf_counter()
    path = cache_path(cfg, base)
    if (path / "meta.json").is_file():
        corpus = load_corpus(path)
        corpus.cache_hit = True
        corpus.seconds = time.perf_counter() - start
        return corpus
    try:
        _build_into(cfg, path, progress, start, base)
    except OSError as err:  # a full disk or a read-only cache folder, while writing the cache
        raise W2VError(
            f"cannot write the corpus cache under {path.parent}: {err.strerror or err}; free "
            "some space or point data.cache_dir (or $W2V_CACHE) at a writable folder"
        ) from None
    # Its token strings, counting dict and Arrow buffers are garbage now: ~250 MiB of
    # text8-prefix's build stayed in the RSS of the whole run that followed.
    give_back()
    corpus = load_corpus(path)
    corpus.seconds = time.perf_counter() - start
    return corpus


def _build_into(cfg: DataConfig, path: Path, progress: bool, start: float,
                base: Vocab | None) -> None:
    """Build in a temp folder renamed to `path` at the end: never a half-written cache, and
    a failed or interrupted (Ctrl-C) build leaves nothing, not even the cache root it made."""
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(path.parent)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    # Held while the build lasts (atomic.hold): a later build tells a live one from a folder
    # a killed one (kill -9) left. Removed before the rename: the cache holds no lock file.
    building = os.open(tmp / BUILDING, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    hold(building)

    def clean_up() -> None:
        with contextlib.suppress(OSError):
            os.close(building)
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # deepest first; rmdir leaves a folder someone else filled
            with contextlib.suppress(OSError):
                folder.rmdir()

    try:
        with unfinished(clean_up):  # Ctrl-C (errors.stop_at_once) removes the same
            _build(cfg, tmp, progress, start, base)
            os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700: the cache gets the usual mode
            (tmp / BUILDING).unlink()
            try:
                os.rename(tmp, path)
            except OSError:
                if not (path / "meta.json").is_file():  # not a concurrent build finishing first
                    raise
            made = []
    finally:
        clean_up()


def remove_stale_builds(root: Path) -> list[Path]:
    """Remove the temp folders of builds that died without cleaning up (kill -9) under the
    cache root: those whose BUILDING file no live process holds. A folder without one (a
    build by an earlier version, or one a moment old) counts as stale once STALE_SECONDS
    have passed since it last changed."""
    removed = []
    for folder in root.glob(".*.tmp-*"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        marker = folder / BUILDING
        if marker.exists():
            stale = not in_use(marker)
        else:
            stale = time.time() - folder.stat().st_mtime > STALE_SECONDS
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


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
    damage = _cache_damage(ids, offsets, len(vocab), meta)
    if damage:
        raise W2VError(f"corpus cache {path} is damaged: {damage}; delete it to rebuild")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids_t = torch.from_numpy(ids)
    return Corpus(ids=ids_t, doc_offsets=torch.from_numpy(offsets), vocab=vocab,
                  raw_tokens=int(meta["raw_tokens"]), path=path, meta=meta)


def _cache_damage(ids: np.ndarray, offsets: np.ndarray, types: int, meta: dict) -> str | None:
    """What makes a cache's arrays unusable, or None: checked once per load, so that no
    engine indexes past a table (the autograd engine raised IndexError mid-run, the batches
    read past the ids) and no document runs backwards. One pass over the offsets, one over
    the ids a block at a time (no ids-sized temporary)."""
    if ids.ndim != 1 or ids.dtype != np.int32 or offsets.ndim != 1 or offsets.dtype != np.int64:
        return "ids.npy or doc_offsets.npy has the wrong type or shape"
    if meta.get("tokens", len(ids)) != len(ids) or meta.get("types", types) != types:
        return (f"meta.json records {meta.get('tokens')} tokens and {meta.get('types')} words, "
                f"the files hold {len(ids)} and {types}")
    if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(ids) or (
            np.diff(offsets) < 0).any():
        return "doc_offsets.npy does not run from 0 up to the number of ids"
    for start in range(0, len(ids), ENCODE_BLOCK):
        block = ids[start : start + ENCODE_BLOCK]
        # As unsigned, a negative id is huge: one comparison catches both ends.
        if block.size and int(block.view(np.uint32).max()) >= types:
            return f"ids.npy holds word ids outside 0..{types - 1}"
    return None


# --- the build ---------------------------------------------------------------------------------


@dataclass
class _Scan:
    """One pass over the text: the surviving words in first-occurrence order, and the raw id
    stream and document ends, both on disk."""

    words: list[str]
    counts: np.ndarray  # int64 (G,)
    raw_ids: np.ndarray  # int32 (G,): each word's raw id (0..G-1 unless pruned)
    raw_space: int  # raw ids handed out, those of pruned words included
    raw_path: Path  # int32 raw ids, one per token
    raw_tokens: int
    ends_path: Path  # int64 raw positions where documents end (sorted, may repeat)
    documents: int  # entries in ends_path
    pruned: int = 0  # times the counts were pruned (data.max_vocab_size)
def _build(cfg: DataConfig, tmp: Path, progress: bool, start: float,
           base: Vocab | None = None) -> None:
    from w2v.sources import load_text_dataset

    source = describe_source(cfg)
    ds = load_text_dataset(cfg, progress=progress)
    scan = _scan(ds, cfg, tmp, progress)
    replaced = _check_text(scan, source)
    text_tokens = scan.raw_tokens
    learnt, phrase_stats = None, []
    if cfg.phrases.passes:
        scan, learnt, phrase_stats = _phrase(scan, cfg, tmp, progress)
    tokenizer = Tokenizer(cfg.lowercase, cfg.token_pattern, learnt)
    vocab = _choose_vocab(scan, cfg, tokenizer, source, base)
    tokens = _encode(scan, vocab, tmp, progress)
    scan.raw_path.unlink()
    scan.ends_path.unlink()
    documents = len(np.load(tmp / "doc_offsets.npy", mmap_mode="r")) - 1
    vocab.save(tmp / "vocab.json")
    meta = {
        "format": CACHE_FORMAT,
        "source": source,
        "fingerprint": source_fingerprint(cfg),
        "raw_tokens": scan.raw_tokens,
        "tokens": tokens,
        "types": len(vocab),
        "documents": documents,
        "pruned": scan.pruned,
        "replaced_tokens": replaced,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if cfg.phrases.passes:
        # raw_tokens counts the phrased tokens (new_york is one); text_tokens the words before.
        meta["text_tokens"] = text_tokens
        meta["phrases"] = [asdict(s) for s in phrase_stats]
    if base is not None:
        dropped = scan.raw_tokens - tokens
        meta["base_vocab"] = {"words": len(base), "update": cfg.vocab_update,
                              "new_words": len(vocab) - len(base), "dropped_tokens": dropped}
        rule = ("under data.min_count" if cfg.vocab_update else
                "not in the trainer.init_from vocabulary (data.vocab_update=true adds them)")
        log.info("%s: %d of %d tokens are %s and were dropped; %d new words", source, dropped,
                 scan.raw_tokens, rule, len(vocab) - len(base))
    # Written last: a folder with meta.json is complete (and only renamed into place after).
    atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))


def _scan(ds: Any, cfg: DataConfig, tmp: Path, progress: bool) -> _Scan:
    from w2v.tokens import iter_token_chunks

    state = _ScanState(raw=open(tmp / "raw.i32", "wb"),  # noqa: SIM115 (closed below)
                       ends=open(tmp / "ends.i64", "wb"),  # noqa: SIM115
                       max_size=cfg.max_vocab_size)
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
        state.ends.close()
    raw_ids = np.fromiter(state.index.values(), dtype=np.int32, count=len(state.index))
    if state.pruned:
        log.info("data.max_vocab_size=%d: counts pruned %d times (words counted up to %d "
                 "times were forgotten)", cfg.max_vocab_size, state.pruned, state.min_reduce - 1)
    return _Scan(words=list(state.index), counts=state.counts[raw_ids], raw_ids=raw_ids,
                 raw_space=state.next_id, raw_path=tmp / "raw.i32", raw_tokens=state.pos,
                 ends_path=tmp / "ends.i64", documents=state.documents, pruned=state.pruned)


@dataclass
class _ScanState:
    """Counting state. The dict holds the distinct words seen (with data.max_vocab_size, at
    most that many plus one group's new words); raw ids and document ends go straight to disk;
    `counts` is 8 bytes per raw id handed out."""

    raw: Any  # the open raw-id file
    ends: Any  # the open document-ends file
    max_size: int | None = None
    index: dict[str, int] = field(default_factory=dict)  # word -> raw id
    counts: np.ndarray = field(default_factory=lambda: np.zeros(1 << 16, dtype=np.int64))
    next_id: int = 0
    pos: int = 0
    documents: int = 0
    min_reduce: int = 1
    pruned: int = 0

    def add(self, group: list[TokenChunk]) -> None:
        """Give a group of chunks' tokens raw ids: append them, count them, note doc ends."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not group:
            return
        # The chunks' word lists overlap heavily; Arrow merges them in C first (the first
        # occurrence in the concatenation is the first in the text), so the Python dict sees
        # each distinct word of the group once instead of once per chunk.
        merged = pc.dictionary_encode(pa.concat_arrays([c.words.cast(pa.large_string())
                                                        for c in group]))
        distinct = merged.dictionary.to_pylist()
        index, base = self.index, self.next_id - len(self.index)
        # A new word's raw id is next_id at its insertion (base + the dict's size then).
        gid = np.fromiter((index.setdefault(w, base + len(index)) for w in distinct),
                          dtype=np.int32, count=len(distinct))
        self.next_id = base + len(index)
        gids = gid[merged.indices.to_numpy(zero_copy_only=False)]
        if self.next_id > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(self.next_id, np.int64)])
        start = 0
        for chunk in group:
            chunk_gids = gids[start : start + len(chunk.words)]
            start += len(chunk.words)
            raw_ids = chunk_gids[chunk.codes]
            # A chunk's words are distinct, so its raw ids are too: a plain += is exact.
            self.counts[chunk_gids] += np.bincount(chunk.codes, minlength=len(chunk_gids))
            self.raw.write(raw_ids.tobytes())
            ends = chunk.doc_ends + self.pos
            ends = ends[ends > 0]  # empty rows before the first word end no document
            self.ends.write(ends.astype(np.int64).tobytes())
            self.documents += len(ends)
            self.pos += len(raw_ids)
        while self.max_size is not None and len(self.index) > self.max_size:
            self._prune()

    def _prune(self) -> None:
        """word2vec.c's ReduceVocab (gensim's max_vocab_size): forget the words counted
        min_reduce times or fewer, then raise min_reduce. A forgotten word seen again starts
        a new count under a new raw id; its occurrences before that are not encoded, so the
        ids hold exactly the counted occurrences."""
        ids = np.fromiter(self.index.values(), dtype=np.int32, count=len(self.index))
        drop = (self.counts[ids] <= self.min_reduce).tolist()
        if any(drop):
            # Rebuilt rather than deleted from, so the dict's memory shrinks too.
            self.index = {w: i for (w, i), d in zip(self.index.items(), drop, strict=True)
                          if not d}
        self.min_reduce += 1
        self.pruned += 1


def _check_text(scan: _Scan, source: str) -> int:
    """Refuse binary files and other encodings: a few undecodable bytes (mixed encodings) are
    replaced and warned about, but a corpus where many tokens hold them is not UTF-8 text.
    Returns the number of tokens holding a replaced byte. One pass over the distinct words."""
    replaced = bad = 0
    for w, c in zip(scan.words, scan.counts.tolist(), strict=True):
        if "\ufffd" in w:
            replaced += c
            bad += c
        elif "\x00" in w:
            bad += c
    if bad > MAX_UNDECODABLE * scan.raw_tokens:
        raise W2VError(
            f"{source} is not UTF-8 text: {bad:,} of {scan.raw_tokens:,} tokens hold undecodable "
            "bytes or NULs (a binary file, or another encoding such as UTF-16 or Latin-1); "
            "re-encode it as UTF-8 (iconv -t utf-8) or point data.path at text files"
        )
    if replaced:
        log.warning("%s: %d tokens contain undecodable bytes (replaced with U+FFFD)", source,
                    replaced)
    return replaced


def _phrase(scan: _Scan, cfg: DataConfig, tmp: Path, progress: bool
            ) -> tuple[_Scan, Phrases, list[phrases.PassStats]]:
    """The raw-id stream through phrases.phrase_stream; the phrased stream's words in their
    first-occurrence order (the vocabulary's tie order, as gensim on the phrased text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from w2v import phrases

    inverse = np.full(scan.raw_space, -1, dtype=np.int64)
    inverse[scan.raw_ids] = np.arange(len(scan.words))
    # Ids of words data.max_vocab_size forgot have no string: they take part in no phrase.
    strings = pa.array(scan.words, pa.large_string()).take(pa.array(inverse, mask=inverse < 0))
    counts = np.zeros(scan.raw_space, dtype=np.int64)
    counts[scan.raw_ids] = scan.counts
    stream = phrases.Stream(scan.raw_path, scan.ends_path, scan.raw_tokens, scan.documents,
                            strings, counts)
    out, learnt, stats = phrases.phrase_stream(stream, cfg.phrases, cfg.lowercase, tmp, progress)
    scan.raw_path.unlink()
    scan.ends_path.unlink()
    ids = np.flatnonzero((out.counts > 0) & pc.is_valid(out.strings).to_numpy(
        zero_copy_only=False))
    ids = ids[np.argsort(out.first[ids], kind="stable")]
    phrased = _Scan(words=out.strings.take(pa.array(ids)).to_pylist(), counts=out.counts[ids],
                    raw_ids=ids.astype(np.int32), raw_space=out.space,
                    raw_path=out.tokens_path, raw_tokens=out.length, ends_path=out.ends_path,
                    documents=out.documents, pruned=scan.pruned)
    return phrased, learnt, stats


def _choose_vocab(scan: _Scan, cfg: DataConfig, tokenizer: Tokenizer, source: str,
                  base: Vocab | None = None) -> Vocab:
    if scan.raw_tokens == 0:
        raise W2VError(
            f"{source} has no words in column data.text_column={cfg.text_column!r} "
            "(empty files or empty rows); point data.path at a non-empty corpus"
        )
    if base is not None:
        return continue_vocab(base, scan.words, scan.counts, cfg.vocab_update, cfg.min_count,
                              cfg.max_vocab, tokenizer)
    if not (scan.counts >= cfg.min_count).any():
        top = int(np.argmax(scan.counts))
        raise W2VError(
            f"no word of {source} occurs data.min_count={cfg.min_count} times: "
            f"{len(scan.words)} word types, the most frequent ({scan.words[top]!r}) occurs "
            f"{int(scan.counts[top])} times; lower data.min_count or use a larger corpus"
        )
    return Vocab.from_counts(scan.words, scan.counts, cfg.min_count, cfg.max_vocab, tokenizer)


def _encode(scan: _Scan, vocab: Vocab, tmp: Path, progress: bool) -> int:
    """Write vocab ids (OOV dropped) to ids.npy and the retained documents' offsets to
    doc_offsets.npy, a block of raw tokens at a time (memory does not grow with the corpus).
    Returns the number of tokens kept."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # Each scanned word's vocabulary id, -1 if out of the vocabulary (vocab.index: the words
    # may come from trainer.init_from's file, in its order).
    word_ids = pc.fill_null(pc.index_in(pa.array(scan.words, pa.large_string()),
                                        value_set=pa.array(vocab.words, pa.large_string())), -1)
    word_ids = word_ids.to_numpy(zero_copy_only=False).astype(np.int32)
    lut = np.full(scan.raw_space, -1, dtype=np.int32)
    lut[scan.raw_ids] = word_ids
    total = int(scan.counts[word_ids >= 0].sum())
    ids = _NpyWriter(tmp / "ids.npy", np.int32, total)
    raw = np.memmap(scan.raw_path, dtype=np.int32, mode="r", shape=(scan.raw_tokens,))
    ends = (np.memmap(scan.ends_path, dtype=np.int64, mode="r", shape=(scan.documents,))
            if scan.documents else np.zeros(0, np.int64))
    offsets_path = tmp / "offsets.i64"
    out, last, n_offsets = 0, 0, 1
    bar = tqdm(total=scan.raw_tokens, unit="tok", unit_scale=True, desc="encode",
               disable=not progress)
    with bar, ids, open(offsets_path, "wb") as offsets:
        offsets.write(np.zeros(1, np.int64).tobytes())
        for b0 in range(0, scan.raw_tokens, ENCODE_BLOCK):
            b1 = min(b0 + ENCODE_BLOCK, scan.raw_tokens)
            block = lut[raw[b0:b1]]
            keep = block >= 0
            kept = block[keep]
            ids.write(kept)
            # A document ending at raw position e (in (b0, b1]) ends at retained position
            # out + (tokens kept in block[:e - b0]).
            lo, hi = np.searchsorted(ends, [b0, b1], side="right")
            block_ends = out + np.cumsum(keep, dtype=np.int64)[ends[lo:hi] - b0 - 1]
            # Empty documents (blank rows, all-OOV rows) repeat the previous offset: drop them.
            fresh = block_ends[block_ends != np.concatenate([[last], block_ends[:-1]])]
            offsets.write(fresh.tobytes())
            n_offsets += len(fresh)
            last = int(fresh[-1]) if len(fresh) else last
            out += len(kept)
            bar.update(b1 - b0)
    del raw, ends
    _to_npy(offsets_path, tmp / "doc_offsets.npy", n_offsets)
    offsets_path.unlink()
    return total


def _to_npy(src: Path, dst: Path, n: int) -> None:
    """A raw int64 file as an .npy file, copied a block at a time."""
    raw = np.memmap(src, dtype=np.int64, mode="r", shape=(n,))
    with _NpyWriter(dst, np.int64, n) as out:
        for b0 in range(0, n, ENCODE_BLOCK):
            out.write(raw[b0 : b0 + ENCODE_BLOCK])


class _NpyWriter:
    """A 1-D .npy file of `n` values written front to back with ordinary writes.

    Not through a writable memory map (np.lib.format.open_memmap): a page of a map that the
    filesystem cannot back (a full disk) is reported by SIGBUS, which kills the process with
    no message and leaves the temp folder; a write() reports ENOSPC as an OSError, which
    build_corpus turns into one line after removing the temp folder."""

    def __init__(self, path: Path, dtype: Any, n: int) -> None:
        self.path, self.dtype, self.n, self.written = path, np.dtype(dtype), n, 0
        self.f = open(path, "wb")  # noqa: SIM115 (closed by __exit__)
        np.lib.format.write_array_header_1_0(self.f, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
            "shape": (n,)})

    def write(self, values: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.written += len(values)

    def __enter__(self) -> _NpyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()
        if exc[0] is None and self.written != self.n:  # a programming error, not the user's
            raise RuntimeError(f"{self.path}: {self.written} values written, {self.n} declared")


def _phrase_lines(meta: dict) -> list[str]:
    if not meta.get("phrases"):
        return []
    found = ", ".join(f"{p['phrases']:,}" for p in meta["phrases"])
    return [f"phrases:         {found} found (per pass); {meta['text_tokens']:,} words before "
            "joining"]


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
        *_phrase_lines(corpus.meta),
        f"top words:       {words}",
        f"seconds:         {corpus.seconds:.2f} ({how})",
        f"cache:           {corpus.path} ({'hit' if corpus.cache_hit else 'built now'})",
    ])
