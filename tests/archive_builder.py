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

from strategies import canonical_bytes, spec_name

MAGIC = b"\x89NNAR\r\n\x1a"
END_MAGIC = b"NNAREND\x1a"
RAW = {"codec": "nnar.raw", "config": {}, "params": {}}
BYTEPLANES = {"codec": "nnar.byteplanes", "config": {}, "params": {}}


def zstd_stage(level: int = 3) -> dict:
    return {"codec": "nnar.zstd", "config": {"level": level}, "params": {}}


def align_up(n: int) -> int:
    return -(-n // 64) * 64


def preamble(major: int = 1, minor: int = 0, flags: int = 0, magic: bytes = MAGIC) -> bytes:
    return struct.pack("<8sHHI", magic, major, minor, flags)


def record(rtype: bytes, descriptor: Any = None, body: bytes = b"", *, flags: int = 1, reserved: int = 0,
           raw_descriptor: bytes | None = None) -> bytes:
    """frame | descriptor | body with both CRCs right (§4.1)."""
    desc = raw_descriptor if raw_descriptor is not None else msgpack.packb(descriptor, use_bin_type=True)
    head = struct.pack("<4sIQIII", rtype, flags, len(body), len(desc), zlib.crc32(body), reserved)
    return head + struct.pack("<I", zlib.crc32(desc, zlib.crc32(head))) + desc + body


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

    A record is a function of its absolute offset (TENS bodies align verbatim segments to the
    file, so they depend on where the record lands).
    """

    def __init__(self, metadata: dict | None = None, *, minor: int = 0, source_format: str = "python",
                 nnar_version: str = "0.1.0", meta: dict | None = None):
        self.minor = minor
        self.meta = meta if meta is not None else {"nnar_version": nnar_version, "source_format": source_format,
                                                   "metadata": dict(metadata or {})}
        self.records: list[tuple[str, str, Callable[[int], bytes]]] = []

    # -- records -------------------------------------------------------------------------------

    def add(self, rtype: bytes, descriptor: Any = None, body: bytes = b"", *, flags: int = 0, name: str = "",
            **kw) -> "Builder":
        self.records.append((rtype.decode("latin-1"), name, lambda off: record(rtype, descriptor, body, flags=flags, **kw)))
        return self

    def tensor(self, name: Any, dtype: str, shape: list, segments: list[tuple[str, list, int, bytes]], *,
               pipeline: Any = None, digest: bytes | None = None, decoded: bytes = b"", extra: dict | None = None,
               index_name: str | None = None, flags: int = 1) -> "Builder":
        """A TENS record. ``segments`` are (name, codecs, raw_length, stored bytes)."""
        desc = {"name": name, "dtype": dtype, "shape": shape,
                "digest": digest if digest is not None else hashlib.sha256(decoded).digest(),
                "pipeline": pipeline if pipeline is not None else [RAW],
                "segments": [{"name": n, "length": len(data), "raw_length": raw, "codecs": codecs}
                             for n, codecs, raw, data in segments]}
        desc.update(extra or {})
        raw_desc = msgpack.packb(desc, use_bin_type=True)

        def build(offset: int) -> bytes:
            body_start = offset + 32 + len(raw_desc)
            body, pos = bytearray(), body_start
            for _, codecs, _, data in segments:
                start = align_up(pos) if not codecs else pos
                body += bytes(start - pos) + data
                pos = start + len(data)
            return record(b"TENS", body=bytes(body), raw_descriptor=raw_desc, flags=flags)

        self.records.append(("TENS", index_name if index_name is not None else name, build))
        return self

    def raw_tensor(self, name: str, array: np.ndarray, dtype: str | None = None, **kw) -> "Builder":
        data = canonical_bytes(array)
        return self.tensor(name, dtype or spec_name(array), list(array.shape), [("data", [], len(data), data)],
                           decoded=data, **kw)

    # -- the whole archive ---------------------------------------------------------------------

    def build(self, *, index: list | None = None, trailer_patch: Callable[[int, int], bytes] | None = None) -> bytes:
        out = bytearray(preamble(minor=self.minor))
        out += record(b"META", self.meta)
        entries = []
        for rtype, name, make in self.records:
            rec = make(len(out))
            entries.append([rtype, name, len(out), len(rec)])
            out += rec
        index_offset = len(out)
        out += record(b"INDX", {"records": entries if index is None else index})
        out += trailer(index_offset, len(out) + 32) if trailer_patch is None else trailer_patch(index_offset, len(out) + 32)
        return bytes(out)
