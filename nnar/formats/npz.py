"""NumPy ``.npz`` in and out. Read lazily (one array at a time); written as a ZIP of ``.npy``
members, streamed, so the output may be a pipe.

Reading does not use ``np.load``: on hostile bytes it raises whatever zlib, zipfile, tokenize
or ast raise, and it allocates an array of the size an ``.npy`` header declares before reading
a byte of it. Here the ZIP directory is checked first (members may not overlap: no
overlapping-member bomb), then each member's ``.npy`` header, whose size must be the member's
and within :data:`nnar.limits.DEFAULT_LIMITS`; the data is read in chunks, so memory follows the
bytes actually there, and the member's CRC is checked at its end. Every failure of a library
on the way is an ``InvalidInput`` (``LimitExceeded`` for a size beyond the limits) raised from
it.

NumPy has no float8. A float8 tensor is written as its bit patterns in a structured array of one
``uint8`` field named after the dtype (``dtype([('float8_e4m3fn', 'u1')])``): ``np.load`` reads
it without pickle, the dtype is recorded in the file, and reading such a member gives the
float8 tensor back, so pack → unpack → pack keeps it bit for bit. From NumPy:
``a['float8_e4m3fn'].view(ml_dtypes.float8_e4m3fn)``. (An ``ml_dtypes`` float8 array saved by
``np.save`` is ``|V1``, which says nothing of its kind, and is refused.)
"""

from __future__ import annotations

import math
import warnings
import zipfile

import numpy as np

from .. import dtypes
from ..errors import InvalidInput, NnarError
from ..limits import DEFAULT_LIMITS
from . import Model, read_seekable

MAGIC = b"\x93NUMPY"
#: bytes read from a member at a time (memory follows what is there, not what is declared)
CHUNK = 16 << 20
#: np.load's own cap on an .npy header
MAX_NPY_HEADER = 10_000
_LOCAL_HEADER = 30  # a ZIP local file header's fixed part


def _reason(e: BaseException) -> str:
    """A library's error on one short line."""
    text = " ".join(str(e).split()) or "no detail"
    cls = type(e)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    return f"{name}: {text[:120]}"


def read(f) -> Model:
    return read_seekable(f, _read)  # a ZIP is read from its end: a pipe is spooled first


def _read(f, spool) -> Model:
    start = f.tell()
    if f.read(len(MAGIC)) == MAGIC:
        raise InvalidInput("input: expected a .npz archive (a ZIP of .npy arrays), found a single .npy array")
    f.seek(start)
    try:
        zf = zipfile.ZipFile(f)
    except Exception as e:  # noqa: BLE001  zipfile on hostile bytes: BadZipFile, OSError, ValueError, ...
        raise InvalidInput(f"input: expected a .npz file (a ZIP archive), found something zipfile cannot open "
                           f"({_reason(e)})") from e
    infos = zf.infolist()
    _check_directory(zf, infos)
    names, seen = [], set()
    for info in infos:
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if name in seen:
            raise InvalidInput(f"npz member {info.filename!r:.80}: expected each array once, found the name {name!r:.80} "
                               "twice")
        seen.add(name)
        names.append(name)

    def tensors():
        total = 0
        for name, info in zip(names, infos):
            arr = _member(zf, info)
            float8 = arr.name if isinstance(arr, _Float8) else None
            if float8 is not None:
                arr = arr.bits
            total += arr.nbytes
            DEFAULT_LIMITS.check("npz arrays in all", total, "max_total_bytes", where=f"member {info.filename!r:.80}")
            try:
                dt = float8 or dtypes.dtype_name_of(arr)
            except NnarError as e:
                raise InvalidInput(f"input tensor {name!r}: {e.message}") from None
            yield name, arr, dt
            del arr  # not kept while the next member is read

    def close():
        zf.close()
        if spool is not None:
            spool.close()

    return Model("npz", {}, tensors, len(infos), close=close)


def _check_directory(zf: zipfile.ZipFile, infos: list) -> None:
    """Members, in file order, must not overlap each other or the central directory: ZIP bombs
    of overlapping members decompress one stretch of bytes many times over."""
    end = getattr(zf, "start_dir", None)
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for a, b in zip(ordered, ordered[1:] + [None]):
        limit = b.header_offset if b is not None else end
        if limit is None:
            continue
        if a.header_offset < 0 or a.header_offset + _LOCAL_HEADER + a.compress_size > limit:
            found = f"member {b.filename!r:.80} at byte {b.header_offset}" if b is not None else \
                f"the central directory at byte {end}"
            raise InvalidInput(f"npz member {a.filename!r:.80}: expected its {a.compress_size} stored bytes at byte "
                               f"{a.header_offset} to end before the next part, found {found} inside them "
                               "(overlapping members)")


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    where = f"npz member {info.filename!r:.80}"
    try:
        fp = zf.open(info)
    except Exception as e:  # noqa: BLE001  NotImplementedError (compression), BadZipFile, RuntimeError (encrypted), ...
        raise InvalidInput(f"{where}: expected a ZIP member zipfile can read, found {_reason(e)}") from e
    with fp:
        try:
            if fp.read(len(MAGIC)) != MAGIC:
                raise InvalidInput(f"{where}: expected an .npy array (it begins with \\x93NUMPY), found other bytes")
            fp.seek(0)
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=MAX_NPY_HEADER)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=MAX_NPY_HEADER)
            else:
                raise InvalidInput(f"{where}: expected an .npy header of version 1.0 or 2.0, found {version}")
            header_end = fp.tell()
        except NnarError:
            raise
        except Exception as e:  # noqa: BLE001  ValueError, SyntaxError, tokenize.TokenError, zlib.error, EOFError, ...
            raise InvalidInput(f"{where}: expected an .npy header, found one numpy cannot read ({_reason(e)})") from e
        if dtype.hasobject:
            raise InvalidInput(f"{where}: expected an array of numbers, found dtype {dtype} (Python objects, which "
                               "only pickle can read)")
        float8 = _float8_of(dtype)
        if float8 is not None:
            dtype = np.dtype("<u1")
        elif dtype.itemsize == 0 or dtype.names is not None or dtype.subdtype is not None:
            raise InvalidInput(f"{where}: expected an array of a plain number dtype, found {dtype}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - header_end:
            raise InvalidInput(f"{where}: header declares {dtype}{list(shape)} ({nbytes} bytes), found "
                               f"{info.file_size - header_end} bytes of data in the member")
        DEFAULT_LIMITS.check(f"{where}: array bytes", nbytes, "max_tensor_bytes")
        buf = bytearray()
        try:
            while len(buf) < nbytes:
                chunk = fp.read(min(CHUNK, nbytes - len(buf)))
                if not chunk:
                    break
                buf += chunk
            extra = fp.read(1)  # reaching the end checks the member's CRC
        except Exception as e:  # noqa: BLE001  zlib.error, BadZipFile (CRC), EOFError, OSError, ...
            raise InvalidInput(f"{where}: expected {nbytes} bytes of array data, found bytes zipfile cannot read "
                               f"after {len(buf)} ({_reason(e)})") from e
        if len(buf) != nbytes or extra:
            raise InvalidInput(f"{where}: expected {nbytes} bytes of array data, found "
                               f"{len(buf) + len(extra)}{'+' if extra else ''}")
    arr = np.frombuffer(buf, dtype=dtype)
    arr = arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)
    return arr if float8 is None else _Float8(arr, float8)


def float8_field(bits: np.ndarray, dt: str) -> np.ndarray:
    """Float8 bit patterns as .npy holds them: a structured array of one uint8 field named ``dt``."""
    return np.require(bits, "<u1", "C").view(np.dtype([(dt, "u1")]))


class _Float8:
    """A member holding float8 bit patterns, with the dtype its field names (see the module
    docstring): the array and its spec name."""

    def __init__(self, bits: np.ndarray, name: str):
        self.bits, self.name = bits, name


def _float8_of(dtype: np.dtype) -> str | None:
    """The float8 dtype a structured .npy dtype records (one uint8 field named after it), or None."""
    if dtype.names is not None and len(dtype.names) == 1 and dtype.names[0] in dtypes.FLOAT8_DTYPES \
            and dtype.itemsize == 1 and dtype.fields[dtype.names[0]][0] == np.dtype("u1"):
        return dtype.names[0]
    return None


def write(f, tensors, metadata, layout=None, structure=None) -> None:
    if metadata:
        warnings.warn("the .npz format has no place for metadata; it was left out", stacklevel=3)
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr, dt in tensors:
            if dt == "bfloat16":
                warnings.warn(f"{name}: .npz has no bfloat16; written as float32 (every value exact)", stacklevel=3)
                arr = dtypes.bfloat16_to_float32(arr)
            elif dt in dtypes.FLOAT8_DTYPES:
                warnings.warn(f"{name}: .npz has no {dt}; written as its bit patterns, a structured array of one uint8 "
                              f"field named {dt!r} (nnar reads it back as {dt}; in NumPy: "
                              f"a[{dt!r}].view(ml_dtypes.{dt}))", stacklevel=3)
                arr = float8_field(arr, dt)
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.require(arr, requirements="C"), allow_pickle=False)
