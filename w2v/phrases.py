"""Tokens -> phrased tokens: frequent collocations become one token (`new york` -> `new_york`).

    python -m w2v.data data=local data.path=corpus.txt data.phrases.passes=2

The stage between tokenizing and the vocabulary, as word2vec's word2phrase and gensim's
`Phrases` do it, with gensim 4's exact rules (tests/test_phrases.py checks them against
gensim 4.4 on text8-prefix):

- Learn: over each document, every word and every pair of consecutive words is counted; a
  connector word (data.phrases.connectors / connector_words, gensim's connector_words) is not
  counted and does not break a pair, so `bank of america` is the pair (bank, america) with `of`
  in between. Pairs never cross a document (pseudo-documents of data.max_doc_words words, as
  gensim's Text8Corpus sentences).
- Score: default (word2phrase, Mikolov et al. 2013) (count(ab) - min_count) / (count(a) *
  count(b)) * N, with N the number of distinct unigrams and bigrams counted (gensim's
  len(vocab)); or npmi (Bouma 2009). A pair is a phrase when its score is above threshold.
- Apply: left to right, greedily (gensim's analyze_sentence): a word and the next word (with
  the connectors between) join when they are a phrase, and the next pair starts after them.
- Passes: pass k learns on the text phrased by passes 1..k-1 (gensim's stacked models;
  word2phrase run twice), so pass 2 joins `new_york` and `city`.

The text is never held in memory: corpus.py's scan leaves one int32 raw id per token and the
document ends on disk; each pass reads them ENCODE_BLOCK tokens at a time, counts the pairs of
a block at once (numpy), keeps the distinct pairs' counts in sorted arrays, and writes the
phrased stream to a new file. Only the per-token walks (pairing across connectors, the greedy
join) are numba kernels. Distinct pairs are bounded by data.phrases.max_vocab_size the way
word2vec.c's ReduceVocab bounds words (gensim's Phrases max_vocab_size).

Like gensim and word2phrase, counts are kept per string: a joined pair `a_b` and a token `a_b`
already in the text are one entry (this matters from pass 2 on, where `new_york` is a token).

The learnt phrases (per pass, as token tuples) are a `w2v.tokenizer.Phrases`, saved with the
tokenizer (vocab.json, checkpoints, vectors.pt), so query-time text is phrased the way the
corpus was: `Phrases.apply(tokens)`. This module is the learner only; the applier travels with
the vectors in tokenizer.py, which imports neither numba nor pyarrow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit
from tqdm.auto import tqdm

from w2v.config import PhrasesConfig
from w2v.tokenizer import Phrases

log = logging.getLogger(__name__)

# gensim.models.phrases.ENGLISH_CONNECTOR_WORDS: articles, some prepositions and conjunctions.
ENGLISH_CONNECTOR_WORDS = ("a", "an", "and", "at", "by", "for", "from", "in", "of", "on", "or",
                           "the", "to", "with", "without")
BLOCK = 1 << 22  # stream tokens per step (bounded memory on huge corpora)
MERGE_MIN = 1 << 23  # distinct-pair rows gathered from blocks before they are merged
LONG_GAP = 1 << 62  # gap codes at or above this name a long run of connectors (interned)
_JIT = dict(cache=True, nogil=True)


def connector_words(cfg: PhrasesConfig, lowercase: bool) -> tuple[str, ...]:
    """The configured connector words: the preset plus the listed ones (lowercased when the
    tokenizer lowercases, since tokens are compared after tokenizing)."""
    words = set(ENGLISH_CONNECTOR_WORDS if cfg.connectors == "english" else ())
    words.update(w.lower() if lowercase else w for w in cfg.connector_words)
    return tuple(sorted(words))


def settings_key(cfg: PhrasesConfig, lowercase: bool) -> dict[str, Any]:
    """What the phrased corpus depends on (part of corpus.py's cache key)."""
    return {"passes": cfg.passes, "min_count": cfg.min_count, "threshold": cfg.threshold,
            "scoring": cfg.scoring, "delimiter": cfg.delimiter,
            "connector_words": list(connector_words(cfg, lowercase)),
            "max_vocab_size": cfg.max_vocab_size}


# ---------------------------------------------------------------------------------------------
# The corpus-scale stage: token streams on disk.


@dataclass
class Stream:
    """A token stream on disk and what is known about its ids.

    tokens: int32 ids, one per token (raw ids: corpus.py's first-occurrence ranks);
    ends: int64 sorted positions where documents end (may repeat); strings: each id's token
    (null for ids with no token: words data.max_vocab_size made corpus.py forget, which take
    part in no phrase); counts: int64 occurrences per id in this stream.
    """

    tokens_path: Path
    ends_path: Path
    length: int
    documents: int
    strings: pa.Array  # large_string (space,)
    counts: np.ndarray  # int64 (space,)
    first: np.ndarray | None = None  # int64 (space,): first position of each id, -1 if none

    @property
    def space(self) -> int:
        return len(self.strings)

    def tokens(self) -> np.ndarray:
        return (np.memmap(self.tokens_path, dtype=np.int32, mode="r", shape=(self.length,))
                if self.length else np.zeros(0, np.int32))

    def ends(self) -> np.ndarray:
        return (np.memmap(self.ends_path, dtype=np.int64, mode="r", shape=(self.documents,))
                if self.documents else np.zeros(0, np.int64))


@dataclass
class PassStats:
    types: int = 0  # distinct unigrams + bigrams (gensim's len(vocab)): the default score's N
    bigrams: int = 0  # distinct bigrams counted (after pruning)
    phrases: int = 0  # bigrams scored above the threshold
    joined: int = 0  # phrase tokens written (occurrences)
    pruned: int = 0  # prunes of the bigram counts (data.phrases.max_vocab_size)


@dataclass
class _Connectors:
    """Connector words as the kernels see them: kind[id] = 0 for a word, 1..C for connector c,
    -1 for an id with no token. A run of connectors is one gap code: sum c_j * base**j
    (bijective base-(C+1) digits, exact for up to `kmax` connectors); longer runs are interned
    as LONG_GAP + k."""

    words: tuple[str, ...]
    base: int
    kmax: int
    long_runs: dict[tuple[int, ...], int] = field(default_factory=dict)  # id runs -> k

    @classmethod
    def make(cls, words: tuple[str, ...]) -> _Connectors:
        base = len(words) + 1
        kmax = 0
        if words:
            while base ** (kmax + 1) <= LONG_GAP:
                kmax += 1
        return cls(words, base, kmax)

    def kinds(self, strings: pa.Array) -> np.ndarray:
        kind = np.where(pc.is_null(strings).to_numpy(zero_copy_only=False), -1, 0)
        if self.words:
            which = pc.index_in(strings, value_set=pa.array(self.words, pa.large_string()))
            which = pc.fill_null(which, -1).to_numpy(zero_copy_only=False)
            kind = np.where(which >= 0, which + 1, kind)
        return kind.astype(np.int32)

    def intern(self, run: tuple[int, ...]) -> int:
        return LONG_GAP + self.long_runs.setdefault(run, len(self.long_runs))

    def gap_ids(self, code: int, id_of: dict[str, int]) -> list[int]:
        """The connector ids of a gap code (id_of: connector word -> its id in the stream)."""
        if code >= LONG_GAP:
            runs = {k: run for run, k in self.long_runs.items()}
            return list(runs[code - LONG_GAP])
        ids = []
        while code:
            ids.append(id_of[self.words[code % self.base - 1]])
            code //= self.base
        return ids


def phrase_stream(stream: Stream, cfg: PhrasesConfig, lowercase: bool, tmp: Path,
                  progress: bool = True) -> tuple[Stream, Phrases, list[PassStats]]:
    """Run cfg.passes passes over `stream`; returns the phrased stream (new files in `tmp`;
    first occurrences filled in), the learnt Phrases and each pass's statistics."""
    conn = _Connectors.make(connector_words(cfg, lowercase))
    tables: list[dict[tuple[str, ...], float]] = []
    stats: list[PassStats] = []
    bar = tqdm(total=2 * cfg.passes * stream.length, unit="tok", unit_scale=True,
               desc="phrases", disable=not progress)
    with bar:
        for k in range(cfg.passes):
            kind = conn.kinds(stream.strings)
            s = PassStats()
            accepted, table = _learn(stream, kind, conn, cfg, s, bar)
            stream = _apply(stream, kind, conn, accepted, tmp / f"phrased{k + 1}", s, bar)
            tables.append(table)
            stats.append(s)
            log.info("phrases pass %d: %d unigram+bigram types, %d phrases, %d joined", k + 1,
                     s.types, s.phrases, s.joined)
    settings = {"passes": cfg.passes, "min_count": cfg.min_count, "threshold": cfg.threshold,
                "scoring": cfg.scoring}
    return stream, Phrases(tables, cfg.delimiter, conn.words, settings), stats


# --- learn ---------------------------------------------------------------------------------------


@dataclass
class _Accepted:
    """The phrases of one pass, as the apply kernel looks them up: sorted by (key, gap)."""

    key: np.ndarray  # int64: a * space + b
    gap: np.ndarray  # int64 gap codes (0: adjacent)
    out: np.ndarray  # int32: the id of the joined token
    strings: pa.Array  # the ids' strings, the new joined tokens appended
    # Per id (space,): whether some phrase starts / ends with it. Most pairs fail these two
    # cached byte lookups, which saves the binary search (the kernel's main cost otherwise).
    starts: np.ndarray  # bool
    ends: np.ndarray  # bool
    long_key: np.ndarray  # the same for phrases across long connector runs (rare)
    long_offsets: np.ndarray
    long_tokens: np.ndarray
    long_out: np.ndarray


def _learn(stream: Stream, kind: np.ndarray, conn: _Connectors, cfg: PhrasesConfig,
           stats: PassStats, bar) -> tuple[_Accepted, dict[tuple[str, ...], float]]:
    key, gap, count = _count_pairs(stream, kind, conn, cfg, stats, bar)
    space = stream.space
    a, b = key // space, key % space
    unigram = np.flatnonzero((kind == 0) & (stream.counts > 0))
    ucounts = stream.counts.copy()
    if _delimiter_in_tokens(stream.strings, unigram, cfg.delimiter):
        # A token may equal a joined pair (pass 2: `new_york`): count per string, as gensim.
        ucounts, count, types = _per_string(stream, unigram, a, b, gap, count, conn, cfg)
    else:
        types = len(unigram) + len(key)
    stats.types, stats.bigrams = types, len(key)
    score = _score(ucounts[a], ucounts[b], count, types, stream.length, cfg)
    keep = score > cfg.threshold
    stats.phrases = int(keep.sum())
    return _accept(stream, conn, cfg, key[keep], gap[keep], score[keep])


def _count_pairs(stream: Stream, kind: np.ndarray, conn: _Connectors, cfg: PhrasesConfig,
                 stats: PassStats, bar) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (a, b, gap) pairs of consecutive non-connector words within documents and
    their counts, sorted by (key, gap)."""
    tokens, ends = stream.tokens(), stream.ends()
    space = np.int64(stream.space)
    state = np.array([-1, 0, 0, 1, 0], dtype=np.int64)  # prev, code, run length, base**run, pos
    n = min(BLOCK, max(stream.length, 1))
    k1, g = np.empty(n, np.int64), np.empty(n, np.int64)
    # Without connector words no run is ever long: no room needed for long runs then.
    long_at, long_lo = (np.empty(n if conn.words else 1, np.int64) for _ in range(2))
    table = _Table(cfg.max_vocab_size, with_gap=bool(conn.words))
    ep = 0
    for b0 in range(0, stream.length, BLOCK):
        block = np.asarray(tokens[b0 : b0 + BLOCK])
        m, nl, ep = _pair_keys(block, b0, ends, ep, kind, space, conn.base, conn.kmax, state,
                               k1, g, long_at, long_lo)
        for j in range(nl):  # runs of more than kmax connectors: exact, by interning (rare)
            g[long_at[j]] = conn.intern(_run_after(tokens, int(long_lo[j]), kind))
        table.add(k1[:m], g[:m] if conn.words else None)
        bar.update(len(block))
    key, gap, count = table.result()
    stats.pruned = table.pruned
    if table.pruned:
        log.info("data.phrases.max_vocab_size=%d: bigram counts pruned %d times",
                 cfg.max_vocab_size, table.pruned)
    return key, gap, count


def _run_after(tokens: np.ndarray, lo: int, kind: np.ndarray) -> tuple[int, ...]:
    """The connector ids following position lo (a long run; read from the stream)."""
    run = []
    pos = lo + 1
    while pos < len(tokens) and kind[tokens[pos]] > 0:
        run.append(int(tokens[pos]))
        pos += 1
    return tuple(run)


class _Table:
    """Distinct pair counts, kept as arrays sorted by (key, gap); blocks' counts are gathered
    and merged when they reach the table's size (amortised sorting) or twice `max_size`, then
    pruned as word2vec.c's ReduceVocab while over `max_size`. So at most about 2 * max_size
    rows (16 bytes each, 24 with connector words) plus one block's are held."""

    def __init__(self, max_size: int | None, with_gap: bool) -> None:
        self.max_size, self.with_gap = max_size, with_gap
        self.parts: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]] = []
        self.rows = 0
        self.table_rows = 0
        self.min_reduce = 1
        self.pruned = 0

    def add(self, key: np.ndarray, gap: np.ndarray | None) -> None:
        if not len(key):
            return
        self.parts.append(_distinct(key.copy(), None if gap is None else gap.copy(), None))
        self.rows += len(self.parts[-1][0])
        if (self.rows - self.table_rows >= max(self.table_rows, MERGE_MIN)
                or (self.max_size is not None and self.rows > 2 * self.max_size)):
            self._merge()

    def _merge(self) -> None:
        if len(self.parts) > 1:
            key = np.concatenate([p[0] for p in self.parts])
            gap = np.concatenate([p[1] for p in self.parts]) if self.with_gap else None
            count = np.concatenate([p[2] for p in self.parts])
            self.parts = [_distinct(key, gap, count)]
        self.rows = self.table_rows = len(self.parts[0][0]) if self.parts else 0
        while self.max_size is not None and self.table_rows > self.max_size:
            key, gap, count = self.parts[0]
            keep = count > self.min_reduce
            self.parts = [(key[keep], None if gap is None else gap[keep], count[keep])]
            self.rows = self.table_rows = int(keep.sum())
            self.min_reduce += 1
            self.pruned += 1

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._merge()
        if not self.parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        key, gap, count = self.parts[0]
        return key, (np.zeros(len(key), np.int64) if gap is None else gap), count


def _distinct(key: np.ndarray, gap: np.ndarray | None, count: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Rows grouped by (key, gap), sorted; counts summed (each row counts 1 when None)."""
    if gap is None:
        order = np.argsort(key) if count is not None else None  # any order groups equal keys
        key = key[order] if count is not None else np.sort(key)
        new = np.empty(len(key), bool)
        new[:1] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
    else:
        order = np.lexsort((gap, key))
        key, gap = key[order], gap[order]
        new = np.empty(len(key), bool)
        new[:1] = True
        new[1:] = (key[1:] != key[:-1]) | (gap[1:] != gap[:-1])
    starts = np.flatnonzero(new)
    if count is None:
        counts = np.diff(np.append(starts, len(key))).astype(np.int64)
    else:
        counts = np.add.reduceat(count[order], starts) if len(starts) else count[:0]
    return key[starts], None if gap is None else gap[starts], counts


def _delimiter_in_tokens(strings: pa.Array, ids: np.ndarray, delimiter: str) -> bool:
    if not len(ids):
        return False
    return bool(pc.any(pc.match_substring(strings.take(pa.array(ids)), delimiter)).as_py())


def _joined(strings: pa.Array, a: np.ndarray, b: np.ndarray, gap: np.ndarray,
            conn: _Connectors, delimiter: str) -> pa.Array:
    """The joined token of each pair: a + delimiter + connectors... + delimiter + b."""
    codes, inverse = np.unique(gap, return_inverse=True)
    id_of = {}
    if conn.words:
        found = pc.index_in(pa.array(conn.words, pa.large_string()), value_set=strings)
        id_of = {w: i for w, i in zip(conn.words, found.to_pylist(), strict=True)
                 if i is not None}
    mids = []
    for code in codes.tolist():
        between = [strings[i].as_py() for i in conn.gap_ids(int(code), id_of)] if code else []
        mids.append(delimiter.join(["", *between, ""]))
    mid = pa.array(mids, pa.large_string()).take(pa.array(inverse.reshape(-1)))
    return pc.binary_join_element_wise(strings.take(pa.array(a)), mid,
                                       strings.take(pa.array(b)), pa.scalar("", strings.type))


def _per_string(stream: Stream, unigram: np.ndarray, a: np.ndarray, b: np.ndarray,
                gap: np.ndarray, count: np.ndarray, conn: _Connectors, cfg: PhrasesConfig
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """Counts merged per string (gensim's one dict of unigrams and joined bigrams): unigram
    counts per id, bigram counts per pair, and the number of distinct strings."""
    words = stream.strings.take(pa.array(unigram))
    joined = _joined(stream.strings, a, b, gap, conn, cfg.delimiter)
    encoded = pc.dictionary_encode(pa.concat_arrays([words, joined.cast(pa.large_string())]))
    group = encoded.indices.to_numpy(zero_copy_only=False)
    totals = np.zeros(len(encoded.dictionary), np.int64)
    np.add.at(totals, group, np.concatenate([stream.counts[unigram], count]))
    ucounts = stream.counts.copy()
    ucounts[unigram] = totals[group[: len(unigram)]]
    return ucounts, totals[group[len(unigram) :]], len(encoded.dictionary)


def _score(ca: np.ndarray, cb: np.ndarray, cab: np.ndarray, types: int, words: int,
           cfg: PhrasesConfig) -> np.ndarray:
    """gensim's original_scorer / npmi_scorer, with the same float operations in the same order
    (so the same pairs fall above the threshold)."""
    ca, cb, cab = (x.astype(np.float64) for x in (ca, cb, cab))
    with np.errstate(divide="ignore", invalid="ignore"):
        if cfg.scoring == "default":
            # (bigram_count - min_count) / float(worda_count * wordb_count) * len_vocab; the
            # float product of two exact integers rounds as float() of the exact product does.
            score = (cab - cfg.min_count) / (ca * cb) * float(types)
            return np.where(ca * cb == 0, -np.inf, score)
        n = float(words)
        pa_, pb, pab = ca / n, cb / n, cab / n
        score = np.log(pab / (pa_ * pb)) / -np.log(pab)
        return np.where((cab >= cfg.min_count) & np.isfinite(score), score, -np.inf)


def _accept(stream: Stream, conn: _Connectors, cfg: PhrasesConfig, key: np.ndarray,
            gap: np.ndarray, score: np.ndarray) -> tuple[_Accepted, dict[tuple[str, ...], float]]:
    """The phrases as the kernel looks them up, each with the id of its joined token (an
    existing token with that string keeps its id, as one string is one word), and as token
    tuples for the Phrases model."""
    space = stream.space
    a, b = key // space, key % space
    joined = _joined(stream.strings, a, b, gap, conn, cfg.delimiter).cast(pa.large_string())
    found = pc.index_in(joined, value_set=stream.strings)
    found = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    # New tokens: one id per distinct new string, in the pairs' order.
    new = pc.dictionary_encode(joined.filter(pa.array(found < 0)))
    out = found.copy()
    out[found < 0] = space + new.indices.to_numpy(zero_copy_only=False)
    strings = pa.concat_arrays([stream.strings, new.dictionary.cast(pa.large_string())])
    if len(strings) >= 2**31:
        raise ValueError("more than 2**31 distinct tokens and phrases")
    tuples = _tuples(stream, conn, a, b, gap)
    table = dict(zip(tuples, score.tolist(), strict=True))
    long = gap >= LONG_GAP
    runs = {k: run for run, k in conn.long_runs.items()}
    long_runs = [runs[int(c) - LONG_GAP] for c in gap[long]]
    offsets = np.zeros(len(long_runs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(r) for r in long_runs])
    starts, ends = np.zeros(space, bool), np.zeros(space, bool)
    starts[a], ends[b] = True, True
    accepted = _Accepted(
        key=key[~long], gap=gap[~long], out=out[~long].astype(np.int32), strings=strings,
        starts=starts, ends=ends,
        long_key=key[long], long_offsets=offsets,
        long_tokens=np.array([t for r in long_runs for t in r], dtype=np.int32),
        long_out=out[long].astype(np.int32),
    )
    return accepted, table


def _tuples(stream: Stream, conn: _Connectors, a: np.ndarray, b: np.ndarray, gap: np.ndarray
            ) -> list[tuple[str, ...]]:
    """Each phrase as its tokens: (a, connectors..., b)."""
    sa = stream.strings.take(pa.array(a)).to_pylist()
    sb = stream.strings.take(pa.array(b)).to_pylist()
    if not conn.words:
        return list(zip(sa, sb, strict=True))
    id_of = {}
    found = pc.index_in(pa.array(conn.words, pa.large_string()), value_set=stream.strings)
    id_of = {w: i for w, i in zip(conn.words, found.to_pylist(), strict=True) if i is not None}
    mids: dict[int, tuple[str, ...]] = {}
    out = []
    for x, y, code in zip(sa, sb, gap.tolist(), strict=True):
        if code not in mids:
            mids[code] = tuple(stream.strings[i].as_py() for i in conn.gap_ids(code, id_of))
        out.append((x, *mids[code], y))
    return out


# --- apply ---------------------------------------------------------------------------------------


def _apply(stream: Stream, kind: np.ndarray, conn: _Connectors, acc: _Accepted, stem: Path,
           stats: PassStats, bar) -> Stream:
    """Write the phrased stream: a window of tokens at a time; a word whose pair with the next
    word is undecided at a window's end starts the next window (carried, with the connectors
    after it), so the greedy walk is exactly one walk over the whole stream."""
    tokens, ends = stream.tokens(), stream.ends()
    space = len(acc.strings)
    kind = np.concatenate([kind, np.zeros(space - stream.space, np.int32)])
    counts = np.zeros(space, np.int64)
    first = np.full(space, -1, np.int64)
    tokens_path, ends_path = stem.with_suffix(".i32"), stem.with_suffix(".ends.i64")
    joined = np.zeros(1, np.int64)
    written = documents = ep = pos = stop = 0
    with open(tokens_path, "wb") as tf, open(ends_path, "wb") as ef:
        while True:
            # Windows end at multiples of BLOCK and start where the last one stopped deciding.
            stop = min(stop + BLOCK, stream.length)
            final = stop == stream.length
            window = np.asarray(tokens[pos:stop])
            out = np.empty(len(window), np.int32)
            # Document ends this window can pass (rows may repeat one: empty rows).
            last = len(ends) if final else int(np.searchsorted(ends, stop, side="right"))
            out_ends = np.empty(max(last - ep, 0), np.int64)
            n_out, n_ends, ep, used = _apply_window(
                window, pos, ends, ep, kind, np.int64(stream.space), conn.base, conn.kmax,
                acc.key, acc.gap, acc.out, acc.starts, acc.ends, acc.long_key,
                acc.long_offsets, acc.long_tokens, acc.long_out, out, out_ends, written, counts,
                first, joined, final)
            tf.write(out[:n_out].tobytes())
            ef.write(out_ends[:n_ends].tobytes())
            written += n_out
            documents += n_ends
            bar.update(used)
            pos += used
            if final:
                break
    stats.joined = int(joined[0])
    return Stream(tokens_path, ends_path, written, documents, acc.strings, counts, first)


# --- kernels ---------------------------------------------------------------------------------


@njit(**_JIT)
def _pair_keys(tokens, pos0, ends, ep, kind, space, base, kmax, state, k1, gap, long_at,
               long_lo):  # pragma: no cover (compiled)
    """Pairs of consecutive non-connector words in a block: k1 = a * space + b, gap = the
    connectors' code (-1 for a run longer than kmax: long_at/long_lo give its row and the
    position of a). `state` carries the open pair across blocks; `ends` the document ends
    (a pair never crosses one); kind -1 (an id without a token) breaks pairs."""
    prev, code, run, mult, prev_pos = state[0], state[1], state[2], state[3], state[4]
    m = 0
    nl = 0
    ne = len(ends)
    for i in range(len(tokens)):
        pos = pos0 + i
        while ep < ne and ends[ep] <= pos:
            prev = -1
            ep += 1
        w = tokens[i]
        c = kind[w]
        if c == 0:
            if prev >= 0:
                k1[m] = prev * space + w
                if run <= kmax:
                    gap[m] = code
                else:
                    gap[m] = -1
                    long_at[nl] = m
                    long_lo[nl] = prev_pos
                    nl += 1
                m += 1
            prev = w
            code = 0
            run = 0
            mult = 1
            prev_pos = pos
        elif c > 0:
            if prev >= 0:
                run += 1
                if run <= kmax:
                    code += c * mult
                    mult *= base
        else:
            prev = -1
    state[0], state[1], state[2], state[3], state[4] = prev, code, run, mult, prev_pos
    return m, nl, ep


@njit(inline="always", **_JIT)
def _put(w, out, n_out, out_base, counts, first):  # pragma: no cover (compiled)
    out[n_out] = w
    counts[w] += 1
    if first[w] < 0:
        first[w] = out_base + n_out
    return n_out + 1


@njit(inline="always", **_JIT)
def _lookup(a, b, code, run, kmax, space, tokens, si, key, gap, out_id, long_key, long_offsets,
            long_tokens, long_out):  # pragma: no cover (compiled)
    """The joined id of the pair (a, tokens[si+1 : si+1+run], b), or -1 if not a phrase."""
    k = a * space + b
    if run <= kmax:
        j = np.searchsorted(key, k)
        while j < len(key) and key[j] == k:
            if gap[j] == code:
                return out_id[j]
            j += 1
        return -1
    for j in range(len(long_key)):
        lo = long_offsets[j]
        if long_key[j] != k or long_offsets[j + 1] - lo != run:
            continue
        same = True
        for t in range(run):
            if long_tokens[lo + t] != tokens[si + 1 + t]:
                same = False
                break
        if same:
            return long_out[j]
    return -1


@njit(**_JIT)
def _apply_window(tokens, pos0, ends, ep, kind, space, base, kmax, key, gap, out_id, starts,
                  last, long_key, long_offsets, long_tokens, long_out, out, out_ends, out_base,
                  counts, first, joined, final):  # pragma: no cover (compiled)
    """gensim's analyze_sentence over a window of the stream (documents from `ends`).

    Returns (tokens written, document ends written, next ends index, window tokens used):
    unless `final`, a pending word (its pair with a later word undecided) and the connectors
    after it are left unused, and the caller starts the next window at that word."""
    n_out = 0
    n_ends = 0
    start = -1
    si = 0
    code = 0
    run = 0
    mult = 1
    ne = len(ends)
    n = len(tokens)
    for i in range(n):
        pos = pos0 + i
        while ep < ne and ends[ep] <= pos:
            if start >= 0:
                for t in range(si, i):
                    n_out = _put(tokens[t], out, n_out, out_base, counts, first)
                start = -1
            out_ends[n_ends] = out_base + n_out
            n_ends += 1
            ep += 1
        w = tokens[i]
        c = kind[w]
        if c == 0:
            if start >= 0:
                j = -1
                if starts[start] and last[w]:
                    j = _lookup(start, w, code, run, kmax, space, tokens, si, key, gap, out_id,
                                long_key, long_offsets, long_tokens, long_out)
                if j >= 0:
                    n_out = _put(j, out, n_out, out_base, counts, first)
                    joined[0] += 1
                    start = -1
                    continue
                for t in range(si, i):
                    n_out = _put(tokens[t], out, n_out, out_base, counts, first)
            start = w
            si = i
            code = 0
            run = 0
            mult = 1
        elif c > 0:
            if start >= 0:
                run += 1
                if run <= kmax:
                    code += c * mult
                    mult *= base
            else:
                n_out = _put(w, out, n_out, out_base, counts, first)
        else:
            if start >= 0:
                for t in range(si, i):
                    n_out = _put(tokens[t], out, n_out, out_base, counts, first)
                start = -1
            n_out = _put(w, out, n_out, out_base, counts, first)
    if not final:
        return n_out, n_ends, ep, si if start >= 0 else n
    if start >= 0:
        for t in range(si, n):
            n_out = _put(tokens[t], out, n_out, out_base, counts, first)
    while ep < ne:
        out_ends[n_ends] = out_base + n_out
        n_ends += 1
        ep += 1
    return n_out, n_ends, ep, n
