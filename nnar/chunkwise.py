"""Records whose streams are chunked (``nnar.chunked``) decoded chunk by chunk, straight into
the output: chunk ``i`` of every stream gives elements ``[i·E, (i+1)·E)`` of the array, so each
thread decodes its chunks of every stream and assembles them while they are still in cache.

A whole decode holds every stream at once (four planes of a float32 tensor: as many bytes as
the tensor, on fresh pages) and then interleaves them; this holds a chunk of each per thread.
Every check of a whole decode is made, before anything is decoded where a whole decode does:
the pipeline, the streams and their chains (done by the caller), then each chunked stream's
table; each chunk's own checks as it decodes. The error codes are the same (where several
streams are broken, the one a message names may differ).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from . import threads
from .codecs.abc import ArrayBytesCodec, TensorSpec
from .codecs.byteplanes import BytePlanes
from .codecs.chunked import Chunked
from .codecs.raw import Raw
from .errors import CodecDataError

#: decoded stream bytes per array element, for the array→bytes codecs whose streams are cut
#: along the elements: byte planes give one per plane, raw the item size
PER_ELEMENT = {BytePlanes: lambda itemsize: 1, Raw: lambda itemsize: itemsize}


def chunk_bytes(ab: ArrayBytesCodec, spec: TensorSpec, chains: Mapping) -> int | None:
    """The chunk size every chunked stream shares, if this record can be decoded chunk by
    chunk: array→bytes by byte planes or raw, each stream chunked (all alike, on element
    boundaries) or stored as it is, and at least one chunked; None otherwise."""
    per = PER_ELEMENT.get(type(ab))
    if per is None:
        return None
    sizes = set()
    for codecs, _ in chains.values():
        if not codecs:
            continue
        if len(codecs) != 1 or not isinstance(codecs[0][0], Chunked):
            return None
        sizes.add(codecs[0][0].chunk_bytes)
    if len(sizes) != 1:
        return None
    size = sizes.pop()
    return size if size % per(spec.storage_dtype.itemsize) == 0 else None


def decode(ab: ArrayBytesCodec, params, spec: TensorSpec, chains: Mapping, segments: Mapping, size: int,
           out: np.ndarray, run) -> None:
    """Decode into ``out`` (C-contiguous, ``spec``'s storage dtype and shape) the record whose
    checked ``chains`` :func:`chunk_bytes` accepted with ``size``; ``run(fn, *args)`` calls a
    codec as the pipeline does (errors named after the tensor)."""
    per = PER_ELEMENT[type(ab)](spec.storage_dtype.itemsize)
    elements = size // per  # per chunk
    def table(name: str, codec: Chunked, data: memoryview, bound: int):
        n, chunks = codec.layout(lambda pos, count: data[pos:pos + count], len(data), bound)
        if n != segments[name][1]:
            raise CodecDataError(f"segment {name!r}: expected {segments[name][1]} decoded bytes, found {n}")
        return chunks

    tables = {}
    for name, (codecs, bounds) in chains.items():  # every table checked before any chunk decodes
        data = memoryview(segments[name][2]).cast("B")
        tables[name] = (codecs[0][0], data, run(table, name, codecs[0][0], data, bounds[0])) if codecs \
            else (None, data, None)
    flat = out.reshape(-1)
    k = -(-spec.size // elements)

    def part(first: int, stop: int) -> None:
        with threads.serial():  # this thread's share: the interleave must not split again
            for i in range(first, stop):
                start = i * elements
                n = min(elements, spec.size - start)
                streams = {}
                for name, (codec, data, chunks) in tables.items():
                    if codec is None:
                        streams[name] = data[start * per:(start + n) * per]
                    else:
                        offset, stored, decoded = chunks[i]
                        streams[name] = run(codec.decode_chunk, data[offset:offset + stored], decoded)
                run(ab.decode_into, streams, TensorSpec(spec.dtype, (n,)), params, flat[start:start + n])

    threads.run_parts(part, threads.split(k, 1) if spec.nbytes >= threads.PARALLEL_MIN_BYTES else [(0, k)])
