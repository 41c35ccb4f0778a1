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

    # -- records -------------------------------------------------------------------------------

    def add(self, rtype: bytes, descriptor: Any = None, body: bytes = b"", *, flags: int = 0, **kw) -> "Builder":
        """A record of any type (unknown types are skipped by readers unless must_understand)."""
        self.records.append((rtype.decode("latin-1"), [], lambda off: record(rtype, descriptor, body, flags=flags, **kw)))
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

    def build(self, *, index: list | None = None, trailer_patch: Callable[[int, int], bytes] | None = None) -> bytes:
        out = bytearray(preamble(minor=self.minor))
        out += record(b"META", self.meta, crc_prefix=bytes(out))
        entries = []
        for rtype, names, make in self.records:
            rec = make(len(out))
            entries.append([rtype, len(out), len(rec), list(names)])  # §5.3
            out += rec
        index_offset = len(out)
        out += record(b"INDX", {"records": entries if index is None else index})
        out += trailer(index_offset, len(out) + 32) if trailer_patch is None else trailer_patch(index_offset, len(out) + 32)
        return bytes(out)
