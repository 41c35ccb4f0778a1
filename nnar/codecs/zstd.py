"""``nnar.zstd``: one Zstandard frame (RFC 8878) per stream (spec/codecs/zstd.md)."""

from __future__ import annotations

import zstandard

from . import register
from .abc import BytesBytesCodec
from ..errors import CodecDataError

MIN_LEVEL, MAX_LEVEL = -(1 << 17), zstandard.MAX_COMPRESSION_LEVEL


@register
class Zstd(BytesBytesCodec):
    codec_id = "nnar.zstd"

    def __init__(self, level: int = 3):
        if not isinstance(level, int) or isinstance(level, bool) or not MIN_LEVEL <= level <= MAX_LEVEL:
            raise CodecDataError(f"nnar.zstd: level: expected an integer in [{MIN_LEVEL}, {MAX_LEVEL}], found {level!r}")
        self.level = level

    def get_config(self):
        return {"level": self.level}

    def encode(self, data):
        # The content size goes in the frame header: the decoder bounds its output with it.
        # No zstd checksum: the record's body_crc already covers every stored byte.
        cctx = zstandard.ZstdCompressor(level=self.level, write_content_size=True, write_checksum=False)
        return cctx.compress(data), {}

    def decode(self, data, params, max_length):
        size = zstandard.frame_content_size(data) if len(data) >= 4 else -2
        if size < 0:
            raise CodecDataError("nnar.zstd: expected a frame that declares its content size, found none")
        if size > max_length:
            raise CodecDataError(f"nnar.zstd: frame declares {size} bytes, expected at most {max_length}")
        try:
            dobj = zstandard.ZstdDecompressor().decompressobj()
            out = dobj.decompress(data)
        except zstandard.ZstdError as e:
            raise CodecDataError(f"nnar.zstd: corrupt frame: {e}") from e
        if not dobj.eof or dobj.unused_data or len(out) != size:
            raise CodecDataError(
                f"nnar.zstd: expected exactly one complete frame of {size} bytes, found "
                f"{len(out)} bytes decoded, {'complete' if dobj.eof else 'incomplete'} frame, "
                f"{len(dobj.unused_data)} bytes after it"
            )
        return out
