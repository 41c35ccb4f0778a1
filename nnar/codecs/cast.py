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


#: (total bits, trailing significand bits) of each float dtype
LAYOUT = {"float16": (16, 10), "bfloat16": (16, 7), "float32": (32, 23), "float64": (64, 52)}
UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}


def convert(array: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Round ``array`` (storage of ``src``) to ``dst`` storage; exact when ``dst`` is wider.
    NaNs follow the spec's rule, not the processor's (spec/codecs/cast.md, step 3)."""
    if src == "bfloat16":
        out = convert(dtypes.bfloat16_to_float32(array), "float32", dst) if dst != "float32" else \
            dtypes.bfloat16_to_float32(array)
    elif dst == "bfloat16":
        out = dtypes.float32_to_bfloat16(array)  # handles NaNs by the rule itself
    else:
        with np.errstate(invalid="ignore", over="ignore"):  # NaNs are redone below; overflow is to inf by the rule
            out = array.astype(dtypes.storage_dtype(dst))
    src_bits = array.view(UINT[LAYOUT[src][0]])
    nan = _is_nan(src_bits, src)
    if nan.any():
        out = np.array(out)  # writable
        out.view(UINT[LAYOUT[dst][0]])[nan] = nan_bits(src_bits[nan], src, dst)
    return out


def _is_nan(bits: np.ndarray, dtype: str) -> np.ndarray:
    width, mant = LAYOUT[dtype]
    magnitude = bits & UINT[width]((1 << (width - 1)) - 1)
    return magnitude > UINT[width](((1 << (width - 1 - mant)) - 1) << mant)


def nan_bits(bits: np.ndarray, src: str, dst: str) -> np.ndarray:
    """The NaN bit patterns of ``dst`` for NaNs of ``src``: same sign; widening appends zero
    bits to the significand, narrowing keeps its leading bits and sets the quiet bit."""
    sw, sm = LAYOUT[src]
    dw, dm = LAYOUT[dst]
    b = bits.astype(np.uint64)
    sign = (b >> np.uint64(sw - 1)) & np.uint64(1)
    payload = b & np.uint64((1 << sm) - 1)
    if dm >= sm:
        p = payload << np.uint64(dm - sm)
    else:
        p = (payload >> np.uint64(sm - dm)) | np.uint64(1 << (dm - 1))
    exponent = np.uint64(((1 << (dw - 1 - dm)) - 1) << dm)
    return ((sign << np.uint64(dw - 1)) | exponent | p).astype(UINT[dw])


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
