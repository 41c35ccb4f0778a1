"""Deltas between two streams of equal length (spec/patch.md §5), and how a delta is stored.

A delta segment rebuilds a result stream R from the base's stream B and a delta D:

- ``xor``: R = B xor D. A weight that moved a little keeps its sign, exponent and high mantissa
  bits, so on byte planes the high planes of D are almost all zero.
- ``add``: R = B + D, element-wise modulo 2^(8·width) on little-endian unsigned integers of
  ``width`` bytes. A quantization index that moved by one step gives D = ±1 where xor would
  give a run of ones.

D is then stored as a tensor of the patch (dtype uint{8·width}) by the ordinary pipeline, whose
candidates here include sparse storage: after a fine-tune that left most indices alone, D is
mostly zeros and only the changed elements are stored.
"""

from __future__ import annotations

import numpy as np

from .. import pipeline as P
from .. import planner
from ..codecs.abc import TensorSpec
from ..codecs.byteplanes import BytePlanes
from ..codecs.raw import Raw
from ..codecs.sparse import Sparse
from ..errors import CodecDataError

UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
DTYPE_NAME = {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}


def _elements(stream, width: int, what: str) -> np.ndarray:
    raw = np.frombuffer(stream, np.uint8)
    if raw.size % width:
        raise CodecDataError(f"{what}: {raw.size} bytes is not a whole number of {width}-byte elements")
    return raw.view(np.dtype(UINT[width]).newbyteorder("<"))


def make(result, base, op: str, width: int) -> np.ndarray:
    """The delta D that turns stream ``base`` into stream ``result`` (native-endian uintW array)."""
    r, b = _elements(result, width, "result stream"), _elements(base, width, "base stream")
    d = np.bitwise_xor(r, b) if op == "xor" else np.subtract(r, b)  # unsigned: wraps modulo 2^(8·width)
    return d.astype(UINT[width], copy=False)


def apply(base, delta: np.ndarray, op: str, width: int) -> bytes:
    """The result stream: ``base`` with ``delta`` (an array of uintW, any byte order) applied."""
    b = _elements(base, width, "base stream")
    d = np.asarray(delta).astype(np.dtype(UINT[width]).newbyteorder("<"), copy=False)
    if d.shape != b.shape:
        raise CodecDataError(f"delta: expected {b.size} elements of {width} bytes, found {d.size}")
    out = np.bitwise_xor(b, d) if op == "xor" else np.add(b, d)
    return out.astype(np.dtype(UINT[width]).newbyteorder("<"), copy=False).tobytes()


def candidates(spec: TensorSpec, density: float, level: int) -> list[P.Pipeline]:
    """Pipelines worth trying for a delta: the lossless ones, and sparse ones when few elements
    changed (positions as a bitmask, or as 8-bit gaps when changes are rarer still)."""
    out = planner.lossless_candidates(spec, level)
    if spec.nbytes >= planner.SMALL_TENSOR_BYTES and density < 0.5:
        chains = planner.stream_chains(level)
        values = BytePlanes() if spec.storage_dtype.itemsize > 1 else Raw()
        out.append(P.Pipeline(array_bytes=Sparse("bitmask", values), stream_chains=chains))
        if density < 0.05:
            out.append(P.Pipeline(array_bytes=Sparse("gaps", values, 8), stream_chains=chains))
    return out


def encode(delta: np.ndarray, level: int) -> P.EncodedTensor:
    """Store a delta as small as the pipeline can."""
    spec = TensorSpec(DTYPE_NAME[delta.dtype.itemsize], delta.shape)
    density = float(np.count_nonzero(delta)) / delta.size if delta.size else 0.0
    return planner.encode(np.ascontiguousarray(delta), spec, candidates(spec, density, level))
