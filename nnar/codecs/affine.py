"""``nnar.affine``: uniform quantization, ``value = scale * (q - zero_point)`` per group of
consecutive elements (spec/codecs/affine.md).

One group is the whole tensor (per-tensor), a row of the leading axis (per output channel: a
torch Linear or Conv weight is laid out ``[out, ...]``), or a block of N elements, all expressed
as ``group_size``. The zero point is an integer, so 0.0 is stored exactly.
"""

from __future__ import annotations

import numpy as np

from . import packing, register
from .abc import ArrayBytesCodec, expect_streams
from ..errors import CodecDataError


def _grid(lo: np.ndarray, hi: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group: the smallest float32 scale and an integer zero point whose grid
    ``scale * (q - zp)``, q in [0, qmax], covers [lo, hi] (lo <= 0 <= hi), so that no value is
    clipped and every error is at most scale / 2."""
    step = (hi - lo) / qmax
    z = np.where(step > 0, -lo / np.where(step > 0, step, 1), 0)
    # a side with values needs at least one grid point beyond zero
    zmin = np.where(lo < 0, 1, 0)
    zmax = np.where(hi > 0, qmax - 1, qmax)
    if qmax == 1:  # one bit: two points; the grid is {0, scale} or {-scale, 0}
        zmin, zmax = np.where(hi >= -lo, 0, 1), np.where(hi >= -lo, 0, 1)
    best_scale = np.full(lo.shape, np.inf)
    best_zp = np.zeros(lo.shape)
    for cand in (np.floor(z), np.ceil(z)):
        zp = np.clip(cand, zmin, zmax)
        with np.errstate(divide="ignore", invalid="ignore"):
            need = np.maximum(np.where(qmax > zp, hi / (qmax - zp), 0), np.where(zp > 0, -lo / zp, 0))
        if qmax == 1:  # the side without a point is clipped to 0 (error <= scale / 2 by the choice)
            need = np.maximum(hi, -lo)
        better = need < best_scale
        best_scale = np.where(better, need, best_scale)
        best_zp = np.where(better, zp, best_zp)
    scale = best_scale.astype(np.float32)
    short = scale.astype(np.float64) < best_scale
    scale[short] = np.nextafter(scale[short], np.float32(np.inf))
    scale[scale == 0] = 1.0  # an all-zero group: any scale works; 1 keeps decoding finite
    return scale, best_zp


@register
class Affine(ArrayBytesCodec):
    codec_id = "nnar.affine"
    lossless = False

    def __init__(self, bits: int, group_size: int):
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
            raise CodecDataError(f"nnar.affine: bits: expected an integer in [1, 8], found {bits!r}")
        if not isinstance(group_size, int) or isinstance(group_size, bool) or not 1 <= group_size < 1 << 63:
            raise CodecDataError(f"nnar.affine: group_size: expected an integer >= 1, found {group_size!r}")
        self.bits, self.group_size = bits, group_size

    def get_config(self):
        return {"bits": self.bits, "group_size": self.group_size}

    def _check_spec(self, spec):
        if spec.dtype != "float32":
            raise CodecDataError(f"nnar.affine: expected a float32 array, found {spec.dtype}")

    def groups(self, count: int) -> int:
        return -(-count // self.group_size)

    def stream_names(self, spec, params):
        return ("scales", "zero_points", "indices")

    def stream_lengths(self, spec, params):
        self._check_spec(spec)
        g = self.groups(spec.size)
        return {"scales": 4 * g, "zero_points": g, "indices": packing.packed_length(spec.size, self.bits)}

    def encode(self, array, spec):
        self._check_spec(spec)
        x = array.reshape(-1)
        qmax = (1 << self.bits) - 1
        g, n, G = self.groups(x.size), x.size, self.group_size
        lo = np.zeros(g, np.float64)
        hi = np.zeros(g, np.float64)
        full = n // G
        if full:
            body = x[: full * G].reshape(full, G)
            lo[:full], hi[:full] = body.min(axis=1), body.max(axis=1)
        if n % G:
            lo[full], hi[full] = x[full * G:].min(), x[full * G:].max()
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)  # the range holds 0, so 0 is a grid point
        scale, zp = _grid(lo, hi, qmax)
        with np.errstate(over="ignore"):
            ends = np.concatenate([(np.float32(qmax) - zp.astype(np.float32)) * scale, -zp.astype(np.float32) * scale])
        if not np.isfinite(ends).all():
            raise ValueError(f"|value| up to {max(-lo.min(), hi.max()):.4g}: too close to the float32 limit for a "
                             "uniform grid, whose end points must stay finite")
        zp = zp.astype(np.uint8)
        q = self._quantize(x, scale, zp, qmax)
        streams = {"scales": scale.astype("<f4").tobytes(), "zero_points": zp.tobytes(),
                   "indices": packing.pack(q, self.bits)}
        return streams, {}

    def _quantize(self, x, scale, zp, qmax):
        G, n = self.group_size, x.size
        s = np.repeat(scale.astype(np.float64), G)[:n] if scale.size > 1 else scale.astype(np.float64)
        z = np.repeat(zp.astype(np.float64), G)[:n] if zp.size > 1 else zp.astype(np.float64)
        return np.clip(np.rint(x / s) + z, 0, qmax).astype(np.uint8)

    def decode(self, streams, spec, params):
        with np.errstate(over="ignore"):  # a product past float32's range is +-inf, as the spec says
            return self._decode(streams, spec, params)

    def _decode(self, streams, spec, params):
        expect_streams(self, streams, self.stream_lengths(spec, params))
        scale = np.frombuffer(streams["scales"], "<f4")
        zp = np.frombuffer(streams["zero_points"], np.uint8)
        qmax = (1 << self.bits) - 1
        if not np.isfinite(scale).all():
            at = int(np.flatnonzero(~np.isfinite(scale))[0])
            raise CodecDataError(f"nnar.affine: scale of group {at}: expected a finite number, found {scale[at]!r} "
                                 "(an infinite scale times zero gives a NaN whose bits differ between processors)")
        if zp.size and int(zp.max()) > qmax:
            raise CodecDataError(f"nnar.affine: zero point {int(zp.max())} exceeds {qmax}, the largest "
                                 f"{self.bits}-bit index")
        n = spec.size
        packed = packing.check_packed(streams["indices"], n, self.bits, 1 << self.bits, self.codec_id, "indices")
        if scale.size == 1:  # one group: decoding is a table lookup, like a codebook
            table = scale[0] * (np.arange(1 << packing.slot_bits(self.bits), dtype=np.float32) - np.float32(zp[0]))
            return packing.expand(packed, table.astype(np.float32), n, self.bits).reshape(spec.shape)
        q = packing.expand(packed, np.arange(1 << packing.slot_bits(self.bits), dtype=np.uint8), n, self.bits)
        out = np.empty(n, np.float32)
        G = self.group_size
        full = n // G
        if full:
            body = out[: full * G].reshape(full, G)
            np.subtract(q[: full * G].reshape(full, G), zp[:full, None], out=body, dtype=np.float32)
            body *= scale[:full, None]
        if n % G:
            tail = out[full * G:]
            np.subtract(q[full * G:], zp[full], out=tail, dtype=np.float32)
            tail *= scale[full]
        return out.reshape(spec.shape)
