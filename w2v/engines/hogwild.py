"""Hogwild threads: a numba worker run by several Python threads over one epoch's documents.

    threads = Threads(count, jobs=J, work=_work)     # _work(*args, shared, slot), numba, nogil
    threads.start(args, first, end)                  # documents first..end-1, in the background
    threads.wait(doc); threads.stop()                # watch; stop after the documents in hand

word2vec.c's model: `count` Python threads each run `work`, a numba function that releases the
GIL, for a whole epoch. Each claims the next document from a shared counter (an atomic
fetch-add), trains it, adds its totals to its job's, and claims the next, until the epoch's
documents run out or the main thread raises the stop flag, which they check before claiming.
Nobody waits at a job boundary: the main thread only watches the counters and stops the
threads when the loop needs the model whole. After a stop every document below the counter is
done and none above it started, so the counter is an exact resume point. The weights are
written without locks (Hogwild, as word2vec.c and gensim do).

numba has no CPU atomics API; the three intrinsics here emit LLVM's atomic instructions on one
element of a 1-d array: enough for a shared work counter and for counters another thread reads
while this one runs (a plain store there could stay in a register until the loop ends).
"""

from __future__ import annotations

import threading
import time
from collections import namedtuple
from collections.abc import Callable

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# What the threads share, as the worker's last argument but one. Values that different threads
# write often sit 64 bytes apart, so no two of them share a cache line (false sharing).
Shared = namedtuple("Shared", "bounds job_loss job_counts control marks")
NEXT, STOP = 0, 8  # control (16,) int64: the next unclaimed document; the stop flag
MARK = 8  # marks (T * 8,) int64: slot * 8 holds a lower bound of the thread's document
IDLE = np.iinfo(np.int64).max  # the mark of a thread that holds no document


def _element(context, builder, aryty, ary, index):
    array = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, array, [index], wraparound=False)


@intrinsic
def fetch_add(typingctx, arr, index, value):
    """arr[index] += value, atomically (sequentially consistent); returns the old value.
    int64 or float64 arrays."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1
            and arr.dtype in (types.int64, types.float64)):
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ptr = _element(context, builder, aryty, args[0], args[1])
        value = context.cast(builder, args[2], sig.args[2], aryty.dtype)
        op = "fadd" if isinstance(aryty.dtype, types.Float) else "add"
        return builder.atomic_rmw(op, ptr, value, "seq_cst")

    return arr.dtype(arr, index, value), codegen


@intrinsic
def load(typingctx, arr, index):
    """arr[index], read atomically with acquire ordering."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element(context, builder, sig.args[0], args[0], args[1])
        size = context.get_abi_sizeof(context.get_value_type(sig.args[0].dtype))
        return builder.load_atomic(ptr, "acquire", size)

    return arr.dtype(arr, index), codegen


@intrinsic
def store(typingctx, arr, index, value):
    """arr[index] = value, as an atomic store that other threads see (release ordering)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ptr = _element(context, builder, aryty, args[0], args[1])
        value = context.cast(builder, args[2], sig.args[2], aryty.dtype)
        size = context.get_abi_sizeof(context.get_value_type(aryty.dtype))
        builder.store_atomic(value, ptr, "release", size)
        return context.get_dummy_value()

    return types.void(arr, index, value), codegen


@njit(inline="always", nogil=True, cache=True)
def claim(shared, slot, doc_end):
    """The next document for thread `slot`, or -1 when the epoch's documents are out or the
    stop flag is up. The thread's mark is set to a lower bound of its claim before claiming
    (the fetch-add orders the two), so `done_below` never passes a document in training."""
    store(shared.marks, slot * MARK, load(shared.control, NEXT))
    if load(shared.control, STOP) != 0:
        return -1
    d = fetch_add(shared.control, NEXT, 1)
    return d if d < doc_end else -1


@njit(inline="always", nogil=True, cache=True)
def report(shared, doc, loss, examples, kept):
    """Add one finished document's totals to its job's (job j is documents
    bounds[j]..bounds[j+1]-1)."""
    j = np.searchsorted(shared.bounds, doc, side="right") - 1
    fetch_add(shared.job_loss, j, loss)
    fetch_add(shared.job_counts, 2 * j, examples)
    fetch_add(shared.job_counts, 2 * j + 1, kept)


@njit(inline="always", nogil=True, cache=True)
def leave(shared, slot):
    store(shared.marks, slot * MARK, IDLE)


@njit(nogil=True, cache=True)
def _done_below(control, marks):
    """A document index below which every document is done: none is unclaimed (the counter
    is past it) and no thread holds one (each thread's mark is past it)."""
    low = load(control, NEXT)  # read first: a thread marks before it claims
    for i in range(0, marks.shape[0], MARK):
        low = min(low, load(marks, i))
    return low


class Threads:
    """`count` threads running `work(*args, shared, slot)` over documents first..end-1,
    watched from the calling thread: progress, a watermark of finished documents, totals,
    stop and join."""

    # Seconds between looks at the counters while waiting: from 0.5 ms (short jobs return
    # at once) up to 5 ms (a long wait wakes 200 times a second, ~0.3% of a core).
    POLL = (0.0005, 0.005)

    def __init__(self, count: int, jobs: int, work: Callable, bounds: np.ndarray) -> None:
        self.count, self.work = count, work
        self.shared = Shared(np.asarray(bounds, np.int64),
                             np.zeros(jobs, np.float64),  # (J,) loss
                             np.zeros(2 * jobs, np.int64),  # (2J,): examples, kept tokens
                             np.zeros(16, np.int64),
                             np.full(count * MARK, IDLE, np.int64))
        self.end = 0
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    @property
    def control(self) -> np.ndarray:
        return self.shared.control

    @property
    def job_loss(self) -> np.ndarray:
        return self.shared.job_loss

    @property
    def job_counts(self) -> np.ndarray:
        return self.shared.job_counts

    def start(self, args: tuple, first: int, end: int, inline: bool = False) -> None:
        """Train documents first..end-1 (`end` is part of `args` too, where the worker reads
        it); with inline=True on the calling thread (one thread: returns when done),
        otherwise in the background."""
        assert not self._threads, "the threads are running: stop() or join() first"
        self.control[NEXT], self.control[STOP], self.end = first, 0, end
        if inline:
            self.work(*args, self.shared, np.int64(0))
            return
        for slot in range(self.count):
            thread = threading.Thread(target=self._run, args=(args, slot), daemon=True,
                                      name=f"w2v-hogwild-{slot}")
            thread.start()
            self._threads.append(thread)

    def _run(self, args: tuple, slot: int) -> None:
        try:
            self.work(*args, self.shared, np.int64(slot))
        except BaseException as err:  # handed to the main thread by join()
            self._errors.append(err)

    @property
    def active(self) -> bool:
        """Started and not joined yet (the threads may have ended by themselves)."""
        return bool(self._threads)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def done_below(self) -> int:
        return min(_done_below(self.control, self.shared.marks), self.end)

    def wait(self, doc: int) -> None:
        """Return once every document below `doc` is done (or every thread has ended)."""
        pause, longest = self.POLL
        while self.running and self.done_below() < doc and not self._errors:
            time.sleep(pause)
            pause = min(2 * pause, longest)
        if self._errors:
            self.stop()  # stops the others and raises the first thread's error

    def stop(self) -> int:
        """Stop claiming documents, finish those in hand, join; returns the next document:
        every one below it is done, none above it started."""
        self.control[STOP] = 1
        return self.join()

    def join(self) -> int:
        for thread in self._threads:
            thread.join()
        self._threads = []
        if self._errors:
            err, self._errors = self._errors[0], []
            raise err
        return int(min(self.control[NEXT], self.end))

    def job(self, j: int) -> tuple[float, int, int]:
        """Job j's (loss, examples, kept tokens) so far: all of them once it is done."""
        return (float(self.job_loss[j]), int(self.job_counts[2 * j]),
                int(self.job_counts[2 * j + 1]))

    def clear(self) -> None:
        """Zero the jobs' totals (a new epoch)."""
        self.job_loss[:] = 0.0
        self.job_counts[:] = 0
