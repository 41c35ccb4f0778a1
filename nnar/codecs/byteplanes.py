"""``nnar.byteplanes``: one stream per byte of significance (spec/codecs/byteplanes.md).

Trained float weights have a low-entropy exponent and a near-random mantissa. Rotating each
float left by one bit puts the whole exponent of float32 and bfloat16 into the top byte (the
sign drops to the lowest bit), so the exponent plane compresses to its entropy while the mantissa
planes, stored as they are, cost nothing to decode. Integers are split without rotation.
"""

from __future__ import annotations

import numpy as np

from . import register
from .abc import ArrayBytesCodec, expect_streams
from .. import dtypes, threads

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_CHUNK = 1 << 17  # elements per chunk
_PARALLEL_MIN_ELEMENTS = 1 << 20  # per thread: below this, handing work over costs more than it saves


def _rotates(dtype: str) -> bool:
    return dtype in dtypes.FLOAT_DTYPES


@register
class BytePlanes(ArrayBytesCodec):
    codec_id = "nnar.byteplanes"

    def stream_names(self, spec, params):
        return tuple(f"p{i}" for i in range(spec.storage_dtype.itemsize))

    def stream_lengths(self, spec, params):
        return {name: spec.size for name in self.stream_names(spec, params)}

    def encode(self, array, spec):
        width = spec.storage_dtype.itemsize
        u = np.ascontiguousarray(array).reshape(-1).view(_UINT[width])
        rotate = _rotates(spec.dtype)
        planes = np.empty((width, u.size), np.uint8)
        tmp = np.empty(min(u.size, _CHUNK), u.dtype)
        tmp2 = np.empty_like(tmp)
        # Chunks small enough to stay in cache: rotation and split then cost one pass over memory.
        for i in range(0, u.size, _CHUNK):
            x = u[i: i + _CHUNK]
            if rotate:
                t, t2 = tmp[: x.size], tmp2[: x.size]
                np.left_shift(x, 1, out=t)
                np.right_shift(x, 8 * width - 1, out=t2)
                t |= t2
                x = t
            by_byte = x.view(np.uint8).reshape(-1, width)
            for k in range(width):
                planes[k, i: i + x.size] = by_byte[:, k]
        return {f"p{k}": planes[k].data for k in range(width)}, {}

    def decode(self, streams, spec, params):
        out = np.empty(spec.shape, spec.storage_dtype)
        self.decode_into(streams, spec, params, out)
        return out

    def decode_into(self, streams, spec, params, out):
        width = spec.storage_dtype.itemsize
        expect_streams(self, streams, {n: spec.size for n in self.stream_names(spec, params)})
        planes = [np.frombuffer(streams[f"p{k}"], dtype=np.uint8) for k in range(width)]
        out = out.reshape(-1).view(_UINT[width])  # a view: out must be C-contiguous
        by_byte = out.view(np.uint8).reshape(-1, width)
        rotate = _rotates(spec.dtype)

        def interleave(start: int, stop: int) -> None:
            tmp = np.empty(min(stop - start, _CHUNK), out.dtype)
            for i in range(start, stop, _CHUNK):
                j = min(i + _CHUNK, stop)
                chunk = by_byte[i:j]
                for k, p in enumerate(planes):  # np.stack costs ~70 µs of Python per call
                    chunk[:, k] = p[i:j]
                if rotate:  # rotate right by one bit, in place, while the chunk is in cache
                    x, t = out[i:j], tmp[: j - i]
                    np.left_shift(x, 8 * width - 1, out=t)
                    x >>= 1
                    x |= t

        # large tensors in parts, one per decoding thread (numpy's loops release the GIL)
        threads.run_parts(interleave, threads.split(spec.size, _PARALLEL_MIN_ELEMENTS))
