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


def _rotates(dtype: str) -> bool:
    return dtype in dtypes.FLOAT_DTYPES


@register
class BytePlanes(ArrayBytesCodec):
    codec_id = "nnar.byteplanes"

    def stream_names(self, spec, params):
        return tuple(f"p{i}" for i in range(spec.storage_dtype.itemsize))

    def encode(self, array, spec):
        width = spec.storage_dtype.itemsize
        u = np.ascontiguousarray(array).reshape(-1).view(_UINT[width])
        if _rotates(spec.dtype):
            bits = 8 * width
            u = (u << u.dtype.type(1)) | (u >> u.dtype.type(bits - 1))
        planes = u.view(np.uint8).reshape(-1, width).T  # row i = byte i of every element
        return {f"p{i}": np.ascontiguousarray(planes[i]).data for i in range(width)}, {}

    def decode(self, streams, spec, params):
        width = spec.storage_dtype.itemsize
        expect_streams(self, streams, {n: spec.size for n in self.stream_names(spec, params)})
        inter = np.empty((spec.size, width), dtype=np.uint8)
        for i in range(width):
            inter[:, i] = np.frombuffer(streams[f"p{i}"], dtype=np.uint8)
        u = inter.reshape(-1).view(_UINT[width])
        if _rotates(spec.dtype):
            bits = 8 * width
            low = u & u.dtype.type(1)
            u >>= u.dtype.type(1)
            low <<= u.dtype.type(bits - 1)
            u |= low
        return u.view(spec.storage_dtype).reshape(spec.shape)
