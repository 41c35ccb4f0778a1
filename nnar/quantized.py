"""Quantized tensors read as they are stored, not expanded: the small form a runtime can keep
(``nnar unpack --keep-quantized``).

A record whose pipeline is one of these yields a :class:`Quantized` form instead of an array:

- ``nnar.affine`` (uniform intN, one scale and zero point per group): ``kind="affine"``;
- ``nnar.codebook`` (k-means weight sharing, ternary, binary): ``kind="codebook"``;
- ``nnar.sparse`` around either: the positions are expanded, pruned elements get the code
  that decodes to exactly zero (the zero point; a table entry of +0.0, added if missing);
- ``nnar.cast`` to float16/bfloat16 over a lossless stage: ``kind="cast"``.

The forms hold exactly what is stored, so they describe the very values nnar's own decoder gives
(``spec/onnx.md`` has the arithmetic; the tests hold the ONNX recipes to it). Anything else
comes out as the decoded array.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

from . import dtypes
from . import pipeline as P
from .archive import StreamReader, TensorInfo
from .codecs import packing
from .codecs.affine import Affine
from .codecs.cast import Cast
from .codecs.codebook import Codebook
from .codecs.sparse import Sparse, inner_streams


@dataclasses.dataclass
class Quantized:
    """A tensor in its stored, quantized form. ``values`` has the tensor's shape.

    - affine: ``values`` uint8 codes, ``scale`` float32[groups], ``zero_point`` uint8[groups],
      ``group_size``: value = (code − zero_point[g]) × scale[g], g = flat index // group_size;
    - codebook: ``values`` uint8 indices, ``table`` of the tensor's storage dtype;
    - cast: ``values`` float16 (or bfloat16 as uint16 bits, float8 as uint8 bits), widened exactly
      to ``dtype``.

    ``expand()`` gives the tensor as nnar decodes it (for a writer that finds no small form).
    """

    kind: str
    dtype: str  # the tensor's own dtype
    bits: int
    values: np.ndarray
    expand: Callable[[], np.ndarray]
    table: np.ndarray | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    group_size: int = 0
    cast_from: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape


def forms(reader: StreamReader) -> Iterator[tuple[TensorInfo, object]]:
    """Like iterating ``reader``: ``(info, Quantized or array)`` per tensor, aliases included."""
    def read_record(rec, segments) -> list:
        form = _form(reader, rec, segments) if len(rec.members) == 1 else None
        if form is None:
            return reader.decode_record(rec, segments)
        if reader.verify:  # the digest is of the decoded array
            reader.decode_record(rec, segments)
        return [form]
    return reader.read_with(read_record)


def _form(reader: StreamReader, rec, segments) -> Quantized | None:
    if rec.spec.dtype not in dtypes.FLOAT_DTYPES:
        return None
    aa, (ab, params), ab_spec, streams = reader.decode_streams(rec, segments)
    where = f"tensor {rec.names[0]!r}"
    found = None  # P._run: stored data a codec rejects is a CodecDataError naming the tensor
    if not aa and isinstance(ab, (Affine, Codebook)):
        found = P._run(_plain, where, ab, params, ab_spec, streams)
    elif not aa and isinstance(ab, Sparse) and isinstance(ab.inner, (Affine, Codebook)):
        found = P._run(_sparse, where, ab, params, ab_spec, streams)
    elif len(aa) == 1 and isinstance(aa[0][0], Cast) and ab.lossless:
        codec, _, in_spec = aa[0]
        half = P._run(ab.decode, where, streams, ab_spec, params)
        found = dict(kind="cast", dtype=in_spec.dtype, bits=dtypes.itemsize(codec.dtype) * 8, values=half,
                     cast_from=codec.dtype)
    if found is None:
        return None
    return Quantized(**found, expand=lambda: reader.decode_record(rec, segments)[0])


def _codes(data, count: int, bits: int) -> np.ndarray:
    """Packed indices as one uint8 per element (already checked by the codec's decode)."""
    return packing.expand(np.frombuffer(data, np.uint8), np.arange(1 << packing.slot_bits(bits), dtype=np.uint8),
                          count, bits)


def _plain(ab, params, spec, streams) -> dict:
    ab.decode(streams, spec, params)  # every check the codec makes on stored data, made once
    codes = _codes(streams["indices"], spec.size, ab.bits).reshape(spec.shape)
    if isinstance(ab, Codebook):
        table = np.frombuffer(streams["codebook"], spec.storage_dtype).copy()
        return dict(kind="codebook", dtype=spec.dtype, bits=ab.bits, values=codes, table=table)
    scale = np.frombuffer(streams["scales"], "<f4").astype(np.float32)
    zp = np.frombuffer(streams["zero_points"], np.uint8).copy()
    return dict(kind="affine", dtype=spec.dtype, bits=ab.bits, values=codes, scale=scale, zero_point=zp,
                group_size=min(ab.group_size, max(spec.size, 1)))


def _sparse(ab: Sparse, params, spec, streams) -> dict | None:
    """Dense codes: the stored ones where the positions say, and the code of zero elsewhere."""
    mask = ab.mask(streams, spec, params)
    count, _, _, inner_params = ab._counts(spec, params)
    inner = _plain(ab.inner, inner_params, ab._inner_spec(spec, count), inner_streams(streams))
    codes = np.empty(spec.size, np.uint8)
    if inner["kind"] == "affine":
        if inner["scale"].size != 1:
            return None  # groups of the survivors do not map onto the dense tensor's elements
        codes[:] = inner["zero_point"][0]
        codes[mask] = inner["values"].reshape(-1)
        return dict(inner, values=codes.reshape(spec.shape), group_size=max(spec.size, 1))
    table = inner["table"]
    zero = np.flatnonzero(dtypes.bit_patterns(table) == 0)
    if zero.size:
        z = int(zero[0])
    elif table.size < 256:
        table = np.concatenate([table, np.zeros(1, table.dtype)])
        z = table.size - 1
    else:
        return None
    codes[:] = z
    codes[mask] = inner["values"].reshape(-1)
    bits = max(inner["bits"], int(table.size - 1).bit_length())
    return dict(inner, values=codes.reshape(spec.shape), table=table, bits=bits)
