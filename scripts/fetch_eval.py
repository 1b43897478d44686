"""Download the standard evaluation suites (needs internet) and check their sha256.

    python scripts/fetch_eval.py              # into the default eval.dir, found by every run
    python scripts/fetch_eval.py out=data/eval

Without `out=`, the files land in the default `eval.dir` ($W2V_EVAL_DIR, else
~/.cache/w2v/eval), where every later `python -m w2v.train` and `python -m w2v.evaluate` looks
for them without being told.

The files are gensim's test data (questions-words.txt, wordsim353.tsv, simlex999.txt) at a
pinned commit, so everyone evaluates on the same bytes. Offline, it stops with one line.
`base=URL` fetches from a mirror (or a file:// folder) with the same file names.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from w2v.atomic import atomic_open  # noqa: E402
from w2v.cli import report_errors  # noqa: E402
from w2v.config import default_eval_dir  # noqa: E402
from w2v.errors import W2VError  # noqa: E402

COMMIT = "37f90ec121eb7cd401448a947e80953e0c53ccdc"
BASE = f"https://raw.githubusercontent.com/piskvorky/gensim/{COMMIT}/gensim/test/test_data"
# sha256 of each file (see ../shared/data/SOURCES.md).
SUITES = {
    "questions-words.txt": "8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36",
    "wordsim353.tsv": "f92a022fc2537793a15bc3a8c162ebcd74990e033a228bb6388cb71e4c0b1e1d",
    "simlex999.txt": "d5e0501971478a511430ee880bd0121e94ac701ba86d90544d83e6d2ba3db05d",
}
TIMEOUT_S = 30


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise W2VError(f"cannot download {url} ({reason}); are you online? Copy the files "
                       "by hand into the out folder instead") from err


def fetch_all(out: Path, base: str = BASE) -> list[Path]:
    written = []
    for name, sha in SUITES.items():
        data = fetch(f"{base.rstrip('/')}/{name}")
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise W2VError(f"{name} from {base} has sha256 {got}, expected {sha}; "
                           "the mirror serves a different file")
        with atomic_open(out / name, "wb") as f:
            f.write(data)
        written.append(out / name)
    return written


@report_errors
def main(argv: list[str] | None = None) -> None:
    args = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv) if "=" in a)
    unknown = set(args) - {"out", "base"}
    if unknown:
        raise W2VError("usage: python scripts/fetch_eval.py [out=DIR] [base=URL] (default "
                       f"out: {default_eval_dir()})")
    out = Path(args.get("out") or default_eval_dir()).expanduser()
    for path in fetch_all(out, args.get("base", BASE)):
        print(path)


if __name__ == "__main__":
    main()
