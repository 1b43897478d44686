"""Counts -> Vocab: the word list, its counts and the tables training derives from them.

Words are ordered by count, descending; ties keep the order of first occurrence in the corpus,
so the same corpus always gives the same ids. From the counts come word2vec's subsampling
keep-probabilities, the negative-sampling noise distribution and the Huffman tree of
hierarchical softmax. The vocabulary is saved as JSON (never pickle), with its tokenizer:

    python -c "from w2v.vocab import Vocab; v = Vocab.load('vocab.json'); print(v.words[:10])"
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from w2v.atomic import atomic_write_text
from w2v.errors import W2VError
from w2v.tokenizer import Tokenizer

VOCAB_FORMAT = "w2v.vocab/1"


@dataclass(frozen=True)
class Huffman:
    """Hierarchical-softmax paths, root first, as word2vec.c's CreateBinaryTree builds them.

    codes[w, :lengths[w]] are the branches (0/1) taken from the root down to word w;
    points[w, :lengths[w]] the inner nodes visited, ids in [0, V-2] (the root is V-2), i.e. rows
    of the output matrix in hs mode. Entries past lengths[w] are 0 (padding).
    """

    codes: np.ndarray  # int8 (V, L)
    points: np.ndarray  # int32 (V, L)
    lengths: np.ndarray  # int32 (V,)


@dataclass
class Vocab:
    """Words in id order (count descending, ties by first occurrence) and their counts."""

    words: list[str]
    counts: np.ndarray  # int64 (V,)
    tokenizer: Tokenizer = field(default_factory=Tokenizer)
    min_count: int = 1
    max_vocab: int | None = None
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if len(self.words) != len(self.counts):
            raise ValueError(f"{len(self.words)} words but {len(self.counts)} counts")
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("duplicate words in a vocabulary")

    @classmethod
    def from_counts(
        cls,
        words: Sequence[str],
        counts: np.ndarray | Sequence[int],
        min_count: int = 5,
        max_vocab: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> Vocab:
        """Keep words with count >= min_count, the max_vocab most frequent, in id order.

        `words`/`counts` come in first-occurrence order, which is what breaks count ties.
        """
        counts = np.asarray(counts, dtype=np.int64)
        kept = select_ids(counts, min_count, max_vocab)
        return cls(
            words=[words[i] for i in kept],
            counts=counts[kept],
            tokenizer=tokenizer or Tokenizer(),
            min_count=min_count,
            max_vocab=max_vocab,
        )

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, word: str) -> int:
        return self.index[word]

    def __contains__(self, word: object) -> bool:
        return word in self.index

    @property
    def total(self) -> int:
        """Retained tokens: occurrences of in-vocabulary words."""
        return int(self.counts.sum())

    # --- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": VOCAB_FORMAT,
            "words": self.words,
            "counts": self.counts.tolist(),
            "tokenizer": self.tokenizer.to_dict(),
            "min_count": self.min_count,
            "max_vocab": self.max_vocab,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        return cls(
            words=list(d["words"]),
            counts=np.asarray(d["counts"], dtype=np.int64),
            tokenizer=Tokenizer.from_dict(d["tokenizer"]),
            min_count=int(d.get("min_count", 1)),
            max_vocab=d.get("max_vocab"),
        )

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, ValueError) as err:
            raise W2VError(f"cannot read vocabulary {path}: {err}") from err
        if d.get("format") != VOCAB_FORMAT:
            raise W2VError(f"{path} is not a w2v vocabulary (format {d.get('format')!r})")
        return cls.from_dict(d)

    # --- derived tables ----------------------------------------------------------------------

    def keep_probs(self, sample: float) -> np.ndarray:
        """Probability of keeping each occurrence of a word when subsampling: float32 (V,).

        word2vec.c (TrainModelThread): ran = (sqrt(cn / (sample * train_words)) + 1)
        * (sample * train_words) / cn, and gensim's Word2Vec.prepare_vocab does the same with
        threshold_count = sample * retain_total; capped at 1. sample=0 turns it off.
        """
        if sample <= 0 or len(self) == 0:
            return np.ones(len(self), dtype=np.float32)
        threshold = sample * self.total
        c = self.counts.astype(np.float64)
        keep = (np.sqrt(c / threshold) + 1.0) * (threshold / c)
        return np.minimum(keep, 1.0).astype(np.float32)

    def noise_probs(self, ns_exponent: float) -> np.ndarray:
        """Negative-sampling distribution: counts**ns_exponent, normalised; float64 (V,)."""
        p = self.counts.astype(np.float64) ** ns_exponent
        return p / p.sum()

    def huffman(self) -> Huffman:
        return build_huffman(self.counts)


def continue_vocab(
    base: Vocab,
    words: Sequence[str],
    counts: np.ndarray,
    update: bool,
    min_count: int = 5,
    max_vocab: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> Vocab:
    """The vocabulary of a run continuing from `base` (trainer.init_from) on a corpus whose
    distinct words and counts are `words`/`counts` (first-occurrence order).

    The old words keep their ids 0..len(base)-1 either way.
    - update=False: the old vocabulary as it is. Its counts stay the old ones, so the noise
      distribution and the Huffman tree are the old run's; where the file has no counts (a
      word2vec text/binary file: all zero), the corpus's counts are used.
    - update=True (gensim's build_vocab(update=True)): this corpus's words chosen as in any
      run (min_count, then max_vocab) that the old vocabulary lacks are appended, in
      vocabulary order; the old words' counts become old + this corpus's (all of its
      occurrences: the word is in the vocabulary already, whatever min_count says).
    An old word left with no count at all (no count in the file, absent from this corpus)
    counts 1, so every table derived from counts stays defined.
    """
    counts = np.asarray(counts, dtype=np.int64)
    where = {w: i for i, w in enumerate(words)}
    seen = np.array([where.get(w, -1) for w in base.words], dtype=np.int64)
    here = np.where(seen >= 0, counts[np.maximum(seen, 0)], 0)
    counted = bool(base.counts.any())
    if not update:
        old = base.counts if counted else here
        return Vocab(list(base.words), np.maximum(old, 1), tokenizer or base.tokenizer,
                     min_count, max_vocab)
    old = (base.counts if counted else 0) + here
    fresh = [i for i in select_ids(counts, min_count, max_vocab).tolist()
             if words[i] not in base.index]
    return Vocab(list(base.words) + [words[i] for i in fresh],
                 np.concatenate([np.maximum(old, 1), counts[fresh]]),
                 tokenizer or base.tokenizer, min_count, max_vocab)


def select_ids(counts: np.ndarray, min_count: int, max_vocab: int | None) -> np.ndarray:
    """Indices (into first-occurrence order) of the kept words, in vocabulary id order."""
    candidates = np.flatnonzero(counts >= min_count)
    # A stable sort on -count keeps first-occurrence order among equal counts.
    order = candidates[np.argsort(-counts[candidates], kind="stable")]
    return order if max_vocab is None else order[:max_vocab]


def build_huffman(counts: np.ndarray) -> Huffman:
    """word2vec.c's CreateBinaryTree over counts sorted descending (ids are vocab ids).

    The tree is built with word2vec's two-queue merge (leaves from the rarest end, inner nodes in
    creation order), so ties break exactly as in word2vec.c; paths are then read for all words
    at once, one tree level per step. Counts not in descending order (a vocabulary extended
    with data.vocab_update appends new words after the old ones) are sorted first (stable, so
    ties keep id order) and the paths handed back to the words' own ids.
    """
    counts = np.asarray(counts)
    if len(counts) > 1 and bool((np.diff(counts) > 0).any()):
        order = np.argsort(-counts, kind="stable")
        tree = build_huffman(counts[order])
        codes, points, lengths = (np.empty_like(x) for x in (tree.codes, tree.points,
                                                             tree.lengths))
        codes[order], points[order], lengths[order] = tree.codes, tree.points, tree.lengths
        return Huffman(codes=codes, points=points, lengths=lengths)
    v = len(counts)
    if v < 2:
        return Huffman(
            codes=np.zeros((v, 0), np.int8),
            points=np.zeros((v, 0), np.int32),
            lengths=np.zeros(v, np.int32),
        )
    count = counts.tolist() + [10**15] * (v - 1)  # inner node v+a gets the a-th merge
    parent = [0] * (2 * v - 1)
    binary = [0] * (2 * v - 1)
    pos1, pos2 = v - 1, v
    # The merge is sequential by nature (each pick depends on the last); V-1 steps of int work.
    for a in range(v - 1):
        picks = []
        for _ in range(2):
            if pos1 >= 0 and count[pos1] < count[pos2]:
                picks.append(pos1)
                pos1 -= 1
            else:
                picks.append(pos2)
                pos2 += 1
        count[v + a] = count[picks[0]] + count[picks[1]]
        parent[picks[0]] = parent[picks[1]] = v + a
        binary[picks[1]] = 1
    parent_a = np.asarray(parent, dtype=np.int64)
    binary_a = np.asarray(binary, dtype=np.int8)
    root = 2 * v - 2

    # Walk every word up to the root together; step s visits each word's s-th ancestor.
    node = np.arange(v)
    lengths = np.zeros(v, dtype=np.int32)
    steps_code, steps_point = [], []
    while True:
        active = node != root
        if not active.any():
            break
        lengths += active
        steps_code.append(np.where(active, binary_a[node], 0))
        steps_point.append(np.where(active, parent_a[node] - v, 0))
        node = np.where(active, parent_a[node], root)
    depth = len(steps_code)
    codes = np.zeros((v, depth), dtype=np.int8)
    points = np.zeros((v, depth), dtype=np.int32)
    rows = np.arange(v)
    # Bottom-up step s lands at root-first position lengths-1-s (word2vec.c reverses the same way).
    for s in range(depth):
        act = s < lengths
        col = lengths[act] - 1 - s
        codes[rows[act], col] = steps_code[s][act]
        points[rows[act], col] = steps_point[s][act]
    return Huffman(codes=codes, points=points, lengths=lengths)
