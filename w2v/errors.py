"""The one exception type users see, and the CLI edge that prints it as one line."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

INTERRUPTED = "interrupted (Ctrl-C): stopped, nothing half-written kept"


class W2VError(Exception):
    """An error the user caused and can fix: the message names the problem and the fix."""


def report_errors(fn: F) -> F:
    """Wrap a CLI entry point: a W2VError becomes `error: <message>` on stderr and exit 2;
    Ctrl-C before training has its own handling (a corpus build, a compile) becomes one line
    and exit 130 (128 + SIGINT), as shells report it. What was half-written is removed on the
    way out (atomic writes, the corpus build's temp folder, an empty run dir)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except W2VError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
