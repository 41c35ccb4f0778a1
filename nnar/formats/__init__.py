"""Model file formats nnar reads and writes, each a thin adapter in a module of its own.

A format module has ``read(f) -> Model`` (tensors come out one at a time, so memory stays about
one tensor) and ``write(f, tensors, metadata, layout=None, structure=None)``. The format is chosen
by file extension unless the caller names one.

Two things beyond tensors travel through an archive (spec/FORMAT.md §5.4, §5.5):

- **aliases**: one tensor under several names (PyTorch's tied weights). ``Model.aliases`` maps
  each alias to its target; ``tensors()`` yields only the targets. On the way out, ``write``
  gets every name, and an alias is yielded as *the same array object* as its target, so a
  format that can share storage (torch) restores the tie.
- **structure**: whatever the format holds besides tensors (an ONNX graph, a checkpoint's key
  order), as bytes only that format's module reads. It is stored in the archive's MODL record
  and handed back to ``write`` of the same format (``None`` otherwise).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import tempfile
from typing import Callable, Iterator

import numpy as np

from ..errors import InvalidInput

# name → module; extensions → name
FORMATS = {"npz": "nnar.formats.npz", "safetensors": "nnar.formats.safetensors", "torch": "nnar.formats.torch",
           "onnx": "nnar.formats.onnx"}
EXTENSIONS = {".npz": "npz", ".safetensors": "safetensors", ".pt": "torch", ".pth": "torch", ".bin": "torch",
              ".ckpt": "torch", ".onnx": "onnx"}


@dataclasses.dataclass
class Model:
    """A model being read: its metadata and a way to get its tensors in order."""

    source_format: str
    metadata: dict[str, str]
    tensors: Callable[[], Iterator[tuple[str, np.ndarray, str]]]  # (name, array, spec dtype name)
    count: int | None = None
    close: Callable[[], None] | None = None  # releases what reading needed (a spooled copy of a pipe)
    aliases: dict[str, str] = dataclasses.field(default_factory=dict)  # alias name → target name
    structure: bytes | None = None  # the MODL record's body (format ``source_format``)


def seekable(f):
    """``(file, spool)``: ``f`` itself if it can seek, else a temporary copy of it (``spool``,
    to be closed by the caller)."""
    try:
        if f.seekable():
            return f, None
    except (AttributeError, ValueError, OSError):
        pass
    spool = tempfile.TemporaryFile()
    shutil.copyfileobj(f, spool, 1 << 20)
    spool.seek(0)
    return spool, spool


def detect(path: str | os.PathLike | None, override: str | None, *, role: str) -> str:
    if override:
        if override not in FORMATS:
            raise InvalidInput(f"format {override!r}: expected one of {', '.join(FORMATS)}")
        return override
    path = path if isinstance(path, (str, os.PathLike)) else None  # a file from a descriptor has an int name
    ext = os.path.splitext(os.fspath(path or ""))[1].lower()
    if ext not in EXTENSIONS:
        raise InvalidInput(f"{role} {os.fspath(path or '-')!r}: cannot tell the format from the extension {ext or '(none)'!r}; "
                           f"expected one of {', '.join(EXTENSIONS)}, or name it with --from/--to")
    return EXTENSIONS[ext]


def module(name: str):
    return importlib.import_module(FORMATS[name])
