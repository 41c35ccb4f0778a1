"""``nnar.codebook``: weight sharing, every element an index into a table of values
(spec/codecs/codebook.md).

The format only says how to decode: ``value = codebook[index]``. Which values go in the table
is the encoder's business (k-means, a ternary or binary scale, the distinct values of a tensor),
chosen by the *quantizer* a codec instance is given with :meth:`Codebook.using`; it is not
stored, because decoding never needs it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import packing, register
from .abc import ArrayBytesCodec, as_bytes, expect_streams, param
from .. import dtypes
from ..errors import CodecDataError

#: (values, 2**bits) → sorted codebook, or (sorted codebook, uint8 index per value) when the
#: quantizer's assignment is not simply the nearest entry (entropy-constrained quantization)
Quantizer = Callable[[np.ndarray, int], "np.ndarray | tuple[np.ndarray, np.ndarray]"]


def nearest(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of a sorted codebook, exactly (ties to the lower index)."""
    from ..quant import kmeans  # encode side only: decoding never imports the quantizers
    cb = np.asarray(codebook)
    if cb.size > 1 and not (cb[1:] > cb[:-1]).all():
        raise ValueError("a quantizer must return a sorted codebook of distinct values")
    return kmeans.assign(values, cb)


@register
class Codebook(ArrayBytesCodec):
    codec_id = "nnar.codebook"
    lossless = False
    param_keys = frozenset({"size"})

    def __init__(self, bits: int):
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
            raise CodecDataError(f"nnar.codebook: bits: expected an integer in [1, 8], found {bits!r}")
        self.bits = bits
        self.quantizer: Quantizer | None = None

    def get_config(self):
        return {"bits": self.bits}

    def using(self, quantizer: Quantizer) -> "Codebook":
        """This codec, choosing its table with ``quantizer`` when encoding."""
        c = Codebook(self.bits)
        c.quantizer = quantizer
        return c

    def _size(self, params) -> int:
        size = param(self, params, "size", int)
        if not 1 <= size <= 1 << self.bits:
            raise CodecDataError(f"nnar.codebook: size: expected 1 to {1 << self.bits} entries for {self.bits}-bit "
                                 f"indices, found {size}")
        return size

    def stream_names(self, spec, params):
        return ("codebook", "indices")

    def stream_lengths(self, spec, params):
        return {"codebook": self._size(params) * dtypes.itemsize(spec.dtype),
                "indices": packing.packed_length(spec.size, self.bits)}

    def encode(self, array, spec):
        flat = array.reshape(-1)
        indices = None
        if self.quantizer is not None:
            chosen = self.quantizer(flat, 1 << self.bits)
            if isinstance(chosen, tuple):  # the quantizer assigned the values itself
                chosen, indices = chosen
            table = np.asarray(chosen, dtype=array.dtype)
        else:  # exact: the tensor's own distinct bit patterns (-0.0 and each NaN kept as they are)
            bits = dtypes.bit_patterns(flat)
            distinct = np.unique(bits)
            if distinct.size > 1 << self.bits:
                raise ValueError(f"{distinct.size} distinct values do not fit {self.bits}-bit indices")
            table = distinct.view(array.dtype)
            indices = np.searchsorted(distinct, bits).astype(np.uint8)
        if table.size == 0:  # an empty tensor still stores a one-entry table: size >= 1 always
            table = np.zeros(1, array.dtype)
        if indices is None:
            indices = nearest(flat, table) if flat.size else np.zeros(0, np.uint8)
        streams = {"codebook": as_bytes(table), "indices": packing.pack(indices, self.bits)}
        return streams, {"size": int(table.size)}

    def decode(self, streams, spec, params):
        expect_streams(self, streams, self.stream_lengths(spec, params))
        size = self._size(params)
        table = np.frombuffer(streams["codebook"], spec.storage_dtype)
        packed = packing.check_packed(streams["indices"], spec.size, self.bits, size, self.codec_id, "indices")
        values = np.zeros(1 << packing.slot_bits(self.bits), spec.storage_dtype)
        values[:size] = table
        return packing.expand(packed, values, spec.size, self.bits).reshape(spec.shape)
