"""The one exception type users see, the one way a library's error is cut to one line, and
how a w2v program stops on Ctrl-C.

    raise W2VError(f"cannot read {path}: {one_line(err)}; re-export it") from err
    with unfinished(lambda: shutil.rmtree(tmp, ignore_errors=True)):   # removed on Ctrl-C
        build_into(tmp)

Printing an error at the command-line edge (`error: ...`, exit 2) is w2v/cli.py's
`report_errors`.

Ctrl-C: a w2v program (not a host that imports w2v) stops in the SIGINT handler itself,
`stop_at_once`: it runs the cleanups registered with `unfinished` (temp files and folders, an
empty run dir), prints one line and exits 130. Raised as a KeyboardInterrupt, the interrupt would
land wherever the main thread happens to be, and inside a library it was measured (a SIGINT
0.3-0.4 s into `python -m w2v.train`) being swallowed (the run went on and exited 0), turning
into another error ("maximum recursion depth exceeded" from a half-imported module) or
aborting the process (SIGABRT from a pybind11 callback). The training loop has its own
handler (train.StopFlag: a checkpoint, then exit 130), and query's prompt its own. SIGTERM (a
job scheduler, `timeout`, `docker stop`) gets the same handler, exit 143, where it would
otherwise kill the program outright and leave its temporary files.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

INTERRUPTED = "interrupted (Ctrl-C): stopped, nothing half-written kept"
INTERRUPTED_CODE = 130  # 128 + SIGINT, as shells report it
TERMINATED = "terminated (SIGTERM): stopped, nothing half-written kept"
TERMINATED_CODE = 143  # 128 + SIGTERM: a scheduler's, `timeout`'s or `docker stop`'s stop
_STOPS = {signal.SIGINT: (INTERRUPTED, INTERRUPTED_CODE),
          signal.SIGTERM: (TERMINATED, TERMINATED_CODE)}

_UNFINISHED: list[Callable[[], None]] = []  # cleanups of what is being written, newest last


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


@contextmanager
def unfinished(cleanup: Callable[[], None]) -> Iterator[None]:
    """While the block runs, `cleanup` removes what it has half-written if Ctrl-C stops the
    program (stop_at_once). The block's own error handling still cleans up on exceptions."""
    _UNFINISHED.append(cleanup)
    try:
        yield
    finally:
        _UNFINISHED.remove(cleanup)


def stop_at_once(signum: int | None = None, frame: object = None) -> None:
    """The SIGINT and SIGTERM handler of w2v's programs: remove what is half-written, one
    line, exit 130 (SIGINT) or 143 (SIGTERM)."""
    line, code = _STOPS.get(signum, _STOPS[signal.SIGINT])
    for cleanup in reversed(list(_UNFINISHED)):  # a copy: other threads register too
        with suppress(Exception):  # best effort: the others still run, the exit still comes
            cleanup()
    with suppress(Exception):  # stdout may be mid-write in the interrupted frame
        sys.stdout.flush()
    os.write(2, (line + "\n").encode())
    os._exit(code)  # SystemExit would land in the interrupted frame too
