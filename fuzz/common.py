"""The one contract every fuzz harness checks, and what the harnesses share.

Contract (STYLE.md point 9): for any input, an entry point returns a result or raises an
``nnar.NnarError``; nothing else, within bounded time and memory.

* Any other exception escaping the entry point is a violation.
* An ``NnarError`` caused (``raise ... from``) by a ``MemoryError`` is a violation too: the
  harnesses read with :data:`LIMITS` (small limits), and under fuzzing the address space is
  capped well above them (:func:`bound_memory`), so running out of memory means something was
  allocated beyond a declared, limit-checked size. (nnar.pipeline turns a stray MemoryError
  from a codec into ``codec-data``; that would otherwise hide a bomb.)
* Under fuzzing (:func:`fuzz_main`), one input taking longer than :data:`TIME_LIMIT` seconds is
  a violation. The replay in the normal test run does not time anything.

A harness module defines ``test_one_input(data: bytes) -> None``, which raises
:class:`ContractViolation` on a violation, and ends with ``if __name__ == "__main__":
fuzz_main(test_one_input)``. It must import without atheris: the test suite replays the corpus
through ``test_one_input`` with plain Python.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import nnar  # noqa: E402

try:  # atheris is only needed to fuzz, never to replay the corpus
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus"

#: limits the harnesses read with: large enough for every vector, small enough that a declared
#: size within them always fits in :data:`MEMORY_BUDGET`
LIMITS = nnar.Limits(max_descriptor_bytes=1 << 20, max_tensors=10_000, max_tensor_bytes=32 << 20,
                     max_total_bytes=256 << 20, max_stages=16, max_segments=256)
#: address space allowed above what the process uses at start (a few × max_tensor_bytes: the
#: stored body, the decoded streams, the array, a copy of a group member, a digest's input)
MEMORY_BUDGET = 1 << 30
#: seconds one input may take under fuzzing (the bounds above make the largest decode ~0.5 s)
TIME_LIMIT = 5.0


class ContractViolation(AssertionError):
    """An entry point broke the contract: a non-nnar exception, a memory blow-up, a wrong
    result, or a slow input."""


def caused_by_memory_error(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, MemoryError):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def call(fn, *args, **kw):
    """``fn(*args, **kw)``: its result, or ``None`` if it raised an NnarError; any other
    exception (or an NnarError caused by MemoryError) becomes a ContractViolation."""
    try:
        return fn(*args, **kw)
    except ContractViolation:
        raise
    except nnar.NnarError as e:
        if not isinstance(e.code, str) or not e.code:
            raise ContractViolation(f"{type(e).__name__} without a code") from e
        if caused_by_memory_error(e):
            raise ContractViolation(f"out of memory within limits: {type(e).__name__}: {e}") from e
        return None
    except BaseException as e:  # noqa: BLE001  (KeyboardInterrupt too: a harness must not hang)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ContractViolation(f"{getattr(fn, '__qualname__', fn)} raised {type(e).__name__}: {e}") from e


class NonSeekable(io.RawIOBase):
    """A pipe-like reader over bytes: not seekable, and every read returns at most ``chunk``
    bytes, so the chunked stream path of nnar's reader runs."""

    def __init__(self, data: bytes, chunk: int = 4096):
        self._data, self._pos, self._chunk = memoryview(data), 0, chunk

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b) -> int:
        n = min(len(b), self._chunk, len(self._data) - self._pos)
        memoryview(b).cast("B")[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


class Take:
    """Deterministic structured values from fuzz bytes (FuzzedDataProvider's job, without
    atheris, so the corpus replays anywhere). Past the end, every value is 0 / empty."""

    def __init__(self, data: bytes):
        self.data, self.pos = memoryview(data), 0

    def byte(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b

    def uint(self, nbytes: int) -> int:
        chunk = bytes(self.data[self.pos:self.pos + nbytes]).ljust(nbytes, b"\0")
        self.pos += nbytes
        return int.from_bytes(chunk, "little")

    def bytes(self, n: int) -> bytes:
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def sized(self, width: int = 2) -> bytes:
        """A length-prefixed byte string (``width``-byte little-endian length)."""
        return self.bytes(self.uint(width))

    def rest(self) -> bytes:
        out = bytes(self.data[self.pos:])
        self.pos = len(self.data)
        return out


def put_sized(b: bytes, width: int = 2) -> bytes:
    """The encoding :meth:`Take.sized` reads (for seed corpora)."""
    return len(b).to_bytes(width, "little") + b


# -- getting past the checksums -------------------------------------------------------------------


def fix_crcs(data: bytes) -> bytes:
    """``data`` with every CRC that a walk of its frames can find recomputed (spec §4.1, §7).

    Random mutations almost never keep a CRC-32 right, so without this the fuzzer would only
    ever meet ``checksum`` errors and never the descriptor, layout and codec checks behind
    them. Harnesses read both the input and this repaired copy. Anything that does not parse as
    far as a CRC is left as it is.
    """
    out = bytearray(data)
    pos, n = 16, len(out)
    while pos + 32 <= n:
        dlen = int.from_bytes(out[pos + 16:pos + 20], "little")
        blen = int.from_bytes(out[pos + 8:pos + 16], "little")
        if pos + 32 + dlen > n:
            break
        prefix = bytes(out[:16]) if pos == 16 else b""
        desc = bytes(out[pos + 32:pos + 32 + dlen])
        out[pos + 28:pos + 32] = zlib.crc32(desc, zlib.crc32(bytes(out[pos:pos + 28]), zlib.crc32(prefix))).to_bytes(4, "little")
        body_end = pos + 32 + dlen + blen
        if body_end > n:
            break
        out[pos + 20:pos + 24] = zlib.crc32(bytes(out[pos + 32 + dlen:body_end])).to_bytes(4, "little")
        kind = bytes(out[pos:pos + 4])
        pos = body_end
        if kind == b"INDX":
            break
    if n >= 32 and out[n - 8:] == b"NNAREND\x1a":
        out[n - 12:n - 8] = zlib.crc32(bytes(out[n - 32:n - 12])).to_bytes(4, "little")
    return bytes(out)


# -- running under atheris ------------------------------------------------------------------------


def bound_memory(budget: int = MEMORY_BUDGET) -> None:
    """Cap the address space at what the process maps now plus ``budget`` (RLIMIT_AS)."""
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + budget
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def timed(test_one_input, limit: float = TIME_LIMIT):
    def run(data: bytes) -> None:
        start = time.perf_counter()
        test_one_input(data)
        took = time.perf_counter() - start
        if took > limit:
            raise ContractViolation(f"one input of {len(data)} bytes took {took:.2f} s (limit {limit} s)")
    return run


def fuzz_main(test_one_input, argv: list[str] | None = None) -> None:
    """Fuzz ``test_one_input`` with atheris; libFuzzer options come from the command line."""
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris (replaying the corpus needs only pytest)")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # nnar loads its API on first use, and only what is loaded gets instrumented: load it first
    import nnar.api  # noqa: F401
    import nnar.archive  # noqa: F401
    import nnar.formats.npz, nnar.formats.onnx, nnar.formats.safetensors, nnar.formats.torch  # noqa: F401,E401
    import nnar.patching.apply  # noqa: F401
    atheris.instrument_all()
    # then one input, untimed, after instrumenting: torch and onnx load here (not instrumented:
    # their code is not ours to fuzz), and the first timed input does not pay for them
    with contextlib.suppress(Exception):
        test_one_input(b"")
    bound_memory()
    argv = list(sys.argv if argv is None else argv)
    if not any(a.startswith("-timeout=") for a in argv):
        argv.append(f"-timeout={int(TIME_LIMIT * 4)}")  # libFuzzer's own hang detector, behind ours
    if not any(a.startswith("-rss_limit_mb=") for a in argv):
        argv.append("-rss_limit_mb=3072")
    atheris.Setup(argv, timed(test_one_input))
    atheris.Fuzz()


@contextlib.contextmanager
def quiet():
    """Capture stdout and stderr (the CLI prints); yields the two StringIO objects."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


__all__ = ["ContractViolation", "LIMITS", "NonSeekable", "Take", "call", "fix_crcs", "fuzz_main", "put_sized", "quiet",
           "CORPUS_DIR", "FUZZ_DIR"]


def with_crcs_fixed(check):
    """The entry point of a harness whose ``check`` takes a whole archive: the input as it is
    and, when that differs, the input with its CRCs recomputed (so mutations get past them)."""
    def test_one_input(data: bytes) -> None:
        data = bytes(data)
        check(data)
        fixed = fix_crcs(data)
        if fixed != data:
            check(fixed)
    return test_one_input
