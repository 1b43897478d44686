"""Handing freed memory back to the system.

glibc's allocator and Arrow's pool keep memory a program has freed, for its next
allocations: after a phase that allocates and frees a lot (the corpus build, an evaluation)
that memory stays in the process's RSS while the run goes on, and a later phase's own comes
on top of it. `give_back()` returns what is free at such a point.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys


def give_back() -> None:
    """Collect garbage, then return the free memory of Arrow's pool and of glibc's heap."""
    gc.collect()
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # glibc only (not musl, macOS)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
