"""Applying a content patch (spec/patch.md §6, since 1.4): base + patch → an archive with the
result's content, stored with this machine's own encoders.

A content patch binds the base and the result by their content digests (FORMAT.md §5.3.1), not
their bytes. So a device whose zstd is not the server's still applies it: a segment rebuilt from
a delta is encoded by whatever zstd is here, its ``length`` and the record's framing follow, and
what must match the server is what the archive decodes to, checked before anything is kept. The
next patch, made from the server's own copy of this version, applies to the device's copy
because their content digests are equal.

Nothing trusts the patch: references are range-checked, payload tensors are checked against
their digests, every record rebuilt from the payload is decoded and checked against its own
digest, and the result's content digest must be the patch's ``result_content``.
"""

from __future__ import annotations

import hashlib
import types
from typing import Callable, Iterator

import numpy as np

from .. import constants as C
from .. import pipeline as P
from ..archive import _decode, _structure, read_file_record, reader
from ..container import framing as F
from ..container import schema as S
from ..container.content import ContentDigest, canonical, content_form
from ..container.records import RecordReader, StoredRecord, frame_record
from ..errors import BadDescriptor, BadLayout, DigestMismatch, WrongBase
from ..limits import Limits
from .apply import _payload, delta_stream
from .schema import PatchHeader, RecordOp, SegmentOp

_META, _TENS, _MODL, _ALIS, _FILE = "META", "TENS", "MODL", "ALIS", "FILE"
_WITH_SEGMENTS = (_TENS, _MODL, _FILE)

#: the least format_minor of a rebuilt archive: its index carries a content digest, a 1.4 key
CONTENT_MINOR = 4


def apply_content(header: PatchHeader, payloads: Iterator[np.ndarray], base_f, sink, limits: Limits,
                  progress: Callable[[int, int], None] | None) -> None:
    """Write the result of a content patch to ``sink`` (see :func:`nnar.patching.apply.apply`)."""
    base = reader(base_f, limits)
    found = base.content_digest()
    if found != header.base_content:
        raise WrongBase(f"this patch applies to the archive with content digest {header.base_content.hex()[:16]}…; "
                        f"the base given has {found.hex()[:16]}… (check with `nnar verify --json`)")
    n_base = len(base.index()) + 1
    minor = max(header.result_minor, CONTENT_MINOR)  # the index carries a content digest (patch.md §6 step 3)
    strict = header.result_minor <= C.FORMAT_MINOR  # how strictly to read its descriptors (FORMAT.md §10)
    preamble = F.pack_preamble(minor)
    sink.write(preamble)
    content = ContentDigest()
    entries: list[S.IndexEntry] = []
    names: set[str] = set()
    for i, op in enumerate(header.records):
        where = f"patch record {i}"
        if op.base is not None and not 0 <= op.base < n_base:
            raise BadDescriptor(f"records[{i}] base: expected a record number below {n_base}, found {op.base}",
                                where=where)
        src = base.read_stored(op.base) if op.base is not None else None
        rtype = op.record_type or src.record_type
        if (rtype == _META) != (i == 0):
            raise BadLayout(f"records[{i}]: expected {'META' if i == 0 else 'no META'} here, found {rtype}", where=where)
        if op.descriptor is not None:
            desc = F.unpack_descriptor(op.descriptor, f"{where} descriptor", limits)
        else:
            desc = content_form(src.record_type, src.desc)
        segments, rebuilt = _segments(op, src, rtype, desc, payloads, limits, strict, where)
        if segments:  # the stored lengths are this machine's: its encoders wrote the rebuilt segments
            desc = dict(desc, segments=[dict(s, length=memoryview(d).nbytes)
                                        for s, (d, _) in zip(desc["segments"], segments)])
        stored, desc_flag = F.encode_descriptor(desc)
        flags = (0 if rtype in (_MODL, _FILE) else C.RECORD_FLAG_MUST_UNDERSTAND) | desc_flag
        offset = sink.pos
        pieces = frame_record(offset, rtype.encode(), stored, flags, segments, preamble if i == 0 else b"")
        frame = F.parse_frame(pieces[0], offset)
        extra = _check(base, rtype, desc, frame, segments, rebuilt, entries, names, limits, strict, where)
        content.add_record(rtype, desc, extra)
        if i:
            entries.append(S.IndexEntry(rtype, offset, frame.end - offset,
                                        tuple(t[0] for t in desc["tensors"]) if rtype == _TENS else ()))
        for p in pieces:
            sink.write(p)
        if progress:
            progress(i + 1, len(header.records))
    index_offset = sink.pos
    stored, desc_flag = F.encode_descriptor(S.index_descriptor(entries, content.digest()))
    for p in frame_record(index_offset, C.RECORD_INDEX, stored, C.RECORD_FLAG_MUST_UNDERSTAND | desc_flag, []):
        sink.write(p)
    sink.write(F.pack_trailer(index_offset, sink.pos + C.TRAILER_SIZE))
    if next(payloads, None) is not None:  # also makes the patch reader check its index and trailer
        raise BadLayout("patch: it holds more tensors than its records use", where="patch")
    if content.digest() != header.result_content:
        raise DigestMismatch(f"result: expected content digest {header.result_content.hex()[:16]}…, built "
                             f"{content.digest().hex()[:16]}…", where="patch")


def _segments(op: RecordOp, src: StoredRecord | None, rtype: str, desc: dict, payloads, limits: Limits,
              strict: bool, where: str) -> tuple[list[tuple[bytes, bool]], bool]:
    """The stored bytes of each segment of the rebuilt record (with whether it is verbatim), and
    whether any of them came from the patch (then the record is decoded and checked)."""
    if rtype not in _WITH_SEGMENTS:
        if op.segments:
            raise BadDescriptor(f"a {rtype} record has no segments, found {len(op.segments)}", where=where)
        return [], False
    if not isinstance(desc.get("segments"), list):
        raise BadDescriptor("rebuilt descriptor: expected a 'segments' list", where=where)
    # the lengths are not known yet (they are not content): check the rest of each segment map
    probe = [dict(s, length=s.get("raw_length") if not s.get("codecs") else 0) if isinstance(s, dict) else s
             for s in desc["segments"]]
    refs = S.segment_entries(probe, limits, where, strict)
    ops = op.segments if op.segments is not None else (SegmentOp("base"),) * len(refs)
    if len(ops) != len(refs):
        raise BadDescriptor(f"segments: expected one per segment of the descriptor ({len(refs)}), found {len(ops)}",
                            where=where)
    from_base = {ref.name: (ref, data) for ref, data in src.segments} if src is not None else {}
    out, rebuilt = [], op.descriptor is not None
    for ref, sop in zip(refs, ops):
        seg_where = f"{where}, segment {ref.name!r}"
        if sop.source == "patch":
            data = _payload(payloads, "uint8", None, seg_where).tobytes()
            rebuilt = True
        else:
            if ref.name not in from_base:
                raise BadDescriptor("expected a base record with a segment of this name, found none", where=seg_where)
            bref, bdata = from_base[ref.name]
            if sop.source == "base":
                # the partner's stored bytes are a valid encoding of the result's stream only
                # under the same codecs
                if bref.raw_length != ref.raw_length or canonical(bref.codecs) != canonical(ref.codecs):
                    raise BadDescriptor(f"base segment: expected raw_length {ref.raw_length} and codecs "
                                        f"{_chain(ref.codecs)}, found {bref.raw_length} and {_chain(bref.codecs)}",
                                        where=seg_where)
                data = bdata
            else:
                # this machine's encoders: the bytes may differ from the server's, the stream may not
                data = P.reencode_segment(ref.name, ref.codecs,
                                          delta_stream(sop, ref, bref, bdata, payloads, limits, strict, seg_where),
                                          seg_where, strict)
                rebuilt = True
        out.append((data, ref.verbatim))
    return out, rebuilt


def _chain(codecs) -> str:
    return "[" + ", ".join(str(c.get("codec")) if isinstance(c, dict) else "?" for c in codecs) + "]" \
        if isinstance(codecs, list) else repr(codecs)


def _check(base: RecordReader, rtype: str, desc: dict, frame: F.Frame, segments, rebuilt: bool,
           entries: list[S.IndexEntry], names: set[str], limits: Limits, strict: bool, where: str) -> bytes:
    """Check the rebuilt record as a reader would (FORMAT.md §5), decode it when anything of it
    came from the patch, and return what its record digest adds (a MODL structure's SHA-256)."""
    if rtype == _META:
        S.parse_meta(desc, where, strict)
        return b""
    if rtype == _ALIS:
        previous = entries[-1] if entries else None
        targets = set(previous.names) if previous is not None and previous.record_type == _TENS else set()
        for name, target in S.parse_aliases(desc, limits, where, strict):
            if target not in targets or name in names:
                raise BadLayout(f"alias {name!r}: expected a new name for a tensor of the TENS record before",
                                where=where)
            names.add(name)
        return b""
    stored = {}
    if rtype == _MODL:
        if entries:
            raise BadLayout("a MODL record must come first after META", where=where)
        rec = S.parse_model(desc, frame.body_offset, frame.body_length, limits, where, strict)
    elif rtype == _FILE:
        if entries and entries[-1].record_type not in (_MODL, _FILE):
            raise BadLayout("a FILE record must follow META, MODL or another FILE record", where=where)
        rec = S.parse_file(desc, frame.body_offset, frame.body_length, limits, where, strict)
        if "\0" + rec.path in names:  # paths and tensor names share the set, apart
            raise BadLayout(f"duplicate file path {rec.path!r}", where=where)
        names.add("\0" + rec.path)
    else:
        rec = S.parse_tensor(desc, frame.offset, frame.body_offset, frame.body_length, limits, where, strict)
        for name in rec.names:
            if name in names:
                raise BadLayout(f"duplicate tensor name {name!r}", where=where)
            names.add(name)
    for ref, (data, _) in zip(rec.segments, segments):
        stored[ref.name] = (ref.codecs, ref.raw_length, data)
    # the result's own reading rules (its minor), not the base's
    result = types.SimpleNamespace(limits=limits, strict=strict, src=types.SimpleNamespace(mem=None))
    if rtype == _MODL:
        return hashlib.sha256(_structure(result, rec, stored)[1]).digest()
    if rebuilt and rtype == _FILE:
        read_file_record(result, rec, stored)  # its bytes against its digest
    elif rebuilt:  # copied records decode as their partners did; rebuilt ones are proved here
        _decode(result, rec, stored, verify=True)
    return b""
