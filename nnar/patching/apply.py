"""Applying a patch (spec/patch.md): base archive + patch → the result archive.

A content patch (1.4) is applied by :mod:`.rebuild`; this module reads a patch's header, hands
its payload out, and applies a byte patch (1.3, spec/patch.md §9) itself, byte for byte.

The base is read at random (a device keeps it on disk), the patch in order (it may arrive on a
pipe), and the result is written front to back. Memory is one record of each at a time: the
largest tensor, a few times over, never the model. Nothing here trusts the patch: every
reference is range-checked, every payload tensor's digest is checked before use, and the result
is compared with the digest the patch records; the caller commits the output only then.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO, Callable, Iterator

import numpy as np

from .. import constants as C
from .. import pipeline as P
from ..archive import _decode, _member
from ..container import framing as F
from ..container import schema as S
from ..container.records import RecordReader, StoredRecord, frame_record
from ..errors import BadDescriptor, BadLayout, CodecDataError, DigestMismatch, NnarIOError, WrongBase
from ..limits import DEFAULT_LIMITS, Limits
from . import delta as D
from .schema import PatchHeader, RecordOp, SegmentOp, parse_patch

_CHUNK = 1 << 20


def file_digest(f) -> tuple[int, bytes]:
    """(length, SHA-256) of a whole seekable file or bytes, read in chunks; the position is kept."""
    if isinstance(f, (bytes, bytearray, memoryview)):
        return memoryview(f).nbytes, hashlib.sha256(f).digest()
    h, n = hashlib.sha256(), 0
    start = f.tell()
    try:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    except OSError as e:
        raise NnarIOError(f"read failed: {e.strerror or e}") from e
    f.seek(start)
    return n, h.digest()


class _Sink:
    """The result as it is written: counted and hashed on the way to ``f`` (None: hash only)."""

    def __init__(self, f: BinaryIO | None):
        self.f, self.pos, self.sha = f, 0, hashlib.sha256()

    def write(self, data) -> None:
        self.sha.update(data)
        self.pos += memoryview(data).nbytes
        if self.f is not None:
            try:
                self.f.write(data)
            except OSError as e:
                raise NnarIOError(f"write failed: {e.strerror or e}", where=f"offset {self.pos}") from e


def read_header(patch: RecordReader) -> tuple[PatchHeader, Iterator]:
    """The patch's header, and an iterator over the rest of its records."""
    records = patch.iter_records()
    first = next(records, None)
    if first is None or first[0] != "PTCH":
        raise BadLayout("not a patch: expected a PTCH record first after META, found "
                        f"{'none' if first is None else first[0]}", where="patch")
    return parse_patch(first[1], patch.limits, "PTCH record", patch.strict, patch.minor), records


def _payloads(patch: RecordReader, records: Iterator) -> Iterator[np.ndarray]:
    """The patch's tensors in order, each checked against its digest."""
    for item in records:
        if item[0] != "TENS":
            raise BadLayout(f"patch: expected only TENS records after PTCH, found {item[0]}", where="patch")
        rec, segments = item[1], item[2]
        array = _decode(patch, rec, segments, verify=True)
        for m in rec.members:
            yield _member(rec, array, m)


def apply(base_f, patch_f, out: BinaryIO | None, limits: Limits = DEFAULT_LIMITS,
          progress: Callable[[int, int], None] | None = None) -> PatchHeader:
    """Write the result of ``patch_f`` applied to ``base_f`` to ``out`` (None: only check it).

    Raises :class:`WrongBase` before writing anything if ``base_f`` is not the patch's base, and
    :class:`DigestMismatch` if the result is not the one the patch promises (the caller must then
    discard what was written: :func:`nnar.patch` writes atomically)."""
    patch = RecordReader(patch_f, limits, patch=True)
    header, records = read_header(patch)
    if header.kind == "content":
        from .rebuild import apply_content
        apply_content(header, _payloads(patch, records), base_f, _Sink(out), limits, progress)
        return header
    length, digest = file_digest(base_f)
    if (length, digest) != (header.base_length, header.base_digest):
        raise WrongBase(f"this patch (format 1.3, bound to its base's exact bytes) applies to the archive with SHA-256 "
                        f"{header.base_digest.hex()[:16]}… ({header.base_length} bytes); the base given has "
                        f"{digest.hex()[:16]}… ({length} bytes)")
    base = RecordReader(base_f, limits)
    n_base = len(base.index()) + 1
    payloads = _payloads(patch, records)
    sink = _Sink(out)
    strict = header.result_minor <= C.FORMAT_MINOR  # how strictly to read the result's descriptors (FORMAT.md §10)
    preamble = F.pack_preamble(header.result_minor)
    sink.write(preamble)
    for i, op in enumerate(header.records):
        where = f"patch record {i}"
        if op.base is not None and not 0 <= op.base < n_base:
            raise BadDescriptor(f"records[{i}] base: expected a record number below {n_base}, found {op.base}",
                                where=where)
        src = base.read_stored(op.base) if op.base is not None else None
        rtype = op.record_type or src.record_type
        if (rtype == "META") != (i == 0):
            raise BadLayout(f"records[{i}]: expected {'META' if i == 0 else 'no META'} here, found {rtype}", where=where)
        flags = src.frame.record_flags if op.flags is None else op.flags
        stored_desc = src.descriptor if op.descriptor is None else op.descriptor
        segments = _segments(op, src, rtype, flags, stored_desc, payloads, limits, strict, where)
        pieces = frame_record(sink.pos, rtype.encode(), stored_desc, flags, segments,
                              preamble if i == 0 else b"")
        if op.body_crc is not None:
            found = F.parse_frame(pieces[0], sink.pos).body_crc
            if found != op.body_crc:
                raise DigestMismatch(
                    f"rebuilt record: expected body CRC-32 {op.body_crc:#010x}, computed {found:#010x}; its segments "
                    f"were encoded again and came out different (the patch was made with {_encoder(header)})",
                    where=where)
        for p in pieces:
            sink.write(p)
        if progress:
            progress(i + 1, len(header.records))
    index_offset = sink.pos
    for p in frame_record(index_offset, C.RECORD_INDEX, header.index_descriptor, header.index_flags, []):
        sink.write(p)
    sink.write(F.pack_trailer(index_offset, sink.pos + C.TRAILER_SIZE))
    extra = next(payloads, None)  # also makes the patch reader check its index and trailer
    if extra is not None:
        raise BadLayout("patch: it holds more tensors than its records use", where="patch")
    if (sink.pos, sink.sha.digest()) != (header.result_length, header.result_digest):
        raise DigestMismatch(f"result: expected SHA-256 {header.result_digest.hex()[:16]}… ({header.result_length} "
                             f"bytes), built {sink.sha.hexdigest()[:16]}… ({sink.pos} bytes)", where="patch")
    return header


def _encoder(header: PatchHeader) -> str:
    return ", ".join(f"{k} {v}" for k, v in header.encoder.items()) or "unknown encoders"


def _segments(op: RecordOp, src: StoredRecord | None, rtype: str, flags: int, stored_desc: bytes,
              payloads: Iterator[np.ndarray], limits: Limits, strict: bool, where: str) -> list[tuple[bytes, bool]]:
    """The stored bytes of each segment of the rebuilt record, with whether it is verbatim."""
    if rtype not in ("TENS", "MODL"):
        if op.segments:
            raise BadDescriptor(f"a {rtype} record has no segments, found {len(op.segments)}", where=where)
        return []
    desc = F.decode_descriptor(stored_desc, flags, limits.max_descriptor_bytes, where, limits)
    if not isinstance(desc.get("segments"), list):
        raise BadDescriptor("rebuilt descriptor: expected a 'segments' list", where=where)
    refs = S.segment_entries(desc["segments"], limits, where, strict)
    ops = op.segments if op.segments is not None else (SegmentOp("base"),) * len(refs)
    if len(ops) != len(refs):
        raise BadDescriptor(f"segments: expected one per segment of the descriptor ({len(refs)}), found {len(ops)}",
                            where=where)
    from_base = {ref.name: (ref, data) for ref, data in src.segments} if src is not None else {}
    out = []
    for ref, sop in zip(refs, ops):
        seg_where = f"{where}, segment {ref.name!r}"
        if sop.source == "patch":
            data = _payload(payloads, "uint8", ref.length, seg_where).tobytes()
        else:
            if ref.name not in from_base:
                raise BadDescriptor("expected a base record with a segment of this name, found none", where=seg_where)
            bref, bdata = from_base[ref.name]
            if sop.source == "base":
                if bref.length != ref.length:
                    raise BadDescriptor(f"base segment: expected {ref.length} stored bytes, found {bref.length}",
                                        where=seg_where)
                data = bdata
            else:
                data = P.reencode_segment(ref.name, ref.codecs,
                                          delta_stream(sop, ref, bref, bdata, payloads, limits, strict, seg_where),
                                          seg_where, strict)
                if memoryview(data).nbytes != ref.length:
                    raise DigestMismatch(f"encoding the rebuilt stream again gave {memoryview(data).nbytes} bytes, "
                                         f"expected {ref.length}", where=seg_where)
        out.append((data, ref.verbatim))
    return out


def delta_stream(sop: SegmentOp, ref, bref, bdata, payloads: Iterator[np.ndarray], limits: Limits, strict: bool,
                 where: str) -> bytes:
    """A ``"delta"`` segment's result stream (spec/patch.md §5): the partner's stream (``bref``,
    ``bdata``), lined up by ``ranges``, combined with the next payload tensor."""
    base_length = bref.raw_length if sop.ranges is None else sum(n for _, n in sop.ranges)
    if base_length != ref.raw_length or ref.raw_length % sop.width:
        raise BadDescriptor(f"delta: base stream of {base_length} bytes, result stream of {ref.raw_length}: expected "
                            f"equal lengths, a multiple of {sop.width}", where=where)
    stream = P.decode_segment(ref.name, bref.codecs, bref.raw_length, bdata, limits, where, strict)
    if sop.ranges is not None:
        stream = _assemble(stream, sop.ranges, where)
    d = _payload(payloads, D.DTYPE_NAME[sop.width], ref.raw_length // sop.width, where)
    return D.apply(stream, d, sop.op, sop.width)


def _assemble(stream, ranges, where: str) -> bytes:
    """The base stream a delta applies to, from pieces of the partner's stream and zeros
    (spec/patch.md §5): how a group record whose members changed still takes a delta."""
    view, out = memoryview(stream).cast("B"), bytearray()
    for start, length in ranges:
        if start is None:
            out += bytes(length)
        elif start + length > len(view):
            raise BadDescriptor(f"delta range [{start}, {start + length}) lies past the partner's stream of "
                                f"{len(view)} bytes", where=where)
        else:
            out += view[start: start + length]
    return bytes(out)


def _payload(payloads: Iterator[np.ndarray], dtype: str, size: int | None, where: str) -> np.ndarray:
    """The next payload tensor: of ``dtype``, one-dimensional, of ``size`` elements (None: any)."""
    array = next(payloads, None)
    if array is None:
        raise BadLayout("patch: expected one more tensor, found the end of the patch", where=where)
    found = array.dtype.name if array.dtype.kind in "ui" else str(array.dtype)
    if array.ndim != 1 or (size is not None and array.size != size) or found != dtype:
        raise CodecDataError(f"patch tensor: expected {dtype}[{'n' if size is None else size}], found "
                             f"{found}{list(array.shape)}", where=where)
    return array
