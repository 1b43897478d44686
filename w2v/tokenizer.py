"""What travels with the vectors to turn text into rows: the tokenizer, the corpus's learnt
phrases and fastText's character n-gram rules.

    Tokenizer(lowercase=True)("New York is big")   # ['new', 'york', 'is', 'big']
    word_ngrams("where", 3, 6)          # ['<wh', '<whe', '<wher', '<where', 'whe', ...]
    offsets, rows = subword_rows(vocab.words, 3, 6, 2_000_000)   # each word's input rows
    oov_rows("kingliness", 3, 6, 2_000_000, len(vocab))          # an unseen word's rows

Everything here is stored with the vectors (vocab.json, checkpoints, vectors.pt) and applied
to short texts at query time, so it imports no numba and no pyarrow: `w2v.load_embedding` and
`w2v.tokenize` users load this module without them. The corpus-scale stages that produce it
live elsewhere: tokens.py (vectorised tokenizing that agrees with `Tokenizer` exactly) and
phrases.py (learning the phrases).

`Tokenizer`: lowercase (optional), then `text.split()` or `re.findall(pattern, text)`, then the
learnt phrases joined. `Phrases`: the phrases of each pass, as token tuples, applied as gensim's
analyze_sentence applies them.

fastText's subword model (Bojanowski et al. 2017) represents a word by its own row and the
rows of the character n-grams of `<word>`, hashed into `bucket` rows after the vocabulary's.
These are fastText's rules exactly (Dictionary::computeSubwords and Dictionary::hash), so a
.bin written by w2v gives fastText and gensim the vectors w2v gives, and a fastText model read
by w2v keeps its meaning: n counts characters (a multi-byte UTF-8 character is one), a lone
boundary marker is not an n-gram, and the hash is 32-bit FNV-1a over the UTF-8 bytes, each
taken as a signed char (fastText's `int8_t` cast), which differs from the textbook FNV-1a for
bytes >= 0x80.

The n-gram rules are computed once per word type when a vocabulary or a query word needs
them, never per token: training reads the table `subword_rows` builds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from w2v.errors import W2VError

# ---------------------------------------------------------------------------------------------
# Text -> tokens: the tokenizer and the learnt phrases, applied to short texts in plain Python.


class Phrases:
    """The phrases of each pass, as token tuples with their scores; `apply` joins them.

    `apply(["new", "york", "city"])` runs every pass in order, each left to right as gensim's
    analyze_sentence does: `["new_york_city"]` when pass 1 found (new, york) and pass 2
    (new_york, city).
    """

    def __init__(self, passes: Sequence[dict[tuple[str, ...], float]], delimiter: str = "_",
                 connector_words: Iterable[str] = (), settings: dict | None = None) -> None:
        self.passes = [dict(p) for p in passes]
        self.delimiter = delimiter
        self.connector_words = frozenset(connector_words)
        self.settings = dict(settings or {})

    def __len__(self) -> int:
        return sum(len(p) for p in self.passes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Phrases) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable contents

    def __repr__(self) -> str:
        sizes = ", ".join(str(len(p)) for p in self.passes)
        return f"Phrases({len(self.passes)} passes: {sizes} phrases, delimiter={self.delimiter!r})"

    def apply(self, tokens: Sequence[str]) -> list[str]:
        """One document's tokens with every pass's phrases joined (greedy, left to right)."""
        out = list(tokens)
        for table in self.passes:
            out = self._apply_pass(out, table)
        return out

    def _apply_pass(self, tokens: list[str], table: dict[tuple[str, ...], float]) -> list[str]:
        # gensim's analyze_sentence with a lookup of the learnt pairs instead of live counts.
        out: list[str] = []
        start: str | None = None
        between: list[str] = []
        for word in tokens:
            if word in self.connector_words:
                (between if start is not None else out).append(word)
                continue
            if start is not None and (start, *between, word) in table:
                out.append(self.delimiter.join([start, *between, word]))
                start, between = None, []
                continue
            if start is not None:
                out.append(start)
                out.extend(between)
            start, between = word, []
        if start is not None:
            out.append(start)
            out.extend(between)
        return out

    def phrases(self) -> dict[str, float]:
        """Every phrase token (joined with the delimiter) and its score, all passes."""
        return {self.delimiter.join(k): s for p in self.passes for k, s in p.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers: JSON (vocab.json) and torch.load(weights_only=True) read it."""
        return {
            "delimiter": self.delimiter,
            "connector_words": sorted(self.connector_words),
            "settings": dict(self.settings),
            "passes": [{"phrases": [list(k) for k in p], "scores": [float(s) for s in p.values()]}
                       for p in self.passes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Phrases:
        passes = [dict(zip((tuple(k) for k in p["phrases"]), (float(s) for s in p["scores"]),
                           strict=True)) for p in d["passes"]]
        return cls(passes, d.get("delimiter", "_"), d.get("connector_words", ()),
                   d.get("settings"))


@dataclass(frozen=True)
class Tokenizer:
    """Lowercase (optional), then `text.split()`, or `re.findall(pattern, text)` with a pattern,
    then the corpus's phrases joined (`new york` -> `new_york`) when it was built with
    data.phrases (learnt by w2v/phrases.py).

    tokens.py tokenizes large corpora with a vectorised path that must agree with this call
    exactly; this is the reference (tests check the two agree).
    """

    lowercase: bool = True
    pattern: str | None = None
    phrases: Phrases | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise W2VError(
                    f"data.token_pattern={self.pattern!r} is not a valid regular expression: {err}"
                ) from err

    def __call__(self, text: str) -> list[str]:
        """One document's tokens, as training saw them."""
        if self.lowercase:
            text = text.lower()
        tokens = text.split() if self.pattern is None else re.findall(self.pattern, text)
        return self.phrases.apply(tokens) if self.phrases is not None else tokens

    def to_dict(self) -> dict:
        d = {"lowercase": self.lowercase, "pattern": self.pattern}
        if self.phrases is not None:
            d["phrases"] = self.phrases.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        phrases = Phrases.from_dict(d["phrases"]) if d.get("phrases") else None
        return cls(lowercase=bool(d["lowercase"]), pattern=d.get("pattern"), phrases=phrases)


# ---------------------------------------------------------------------------------------------
# fastText's character n-grams.


FNV_OFFSET = 2166136261
FNV_PRIME = 16777619
BOW, EOW = "<", ">"  # fastText's word boundary markers
EOS = "</s>"  # fastText's end-of-line token: in its dictionaries, and given no n-grams


def ngram_hash(text: str | bytes) -> int:
    """fastText's Dictionary::hash: 32-bit FNV-1a over the UTF-8 bytes as signed chars."""
    h = FNV_OFFSET
    for byte in text.encode("utf-8") if isinstance(text, str) else text:
        signed = byte - 256 if byte > 127 else byte  # int8_t, sign-extended to uint32
        h = ((h ^ (signed & 0xFFFFFFFF)) * FNV_PRIME) & 0xFFFFFFFF
    return h


def word_ngrams(word: str, minn: int, maxn: int) -> list[str]:
    """The character n-grams of `<word>` for n in [minn, maxn], in fastText's order (by start,
    then by length); none when maxn is 0."""
    if maxn <= 0:
        return []
    marked = BOW + word + EOW
    size = len(marked)
    out = []
    for i in range(size):
        for n in range(max(minn, 1), min(maxn, size - i) + 1):
            if n == 1 and (i == 0 or i + 1 == size):
                continue  # a lone boundary marker
            out.append(marked[i:i + n])
    return out


def _hashes(word: str, minn: int, maxn: int, bucket: int) -> list[int]:
    return [ngram_hash(g) % bucket for g in word_ngrams(word, minn, maxn)]


# Words hashed at once by subword_rows: its arrays hold ~40 n-grams a word, 8 bytes each
# several times over, so a 2M-word vocabulary (fastText's published models) stays ~0.3 GB.
_WORDS_AT_ONCE = 1 << 16


def subword_rows(words: list[str], minn: int, maxn: int, bucket: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each word's input rows as CSR: word i's rows are rows[offsets[i]:offsets[i+1]], its own
    row i first, then V + hash % bucket for each of its n-grams (repeats kept, as fastText
    keeps them; fastText's "</s>" has none). maxn 0 gives one row per word. offsets int64
    (V+1,); rows int32, or int64 when V + bucket does not fit int32. The same rows as
    oov_rows gives word by word, computed for many words at once: text8-prefix's 81k words
    (min_count 1) take 0.4-0.6 s, where a loop over them took 2.9 s (fastText's published
    models hold 2M words, and every load of one computes this)."""
    size = len(words)
    dtype = np.int32 if size + bucket < 2**31 else np.int64
    parts = [_rows_of(words[i:i + _WORDS_AT_ONCE], i, size, minn, maxn, bucket)
             for i in range(0, size, _WORDS_AT_ONCE)]
    offsets = np.zeros(size + 1, np.int64)
    np.cumsum(np.concatenate([counts for counts, _ in parts]) if parts else [], out=offsets[1:])
    rows = np.concatenate([r for _, r in parts]).astype(dtype) if parts else np.zeros(0, dtype)
    return offsets, rows


def _rows_of(words: list[str], first: int, size: int, minn: int, maxn: int, bucket: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """subword_rows for words[first:first + len(words)] of a vocabulary of `size`: each
    word's row count and their rows, in order."""
    grams_start, grams_len, owner = _ngram_spans(words, minn, maxn)
    marked = "".join(BOW + w + EOW for w in words).encode("utf-8")
    data = np.frombuffer(marked, np.uint8)
    # Each character's first byte (UTF-8 continuation bytes are 10xxxxxx), and the end.
    char_byte = np.append(np.flatnonzero((data & 0xC0) != 0x80), len(data))
    start, end = char_byte[grams_start], char_byte[grams_start + grams_len]
    hashes = _fnv1a(data, start, end) % bucket
    per_word = np.bincount(owner, minlength=len(words))
    counts = per_word + 1  # a word's own row first
    at = np.zeros(len(words) + 1, np.int64)
    np.cumsum(counts, out=at[1:])
    rows = np.empty(int(at[-1]), np.int64)
    rows[at[:-1]] = np.arange(first, first + len(words))
    # The k-th n-gram overall, of word j, lands after the j + 1 own rows before it.
    rows[np.arange(len(owner)) + owner + 1] = size + hashes.astype(np.int64)
    return counts, rows


def _ngram_spans(words: list[str], minn: int, maxn: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every n-gram of the marked words ("<" + word + ">", concatenated) as its first
    character's index and its length in characters, and the word it belongs to; by word,
    then start, then length (word_ngrams' order). fastText's "</s>" has none."""
    chars = np.array([len(w) + 2 for w in words], np.int64)  # with the two markers
    word_start = np.zeros(len(words), np.int64)
    np.cumsum(chars[:-1], out=word_start[1:])
    if maxn < max(minn, 1) or not len(words):
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    owner_of_char = np.repeat(np.arange(len(words)), chars)
    at = np.arange(int(chars.sum())) - word_start[owner_of_char]  # index in its marked word
    length = chars[owner_of_char]
    has_grams = np.array([w != EOS for w in words])[owner_of_char]
    lengths = np.arange(max(minn, 1), maxn + 1)
    # One row per character, one column per length: row-major order is word_ngrams' order.
    ok = has_grams[:, None] & (at[:, None] + lengths[None, :] <= length[:, None])
    if lengths[0] == 1:
        ok[:, 0] &= (at != 0) & (at != length - 1)  # a lone boundary marker
    cell = np.flatnonzero(ok)
    start, n = cell // len(lengths), lengths[cell % len(lengths)]
    return start, n, owner_of_char[start]


def _fnv1a(data: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """ngram_hash of every byte string data[start:end], at once (uint64 values < 2**32)."""
    h = np.full(len(start), FNV_OFFSET, np.uint64)
    size = end - start
    for k in range(int(size.max()) if len(size) else 0):
        live = np.flatnonzero(size > k)
        byte = data[start[live] + k].astype(np.uint64)
        signed = np.where(byte > 127, byte | np.uint64(0xFFFFFF00), byte)  # int8, as uint32
        h[live] = ((h[live] ^ signed) * np.uint64(FNV_PRIME)) & np.uint64(0xFFFFFFFF)
    return h


def oov_rows(word: str, minn: int, maxn: int, bucket: int, vocab_size: int) -> list[int]:
    """An unseen word's rows: its n-grams' only (fastText's and gensim's rule); [] when it
    has none (then it has no vector)."""
    return [vocab_size + h for h in _hashes(word, minn, maxn, bucket)]
