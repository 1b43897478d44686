"""The one exception type users see, and the one way a library's error is cut to one line.

    raise W2VError(f"cannot read {path}: {one_line(err)}; re-export it") from err

Printing it at the command-line edge (`error: ...`, exit 2) is w2v/cli.py's `report_errors`.
"""

from __future__ import annotations

INTERRUPTED = "interrupted (Ctrl-C): stopped, nothing half-written kept"


class W2VError(Exception):
    """An error the user caused and can fix: the message names the problem and the fix."""


def one_line(err: BaseException) -> str:
    """A library's error as one line: the first line of its message, then that of its cause
    when it was raised from one (Hydra's "Error merging override x=y" says what, its cause
    why). Later lines are details (OmegaConf's full_key/object_type, Hydra's search path,
    torch's advice) that would bury the message."""
    parts: list[str] = []
    for e in (err, err.__cause__):
        if e is None:
            continue
        text = str(e).strip()
        line = text.splitlines()[0].strip() if text else type(e).__name__
        if line not in parts:
            parts.append(line)
    return "; ".join(parts)
