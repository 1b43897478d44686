"""Placeholder until the tokenizer module lands (replaced at merge): fastText's n-gram rules."""

from __future__ import annotations

import numpy as np


def ngram_hash(s: str | bytes) -> int:
    """fastText's 32-bit FNV-1a over the UTF-8 bytes, each taken as a signed char."""
    h = 2166136261
    for b in s.encode("utf-8") if isinstance(s, str) else s:
        h = ((h ^ ((b - 256 if b > 127 else b) & 0xFFFFFFFF)) * 16777619) & 0xFFFFFFFF
    return h


def word_ngrams(word: str, minn: int, maxn: int) -> list[str]:
    """fastText's computeSubwords over the characters of '<word>'."""
    if maxn == 0:
        return []
    w = "<" + word + ">"
    out = []
    for i in range(len(w)):
        for n in range(1, maxn + 1):
            if i + n > len(w):
                break
            if n >= minn and not (n == 1 and (i == 0 or i + n == len(w))):
                out.append(w[i:i + n])
    return out


def subword_rows(words: list[str], minn: int, maxn: int, bucket: int):
    rows, offsets = [], [0]
    v = len(words)
    for i, w in enumerate(words):
        rows.append(i)
        rows.extend(v + ngram_hash(g) % bucket for g in word_ngrams(w, minn, maxn))
        offsets.append(len(rows))
    return np.asarray(offsets, np.int64), np.asarray(rows, np.int32)


def oov_rows(word: str, minn: int, maxn: int, bucket: int, vocab_size: int) -> list[int]:
    return [vocab_size + ngram_hash(g) % bucket for g in word_ngrams(word, minn, maxn)]
