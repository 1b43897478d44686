"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Every file w2v writes (caches, checkpoints, vectors) goes through here: write to a temporary
file in the same directory, fsync, then os.replace, which is atomic on POSIX filesystems.

A temporary file is `flock`ed while it is written (`hold`), so one left by a killed process
(kill -9 runs no cleanup) can be told from one being written now (`in_use`): the kernel
drops the lock when its process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from w2v.errors import W2VError, unfinished


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it over `path` on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        hold(fd)
        # mkstemp creates 0600; the file we rename into place gets what open() would give
        # it (0666 less the umask), as files written by other tools do.
        os.fchmod(fd, 0o666 & ~umask())
    except OSError as err:
        raise W2VError(f"cannot write {path}: {err.strerror}; choose a writable location") from err
    try:
        with unfinished(lambda: _remove_quietly(tmp)):  # Ctrl-C: errors.stop_at_once
            with os.fdopen(fd, mode, **kwargs) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise W2VError(
            f"cannot write {path}: {err.strerror}; free some space or choose another location "
            "(earlier files are intact)"
        ) from err
    except BaseException:
        _remove_quietly(tmp)
        raise


def hold(fd: int) -> None:
    """Lock an open file for as long as this process keeps it open (`in_use` sees it)."""
    with contextlib.suppress(OSError):  # a filesystem without locks: the file is unmarked
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def in_use(path: str | os.PathLike) -> bool:
    """Whether a live process holds `path` (`hold`); a symlink or a vanished file is not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:  # no locks on this filesystem: assume the worst, leave the file be
        return True
    finally:
        os.close(fd)


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc); elsewhere
    set and restored at once (os.umask has no read-only form)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through atomic_open (plain tensors, lists, dicts: loadable with weights_only)."""
    with atomic_open(path, "wb") as f:
        sink = _WriteErrors(f)
        try:
            torch.save(obj, sink)
        except RuntimeError:
            # torch's C++ zip writer turns a failed write (disk full) into a RuntimeError
            # ("unexpected pos"): raise the OSError itself, which atomic_open reports.
            if sink.error is not None:
                raise sink.error from None
            raise


class _WriteErrors:
    """A file that remembers the OSError its write raised."""

    def __init__(self, f: IO) -> None:
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# The most bytes a torch.save archive's members may declare per byte of the file, above
# MIN_DECLARED. torch.save stores its members uncompressed, so its files declare less than
# their own size; deflate shrinks trained float32 weights by a few percent (their mantissas are
# noise), never 4x. A crafted file can declare far more: a 1 MB deflated zero tensor of
# (6611, 40000) made torch.load allocate 1 GB (2.3 GB at the peak) before anything was checked.
MAX_EXPANSION = 4
MIN_DECLARED = 16 << 20  # small files may declare this much whatever their size


def archive_too_large(path: str | os.PathLike) -> str | None:
    """What is wrong when a torch.save archive declares more bytes than its file could hold
    (checked before torch.load, which allocates every member at its declared size), or None.
    A file that is not a zip archive is left to torch.load to report."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except Exception:  # zipfile raises several types for damaged headers; torch.load reports
        return None
    if declared <= max(MAX_EXPANSION * size, MIN_DECLARED):
        return None
    return (f"its members declare {declared:,} bytes in a {size:,}-byte file (compressed "
            "members; torch.save writes none), which would all be allocated to read it")


def archive_damage(path: str | os.PathLike) -> str | None:
    """What is wrong with a torch.save archive, or None when every member's CRC32 checks out.

    torch.load never checks the CRCs its zip archives carry, so bytes damaged inside a tensor
    load silently as wrong weights; the loaders call this after torch.load succeeds."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as err:  # zipfile raises several types for damaged headers
        return f"its zip structure is damaged ({type(err).__name__})"
    return f"member {bad} fails its CRC check" if bad else None
