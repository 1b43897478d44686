"""Ask trained vectors for neighbours and analogies, interactively or from the command line.

    python -m w2v.query vectors=runs/x/vectors.pt king "man:king::woman:?"

A query is one word (its nearest neighbours), or an analogy written `a b c` or `a:b::c:?`
(a is to b as c is to ?, answered with 3CosAdd). Vectors trained with data.phrases phrase the
query first, as training did: `"new york"` is the one word `new_york`; with other vectors a
query of several words that fails names the phrase token when the vocabulary has one. Query
words are lowercased when the vocabulary was built lowercased (its recorded tokenizer says
so, or, for word2vec files, none of its words has an uppercase letter). With no query
arguments it reads queries from a prompt until EOF (Ctrl-D) or Ctrl-C. Options: topn=N
(default 10, >= 1), restrict_vocab=N (>= 1).
"""

from __future__ import annotations

import re
import signal
import sys
from dataclasses import dataclass

from omegaconf import MISSING

from w2v.cli import HELP_FLAGS, Usage, parse_cli, report_errors
from w2v.errors import W2VError
from w2v.export import load_vectors
from w2v.vectors import KeyedVectors

_ANALOGY = re.compile(r"^\s*(\S+?)\s*:\s*(\S+?)\s*::\s*(\S+?)\s*:\s*\?\s*$")


@dataclass
class QueryArgs:
    """w2v.query's options (the queries themselves are the other arguments)."""

    vectors: str = MISSING
    """vectors.pt, or a word2vec text (.txt, .vec) or binary (.bin) file."""
    topn: int = 10
    """Answers shown per query."""
    restrict_vocab: int | None = None
    """Search only the most frequent this many words (null: all)."""

    def __post_init__(self) -> None:
        if self.topn < 1:
            raise W2VError(f"topn={self.topn} is out of range: it must be an integer >= 1 "
                           "(the answers shown per query)")
        if self.restrict_vocab is not None and self.restrict_vocab < 1:
            raise W2VError(f"restrict_vocab={self.restrict_vocab} is out of range: it must be "
                           "an integer >= 1 (the most frequent words searched) or null (all)")


def parse_query(text: str, kv: KeyedVectors | None = None) -> tuple[list[str], list[str]]:
    """A query line -> (positive, negative) words for most_similar. With vectors trained with
    data.phrases, the line is phrased first, so `new york` asks for `new_york`."""
    m = _ANALOGY.match(text)
    if m:
        words = list(m.groups())
    elif kv is not None and kv.has_phrases:
        words = kv.tokenize(text)
    else:
        words = text.split()
    if len(words) == 1:
        return words, []
    if len(words) == 3:
        a, b, c = words
        return [b, c], [a]
    raise W2VError(f"cannot read query {text!r}: give one word, 'a b c' or 'a:b::c:?'")


def answer(kv: KeyedVectors, text: str, topn: int = 10, restrict_vocab: int | None = None) -> str:
    """The neighbours (or analogy answers) of one query, formatted one per line."""
    try:
        positive, negative = parse_query(text, kv)
        hits = kv.most_similar(positive, negative, topn=topn, restrict_vocab=restrict_vocab)
    except W2VError as err:
        phrase = _as_phrase(kv, text)
        if phrase is None:
            raise
        raise W2VError(f"{err}; the vocabulary has the phrase {phrase!r}: query {phrase}") \
            from None
    title = (f"{negative[0]} : {positive[0]} :: {positive[1]} : ?" if negative
             else f"nearest to {positive[0]}")
    unseen = [w for w in positive + negative if not kv.is_seen(w)]
    if unseen:  # a subword model's vector for a word it never saw
        title += f"  ({', '.join(unseen)}: unseen, from its character n-grams)"
    width = max((len(w) for w, _ in hits), default=0)
    return "\n".join([title] + [f"  {w:<{width}}  {s:.4f}" for w, s in hits])


def _as_phrase(kv: KeyedVectors, text: str) -> str | None:
    """The vocabulary's phrase token for a query of several words (`new york` -> `new_york`,
    joined with the recorded phrase delimiter, else '_'), when it has one."""
    words = text.split()
    if len(words) < 2 or _ANALOGY.match(text):
        return None
    phrases = (kv.tokenizer or {}).get("phrases") or {}
    delimiter = phrases.get("delimiter", "_") if isinstance(phrases, dict) else "_"
    joined = delimiter.join(words)
    return kv.words[kv.id(joined)] if joined in kv else None


def _interactive(kv: KeyedVectors, args: QueryArgs) -> None:
    print(f"{len(kv)} words, dim {kv.dim}. A word, 'a b c' or 'a:b::c:?'; Ctrl-D quits.")
    # At the prompt Ctrl-C ends the session quietly, as Ctrl-D does (nothing is being written).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    while True:
        try:
            line = input("query> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not line:
            continue
        try:
            print(answer(kv, line, args.topn, args.restrict_vocab))
        except W2VError as err:  # a typo should not end the session
            print(f"error: {err}")


USAGE = Usage(
    module="w2v.query",
    synopsis="vectors=PATH [topn=N] [restrict_vocab=N] [QUERY ...]",
    about="""
        Nearest neighbours of a word, or the answers to an analogy 'a b c' / 'a:b::c:?'
        (a is to b as c is to ?, 3CosAdd), from vectors.pt, word2vec text/binary or fastText
        .bin files. Each QUERY argument is one query; with none, queries are read from a
        prompt until Ctrl-D. Words are lowercased when the vocabulary was built lowercased (as
        recorded, or, for word2vec files, when it has no uppercase word); a phrase typed with
        spaces ("new york") is pointed to its token (new_york) when the vocabulary has one.
        Subword vectors answer for unseen words too (from their character n-grams).
    """,
    examples=(
        "vectors=outputs/<run>/vectors.pt king",
        "vectors=outputs/<run>/vectors.pt topn=5 \"man:king::woman:?\" \"paris france rome\"",
        "vectors=outputs/<run>/vectors.pt",
    ),
)


@report_errors
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # key=value arguments (and --help) are options; everything else is a query.
    options = [a for a in argv if re.match(r"^[A-Za-z_]+=", a) or a in HELP_FLAGS]
    queries = [a for a in argv if a not in options]
    args = parse_cli(QueryArgs, options, USAGE)
    kv = load_vectors(args.vectors)
    if not queries:
        _interactive(kv, args)
        return
    for text in queries:
        print(answer(kv, text, args.topn, args.restrict_vocab))


if __name__ == "__main__":
    main()
