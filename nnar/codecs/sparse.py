"""``nnar.sparse``: store only the nonzero elements and where they are (spec/codecs/sparse.md).

Positions are a stream of their own: a bitmask, or the gaps between listed positions in
``gap_bits``-bit symbols with a filler symbol for gaps that overflow (Han et al.: 5 bits for
fully connected layers, 8 for convolutions). When most elements survive, the zeros are listed
instead (``invert``), so positions cost about H(density) bits per element at any density once
entropy coded. The surviving values are encoded by a nested array→bytes codec (raw, byte planes,
a codebook, affine), whose streams are stored as ``values.<name>``.

"Zero" means all bits zero: -0.0 is a survivor, so sparse storage of any array is lossless.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from . import get_codec_class, register
from .. import dtypes
from .abc import ArrayBytesCodec, Codec, TensorSpec, param
from ..errors import CodecDataError, UnsupportedCodec

POSITIONS = ("bitmask", "gaps")
#: gap symbols decoded at a time (a multiple of 8, so a chunk is whole bytes for any width)
GAP_CHUNK = 1 << 20
PREFIX = "values."


def inner_streams(streams: Mapping[str, Any]) -> dict[str, Any]:
    """The nested codec's streams, without their ``values.`` prefix."""
    return {k[len(PREFIX):]: v for k, v in streams.items() if k.startswith(PREFIX)}


def pack_symbols(symbols: np.ndarray, width: int) -> bytes:
    """``width``-bit symbols, packed LSB first into a continuous bit stream."""
    if width == 8:
        return symbols.astype(np.uint8).tobytes()
    bits = (symbols[:, None].astype(np.uint8) >> np.arange(width, dtype=np.uint8)) & 1
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack_symbols(data, width: int) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    if width == 8:
        return raw
    bits = np.unpackbits(raw, bitorder="little")
    usable = bits.size // width * width
    weights = (1 << np.arange(width, dtype=np.uint8)).astype(np.uint8)
    return (bits[:usable].reshape(-1, width) * weights).sum(axis=1, dtype=np.uint8)


@register
class Sparse(ArrayBytesCodec):
    codec_id = "nnar.sparse"
    param_keys = frozenset({"count", "invert", "values"})

    def __init__(self, positions: str, values: Mapping[str, Any], gap_bits: int | None = None):
        if positions not in POSITIONS:
            raise CodecDataError(f"nnar.sparse: positions: expected one of {', '.join(POSITIONS)}, found {positions!r}")
        if positions == "gaps":
            if not isinstance(gap_bits, int) or isinstance(gap_bits, bool) or not 1 <= gap_bits <= 8:
                raise CodecDataError(f"nnar.sparse: gap_bits: expected an integer in [1, 8], found {gap_bits!r}")
        elif gap_bits is not None:
            raise CodecDataError("nnar.sparse: gap_bits: expected none with bitmask positions, found one")
        self.positions, self.gap_bits = positions, gap_bits
        self.inner = values if isinstance(values, Codec) else self._inner_from(values)
        if not isinstance(self.inner, ArrayBytesCodec) or isinstance(self.inner, Sparse):
            raise CodecDataError(f"nnar.sparse: values: expected an array-bytes codec other than nnar.sparse, found "
                                 f"{self.inner.codec_id} ({self.inner.kind})")

    @classmethod
    def from_config(cls, config):
        if isinstance(config, Mapping) and "gap_bits" in config and config.get("positions") == "bitmask":
            raise CodecDataError("nnar.sparse: gap_bits: expected no such key with bitmask positions, found one")
        return super().from_config(config)

    @staticmethod
    def _inner_from(stage: object) -> Codec:
        if not isinstance(stage, Mapping) or set(stage) != {"codec", "config"}:
            raise CodecDataError(f"nnar.sparse: values: expected a map with keys codec and config, found {stage!r:.100}")
        try:
            cls = get_codec_class(stage["codec"])
        except UnsupportedCodec as e:  # the tensor is unreadable by this reader, not corrupt
            raise UnsupportedCodec(f"nnar.sparse: values: {e.message}") from None
        # checked before its config is read: a nested sparse stage could nest again, without end
        if not issubclass(cls, ArrayBytesCodec) or issubclass(cls, Sparse):
            raise CodecDataError(f"nnar.sparse: values: expected an array-bytes codec other than nnar.sparse, "
                                 f"found {cls.codec_id} ({cls.kind})")
        return cls.from_config(stage["config"])

    def get_config(self):
        cfg = {"positions": self.positions, "values": {"codec": self.inner.codec_id, "config": self.inner.get_config()}}
        if self.gap_bits is not None:
            cfg["gap_bits"] = self.gap_bits
        return cfg

    def __hash__(self):
        return hash((self.codec_id, self.positions, self.gap_bits, self.inner))

    def unknown_params(self, params):
        # the nested codec's params are params too: unknown keys there follow FORMAT.md §10 as
        # at the top (spec/codecs/sparse.md, decoding step 2)
        inner = params.get("values")
        nested = [("values", *k) for k in self.inner.unknown_params(inner)] if isinstance(inner, dict) else []
        return sorted(super().unknown_params(params) + nested)

    # -- what the params say ----------------------------------------------------------------
    def _counts(self, spec: TensorSpec, params) -> tuple[int, bool, int, Mapping]:
        """(stored values, invert, listed positions, inner params), checked against ``spec``."""
        count = param(self, params, "count", int)
        invert = param(self, params, "invert", bool)
        inner = param(self, params, "values", dict)
        if not 0 <= count <= spec.size:
            raise CodecDataError(f"nnar.sparse: count: expected 0 to {spec.size} stored values, found {count}")
        if invert and self.positions == "bitmask":
            raise CodecDataError("nnar.sparse: invert: expected false with bitmask positions, found true")
        unknown = self.inner.unknown_params(inner)
        if unknown:  # the pipeline drops them first where FORMAT.md §10 says to ignore them
            raise CodecDataError(f"nnar.sparse: values params: {self.inner.codec_id} defines no "
                                 f"{[k[0] for k in unknown]}")
        return count, invert, spec.size - count if invert else count, inner

    def _inner_spec(self, spec, count):
        return TensorSpec(spec.dtype, (count,))

    def stream_names(self, spec, params):
        count, _, _, inner = self._counts(spec, params)
        names = self.inner.stream_names(self._inner_spec(spec, count), inner)
        return ("positions", *(PREFIX + n for n in names))

    def stream_lengths(self, spec, params):
        count, _, _, inner = self._counts(spec, params)
        out = {PREFIX + k: v for k, v in self.inner.stream_lengths(self._inner_spec(spec, count), inner).items()}
        if self.positions == "bitmask":
            out["positions"] = -(-spec.size // 8)
        return out

    def stream_bounds(self, spec, params):
        count, _, listed, inner = self._counts(spec, params)
        out = {PREFIX + k: v for k, v in self.inner.stream_bounds(self._inner_spec(spec, count), inner).items()}
        if self.positions == "gaps":
            cap = (1 << self.gap_bits) - 1
            out["positions"] = -(-(listed + spec.size // cap) * self.gap_bits // 8)
        return out

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, array, spec):
        bits = dtypes.bit_patterns(array)
        survivors = bits != 0
        count = int(np.count_nonzero(survivors))
        invert = self.positions == "gaps" and 2 * count > bits.size
        listed = np.flatnonzero(~survivors if invert else survivors)
        if self.positions == "bitmask":
            positions = np.packbits(survivors, bitorder="little").tobytes()
        else:
            positions = pack_symbols(self.gap_symbols(listed), self.gap_bits)
        values = np.ascontiguousarray(array).reshape(-1)[survivors]
        streams, inner_params = self.inner.encode(values, self._inner_spec(spec, count))
        out = {"positions": positions, **{PREFIX + k: v for k, v in streams.items()}}
        return out, {"count": count, "invert": invert, "values": inner_params}

    def gap_symbols(self, listed: np.ndarray) -> np.ndarray:
        """Gap before each listed position, as (gap // cap) fillers then gap % cap."""
        cap = (1 << self.gap_bits) - 1
        gaps = np.diff(listed, prepend=-1) - 1
        fillers = gaps // cap
        out = np.full(listed.size + int(fillers.sum()), cap, np.uint8)
        out[np.cumsum(fillers + 1) - 1] = gaps % cap
        return out

    # -- decoding ---------------------------------------------------------------------------
    def mask(self, streams, spec, params) -> np.ndarray:
        """Which elements are stored (True) and which are zero, from the positions stream,
        checked (``nnar.quantized`` reads it too, to keep the stored values as they are)."""
        count, invert, listed, _ = self._counts(spec, params)
        n = spec.size
        if self.positions == "bitmask":
            return self._bitmask(streams["positions"], n, count)
        mask = self._gaps(streams["positions"], n, listed)
        return np.logical_not(mask, out=mask) if invert else mask

    def decode(self, streams, spec, params):
        count, _, _, inner = self._counts(spec, params)
        n = spec.size
        mask = self.mask(streams, spec, params)
        values = self.inner.decode(inner_streams(streams), self._inner_spec(spec, count), inner)
        out = np.zeros(n, spec.storage_dtype)
        out[mask] = values.reshape(-1)
        return out.reshape(spec.shape)

    def _bitmask(self, data, n: int, count: int) -> np.ndarray:
        raw = np.frombuffer(data, np.uint8)
        if raw.size != -(-n // 8):
            raise CodecDataError(f"nnar.sparse: positions: expected a {-(-n // 8)}-byte bitmask, found {raw.size} bytes")
        bits = np.unpackbits(raw, bitorder="little")
        if bits[n:].any():
            raise CodecDataError("nnar.sparse: positions: expected zero padding bits after the bitmask, found ones")
        mask = bits[:n].view(bool)
        found = int(np.count_nonzero(mask))
        if found != count:
            raise CodecDataError(f"nnar.sparse: positions: the bitmask marks {found} elements, expected count {count}")
        return mask

    def _gaps(self, data, n: int, listed: int) -> np.ndarray:
        """The mask of the listed positions, from the gap stream; checks every byte of it.

        The stream is read in chunks of ``GAP_CHUNK`` symbols, each chunk's positions written
        into the mask at once: memory is the mask (one byte per element) and a few bytes per
        symbol of one chunk, however many fillers the stream holds."""
        width, cap = self.gap_bits, (1 << self.gap_bits) - 1
        raw = np.frombuffer(data, np.uint8)
        length = raw.size
        mask = np.zeros(n, bool)
        found, base, used = 0, 0, 0  # listed positions found; position reached; symbols read
        chunk_bytes = GAP_CHUNK * width // 8
        for start in range(0, length, chunk_bytes):
            symbols = unpack_symbols(raw[start:start + chunk_bytes], width)
            ends = np.flatnonzero(symbols != cap)
            if found + ends.size >= listed:  # the last listed position is in this chunk
                ends = ends[:listed - found]
                symbols = symbols[:int(ends[-1]) + 1] if ends.size else symbols[:0]
            # each symbol advances cap (a filler) or its value + 1 (a listed position)
            pos = np.cumsum(np.where(symbols == cap, cap, symbols.astype(np.int64) + 1))
            pos += base - 1
            if symbols.size:
                base = int(pos[-1]) + 1
            where = pos[ends]
            if where.size and where[-1] >= n:
                raise CodecDataError(f"nnar.sparse: positions: a gap reaches position {int(where[-1])}, past the "
                                     f"{n} elements of the tensor")
            mask[where] = True
            found += ends.size
            used += symbols.size
            if found == listed:
                break
        if found < listed:
            raise CodecDataError(f"nnar.sparse: positions: expected {listed} listed positions, the gap stream "
                                 f"holds {found}")
        if listed == 0:
            used = 0
        if -(-used * width // 8) != length:
            raise CodecDataError(f"nnar.sparse: positions: {listed} positions end at symbol {used}, so expected "
                                 f"{-(-used * width // 8)} bytes, found {length}")
        if width != 8 and used * width < 8 * length:
            tail = np.unpackbits(raw[-1:], bitorder="little")[used * width - 8 * (length - 1):]
            if tail.any():
                raise CodecDataError("nnar.sparse: positions: expected zero padding bits after the last gap, found ones")
        return mask
