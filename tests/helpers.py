"""Helpers shared by the test files: bit-level comparison of tensors, writing an archive,
short-reading file objects, reading safetensors headers. (Hypothesis strategies: strategies.py.)"""

from __future__ import annotations

import io
import itertools
import json
import struct
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mlp.safetensors"

INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")

#: spec name -> little-endian storage dtype (what nnar hands back)
STORAGE = {"bool": np.dtype("?"), "bfloat16": np.dtype("<u2"),
           **{n: np.dtype(n).newbyteorder("<") for n in INT_DTYPES + ("float16", "float32", "float64")}}


# -- bit-level comparison ------------------------------------------------------------------------


def c_order(array: np.ndarray) -> np.ndarray:
    """A C-contiguous array of the same shape (unlike np.ascontiguousarray, 0-d stays 0-d)."""
    return np.require(array, requirements="C")


def canonical_bytes(array: np.ndarray) -> bytes:
    """The elements of ``array`` in C order, each little-endian, by byte shuffling only."""
    a = c_order(array)
    if a.dtype.name == "bfloat16":  # ml_dtypes: native order
        a = a.view(np.uint16)
    width = a.dtype.itemsize
    if width == 1:
        return a.tobytes()
    order = a.dtype.byteorder if a.dtype.byteorder in "<>" else "="
    u = a.view(np.dtype(f"u{width}").newbyteorder(order))
    return u.astype(np.dtype(f"<u{width}")).tobytes()


def assert_same_tensor(found: np.ndarray, expected: "np.ndarray", dtype: str | None = None) -> None:
    """``found`` (what nnar returned) holds exactly the elements of ``expected``, bit for bit,
    in nnar's storage dtype for the spec dtype and with the same shape."""
    if hasattr(expected, "write_dtype"):  # a strategies.Tensor
        dtype, shape, want = expected.dtype, expected.array.shape, expected.expected
    else:
        dtype = dtype or spec_name(expected)
        shape, want = expected.shape, canonical_bytes(expected)
    assert isinstance(found, np.ndarray)
    assert found.dtype == STORAGE[dtype], (found.dtype, dtype)
    assert found.shape == tuple(shape)
    assert canonical_bytes(found) == want


def write_archive(tensors: dict, **kw) -> bytes:
    """An archive of ``tensors`` written tensor by tensor with ``nnar.ArchiveWriter``."""
    import nnar

    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf, **kw) as w:
        for name, t in tensors.items():
            w.write(name, t.array, dtype=t.write_dtype)
    return buf.getvalue()


def spec_name(array: np.ndarray) -> str:
    dt = array.dtype
    if dt.name == "bfloat16":
        return "bfloat16"
    return "bool" if dt.kind == "b" else dt.newbyteorder("=").name


# -- file objects ---------------------------------------------------------------------------------


class ShortReadsNoReadinto:
    """A non-seekable binary source whose every read returns at most the next of ``sizes``;
    it has only ``read`` (no ``readinto``), like many hand-written file-likes."""

    def __init__(self, data: bytes, sizes: list[int]):
        self._data, self._pos = memoryview(data), 0
        self._sizes = itertools.cycle(sizes)
        self.calls = 0

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return True

    def tell(self):
        raise io.UnsupportedOperation("not seekable")

    def seek(self, *a):
        raise io.UnsupportedOperation("not seekable")

    def _take(self, n: int) -> memoryview:
        self.calls += 1
        if n is None or n < 0:
            n = len(self._data)
        n = min(n, next(self._sizes), len(self._data) - self._pos)
        out = self._data[self._pos:self._pos + n]
        self._pos += n
        return out

    def read(self, n: int = -1) -> bytes:
        return bytes(self._take(n))


class ShortReads(ShortReadsNoReadinto):
    """The same with ``readinto``, returning short counts as a raw file or socket does."""

    def readinto(self, b) -> int:
        chunk = self._take(len(b))
        memoryview(b).cast("B")[:len(chunk)] = chunk
        return len(chunk)


# -- safetensors ----------------------------------------------------------------------------------


def parse_safetensors(path) -> tuple[dict, dict[str, tuple[str, list, bytes]]]:
    """Our own reading of a safetensors file: (metadata, {name: (dtype, shape, data bytes)})."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {})
    out = {name: (e["dtype"], e["shape"], data[e["data_offsets"][0]:e["data_offsets"][1]]) for name, e in header.items()}
    return metadata, out
