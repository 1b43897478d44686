"""Word-similarity (Spearman) and analogy (accuracy) suites, as gensim's evaluators score them.

    python -m w2v.evaluate vectors=runs/x/vectors.pt eval.dir=../shared/data/eval json=eval.json

Conventions follow gensim 4.4's `evaluate_word_pairs` / `evaluate_word_analogies`, so the
numbers are comparable with published gensim results:
- case_insensitive: file words and vocabulary words are compared upper-cased; among case
  variants of one word the first in vocabulary order (the most frequent) supplies the vector.
- Only the first `restrict_vocab` words are in vocabulary for analogies: a question with any
  other word is skipped (counted as OOV); answers are searched among those words only.
- Analogies use 3CosAdd; the answer is the best word that is not a, b or c (nor a case
  variant of them). Overall accuracy is over every answered question (gensim's "Total").
- Similarity: Spearman over the pairs whose two words are known (in the whole vocabulary);
  duplicate pairs count twice.
Reported OOV figures are fractions in [0, 1] (gensim logs percentages).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import MISSING

from w2v.atomic import atomic_write_text
from w2v.cli import Usage, parse_cli, report_errors
from w2v.config import EvalConfig, default_eval_dir
from w2v.errors import W2VError
from w2v.export import load_vectors
from w2v.vectors import KeyedVectors

log = logging.getLogger(__name__)

NO_SUITES = ("no suites found in eval.dir={dir} (python scripts/fetch_eval.py puts the standard "
             "ones in the default eval.dir, $W2V_EVAL_DIR or ~/.cache/w2v/eval; or set "
             "eval.dir, eval.analogies, eval.similarities)")

# Files run_suites looks for in EvalConfig.dir: name -> kind.
STANDARD_SUITES = {
    "questions-words.txt": "analogy",
    "wordsim353.tsv": "similarity",
    "simlex999.txt": "similarity",
}


@dataclass
class PairsResult:
    spearman: float
    pairs: int  # pairs scored (both words known)
    oov: int  # pairs skipped for an unknown word
    ngrams: int = 0  # pairs scored with an unseen word's n-gram vector (subword models)

    @property
    def oov_ratio(self) -> float:
        return self.oov / (self.pairs + self.oov)

    @property
    def ngram_ratio(self) -> float:
        return self.ngrams / (self.pairs + self.oov)


@dataclass
class Section:
    name: str
    correct: int = 0
    total: int = 0  # answered questions (all four words known)

    @property
    def syntactic(self) -> bool:
        return self.name.startswith("gram")


@dataclass
class AnalogyResult:
    sections: list[Section] = field(default_factory=list)
    oov: int = 0  # questions skipped for an unknown word

    @staticmethod
    def _acc(sections: list[Section]) -> float:
        total = sum(s.total for s in sections)
        return sum(s.correct for s in sections) / total if total else 0.0

    @property
    def accuracy(self) -> float:
        return self._acc(self.sections)

    @property
    def answered(self) -> int:
        return sum(s.total for s in self.sections)

    @property
    def oov_ratio(self) -> float:
        return self.oov / (self.answered + self.oov)


# ---- vocabulary as the evaluators see it ---------------------------------------------------


def _eval_vocab(kv: KeyedVectors, restrict_vocab: int | None, case_insensitive: bool):
    """(key -> row, groups): keys upper-cased when case-insensitive, first variant wins.

    groups[i] is the row that represents word i's key, so case variants share a group.
    """
    words = kv.words[:restrict_vocab]
    keys = [w.upper() for w in words] if case_insensitive else words
    lookup: dict[str, int] = {}
    for i, k in enumerate(keys):
        lookup.setdefault(k, i)
    groups = torch.tensor([lookup[k] for k in keys], dtype=torch.long)
    return lookup, groups


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise W2VError(f"evaluation file {path} does not exist")
    try:
        return path.read_text(encoding="utf-8").splitlines()  # also drops CRLF's '\r'
    except UnicodeDecodeError as err:
        raise W2VError(f"{path} is not UTF-8 text ({err.reason})") from err


# ---- similarity ----------------------------------------------------------------------------


def read_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """`w1 w2 score` lines (tabs or spaces; extra columns ignored; '#' lines are comments)."""
    path = Path(path)
    pairs = []
    for line in _read_lines(path):
        fields = line.split()
        if not fields or line.startswith("#") or len(fields) < 3:
            continue
        try:
            pairs.append((fields[0], fields[1], float(fields[2])))
        except ValueError:
            continue  # a header row such as "word1 word2 score"
    if not pairs:
        raise W2VError(f"{path} has no 'word1 word2 score' lines; is it a similarity suite?")
    return pairs


def evaluate_pairs(
    kv: KeyedVectors,
    path: str | Path,
    restrict_vocab: int | None = None,
    case_insensitive: bool = True,
) -> PairsResult:
    """Spearman correlation between the file's scores and the vectors' cosine similarities.
    With a subword model's vectors (kv.ngrams) an unseen word is scored with its n-grams'
    vector, as fastText and gensim score it; `ngrams` counts the pairs that needed one."""
    lookup, _ = _eval_vocab(kv, restrict_vocab, case_insensitive)
    norm = str.upper if case_insensitive else str

    def row(word: str) -> tuple[int | None, bool]:
        i = lookup.get(norm(word))
        if i is None and kv.ngrams is not None:
            return kv.find(word.lower() if case_insensitive else word), True
        return i, False

    known = [(*row(a), *row(b), s) for a, b, s in read_pairs(path)]
    scored = [(i, j, s, ui or uj) for i, ui, j, uj, s in known if i is not None and j is not None]
    oov = len(known) - len(scored)
    if not scored:
        return PairsResult(spearman=float("nan"), pairs=0, oov=oov)
    i, j, gold, unseen = zip(*scored)
    model = kv.similarity_batch(torch.tensor(i), torch.tensor(j)).cpu().numpy()
    return PairsResult(spearman=spearman(gold, model), pairs=len(scored), oov=oov,
                       ngrams=sum(unseen))


def spearman(x, y) -> float:
    """Spearman's rho as gensim reports it (scipy.stats.spearmanr): the Pearson correlation
    of the two rankings, tied values sharing their average rank. NaN when either side is
    constant (no ranking to correlate)."""
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def _ranks(values) -> np.ndarray:
    """1-based ranks, ties averaged (scipy.stats.rankdata's "average" method)."""
    x = np.asarray(values)  # ranked in its own dtype: float32 ties stay ties
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # where each run of equal values starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]  # exclusive
    average = (starts + ends + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = average[np.cumsum(first) - 1]
    return ranks


# ---- analogies -----------------------------------------------------------------------------


def read_analogies(path: str | Path) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """questions-words format: `: section` lines, then `a b c d` lines (others skipped)."""
    path = Path(path)
    sections: list[tuple[str, list]] = []
    for n, line in enumerate(_read_lines(path), start=1):
        if line.startswith(":"):
            sections.append((line[1:].strip(), []))
            continue
        fields = line.split()
        if len(fields) != 4:
            continue  # blank or malformed: gensim skips these too
        if not sections:
            raise W2VError(f"{path}: line {n} is a question before any ': section' line")
        sections[-1][1].append(tuple(fields))
    if not any(qs for _, qs in sections):
        raise W2VError(f"{path} has no 'a b c d' questions under ': section' lines; "
                       "is it an analogy suite?")
    return sections


def evaluate_analogies(
    kv: KeyedVectors,
    path: str | Path,
    restrict_vocab: int = 30_000,
    case_insensitive: bool = True,
) -> AnalogyResult:
    """3CosAdd accuracy per section, all questions answered in batched matrix products."""
    lookup, groups = _eval_vocab(kv, restrict_vocab, case_insensitive)
    norm = str.upper if case_insensitive else str
    result = AnalogyResult()
    rows, owner = [], []  # rows: (a, b, c, d) ids of answerable questions; owner: section
    for name, questions in read_analogies(path):
        result.sections.append(Section(name))
        for q in questions:
            ids = [lookup.get(norm(w)) for w in q]
            if None in ids:
                result.oov += 1
            else:
                rows.append(ids)
                owner.append(len(result.sections) - 1)
    if rows:
        q = torch.tensor(rows, dtype=torch.long)  # (Q, 4)
        pred = kv.analogy_batch(q[:, 0], q[:, 1], q[:, 2], restrict_vocab, groups).cpu()
        # Compare groups, not rows: any case variant of the expected word is right.
        hits = (groups[pred] == groups[q[:, 3]]).tolist()
        for s, hit in zip(owner, hits):
            result.sections[s].total += 1
            result.sections[s].correct += hit
    return result


# ---- suites --------------------------------------------------------------------------------


def find_suites(cfg: EvalConfig) -> list[tuple[str, str, Path]]:
    """(kind, name, path) for cfg's explicit files and the standard files in cfg.dir."""
    found = [("analogy", Path(p).stem, Path(p)) for p in cfg.analogies]
    found += [("similarity", Path(p).stem, Path(p)) for p in cfg.similarities]
    if cfg.dir:
        folder = Path(cfg.dir).expanduser()
        if not folder.is_dir():
            if cfg.dir == default_eval_dir():  # nothing fetched yet: no suites, not an error
                return found
            raise W2VError(f"eval.dir={cfg.dir} is not a folder; run scripts/fetch_eval.py "
                           "or set eval.dir=null")
        for fname, kind in STANDARD_SUITES.items():
            path = folder / fname
            if path.is_file() and path.resolve() not in {p.resolve() for *_, p in found}:
                found.append((kind, path.stem, path))
    return found


def run_suites(kv: KeyedVectors, cfg: EvalConfig) -> dict[str, float]:
    """Every suite cfg names -> flat metrics, e.g. "analogy/questions-words/accuracy"."""
    suites = find_suites(cfg)
    if not suites:
        # eval.dir=null with no suite files is "no evaluation": nothing to say about it.
        level = logging.INFO if cfg.dir else logging.DEBUG
        log.log(level, "evaluation: %s", NO_SUITES.format(dir=cfg.dir))
        return {}
    metrics: dict[str, float] = {}
    for kind, name, path in suites:
        key = f"{kind}/{name}"
        if kind == "similarity":
            r = evaluate_pairs(kv, path, None, cfg.case_insensitive)
            if r.pairs:  # no known pair: no correlation (NaN would break JSON and plots)
                metrics[f"{key}/spearman"] = r.spearman
                if not np.isfinite(r.spearman):  # kept (null in JSON), with the reason
                    log.warning("%s: no Spearman correlation (null): %s", key, _why_none(r))
            metrics[f"{key}/oov"] = r.oov_ratio
            if kv.ngrams is not None:  # the share scored through unseen words' n-grams
                metrics[f"{key}/ngrams"] = r.ngram_ratio
            continue
        a = evaluate_analogies(kv, path, cfg.restrict_vocab, cfg.case_insensitive)
        metrics[f"{key}/accuracy"] = a.accuracy
        for split, want in (("semantic", False), ("syntactic", True)):
            part = [s for s in a.sections if s.syntactic == want]
            if any(s.total for s in part):
                metrics[f"{key}/{split}"] = AnalogyResult._acc(part)
        metrics[f"{key}/oov"] = a.oov_ratio
        for s in a.sections:
            if s.total:  # a section with no answerable question has no accuracy
                metrics[f"{key}/section/{s.name}"] = s.correct / s.total
    return metrics


def _why_none(r: PairsResult) -> str:
    """Why a similarity suite with known pairs has no correlation."""
    if r.pairs == 1:
        return ("only 1 of its pairs has both words in the vocabulary; a rank correlation needs "
                "at least 2")
    return (f"the scores of its {r.pairs} known pairs (or the vectors' similarities) are all "
            "equal, so there is no ranking to correlate")


def strict_json(metrics: dict) -> str:
    """Metrics as strict JSON: a value that is not a finite number (a loss never measured, a
    correlation over fewer than 2 pairs) is null, never NaN, which strict parsers refuse."""
    def finite(v):
        return None if isinstance(v, float) and not np.isfinite(v) else v

    return json.dumps({k: finite(v) for k, v in metrics.items()}, indent=2,
                      allow_nan=False) + "\n"


def headline(metrics: dict[str, float]) -> str:
    """One line of each suite's main figure: accuracy for analogies, Spearman for pairs."""
    parts = [f"{key.split('/')[1]} {value:.4f}" for key, value in metrics.items()
             if key.count("/") == 2 and key.endswith(("/accuracy", "/spearman"))]
    return ", ".join(parts)


def format_table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k:<{width}}  {v:8.4f}" for k, v in metrics.items())


# ---- CLI -----------------------------------------------------------------------------------


@dataclass
class EvaluateArgs:
    """w2v.evaluate's options: the vectors, the suites (eval.*) and where to save scores."""

    vectors: str = MISSING
    """vectors.pt, or a word2vec text (.txt, .vec) or binary (.bin) file."""
    json: str | None = None
    """Also write the scores to this JSON file."""
    eval: EvalConfig = field(default_factory=EvalConfig)


USAGE = Usage(
    module="w2v.evaluate",
    synopsis="vectors=PATH [eval.dir=DIR] [key=value ...]",
    about="""
        Score vectors (vectors.pt, or word2vec text/binary from any tool) on the word-similarity
        (Spearman) and analogy (3CosAdd accuracy) suites, as gensim scores them: the standard
        files found in eval.dir (questions-words.txt, wordsim353.tsv, simlex999.txt) and any
        listed in eval.analogies / eval.similarities. scripts/fetch_eval.py downloads them.
    """,
    examples=(
        "vectors=outputs/<run>/vectors.pt eval.dir=../shared/data/eval",
        "vectors=GoogleNews-vectors-negative300.bin eval.dir=eval/ json=scores.json",
        "vectors=vectors.txt eval.analogies=[my-analogies.txt] eval.restrict_vocab=100000",
    ),
)


@report_errors
def main(argv: list[str] | None = None) -> None:
    args = parse_cli(EvaluateArgs, sys.argv[1:] if argv is None else argv, USAGE)
    if not find_suites(args.eval):  # before loading the vectors: nothing to score them on
        raise W2VError(NO_SUITES.format(dir=args.eval.dir))
    metrics = run_suites(load_vectors(args.vectors), args.eval)
    if metrics:
        print(format_table(metrics))
    if args.json:
        atomic_write_text(args.json, strict_json(metrics))


if __name__ == "__main__":
    main()
