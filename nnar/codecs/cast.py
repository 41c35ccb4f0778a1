"""``nnar.cast``: store floats in another float type (spec/codecs/cast.md).

Narrowing (float32 → float16 or bfloat16) is the lossy fp16/bf16 mode; widening (float16 →
float32) is exact and lets a float16 tensor use codecs defined on float32.
"""

from __future__ import annotations

import numpy as np

from . import register
from .abc import ArrayArrayCodec, TensorSpec
from .. import dtypes
from ..errors import CodecDataError

#: (input dtype, stored dtype) pairs, each way one rounding to nearest, ties to even
PAIRS = frozenset({
    ("float32", "float16"), ("float32", "bfloat16"), ("float64", "float32"), ("float64", "float16"),
    ("float16", "float32"), ("bfloat16", "float32"), ("float32", "float64"), ("float16", "float64"),
})


def convert(array: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Round ``array`` (storage of ``src``) to ``dst`` storage; exact when ``dst`` is wider."""
    if src == "bfloat16":
        array, src = dtypes.bfloat16_to_float32(array), "float32"
    if dst == "bfloat16":
        return dtypes.float32_to_bfloat16(array)
    return array.astype(dtypes.storage_dtype(dst))


@register
class Cast(ArrayArrayCodec):
    codec_id = "nnar.cast"
    lossless = False  # narrowing rounds; widening is exact

    def __init__(self, dtype: str):
        if not isinstance(dtype, str) or dtype not in dtypes.FLOAT_DTYPES:
            raise CodecDataError(f"nnar.cast: dtype: expected one of {', '.join(dtypes.FLOAT_DTYPES)}, found {dtype!r}")
        self.dtype = dtype

    def get_config(self):
        return {"dtype": self.dtype}

    def _check(self, spec: TensorSpec) -> None:
        if (spec.dtype, self.dtype) not in PAIRS:
            raise CodecDataError(f"nnar.cast: cannot store {spec.dtype} as {self.dtype}; expected one of "
                                 + ", ".join(f"{a}→{b}" for a, b in sorted(PAIRS)))

    def encoded_spec(self, spec, params):
        self._check(spec)
        return TensorSpec(self.dtype, spec.shape)

    def encode(self, array, spec):
        self._check(spec)
        return convert(array, spec.dtype, self.dtype), {}

    def decode(self, array, spec, params):
        self._check(spec)
        return convert(array, self.dtype, spec.dtype).reshape(spec.shape)
