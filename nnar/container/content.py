"""The content digest of an archive (spec/FORMAT.md §5.3.1, since 1.4).

What an archive *decodes to*, and how, but not how its streams happen to be compressed: the
records' descriptors re-encoded canonically with every segment's stored ``length`` set to 0, and
for a MODL record the SHA-256 of its structure (a TENS descriptor already carries its array's
digest). Two archives with equal content digests give the same tensors, model structure and
metadata through the same pipelines, whichever zstd wrote their segments. That is what a patch
binds to (spec/patch.md), so that a device whose zstd differs from the server's can apply the
next update, and what the index carries so that records of two archives cannot be spliced
together unnoticed.

Nothing here decodes a codec: the MODL structure's hash is given by the caller.
"""

from __future__ import annotations

import hashlib

import msgpack

from .. import constants as C

#: record types whose descriptors list segments, whose stored ``length`` is not content
_WITH_SEGMENTS = ("TENS", "MODL", "FILE")


def canonical(value) -> bytes:
    """The canonical msgpack encoding of a decoded descriptor value (FORMAT.md §5.3.1): the
    shortest header of every int, str, bin, array and map, floats as float 64, maps in their
    stored key order. It is what nnar writes, so a descriptor nnar wrote re-encodes to itself."""
    return msgpack.packb(value, use_bin_type=True, use_single_float=False, strict_types=False)


def content_form(record_type: str, desc: dict) -> dict:
    """The descriptor with every segment's ``length`` set to 0 (a shallow copy; ``desc`` is left
    as it is). A malformed ``segments`` is left alone: the record's own checks report it."""
    segs = desc.get("segments") if record_type in _WITH_SEGMENTS else None
    if not isinstance(segs, list):
        return desc
    out = dict(desc)
    out["segments"] = [dict(s, length=0) if isinstance(s, dict) and "length" in s else s for s in segs]
    return out


def record_digest(record_type: str, desc: dict, extra: bytes = b"") -> bytes:
    """SHA-256 of ``record_type ‖ u64(len(D)) ‖ D ‖ extra``, D the canonical content form of the
    descriptor; ``extra`` is the structure's SHA-256 for MODL, the body's for an unknown type."""
    d = canonical(content_form(record_type, desc))
    h = hashlib.sha256(record_type.encode("latin-1"))
    h.update(len(d).to_bytes(8, "little"))
    h.update(d)
    h.update(extra)
    return h.digest()


class ContentDigest:
    """The archive's content digest: SHA-256 over the record digests, META first, in file order."""

    def __init__(self):
        self._h = hashlib.sha256()
        self.count = 0

    def add(self, digest: bytes) -> None:
        self._h.update(digest)
        self.count += 1

    def add_record(self, record_type: str, desc: dict, extra: bytes = b"") -> bytes:
        d = record_digest(record_type, desc, extra)
        self.add(d)
        return d

    def digest(self) -> bytes:
        return self._h.copy().digest()


assert C.DIGEST_SIZE == hashlib.sha256().digest_size
