"""``nnar.zstd``: one Zstandard frame (RFC 8878) per stream (spec/codecs/zstd.md)."""

from __future__ import annotations

import threading

import zstandard

from . import register
from .abc import BytesBytesCodec
from ..errors import CodecDataError
from ..zstdframe import MAX_WINDOW_LOG, FrameError, decompress_exact

_LOCAL = threading.local()
#: the ranges of spec/codecs/zstd.md, written out rather than taken from the zstandard module:
#: its constants are libzstd's for this platform (32-bit builds have smaller maxima), and a
#: stored config must mean the same on every reader. window_log stops at 27 because decoders
#: refuse larger windows (MAX_WINDOW_LOG).
MIN_LEVEL, MAX_LEVEL = -(1 << 17), 22
#: compression-parameter overrides a config may carry (zstd's own names), with their ranges
PARAMETERS = {
    "window_log": (10, MAX_WINDOW_LOG),
    "hash_log": (6, 30),
    "chain_log": (6, 30),
    "search_log": (1, 30),
    "min_match": (3, 7),
    "target_length": (0, 131072),
    "strategy": (1, 9),  # fast … btultra2, zstd's numbering
}


def _check_int(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise CodecDataError(f"nnar.zstd: {name}: expected an integer in [{lo}, {hi}], found {value!r}")


@register
class Zstd(BytesBytesCodec):
    """``level`` alone picks zstd's parameters for that level; the optional overrides replace
    some of them (how the decoder works does not depend on any of this)."""

    codec_id = "nnar.zstd"

    def __init__(self, level: int = 3, **overrides: int):
        _check_int("level", level, MIN_LEVEL, MAX_LEVEL)
        for name, value in overrides.items():
            if name not in PARAMETERS:
                raise CodecDataError(f"nnar.zstd: unknown config key {name!r}; expected level or one of "
                                     f"{', '.join(PARAMETERS)}")
            _check_int(name, value, *PARAMETERS[name])
        self.level = level
        self.overrides = dict(sorted(overrides.items()))

    def get_config(self):
        return {"level": self.level, **self.overrides}

    def encode(self, data):
        return self._compressor().compress(data), {}

    def _compressor(self) -> zstandard.ZstdCompressor:
        """One compressor per config and thread: building one costs more than compressing a
        small stream, and a compressor must not be shared between threads."""
        cache = _LOCAL.__dict__.setdefault("compressors", {})
        key = tuple(self.get_config().items())
        if key not in cache:
            # The content size goes in the frame header: the decoder bounds its output with it.
            # No zstd checksum: the record's body_crc already covers every stored byte.
            if self.overrides:
                params = zstandard.ZstdCompressionParameters.from_level(
                    self.level, write_content_size=True, write_checksum=False, **self.overrides)
                cache[key] = zstandard.ZstdCompressor(compression_params=params)
            else:
                cache[key] = zstandard.ZstdCompressor(level=self.level, write_content_size=True,
                                                      write_checksum=False)
        return cache[key]


    def encoded_bound(self, n: int) -> int:
        return compress_bound(n)

    def decode(self, data, params, max_length):
        try:
            return decompress_exact(data, max_length)
        except FrameError as e:
            raise CodecDataError(f"nnar.zstd: {e}") from None


def compress_bound(n: int) -> int:
    """libzstd's ZSTD_COMPRESSBOUND: the largest frame its encoder writes for ``n`` bytes (raw
    blocks and the frame header included; spec/codecs/zstd.md)."""
    return n + (n >> 8) + (((128 << 10) - n) >> 11 if n < 128 << 10 else 0)


#: Entropy coding with few matches: a small hash table finds only long repeats, so almost every
#: byte goes to zstd's Huffman literal coder. On exponent planes this is as small as level 19
#: (within 0.3%) at level-1 speed, where level 3's short matches cost 25% more than Huffman.
ENTROPY = Zstd(1, strategy=zstandard.STRATEGY_FAST, window_log=17, hash_log=6, min_match=7, target_length=0)
