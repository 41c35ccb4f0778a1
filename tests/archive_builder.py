"""An archive writer written from spec/FORMAT.md alone, sharing no code with nnar.

Tests use it to build archives that nnar's own writer never produces: CRC-valid but hostile
descriptors, unknown record types, odd pipelines. Every structure is assembled here with
``struct``, ``zlib.crc32`` and ``msgpack``; whatever the caller does not override is valid.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Any, Callable

import msgpack
import numpy as np
import zstandard

from helpers import canonical_bytes, spec_name
from nnar import constants as C

MAGIC = b"\x89NNAR\r\n\x1a"
END_MAGIC = b"NNAREND\x1a"
RAW = {"codec": "nnar.raw", "config": {}, "params": {}}
BYTEPLANES = {"codec": "nnar.byteplanes", "config": {}, "params": {}}


def zstd_stage(level: int = 3) -> dict:
    return {"codec": "nnar.zstd", "config": {"level": level}, "params": {}}


def align_up(n: int) -> int:
    return -(-n // 64) * 64


def preamble(major: int = 1, minor: int = C.FORMAT_MINOR, flags: int = 0, magic: bytes = MAGIC) -> bytes:
    return struct.pack("<8sHHI", magic, major, minor, flags)


DESCRIPTOR_ZSTD = 2  # record flag bit 1 (§4.1)


def compress_descriptor(raw: bytes, **kw) -> bytes:
    """A descriptor stored compressed (§4.2): one zstd frame that declares its content size."""
    kw.setdefault("write_content_size", True)
    return zstandard.ZstdCompressor(level=19, **kw).compress(raw)


def record(rtype: bytes, descriptor: Any = None, body: bytes = b"", *, flags: int = 1, reserved: int = 0,
           raw_descriptor: bytes | None = None, compress: bool = False, crc_prefix: bytes = b"") -> bytes:
    """frame | descriptor | body with both CRCs right (§4.1); ``compress`` stores the descriptor
    zstd-compressed and sets ``descriptor_zstd``; ``crc_prefix`` is the preamble for the first
    record, whose header CRC covers it."""
    desc = raw_descriptor if raw_descriptor is not None else msgpack.packb(descriptor, use_bin_type=True)
    if compress:
        desc, flags = compress_descriptor(desc), flags | DESCRIPTOR_ZSTD
    head = struct.pack("<4sIQIII", rtype, flags, len(body), len(desc), zlib.crc32(body), reserved)
    return head + struct.pack("<I", zlib.crc32(desc, zlib.crc32(head, zlib.crc32(crc_prefix)))) + desc + body


def frame_only(rtype: bytes, descriptor: Any, body_length: int, *, body_crc: int = 0, flags: int = 1) -> bytes:
    """frame | descriptor of a record whose body (``body_length`` bytes, claimed) is not included."""
    desc = msgpack.packb(descriptor, use_bin_type=True)
    head = struct.pack("<4sIQIII", rtype, flags, body_length, len(desc), body_crc, 0)
    return head + struct.pack("<I", zlib.crc32(desc, zlib.crc32(head))) + desc


def canonical(v: Any) -> bytes:
    """The canonical msgpack encoding of FORMAT.md §5.3.1, written from its text: the shortest
    header for every int, str, bin, array and map; floats as float 64; map pairs in order."""
    if v is None:
        return b"\xc0"
    if v is True or v is False:
        return b"\xc3" if v else b"\xc2"
    if isinstance(v, int):
        if 0 <= v <= 127 or -32 <= v < 0:
            return struct.pack("b" if v < 0 else "B", v)
        forms = ((0xcc, ">B"), (0xcd, ">H"), (0xce, ">I"), (0xcf, ">Q")) if v >= 0 else \
            ((0xd0, ">b"), (0xd1, ">h"), (0xd2, ">i"), (0xd3, ">q"))
        for tag, fmt in forms:
            try:
                return bytes([tag]) + struct.pack(fmt, v)
            except struct.error:
                continue
        raise ValueError(v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)

    def head(n: int, short: tuple[int, int] | None, tags: tuple[int, ...], widths: tuple[str, ...]) -> bytes:
        if short is not None and n < short[1]:
            return bytes([short[0] | n])
        for tag, fmt in zip(tags, widths):
            if n < 1 << (8 * struct.calcsize(fmt)):
                return bytes([tag]) + struct.pack(fmt, n)
        raise ValueError(n)
    if isinstance(v, str):
        b = v.encode()
        return head(len(b), (0xa0, 32), (0xd9, 0xda, 0xdb), (">B", ">H", ">I")) + b
    if isinstance(v, (bytes, bytearray)):
        return head(len(v), None, (0xc4, 0xc5, 0xc6), (">B", ">H", ">I")) + bytes(v)
    if isinstance(v, (list, tuple)):
        return head(len(v), (0x90, 16), (0xdc, 0xdd), (">H", ">I")) + b"".join(canonical(x) for x in v)
    if isinstance(v, dict):
        return head(len(v), (0x80, 16), (0xde, 0xdf), (">H", ">I")) + \
            b"".join(canonical(k) + canonical(x) for k, x in v.items())
    raise TypeError(type(v))


def record_digest(rtype: str, desc: dict, extra: bytes = b"") -> bytes:
    """§5.3.1: SHA-256(type ‖ u64 len(D) ‖ D ‖ X), D canonical with segment lengths set to 0."""
    if rtype in ("TENS", "MODL", "FILE") and isinstance(desc.get("segments"), list):
        desc = {**desc, "segments": [{**seg, "length": 0} for seg in desc["segments"]]}
    d = canonical(desc)
    return hashlib.sha256(rtype.encode() + struct.pack("<Q", len(d)) + d + extra).digest()


def trailer(index_offset: int, archive_length: int) -> bytes:
    head = struct.pack("<QQI", index_offset, archive_length, 0)
    return head + struct.pack("<I", zlib.crc32(head)) + END_MAGIC


class Builder:
    """Collects records, then lays them out: preamble, META, records, INDX, trailer.

    A record is a function of its absolute offset (a lone verbatim segment is aligned to the
    file, so a TENS body depends on where its record lands).
    """

    def __init__(self, metadata: dict | None = None, *, minor: int = C.FORMAT_MINOR, source_format: str = "python",
                 nnar_version: str = "0.1.0", meta: dict | None = None):
        self.minor = minor
        self.meta = meta if meta is not None else {"nnar_version": nnar_version, "source_format": source_format,
                                                   "metadata": dict(metadata or {})}
        self.records: list[tuple[str, list, Callable[[int], bytes]]] = []
        #: per record: (descriptor, X) for the content digest (§5.3.1)
        self.contents: list[tuple[Any, bytes]] = []

    # -- records -------------------------------------------------------------------------------

    def add(self, rtype: bytes, descriptor: Any = None, body: bytes = b"", *, flags: int = 0, **kw) -> "Builder":
        """A record of any type (unknown types are skipped by readers unless must_understand)."""
        self.records.append((rtype.decode("latin-1"), [], lambda off: record(rtype, descriptor, body, flags=flags, **kw)))
        self.contents.append((descriptor, hashlib.sha256(body).digest()))
        return self

    def tensor(self, members: list, dtype: str, segments: list[tuple[str, list, int, bytes]], *,
               pipeline: Any = None, digest: bytes | None = None, decoded: bytes = b"", extra: dict | None = None,
               index_names: list | None = None, flags: int = 1, align: bool | None = None,
               compress: bool = False) -> "Builder":
        """A TENS record of ``members`` [(name, shape)] (§5.2). ``segments`` are (name, codecs,
        raw_length, stored bytes); ``decoded`` is the record array's bytes, for the digest."""
        desc = {"tensors": [[n, list(s)] for n, s in members], "dtype": dtype,
                "digest": digest if digest is not None else hashlib.sha256(decoded).digest(),
                "pipeline": pipeline if pipeline is not None else [RAW],
                "segments": [{"name": n, "length": len(data), "raw_length": raw, "codecs": codecs}
                             for n, codecs, raw, data in segments]}
        desc.update(extra or {})
        raw_desc = msgpack.packb(desc, use_bin_type=True)
        if compress:  # the body's place depends on the stored length
            raw_desc, flags = compress_descriptor(raw_desc), flags | DESCRIPTOR_ZSTD
        if align is None:  # §5.2.3: only a lone verbatim segment is aligned
            align = len(segments) == 1 and not segments[0][1]

        def build(offset: int) -> bytes:
            body_start = offset + 32 + len(raw_desc)
            body = bytes(align_up(body_start) - body_start if align else 0)
            body += b"".join(data for _, _, _, data in segments)
            return record(b"TENS", body=body, raw_descriptor=raw_desc, flags=flags)

        names = [n for n, _ in members] if index_names is None else index_names
        self.records.append(("TENS", names, build))
        self.contents.append((desc, b""))
        return self

    def raw_tensor(self, name: str, array: np.ndarray, dtype: str | None = None, **kw) -> "Builder":
        """One tensor alone in its record, stored raw and verbatim."""
        data = canonical_bytes(array)
        return self.tensor([(name, array.shape)], dtype or spec_name(array), [("data", [], len(data), data)],
                           decoded=data, **kw)

    def raw_group(self, tensors: dict[str, np.ndarray], dtype: str | None = None, **kw) -> "Builder":
        """Several tensors of one dtype in one record, their elements concatenated, stored raw."""
        data = b"".join(canonical_bytes(a) for a in tensors.values())
        dtype = dtype or spec_name(next(iter(tensors.values())))
        return self.tensor([(n, a.shape) for n, a in tensors.items()], dtype, [("data", [], len(data), data)],
                           decoded=data, **kw)

    # -- the whole archive ---------------------------------------------------------------------

    def content(self) -> bytes:
        """The content digest (§5.3.1) of the archive :meth:`build` writes."""
        h = hashlib.sha256(record_digest("META", self.meta))
        for (rtype, _, _), (desc, extra) in zip(self.records, self.contents):
            h.update(record_digest(rtype, desc, extra if rtype not in ("TENS", "ALIS", "PTCH") else b""))
        return h.digest()

    def build(self, *, index: list | None = None, trailer_patch: Callable[[int, int], bytes] | None = None,
              content: bool = False) -> bytes:
        """The archive; with ``content``, its index carries the content digest (since 1.4)."""
        out = bytearray(preamble(minor=self.minor))
        out += record(b"META", self.meta, crc_prefix=bytes(out))
        entries = []
        for rtype, names, make in self.records:
            rec = make(len(out))
            entries.append([rtype, len(out), len(rec), list(names)])  # §5.3
            out += rec
        index_offset = len(out)
        index_desc = {"records": entries if index is None else index}
        if content:
            index_desc["content"] = self.content()
        out += record(b"INDX", index_desc)
        out += trailer(index_offset, len(out) + 32) if trailer_patch is None else trailer_patch(index_offset, len(out) + 32)
        return bytes(out)
