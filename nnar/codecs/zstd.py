"""``nnar.zstd``: one Zstandard frame (RFC 8878) per stream (spec/codecs/zstd.md)."""

from __future__ import annotations

import zstandard

from . import register
from .abc import BytesBytesCodec
from ..errors import CodecDataError

MIN_LEVEL, MAX_LEVEL = -(1 << 17), zstandard.MAX_COMPRESSION_LEVEL
_MAGIC = b"\x28\xb5\x2f\xfd"


def frame_length(data) -> int:
    """Bytes taken by the Zstandard frame at the start of ``data``, found by walking its block
    headers (RFC 8878 §3.1.1). The one-shot decompressor ignores what follows a frame, so this
    is how trailing bytes are caught without the slower streaming decoder."""
    view = memoryview(data)
    if bytes(view[:4]) != _MAGIC:
        raise CodecDataError(f"nnar.zstd: expected a frame starting {_MAGIC.hex(' ')}, found {bytes(view[:4]).hex(' ')}")
    try:
        pos = zstandard.frame_header_size(view)
    except zstandard.ZstdError as e:
        raise CodecDataError(f"nnar.zstd: corrupt frame header: {e}") from e
    has_checksum = view[4] & 0x04
    n = len(view)
    while True:
        if pos + 3 > n:
            raise CodecDataError(f"nnar.zstd: frame ends inside a block header at byte {pos} of {n}")
        header = view[pos] | view[pos + 1] << 8 | view[pos + 2] << 16
        last, block_type, size = header & 1, (header >> 1) & 3, header >> 3
        pos += 3 + (1 if block_type == 1 else size)
        if block_type == 3:
            raise CodecDataError(f"nnar.zstd: reserved block type at byte {pos}")
        if last:
            break
    return pos + (4 if has_checksum else 0)


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
        size = zstandard.frame_content_size(data) if len(data) >= 6 else -2
        if size < 0:
            raise CodecDataError("nnar.zstd: expected a frame that declares its content size, found none")
        if size > max_length:
            raise CodecDataError(f"nnar.zstd: frame declares {size} bytes, expected at most {max_length}")
        length = frame_length(data)
        if length != len(data):
            raise CodecDataError(f"nnar.zstd: expected exactly one frame of {len(data)} bytes, found a frame of "
                                 f"{length} bytes" + (" and bytes after it" if length < len(data) else ""))
        try:
            out = zstandard.ZstdDecompressor().decompress(data)  # one per call: not thread-safe
        except zstandard.ZstdError as e:
            raise CodecDataError(f"nnar.zstd: corrupt frame: {e}") from e
        if len(out) != size:
            raise CodecDataError(f"nnar.zstd: frame declares {size} bytes, decoded {len(out)}")
        return out
