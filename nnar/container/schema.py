"""The three record descriptors of container v1 (spec/FORMAT.md §5), checked field by field.

A descriptor from a file is hostile: every field is type- and range-checked here, and for an
archive whose minor version this reader knows, an unknown key is corruption (a newer minor may
add keys, which older readers then ignore). Pipeline stages stay opaque here; nnar.pipeline
checks them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from .. import constants as C
from .. import dtypes
from ..codecs.abc import TensorSpec
from ..errors import BadDescriptor, BadLayout
from ..limits import Limits
from .framing import segment_start

META_KEYS = ("nnar_version", "source_format", "metadata")
TENSOR_KEYS = ("tensors", "dtype", "digest", "pipeline", "segments")
TENSOR_OPTIONAL_KEYS = ("fidelity",)  # since 1.1
SEGMENT_KEYS = ("name", "length", "raw_length", "codecs")
#: a fidelity map: what a lossy encoder measured; listed, never needed to decode
MAX_FIDELITY_ENTRIES = 64
MAX_FIDELITY_TEXT = 1024
INDEX_KEYS = ("records",)
INDEX_OPTIONAL_KEYS = ("content",)  # since 1.4 (§5.3.1)
MAX_U63 = (1 << 63) - 1


def _keys(d: dict, required: tuple[str, ...], what: str, where: str, strict: bool,
          optional: tuple[str, ...] = ()) -> None:
    missing = [k for k in required if k not in d]
    if missing:
        raise BadDescriptor(f"{what}: expected keys {list(required)}, missing {missing}", where=where)
    unexpected = set(d) - set(required) - set(optional)
    if strict and unexpected:
        raise BadDescriptor(f"{what}: unexpected keys {sorted(map(str, unexpected))}", where=where)


def _int(v: Any, what: str, where: str, lo: int = 0, hi: int = MAX_U63) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadDescriptor(f"{what}: expected an integer in [{lo}, {hi}], found {v!r:.80}", where=where)
    return v


def _digest(v: Any, where: str) -> bytes:
    if not isinstance(v, bytes) or len(v) != C.DIGEST_SIZE:
        raise BadDescriptor(f"digest: expected {C.DIGEST_SIZE} bytes, found {v!r:.80}", where=where)
    return v


def segment_maps(segments: list) -> list[dict]:
    """The descriptor's ``segments`` (§5.2.3) for encoded segments, their stored lengths taken."""
    return [{"name": s.name, "length": memoryview(s.data).nbytes, "raw_length": s.raw_length, "codecs": s.codecs}
            for s in segments]


def _str(v: Any, what: str, where: str) -> str:
    if not isinstance(v, str):
        raise BadDescriptor(f"{what}: expected a string, found {type(v).__name__}", where=where)
    return v


def check_name(name: Any, where: str, error=BadDescriptor) -> str:
    """Tensor names: UTF-8, 1 to 65535 bytes, no control characters (they would forge lines in
    listings and terminals)."""
    if type(name) is str and name.isascii() and 0 < len(name) <= C.MAX_NAME_BYTES and not _FORBIDDEN.search(name):
        return name  # the common case, without encoding the name
    if not isinstance(name, str):
        raise error(f"tensor name: expected a string, found {type(name).__name__}", where=where)
    n = len(name.encode("utf-8", "surrogatepass"))
    if not 1 <= n <= C.MAX_NAME_BYTES:
        raise error(f"tensor name: expected 1 to {C.MAX_NAME_BYTES} bytes of UTF-8, found {n}", where=where)
    bad = _FORBIDDEN.search(name)
    if bad is not None:
        raise error(f"tensor name {name!r:.80}: expected no control characters, found U+{ord(bad.group()):04X}",
                    where=where)
    return name


_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def plain_names(names: list) -> bool:
    """Whether every item is a name :func:`check_name` accepts without a second look (ASCII
    text, 1 to MAX_NAME_BYTES long, no control character), found in a few C-level passes over
    the list: listing 10^5 names one call each took a second. False says only "check one by one"
    (so errors are still reported in order, by check_name)."""
    try:
        joined = "/".join(names)  # TypeError for a non-str
    except TypeError:
        return False
    return (not names or 1 <= min(map(len, names)) and max(map(len, names)) <= C.MAX_NAME_BYTES) \
        and joined.isascii() and _FORBIDDEN.search(joined) is None


@dataclasses.dataclass(frozen=True)
class Meta:
    nnar_version: str
    source_format: str
    metadata: dict[str, str]


def parse_meta(d: dict, where: str, strict: bool) -> Meta:
    _keys(d, META_KEYS, "META descriptor", where, strict)
    md = d["metadata"]
    if not isinstance(md, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in md.items()):
        raise BadDescriptor("metadata: expected a map of strings to strings", where=where)
    return Meta(_str(d["nnar_version"], "nnar_version", where), _str(d["source_format"], "source_format", where), md)


def meta_descriptor(meta: Meta) -> dict:
    return {"nnar_version": meta.nnar_version, "source_format": meta.source_format, "metadata": dict(meta.metadata)}


@dataclasses.dataclass(frozen=True)
class SegmentRef:
    name: str
    length: int  # stored bytes
    raw_length: int  # bytes after its codecs are decoded
    codecs: list  # stage records, opaque here
    offset: int  # absolute, derived from the layout rule

    @property
    def verbatim(self) -> bool:
        return not self.codecs


@dataclasses.dataclass(frozen=True)
class Member:
    """One tensor of a TENS record: its name, shape and place in the record's array."""

    name: str
    spec: TensorSpec
    start: int  # first element in the record's (flattened) array


@dataclasses.dataclass(frozen=True)
class TensorRecord:
    """A TENS record: one tensor, or a group of small tensors of one dtype stored as one array."""

    members: tuple[Member, ...]
    spec: TensorSpec  # of the record's array: the tensor's own, or 1-D over the whole group
    digest: bytes  # SHA-256 of the record array's decoded bytes
    pipeline: list
    segments: tuple[SegmentRef, ...]
    offset: int  # of the frame
    length: int  # of the whole record
    fidelity: dict = dataclasses.field(default_factory=dict)  # what a lossy encoder measured (since 1.1)

    @property
    def stored_bytes(self) -> int:
        return sum(s.length for s in self.segments)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]


def record_spec(dtype: str, shapes: list[tuple[int, ...]]) -> TensorSpec:
    """The spec of a record's array (FORMAT.md §5.2): the tensor's own for one member, else 1-D."""
    if len(shapes) == 1:
        return TensorSpec(dtype, tuple(shapes[0]))
    return TensorSpec(dtype, (sum(math.prod(s) for s in shapes),))


def layout_segments(body_offset: int, segments: list[tuple[int, bool]]) -> list[int]:
    """Absolute start of each (length, verbatim) segment by the layout rule of FORMAT.md §5.2.3:
    the single segment of a record starts aligned when it is verbatim (so the tensor can be
    mapped); every other segment follows the previous one directly."""
    align = len(segments) == 1 and segments[0][1]
    out, pos = [], body_offset
    for length, _ in segments:
        start = segment_start(pos, align)
        out.append(start)
        pos = start + length
    return out


def parse_tensor(d: dict, frame_offset: int, body_offset: int, body_length: int, limits: Limits, where: str,
                 strict: bool) -> TensorRecord:
    """Check a TENS descriptor and lay out its segments from ``body_offset``."""
    _keys(d, TENSOR_KEYS, "TENS descriptor", where, strict, TENSOR_OPTIONAL_KEYS)
    fidelity = _fidelity(d.get("fidelity", {}), where)
    dtype = _str(d["dtype"], "dtype", where)
    # An unknown dtype (from a newer nnar) fails when the record is decoded, not here, so the
    # rest of the archive can still be listed (FORMAT.md §10); sizes are then unknown too.
    known = dtype in dtypes.DTYPE_NAMES
    tensors = d["tensors"]
    if not isinstance(tensors, list) or not tensors:
        raise BadDescriptor(f"tensors: expected a non-empty list, found {tensors!r:.80}", where=where)
    limits.check("tensors in one record", len(tensors), "max_tensors", where)
    members, start, names = [], 0, set()
    itemsize = dtypes.itemsize(dtype) if known else 0
    plain = all(type(t) is list and len(t) == 2 for t in tensors) and plain_names([t[0] for t in tensors])
    for i, t in enumerate(tensors):
        if not (isinstance(t, list) and len(t) == 2):
            raise BadDescriptor(f"tensors[{i}]: expected [name, shape], found {t!r:.80}", where=where)
        name, shape = t[0] if plain else check_name(t[0], where), t[1]
        if name in names:
            raise BadLayout(f"duplicate tensor name {name!r}", where=where)
        names.add(name)
        if not isinstance(shape, list):
            raise BadDescriptor(f"tensor {name!r} shape: expected a list, found {type(shape).__name__}", where=where)
        if len(shape) > limits.max_rank:
            limits.check(f"tensor {name!r} rank", len(shape), "max_rank", where)
        if not all(type(s) is int and 0 <= s <= MAX_U63 for s in shape):  # bool is not int here
            for s in shape:
                _int(s, f"tensor {name!r} shape dimension", where)
        dims = tuple(shape)
        size = math.prod(dims)
        if size * itemsize > limits.max_tensor_bytes:
            limits.check(f"tensor {name!r} bytes", size * itemsize, "max_tensor_bytes", where)
        members.append(Member(name, TensorSpec(dtype, dims), start))
        start += size
    spec = record_spec(dtype, [m.spec.shape for m in members])
    if known:
        limits.check("record array bytes", spec.nbytes, "max_tensor_bytes", where)
    digest = _digest(d["digest"], where)
    if not isinstance(d["pipeline"], list):
        raise BadDescriptor("pipeline: expected a list", where=where)
    out = _segments(d["segments"], body_offset, body_length, limits, where, strict)
    return TensorRecord(tuple(members), spec, digest, d["pipeline"], out, frame_offset,
                        body_offset + body_length - frame_offset, fidelity)


def segment_entries(segs: Any, limits: Limits, where: str, strict: bool, body_offset: int = 0) -> tuple[SegmentRef, ...]:
    """Check a ``segments`` list (FORMAT.md §5.2.3) and lay it out from ``body_offset``."""
    if not isinstance(segs, list):
        raise BadDescriptor("segments: expected a list", where=where)
    limits.check("segments", len(segs), "max_segments", where)
    parsed, seg_names = [], set()
    for i, s in enumerate(segs):
        if not isinstance(s, dict):
            raise BadDescriptor(f"segment {i}: expected a map, found {type(s).__name__}", where=where)
        _keys(s, SEGMENT_KEYS, f"segment {i}", where, strict)
        sname = _str(s["name"], f"segment {i} name", where)
        if sname in seg_names:
            raise BadDescriptor(f"segment {i}: duplicate segment name {sname!r}", where=where)
        seg_names.add(sname)
        length = _int(s["length"], f"segment {sname!r} length", where)
        raw_length = _int(s["raw_length"], f"segment {sname!r} raw_length", where)
        limits.check(f"segment {sname!r} raw_length", raw_length, "max_tensor_bytes", where)
        if not isinstance(s["codecs"], list):
            raise BadDescriptor(f"segment {sname!r} codecs: expected a list", where=where)
        if not s["codecs"] and length != raw_length:
            raise BadDescriptor(f"segment {sname!r}: stored verbatim, so expected length == raw_length, "
                                f"found {length} != {raw_length}", where=where)
        parsed.append((sname, length, raw_length, s["codecs"]))
    starts = layout_segments(body_offset, [(p[1], not p[3]) for p in parsed])
    return tuple(SegmentRef(n, ln, rl, c, st) for (n, ln, rl, c), st in zip(parsed, starts))


def _segments(segs: Any, body_offset: int, body_length: int, limits: Limits, where: str,
              strict: bool) -> tuple[SegmentRef, ...]:
    """:func:`segment_entries`, and the segments must fill the body exactly."""
    out = segment_entries(segs, limits, where, strict, body_offset)
    end = out[-1].offset + out[-1].length if out else body_offset
    if end - body_offset != body_length:
        raise BadLayout(f"body: segments end {end - body_offset} bytes into the body, expected body_length "
                        f"{body_length}", where=where)
    return out


def _fidelity(v: Any, where: str) -> dict[str, Any]:
    """The optional ``fidelity`` map (FORMAT.md §5.2.5): string keys, string or number values."""
    if not isinstance(v, dict) or len(v) > MAX_FIDELITY_ENTRIES:
        raise BadDescriptor(f"fidelity: expected a map of at most {MAX_FIDELITY_ENTRIES} entries, found {v!r:.80}",
                            where=where)
    for k, x in v.items():
        # a bool is not a number here (msgpack has its own type for it); text is measured in
        # UTF-8 bytes, as names are (FORMAT.md §5.2.5)
        ok_value = isinstance(x, (int, float)) and not isinstance(x, bool) or \
            isinstance(x, str) and _utf8_length(x) <= MAX_FIDELITY_TEXT
        if not (isinstance(k, str) and _utf8_length(k) <= MAX_FIDELITY_TEXT) or not ok_value:
            raise BadDescriptor(f"fidelity: expected string keys and string or number values, found {k!r:.40}: "
                                f"{x!r:.40}", where=where)
    return dict(v)


def _utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8; a str from msgpack is valid UTF-8 (FORMAT.md §4.2)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def tensor_descriptor(members: list[tuple[str, tuple[int, ...]]], dtype: str, digest: bytes, pipeline: list,
                      segments: list, fidelity: dict | None = None) -> dict:
    extra = {"fidelity": fidelity} if fidelity else {}
    return {
        "tensors": [[name, list(shape)] for name, shape in members], "dtype": dtype, "digest": digest,
        "pipeline": pipeline,
        "segments": segment_maps(segments),
        **extra,
    }


@dataclasses.dataclass(frozen=True)
class IndexEntry:
    record_type: str
    offset: int
    length: int
    names: tuple[str, ...]  # the tensors of a TENS record; empty for other types


def parse_index(d: dict, first_offset: int, index_offset: int, limits: Limits, where: str, strict: bool):
    """Check an INDX descriptor: entries in file order, contiguous from the end of META to the
    INDX record, with no hole and no overlap, and tensor names unique across the archive."""
    _keys(d, INDEX_KEYS, "INDX descriptor", where, strict, INDEX_OPTIONAL_KEYS)
    recs = d["records"]
    if not isinstance(recs, list):
        raise BadDescriptor("records: expected a list", where=where)
    limits.check("records in the index", len(recs), "max_tensors", where)
    out, pos, seen = [], first_offset, set()
    for i, e in enumerate(recs):
        if not (isinstance(e, list) and len(e) == 4):
            raise BadDescriptor(f"index entry {i}: expected [record_type, offset, length, names], found {e!r:.80}",
                                where=where)
        rtype = _str(e[0], f"index entry {i} record_type", where)
        if len(rtype) != 4 or not rtype.isascii():
            raise BadDescriptor(f"index entry {i}: record_type: expected 4 ASCII characters, found {rtype!r}",
                                where=where)
        offset = _int(e[1], f"index entry {i} offset", where)
        length = _int(e[2], f"index entry {i} length", where, lo=C.FRAME_SIZE)
        names = e[3]
        if not isinstance(names, list):
            raise BadDescriptor(f"index entry {i} names: expected a list", where=where)
        if offset != pos:
            raise BadLayout(f"index entry {i}: expected offset {pos} (records are contiguous), found {offset}",
                            where=where)
        pos = offset + length
        if (rtype == C.RECORD_TENSOR.decode()) != bool(names):
            raise BadLayout(f"index entry {i}: expected names for a TENS record and none for others, found "
                            f"{len(names)} for {rtype!r}", where=where)
        limits.check("tensors in the index", len(seen) + len(names), "max_tensors", where)
        plain = len(names) > 8 and plain_names(names)  # one name: check_name's own fast path is quicker
        for name in names:
            if not plain:
                check_name(name, where)
            if name in seen:
                raise BadLayout(f"index: duplicate tensor name {name!r}", where=where)
            seen.add(name)
        out.append(IndexEntry(rtype, offset, length, tuple(names)))
    for i, e in enumerate(out):
        if e.record_type == C.RECORD_FILE.decode() and i and out[i - 1].record_type not in ("MODL", "FILE"):
            raise BadLayout(f"index entry {i}: a FILE record must follow META, MODL or another FILE record (§5.7), "
                            f"found it after {out[i - 1].record_type}", where=where)
        if e.record_type == C.RECORD_PATCH.decode() and i != 0:
            raise BadLayout(f"index entry {i}: a PTCH record must come first after META, found it at entry {i}",
                            where=where)
        if e.record_type == C.RECORD_MODEL.decode() and i != 0:
            raise BadLayout(f"index entry {i}: a MODL record must come first after META, found it at entry {i}",
                            where=where)
        if e.record_type == C.RECORD_ALIAS.decode() and (i == 0 or out[i - 1].record_type != C.RECORD_TENSOR.decode()):
            raise BadLayout(f"index entry {i}: an ALIS record must follow a TENS record", where=where)
    if pos != index_offset:
        raise BadLayout(f"index: records end at offset {pos}, expected the INDX record at {index_offset}", where=where)
    return out


def index_content(d: dict, where: str) -> bytes | None:
    """The INDX record's ``content`` (§5.3.1, since 1.4): the archive's content digest, or None
    for an archive written before it."""
    v = d.get("content")
    if v is None and "content" not in d:
        return None
    if not isinstance(v, bytes) or len(v) != C.DIGEST_SIZE:
        raise BadDescriptor(f"INDX content: expected {C.DIGEST_SIZE} bytes (bin), found {v!r:.80}", where=where)
    return v


def index_descriptor(entries: list[IndexEntry], content: bytes | None = None) -> dict:
    out: dict[str, Any] = {"records": [[e.record_type, e.offset, e.length, list(e.names)] for e in entries]}
    if content is not None:
        out["content"] = content
    return out


# -- MODL (§5.4, since 1.2) ---------------------------------------------------------------------

MODEL_KEYS = ("format", "length", "pipeline", "segments")
MAX_FORMAT_NAME = 64  # UTF-8 bytes of a MODL record's ``format``


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """A MODL record: the source model's structure, a byte string encoded like a uint8 tensor."""

    format: str
    spec: TensorSpec  # uint8[length]
    pipeline: list
    segments: tuple[SegmentRef, ...]


def parse_model(d: dict, body_offset: int, body_length: int, limits: Limits, where: str, strict: bool) -> ModelRecord:
    _keys(d, MODEL_KEYS, "MODL descriptor", where, strict)
    fmt = _str(d["format"], "format", where)
    if not 1 <= _utf8_length(fmt) <= MAX_FORMAT_NAME:
        raise BadDescriptor(f"format: expected 1 to {MAX_FORMAT_NAME} bytes of UTF-8, found {_utf8_length(fmt)}",
                            where=where)
    length = _int(d["length"], "length", where)
    limits.check("model structure bytes", length, "max_tensor_bytes", where)
    if not isinstance(d["pipeline"], list):
        raise BadDescriptor("pipeline: expected a list", where=where)
    segs = _segments(d["segments"], body_offset, body_length, limits, where, strict)
    return ModelRecord(fmt, TensorSpec("uint8", (length,)), d["pipeline"], segs)


def model_descriptor(fmt: str, length: int, pipeline: list, segments: list) -> dict:
    return {"format": fmt, "length": length, "pipeline": pipeline,
            "segments": segment_maps(segments)}


# -- ALIS (§5.5, since 1.2) ---------------------------------------------------------------------

ALIAS_KEYS = ("aliases",)


def parse_aliases(d: dict, limits: Limits, where: str, strict: bool) -> list[tuple[str, str]]:
    """``[(alias, target), ...]``: names checked (§5.2.1), each alias once."""
    _keys(d, ALIAS_KEYS, "ALIS descriptor", where, strict)
    pairs = d["aliases"]
    if not isinstance(pairs, list) or not pairs:
        raise BadDescriptor(f"aliases: expected a non-empty list, found {pairs!r:.80}", where=where)
    limits.check("aliases in one record", len(pairs), "max_tensors", where)
    out, seen = [], set()
    plain = all(type(p) is list and len(p) == 2 for p in pairs) and plain_names([x for p in pairs for x in p])
    for i, p in enumerate(pairs):
        if not (isinstance(p, list) and len(p) == 2):
            raise BadDescriptor(f"aliases[{i}]: expected [name, target], found {p!r:.80}", where=where)
        name, target = (p[0], p[1]) if plain else (check_name(p[0], where), check_name(p[1], where))
        if name in seen:
            raise BadLayout(f"duplicate tensor name {name!r}", where=where)
        seen.add(name)
        out.append((name, target))
    return out


def alias_descriptor(pairs: list[tuple[str, str]]) -> dict:
    return {"aliases": [[a, t] for a, t in pairs]}


# -- FILE (§5.7, since 1.4) ---------------------------------------------------------------------

FILE_KEYS = ("path", "length", "digest", "pipeline", "segments")


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """A FILE record: one file of a model folder (config, tokenizer), bytes encoded like a uint8
    tensor, with the SHA-256 of those bytes."""

    path: str
    spec: TensorSpec  # uint8[length]
    digest: bytes
    pipeline: list
    segments: tuple[SegmentRef, ...]


def check_path(path: Any, where: str) -> str:
    """A FILE record's path (§5.7): relative, '/'-separated, each component a plain name. An
    unpacker joins it to its output folder, so nothing in it may climb out of that folder or
    mean something to one operating system and not another."""
    p = _str(path, "path", where)
    n = _utf8_length(p)
    if not 1 <= n <= C.MAX_PATH_BYTES:
        raise BadDescriptor(f"path: expected 1 to {C.MAX_PATH_BYTES} bytes of UTF-8, found {n}", where=where)
    for part in p.split("/"):
        if part in ("", ".", "..") or "\\" in part or ":" in part or any(ord(c) < 0x20 or ord(c) == 0x7F for c in part):
            raise BadDescriptor(f"path {p!r:.200}: expected a relative path of plain names separated by '/' (no "
                                "empty, '.' or '..' component, no backslash, colon or control character)", where=where)
    return p


def parse_file(d: dict, body_offset: int, body_length: int, limits: Limits, where: str, strict: bool) -> FileRecord:
    _keys(d, FILE_KEYS, "FILE descriptor", where, strict)
    path = check_path(d["path"], where)
    length = _int(d["length"], "length", where)
    limits.check("file bytes", length, "max_tensor_bytes", where)
    digest = _digest(d["digest"], where)
    if not isinstance(d["pipeline"], list):
        raise BadDescriptor("pipeline: expected a list", where=where)
    segs = _segments(d["segments"], body_offset, body_length, limits, where, strict)
    return FileRecord(path, TensorSpec("uint8", (length,)), digest, d["pipeline"], segs)


def file_descriptor(path: str, length: int, digest: bytes, pipeline: list, segments: list) -> dict:
    return {"path": path, "length": length, "digest": digest, "pipeline": pipeline,
            "segments": segment_maps(segments)}
