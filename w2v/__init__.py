"""w2v: word2vec (skip-gram and CBOW) on PyTorch.

    embedding, index = w2v.load_embedding("outputs/<run>/vectors.pt")   # nn.Embedding
    tokens = w2v.tokenize("New York is big", "outputs/<run>/vectors.pt")  # as training did
"""

import importlib
import sys
from pathlib import Path

__version__ = "0.1.0"
__all__ = ["KeyedVectors", "Word2Vec", "load_embedding", "load_tokenizer", "load_vectors",
           "tokenize"]

_HOMES = {"KeyedVectors": "w2v.vectors", "Word2Vec": "w2v.model",
          "load_embedding": "w2v.export", "load_tokenizer": "w2v.export",
          "load_vectors": "w2v.export", "tokenize": "w2v.export"}


def __getattr__(name: str):
    # Imported on first use: `python -m w2v.export` must not find w2v.export already imported
    # by the package (runpy warns on stderr), and `import w2v` stays cheap.
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'w2v' has no attribute {name!r}")


def _program_is_w2v(argv: list[str]) -> bool:
    """Whether this process is one of our programs (`python [opts] -m w2v.<x>` or a w2v-*
    console script), judged from the interpreter's own command line."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, "").split(".")[0] == "w2v"
        if arg.startswith("-m"):
            return arg[2:].split(".")[0] == "w2v"
        if arg in ("-X", "-W", "--check-hash-based-pycs"):
            next(args, None)  # an option's own argument
        elif not arg.startswith("-"):
            return Path(arg).name.startswith("w2v-")
        elif arg.startswith("-c"):
            return False
    return False


def _install_stop() -> None:
    """Ctrl-C and SIGTERM stop a w2v program in the signal handler (w2v.errors.stop_at_once:
    one line, exit 130 or 143, half-written files removed), from here on, before torch and
    numba are imported (seconds). Not where a signal is ignored (SIGINT in a background job
    of a non-interactive shell) or handled by whoever started us."""
    import signal

    from w2v.errors import stop_at_once

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, stop_at_once)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, stop_at_once)


# The cyclic garbage collector's first generation runs every 10,000 allocations instead of
# 700: the imports and compiled kernels allocate millions of long-lived objects, over which the
# default thresholds run full collections for nothing (docs/measurements.md); a program's own
# work makes few reference cycles, so collecting them later costs little memory.
GC_THRESHOLDS = (10_000, 20, 20)


def _tune_gc() -> None:
    import gc

    gc.set_threshold(*GC_THRESHOLDS)


# Only when w2v is the program: importing w2v as a library changes nothing in the host.
if _program_is_w2v(getattr(sys, "orig_argv", [])):
    _install_stop()
    _tune_gc()
