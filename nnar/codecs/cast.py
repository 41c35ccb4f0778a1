"""``nnar.cast``: store floats in another float type (spec/codecs/cast.md).

Narrowing (float32 → float16 or bfloat16) is the lossy fp16/bf16 mode; widening (float16 →
float32) is exact and lets a float16 tensor use codecs defined on float32. Narrowing to float8
(from float32, float16, bfloat16; since format 1.4) rounds as torch's ``.to()`` does, and is
refused for a value float8 cannot hold without a change beyond rounding (spec/codecs/cast.md).
"""

from __future__ import annotations

import numpy as np

from . import register
from .abc import ArrayArrayCodec, TensorSpec
from .. import dtypes
from ..errors import CodecDataError, InvalidInput

#: (input dtype, stored dtype) pairs, each way one rounding to nearest, ties to even
PAIRS = frozenset({
    ("float32", "float16"), ("float32", "bfloat16"), ("float64", "float32"), ("float64", "float16"),
    ("float16", "float32"), ("bfloat16", "float32"), ("float32", "float64"), ("float16", "float64"),
})


#: (input dtype, float8 dtype) pairs (since 1.4): narrowing only; decoding widens exactly
FLOAT8_PAIRS = frozenset((a, b) for a in ("float32", "float16", "bfloat16") for b in dtypes.FLOAT8_DTYPES)
ALL_PAIRS = PAIRS | FLOAT8_PAIRS

#: (total bits, trailing significand bits) of each float dtype
LAYOUT = {"float16": (16, 10), "bfloat16": (16, 7), "float32": (32, 23), "float64": (64, 52)}
UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}


def convert(array: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Round ``array`` (storage of ``src``) to ``dst`` storage; exact when ``dst`` is wider.
    NaNs follow the spec's rule, not the processor's (spec/codecs/cast.md, step 3)."""
    if dst in dtypes.FLOAT8_DTYPES:
        return to_float8(array, src, dst)
    if src in dtypes.FLOAT8_DTYPES:
        return _WIDE[src, dst][np.asarray(array, np.uint8)]
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


def _float8_table(name: str) -> tuple[np.ndarray, int, float, bool]:
    """(the values of the codes 0 to the largest finite one, increasing; that code; the midpoint
    between the largest finite value and the next step above it; whether the midpoint rounds up
    to an overflow, its tie going to the odd largest code's even neighbour)."""
    values = dtypes.float8_values(name)
    top = int(np.flatnonzero(np.isfinite(values[:128]))[-1])
    step = values[top] - values[top - 1]
    return values[:top + 1], top, values[top] + step / 2, top % 2 == 1


_NARROW = {n: _float8_table(n) for n in dtypes.FLOAT8_DTYPES}


def to_float8(array: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Round ``array`` (storage of ``src``) to float8 bit patterns (``uint8``): to nearest, ties
    to even, subnormals kept, NaN to the all-ones NaN of its sign (S.1111.111, S.11111.11), as
    torch converts. A magnitude beyond what rounding reaches (above 464 for float8_e4m3fn, from
    61440 for float8_e5m2), and an infinity for float8_e4m3fn (it has none), is refused:
    ``InvalidInput`` naming the first such value (spec/codecs/cast.md, "float8")."""
    x = dtypes.bfloat16_to_float32(array) if src == "bfloat16" else np.asarray(array, dtypes.storage_dtype(src))
    with np.errstate(invalid="ignore"):  # a NaN converts to a NaN: its payload is not needed here
        x = np.asarray(x, np.float64).reshape(-1)  # exact: every float32 is a float64
    table, top, midpoint, tie_overflows = _NARROW[dst]
    a = np.abs(x)
    nan = np.isnan(x)
    inf = np.isinf(x)
    over = (a > midpoint) | (a == midpoint) & tie_overflows
    refused = over & ~inf if dst == "float8_e5m2" else over
    if refused.any():
        i = int(np.flatnonzero(refused)[0])
        raise InvalidInput(f"nnar.cast to {dst}: expected values of magnitude {'below' if tie_overflows else 'at most'} "
                           f"{midpoint:g} (they round to at most {table[top]:g}, the largest {dst})"
                           f"{'' if dst == 'float8_e5m2' else ' and no infinity (it has none)'}, found {float(x[i])!r} at "
                           f"element {i} (C order); scale the tensor first (torch would give "
                           f"{'±inf' if dst == 'float8_e5m2' else '±448'})")
    a = np.where(nan | over, 0.0, a)
    hi = np.minimum(np.searchsorted(table, a, side="left"), top)  # table[hi - 1] < a <= table[hi]
    lo = np.maximum(hi - 1, 0)
    twice, mid = 2 * a, table[lo] + table[hi]  # exact in float64: compares a with the midpoint
    code = np.where(twice > mid, hi, np.where(twice < mid, lo, np.where(hi % 2 == 0, hi, lo))).astype(np.uint8)
    code[nan] = 0x7F
    if dst == "float8_e5m2":
        code[inf] = 0x7C
    sign = np.signbit(x).astype(np.uint8) << 7  # -0.0 and negatives that round to zero keep their sign
    return (code | sign).reshape(np.shape(array))


def _widen_float8(src: str, dst: str) -> np.ndarray:
    """Each of the 256 float8 bit patterns as ``dst`` storage: exact values; NaNs by step 3 (the
    trailing significand followed by zero bits, sign kept)."""
    values = dtypes.float8_values(src)
    out = np.array(values.astype(np.float32) if dst != "float16" else values.astype(np.float16))
    if dst == "bfloat16":
        out = (out.view(np.uint32) >> 16).astype(np.uint16)  # exact: 3 significand bits at most
    codes = np.arange(256, dtype=np.uint64)
    nan = np.isnan(values)
    mant = dtypes.FLOAT8_LAYOUT[src][1]
    dw, dm = LAYOUT[dst]
    sign = (codes[nan] >> np.uint64(7)) << np.uint64(dw - 1)
    payload = (codes[nan] & np.uint64((1 << mant) - 1)) << np.uint64(dm - mant)
    out = out.view(UINT[dw])
    out[nan] = (sign | np.uint64(((1 << (dw - 1 - dm)) - 1) << dm) | payload).astype(UINT[dw])
    return out.view(dtypes.storage_dtype(dst))


_WIDE = {(f8, d): _widen_float8(f8, d) for f8 in dtypes.FLOAT8_DTYPES for d in ("float32", "float16", "bfloat16")}


@register
class Cast(ArrayArrayCodec):
    codec_id = "nnar.cast"
    lossless = False  # narrowing rounds; widening is exact

    def __init__(self, dtype: str):
        if not isinstance(dtype, str) or dtype not in dtypes.FLOAT_DTYPES + dtypes.FLOAT8_DTYPES:
            raise CodecDataError(f"nnar.cast: dtype: expected one of "
                                 f"{', '.join(dtypes.FLOAT_DTYPES + dtypes.FLOAT8_DTYPES)}, found {dtype!r}")
        self.dtype = dtype

    def get_config(self):
        return {"dtype": self.dtype}

    def _check(self, spec: TensorSpec) -> None:
        if (spec.dtype, self.dtype) not in ALL_PAIRS:
            raise CodecDataError(f"nnar.cast: cannot store {spec.dtype} as {self.dtype}; expected one of "
                                 + ", ".join(f"{a}→{b}" for a, b in sorted(ALL_PAIRS)))

    def encoded_spec(self, spec, params):
        self._check(spec)
        return TensorSpec(self.dtype, spec.shape)

    def encode(self, array, spec):
        self._check(spec)
        return convert(array, spec.dtype, self.dtype), {}

    def decode(self, array, spec, params):
        self._check(spec)
        return convert(array, self.dtype, spec.dtype).reshape(spec.shape)
