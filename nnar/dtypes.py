"""Element types an nnar archive can hold, by the names the spec uses.

bfloat16 has no numpy dtype; nnar holds it as ``uint16`` bit patterns and carries the name
beside the array. An ``ml_dtypes.bfloat16`` array (what onnx and jax hand out) is accepted on
input and viewed as those bit patterns.
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
}

DTYPE_NAMES = tuple(_STORAGE)
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


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
    """The spec name of a numpy array's dtype (bfloat16 recognised by name, from ml_dtypes)."""
    dt = array.dtype
    if dt.name == "bfloat16":
        return "bfloat16"
    if dt.kind in "biuf":
        name = "bool" if dt.kind == "b" else dt.newbyteorder("=").name
        if name in _STORAGE and name != "bfloat16":
            return name
    raise UnsupportedDtype(
        f"unsupported dtype: expected one of {', '.join(DTYPE_NAMES)}, found numpy {dt}"
    )


def to_storage(array: np.ndarray, name: str) -> np.ndarray:
    """A C-contiguous little-endian array holding the elements of ``array`` bit for bit."""
    if name == "bfloat16" and array.dtype.name == "bfloat16":
        array = array.view(np.uint16)
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
