"""Making a patch (spec/patch.md): the cheapest description of NEW in terms of OLD.

Every record of NEW is matched with a record of OLD, its **partner**: the record with the same
bytes (then it is copied: a few bytes in the patch), else the one holding a tensor of the same
name, else one whose decoded array has the same digest (a renamed tensor), else none (an added
tensor). Each segment of a record with a partner is then the cheapest of: copied from the
partner (same stream under the same codecs), a delta against the partner's stream of the same
name (xor or add, stored as a tensor of the patch), or its stored bytes given whole.

Patches are content patches (spec/patch.md, since 1.4): they bind OLD and NEW by their content
digests, so the applier encodes a rebuilt stream with its own encoders and any zstd will do.

The patch is checked before it is handed out: it is applied to OLD and must give NEW's content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import tempfile
from typing import BinaryIO, Callable

import numpy as np
import zstandard

from .. import __version__, dtypes, planner
from .. import pipeline as P
from ..archive import ArchiveWriter
from ..codecs.abc import TensorSpec
from ..archive import reader
from ..container.content import canonical, content_form
from ..container.records import StoredRecord
from ..container.schema import SegmentRef
from ..errors import NnarError, UnsupportedVersion
from ..report import human_bytes
from ..limits import DEFAULT_LIMITS, Limits
from .. import constants as C
from . import apply as A
from . import delta as D
from .schema import BASE, PATCH, PatchHeader, RecordOp, SegmentOp

#: what every patch's encoder map says (informative: who made it; a content patch does not need
#: the applier to have the same encoders)
ENCODER = {"nnar": __version__, "zstd": ".".join(map(str, zstandard.ZSTD_VERSION))}


@dataclasses.dataclass
class RecordStat:
    """What the patch does for one record of NEW, and what that costs."""

    number: int  # in NEW: 0 META, i the i-th entry of its index
    record_type: str
    names: tuple[str, ...]
    action: str  # unchanged | renamed | changed | replaced | added
    patch_bytes: int  # payload stored in the patch for it, and its descriptor when given whole
    new_bytes: int  # the record's size in NEW: what sending it whole would cost
    base_names: tuple[str, ...] = ()  # the partner's tensors
    segments: list[str] = dataclasses.field(default_factory=list)  # per segment: "p0 xor/1 1.2 KiB"
    path: str = ""  # a FILE record's (FORMAT.md §5.7)

    def label(self) -> str:
        if self.names:
            return self.names[0] + (f" (+{len(self.names) - 1} in group)" if len(self.names) > 1 else "")
        if self.path:
            return f"(file {self.path})"
        return {"META": "(metadata)", "MODL": "(model structure)", "ALIS": "(aliases)"}.get(self.record_type,
                                                                                          self.record_type)

    def to_json(self) -> dict:
        out = {"record": self.number, "type": self.record_type, "names": list(self.names), "action": self.action,
               "patch_bytes": self.patch_bytes, "new_bytes": self.new_bytes, "segments": self.segments}
        if self.action == "renamed":
            out["from"] = list(self.base_names)
        if self.path:
            out["path"] = self.path
        return out


@dataclasses.dataclass
class PatchStat:
    base_length: int
    result_length: int
    patch_length: int
    records: list[RecordStat]
    removed: list[str]  # tensors of OLD that NEW no longer has

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            if r.record_type == "TENS":
                out[r.action] = out.get(r.action, 0) + len(r.names)
        if self.removed:
            out["removed"] = len(self.removed)
        return out

    def to_json(self) -> dict:
        return {"base_length": self.base_length, "result_length": self.result_length,
                "patch_length": self.patch_length, "counts": self.counts(),
                "records": [r.to_json() for r in self.records], "removed": self.removed}


@dataclasses.dataclass
class _BaseInfo:
    """What is remembered of each OLD record while NEW is matched (no bodies)."""

    record_type: str
    names: tuple[str, ...]
    identity: bytes  # SHA-256 of everything stored but the frame's position-dependent fields


def _identity(rec: StoredRecord) -> bytes:
    h = hashlib.sha256(rec.frame.record_type + rec.frame.record_flags.to_bytes(4, "little"))
    h.update(len(rec.descriptor).to_bytes(8, "little") + rec.descriptor)
    for ref, data in rec.segments:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


def _names(rec: StoredRecord) -> tuple[str, ...]:
    if rec.record_type != "TENS":
        return ()
    return tuple(t[0] for t in rec.desc["tensors"])


class _Spool:
    """Payload tensors, encoded as the records are matched, kept in a temporary file until the
    patch's header (which comes first) is complete."""

    def __init__(self):
        self.f = tempfile.TemporaryFile()
        self.items: list[tuple[str, TensorSpec, list, list, bytes]] = []

    def add(self, name: str, enc: P.EncodedTensor, digest: bytes) -> None:
        segs = []
        for s in enc.segments:
            start = self.f.tell()
            self.f.write(s.data)
            segs.append((s.name, s.codecs, s.raw_length, start, self.f.tell() - start))
        self.items.append((name, enc.spec, enc.pipeline, segs, digest))

    def write_to(self, writer: ArchiveWriter) -> None:
        for name, spec, pipeline, segs, digest in self.items:
            out = []
            for sname, codecs, raw_length, start, length in segs:
                self.f.seek(start)
                out.append(P.EncodedSegment(sname, codecs, raw_length, self.f.read(length)))
            writer.write_encoded(name, P.EncodedTensor(spec, pipeline, out), digest)

    def close(self) -> None:
        self.f.close()


def _width(desc: dict, raw_length: int) -> int:
    """Element width for deltas of a stream: the dtype's for a tensor stored raw (so ``add``
    carries across bytes); 1 for every other stream (byte planes, indices, codes)."""
    pipeline = desc.get("pipeline")
    if isinstance(pipeline, list) and len(pipeline) == 1 and isinstance(pipeline[0], dict) \
            and pipeline[0].get("codec") == "nnar.raw":
        w = dtypes.itemsize(desc["dtype"]) if desc.get("dtype") in dtypes.DTYPE_NAMES else 1
        if raw_length % w == 0:
            return w
    return 1


#: array→bytes stages whose every stream holds each element's bytes in element order, so the
#: stream of a group is its members' streams one after the other
_ELEMENTWISE = {"nnar.raw": None, "nnar.byteplanes": 1}  # bytes per element in a stream: None = itemsize


def _member_ranges(rec: StoredRecord, src: StoredRecord):
    """For a TENS record whose members differ from its partner's (a tensor added to or removed
    from a group): the partner's stream pieces lined up with the record's members, zeros where
    a member is new, or None when the layouts do not allow it."""
    if rec.record_type != "TENS" or src.record_type != "TENS":
        return None
    new, old = rec.desc, src.desc
    if new["tensors"] == old["tensors"] or new["dtype"] != old["dtype"] or new["dtype"] not in dtypes.DTYPE_NAMES:
        return None
    stages = [p.get("codec") if isinstance(p, dict) else None for p in (*new["pipeline"], *old["pipeline"])]
    if len(stages) != 2 or stages[0] != stages[1] or stages[0] not in _ELEMENTWISE:
        return None
    bpe = _ELEMENTWISE[stages[0]] or dtypes.itemsize(new["dtype"])
    placed, start = {}, 0
    for name, shape in old["tensors"]:
        size = math.prod(shape)
        placed[name] = (start, size)
        start += size
    ranges: list[list] = []
    for name, shape in new["tensors"]:
        size = math.prod(shape)
        hit = placed.get(name)
        piece = [hit[0] * bpe, size * bpe] if hit is not None and hit[1] == size else [None, size * bpe]
        last = ranges[-1] if ranges else None
        if last is not None and (last[0] is None) == (piece[0] is None) and \
                (piece[0] is None or last[0] + last[1] == piece[0]):
            last[1] += piece[1]
        else:
            ranges.append(piece)
    if all(r[0] is None for r in ranges):
        return None
    return tuple(tuple(r) for r in ranges)


class _Differ:
    def __init__(self, old_f, new_f, level: int, limits: Limits, progress):
        self.level, self.limits, self.progress = level, limits, progress
        self.old = reader(old_f, limits)
        self.new = reader(new_f, limits)
        if self.new.minor > C.FORMAT_MINOR:
            raise UnsupportedVersion(f"NEW is format 1.{self.new.minor}; this nnar writes patches for archives up to "
                                     f"1.{C.FORMAT_MINOR}")
        self.spool = _Spool()
        self.base: list[_BaseInfo] = []
        self.by_identity: dict[bytes, int] = {}
        self.by_name: dict[str, int] = {}
        self.by_digest: dict[bytes, int] = {}
        self.modl: int | None = None
        self.by_path: dict[str, int] = {}
        for k in range(len(self.old.index()) + 1):
            rec = self.old.read_stored(k)
            info = _BaseInfo(rec.record_type, _names(rec), _identity(rec))
            self.base.append(info)
            self.by_identity.setdefault(info.identity, k)
            for n in info.names:
                self.by_name.setdefault(n, k)
            if rec.record_type == "TENS":
                self.by_digest.setdefault(rec.desc["digest"], k)
            elif rec.record_type == "MODL":
                self.modl = k
            elif rec.record_type == "FILE":
                self.by_path.setdefault(rec.desc.get("path"), k)

    def partner(self, rec: StoredRecord, names: tuple[str, ...]) -> tuple[int | None, bool]:
        """(OLD record to derive from, whether found by digest: a rename)."""
        if rec.number == 0:
            return 0, False
        if rec.record_type == "MODL":
            return self.modl, False
        if rec.record_type == "FILE":  # a folder's file: its partner is the file of the same path
            return self.by_path.get(rec.desc.get("path")), False
        if rec.record_type != "TENS":
            return None, False
        for n in names:
            if n in self.by_name:
                return self.by_name[n], False
        k = self.by_digest.get(rec.desc["digest"])
        return k, k is not None

    def record(self, rec: StoredRecord) -> tuple[RecordOp, RecordStat]:
        names = _names(rec)
        new_bytes = rec.frame.end - rec.frame.offset
        k = self.by_identity.get(_identity(rec))
        if k is not None:
            return RecordOp(base=k), RecordStat(rec.number, rec.record_type, names, "unchanged", 0, new_bytes,
                                                self.base[k].names)
        k, renamed = self.partner(rec, names)
        src = self.old.read_stored(k) if k is not None else None
        if src is not None and src.record_type != rec.record_type:
            k, src = None, None
        desc = canonical(content_form(rec.record_type, rec.desc))
        op = RecordOp(
            base=k,
            record_type=None if src is not None else rec.record_type,
            descriptor=None if src is not None and canonical(content_form(src.record_type, src.desc)) == desc
            else desc)
        cost = len(op.descriptor or b"")
        seg_ops, notes = [], []
        base_segs = {ref.name: (ref, data) for ref, data in src.segments} if src is not None else {}
        ranges = _member_ranges(rec, src) if src is not None else None
        for ref, data in rec.segments:
            sop, seg_cost, note = self.segment(rec, ref, data, base_segs.get(ref.name), ranges)
            seg_ops.append(sop)
            notes.append(f"{ref.name} {note}")
            cost += seg_cost
        if src is None or any(s.source != "base" for s in seg_ops):
            op = dataclasses.replace(op, segments=tuple(seg_ops))
        if src is None:
            action = "added"
        elif renamed:
            action = "renamed"
        elif any(s.source == "delta" for s in seg_ops):
            action = "changed"
        elif seg_ops and all(s.source == "patch" for s in seg_ops):
            action = "replaced"
        else:
            action = "changed" if rec.record_type != "TENS" or op.descriptor is not None else "unchanged"
        return op, RecordStat(rec.number, rec.record_type, names, action, cost, new_bytes,
                              self.base[k].names if k is not None else (), notes,
                              rec.desc.get("path", "") if rec.record_type == "FILE" else "")

    def segment(self, rec: StoredRecord, ref: SegmentRef, data, base, ranges=None) -> tuple[SegmentOp, int, str]:
        """The cheapest way to give one segment: (how, bytes it costs in the patch, note)."""
        # the partner's stored bytes stand for NEW's stream when its codecs are NEW's (spec/patch.md §4.2)
        same_chain = base is not None and ranges is None and base[0].raw_length == ref.raw_length and \
            canonical(base[0].codecs) == canonical(ref.codecs)
        if same_chain and bytes(base[1]) == bytes(data):
            return BASE, 0, "copied"
        name = f"{rec.number}/{ref.name}"
        stored = np.frombuffer(data, np.uint8)
        best = (planner.encode(stored, TensorSpec("uint8", stored.shape),
                               planner.lossless_candidates(TensorSpec("uint8", stored.shape), self.level)),
                PATCH, hashlib.sha256(stored).digest())
        if base is not None and ref.raw_length and (ranges is not None or base[0].raw_length == ref.raw_length):
            where = f"NEW record {rec.number}, segment {ref.name!r}"
            stream = P.decode_segment(ref.name, ref.codecs, ref.raw_length, data, self.limits, where)
            bref, bdata = base
            old = P.decode_segment(ref.name, bref.codecs, bref.raw_length, bdata, self.limits,
                                   f"OLD segment {ref.name!r}")
            if same_chain and bytes(old) == bytes(stream):  # the same stream, compressed by another zstd
                return BASE, 0, "copied"
            if ranges is not None:
                old = A._assemble(old, ranges, where)
            width = _width(rec.desc, ref.raw_length)
            for op in ("xor", "add"):
                d = D.make(stream, old, op, width)
                enc = D.encode(d, self.level)
                if planner.cost(enc) < planner.cost(best[0]):
                    best = (enc, SegmentOp("delta", op, width, ranges), hashlib.sha256(d.tobytes()).digest())
        enc, sop, digest = best
        self.spool.add(name, enc, digest)
        note = f"{'whole' if sop.source == 'patch' else f'{sop.op}/{sop.width}'} {human_bytes(enc.stored_bytes)}"
        return sop, enc.stored_bytes, note

    def run(self) -> tuple[list[RecordOp], list[RecordStat]]:
        ops, stats = [], []
        total = len(self.new.index()) + 1
        for j in range(total):
            op, stat = self.record(self.new.read_stored(j))
            ops.append(op)
            stats.append(stat)
            if self.progress:
                self.progress(stat.label(), j + 1, total)
        return ops, stats


def diff(old_f, new_f, out: BinaryIO | None, *, level: int = planner.DEFAULT_LEVEL, limits: Limits = DEFAULT_LIMITS,
         progress: Callable[[str, int, int], None] | None = None) -> PatchStat:
    """Write the patch that turns ``old_f`` into ``new_f`` (seekable files or bytes) to ``out``;
    None: only measure it. Returns what it does per record."""
    old_start = None if isinstance(old_f, (bytes, bytearray, memoryview)) else old_f.tell()
    base_length, result_length = _length(old_f), _length(new_f)
    d = _Differ(old_f, new_f, level, limits, progress)
    try:
        ops, stats = d.run()
        header = PatchHeader("content", d.new.minor, tuple(ops), dict(ENCODER),
                             base_content=d.old.content_digest(), result_content=d.new.content_digest())
        removed = _removed(d, stats)
        with tempfile.TemporaryFile() as tmp:
            with ArchiveWriter(tmp, source_format="nnar-patch", patch=header.to_map()) as w:
                d.spool.write_to(w)
            length = tmp.tell()
            tmp.seek(0)
            if old_start is not None:
                old_f.seek(old_start)
            try:  # the patch must give NEW back, or it is not handed out
                A.apply(old_f, tmp, None, limits)
            except NnarError as e:
                raise NnarError(f"internal error: the patch made does not rebuild NEW ({e}); please report it") from e
            if out is not None:
                tmp.seek(0)
                shutil.copyfileobj(tmp, out)
    finally:
        d.spool.close()
    return PatchStat(base_length, result_length, length, stats, removed)


def _length(f) -> int:
    """The length of a seekable file from its position on, or of bytes; the position is kept."""
    if isinstance(f, (bytes, bytearray, memoryview)):
        return memoryview(f).nbytes
    start = f.tell()
    end = f.seek(0, 2)
    f.seek(start)
    return end - start


def _removed(d: _Differ, stats: list[RecordStat]) -> list[str]:
    new_names = {n for s in stats for n in s.names}
    renamed_from = {n for s in stats if s.action == "renamed" for n in s.base_names}
    return [n for b in d.base for n in b.names if n not in new_names and n not in renamed_from]


def stat_lines(stat: PatchStat) -> list[str]:
    """The per-record table of ``nnar diff --stat``."""
    lines = [f"{'action':<10} {'patch':>10} {'new':>10}  tensor  [segments]"]
    for r in stat.records:
        if r.action == "unchanged" and r.record_type != "TENS":
            continue
        extra = f" <- {r.base_names[0]}" if r.action == "renamed" and r.base_names else ""
        segs = f"  [{', '.join(r.segments)}]" if r.segments and r.action != "unchanged" else ""
        lines.append(f"{r.action:<10} {human_bytes(r.patch_bytes):>10} {human_bytes(r.new_bytes):>10}  {r.label()}{extra}{segs}")
    for n in stat.removed:
        lines.append(f"{'removed':<10} {'0 B':>10} {'':>10}  {n}")
    counts = ", ".join(f"{v} {k}" for k, v in stat.counts().items())
    lines.append(f"patch {human_bytes(stat.patch_length)} for NEW {human_bytes(stat.result_length)} "
                 f"({stat.patch_length / max(stat.result_length, 1):.1%}): {counts}")
    return lines
