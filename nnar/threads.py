"""The threads nnar decodes with: one shared pool, as many threads as cores unless told otherwise.

Decoding a record's streams (zstd frames, Huffman codes) is independent work that releases the
GIL in zstd, so the streams of one large record are decoded at once, one per thread; the result
is the same bytes, and the first failing stream in record order is the error reported, whatever
order the threads finish in. ``NNAR_THREADS`` (or :func:`set_threads`, or ``--threads`` on the
command line) sets the number; 1 decodes everything in the calling thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

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


def in_pool() -> bool:
    """Whether the caller is one of the pool's threads (which must not wait on the pool)."""
    return threading.current_thread().name.startswith("nnar-decode")


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
