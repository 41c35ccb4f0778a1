"""Quantized tensors read as they are stored, not expanded: the small form a runtime can keep
(``nnar unpack --keep-quantized``).

A record whose pipeline is one of these yields a :class:`Quantized` form instead of an array:

- ``nnar.affine`` (uniform intN, one scale and zero point per group): ``kind="affine"``;
- ``nnar.codebook`` (k-means weight sharing, ternary, binary): ``kind="codebook"``;
- ``nnar.sparse`` around either: the positions are expanded, pruned elements get the code
  that decodes to exactly zero (the zero point; a table entry of +0.0, added if missing);
- ``nnar.cast`` to float16/bfloat16 over a lossless stage: ``kind="cast"``.

Every form decodes to the very values nnar's own decoder gives (:meth:`Quantized.decode` is
that arithmetic, and the tests hold it to it). Anything else comes out as the decoded array.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from . import dtypes
from . import pipeline as P
from .archive import StreamReader, TensorInfo, _decode, _member, _record_infos
from .codecs import packing
from .codecs.affine import Affine
from .codecs.cast import Cast
from .codecs.codebook import Codebook
from .codecs.sparse import PREFIX, Sparse


@dataclasses.dataclass
class Quantized:
    """A tensor in its stored, quantized form. ``values`` has the tensor's shape.

    - affine: ``values`` uint8 codes, ``scale`` float32[groups], ``zero_point`` uint8[groups],
      ``group_size``: value = (code − zero_point[g]) × scale[g], g = flat index // group_size;
    - codebook: ``values`` uint8 indices, ``table`` of the tensor's storage dtype;
    - cast: ``values`` float16 (or bfloat16 as uint16 bits), widened exactly to ``dtype``.
    """

    kind: str
    dtype: str  # the tensor's own dtype
    bits: int
    values: np.ndarray
    table: np.ndarray | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    group_size: int = 0
    cast_from: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def decode(self) -> np.ndarray:
        """The values nnar's decoder gives for this tensor."""
        if self.kind == "codebook":
            return self.table[self.values.astype(np.intp)]
        if self.kind == "affine":
            n, G = self.values.size, self.group_size
            g = np.arange(n) // G
            q = self.values.reshape(-1)
            out = (q.astype(np.float32) - self.zero_point[g].astype(np.float32)) * self.scale[g]
            return out.astype(np.float32).reshape(self.shape)
        from .codecs.cast import convert
        return convert(self.values, self.cast_from, self.dtype)


def forms(reader: StreamReader, infos: list[TensorInfo], progress=None) -> Iterator[tuple]:
    """Like iterating ``reader``, but yield ``(name, Quantized or array, dtype)``; aliases come
    as the same object as their target. Appends each info to ``infos``."""
    last: dict[str, object] = {}
    done = 0
    for item in reader._records():
        if item[0] == "TENS":
            _, rec, segments = item
            form = _form(reader, rec, segments) if len(rec.members) == 1 else None
            array = None
            if form is None or reader.verify:
                array = _decode(reader._reader, rec, segments, reader.verify)
            last = {}
            for info, m in zip(_record_infos(rec), rec.members):
                obj = form if form is not None else _member(rec, array, m)
                last[m.name] = (info, obj)
                infos.append(info)
                done += 1
                if progress:
                    progress(info.name, done, None)
                yield m.name, obj, info.dtype
        elif item[0] == "ALIS":
            for alias, target in item[1]:
                info, obj = last[target]
                infos.append(info.as_alias(alias))
                yield alias, obj, info.dtype


def _form(reader: StreamReader, rec, segments) -> Quantized | None:
    where = f"tensor {rec.names[0]!r}"
    if rec.spec.dtype not in dtypes.FLOAT_DTYPES:
        return None
    aa, (ab, params), ab_spec, streams = P.decode_streams(rec.spec, rec.pipeline, segments, reader._reader.limits,
                                                          where, reader._reader.strict)
    if not aa and isinstance(ab, (Affine, Codebook)):
        return _plain(ab, params, ab_spec, streams)
    if not aa and isinstance(ab, Sparse) and isinstance(ab.inner, (Affine, Codebook)):
        return _sparse(ab, params, ab_spec, streams)
    if len(aa) == 1 and isinstance(aa[0][0], Cast) and ab.lossless:
        codec, _, in_spec = aa[0]
        half = P._run(ab.decode, where, streams, ab_spec, params)
        return Quantized("cast", in_spec.dtype, 16, half, cast_from=codec.dtype)
    return None


def _codes(data, count: int, bits: int) -> np.ndarray:
    """Packed indices as one uint8 per element (already checked by the codec's decode)."""
    return packing.expand(np.frombuffer(data, np.uint8), np.arange(1 << packing.slot_bits(bits), dtype=np.uint8),
                          count, bits)


def _plain(ab, params, spec, streams) -> Quantized:
    ab.decode(streams, spec, params)  # every check the codec makes on stored data, made once
    codes = _codes(streams["indices"], spec.size, ab.bits).reshape(spec.shape)
    if isinstance(ab, Codebook):
        table = np.frombuffer(streams["codebook"], spec.storage_dtype).copy()
        return Quantized("codebook", spec.dtype, ab.bits, codes, table=table)
    scale = np.frombuffer(streams["scales"], "<f4").astype(np.float32)
    zp = np.frombuffer(streams["zero_points"], np.uint8).copy()
    return Quantized("affine", spec.dtype, ab.bits, codes, scale=scale, zero_point=zp,
                     group_size=min(ab.group_size, max(spec.size, 1)))


def _sparse(ab: Sparse, params, spec, streams) -> Quantized | None:
    dense = ab.decode(streams, spec, params)  # checks everything; gives the mask of stored values
    count, _, _, inner_params = ab._counts(spec, params)
    inner_streams = {k[len(PREFIX):]: v for k, v in streams.items() if k.startswith(PREFIX)}
    inner = _plain(ab.inner, inner_params, ab._inner_spec(spec, count), inner_streams)
    # where the stored values went: the elements whose bit pattern is not all zero, plus the
    # stored ones that decode to zero; recompute the mask as the decoder does
    mask = _mask(ab, params, spec, streams)
    codes = np.empty(spec.size, np.uint8)
    if inner.kind == "affine":
        if inner.scale.size != 1:
            return None  # groups of the survivors do not map onto the dense tensor's elements
        codes[:] = inner.zero_point[0]
        codes[mask] = inner.values.reshape(-1)
        return Quantized("affine", spec.dtype, inner.bits, codes.reshape(spec.shape), scale=inner.scale,
                         zero_point=inner.zero_point, group_size=max(spec.size, 1))
    table = inner.table
    zero = np.flatnonzero(dtypes.bit_patterns(table) == 0)
    if zero.size:
        z = int(zero[0])
    elif table.size < 256:
        table = np.concatenate([table, np.zeros(1, table.dtype)])
        z = table.size - 1
    else:
        return None
    codes[:] = z
    codes[mask] = inner.values.reshape(-1)
    del dense
    bits = max(inner.bits, int(table.size - 1).bit_length())
    return Quantized("codebook", spec.dtype, bits, codes.reshape(spec.shape), table=table)


def _mask(ab: Sparse, params, spec, streams) -> np.ndarray:
    count, invert, listed, _ = ab._counts(spec, params)
    n = spec.size
    if ab.positions == "bitmask":
        return ab._bitmask(streams["positions"], n, count)
    mask = np.zeros(n, bool)
    mask[ab._gaps(streams["positions"], n, listed)] = True
    return ~mask if invert else mask
