"""The threads nnar decodes with: one shared pool, as many threads as cores unless told otherwise.

Decoding a record's streams (zstd frames, Huffman codes) is independent work that releases the
GIL in zstd, so the streams of one large record are decoded at once, one per thread; the result
is the same bytes, and the first failing stream in record order is the error reported, whatever
order the threads finish in. ``NNAR_THREADS`` (or :func:`set_threads`, or ``--threads`` on the
command line) sets the number; 1 decodes everything in the calling thread.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait

from .errors import InvalidInput

#: streams smaller than this together are decoded in the calling thread: a thread's hand-off
#: costs more than decoding them
PARALLEL_MIN_BYTES = 4 << 20

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_threads: int | None = None


def count() -> int:
    """How many threads decoding may use."""
    if _threads is not None:
        return _threads
    env = os.environ.get("NNAR_THREADS", "")
    if env.strip().isdigit() and int(env) >= 1:
        return int(env)
    return os.cpu_count() or 1


def set_threads(n: int | None) -> None:
    """Decode with ``n`` threads (None: every core, or ``NNAR_THREADS``)."""
    global _threads, _pool
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InvalidInput(f"threads: expected an integer >= 1, found {n!r}")
    with _lock:
        _threads = n
        if _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None


_local = threading.local()


def in_pool() -> bool:
    """Whether the caller is one of the pool's threads (which must not wait on the pool), or
    runs one part of work already shared out (:func:`serial`)."""
    return getattr(_local, "serial", False) or threading.current_thread().name.startswith("nnar-decode")


class serial:
    """Within it, this thread splits no work of its own: it runs one of several parts that
    :func:`run_parts` shared out, and the other threads are busy with the others."""

    def __enter__(self):
        self.was = getattr(_local, "serial", False)
        _local.serial = True

    def __exit__(self, *exc):
        _local.serial = self.was


def pool() -> ThreadPoolExecutor | None:
    """The shared pool, or None when decoding runs in the calling thread."""
    global _pool
    n = count()
    if n <= 1:
        return None
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(n, thread_name_prefix="nnar-decode")
        return _pool


def split(n: int, min_part: int) -> list[tuple[int, int]]:
    """``range(n)`` cut into at most :func:`count` contiguous parts of at least ``min_part``
    (one part when decoding runs in one thread, or the caller is a pool thread)."""
    parts = 1 if in_pool() else max(1, min(count(), n // max(1, min_part)))
    bounds = [n * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def run_parts(fn, parts: list[tuple[int, int]]) -> list:
    """``fn(start, stop)`` for each part: the first in the calling thread, the others in the pool
    (numpy's copies and ufuncs, zlib and zstd release the GIL, so the parts run at once).
    Results in part order; the first failing part's error is raised."""
    ex = pool() if len(parts) > 1 and not in_pool() else None  # a pool thread never waits on the pool
    if ex is None:
        return [fn(a, b) for a, b in parts]
    futures = [ex.submit(fn, a, b) for a, b in parts[1:]]
    try:
        first = fn(*parts[0])
    except BaseException:
        wait(futures)  # the parts share the caller's buffers: none may still be writing
        raise
    return [first, *(f.result() for f in futures)]


#: records decoded ahead of the caller hold at most this many decoded bytes together
AHEAD_BYTES = 64 << 20
#: records smaller than this are decoded in the caller's thread, in turn
AHEAD_MIN_BYTES = 256 << 10


def ahead(items, work, weight, budget: int = AHEAD_BYTES):
    """``(item, result)`` for each item, in order, where ``result()`` returns ``work(item)``, with
    the work of the next items done in the pool while the caller uses this one: the iterator (reading records, checking CRCs) runs
    in the calling thread, one record's decoding overlaps the next one's reading.

    ``weight(item)`` is the memory its work will hold; items of ``PARALLEL_MIN_BYTES`` or more
    are worked on alone, in the calling thread, when the caller calls ``result()`` (after it let
    go of the previous item's result; their own work runs in parts on the pool), and at most
    ``budget`` bytes are ahead at once. An error of the iterator, or of an item's work,
    is raised where that item would have been: after every item before it."""
    ex = pool()
    if ex is None or in_pool():
        for item in items:
            yield item, functools.partial(work, item)
        return
    items = iter(items)
    pending: deque = deque()  # (item, future, weight)
    held = 0
    nxt, failure, done = None, None, False
    while True:
        while not done and failure is None:
            if nxt is None:
                try:
                    item = next(items)
                    nxt = (item, weight(item))
                except StopIteration:
                    done = True
                    break
                except BaseException as e:  # raised after the items before it
                    failure = e
                    break
            item, w = nxt
            if w >= PARALLEL_MIN_BYTES or held + w > budget:
                break
            if w < AHEAD_MIN_BYTES:  # handing it to a thread costs more than decoding it here
                pending.append((item, None, w))
            else:
                pending.append((item, ex.submit(work, item), w))
            held += w
            nxt = None
        if pending:
            item, future, w = pending.popleft()
            held -= w
            yield item, future.result if future is not None else functools.partial(work, item)
        elif nxt is not None:  # a large item, alone
            (item, _), nxt = nxt, None
            yield item, functools.partial(work, item)
        elif failure is not None:
            raise failure
        else:
            return
