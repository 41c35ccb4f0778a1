"""The one bounded reader every read of an archive goes through.

It tracks the absolute position (so errors can say where), never reads past what a caller
declared, and never allocates a declared length up front unless the bytes are known to be
there: from a seekable file it checks the file size first; from a pipe it reads in chunks, so a
tiny stream that declares a huge body fails after reading what it really has.
"""

from __future__ import annotations

import io
import os
import threading

import numpy as np

from ..errors import NnarIOError, Truncated

CHUNK = 16 << 20


class Source:
    def __init__(self, f, *, seekable: bool | None = None):
        self.f = f
        self.pos = 0
        self._lock = threading.Lock()
        # An archive already in memory (bytes, or a BytesIO) is read as views of it, not copies.
        self.mem: memoryview | None = None
        if isinstance(f, (bytes, bytearray, memoryview)):
            self.mem, self.seekable, self.base, self.size = memoryview(f).cast("B"), True, 0, memoryview(f).nbytes
            return
        if isinstance(f, io.BytesIO):
            self.mem = f.getbuffer()[f.tell():]
        if seekable is None:
            try:
                seekable = f.seekable()
            except (AttributeError, ValueError, OSError):
                seekable = False
        self.seekable = seekable
        self.base = f.tell() if seekable else 0
        self.size: int | None = None
        if seekable:
            end = f.seek(0, io.SEEK_END)
            f.seek(self.base)
            self.size = end - self.base

    def _read_into(self, buf: memoryview) -> int:
        try:
            return self.f.readinto(buf) or 0
        except AttributeError:
            data = self.f.read(len(buf))
            buf[: len(data)] = data
            return len(data)
        except OSError as e:
            raise NnarIOError(f"read failed: {e}", where=f"offset {self.pos}") from e

    def read_exact(self, n: int, what: str) -> np.ndarray:
        """Exactly ``n`` bytes of ``what``, or :class:`Truncated` saying how many were there."""
        start = self.pos
        if self.size is not None and start + n > self.size:
            raise Truncated(f"{what}: expected {n} bytes, found {max(self.size - start, 0)} before the end of the archive",
                            where=f"offset {start}")
        if self.mem is not None:
            self.pos += n
            return np.frombuffer(self.mem[start: start + n], np.uint8)
        # np.empty: no zero-filling of memory that is about to be overwritten
        out = np.empty(n if self.size is not None else min(n, CHUNK), np.uint8)
        got = 0
        while got < n:
            if got == len(out):  # from a stream: grow only as data really arrives
                grown = np.empty(min(n, 2 * len(out)), np.uint8)
                grown[:got] = out
                out = grown
            k = self._read_into(memoryview(out)[got:])
            if k == 0:
                raise Truncated(f"{what}: expected {n} bytes, found {got} before the end of the archive",
                                where=f"offset {start}")
            got += k
        self.pos += n
        return out

    @property
    def local(self) -> bool:
        """In memory, or a file with a descriptor: reading a range twice costs no transfer (a
        remote file's would be fetched twice)."""
        if self.mem is not None:
            return True
        try:
            self.f.fileno()
            return self.seekable
        except (AttributeError, OSError, ValueError):
            return False

    def read_at(self, pos: int, n: int, what: str) -> memoryview:
        """Exactly ``n`` bytes at ``pos`` of a seekable source, without moving :meth:`read_exact`'s
        position (threads may read at once: files through ``os.pread``)."""
        if self.size is not None and pos + n > self.size:
            raise Truncated(f"{what}: expected {n} bytes, found {max(self.size - pos, 0)} before the end of the archive",
                            where=f"offset {pos}")
        if self.mem is not None:
            return self.mem[pos: pos + n]
        try:
            fd = self.f.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is None or not hasattr(os, "pread"):
            with self._lock:
                here = self.pos
                self.seek(pos)
                try:
                    return memoryview(self.read_exact(n, what))
                finally:
                    self.seek(here)
        out, got = memoryview(bytearray(n)), 0
        while got < n:
            try:
                if hasattr(os, "preadv"):  # straight into the buffer
                    k = os.preadv(fd, [out[got:]], self.base + pos + got)
                else:
                    chunk = os.pread(fd, n - got, self.base + pos + got)
                    k = len(chunk)
                    out[got: got + k] = chunk
            except OSError as e:
                raise NnarIOError(f"read failed: {e}", where=f"offset {pos + got}") from e
            if not k:
                raise Truncated(f"{what}: expected {n} bytes, found {got} before the end of the archive",
                                where=f"offset {pos}")
            got += k
        return out

    def seek(self, pos: int) -> None:
        if not self.seekable:
            raise NnarIOError("random access needs a seekable file; read the stream in order instead")
        if self.mem is None:
            self.f.seek(self.base + pos)
        self.pos = pos

    def at_eof(self) -> bool:
        if self.mem is not None and self.f is not self.mem and isinstance(self.f, io.BytesIO):
            self.f.seek(self.base + self.pos)  # leave the BytesIO where a reader of it would
        if self.size is not None:
            return self.pos >= self.size
        b = self.f.read(1)
        return not b
