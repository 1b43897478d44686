"""What travels with the vectors to turn text into rows: fastText's character n-gram rules.

    word_ngrams("where", 3, 6)          # ['<wh', '<whe', '<wher', '<where', 'whe', ...]
    offsets, rows = subword_rows(vocab.words, 3, 6, 2_000_000)   # each word's input rows
    oov_rows("kingliness", 3, 6, 2_000_000, len(vocab))          # an unseen word's rows

fastText's subword model (Bojanowski et al. 2017) represents a word by its own row and the
rows of the character n-grams of `<word>`, hashed into `bucket` rows after the vocabulary's.
These are fastText's rules exactly (Dictionary::computeSubwords and Dictionary::hash), so a
.bin written by w2v gives fastText and gensim the vectors w2v gives, and a fastText model read
by w2v keeps its meaning: n counts characters (a multi-byte UTF-8 character is one), a lone
boundary marker is not an n-gram, and the hash is 32-bit FNV-1a over the UTF-8 bytes, each
taken as a signed char (fastText's `int8_t` cast), which differs from the textbook FNV-1a for
bytes >= 0x80.

The rules are computed once per word type when a vocabulary or a query word needs them, never
per token: training reads the table `subword_rows` builds.
"""

from __future__ import annotations

import numpy as np

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


def subword_rows(words: list[str], minn: int, maxn: int, bucket: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each word's input rows as CSR: word i's rows are rows[offsets[i]:offsets[i+1]], its own
    row i first, then V + hash % bucket for each of its n-grams (repeats kept, as fastText
    keeps them; fastText's "</s>" has none). maxn 0 gives one row per word. offsets int64
    (V+1,); rows int32, or int64 when V + bucket does not fit int32."""
    size = len(words)
    per_word = [[i, *(size + h for h in _hashes(w, minn, maxn, bucket) if w != EOS)]
                for i, w in enumerate(words)]
    offsets = np.zeros(size + 1, np.int64)
    np.cumsum([len(r) for r in per_word], out=offsets[1:])
    dtype = np.int32 if size + bucket < 2**31 else np.int64
    rows = np.fromiter((r for word in per_word for r in word), dtype, count=int(offsets[-1]))
    return offsets, rows


def oov_rows(word: str, minn: int, maxn: int, bucket: int, vocab_size: int) -> list[int]:
    """An unseen word's rows: its n-grams' only (fastText's and gensim's rule); [] when it
    has none (then it has no vector)."""
    return [vocab_size + h for h in _hashes(word, minn, maxn, bucket)]
