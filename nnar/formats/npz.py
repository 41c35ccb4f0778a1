"""NumPy ``.npz`` in and out. Read lazily (one array at a time); written as a ZIP of ``.npy``
members, streamed, so the output may be a pipe."""

from __future__ import annotations

import warnings
import zipfile

import numpy as np

from .. import dtypes
from ..errors import InvalidInput, NnarError
from . import Model, seekable


def read(f) -> Model:
    f, spool = seekable(f)  # a ZIP is read from its end: a pipe is spooled first
    try:
        npz = np.load(f, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise InvalidInput(f"input: expected a .npz file, found something else ({e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise InvalidInput("input: expected a .npz archive, found a single .npy array")

    def tensors():
        for name in npz.files:
            try:
                arr = npz[name]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
                raise InvalidInput(f"input tensor {name!r}: cannot read it ({e})") from e
            try:
                dt = dtypes.dtype_name_of(arr)
            except NnarError as e:
                raise InvalidInput(f"input tensor {name!r}: {e.message}") from None
            yield name, arr, dt

    return Model("npz", {}, tensors, len(npz.files), close=spool.close if spool else None)


def write(f, tensors, metadata, layout=None, structure=None) -> None:
    if metadata:
        warnings.warn("the .npz format has no place for metadata; it was left out", stacklevel=3)
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr, dt in tensors:
            if dt == "bfloat16":
                warnings.warn(f"{name}: .npz has no bfloat16; written as float32 (every value exact)", stacklevel=3)
                arr = dtypes.bfloat16_to_float32(arr)
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.require(arr, requirements="C"), allow_pickle=False)
