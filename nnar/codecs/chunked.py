"""``nnar.chunked``: a stream cut into chunks, each encoded on its own by a nested bytes→bytes
stage, behind a table of their stored sizes (spec/codecs/chunked.md).

What it buys is decoding: the chunks of one stream decode on every core at once, and a reader
that wants part of a large tensor decodes only the chunks that hold it (:class:`ChunkReader`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from . import get_codec_class, register
from .abc import BytesBytesCodec, Codec
from .. import threads
from ..errors import CodecDataError, UnsupportedCodec

MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 1 << 12, 1 << 30
#: what nnar writes: small enough that a 4 MiB stream gives both cores work, large enough that
#: the 8-byte table entry and the matches zstd loses at each boundary cost nothing measurable
CHUNK_BYTES = 1 << 20
_HEADER = 8


@register
class Chunked(BytesBytesCodec):
    codec_id = "nnar.chunked"

    def __init__(self, chunk_bytes: int = CHUNK_BYTES, chunk: Mapping[str, Any] | Codec | None = None):
        if not isinstance(chunk_bytes, int) or isinstance(chunk_bytes, bool) \
                or not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise CodecDataError(f"nnar.chunked: chunk_bytes: expected an integer in [{MIN_CHUNK_BYTES}, "
                                 f"{MAX_CHUNK_BYTES}], found {chunk_bytes!r}")
        if chunk is None:
            raise CodecDataError("nnar.chunked: expected config key chunk, found none")
        self.chunk_bytes = chunk_bytes
        self.inner = chunk if isinstance(chunk, Codec) else self._inner_from(chunk)
        if not isinstance(self.inner, BytesBytesCodec) or isinstance(self.inner, Chunked):
            raise CodecDataError(f"nnar.chunked: chunk: expected a bytes-bytes codec other than nnar.chunked, "
                                 f"found {self.inner.codec_id} ({self.inner.kind})")
        self.slow_decode = self.inner.slow_decode
        self.lossless = self.inner.lossless

    @staticmethod
    def _inner_from(stage: object) -> Codec:
        if not isinstance(stage, Mapping) or set(stage) != {"codec", "config"}:
            raise CodecDataError(f"nnar.chunked: chunk: expected a map with keys codec and config, found {stage!r:.100}")
        try:
            cls = get_codec_class(stage["codec"])
        except UnsupportedCodec as e:  # the tensor is unreadable by this reader, not corrupt
            raise UnsupportedCodec(f"nnar.chunked: chunk: {e.message}") from None
        # checked before its config is read: a nested chunked stage could nest again
        if not issubclass(cls, BytesBytesCodec) or issubclass(cls, Chunked):
            raise CodecDataError(f"nnar.chunked: chunk: expected a bytes-bytes codec other than nnar.chunked, "
                                 f"found {cls.codec_id} ({cls.kind})")
        return cls.from_config(stage["config"])

    def get_config(self):
        return {"chunk_bytes": self.chunk_bytes, "chunk": {"codec": self.inner.codec_id, "config": self.inner.get_config()}}

    def __hash__(self):
        return hash((self.codec_id, self.chunk_bytes, self.inner))

    # -- encoding --------------------------------------------------------------------------------
    def encode(self, data):
        view = memoryview(data).cast("B")
        n, c = len(view), self.chunk_bytes
        parts = []
        for start in range(0, n, c):
            part, params = self.inner.encode(view[start:start + c])
            if params:
                raise CodecDataError(f"nnar.chunked: {self.inner.codec_id} returned params {params!r:.100}; "
                                     "a nested codec must have none")
            parts.append(part)
        table = np.array([n] + [memoryview(p).nbytes for p in parts], "<u8")
        return b"".join([table.tobytes(), *parts]), {}

    def encoded_bound(self, n: int) -> int:
        k = -(-n // self.chunk_bytes)
        if k == 0:
            return _HEADER
        last = n - (k - 1) * self.chunk_bytes
        return _HEADER + 8 * k + (k - 1) * self.inner.encoded_bound(self.chunk_bytes) + self.inner.encoded_bound(last)

    # -- decoding --------------------------------------------------------------------------------
    def layout(self, read_at, stored: int, max_length: int) -> tuple[int, "Chunks"]:
        """Decoding steps 2 and 3, reading only the table through ``read_at(offset, count)``:
        the decoded length and where each chunk is."""
        if stored < _HEADER:
            raise CodecDataError(f"nnar.chunked: expected at least {_HEADER} stored bytes, found {stored}")
        n = int.from_bytes(read_at(0, _HEADER), "little")
        if n > max_length:
            raise CodecDataError(f"nnar.chunked: length {n}: expected at most {max_length} decoded bytes")
        c = self.chunk_bytes
        k = -(-n // c)
        body = _HEADER + 8 * k
        if stored < body:
            raise CodecDataError(f"nnar.chunked: {k} chunks need a {body}-byte table, found {stored} stored bytes")
        sizes = np.frombuffer(read_at(_HEADER, 8 * k), "<u8")
        left = stored - body
        ends = np.cumsum(sizes, dtype=np.uint64)
        # no running total can wrap unnoticed: to wrap, one would first pass ``left`` (each size
        # is below 2^64 and ``left`` far below 2^63), and every running total must stay within it
        if (ends[-1] if k else 0) != left or k and int(ends.max()) > left:
            raise CodecDataError(f"nnar.chunked: chunk sizes add up to {sum(int(s) for s in sizes)}, expected "
                                 f"{left} (the stored bytes after the table)")
        starts = body + np.concatenate([np.zeros(1, np.uint64), ends[:-1]]).astype(np.int64) if k else ends
        return n, Chunks(n, c, starts, sizes.astype(np.int64))

    def decode_chunk(self, data, decoded: int) -> Any:
        """One chunk's stored bytes decoded by the nested stage: exactly ``decoded`` bytes."""
        got = self.inner.decode(data, {}, decoded)
        if memoryview(got).nbytes != decoded:
            raise CodecDataError(f"nnar.chunked: a chunk decoded to {memoryview(got).nbytes} bytes, "
                                 f"expected {decoded}")
        return got

    def decode(self, data, params, max_length):
        view = memoryview(data).cast("B")
        n, chunks = self.layout(lambda pos, count: view[pos:pos + count], len(view), max_length)
        out = np.empty(n, np.uint8)
        c = self.chunk_bytes

        def run(first: int, stop: int) -> None:
            for i in range(first, stop):
                offset, size, decoded = chunks[i]
                out[i * c:i * c + decoded] = np.frombuffer(self.decode_chunk(view[offset:offset + size], decoded),
                                                           np.uint8)
        # chunks are independent: zstd and Huffman's bitarray release the GIL
        parts = threads.split(len(chunks), 1) if n >= threads.PARALLEL_MIN_BYTES else [(0, len(chunks))]
        threads.run_parts(run, parts)
        return memoryview(out)


class Chunks:
    """Where each chunk is: arrays rather than a tuple per chunk, so a hostile table of millions
    of chunks costs 16 bytes each, what its own bytes cost."""

    def __init__(self, n: int, chunk_bytes: int, starts: np.ndarray, sizes: np.ndarray):
        self.n, self.chunk_bytes, self.starts, self.sizes = n, chunk_bytes, starts, sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> tuple[int, int, int]:
        """(stored offset, stored length, decoded length) of chunk ``i``."""
        return int(self.starts[i]), int(self.sizes[i]), min(self.chunk_bytes, self.n - i * self.chunk_bytes)


class ChunkReader:
    """A chunked stream read a piece at a time (nnar.pieces): the table checked first (decoding
    steps 2 and 3), then each chunk read and decoded when a piece needs it."""

    def __init__(self, codec: Chunked, read_at, stored: int, max_length: int):
        self.codec, self.read_at = codec, read_at
        self.size, self.chunks = codec.layout(read_at, stored, max_length)
        self.next, self.left = 0, b""

    def read(self, n: int) -> bytes:
        """``n`` decoded bytes, fewer only at the end of the stream."""
        parts, got = [self.left], len(self.left)
        while got < n and self.next < len(self.chunks):
            offset, size, decoded = self.chunks[self.next]
            data = self.codec.decode_chunk(self.read_at(offset, size), decoded)
            parts.append(data)
            got += len(data)
            self.next += 1
        joined = b"".join(parts)
        self.left = joined[n:]
        return joined[:n]

    def finish(self) -> None:
        """Nothing is left: :meth:`read` decoded every chunk, exactly (a reader of fewer bytes
        than the stream holds is the caller's error, caught by its length checks)."""
