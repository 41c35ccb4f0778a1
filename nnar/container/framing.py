"""Fixed-size structures of the container: preamble, record frame, trailer; and descriptors
(msgpack) with the bounds a reader applies to them. Names follow spec/FORMAT.md."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import msgpack
import zstandard

from .. import constants as C
from ..zstdframe import FrameError, FrameTooLarge, decompress_exact
from ..errors import (
    BadDescriptor, BadLayout, BadMagic, ChecksumMismatch, LimitExceeded, ReservedNonZero, Truncated,
    UnsupportedVersion,
)

_PREAMBLE = struct.Struct("<8sHHI")  # magic, format_major, format_minor, archive_flags
_FRAME = struct.Struct("<4sIQIIII")  # record_type, record_flags, body_length, descriptor_length, body_crc, reserved, header_crc
_TRAILER = struct.Struct("<QQII8s")  # index_offset, archive_length, reserved, trailer_crc, end_magic
assert _PREAMBLE.size == C.PREAMBLE_SIZE and _FRAME.size == C.FRAME_SIZE and _TRAILER.size == C.TRAILER_SIZE


def crc32(data, value: int = 0) -> int:
    """CRC-32 (ISO-HDLC: the one of zlib, gzip and PNG)."""
    return zlib.crc32(data, value)


def align_up(n: int, alignment: int = C.SEGMENT_ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


def segment_start(prev_end: int, verbatim: bool) -> int:
    """Where a segment begins: verbatim ones at the next aligned offset, others right away."""
    return align_up(prev_end) if verbatim else prev_end


# -- preamble ------------------------------------------------------------------------------------


def pack_preamble(minor: int = C.FORMAT_MINOR) -> bytes:
    return _PREAMBLE.pack(C.MAGIC, C.FORMAT_MAJOR, minor, 0)


def parse_preamble(data: bytes) -> int:
    """Check a preamble; return its format_minor."""
    if len(data) < C.PREAMBLE_SIZE:
        raise Truncated(f"preamble: expected {C.PREAMBLE_SIZE} bytes, found {len(data)}", where="offset 0")
    magic, major, minor, flags = _PREAMBLE.unpack_from(data)
    if magic != C.MAGIC:
        raise BadMagic(f"not an nnar archive: expected magic {C.MAGIC.hex(' ')}, found {magic.hex(' ')}", where="offset 0")
    if major != C.FORMAT_MAJOR:
        raise UnsupportedVersion(
            f"format version: expected major {C.FORMAT_MAJOR}, found {major}.{minor} (a newer nnar wrote it)",
            where="offset 8")
    if flags:
        raise ReservedNonZero(f"archive_flags: expected 0 (all bits reserved), found {flags:#010x}", where="offset 12")
    return minor


# -- record frame --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Frame:
    offset: int  # absolute offset of the frame in the archive
    record_type: bytes
    record_flags: int
    body_length: int
    descriptor_length: int
    body_crc: int
    header_crc: int
    raw: bytes  # the 32 frame bytes, for the header CRC

    @property
    def must_understand(self) -> bool:
        return bool(self.record_flags & C.RECORD_FLAG_MUST_UNDERSTAND)

    @property
    def descriptor_offset(self) -> int:
        return self.offset + C.FRAME_SIZE

    @property
    def body_offset(self) -> int:
        return self.descriptor_offset + self.descriptor_length

    @property
    def end(self) -> int:
        return self.body_offset + self.body_length

    def type_name(self) -> str:
        """The tag for messages: printable ASCII as is, anything else escaped (a hostile tag
        must not break an error line)."""
        return "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in self.record_type)

    def check_header_crc(self, descriptor: bytes, prefix: bytes = b"") -> None:
        """``prefix``: the preamble, for the META record (its CRC covers the preamble too)."""
        found = crc32(descriptor, crc32(self.raw[:28], crc32(prefix)))
        if found != self.header_crc:
            raise ChecksumMismatch(
                f"{self.type_name()} record header: expected CRC-32 {self.header_crc:#010x}, computed {found:#010x}",
                where=f"offset {self.offset}")


def pack_frame(record_type: bytes, descriptor: bytes, body_length: int, body_crc: int, flags: int,
               crc_prefix: bytes = b"") -> bytes:
    head = _FRAME.pack(record_type, flags, body_length, len(descriptor), body_crc, 0, 0)[:28]
    return head + struct.pack("<I", crc32(descriptor, crc32(head, crc32(crc_prefix))))


def parse_frame(data: bytes, offset: int) -> Frame:
    if len(data) < C.FRAME_SIZE:
        raise Truncated(f"record frame: expected {C.FRAME_SIZE} bytes, found {len(data)}", where=f"offset {offset}")
    rtype, flags, body_length, dlen, body_crc, reserved, header_crc = _FRAME.unpack_from(data)
    if flags & ~C.RECORD_FLAGS_DEFINED:
        raise ReservedNonZero(f"record_flags: expected only bits 0 and 1 used, found {flags:#010x}",
                              where=f"offset {offset + 4}")
    if reserved:
        raise ReservedNonZero(f"record frame reserved field: expected 0, found {reserved:#010x}", where=f"offset {offset + 24}")
    return Frame(offset, rtype, flags, body_length, dlen, body_crc, header_crc, bytes(data[: C.FRAME_SIZE]))


# -- trailer -------------------------------------------------------------------------------------


def pack_trailer(index_offset: int, archive_length: int) -> bytes:
    head = struct.pack("<QQI", index_offset, archive_length, 0)
    return head + struct.pack("<I", crc32(head)) + C.END_MAGIC


def parse_trailer(data: bytes, offset: int) -> tuple[int, int]:
    """Check a trailer found at ``offset``; return (index_offset, archive_length)."""
    if len(data) < C.TRAILER_SIZE:
        raise Truncated(f"trailer: expected {C.TRAILER_SIZE} bytes, found {len(data)}", where=f"offset {offset}")
    index_offset, archive_length, reserved, crc, magic = _TRAILER.unpack_from(data)
    if magic != C.END_MAGIC:
        raise Truncated(
            f"trailer: expected end magic {C.END_MAGIC.hex(' ')}, found {magic.hex(' ')} "
            "(the archive is truncated, or its writer did not finish)", where=f"offset {offset + 24}")
    if crc32(data[:20]) != crc:
        raise ChecksumMismatch(f"trailer: expected CRC-32 {crc:#010x}, computed {crc32(data[:20]):#010x}", where=f"offset {offset}")
    if reserved:
        raise ReservedNonZero(f"trailer reserved field: expected 0, found {reserved:#010x}", where=f"offset {offset + 16}")
    if archive_length != offset + C.TRAILER_SIZE:
        raise BadLayout(f"trailer: archive_length says {archive_length} bytes, the archive has {offset + C.TRAILER_SIZE}",
                        where=f"offset {offset + 8}")
    return index_offset, archive_length


# -- descriptors ---------------------------------------------------------------------------------


def pack_descriptor(obj: dict) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode_descriptor(obj: dict) -> tuple[bytes, int]:
    """The stored descriptor and the record flag it needs: zstd-compressed when that is smaller
    (names of grouped tensors and the index compress several times over)."""
    raw = pack_descriptor(obj)
    if len(raw) >= C.DESCRIPTOR_ZSTD_MIN_BYTES:
        packed = zstandard.ZstdCompressor(level=C.DESCRIPTOR_ZSTD_LEVEL, write_content_size=True,
                                          write_checksum=False).compress(raw)
        if len(packed) < len(raw):
            return packed, C.RECORD_FLAG_DESCRIPTOR_ZSTD
    return raw, 0


def decode_descriptor(stored: bytes, flags: int, max_bytes: int, where: str) -> dict:
    if flags & C.RECORD_FLAG_DESCRIPTOR_ZSTD:
        try:
            stored = decompress_exact(stored, max_bytes)
        except FrameTooLarge as e:
            raise LimitExceeded(f"compressed descriptor: {e} (max_descriptor_bytes)", where=where) from None
        except FrameError as e:
            raise BadDescriptor(f"compressed descriptor: {e}", where=where) from None
    return unpack_descriptor(stored, where)


def _no_ext(code, data):
    raise BadDescriptor(f"descriptor: msgpack extension types are not allowed, found type {code}")


def unpack_descriptor(data: bytes, where: str) -> dict:
    """Parse one msgpack map occupying exactly ``data``: no ext types, str keys, no trailing bytes.

    ``data`` is already bounded by ``max_descriptor_bytes``, so every container inside it is too;
    msgpack's own stack limit rejects absurd nesting.
    """
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext, use_list=True,
                              timestamp=0)
    except BadDescriptor as e:
        raise BadDescriptor(e.message, where=where) from None
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError, UnicodeDecodeError,
            RecursionError) as e:
        raise BadDescriptor(f"descriptor: expected one msgpack map, found invalid msgpack ({type(e).__name__}: {e})",
                            where=where) from e
    if not isinstance(obj, dict):
        raise BadDescriptor(f"descriptor: expected a msgpack map, found {type(obj).__name__}", where=where)
    if any(marker in data for marker in _TIMESTAMP_HEADERS) and _has_timestamp(obj):
        raise BadDescriptor("descriptor: msgpack extension types are not allowed, found a timestamp (type -1)",
                            where=where)
    return obj


#: how a msgpack timestamp (ext type -1) can start: fixext 4, fixext 8, ext 8 of 12 bytes. Only
#: a descriptor holding one of these byte pairs is walked for timestamps.
_TIMESTAMP_HEADERS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def _has_timestamp(obj) -> bool:
    """msgpack decodes its timestamp extension itself, without ext_hook; look for one."""
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, msgpack.Timestamp):
            return True
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False
