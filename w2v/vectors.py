"""Cosine similarity, nearest neighbours and analogies over a table of word vectors.

KeyedVectors is the read-only, gensim-like view of trained vectors. Every query is one matrix
product against the unit-normalised table (computed once, cached), on the vectors' device:

    from w2v.export import load_vectors; load_vectors("vectors.pt").most_similar("king")
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from w2v.errors import W2VError
from w2v.tokenizer import Tokenizer, oov_rows

# Levy & Goldberg's epsilon in 3CosMul's denominator (gensim uses the same value).
COSMUL_EPS = 1e-6
# Score-matrix entries computed at once by the batched queries: one reused (queries,
# candidates) float32 block of at most 2**22 entries = 16 MB (e.g. 140 questions x 30k words);
# larger blocks are a little faster, but a run's final evaluation pays the block on top of the
# run's own memory (docs/measurements.md).
SCORE_BLOCK = 2**22


def _tokenizer_dict(tokenizer: Any) -> dict | None:
    """Accept a Tokenizer (anything with to_dict()), its dict, or None."""
    if tokenizer is None or isinstance(tokenizer, dict):
        return tokenizer
    return tokenizer.to_dict()


@dataclass(frozen=True)
class Ngrams:
    """fastText's n-gram rows of a subword model: an unseen word's vector is the mean of the
    rows of its character n-grams (what fastText and gensim return)."""

    minn: int
    maxn: int
    bucket: int
    rows: torch.Tensor  # (bucket, D): the input table's rows after the vocabulary's
    word_rows: torch.Tensor | None = None  # (V, D): the vocabulary's own rows, when known

    def vector(self, word: str) -> torch.Tensor | None:
        """(D,) the mean of `word`'s n-gram rows; None when it has no n-gram."""
        ids = oov_rows(word, self.minn, self.maxn, self.bucket, 0)
        if not ids:
            return None
        return self.rows[torch.as_tensor(ids, device=self.rows.device)].mean(0)

    def settings(self) -> dict:
        return {"minn": self.minn, "maxn": self.maxn, "bucket": self.bucket}


class KeyedVectors:
    """Words, their vectors (V, D) and optional counts/tokenizer, with similarity queries.

    With `ngrams` (a subword model's vectors) every word has a vector: an unseen word gets the
    mean of its n-gram rows, appended after the vocabulary's rows (ids >= V) for the queries
    that ask for it; neighbours and analogy answers are still vocabulary words.

    Query words are lowercased where the vocabulary was (its recorded tokenizer lowercases, or
    none of its words has an uppercase letter: word2vec files record no tokenizer), so
    `kv["King"]` finds "king"; an exact match is tried too, for vocabularies with mixed case.
    Vectors trained with data.phrases also take a phrase as several words: `kv["New York"]`
    is the row of `new_york` (the recorded phrases, applied as training did; `tokenize`).
    The unit table is cached at the first query: make a new KeyedVectors after the vectors change.
    """

    def __init__(
        self,
        words: Sequence[str],
        vectors: torch.Tensor,
        counts: np.ndarray | None = None,
        tokenizer: Any = None,
        ngrams: Ngrams | None = None,
    ) -> None:
        vectors = torch.as_tensor(vectors)
        if vectors.dim() != 2 or vectors.shape[0] != len(words):
            raise W2VError(
                f"vectors have shape {tuple(vectors.shape)} but there are {len(words)} words; "
                "expected a (words, dim) table"
            )
        self.words = list(words)
        self.vectors = vectors if vectors.is_floating_point() else vectors.float()
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self.tokenizer = _tokenizer_dict(tokenizer)
        # First occurrence wins, as in gensim's loader (duplicates are rare and ignored).
        self.index: dict[str, int] = {}
        for i, w in enumerate(self.words):
            self.index.setdefault(w, i)
        self._unit: torch.Tensor | None = None
        self._tokenize: Tokenizer | None = None
        self.ngrams = ngrams
        self._unseen: dict[str, int] = {}  # unseen word -> its row among _extra (ids >= V)
        self._extra: list[torch.Tensor] = []  # (D,) vectors of unseen words
        self._extra_unit: list[torch.Tensor] = []  # and their unit vectors
        self._folds_case: bool | None = None

    # ---- lookups ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def device(self) -> torch.device:
        return self.vectors.device

    def to(self, device: str | torch.device) -> KeyedVectors:
        """Move the table (and the cached unit table) to `device`; queries then run there."""
        self.vectors = self.vectors.to(device)
        if self._unit is not None:
            self._unit = self._unit.to(device)
        return self

    def tokenize(self, text: str) -> list[str]:
        """`text` as training tokenized it: the recorded tokenizer (lowercasing, token pattern)
        and phrases (`New York` -> `new_york`); a whitespace split when none is recorded
        (word2vec files from other tools)."""
        if self._tokenize is None:
            d = self.tokenizer or {"lowercase": False, "pattern": None}
            self._tokenize = Tokenizer.from_dict(d)
        return self._tokenize(text)

    @property
    def has_phrases(self) -> bool:
        return bool(self.tokenizer and self.tokenizer.get("phrases"))

    @property
    def folds_case(self) -> bool:
        """Whether a query word is lowercased: the vocabulary was built lowercased, as its
        recorded tokenizer says, or as its words show (word2vec files record no tokenizer,
        and a vocabulary without one uppercase letter cannot hold `King`)."""
        if self._folds_case is None:
            lowercased = bool(self.tokenizer and self.tokenizer.get("lowercase"))
            self._folds_case = lowercased or all(w == w.lower() for w in self.words)
        return self._folds_case

    def _lookup(self, word: str) -> int | None:
        if self.folds_case:
            i = self.index.get(word.lower())
            if i is not None:
                return i
        i = self.index.get(word)
        if i is None and self.has_phrases and len(word.split()) > 1:
            tokens = self.tokenize(word)  # "new york" -> ["new_york"]
            if len(tokens) == 1:
                i = self.index.get(tokens[0])
        if i is None and self.ngrams is not None:
            i = self._unseen_id(word)
        return i

    def _unseen_id(self, word: str) -> int | None:
        """An id >= V for an unseen word of a subword model (its n-grams' mean), or None."""
        key = word.lower() if self.folds_case else word
        if key not in self._unseen:
            vector = self.ngrams.vector(key)
            if vector is None:
                return None
            vector = vector.float().to(self.vectors.device)
            self._extra.append(vector)
            self._extra_unit.append(vector / vector.norm().clamp_min(
                torch.finfo(vector.dtype).tiny))
            self._unseen[key] = len(self) + len(self._extra) - 1
        return self._unseen[key]

    def find(self, word: str) -> int | None:
        """Row of `word` (ids >= V: an unseen word's n-gram vector), or None."""
        return self._lookup(word)

    def is_seen(self, word: str) -> bool:
        """Whether `word` is a vocabulary word (not one composed from n-grams)."""
        i = self._lookup(word)
        return i is not None and i < len(self)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and self._lookup(word) is not None

    def id(self, word: str) -> int:
        """Row of `word`; an unknown word raises W2VError with close vocabulary words."""
        i = self._lookup(word)
        if i is None:
            raise W2VError(self._unknown_message(word))
        return i

    def _unknown_message(self, word: str) -> str:
        msg = f"{word!r} is not in the vocabulary ({len(self)} words)"
        # difflib scans the vocabulary in Python: cheap for the usual 10k-100k words only.
        if len(self) <= 200_000:
            # The same word in another case first (`King` for `king` in a mixed-case
            # vocabulary), then words spelled alike.
            folded = word.lower()
            close = [w for w in self.words if w.lower() == folded]
            probe = folded if self.folds_case else word
            close += [w for w in difflib.get_close_matches(probe, self.words, n=3, cutoff=0.75)
                      if w not in close]
            close = close[:3]
            if close:
                return msg + "; did you mean " + ", ".join(repr(w) for w in close) + "?"
        return msg + "; check the spelling or train with a lower data.min_count"

    def __getitem__(self, word: str) -> torch.Tensor:
        i = self.id(word)
        return self.vectors[i] if i < len(self) else self._extra[i - len(self)]

    # ---- the unit table --------------------------------------------------------------------

    @property
    def unit(self) -> torch.Tensor:
        """(V, D) rows scaled to length 1 (zero rows stay zero), cached after the first use."""
        if self._unit is None:
            v = self.vectors.float()
            norms = v.norm(dim=1, keepdim=True)
            self._unit = v / norms.clamp_min(torch.finfo(v.dtype).tiny)
        return self._unit

    def units(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        """(N, D) unit vectors of ids, unseen words' (ids >= V) included."""
        u = self.unit
        if self._extra_unit:
            u = torch.cat([u, torch.stack(self._extra_unit)])
        return u[torch.as_tensor(ids, dtype=torch.long, device=u.device)]

    def similarity(self, w1: str, w2: str) -> float:
        """Cosine similarity of two words."""
        a, b = self.units([self.id(w1), self.id(w2)])
        return float(a @ b)

    def similarity_batch(self, ids1: torch.Tensor, ids2: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of rows ids1[i] and ids2[i]: (N,) -> (N,)."""
        return (self.units(ids1) * self.units(ids2)).sum(dim=1)

    # ---- neighbours and analogies ----------------------------------------------------------

    def _ids(self, words: Iterable[str] | str | None) -> list[int]:
        if words is None:
            return []
        if isinstance(words, str):
            words = [words]
        return [self.id(w) for w in words]

    def _top(
        self, scores: torch.Tensor, exclude: list[int], topn: int
    ) -> list[tuple[str, float]]:
        scores = scores.clone()
        scores[[i for i in exclude if i < scores.shape[0]]] = -torch.inf
        k = min(topn, scores.shape[0] - len(set(exclude)))
        if k <= 0:
            return []
        vals, idx = torch.topk(scores, k)
        return [(self.words[i], float(v)) for i, v in zip(idx.tolist(), vals.tolist())]

    def most_similar(
        self,
        positive: Iterable[str] | str | None = None,
        negative: Iterable[str] | str | None = None,
        topn: int = 10,
        restrict_vocab: int | None = None,
    ) -> list[tuple[str, float]]:
        """3CosAdd, as gensim: cosine to the mean of the unit vectors (negatives weighted -1).

        The query words themselves are never returned. `restrict_vocab` searches only the
        first N words (the most frequent, in vocabulary order).
        """
        pos, neg = self._ids(positive), self._ids(negative)
        if not pos and not neg:
            raise W2VError("most_similar needs at least one word")
        u = self.unit
        query = self.units(pos).sum(0) - self.units(neg).sum(0)  # (D,); its length does not
        query = query / query.norm().clamp_min(torch.finfo(u.dtype).tiny)  # change the ranking
        scores = u[:restrict_vocab] @ query  # (V,)
        return self._top(scores, pos + neg, topn)

    def most_similar_cosmul(
        self,
        positive: Iterable[str] | str | None = None,
        negative: Iterable[str] | str | None = None,
        topn: int = 10,
        restrict_vocab: int | None = None,
    ) -> list[tuple[str, float]]:
        """3CosMul (Levy & Goldberg 2014, eq. 4), as gensim's most_similar_cosmul.

        Cosines are shifted to [0, 1] ((1 + cos) / 2) so the product and ratio are well defined;
        score = prod(positive) / (prod(negative) + 1e-6).
        """
        pos, neg = self._ids(positive), self._ids(negative)
        if not pos:
            raise W2VError("most_similar_cosmul needs at least one positive word")
        u = self.unit[:restrict_vocab]
        sims = (1 + u @ self.units(pos + neg).T) / 2  # (V, P+N)
        scores = sims[:, : len(pos)].prod(1) / (sims[:, len(pos) :].prod(1) + COSMUL_EPS)
        return self._top(scores, pos + neg, topn)

    def analogy_batch(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        c: torch.Tensor,
        restrict_vocab: int | None = None,
        groups: torch.Tensor | None = None,
        method: str = "add",
    ) -> torch.Tensor:
        """Answer many a:b :: c:? questions at once: (Q,) row ids -> (Q,) predicted row ids.

        Candidates are the first `restrict_vocab` rows, minus a, b and c. `groups` (R,) gives
        each candidate a group id; evaluate.py groups case variants ("Paris", "paris"). As in
        gensim's evaluator, the answer is the first of the 5 best candidates outside the groups
        of a, b and c, or the 5th when all five are such variants.
        method: "add" (3CosAdd, gensim's most_similar) or "mul" (3CosMul).
        """
        if method not in ("add", "mul"):
            raise W2VError(f"analogy method={method!r} is unknown; use 'add' or 'mul'")
        u = self.unit
        cand = u[:restrict_vocab]  # (R, D)
        r = cand.shape[0]
        a, b, c = (t.to(u.device) for t in (a, b, c))
        if groups is not None:
            groups = groups.to(u.device)
        out = torch.empty(a.shape[0], dtype=torch.long, device=u.device)
        chunk = max(1, min(SCORE_BLOCK // max(r, 1), a.shape[0]))
        # One (chunk, R) block, reused: a fresh block per chunk leaves the allocator holding
        # freed ones, and the peak then varies run to run.
        block = torch.empty(chunk, r, dtype=u.dtype, device=u.device)
        for s in range(0, a.shape[0], chunk):
            q = [t[s : s + chunk] for t in (a, b, c)]
            scores = block[: q[0].shape[0]]
            if method == "add":
                # (q, R); the query's length does not change the ranking
                torch.matmul(u[q[1]] + u[q[2]] - u[q[0]], cand.T, out=scores)
            else:
                sa, sb, sc = ((1 + u[t] @ cand.T) / 2 for t in q)  # (q, R) each
                torch.div(sb * sc, sa + COSMUL_EPS, out=scores)
            rows = torch.arange(scores.shape[0], device=u.device)
            for t in q:
                inside = t < r  # a query word outside the searched rows masks nothing
                scores[rows[inside], t[inside]] = -torch.inf
            out[s : s + chunk] = self._pick(scores, q, groups, r)
        return out

    @staticmethod
    def _pick(scores: torch.Tensor, q: list[torch.Tensor], groups, r: int) -> torch.Tensor:
        """Best row per query, skipping candidates that share a group with a query word."""
        if groups is None:
            return scores.argmax(dim=1)
        top = scores.topk(min(5, r), dim=1).indices  # (q, k)
        g = groups[top]
        clash = torch.zeros_like(top, dtype=torch.bool)
        for t in q:
            qg = torch.where(t < r, groups[t.clamp_max(r - 1)], -1)
            clash |= g == qg[:, None]
        ok = ~clash
        first = torch.where(ok.any(1), ok.int().argmax(1), top.shape[1] - 1)
        return top.gather(1, first[:, None]).squeeze(1)
