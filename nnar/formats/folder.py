"""A model folder in and out (spec/folder.md): what `save_pretrained` writes, packed as one model.

The folder's weights files (safetensors, single or sharded; PyTorch ``pytorch_model*.bin`` where
a directory has no safetensors) give the archive's tensors, in file order, as one model: one
global pruning threshold, one report. Every other file (config.json, the shard index, tokenizer
files, README) is stored as it is in a FILE record (FORMAT.md §5.7). The MODL record, of format
``folder``, says which tensors each weights file held, in its order, with its metadata, so that
unpacking writes the same files back: a folder that ``from_pretrained`` loads as the original.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
import warnings
from typing import Any, Callable

import msgpack

from ..container.schema import check_path
from ..errors import BadDescriptor, InvalidInput, NnarError, NnarIOError, OutputExists
from . import Model

FORMAT = "folder"
_TORCH_WEIGHTS = ("pytorch_model", ".bin")  # transformers' legacy weights: pytorch_model*.bin
MAX_ENTRIES = 100_000  # files in a folder: beyond this it is not a model folder


def _kind(name: str) -> str | None:
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.startswith(_TORCH_WEIGHTS[0]) and name.endswith(_TORCH_WEIGHTS[1]):
        return "torch"
    return None


def _walk(root: str) -> list[tuple[str, str]]:
    """(relative path, absolute path) of every regular file under ``root``, sorted. A symbolic
    link to a regular file is followed (a Hugging Face cache's snapshot is made of them); one to
    a directory, and anything that is not a regular file (a FIFO would block the read forever),
    is an error naming it."""
    out = []
    for top, dirs, files in os.walk(root, followlinks=False):
        for d in dirs:
            if os.path.islink(os.path.join(top, d)):
                raise InvalidInput(f"folder {root!r}: {os.path.relpath(os.path.join(top, d), root)!r} is a link to a "
                                   "directory: expected regular files and directories only")
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(top, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if not os.path.isfile(full):
                raise InvalidInput(f"folder {root!r}: {rel!r} is not a regular file (a device, FIFO or broken link): "
                                   "expected regular files only")
            try:
                check_path(rel, f"folder {root!r}")
            except BadDescriptor as e:
                raise InvalidInput(f"folder {root!r}: file {rel!r} cannot be stored: {e.message}") from None
            out.append((rel, full))
            if len(out) > MAX_ENTRIES:
                raise InvalidInput(f"folder {root!r}: more than {MAX_ENTRIES} files: expected a model folder")
    return out


def _safetensors_names(path: str) -> tuple[list[str], dict]:
    """The tensor names of a safetensors file in header order, and its metadata, from the header
    alone (the tensors are read, and the whole header checked, when they are packed)."""
    from .safetensors import MAX_HEADER, _parse_header
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise InvalidInput(f"safetensors {path!r}: expected an 8-byte header length, found a {len(head)}-byte file")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER, os.path.getsize(path) - 8):
            raise InvalidInput(f"safetensors {path!r}: header length {n}: expected at most the rest of the file")
        header = _parse_header(f.read(n))
    metadata = header.pop("__metadata__", None) or {}
    return list(header), metadata if isinstance(metadata, dict) else {}


def read(root: str) -> Model:
    """A model folder as one :class:`Model`: its tensors, the layout (structure of format
    ``folder``) and its other files."""
    from . import safetensors as st
    from . import torch as torch_format
    entries = _walk(root)
    has_safetensors = {os.path.dirname(rel) for rel, _ in entries if _kind(os.path.basename(rel)) == "safetensors"}
    weights, files, skipped = [], [], []
    for rel, full in entries:
        kind = _kind(os.path.basename(rel))
        if kind == "torch" and os.path.dirname(rel) in has_safetensors:
            skipped.append(rel)  # the same model twice; transformers loads the safetensors
            continue
        (weights if kind else files).append((rel, full, kind))
    if not weights:
        raise InvalidInput(f"folder {root!r}: no weights file found: expected *.safetensors or pytorch_model*.bin")
    if skipped:
        warnings.warn(f"folder {root!r}: {', '.join(skipped)} left out: {'it holds' if len(skipped) == 1 else 'they hold'}"
                      " the weights of the safetensors beside, which transformers loads; pack it alone to keep it")
    layout, owner = [], {}
    torch_models: dict[str, Model] = {}
    for rel, full, kind in weights:
        if kind == "safetensors":
            names, metadata = _safetensors_names(full)
            entry: dict[str, Any] = {"path": rel, "format": kind, "tensors": names, "metadata": metadata}
        else:
            with open(full, "rb") as f:
                m = torch_format.read(f)
            torch_models[rel] = m  # held: torch has read it whole anyway
            names = torch_format.parse_structure(m.structure)[0] if m.structure else []
            entry = {"path": rel, "format": kind, "tensors": names, "structure": m.structure or b""}
        for n in names:
            if n in owner:
                raise InvalidInput(f"folder {root!r}: tensor {n!r} is in {owner[n]!r} and in {rel!r}: expected each "
                                   "tensor name once in a folder")
            owner[n] = rel
        layout.append(entry)
    aliases: dict[str, str] = {}
    for m in torch_models.values():
        aliases.update(m.aliases)

    def tensors():
        for rel, full, kind in weights:
            if kind == "safetensors":
                with open(full, "rb") as f:
                    yield from st.read(f).tensors()
            else:
                yield from torch_models.pop(rel).tensors()

    count = sum(len(e["tensors"]) for e in layout) - len(aliases)
    structure = msgpack.packb({"weights": layout}, use_bin_type=True)
    return Model(FORMAT, {}, tensors, count, aliases=aliases, structure=structure,
                 files=[(rel, _loader(full)) for rel, full, _ in files])


def _loader(path: str) -> Callable[[], bytes]:
    def load() -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise InvalidInput(f"cannot read {path!r}: {e.strerror}") from e
    return load


def parse_layout(structure: bytes) -> list[dict]:
    """The ``folder`` structure (spec/folder.md), checked: it comes from an archive."""
    def bad(expected: str, found: Any) -> BadDescriptor:
        return BadDescriptor(f"folder structure: expected {expected}, found {found!r:.80}", where="MODL record")
    try:
        d = msgpack.unpackb(bytes(structure), raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise bad("a msgpack map", type(e).__name__) from None
    if not isinstance(d, dict) or set(d) != {"weights"} or not isinstance(d["weights"], list):
        raise bad("a map with only the key 'weights', an array", d)
    out, paths, names_seen = [], set(), set()
    for e in d["weights"]:
        if not isinstance(e, dict) or e.get("format") not in ("safetensors", "torch"):
            raise bad("weights entries with format 'safetensors' or 'torch'", e)
        if not set(e) <= {"path", "format", "tensors", "metadata", "structure"}:
            raise bad("only the keys path, format, tensors, metadata and structure in a weights entry", sorted(e))
        path = check_path(e.get("path"), "MODL record (folder)")
        if path in paths:
            raise bad("each weights path once", path)
        paths.add(path)
        names = e.get("tensors")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise bad("'tensors': an array of names", names)
        for n in names:
            if n in names_seen:
                raise bad("each tensor in one weights file, once", n)
            names_seen.add(n)
        md = e.get("metadata", {})
        if not isinstance(md, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in md.items()):
            raise bad("'metadata': a map of strings to strings", md)
        structure = e.get("structure")
        if structure is not None and not isinstance(structure, bytes):
            raise bad("'structure': bin", structure)
        out.append({"path": path, "format": e["format"], "tensors": names, "metadata": md, "structure": structure})
    return out


def write(dst: str, archive, *, force: bool = False, verify: bool = False,
          progress: Callable[[str, int, int | None], None] | None = None, max_shard_size: int | None = None) -> list:
    """Write the folder an archive of format ``folder`` holds to ``dst``, atomically: into a
    temporary folder beside it, renamed into place once complete (an existing ``dst`` is
    replaced only with ``force``). Returns the infos of the tensors written.

    ``max_shard_size`` (bytes) reshards the safetensors weights as transformers does: shards
    ``model-0000k-of-0000n.safetensors`` of at most that much tensor data each (a larger tensor
    gets a shard of its own), their ``model.safetensors.index.json`` written anew, or one
    ``model.safetensors`` when everything fits."""
    from . import safetensors as st
    from . import torch as torch_format
    found = archive.structure
    if found is None or found[0] != FORMAT:
        raise InvalidInput("this archive holds no model folder (it was not packed from one): unpack it to a model "
                           "file instead (.safetensors .npz .pt .onnx)")
    layout = parse_layout(found[1])
    files = archive.files()
    if max_shard_size is not None:
        layout, files, index = _reshard(layout, files, {i.name: i for i in archive.infos()}, max_shard_size)
    clash = {e["path"] for e in layout} & set(files)
    if clash:
        raise BadDescriptor(f"folder structure: {sorted(clash)[0]!r} is both a weights file and a FILE record",
                            where="MODL record")
    dst = os.fspath(dst)
    if os.path.exists(dst) and not force:
        raise OutputExists(f"output {dst!r} exists: expected a new folder name, or --force to replace it")
    parent = os.path.dirname(os.path.abspath(dst))
    try:
        tmp = tempfile.mkdtemp(prefix=".nnar-", dir=parent)
    except OSError as e:
        raise NnarIOError(f"cannot create the folder {dst!r}: {e.strerror}") from e
    infos_by_name = {i.name: i for i in archive.infos()}
    written = []
    try:
        for rel in files:
            _write_bytes(tmp, rel, archive.read_file(rel))
        if max_shard_size is not None and index is not None:
            _write_bytes(tmp, INDEX, index)
        done = 0
        aliases = archive.aliases()
        for entry in layout:
            missing = [n for n in entry["tensors"] if n not in infos_by_name]
            if missing:
                raise BadDescriptor(f"folder structure: {entry['path']!r} lists {missing[0]!r}, which is not a tensor "
                                    "of the archive", where="MODL record")
            arrays: dict[str, Any] = {}  # a tied tensor is its target's very array (torch restores the tie)

            def tensors(names=entry["tensors"], arrays=arrays):
                nonlocal done
                for n in names:
                    target = aliases.get(n, n)
                    if target not in arrays:
                        arrays[target] = archive.read(target, verify=verify)
                    written.append(infos_by_name[n])
                    done += 1
                    if progress:
                        progress(n, done, len(infos_by_name))
                    yield n, arrays[target], infos_by_name[n].dtype
            path = _target(tmp, entry["path"])
            with open(path, "wb") as f:
                if entry["format"] == "safetensors":
                    shapes = [(n, infos_by_name[n].dtype, infos_by_name[n].shape) for n in entry["tensors"]]
                    st.write(f, tensors(), entry["metadata"], layout=shapes)
                else:
                    torch_format.write(f, tensors(), {}, structure=entry["structure"] or None)
            arrays.clear()
        _commit(tmp, dst)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):  # a full disk, or paths that clash (a file where a folder must be)
            raise NnarIOError(f"writing the folder {dst!r}: {e.strerror or e}") from e
        raise
    return written


INDEX = "model.safetensors.index.json"
_SHARD = re.compile(r"(?:^|/)model(?:-\d+-of-\d+)?\.safetensors$")


def _reshard(layout: list[dict], files: list[str], infos: dict, max_bytes: int):
    """The safetensors weights of the root folder regrouped into shards of at most ``max_bytes``
    of tensor data, and the index json that names them (None: one file, no index)."""
    if not isinstance(max_bytes, int) or max_bytes < 1:
        raise InvalidInput(f"max shard size: expected a positive number of bytes, found {max_bytes!r}")
    ours = [e for e in layout if e["format"] == "safetensors" and _SHARD.search(e["path"]) and "/" not in e["path"]]
    if not ours:
        raise InvalidInput("--max-shard-size reshards model.safetensors or model-*-of-*.safetensors: this folder "
                           "has none")
    names = [n for e in ours for n in e["tensors"]]
    metadata = ours[0]["metadata"]
    shards, size, total = [[]], 0, 0
    for n in names:
        nbytes = infos[n].nbytes
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(n)
        size += nbytes
        total += nbytes
    count = len(shards)
    paths = ["model.safetensors"] if count == 1 else \
        [f"model-{k + 1:05d}-of-{count:05d}.safetensors" for k in range(count)]
    rest = [e for e in layout if e not in ours]
    new = [{"path": p, "format": "safetensors", "tensors": t, "metadata": metadata, "structure": None}
           for p, t in zip(paths, shards)]
    index = None
    if count > 1:
        weight_map = {n: p for p, t in zip(paths, shards) for n in t}
        index = (json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n").encode()
    return new + rest, [f for f in files if f != INDEX], index


def _target(root: str, rel: str) -> str:
    check_path(rel, "file path")  # again: nothing may climb out of the output folder
    path = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def _write_bytes(root: str, rel: str, data: bytes) -> None:
    with open(_target(root, rel), "wb") as f:
        f.write(data)


def _commit(tmp: str, dst: str) -> None:
    """Put the finished folder in place; an existing one (``force``) is moved aside first and
    removed only once the new one is there."""
    old = None
    if os.path.lexists(dst):
        old = tempfile.mkdtemp(prefix=".nnar-old-", dir=os.path.dirname(os.path.abspath(dst)))
        os.rename(dst, os.path.join(old, "x"))
    try:
        os.rename(tmp, dst)
    except OSError as e:
        if old is not None:
            os.rename(os.path.join(old, "x"), dst)
        raise NnarError(f"cannot put the folder in place at {dst!r}: {e.strerror}") from e
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
