"""safetensors in and out, parsed and written here (the format is small; no dependency needed).

Layout: u64 little-endian header length N, N bytes of JSON ({name: {dtype, shape,
data_offsets}, "__metadata__": {str: str}}), then the data. bfloat16 and ``__metadata__`` go
through unchanged. The header is bounded and checked whole (``read``) before any tensor is read.
"""

from __future__ import annotations

import errno
import json
import os
import math
import re
import reprlib
import shutil
import struct
import tempfile

import numpy as np

from .. import dtypes
from ..codecs.abc import as_bytes
from ..errors import InvalidInput, UnsupportedDtype
from . import Model, read_seekable

MAX_HEADER = 100_000_000  # the safetensors library's own cap (MAX_HEADER_SIZE in its src/tensor.rs)
_TO_NNAR = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "U32": "uint32",
            "I32": "int32", "U64": "uint64", "I64": "int64", "F16": "float16", "BF16": "bfloat16",
            "F32": "float32", "F64": "float64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
_FROM_NNAR = {v: k for k, v in _TO_NNAR.items()}
_U64 = 1 << 64  # the library's shapes, offsets and sizes are usize: anything beyond overflows there
#: a JSON string, or an unterminated one up to the end (so that no search rescans: linear time)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)


class _Duplicate(Exception):
    def __init__(self, key):
        self.key = key


def _unique_keys(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set = set()
        raise _Duplicate(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return d


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _parse_int(text: str):
    """A JSON integer; one written with a minus sign (``-0`` too) is kept a float, as the library
    reads it, so that no shape or offset with a sign passes where the library refuses it."""
    return float(text) if text.startswith("-") else int(text)


def _is_index(x) -> bool:
    """A JSON non-negative integer that fits a u64 (a bool is not an integer here)."""
    return type(x) is int and 0 <= x < _U64


def _is_text(s) -> bool:
    if not isinstance(s, str):
        return False
    try:
        s.encode("utf-8")  # a lone surrogate from a \\ud800 escape is not text
    except UnicodeEncodeError:
        return False
    return True


def _short(x) -> str:
    """A repr of at most a few elements (a hostile header's list may hold millions)."""
    return reprlib.repr(x)


def _nbytes(shape: list, itemsize: int) -> int | None:
    """dtype size x shape, None where the library's checked multiplication overflows (so a
    shape of a million dims is not one huge product: the size stays below 2^64 all along)."""
    n = itemsize
    for d in shape:
        n *= d
        if n >= _U64:
            return None
    return n


def _count_outside_strings(raw: bytes) -> tuple[int, int]:
    """(containers, keys): the '{' and '[', and the ':', of a JSON text outside its strings,
    counted between the strings without copying any (memory stays flat; ~1.5 s per million
    strings)."""
    containers = keys = pos = 0
    for m in _STRING.finditer(raw):
        start = m.start()
        containers += raw.count(b"{", pos, start) + raw.count(b"[", pos, start)
        keys += raw.count(b":", pos, start)
        pos = m.end()
    return containers + raw.count(b"{", pos) + raw.count(b"[", pos), keys + raw.count(b":", pos)


def _parse_header(raw: bytes) -> dict:
    """The header's JSON object, as strictly as the safetensors library reads it (UTF-8, no
    duplicate keys, no NaN).

    Python's json makes an object per value, ~70 bytes: '[{},{},...]' cost 29 bytes of memory
    per header byte. A valid header has at most as many containers ('{', '[') as keys (':')
    plus 2 (a tensor entry: 4 keys, 3 containers; the metadata: 1 container, n keys), so
    headers with more are refused before parsing; what is left costs at most ~15 bytes per
    header byte ('{"":0,"":0,...}'). Counting outside strings takes a pass over them, run only
    when a plain count of the brackets is above one per 16 bytes (a valid header's entries
    take more bytes than that)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"safetensors header: expected UTF-8 JSON, found a byte that is not UTF-8 at file byte "
                           f"{8 + e.start} ({raw[e.start:e.start + 4]!r})") from e
    containers = raw.count(b"{") + raw.count(b"[")
    if containers > len(raw) // 16 + 2:
        containers, keys = _count_outside_strings(raw)
        if containers > keys + 2:
            raise InvalidInput(f"safetensors header: expected a map of tensor entries, found {containers} JSON "
                               f"objects and arrays for {keys} keys")
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_int=_parse_int)
    except _Duplicate as e:
        raise InvalidInput(f"safetensors header: expected each key once, found {e.key!r:.80} twice") from None
    except (ValueError, RecursionError) as e:
        raise InvalidInput(f"safetensors header: expected JSON, found {type(e).__name__}: "
                           f"{str(e).splitlines()[0][:100]}") from e
    if not isinstance(header, dict):
        raise InvalidInput(f"safetensors header: expected a JSON object, found {type(header).__name__}")
    return header


def read(f) -> Model:
    """Check the whole header, as the safetensors library's ``validate`` does and more, before
    reading any data: UTF-8 JSON of at most MAX_HEADER bytes, each key once; every dtype known;
    shapes and offsets non-negative integers; each tensor's bytes exactly dtype x shape; the
    tensors' ranges, in offset order, contiguous from 0 to the end of the file (no hole, no
    overlap: a byte belongs to one tensor)."""
    return read_seekable(f, _read)


def _read(f, spool) -> Model:
    base = f.tell()
    size = f.seek(0, 2) - base
    f.seek(base)
    head = f.read(8)
    if len(head) != 8:
        raise InvalidInput(f"safetensors: expected an 8-byte header length, found a {len(head)}-byte file")
    (n,) = struct.unpack("<Q", head)
    if n > min(MAX_HEADER, size - 8):
        raise InvalidInput(f"safetensors: header length {n}: expected at most {min(MAX_HEADER, size - 8)} "
                           f"({'the rest of the file' if size - 8 < MAX_HEADER else 'the library limit'})")
    header = _parse_header(f.read(n))
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata  # null: as the library reads it
    if not isinstance(metadata, dict) or not all(_is_text(k) and _is_text(v) for k, v in metadata.items()):
        raise InvalidInput("safetensors: __metadata__: expected a map of strings to strings")
    data_start, data_size = base + 8 + n, size - 8 - n
    entries = []
    for name, e in header.items():
        where = f"safetensors tensor {name!r:.80}"
        if not _is_text(name):
            raise InvalidInput(f"{where}: expected a name that is valid Unicode text (lone surrogate)")
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= e.keys():
            raise InvalidInput(f"{where}: expected a map with dtype, shape and data_offsets, found {_short(e)}")
        st_dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(st_dtype, str):
            raise InvalidInput(f"{where}: dtype: expected a string, found {st_dtype!r:.60}")
        if st_dtype not in _TO_NNAR:
            raise UnsupportedDtype(f"{where}: dtype {st_dtype!r:.60} is not supported; expected one of "
                                   f"{', '.join(_TO_NNAR)}")
        if not isinstance(shape, list) or not all(_is_index(d) for d in shape):
            raise InvalidInput(f"{where}: shape: expected a list of non-negative integers, found {_short(shape)}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_index(o) for o in offsets):
            raise InvalidInput(f"{where}: data_offsets: expected [begin, end], two non-negative integers, found "
                               f"{_short(offsets)}")
        dt = _TO_NNAR[st_dtype]
        nbytes = _nbytes(shape, dtypes.itemsize(dt))
        if nbytes is None:
            raise InvalidInput(f"{where}: shape {_short(shape)}: expected a size below 2^64 bytes, found more")
        b, end = offsets
        if end < b or end - b != nbytes:
            raise InvalidInput(f"{where}: data_offsets [{b}, {end}]: expected {nbytes} bytes for {st_dtype}{shape}, "
                               f"found {end - b}")
        entries.append((name, dt, tuple(shape), b, end))
    pos = 0
    for name, _, _, b, end in sorted(entries, key=lambda x: (x[3], x[4])):
        if b != pos:
            raise InvalidInput(f"safetensors tensor {name!r:.80}: data_offsets [{b}, {end}]: expected the data to "
                               f"begin at {pos}, where the previous tensor's ends (found "
                               f"{'an overlap' if b < pos else 'a hole'})")
        pos = end
    if pos != data_size:
        raise InvalidInput(f"safetensors: expected the tensors to cover the whole {data_size}-byte data section, "
                           f"found them ending at byte {pos}" + (" (bytes after them)" if pos < data_size else ""))

    def tensors():
        for name, dt, shape, b, end in entries:
            nbytes = end - b
            f.seek(data_start + b)
            buf = bytearray(nbytes)
            if f.readinto(buf) != nbytes:
                raise InvalidInput(f"safetensors tensor {name!r:.80}: file ended inside its data")
            yield name, np.frombuffer(buf, dtype=dtypes.storage_dtype(dt)).reshape(shape), dt
            del buf  # not kept while the next tensor is read

    return Model("safetensors", metadata, tensors, len(entries), close=spool.close if spool else None)


def _header(layout, metadata) -> bytes:
    header, pos = {}, 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, dt, shape in layout:
        if name == "__metadata__":
            raise InvalidInput("tensor name '__metadata__' cannot be written to safetensors: the format reserves it")
        nbytes = math.prod(shape) * dtypes.itemsize(dt)
        header[name] = {"dtype": _FROM_NNAR[dt], "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    raw += b" " * (-len(raw) % 8)  # as safetensors does: keeps the data 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def write(f, tensors, metadata, layout=None, structure=None) -> None:
    """Write tensors in order. With ``layout`` [(name, dtype, shape)] known up front the data
    streams straight through; otherwise it is spooled to a temporary file first."""
    if layout is not None:
        f.write(_header(layout, metadata))
        # not zip(): like enumerate, it keeps its last result tuple, and the previous array in it,
        # alive while the next tensor decodes
        k = 0
        for name, arr, dt in tensors:
            if k >= len(layout):
                raise InvalidInput(f"tensor {name!r}: more tensors than the announced layout")
            lname, ldt, lshape = layout[k]
            k += 1
            if (name, dt, tuple(arr.shape)) != (lname, ldt, tuple(lshape)):
                raise InvalidInput(f"tensor {name!r} does not match the announced layout")
            f.write(as_bytes(arr))
            del arr  # not kept while the next tensor decodes
        if k != len(layout):
            raise InvalidInput(f"expected {len(layout)} tensors as announced, found {k}")
        return
    with tempfile.TemporaryFile() as spool:
        seen = []
        for name, arr, dt in tensors:
            seen.append((name, dt, tuple(arr.shape)))
            spool.write(as_bytes(arr))
            del arr
        f.write(_header(seen, metadata))
        spool.seek(0)
        shutil.copyfileobj(spool, f, 1 << 20)


def write_archive(f, archive, metadata, *, verify: bool = False, progress=None) -> list:
    """Write every tensor of an :class:`nnar.Archive` as safetensors to ``f``, a new regular file
    opened for reading and writing, and return the infos written.

    The header comes from the index, so each record's data is written at its place as it is
    decoded: a large lossless record a piece at a time (:mod:`nnar.pieces`; memory of a few
    pieces, the writing of one overlapping the decoding of the next), others whole. The file
    is given its full size first where the system can (``posix_fallocate``), so a full disk is
    found before anything is decoded."""
    infos = archive.infos()
    nbytes_of = {i.name: i.nbytes for i in infos}
    header = _header([(i.name, i.dtype, i.shape) for i in infos], metadata)
    start, pos = {}, len(header)
    for i in infos:
        start[i.name] = pos
        pos += i.nbytes
    fd = f.fileno()
    if hasattr(os, "posix_fallocate") and pos:
        try:
            os.posix_fallocate(fd, 0, pos)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    _pwrite(fd, header, 0)
    done = 0
    for names, aliases, spec, decode in archive.records(verify=verify):
        at, itemsize = start[names[0]], spec.storage_dtype.itemsize

        def sink(first: int, piece: np.ndarray, at=at, itemsize=itemsize) -> None:
            _pwrite(fd, as_bytes(piece), at + first * itemsize)
        decode(sink=sink)
        for alias, target in aliases:  # copied from what was just written
            _copy(fd, start[target], start[alias], nbytes_of[target])
        for name in [*names, *(a for a, _ in aliases)]:
            done += 1
            if progress:
                progress(name, done, None)
    archive.check_content()
    return infos


def _copy(fd: int, src: int, dst: int, n: int, chunk: int = 16 << 20) -> None:
    for off in range(0, n, chunk):
        data = os.pread(fd, min(chunk, n - off), src + off)
        _pwrite(fd, data, dst + off)


def _pwrite(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
