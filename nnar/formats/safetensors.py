"""safetensors in and out, parsed and written here (the format is small; no dependency needed).

Layout: u64 little-endian header length N, N bytes of JSON ({name: {dtype, shape,
data_offsets}, "__metadata__": {str: str}}), then the data. bfloat16 and ``__metadata__`` go
through unchanged. The header is bounded and every offset checked before any tensor is read.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile

import numpy as np

from .. import dtypes
from ..codecs.abc import as_bytes
from ..errors import InvalidInput, UnsupportedDtype
from . import Model, seekable

MAX_HEADER = 100 << 20  # safetensors' own limit
_TO_NNAR = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "U32": "uint32",
            "I32": "int32", "U64": "uint64", "I64": "int64", "F16": "float16", "BF16": "bfloat16",
            "F32": "float32", "F64": "float64"}
_FROM_NNAR = {v: k for k, v in _TO_NNAR.items()}


def read(f) -> Model:
    f, spool = seekable(f)
    base = f.tell()
    size = f.seek(0, 2) - base
    f.seek(base)
    head = f.read(8)
    if len(head) != 8:
        raise InvalidInput(f"safetensors: expected an 8-byte header length, found {len(head)} bytes")
    (n,) = struct.unpack("<Q", head)
    if n > min(MAX_HEADER, size - 8):
        raise InvalidInput(f"safetensors: header length {n}: expected at most {min(MAX_HEADER, size - 8)}")
    try:
        header = json.loads(f.read(n))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InvalidInput(f"safetensors: header is not valid JSON ({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(header, dict):
        raise InvalidInput("safetensors: expected a JSON object header")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise InvalidInput("safetensors: __metadata__: expected a map of strings to strings")
    data_start, data_size = base + 8 + n, size - 8 - n
    entries = []
    for name, e in header.items():
        try:
            st_dtype, shape, (b, end) = e["dtype"], e["shape"], e["data_offsets"]
            ok = all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(b, int) and isinstance(end, int)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise InvalidInput(f"safetensors tensor {name!r}: expected dtype, shape and data_offsets, found {e!r:.200}")
        if not isinstance(st_dtype, str):
            raise InvalidInput(f"safetensors tensor {name!r}: dtype: expected a string, found {st_dtype!r:.60}")
        if st_dtype not in _TO_NNAR:
            raise UnsupportedDtype(f"safetensors tensor {name!r}: dtype {st_dtype!r} is not supported; expected one of "
                                   f"{', '.join(_TO_NNAR)}")
        dt = _TO_NNAR[st_dtype]
        nbytes = math.prod(shape) * dtypes.itemsize(dt)
        if not 0 <= b <= end <= data_size or end - b != nbytes:
            raise InvalidInput(f"safetensors tensor {name!r}: data_offsets [{b}, {end}] do not hold {nbytes} bytes "
                               f"inside the {data_size}-byte data section")
        entries.append((name, dt, tuple(shape), b, nbytes))

    def tensors():
        for name, dt, shape, b, nbytes in entries:
            f.seek(data_start + b)
            buf = bytearray(nbytes)
            if f.readinto(buf) != nbytes:
                raise InvalidInput(f"safetensors tensor {name!r}: file ended inside its data")
            yield name, np.frombuffer(buf, dtype=dtypes.storage_dtype(dt)).reshape(shape), dt

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
        for (name, arr, dt), (lname, ldt, lshape) in zip(tensors, layout, strict=True):
            if (name, dt, tuple(arr.shape)) != (lname, ldt, tuple(lshape)):
                raise InvalidInput(f"tensor {name!r} does not match the announced layout")
            f.write(as_bytes(arr))
        return
    with tempfile.TemporaryFile() as spool:
        seen = []
        for name, arr, dt in tensors:
            seen.append((name, dt, tuple(arr.shape)))
            spool.write(as_bytes(arr))
        f.write(_header(seen, metadata))
        spool.seek(0)
        shutil.copyfileobj(spool, f, 1 << 20)
