"""Reading and writing whole records: frame + descriptor + body (spec/FORMAT.md §4–§8).

:class:`RecordWriter` writes an archive front to back in one pass (a pipe will do): preamble,
META, one TENS per tensor, INDX, trailer. :class:`RecordReader` reads one back either in order
from any stream, in memory bounded by one record, or at random through the index when the file
can seek.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Iterator

import numpy as np

from .. import constants as C
from .. import threads
from ..errors import BadLayout, DigestMismatch, NnarError, ChecksumMismatch, InvalidInput, LimitExceeded, NnarIOError, ReservedNonZero, Truncated, UnsupportedRecord, WriterStateError
from ..limits import DEFAULT_LIMITS, Limits
from . import framing as F
from . import schema as S
from .content import ContentDigest, record_digest
from .io import Source

_TENS, _INDX, _META = C.RECORD_TENSOR.decode(), C.RECORD_INDEX.decode(), C.RECORD_META.decode()
_MODL, _ALIS, _PTCH = C.RECORD_MODEL.decode(), C.RECORD_ALIAS.decode(), C.RECORD_PATCH.decode()
_FILE = C.RECORD_FILE.decode()


def frame_record(start: int, rtype: bytes, descriptor: bytes, flags: int, segments: list, crc_prefix: bytes = b""):
    """The pieces of one record written at offset ``start``: frame, stored descriptor, and a body
    of ``segments`` ((stored bytes, verbatim) pairs) laid out by FORMAT.md §5.2.3. The layout
    depends on ``start``: a lone verbatim segment is padded to the next aligned offset."""
    body_start = start + C.FRAME_SIZE + len(descriptor)
    pieces, pos, crc = [], body_start, 0
    for (data, _), seg_start in zip(segments, S.layout_segments(body_start, [(memoryview(d).nbytes, v)
                                                                             for d, v in segments])):
        if seg_start > pos:
            pad = bytes(seg_start - pos)
            pieces.append(pad)
            crc = F.crc32(pad, crc)
        pieces.append(data)
        crc = F.crc32(data, crc)
        pos = seg_start + memoryview(data).nbytes
    return [F.pack_frame(rtype, descriptor, pos - body_start, crc, flags, crc_prefix), descriptor, *pieces]



#: bodies at least this long have their CRC summed in parts, one per decoding thread
PARALLEL_CRC_BYTES = 8 << 20


def body_crc(body) -> int:
    """CRC-32 of a record body: large ones in parts on the decoding threads (zlib releases the
    GIL), combined."""
    view = memoryview(body).cast("B")
    parts = threads.split(len(view), PARALLEL_CRC_BYTES // 2) if len(view) >= PARALLEL_CRC_BYTES else [(0, len(view))]
    if len(parts) == 1:
        return F.crc32(view)
    crcs = threads.run_parts(lambda a, b: F.crc32(view[a:b]), parts)
    crc = crcs[0]
    for (a, b), part in zip(parts[1:], crcs[1:]):
        crc = F.crc32_combine(crc, part, b - a)
    return crc


class DeferredBody:
    """What :meth:`RecordReader.iter_records` yields for a TENS record's segments when its
    ``defer_body`` asked to leave the body on disk (a local file, or memory): the record's frame, for
    a consumer that reads the body itself, a piece at a time, CRC first."""
    __slots__ = ("frame",)

    def __init__(self, frame: F.Frame):
        self.frame = frame

class RecordWriter:
    """Writes records to a binary file object, which need not be seekable.

    States: ``open`` (after the preamble and META are written) → ``closed`` (INDX and trailer
    written) or ``aborted`` (nothing more is written; the output is not a valid archive).
    """

    def __init__(self, f, meta: S.Meta):
        self._f = f
        self._pos = 0
        self._entries: list[S.IndexEntry] = []
        self._names: set[str] = set()
        self.state = "open"
        #: the content digest (FORMAT.md §5.3.1) of what is written, for the index
        self.content = ContentDigest()
        preamble = F.pack_preamble()
        self._write(preamble)
        # META's header CRC covers the preamble too: no byte of an archive is left unchecked
        self._write_record(C.RECORD_META, S.meta_descriptor(meta), [], crc_prefix=preamble)
        self.first_offset = self._pos

    def has_name(self, name: str) -> bool:
        return name in self._names

    @property
    def entries(self) -> list[S.IndexEntry]:
        return list(self._entries)

    def _write(self, data) -> None:
        try:
            self._f.write(data)
        except OSError as e:
            self.state = "aborted"
            raise NnarIOError(f"write failed: {e.strerror or e}", where=f"offset {self._pos}") from e
        self._pos += memoryview(data).nbytes

    def _write_record(self, rtype: bytes, descriptor: dict, segments: list, crc_prefix: bytes = b"",
                      must_understand: bool = True, extra: bytes = b"") -> tuple[int, int]:
        desc, desc_flag = F.encode_descriptor(descriptor)
        self.content.add(record_digest(rtype.decode("latin-1"), descriptor, extra))
        flags = (C.RECORD_FLAG_MUST_UNDERSTAND if must_understand else 0) | desc_flag
        start = self._pos
        for piece in frame_record(start, rtype, desc, flags, [(g.data, not g.codecs) for g in segments], crc_prefix):
            self._write(piece)
        return start, self._pos - start

    def write_tensor(self, names: list[str], descriptor: dict, segments: list) -> S.IndexEntry:
        """Write one TENS record holding the tensors ``names``."""
        self.expect_open("write a tensor")
        for name in names:
            if name in self._names:
                raise InvalidInput(f"tensor name {name!r}: expected unique names, found it twice")
        offset, length = self._write_record(C.RECORD_TENSOR, descriptor, segments)
        self._names.update(names)
        entry = S.IndexEntry(_TENS, offset, length, tuple(names))
        self._entries.append(entry)
        return entry

    def write_model(self, descriptor: dict, segments: list, structure_sha256: bytes) -> None:
        """Write the MODL record; it must come first after META (FORMAT.md §5.4). Not
        must-understand: a reader that only wants the tensors may skip it. The structure's
        SHA-256 is part of the content digest (§5.3.1)."""
        self.expect_open("write the model structure")
        if self._entries:
            raise WriterStateError("cannot write the model structure: expected it before any tensor, found "
                                   f"{len(self._entries)} records written")
        offset, length = self._write_record(C.RECORD_MODEL, descriptor, segments, must_understand=False,
                                            extra=structure_sha256)
        self._entries.append(S.IndexEntry(_MODL, offset, length, ()))

    def write_file(self, descriptor: dict, segments: list) -> None:
        """Write a FILE record (§5.7): after META and MODL, before any tensor. Not must-understand:
        a reader that only wants the tensors skips it."""
        self.expect_open("write a file")
        if self._entries and self._entries[-1].record_type not in (_MODL, _FILE):
            raise WriterStateError("cannot write a file: expected files right after META and MODL, before any tensor")
        offset, length = self._write_record(C.RECORD_FILE, descriptor, segments, must_understand=False)
        self._entries.append(S.IndexEntry(_FILE, offset, length, ()))

    def write_aliases(self, pairs: list[tuple[str, str]]) -> None:
        """Write an ALIS record right after the TENS record holding every target (§5.5)."""
        self.expect_open("write aliases")
        last = self._entries[-1] if self._entries else None
        if last is None or last.record_type != _TENS or not {t for _, t in pairs} <= set(last.names):
            raise WriterStateError("cannot write aliases: their targets must be tensors of the record just written")
        for name, _ in pairs:
            if name in self._names:
                raise InvalidInput(f"tensor name {name!r}: expected unique names, found it twice")
        offset, length = self._write_record(C.RECORD_ALIAS, S.alias_descriptor(pairs), [])
        self._names.update(n for n, _ in pairs)
        self._entries.append(S.IndexEntry(_ALIS, offset, length, ()))

    def write_patch(self, descriptor: dict) -> None:
        """Write the PTCH record that makes this file a patch (spec/patch.md); first after META."""
        self.expect_open("write a patch record")
        if self._entries:
            raise WriterStateError("cannot write the patch record: expected it first after META")
        offset, length = self._write_record(C.RECORD_PATCH, descriptor, [])
        self._entries.append(S.IndexEntry(_PTCH, offset, length, ()))

    def close(self) -> None:
        self.expect_open("close")
        index_offset, _ = self._write_index(S.index_descriptor(self._entries, self.content.digest()))
        self._write(F.pack_trailer(index_offset, self._pos + C.TRAILER_SIZE))
        self.state = "closed"

    def _write_index(self, descriptor: dict) -> tuple[int, int]:
        """The INDX record is not part of the content it carries."""
        desc, desc_flag = F.encode_descriptor(descriptor)
        start = self._pos
        for piece in frame_record(start, C.RECORD_INDEX, desc, C.RECORD_FLAG_MUST_UNDERSTAND | desc_flag, []):
            self._write(piece)
        return start, self._pos - start

    def abort(self) -> None:
        if self.state == "open":
            self.state = "aborted"

    def expect_open(self, action: str) -> None:
        if self.state != "open":
            raise WriterStateError(f"cannot {action}: expected an open writer, found it {self.state}")


@dataclasses.dataclass(frozen=True)
class StoredRecord:
    """One record as stored: what a patch copies (spec/patch.md)."""

    number: int  # 0: META; i: the i-th entry of the index
    frame: F.Frame
    descriptor: bytes  # as stored (compressed when the frame's descriptor_zstd flag is set)
    desc: dict  # decoded
    segments: tuple  # (SegmentRef, stored bytes) for TENS and MODL records, in body order

    @property
    def record_type(self) -> str:
        return self.frame.record_type.decode("latin-1")


def check_content(stored: bytes, computed: bytes, where: str) -> None:
    """The index's content digest against the one computed from the records (FORMAT.md §5.3.1)."""
    if stored != computed:
        raise DigestMismatch(f"archive content: the index records content digest {stored.hex()[:16]}…, the records "
                             f"give {computed.hex()[:16]}… (records of another archive, or a damaged one)", where=where)


class RecordReader:
    """Reads the records of one archive from ``f``. See the module docstring."""

    def __init__(self, f, limits: Limits = DEFAULT_LIMITS, *, patch: bool = False,
                 structure_sha256: Callable[[S.ModelRecord, dict], bytes] | None = None):
        self.limits = limits
        #: decodes a MODL record's structure and returns its SHA-256, for the content digest
        #: (FORMAT.md §5.3.1); decoding is the codecs' business, not the container's. Without
        #: it, an archive with a MODL record has its content digest left unchecked.
        self.structure_sha256 = structure_sha256
        #: whether this reader reads a patch (spec/patch.md): then its PTCH record is handed out;
        #: otherwise a PTCH record stops the read (a patch is not a model)
        self.patch = patch
        #: ``rec -> bool``: TENS bodies :meth:`iter_records` leaves on disk (:class:`DeferredBody`)
        self.defer_body: Callable[[S.TensorRecord], bool] | None = None
        self.src = Source(f)
        preamble = bytes(self.src.read_exact(C.PREAMBLE_SIZE, "preamble"))
        self.minor = F.parse_preamble(preamble)
        # An archive of a minor version we know must hold nothing we do not know.
        self.strict = self.minor <= C.FORMAT_MINOR
        frame, desc, raw = self._read_head_raw("META record", crc_prefix=preamble)
        self.meta_record = StoredRecord(0, frame, raw, desc, ())
        if frame.record_type != C.RECORD_META:
            raise BadLayout(f"first record: expected META, found {frame.type_name()!r}", where=f"offset {frame.offset}")
        if frame.body_length:
            raise BadLayout(f"META record: expected an empty body, found {frame.body_length} bytes", where=f"offset {frame.offset}")
        self.meta = S.parse_meta(desc, f"META record at offset {frame.offset}", self.strict)
        self.first_offset = frame.end
        self._index: list[S.IndexEntry] | None = None

    # -- pieces ------------------------------------------------------------------------------

    def _read_head(self, what: str, crc_prefix: bytes = b"") -> tuple[F.Frame, dict]:
        frame, desc, _ = self._read_head_raw(what, crc_prefix)
        return frame, desc

    def _read_head_raw(self, what: str, crc_prefix: bytes = b"") -> tuple[F.Frame, dict, bytes]:
        """Frame, decoded descriptor and the descriptor's stored bytes, all checked."""
        offset = self.src.pos
        frame = F.parse_frame(self.src.read_exact(C.FRAME_SIZE, f"{what} frame"), offset)
        self.limits.check("descriptor_length", frame.descriptor_length, "max_descriptor_bytes", f"offset {offset + 16}")
        # a body holds one record array's streams; allow each segment an alignment's worth of
        # slack beyond max_tensor_bytes (FORMAT.md §9), checked here before anything is read
        slack = self.limits.max_segments * C.SEGMENT_ALIGNMENT
        if frame.body_length > self.limits.max_tensor_bytes + slack:
            raise LimitExceeded(f"body_length: expected at most {self.limits.max_tensor_bytes + slack} "
                                f"(max_tensor_bytes + padding), found {frame.body_length}", where=f"offset {offset + 8}")
        raw = bytes(self.src.read_exact(frame.descriptor_length, f"{frame.type_name()!r} descriptor"))
        frame.check_header_crc(raw, crc_prefix)
        return frame, F.decode_descriptor(raw, frame.record_flags, self.limits.max_descriptor_bytes,
                                          f"{frame.type_name()} record at offset {offset}", self.limits), raw

    def _read_body(self, frame: F.Frame, names: tuple[str, ...] | list[str] = ()) -> np.ndarray:
        """The record's body, its CRC checked; a damaged body's error names the tensors it holds
        (``names``), which is what a user needs to know of it."""
        body = self.src.read_exact(frame.body_length, f"{frame.type_name()} record body")
        crc = body_crc(body)
        if crc != frame.body_crc:
            raise self._crc_error(frame, names, crc)
        return body

    @staticmethod
    def _crc_error(frame: F.Frame, names, crc: int) -> ChecksumMismatch:
        held = ""
        if names:
            shown = ", ".join(repr(n) for n in list(names)[:3])
            held = f" (holding {shown}" + (f" and {len(names) - 3} more" if len(names) > 3 else "") + ")"
        return ChecksumMismatch(f"{frame.type_name()} record body{held}: expected CRC-32 {frame.body_crc:#010x}, "
                                f"computed {crc:#010x}", where=f"offset {frame.body_offset}")

    def check_body_in_chunks(self, frame: F.Frame, rec: S.TensorRecord, chunk: int) -> None:
        """What :meth:`read_tensor` checks of a body, reading it a chunk at a time: its CRC, then
        the zero padding between its segments (a large record decoded in pieces is checked
        whole first, so its errors come in the order they do for any record)."""
        crc, pos, end = 0, frame.body_offset, frame.body_offset + frame.body_length
        while pos < end:
            n = min(chunk, end - pos)
            crc = F.crc32(self.src.read_at(pos, n, f"{frame.type_name()} record body"), crc)
            pos += n
        if crc != frame.body_crc:
            raise self._crc_error(frame, rec.names, crc)
        pos = frame.body_offset
        for s in rec.segments:
            if s.offset > pos and any(self.src.read_at(pos, s.offset - pos, "padding")):
                raise ReservedNonZero(f"padding before segment {s.name!r}: expected zero bytes", where=f"offset {pos}")
            pos = s.offset + s.length

    def tensor_head(self, entry: S.IndexEntry) -> tuple[F.Frame, S.TensorRecord]:
        """A TENS record's frame and checked descriptor, without reading its body."""
        return self._read_tensor_head(entry)

    def tensor_body(self, frame: F.Frame, rec: S.TensorRecord) -> dict:
        """:meth:`read_tensor`'s segments, right after :meth:`tensor_head` read the head."""
        self.src.seek(frame.body_offset)
        return self._segments(rec, self._read_body(frame, rec.names), frame.body_offset)

    def _tensor(self, frame: F.Frame, desc: dict) -> S.TensorRecord:
        return S.parse_tensor(desc, frame.offset, frame.body_offset, frame.body_length, self.limits,
                              f"TENS record at offset {frame.offset}", self.strict)

    def _segments(self, rec: S.TensorRecord, body: np.ndarray, body_offset: int) -> dict:
        """Slice the checked body into segments; the padding between them must be zero."""
        sliced = self._segments_of(rec.segments, body, body_offset)
        return {ref.name: (ref.codecs, ref.raw_length, sliced[ref.name]) for ref in rec.segments}

    def _segments_of(self, segments, body: np.ndarray, body_offset: int) -> dict:
        """Segment name → its stored bytes (a view of ``body``), checking the padding is zero."""
        view, out, pos = memoryview(body), {}, 0
        for s in segments:
            a = s.offset - body_offset
            if any(view[pos:a]):
                raise ReservedNonZero(f"padding before segment {s.name!r}: expected zero bytes",
                                      where=f"offset {body_offset + pos}")
            out[s.name] = view[a: a + s.length]
            pos = a + s.length
        return out

    # -- in order, from any stream -------------------------------------------------------------

    def iter_records(self) -> Iterator[tuple]:
        """Yield each record in file order, then check INDX and trailer:

        - ``("TENS", record, segments)``: ``segments`` maps stream name → (codec records,
          raw_length, stored bytes);
        - ``("ALIS", [(alias, target), ...])``: targets are tensors of the TENS just yielded;
        - ``("MODL", model_record, segments)``;
        - ``("FILE", file_record, segments)`` (since 1.4);
        - ``("PTCH", descriptor)``, only when the reader was made with ``patch=True``.
        """
        seen: list[S.IndexEntry] = []
        names: set[str] = set()
        total = 0
        content: ContentDigest | None = ContentDigest()
        content.add_record(_META, self.meta_record.desc)
        paths: set[str] = set()
        while True:
            frame, desc = self._read_head("record")
            where = f"{frame.type_name()} record at offset {frame.offset}"
            if frame.record_type == C.RECORD_INDEX:
                break
            if frame.record_type == C.RECORD_TENSOR:
                rec = self._tensor(frame, desc)
                self.limits.check("tensors", len(names) + len(rec.members), "max_tensors", f"offset {frame.offset}")
                total += rec.spec.nbytes
                self.limits.check("decoded bytes of the archive", total, "max_total_bytes", f"offset {frame.offset}")
                for name in rec.names:
                    if name in names:
                        raise BadLayout(f"duplicate tensor name {name!r}", where=f"offset {frame.offset}")
                    names.add(name)
                if self.defer_body is not None and self.src.local and self.defer_body(rec):
                    # left on disk: the consumer reads it in pieces (its CRC too, first)
                    self.src.seek(frame.body_offset + frame.body_length)
                    held = [DeferredBody(frame)]
                else:
                    held = [self._segments(rec, self._read_body(frame, rec.names), frame.body_offset)]
                seen.append(S.IndexEntry(_TENS, rec.offset, rec.length, tuple(rec.names)))
                content.add_record(_TENS, desc)
                # handed over, not kept: this frame holds no reference to the body while the
                # consumer decodes it, so the body is freed as soon as its streams are decoded
                yield _TENS, rec, held.pop()
            elif frame.record_type == C.RECORD_ALIAS:
                pairs = self._aliases(frame, desc, seen[-1] if seen else None, names, where)
                seen.append(S.IndexEntry(_ALIS, frame.offset, frame.end - frame.offset, ()))
                content.add_record(_ALIS, desc)
                yield _ALIS, pairs
            elif frame.record_type == C.RECORD_MODEL:
                if seen:
                    raise BadLayout("a MODL record must come first after META", where=where)
                model = S.parse_model(desc, frame.body_offset, frame.body_length, self.limits, where, self.strict)
                segments = self._segments(model, self._read_body(frame), frame.body_offset)
                seen.append(S.IndexEntry(_MODL, frame.offset, frame.end - frame.offset, ()))
                if self.structure_sha256 is None:
                    content = None
                else:
                    content.add_record(_MODL, desc, self.structure_sha256(model, segments))
                yield _MODL, model, segments
            elif frame.record_type == C.RECORD_FILE:
                if seen and seen[-1].record_type not in (_MODL, _FILE):
                    raise BadLayout(f"a FILE record must follow META, MODL or another FILE record (§5.7), found it "
                                    f"after {seen[-1].record_type}", where=where)
                rec = S.parse_file(desc, frame.body_offset, frame.body_length, self.limits, where, self.strict)
                if rec.path in paths:
                    raise BadLayout(f"duplicate file path {rec.path!r}", where=where)
                paths.add(rec.path)
                self.limits.check("files", len(paths), "max_tensors", where)
                segments = self._segments(rec, self._read_body(frame, (rec.path,)), frame.body_offset)
                seen.append(S.IndexEntry(_FILE, frame.offset, frame.end - frame.offset, ()))
                if content is not None:
                    content.add_record(_FILE, desc)
                yield _FILE, rec, segments
            elif frame.record_type == C.RECORD_PATCH:
                self._patch_record(frame, not seen, where)
                seen.append(S.IndexEntry(_PTCH, frame.offset, frame.end - frame.offset, ()))
                if content is not None:
                    content.add_record(_PTCH, desc)
                yield _PTCH, desc
            else:
                body = self._skip_unknown(frame)
                rtype = frame.record_type.decode("latin-1")
                seen.append(S.IndexEntry(rtype, frame.offset, frame.end - frame.offset, ()))
                if content is not None:
                    content.add_record(rtype, desc, hashlib.sha256(body).digest())
        self._finish_stream(frame, desc, seen, content)

    def iter_tensors(self) -> Iterator[tuple[S.TensorRecord, dict]]:
        """(record, segments) for each TENS record in file order (aliases and structure skipped)."""
        for item in self.iter_records():
            if item[0] == _TENS:
                yield item[1], item[2]

    def _aliases(self, frame: F.Frame, desc: dict, previous: S.IndexEntry | None, names: set[str],
                 where: str) -> list[tuple[str, str]]:
        """Check an ALIS record (§5.5) against the record before it; add its names to ``names``."""
        if frame.body_length:
            raise BadLayout(f"ALIS record: expected an empty body, found {frame.body_length} bytes", where=where)
        pairs = S.parse_aliases(desc, self.limits, where, self.strict)
        targets = set(previous.names) if previous is not None and previous.record_type == _TENS else set()
        self.limits.check("tensors", len(names) + len(pairs), "max_tensors", where)
        for name, target in pairs:
            if target not in targets:
                raise BadLayout(f"alias {name!r}: its target {target!r} is not a tensor of the TENS record just before",
                                where=where)
            if name in names:
                raise BadLayout(f"duplicate tensor name {name!r}", where=where)
            names.add(name)
        return pairs

    def _patch_record(self, frame: F.Frame, first: bool, where: str) -> None:
        """A PTCH record: only a patch reader reads one, and only first after META."""
        if not self.patch:
            raise UnsupportedRecord("this file is an nnar patch, not a model archive: apply it to its base with "
                                    "`nnar patch BASE PATCH -o OUT`", where=where)
        if not first:
            raise BadLayout("a PTCH record must come first after META", where=where)
        if frame.body_length:
            raise BadLayout(f"PTCH record: expected an empty body, found {frame.body_length} bytes", where=where)

    def _skip_unknown(self, frame: F.Frame) -> None:
        if frame.record_type in C.KNOWN_RECORD_TYPES:
            raise BadLayout(f"record {frame.type_name()!r} is not allowed here", where=f"offset {frame.offset}")
        if frame.must_understand:
            raise UnsupportedRecord(f"record type {frame.record_type!r} is marked must-understand and this nnar "
                                    "does not know it (a newer nnar wrote it)", where=f"offset {frame.offset}")
        return self._read_body(frame)  # checked, then ignored (its digest joins the content digest)

    def _finish_stream(self, frame: F.Frame, desc: dict, seen: list[S.IndexEntry],
                       content: ContentDigest | None) -> None:
        where = f"INDX record at offset {frame.offset}"
        if frame.body_length:
            raise BadLayout(f"INDX record: expected an empty body, found {frame.body_length} bytes", where=where)
        entries = S.parse_index(desc, self.first_offset, frame.offset, self.limits, where, self.strict)
        if entries != seen:
            raise BadLayout("index: it disagrees with the records read before it", where=where)
        stored = S.index_content(desc, where)
        #: the content digest computed from the records read (None: not computable here)
        self.content = None if content is None else content.digest()
        if stored is not None and self.content is not None:
            check_content(stored, self.content, where)
        trailer_offset = self.src.pos
        index_offset, _ = F.parse_trailer(self.src.read_exact(C.TRAILER_SIZE, "trailer"), trailer_offset)
        if index_offset != frame.offset:
            raise BadLayout(f"trailer: index_offset: expected {frame.offset}, found {index_offset}",
                            where=f"offset {trailer_offset}")
        if not self.src.at_eof():
            raise BadLayout("expected the end of the archive after the trailer, found more bytes",
                            where=f"offset {self.src.pos}")

    # -- at random, through the index (seekable files) ------------------------------------------

    def index(self) -> list[S.IndexEntry]:
        if self._index is None:
            self._index = self._load_index()
        return self._index

    def _load_index(self) -> list[S.IndexEntry]:
        size = self.src.size
        if size is None:
            raise NnarIOError("random access needs a seekable file; read the stream in order instead")
        if size < self.first_offset + C.FRAME_SIZE + C.TRAILER_SIZE:
            raise Truncated(f"archive: expected at least {self.first_offset + C.FRAME_SIZE + C.TRAILER_SIZE} bytes "
                            f"for META, INDX and trailer, found {size}", where=f"offset {size}")
        t_off = size - C.TRAILER_SIZE
        self.src.seek(t_off)
        index_offset, _ = F.parse_trailer(self.src.read_exact(C.TRAILER_SIZE, "trailer"), t_off)
        if not self.first_offset <= index_offset <= t_off - C.FRAME_SIZE:
            raise BadLayout(f"trailer: index_offset: expected in [{self.first_offset}, {t_off - C.FRAME_SIZE}], "
                            f"found {index_offset}", where=f"offset {t_off}")
        self.src.seek(index_offset)
        frame, desc, raw = self._read_head_raw("INDX record")
        #: the INDX record as stored, for a patch to reproduce it byte for byte
        self.index_record = StoredRecord(-1, frame, raw, desc, ())
        where = f"INDX record at offset {index_offset}"
        if frame.record_type != C.RECORD_INDEX:
            raise BadLayout(f"trailer points at a {frame.type_name()!r} record, expected INDX", where=where)
        if frame.body_length or frame.end != t_off:
            raise BadLayout(f"INDX record: expected an empty body ending at the trailer ({t_off}), found it ending at "
                            f"{frame.end}", where=where)
        entries = S.parse_index(desc, self.first_offset, index_offset, self.limits, where, self.strict)
        self._stored_content = S.index_content(desc, where)
        names = {n for e in entries for n in e.names}
        self._aliases_by_entry: dict[int, list[tuple[str, str]]] = {}
        for i, e in enumerate(entries):
            if e.record_type == _ALIS:
                frame, adesc = self._read_head_at(e)
                self._aliases_by_entry[i] = self._aliases(frame, adesc, entries[i - 1], names,
                                                          f"ALIS record at offset {e.offset}")
            elif e.record_type in (_MODL, _FILE):
                self._read_head_at(e)
            elif e.record_type == _PTCH:
                frame, _ = self._read_head_at(e)
                self._patch_record(frame, i == 0, f"PTCH record at offset {e.offset}")
            elif e.record_type != _TENS:
                self._check_other(e)
        return entries

    @property
    def stored_content(self) -> bytes | None:
        """The content digest the index carries (FORMAT.md §5.3.1), or None (before 1.4)."""
        self.index()
        return self._stored_content

    def content_digest(self) -> bytes:
        """The archive's content digest, computed from its records (FORMAT.md §5.3.1): every
        descriptor is read, and the MODL structure decoded through ``structure_sha256``."""
        content = ContentDigest()
        content.add_record(_META, self.meta_record.desc)
        for e in self.index():
            frame, desc = self._read_head_at(e)
            extra = b""
            if e.record_type == _MODL:
                if self.structure_sha256 is None:
                    raise NnarError("internal: the content digest of an archive with a MODL record needs a "
                                    "structure_sha256 function")
                model, segments = self.read_model()
                extra = self.structure_sha256(model, segments)
            elif e.record_type not in (_TENS, _ALIS, _PTCH, _FILE):
                extra = hashlib.sha256(self._read_body(frame)).digest()
            content.add_record(e.record_type, desc, extra)
        return content.digest()

    def _read_head_at(self, entry: S.IndexEntry) -> tuple[F.Frame, dict]:
        frame, desc, _ = self._read_head_raw_at(entry)
        return frame, desc

    def _read_head_raw_at(self, entry: S.IndexEntry) -> tuple[F.Frame, dict, bytes]:
        self.src.seek(entry.offset)
        frame, desc, raw = self._read_head_raw(f"{entry.record_type} record")
        if frame.record_type.decode("latin-1") != entry.record_type or frame.end - frame.offset != entry.length:
            raise BadLayout(f"index entry {entry.record_type!r}: expected a {entry.length}-byte record, found a "
                            f"{frame.end - frame.offset}-byte {frame.type_name()!r} record",
                            where=f"offset {entry.offset}")
        return frame, desc, raw

    def read_stored(self, number: int) -> "StoredRecord":
        """Record ``number`` as stored (0: META; i: the i-th entry of the index), its CRCs checked,
        for copying it elsewhere byte for byte (spec/patch.md): the stored descriptor, and for
        TENS and MODL records each segment's stored bytes."""
        if number == 0:
            return self.meta_record
        entry = self.index()[number - 1]
        frame, desc, raw = self._read_head_raw_at(entry)
        body = self._read_body(frame)
        where = f"{entry.record_type} record at offset {entry.offset}"
        if entry.record_type == _TENS:
            segs = self._indexed_tensor(frame, desc, entry, where).segments
        elif entry.record_type == _MODL:
            segs = S.parse_model(desc, frame.body_offset, frame.body_length, self.limits, where, self.strict).segments
        elif entry.record_type == _FILE:
            segs = S.parse_file(desc, frame.body_offset, frame.body_length, self.limits, where, self.strict).segments
        else:
            segs = ()
        if segs or frame.body_length:
            sliced = self._segments_of(segs, body, frame.body_offset)
            segs = tuple((ref, sliced[ref.name]) for ref in segs)
        return StoredRecord(number, frame, raw, desc, segs)

    def aliases(self) -> list[tuple[str, str, S.IndexEntry]]:
        """Every (alias, target, target's TENS entry), in archive order."""
        entries = self.index()
        return [(a, t, entries[i - 1]) for i, pairs in self._aliases_by_entry.items() for a, t in pairs]

    def read_model(self) -> tuple[S.ModelRecord, dict] | None:
        """The MODL record and its segments, or None when the archive has none."""
        entries = self.index()
        if not entries or entries[0].record_type != _MODL:
            return None
        frame, desc = self._read_head_at(entries[0])
        where = f"MODL record at offset {frame.offset}"
        model = S.parse_model(desc, frame.body_offset, frame.body_length, self.limits, where, self.strict)
        return model, self._segments(model, self._read_body(frame), frame.body_offset)

    def file_entries(self) -> list[S.IndexEntry]:
        return [e for e in self.index() if e.record_type == _FILE]

    def read_file(self, entry: S.IndexEntry) -> tuple[S.FileRecord, dict]:
        """A FILE record (§5.7) and its segments, its CRCs checked."""
        frame, desc = self._read_head_at(entry)
        where = f"FILE record at offset {frame.offset}"
        rec = S.parse_file(desc, frame.body_offset, frame.body_length, self.limits, where, self.strict)
        return rec, self._segments(rec, self._read_body(frame, (rec.path,)), frame.body_offset)

    def _check_other(self, entry: S.IndexEntry) -> None:
        """A record of a type this reader does not know, listed in the index: read (to check its
        CRCs) and skipped unless it is must-understand; META and INDX do not belong there."""
        frame, _ = self._read_head_at(entry)
        self._skip_unknown(frame)

    def tensor_entries(self) -> list[S.IndexEntry]:
        return [e for e in self.index() if e.record_type == _TENS]

    def _read_tensor_head(self, entry: S.IndexEntry) -> tuple[F.Frame, S.TensorRecord]:
        self.src.seek(entry.offset)
        frame, desc = self._read_head("TENS record")
        where = f"TENS record at offset {entry.offset}"
        if frame.record_type != C.RECORD_TENSOR or frame.end - frame.offset != entry.length:
            raise BadLayout(f"index says a {entry.length}-byte TENS record, found a {frame.end - frame.offset}-byte "
                            f"{frame.type_name()!r} record", where=where)
        return frame, self._indexed_tensor(frame, desc, entry, where)

    def _indexed_tensor(self, frame: F.Frame, desc: dict, entry: S.IndexEntry, where: str) -> S.TensorRecord:
        """A TENS descriptor, checked, whose tensors must be the ones its index entry names."""
        rec = self._tensor(frame, desc)
        if tuple(rec.names) != entry.names:
            raise BadLayout(f"index names this record's tensors {list(entry.names)!r:.200}, its descriptor "
                            f"{rec.names!r:.200}", where=where)
        return rec

    def read_descriptor(self, entry: S.IndexEntry) -> S.TensorRecord:
        """The checked descriptor of one tensor, without reading its body."""
        return self._read_tensor_head(entry)[1]

    def read_tensor(self, entry: S.IndexEntry) -> tuple[S.TensorRecord, dict]:
        frame, rec = self._read_tensor_head(entry)
        return rec, self._segments(rec, self._read_body(frame, rec.names), frame.body_offset)

