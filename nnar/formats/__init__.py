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

from ..constants import MAGIC
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
    #: files that are not weights (a model folder's config, tokenizer): (relative path, loader)
    files: list[tuple[str, Callable[[], bytes]]] = dataclasses.field(default_factory=list)


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


def read_seekable(f, read_from: Callable) -> "Model":
    """``read_from(file, spool)`` on ``f`` made :func:`seekable`; the spool is closed if that
    fails (on success, the Model's ``close`` owns it)."""
    f, spool = seekable(f)
    try:
        return read_from(f, spool)
    except BaseException:
        if spool is not None:
            spool.close()
        raise


def detect(path: str | os.PathLike | None, override: str | None, *, role: str, head: bytes | None = None) -> str:
    """The format of a model file: ``override`` (--from/--to), else the extension, else (an input
    whose first bytes are ``head``) its content. An override or extension that the content
    contradicts is an error naming both: reading a file as what it is not gives errors that
    point nowhere near the mistake."""
    found = sniff(head) if head else None
    shown = os.fspath(path) if isinstance(path, (str, os.PathLike)) else "-"
    if override:
        if override not in FORMATS:
            raise InvalidInput(f"format {override!r}: expected one of {', '.join(FORMATS)}")
        if found is not None and found != override:
            raise InvalidInput(f"{role} {shown!r}: --from {override} says {override}, but its content is {found}")
        return override
    path = path if isinstance(path, (str, os.PathLike)) else None  # a file from a descriptor has an int name
    ext = os.path.splitext(os.fspath(path or ""))[1].lower()
    if ext in EXTENSIONS:
        if found is not None and found != EXTENSIONS[ext]:
            raise InvalidInput(f"{role} {shown!r}: the extension {ext!r} says {EXTENSIONS[ext]}, but its content is "
                               f"{found}; name the format with --from if the content is right")
        return EXTENSIONS[ext]
    if found is not None and found in FORMATS:
        return found
    raise InvalidInput(f"{role} {shown!r}: cannot tell the format from the extension {ext or '(none)'!r}"
                       + (" or the content" if head else "")
                       + f"; expected one of {', '.join(EXTENSIONS)}, or name it with --from/--to")


#: bytes enough to tell the formats apart
SNIFF_BYTES = 512  # a zip's first member name too (an npz member may be long)


def sniff(head: bytes) -> str | None:
    """The format the first bytes of a file say, if they say one: ``"nnar"`` (an archive),
    ``"npz"`` or ``"torch"`` (zip: numpy's members end in .npy, torch's in data.pkl),
    ``"torch"`` (a legacy pickle), ``"safetensors"`` (an 8-byte header length, then ``{``),
    ``"onnx"`` (a protobuf ModelProto opening with ir_version, field 1). None: no idea."""
    if head.startswith(MAGIC):
        return "nnar"
    if head.startswith(b"PK\x03\x04") and len(head) >= 30:
        name_len = int.from_bytes(head[26:28], "little")
        name = head[30:30 + name_len]
        if len(name) < name_len:  # a long first member name, cut by the sniffed bytes: no telling
            return None
        if name.endswith(b".npy"):
            return "npz"
        if name.endswith(b".pkl") or b"/" in name:  # torch.save: <archive>/data.pkl first
            return "torch"
        return None
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # pickle protocol 2-5: torch's legacy format
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 1 << 30:
        return "safetensors"
    if head[:1] == b"\x08" and len(head) >= 3 and head[1] < 0x80 and head[2:3] in (b"\x12", b"\x1a", b"\x22",
                                                                                   b"\x3a", b"\x42"):
        return "onnx"  # ir_version (small varint), then producer_name / version / domain / graph / opset
    return None


def head_of(path: str | os.PathLike) -> bytes | None:
    """The first bytes of a regular file (None when it cannot be read: the reader will say why)."""
    try:
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read(SNIFF_BYTES)
    except OSError:
        return None


def module(name: str):
    return importlib.import_module(FORMATS[name])
