"""Safe one-shot decoding of a single Zstandard frame (RFC 8878), shared by the ``nnar.zstd``
codec and by framing (compressed descriptors).

python-zstandard's one-shot decoder ignores bytes after a frame and sizes its output from the
frame header, so a hostile frame must be checked first: it must declare its content size, that
size must be within the caller's bound, and the frame must end exactly where the data does.
"""

from __future__ import annotations

import threading

import zstandard

MAGIC = b"\x28\xb5\x2f\xfd"
#: the largest window a frame may need, as a log: zstd's own default decoder limit (2^27 bytes),
#: which every level of libzstd's encoder stays within (spec/codecs/zstd.md, decoding step 1)
MAX_WINDOW_LOG = 27


class FrameError(ValueError):
    """The bytes are not exactly one acceptable frame (callers turn this into an NnarError)."""


class FrameTooLarge(FrameError):
    """The frame declares more output than the caller allows (a limit, not corruption)."""


def frame_length(data) -> int:
    """Bytes taken by the frame at the start of ``data``, found by walking its block headers."""
    view = memoryview(data).cast("B")
    return _walk(lambda pos, n: view[pos: pos + n], len(view))


def _walk(read_at, n: int) -> int:
    """:func:`frame_length` of ``n`` bytes read through ``read_at(offset, count)``: only the
    frame header and the block headers are read."""
    view = memoryview(read_at(0, min(n, 18))).cast("B")  # 18: the longest frame header
    if bytes(view[:4]) != MAGIC:
        raise FrameError(f"expected a zstd frame starting {MAGIC.hex(' ')}, found {bytes(view[:4]).hex(' ')}")
    try:
        pos = zstandard.frame_header_size(view)
    except zstandard.ZstdError as e:
        raise FrameError(f"corrupt zstd frame header: {e}") from e
    has_checksum = view[4] & 0x04
    while True:
        if pos + 3 > n:
            raise FrameError(f"zstd frame ends inside a block header at byte {pos} of {n}")
        view = memoryview(read_at(pos, 3)).cast("B")
        header = view[0] | view[1] << 8 | view[2] << 16
        last, block_type, size = header & 1, (header >> 1) & 3, header >> 3
        if block_type == 3:
            raise FrameError(f"reserved zstd block type at byte {pos}")
        pos += 3 + (1 if block_type == 1 else size)
        if last:
            break
    return pos + (4 if has_checksum else 0)


_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor: one may not be shared between threads, and making one
    costs ~20 µs (its context), more than decoding a small stream."""
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def _check_frame(read_at, n: int, max_length: int) -> int:
    """The checks of :func:`decompress_exact` before decoding, on ``n`` bytes read through
    ``read_at(offset, count)`` (the header and block headers only); returns the content size."""
    head = bytes(read_at(0, min(n, 18)))
    try:
        size = zstandard.frame_content_size(head) if n >= 6 else -2
    except zstandard.ZstdError as e:
        raise FrameError(f"expected a zstd frame, found bytes that are not one ({e})") from e
    if size < 0:
        raise FrameError("expected a zstd frame that declares its content size, found none")
    if size > max_length:
        raise FrameTooLarge(f"zstd frame declares {size} bytes, expected at most {max_length}")
    # python-zstandard's one-shot decoder does not apply zstd's window limit; a frame must not
    # make a decoder hold more history than any libzstd level writes (for a single-segment
    # frame, the window is its content size)
    try:
        window = zstandard.get_frame_parameters(head).window_size
    except zstandard.ZstdError as e:
        raise FrameError(f"corrupt zstd frame header: {e}") from e
    if window > 1 << MAX_WINDOW_LOG:
        raise FrameError(f"zstd frame needs a {window}-byte window, expected at most 2^{MAX_WINDOW_LOG}")
    length = _walk(read_at, n)
    if length != n:
        raise FrameError(f"expected exactly one zstd frame of {n} bytes, found a frame of {length} bytes"
                         + (" and bytes after it" if length < n else ""))
    return size


class FrameReader:
    """One frame decoded a piece at a time, in memory bounded by the pieces: the checks of
    :func:`decompress_exact`, in its order and with its messages, on the header and the block
    headers first; then :meth:`read`; :meth:`finish` checks the content size was decoded."""

    def __init__(self, read_at, n: int, max_length: int):
        self.size = _check_frame(read_at, n, max_length)
        self.decoded = 0
        self._reader = zstandard.ZstdDecompressor().stream_reader(  # one per frame: several are read at once
            _RangeFile(read_at, n), read_size=1 << 20, read_across_frames=False, closefd=False)

    def read(self, n: int) -> bytes:
        """``n`` decoded bytes, fewer only at the end of the frame."""
        parts, got = [], 0
        while got < n:
            try:
                data = self._reader.read(n - got)
            except zstandard.ZstdError as e:
                raise FrameError(f"corrupt zstd frame: {e}") from e
            if not data:
                break
            parts.append(data)
            got += len(data)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.decoded += len(data)
        if self.decoded > self.size:
            raise FrameError(f"zstd frame declares {self.size} bytes, decoded more")
        return data

    def finish(self) -> None:
        if self.decoded == self.size and self.size:
            try:  # the frame must end here (its last block and checksum read)
                extra = self._reader.read(1)
            except zstandard.ZstdError as e:
                raise FrameError(f"corrupt zstd frame: {e}") from e
            if extra:
                raise FrameError(f"zstd frame declares {self.size} bytes, decoded more")
        if self.decoded != self.size:
            raise FrameError(f"zstd frame declares {self.size} bytes, decoded {self.decoded}")


class _RangeFile:
    """``n`` bytes read through ``read_at``, as a file for zstandard's stream_reader."""

    def __init__(self, read_at, n: int):
        self.read_at, self.n, self.pos = read_at, n, 0

    def read(self, size: int = -1) -> bytes:
        size = self.n - self.pos if size < 0 else min(size, self.n - self.pos)
        data = bytes(self.read_at(self.pos, size))
        self.pos += len(data)
        return data


def decompress_exact(data, max_length: int) -> bytes:
    """Decode ``data``, which must be exactly one frame declaring at most ``max_length`` bytes."""
    view = memoryview(data).cast("B")
    size = _check_frame(lambda pos, n: view[pos: pos + n], len(view), max_length)
    try:
        if size == 0:  # one-shot returns b"" for these without decoding the blocks: decode them
            dobj = zstandard.ZstdDecompressor().decompressobj()
            out = dobj.decompress(data)
            if not dobj.eof:
                raise FrameError("zstd frame declaring 0 bytes does not end")
        else:
            out = _decompressor().decompress(data)
    except zstandard.ZstdError as e:
        raise FrameError(f"corrupt zstd frame: {e}") from e
    if len(out) != size:
        raise FrameError(f"zstd frame declares {size} bytes, decoded {len(out)}")
    return out
