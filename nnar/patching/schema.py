"""The PTCH record's descriptor (spec/patch.md §3), checked field by field.

A patch comes from the network: every field is type- and range-checked here before the applier
acts on it. Names follow the spec.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import constants as C
from ..container.schema import MAX_U63, _int, _keys, _str
from ..errors import BadDescriptor
from ..limits import Limits

#: a byte patch (1.3): binds the exact bytes of base and result; the applier must re-encode
#: delta segments byte for byte (spec/patch.md §9)
PATCH_KEYS = ("base_length", "base_digest", "result_length", "result_digest", "result_minor", "records", "index",
              "encoder")
RECORD_KEYS = ("base", "type", "flags", "descriptor", "segments", "body_crc")  # all optional
#: a content patch (since 1.4): binds the content digests (FORMAT.md §5.3.1) of base and result,
#: so a device may store rebuilt streams with whatever encoder it has (spec/patch.md §3)
CONTENT_PATCH_KEYS = ("base_content", "result_content", "result_minor", "records")
CONTENT_PATCH_OPTIONAL = ("encoder",)
CONTENT_RECORD_KEYS = ("base", "type", "descriptor", "segments")  # all optional
#: the first format minor whose patches may be content patches
CONTENT_MINOR = 4
INDEX_KEYS = ("flags", "descriptor")
SOURCES = ("base", "patch", "delta")
DELTA_OPS = ("xor", "add")
WIDTHS = (1, 2, 4, 8)
#: record types a patch may rebuild (the first must be META); a content patch (1.4) also FILE
REBUILDABLE = ("META", "MODL", "TENS", "ALIS")
CONTENT_REBUILDABLE = REBUILDABLE + ("FILE",)
MAX_ENCODER_ENTRIES = 16


@dataclasses.dataclass(frozen=True)
class SegmentOp:
    """Where one segment of a result record comes from (spec/patch.md §4.2)."""

    source: str  # "base" | "patch" | "delta"
    op: str | None = None  # delta only: "xor" | "add"
    width: int = 1  # delta only: bytes per element of the delta
    #: delta only: the base stream as pieces of the partner's stream ((start, length); start None:
    #: zeros); None: the partner's stream whole
    ranges: tuple[tuple[int | None, int], ...] | None = None

    def to_map(self) -> dict:
        if self.source != "delta":
            return {"from": self.source}
        out = {"from": "delta", "op": self.op, "width": self.width}
        if self.ranges is not None:
            out["ranges"] = [list(r) for r in self.ranges]
        return out


BASE = SegmentOp("base")
PATCH = SegmentOp("patch")


@dataclasses.dataclass(frozen=True)
class RecordOp:
    """How to rebuild one record of the result (spec/patch.md §4.1); None: taken from ``base``."""

    base: int | None = None
    record_type: str | None = None
    flags: int | None = None
    descriptor: bytes | None = None
    segments: tuple[SegmentOp, ...] | None = None
    body_crc: int | None = None

    def to_map(self) -> dict:
        out: dict[str, Any] = {}
        if self.base is not None:
            out["base"] = self.base
        if self.record_type is not None:
            out["type"] = self.record_type
        if self.flags is not None:
            out["flags"] = self.flags
        if self.descriptor is not None:
            out["descriptor"] = self.descriptor
        if self.segments is not None:
            out["segments"] = [s.to_map() for s in self.segments]
        if self.body_crc is not None:
            out["body_crc"] = self.body_crc
        return out


@dataclasses.dataclass(frozen=True)
class PatchHeader:
    """A PTCH descriptor. ``kind`` is "content" (1.4: the content fields are set) or "bytes"
    (1.3: the length, digest and index fields are set)."""

    kind: str
    result_minor: int
    records: tuple[RecordOp, ...]
    encoder: dict[str, str]
    base_content: bytes | None = None
    result_content: bytes | None = None
    base_length: int | None = None
    base_digest: bytes | None = None
    result_length: int | None = None
    result_digest: bytes | None = None
    index_flags: int | None = None
    index_descriptor: bytes | None = None

    def to_map(self) -> dict:
        if self.kind == "content":
            return {"base_content": self.base_content, "result_content": self.result_content,
                    "result_minor": self.result_minor, "records": [r.to_map() for r in self.records],
                    "encoder": self.encoder}
        return {"base_length": self.base_length, "base_digest": self.base_digest,
                "result_length": self.result_length, "result_digest": self.result_digest,
                "result_minor": self.result_minor, "records": [r.to_map() for r in self.records],
                "index": {"flags": self.index_flags, "descriptor": self.index_descriptor}, "encoder": self.encoder}


def _digest(v: Any, what: str, where: str) -> bytes:
    if not isinstance(v, bytes) or len(v) != C.DIGEST_SIZE:
        raise BadDescriptor(f"{what}: expected {C.DIGEST_SIZE} bytes, found {v!r:.80}", where=where)
    return v


def _flags(v: Any, what: str, where: str) -> int:
    return _int(v, what, where, hi=C.RECORD_FLAGS_DEFINED)


def _bytes(v: Any, what: str, where: str, limits: Limits) -> bytes:
    if not isinstance(v, bytes):
        raise BadDescriptor(f"{what}: expected bytes, found {type(v).__name__}", where=where)
    limits.check(what, len(v), "max_descriptor_bytes", where)
    return v


def _segment_op(s: Any, what: str, where: str, strict: bool, limits: Limits) -> SegmentOp:
    if not isinstance(s, dict) or "from" not in s:
        raise BadDescriptor(f"{what}: expected a map with key 'from', found {s!r:.80}", where=where)
    source = s["from"]
    if source not in SOURCES:
        raise BadDescriptor(f"{what}: from: expected one of {', '.join(SOURCES)}, found {source!r:.40}", where=where)
    if source != "delta":
        _keys(s, ("from",), what, where, strict)
        return SegmentOp(source)
    _keys(s, ("from", "op", "width"), what, where, strict, ("ranges",))
    if s["op"] not in DELTA_OPS:
        raise BadDescriptor(f"{what}: op: expected one of {', '.join(DELTA_OPS)}, found {s['op']!r:.40}", where=where)
    if s["width"] not in WIDTHS or isinstance(s["width"], bool):
        raise BadDescriptor(f"{what}: width: expected one of {WIDTHS}, found {s['width']!r:.40}", where=where)
    ranges = None
    if "ranges" in s:
        if not isinstance(s["ranges"], list) or len(s["ranges"]) > limits.max_tensors:
            raise BadDescriptor(f"{what}: ranges: expected a list of at most {limits.max_tensors} ranges", where=where)
        ranges = []
        for k, r in enumerate(s["ranges"]):
            if not (isinstance(r, list) and len(r) == 2):
                raise BadDescriptor(f"{what}: ranges[{k}]: expected [start or nil, length], found {r!r:.60}",
                                    where=where)
            start = None if r[0] is None else _int(r[0], f"{what} ranges[{k}] start", where)
            ranges.append((start, _int(r[1], f"{what} ranges[{k}] length", where)))
        ranges = tuple(ranges)
    return SegmentOp("delta", s["op"], s["width"], ranges)


def _record_op(r: Any, i: int, limits: Limits, where: str, strict: bool, content: bool) -> RecordOp:
    what = f"records[{i}]"
    if not isinstance(r, dict):
        raise BadDescriptor(f"{what}: expected a map, found {type(r).__name__}", where=where)
    _keys(r, (), what, where, strict, CONTENT_RECORD_KEYS if content else RECORD_KEYS)
    base = _int(r["base"], f"{what} base", where) if "base" in r else None  # its range: against the base
    rtype = None
    if "type" in r:
        rtype = _str(r["type"], f"{what} type", where)
        known = CONTENT_REBUILDABLE if content else REBUILDABLE
        if rtype not in known:
            raise BadDescriptor(f"{what} type: expected one of {', '.join(known)}, found {rtype!r:.20}",
                                where=where)
    flags = _flags(r["flags"], f"{what} flags", where) if "flags" in r else None
    desc = _bytes(r["descriptor"], f"{what} descriptor", where, limits) if "descriptor" in r else None
    if base is None and (rtype is None or desc is None or (flags is None and not content)):
        needed = "'type' and 'descriptor'" if content else "all of 'type', 'flags' and 'descriptor'"
        raise BadDescriptor(f"{what}: expected 'base', or {needed}", where=where)
    segs = None
    if "segments" in r:
        if not isinstance(r["segments"], list):
            raise BadDescriptor(f"{what} segments: expected a list", where=where)
        limits.check(f"{what} segments", len(r["segments"]), "max_segments", where)
        segs = tuple(_segment_op(s, f"{what} segments[{j}]", where, strict, limits)
                     for j, s in enumerate(r["segments"]))
    crc = _int(r["body_crc"], f"{what} body_crc", where, hi=0xFFFF_FFFF) if "body_crc" in r else None
    return RecordOp(base, rtype, flags, desc, segs, crc)


def parse_patch(d: dict, limits: Limits, where: str, strict: bool, minor: int = CONTENT_MINOR) -> PatchHeader:
    """The PTCH descriptor of a patch whose preamble says ``minor``: a content patch (it has
    ``base_content``; since 1.4) or a byte patch (it has ``base_digest``; 1.3)."""
    content = "base_content" in d
    if content == ("base_digest" in d):
        raise BadDescriptor("PTCH descriptor: expected either 'base_content' (a content patch, 1.4) or 'base_digest' "
                            f"(a byte patch, 1.3), found {'both' if content else 'neither'}", where=where)
    if content and minor < CONTENT_MINOR:
        raise BadDescriptor(f"PTCH descriptor: a content patch needs format 1.{CONTENT_MINOR} or later, found "
                            f"1.{minor}", where=where)
    if content:
        _keys(d, CONTENT_PATCH_KEYS, "PTCH descriptor", where, strict, CONTENT_PATCH_OPTIONAL)
    else:
        _keys(d, PATCH_KEYS, "PTCH descriptor", where, strict)
    records = d["records"]
    if not isinstance(records, list) or not records:
        raise BadDescriptor(f"records: expected a non-empty list, found {records!r:.80}", where=where)
    # META, then the records of the result's index, of which there are at most max_tensors
    limits.check("records of the result (less META)", len(records) - 1, "max_tensors", where)
    encoder = d.get("encoder", {})
    if not isinstance(encoder, dict) or len(encoder) > MAX_ENCODER_ENTRIES or \
            not all(isinstance(k, str) and isinstance(v, str) for k, v in encoder.items()):
        raise BadDescriptor(f"encoder: expected a map of at most {MAX_ENCODER_ENTRIES} strings to strings, found "
                            f"{encoder!r:.80}", where=where)
    if content:
        return PatchHeader(
            "content", _int(d["result_minor"], "result_minor", where, hi=0xFFFF),
            tuple(_record_op(r, i, limits, where, strict, True) for i, r in enumerate(records)), dict(encoder),
            base_content=_digest(d["base_content"], "base_content", where),
            result_content=_digest(d["result_content"], "result_content", where))
    index = d["index"]
    if not isinstance(index, dict):
        raise BadDescriptor(f"index: expected a map, found {type(index).__name__}", where=where)
    _keys(index, INDEX_KEYS, "index", where, strict)
    return PatchHeader(
        "bytes", _int(d["result_minor"], "result_minor", where, hi=0xFFFF),
        tuple(_record_op(r, i, limits, where, strict, False) for i, r in enumerate(records)), dict(encoder),
        base_length=_int(d["base_length"], "base_length", where, hi=MAX_U63),
        base_digest=_digest(d["base_digest"], "base_digest", where),
        result_length=_int(d["result_length"], "result_length", where, hi=MAX_U63),
        result_digest=_digest(d["result_digest"], "result_digest", where),
        index_flags=_flags(index["flags"], "index flags", where),
        index_descriptor=_bytes(index["descriptor"], "index descriptor", where, limits))
