"""``nnar.raw``: the array's little-endian, C-order bytes as one stream (spec/codecs/raw.md).

A raw stream with no bytes→bytes codec is stored verbatim at an aligned offset, so readers can
memory-map it.
"""

from __future__ import annotations

import numpy as np

from . import register
from .abc import ArrayBytesCodec, as_bytes, expect_streams


@register
class Raw(ArrayBytesCodec):
    codec_id = "nnar.raw"

    def encode(self, array, spec):
        return {"data": as_bytes(array)}, {}

    def stream_names(self, spec, params):
        return ("data",)

    def stream_lengths(self, spec, params):
        return {"data": spec.nbytes}

    def decode(self, streams, spec, params):
        expect_streams(self, streams, {"data": spec.nbytes})
        return np.frombuffer(streams["data"], dtype=spec.storage_dtype).reshape(spec.shape)
