"""Element types an nnar archive can hold, by the names the spec uses.

bfloat16, float8_e4m3fn and float8_e5m2 have no numpy dtype; nnar holds them as unsigned bit
patterns of their width (``uint16``, ``uint8``) and carries the name beside the array. An
``ml_dtypes`` array of one of them (what onnx and jax hand out) is accepted on input and viewed
as those bit patterns. The float8 dtypes are stored bit for bit only: they are not in
``FLOAT_DTYPES`` (no lossy mode, pruning or byte-plane rotation applies to them); ``nnar.cast``
may narrow to them (spec/codecs/cast.md).
"""

from __future__ import annotations

import numpy as np

from .errors import UnsupportedDtype

# name in the spec -> numpy storage dtype (always little-endian on disk)
_STORAGE = {
    "bool": np.dtype("?"),
    "int8": np.dtype("<i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "uint64": np.dtype("<u8"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "float8_e4m3fn": np.dtype("<u1"),  # since format 1.4
    "float8_e5m2": np.dtype("<u1"),  # since format 1.4
}

DTYPE_NAMES = tuple(_STORAGE)
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
FLOAT8_DTYPES = ("float8_e4m3fn", "float8_e5m2")
#: dtypes numpy lacks, held as unsigned bit patterns of their width (the names are ml_dtypes' too)
BIT_PATTERN_DTYPES = ("bfloat16", *FLOAT8_DTYPES)


def storage_dtype(name: str) -> np.dtype:
    """The little-endian numpy dtype that holds elements of spec dtype ``name``."""
    try:
        return _STORAGE[name]
    except (KeyError, TypeError):
        raise UnsupportedDtype(
            f"unsupported dtype: expected one of {', '.join(DTYPE_NAMES)}, found {name!r}"
        ) from None


def itemsize(name: str) -> int:
    return storage_dtype(name).itemsize


def dtype_name_of(array: np.ndarray) -> str:
    """The spec name of a numpy array's dtype (bfloat16 and float8 recognised by name, from
    ml_dtypes)."""
    dt = array.dtype
    if dt.name in BIT_PATTERN_DTYPES:
        return dt.name
    if dt.kind in "biuf":
        name = "bool" if dt.kind == "b" else dt.newbyteorder("=").name
        if name in _STORAGE and name not in BIT_PATTERN_DTYPES:
            return name
    raise UnsupportedDtype(
        f"unsupported dtype: expected one of {', '.join(DTYPE_NAMES)}, found numpy {dt}"
    )


def to_storage(array: np.ndarray, name: str) -> np.ndarray:
    """A C-contiguous little-endian array holding the elements of ``array`` bit for bit."""
    if name in BIT_PATTERN_DTYPES and array.dtype.name == name:  # an ml_dtypes array: its bits
        array = array.view(_STORAGE[name])
    return np.require(array, dtype=storage_dtype(name), requirements="C")  # keeps 0-d arrays 0-d


def bit_patterns(array: np.ndarray) -> np.ndarray:
    """The elements' bit patterns as unsigned integers of the same width (flattened): the
    identity of a value, where -0.0 differs from 0.0 and each NaN payload from the others."""
    flat = np.ascontiguousarray(array).reshape(-1)
    return flat.view(f"u{flat.itemsize}")


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns to float32 exactly (every bfloat16 is a float32)."""
    wide = np.array(bits, dtype=np.uint32)  # an array even when 0-d (an operator would give a scalar)
    wide <<= 16
    return wide.view(np.float32)


def float32_to_bfloat16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 bit patterns, to nearest, ties to even (NaN stays NaN:
    its payload is truncated and the quiet bit set, so rounding never turns it into infinity)."""
    values = np.asarray(values, dtype="<f4")
    bits = np.ascontiguousarray(values).reshape(-1).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(values.reshape(-1))
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded.reshape(values.shape)


#: (exponent bits, trailing significand bits, bias) of the float8 dtypes (FORMAT.md §5.2.2)
FLOAT8_LAYOUT = {"float8_e4m3fn": (4, 3, 7), "float8_e5m2": (5, 2, 15)}


def float8_values(name: str) -> np.ndarray:
    """The value of each of the 256 bit patterns of float8 dtype ``name``, as float64 (NaN where
    the pattern is a NaN), computed from the definition in FORMAT.md §5.2.2:
    float8_e4m3fn has no infinities and one NaN per sign (S.1111.111), its other patterns with
    exponent 1111 are normal numbers (up to 448); float8_e5m2 is the upper byte of a binary16,
    with its infinities (S.11111.00) and NaNs (S.11111.xx, xx ≠ 00)."""
    e_bits, m_bits, bias = FLOAT8_LAYOUT[name]
    bits = np.arange(256)
    sign = np.where(bits >> 7, -1.0, 1.0)
    e = (bits >> m_bits) & ((1 << e_bits) - 1)
    m = bits & ((1 << m_bits) - 1)
    # subnormals (e == 0) have the exponent of e == 1 and no implicit leading 1
    value = np.where(e == 0, m / (1 << m_bits) * 2.0 ** (1 - bias),
                     (1 + m / (1 << m_bits)) * 2.0 ** (e - bias))
    value = sign * value
    top = (1 << e_bits) - 1
    if name == "float8_e4m3fn":
        value[(e == top) & (m == (1 << m_bits) - 1)] = np.nan
    else:
        value[(e == top) & (m == 0)] = sign[(e == top) & (m == 0)] * np.inf
        value[(e == top) & (m != 0)] = np.nan
    return value
