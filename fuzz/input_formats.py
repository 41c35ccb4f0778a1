"""What the input-format harnesses share (fuzz_npz, fuzz_safetensors, fuzz_torch, fuzz_onnx).

Each harness hands one file to nnar twice: to the format's reader (``nnar.formats.<fmt>.read``,
every tensor taken out) and to ``nnar.pack``, which writes an archive from it. Contract
(common.py): a result or an ``nnar.NnarError``, nothing else, in bounded time and memory.

Laws checked on top, since they cost little:

* the reader yields (str, ndarray, dtype name) with the array's dtype that name's (its storage
  dtype for bfloat16 and float8, held as bit patterns);
* the reader and ``pack`` agree: both read the file or both refuse it;
* an archive ``pack`` wrote unpacks, and holds the reader's tensors, bit for bit.
"""

from __future__ import annotations

import io

from common import ContractViolation, call

import nnar  # noqa: E402
from nnar import dtypes, formats  # noqa: E402


def read_all(fmt: str, src) -> list[tuple[str, object, str]]:
    model = formats.module(fmt).read(src)
    try:
        out = []
        for name, arr, dt in model.tensors():
            if not isinstance(name, str) or type(arr).__name__ != "ndarray" or dt not in dtypes.DTYPE_NAMES:
                raise ContractViolation(f"{fmt} reader yielded ({type(name).__name__}, {type(arr).__name__}, {dt!r})")
            # bfloat16 and float8 come as unsigned bit patterns: their storage dtype, not their name's
            held = dtypes.storage_dtype(dt).name if dt in dtypes.BIT_PATTERN_DTYPES else dt
            if dtypes.dtype_name_of(arr) != held:
                raise ContractViolation(f"{fmt} reader: tensor {name!r} is {arr.dtype}, announced as {dt}")
            out.append((name, dtypes.to_storage(arr, dt).tobytes(), dt, tuple(arr.shape)))
        return out
    finally:
        if model.close:
            model.close()


def _pack(fmt: str, src) -> bytes:
    out = io.BytesIO()
    nnar.pack(src, out, fmt=fmt, level=1)
    return out.getvalue()


def _closing(fn, fmt: str, src):
    with src:
        return fn(fmt, src)


def check(fmt: str, open_src) -> bool:
    """Read and pack what ``open_src()`` gives (a fresh file object each call); True if the
    reader read it."""
    read = call(_closing, read_all, fmt, open_src())
    archive = call(_closing, _pack, fmt, open_src())
    if read is None and archive is not None:
        raise ContractViolation(f"the {fmt} reader refused a file that nnar.pack packed")
    if archive is None:
        return read is not None  # pack may refuse what the reader read: a name the archive forbids
    back = call(nnar.unpack, archive)
    if back is None:
        raise ContractViolation(f"nnar.pack wrote an archive from a {fmt} file that nnar.unpack refuses")
    for name, raw, dt, shape in read:
        arr = back.get(name)
        if arr is None or tuple(arr.shape) != shape or dtypes.to_storage(arr, dt).tobytes() != raw:
            raise ContractViolation(f"{fmt}: tensor {name!r} unpacks other than the reader read it")
    return True


def from_bytes(data: bytes):
    """A seekable file over ``data`` that is not a BytesIO (as a real file is)."""
    return lambda: io.BufferedReader(io.BytesIO(data))
