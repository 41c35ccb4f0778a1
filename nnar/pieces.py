"""Large lossless records decoded a piece at a time: memory bounded by the pieces, not the tensor.

A tensor stored losslessly is byte planes (or raw bytes), each stream a zstd frame, chunks
(``nnar.chunked``) or stored as it is. Piece k of every stream decodes to piece k of the array, so such a record can be decoded
without holding its stored bytes, its streams or (for ``verify``) its array: a few pieces are
enough, and unpack to a file writes each piece at its place while the next one decodes.

What a whole decode checks is checked, and each fault gets the same error code: the body's
CRC-32 and zero padding first (the body read once, a chunk at a time), then the pipeline, the
streams and their chains (:func:`nnar.pipeline.check_streams`), each frame's header and block
headers, the decoded lengths, and the digest. (Where several streams are broken, which one the
message names may differ: a whole decode decodes stream by stream, this path piece by piece.)
"""

from __future__ import annotations

import hashlib

import numpy as np

from . import dtypes, threads
from . import pipeline as P
from .codecs.abc import TensorSpec
from .codecs.chunked import ChunkReader, Chunked
from .errors import CodecDataError, DigestMismatch
from .zstdframe import FrameError, FrameReader

#: array elements per piece (16 MB of float32; each byte plane 4 MB)
PIECE_ELEMENTS = 4 << 20
#: records of at least this many decoded bytes are decoded in pieces
MIN_BYTES = 64 << 20
#: bytes of body per read while checking its CRC
CRC_CHUNK = 8 << 20

#: decoded stream bytes per array element: byte planes give one per plane, raw the item size
_PER_ELEMENT = {"nnar.byteplanes": lambda itemsize: 1, "nnar.raw": lambda itemsize: itemsize}


def eligible(rec) -> bool:
    """Whether a TENS record is large and stored as byte planes or raw bytes, each stream a
    single zstd stage or verbatim: what :func:`decode` handles (judged from the descriptor
    alone; the checks come in :func:`decode`)."""
    if rec.spec.dtype not in dtypes.DTYPE_NAMES or rec.spec.nbytes < MIN_BYTES or len(rec.pipeline) != 1:
        return False
    stage = rec.pipeline[0]
    if not isinstance(stage, dict) or stage.get("codec") not in _PER_ELEMENT:
        return False
    return all(s.codecs == [] or len(s.codecs) == 1 and isinstance(s.codecs[0], dict)
               and s.codecs[0].get("codec") in ("nnar.zstd", "nnar.chunked") for s in rec.segments)


class _Verbatim:
    """A stream stored as it is, read a piece at a time."""

    def __init__(self, read_at, n: int):
        self.read_at, self.n, self.pos = read_at, n, 0

    def read(self, size: int) -> memoryview:
        size = min(size, self.n - self.pos)
        data = self.read_at(self.pos, size)
        self.pos += size
        return data


def decode(reader, frame, rec, where: str, *, out: np.ndarray | None = None, sink=None,
           check_digest: bool = False) -> None:
    """Decode an :func:`eligible` record a piece at a time: into ``out`` (an array of its spec's
    storage dtype and shape), or to ``sink(start, piece)`` (``start`` the piece's first element;
    the piece a view valid only during the call), or nowhere (to check it); its digest compared
    when ``check_digest``. Hashing and the sink run on the pool while the next piece decodes."""
    reader.check_body_in_chunks(frame, rec, CRC_CHUNK)
    refs = {s.name: s for s in rec.segments}
    segments = {s.name: (s.codecs, s.raw_length, None) for s in rec.segments}
    aa, (ab, ab_params), ab_spec, chains = P.check_streams(rec.spec, rec.pipeline, segments, reader.limits, where,
                                                           reader.strict)
    streams = {}
    for name, (codecs, bounds) in chains.items():
        ref = refs[name]

        def read_at(pos, n, ref=ref):
            return reader.src.read_at(ref.offset + pos, n, f"segment {ref.name!r}")
        if codecs and isinstance(codecs[0][0], Chunked):  # its table checked first, then chunks as needed
            streams[name] = P._run(ChunkReader, where, codecs[0][0], read_at, ref.length, bounds[0])
            if streams[name].size != ref.raw_length:
                raise CodecDataError(f"segment {name!r}: expected {ref.raw_length} decoded bytes, found "
                                     f"{streams[name].size}", where=where)
        elif codecs:
            try:
                streams[name] = FrameReader(read_at, ref.length, bounds[0])
            except FrameError as e:
                raise CodecDataError(f"nnar.zstd: {e}", where=where) from None
            if streams[name].size != ref.raw_length:
                raise CodecDataError(f"segment {name!r}: expected {ref.raw_length} decoded bytes, found "
                                     f"{streams[name].size}", where=where)
        else:
            streams[name] = _Verbatim(read_at, ref.length)
    per = _PER_ELEMENT[ab.codec_id](ab_spec.storage_dtype.itemsize)
    names = list(streams)
    flat = out.reshape(-1) if out is not None else None
    spare = [None, None]  # piece buffers without ``out``: one consumed while the next decodes
    hasher = hashlib.sha256() if check_digest else None
    pool = threads.pool() if not threads.in_pool() else None
    pending = None  # the previous piece's hashing and sink

    def consume(start: int, piece: np.ndarray) -> None:
        if hasher is not None:
            hasher.update(piece.view(np.uint8))
        if sink is not None:
            sink(start, piece)

    size, k = rec.spec.size, 0
    try:
        for start in range(0, size, PIECE_ELEMENTS):
            n = min(PIECE_ELEMENTS, size - start)

            def read_piece(i: int, _stop: int, n=n, start=start):
                name = names[i]
                try:
                    stream = streams[name]
                    # a chunk's codec errors are NnarErrors: _run gives them the tensor's name
                    data = P._run(stream.read, where, n * per) if isinstance(stream, ChunkReader) \
                        else stream.read(n * per)
                except FrameError as e:
                    raise CodecDataError(f"nnar.zstd: {e}", where=where) from None
                if len(data) != n * per:
                    raise CodecDataError(f"segment {name!r}: expected {refs[name].raw_length} decoded bytes, found "
                                         f"{start * per + len(data)}", where=where)
                return data
            # the streams' pieces at once, one per decoding thread (zstd and pread release the GIL)
            got = threads.run_parts(read_piece, [(i, i + 1) for i in range(len(names))])
            if flat is not None:
                target = flat[start:start + n]
            else:
                # two buffers: the previous piece's is still being consumed; this one's was
                # consumed before that one began
                target = spare[k % 2]
                if target is None or target.size < n:
                    target = spare[k % 2] = np.empty(n, ab_spec.storage_dtype)
                target = target[:n]
            P._run(ab.decode_into, where, dict(zip(names, got)), TensorSpec(ab_spec.dtype, (n,)), ab_params, target)
            del got
            if pending is not None:
                pending.result()  # in order; and the other buffer is free again
                pending = None
            if hasher is not None or sink is not None:
                if pool is not None:
                    pending = pool.submit(consume, start, target)
                else:
                    consume(start, target)
            k += 1
    except BaseException:
        if pending is not None:  # no sink call may still be running when this returns
            try:
                pending.result()
            except BaseException:
                pass
        raise
    if pending is not None:
        pending.result()
    for name, stream in streams.items():
        if isinstance(stream, FrameReader):
            try:
                stream.finish()
            except FrameError as e:
                raise CodecDataError(f"nnar.zstd: {e}", where=where) from None
    if hasher is not None and hasher.digest() != rec.digest:
        raise DigestMismatch(f"decoded tensor: expected SHA-256 {rec.digest.hex()}, computed {hasher.hexdigest()}",
                             where=where)
