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
from .. import dtypes

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_CHUNK = 1 << 17  # elements per chunk


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
        width = spec.storage_dtype.itemsize
        expect_streams(self, streams, {n: spec.size for n in self.stream_names(spec, params)})
        planes = [np.frombuffer(streams[f"p{k}"], dtype=np.uint8) for k in range(width)]
        out = np.empty(spec.size, _UINT[width])
        by_byte = out.view(np.uint8).reshape(-1, width)
        rotate = _rotates(spec.dtype)
        tmp = np.empty(min(spec.size, _CHUNK), out.dtype)
        for i in range(0, spec.size, _CHUNK):
            j = min(i + _CHUNK, spec.size)
            np.stack([p[i:j] for p in planes], axis=1, out=by_byte[i:j])
            if rotate:  # rotate right by one bit, in place, while the chunk is in cache
                x, t = out[i:j], tmp[: j - i]
                np.left_shift(x, 8 * width - 1, out=t)
                x >>= 1
                x |= t
        return out.view(spec.storage_dtype).reshape(spec.shape)
