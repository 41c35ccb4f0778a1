"""Fixed-size structures of the container: preamble, record frame, trailer; and descriptors
(msgpack) with the bounds a reader applies to them. Names follow spec/FORMAT.md."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import msgpack
import zstandard

from .. import constants as C
from ..limits import DEFAULT_LIMITS, Limits
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


# CRC-32 of a concatenation from the CRCs of its parts, so that parts can be summed in threads.
# In the bit-reflected representation zlib uses, bit 31 is x^0 and the polynomial is 0xEDB88320;
# crc(A + B) = crc(A) * x^(8 len(B)) mod P  xor  crc(B)  (zlib's crc32_combine).
_CRC_POLY = 0xEDB88320


def _crc_mulmod(a: int, b: int) -> int:
    """a * b mod P, both reflected polynomials of degree < 32."""
    product = 0
    for bit in range(31, -1, -1):
        if a >> bit & 1:
            product ^= b
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
    return product


_CRC_X2N = [1 << 30]  # x^(2^k) mod P for k = 0, 1, ...: x^1 is bit 30
for _ in range(63):
    _CRC_X2N.append(_crc_mulmod(_CRC_X2N[-1], _CRC_X2N[-1]))


def crc32_combine(crc_a: int, crc_b: int, length_b: int) -> int:
    """CRC-32 of A followed by B, from crc32(A), crc32(B) and B's length in bytes."""
    shift, k, n = 1 << 31, 3, length_b  # x^0, then x^(8 n) = product of x^(2^k) over n's bits, k from 3
    while n:
        if n & 1:
            shift = _crc_mulmod(_CRC_X2N[k], shift)
        n >>= 1
        k += 1
    return _crc_mulmod(shift, crc_a) ^ crc_b


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
    if len(raw) > DEFAULT_LIMITS.max_descriptor_objects:  # what readers would refuse (an index of ~700k records)
        count_objects(raw, DEFAULT_LIMITS, "a descriptor being written")
    if len(raw) >= C.DESCRIPTOR_ZSTD_MIN_BYTES:
        packed = zstandard.ZstdCompressor(level=C.DESCRIPTOR_ZSTD_LEVEL, write_content_size=True,
                                          write_checksum=False).compress(raw)
        if len(packed) < len(raw):
            return packed, C.RECORD_FLAG_DESCRIPTOR_ZSTD
    return raw, 0


def decode_descriptor(stored: bytes, flags: int, max_bytes: int, where: str, limits: Limits = DEFAULT_LIMITS) -> dict:
    if flags & C.RECORD_FLAG_DESCRIPTOR_ZSTD:
        try:
            stored = decompress_exact(stored, max_bytes)
        except FrameTooLarge as e:
            raise LimitExceeded(f"compressed descriptor: {e} (max_descriptor_bytes)", where=where) from None
        except FrameError as e:
            raise BadDescriptor(f"compressed descriptor: {e}", where=where) from None
    return unpack_descriptor(stored, where, limits)


def _msgpack_table() -> tuple[list[int], list[int]]:
    """For each first byte of a msgpack object: (what follows, a number). what: 0 = skip the
    number of bytes; 1 = a container of the number of children; 2 = a container whose count
    (×1 for arrays, ×2 for maps: number // 8 says which) is in the next number % 8 bytes;
    3 = str/bin with a length field of the number of bytes; 4 = ext likewise, plus a type byte."""
    what, arg = [0] * 256, [0] * 256
    for b in range(0x80, 0x90):
        what[b], arg[b] = 1, 2 * (b & 0x0f)
    for b in range(0x90, 0xa0):
        what[b], arg[b] = 1, b & 0x0f
    for b in range(0xa0, 0xc0):
        arg[b] = b & 0x1f
    for b, skip in {0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4,
                    0xd3: 8, 0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17}.items():
        arg[b] = skip
    for b, width in {0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4}.items():
        what[b], arg[b] = 3, width
    for b, width in {0xc7: 1, 0xc8: 2, 0xc9: 4}.items():
        what[b], arg[b] = 4, width
    for b, (width, per) in {0xdc: (2, 1), 0xdd: (4, 1), 0xde: (2, 2), 0xdf: (4, 2)}.items():
        what[b], arg[b] = 2, per * 8 + width
    return what, arg


_WHAT, _ARG = _msgpack_table()


def _too_deep(limits: Limits, where: str) -> LimitExceeded:
    return LimitExceeded(f"descriptor: expected msgpack nested at most {limits.max_descriptor_depth} deep "
                         "(max_descriptor_depth), found deeper", where=where)


def _check_depth(obj: dict, limits: Limits, where: str) -> None:
    """The nesting of a built descriptor, one level at a time (the map is depth 1)."""
    level, depth = [obj] if type(obj) is dict or type(obj) is list else [], 1
    while level:
        if depth > limits.max_descriptor_depth:
            raise _too_deep(limits, where)
        below = []
        for x in level:
            below += [v for v in (x.values() if type(x) is dict else x) if type(v) is dict or type(v) is list]
        level, depth = below, depth + 1


def count_objects(data, limits: Limits, where: str) -> int:
    """Count the msgpack objects of a descriptor, and its nesting, before anything is built
    (FORMAT.md §4.2): at most ``max_descriptor_objects`` objects (every value counts, map keys
    included) nested at most ``max_descriptor_depth`` deep (the descriptor map is depth 1).
    Bytes alone do not bound the cost: an object takes one byte or more, but a Python object
    60 or more, so a 64 MiB descriptor of empty maps would cost GBs to build.

    Only counts: malformed msgpack is left to the decoder, which reports it."""
    view = bytes(data)
    n = len(view)
    max_objects, max_depth = limits.max_descriptor_objects, limits.max_descriptor_depth
    what, arg = _WHAT, _ARG
    pending = [1]  # objects still to read at each open level; the bottom is the top-level slot
    left = 1  # pending[-1], kept in a local
    pos = objects = 0
    while pos < n:
        while not left:
            pending.pop()
            if not pending:
                return objects
            left = pending[-1]
        left -= 1
        objects += 1
        b = view[pos]
        k = what[b]
        if not k:
            pos += 1 + arg[b]
            continue
        pos += 1
        if k == 1 or k == 2:
            if k == 1:
                children = arg[b]
            else:
                width = arg[b] & 7
                children = int.from_bytes(view[pos:pos + width], "big") * (arg[b] >> 3)
                pos += width
            if len(pending) > max_depth:
                raise _too_deep(limits, where)
            if objects > max_objects:
                break
            if children:
                pending[-1] = left
                pending.append(children)
                left = children
        else:
            width = arg[b]
            pos += width + (k == 4) + int.from_bytes(view[pos:pos + width], "big")
    if objects > max_objects:
        raise LimitExceeded(f"descriptor: expected at most {max_objects} msgpack objects "
                            "(max_descriptor_objects), found more", where=where)
    return objects


def _no_ext(code, data):
    raise BadDescriptor(f"descriptor: msgpack extension types are not allowed, found type {code}")


def _map(pairs: list) -> dict:
    """Every map of a descriptor, at any depth (FORMAT.md §4.2, msgpack rules 2 and 3): str keys
    only, each once. msgpack would keep the last of two equal keys, and a bin key would pass its
    strict_map_key, so two readers could see different maps in the same bytes."""
    for k, _ in pairs:
        if type(k) is not str:
            raise BadDescriptor(f"descriptor: expected str map keys, found a {type(k).__name__} key {k!r:.40}")
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise BadDescriptor(f"descriptor: expected each map key once, found {dup!r:.80} twice")
    return d


def unpack_descriptor(data: bytes, where: str, limits: Limits = DEFAULT_LIMITS) -> dict:
    """Parse one msgpack map occupying exactly ``data``: no ext types, str keys at every depth, no
    key twice in a map, valid UTF-8 in every str, no trailing bytes, at most
    ``max_descriptor_objects`` objects nested at most ``max_descriptor_depth`` deep.

    The two limits come first (FORMAT.md §4.2): a descriptor that breaks one is
    ``limit-exceeded`` whatever else is wrong with it. An object takes at least one byte, so only
    a descriptor longer than ``max_descriptor_objects`` bytes can hold too many: those are
    counted before anything is built (:func:`count_objects`); the nesting of the others is
    checked on what was built, or, when msgpack refuses them, counted then.
    """
    counted = len(data) > limits.max_descriptor_objects
    if counted:
        count_objects(data, limits, where)
    try:
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False, object_pairs_hook=_map, ext_hook=_no_ext,
                                  use_list=True, timestamp=0)
        except BaseException:
            if not counted:  # a limit broken anywhere is reported before any other fault
                count_objects(data, limits, where)
            raise
    except LimitExceeded:
        raise
    except BadDescriptor as e:
        raise BadDescriptor(e.message, where=where) from None
    except (msgpack.StackError, RecursionError):  # msgpack's own limit, 1024 levels, above ours
        raise _too_deep(limits, where) from None
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, TypeError, UnicodeDecodeError) as e:
        raise BadDescriptor(f"descriptor: expected one msgpack map, found invalid msgpack ({type(e).__name__}: {e})",
                            where=where) from e
    _check_depth(obj, limits, where)
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
