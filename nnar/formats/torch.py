"""PyTorch checkpoints (``torch.save`` files: .pt .pth .bin .ckpt) in and out.

Read only with ``torch.load(weights_only=True)``: a checkpoint that needs arbitrary unpickling
(a whole ``nn.Module``, a custom class) could run code, and is refused with ``InvalidInput``;
nnar never falls back to ``weights_only=False``.

What is read is a state dict: the file's top-level dict when it holds tensors, otherwise the
dict under the first of ``state_dict``, ``model_state_dict``, ``model``, ``module``, ``net``,
``network`` that holds tensors, otherwise the only value that does. The checkpoint's other
entries (epoch, optimizer state, ...) are left out with a warning: the unpacked file is the
state dict itself. Every entry of the state dict must be a dense tensor of an nnar dtype (bf16,
fp16/32/64, float8_e4m3fn, float8_e5m2, int8-64, uint8-64, bool); anything else (an
``_extra_state`` object, an int, a complex, quantized or other float8 (``fnuz``, ``e8m0``) tensor, a
sparse or meta one) is an error naming the key, since
leaving it out would make ``load_state_dict(strict=True)`` fail on the unpacked file.

Tied weights: keys whose tensors are the same view of the same storage (same storage, offset,
shape, strides, dtype) become aliases of the first such key (``Model.aliases``), stored once.
``write`` gives every alias the very tensor of its target, so ``torch.save`` stores it once and
``torch.load`` restores the tie.

Structure (the MODL record's body when the source format is ``torch``) is a msgpack map with
string keys, and no keys other than these:

``keys`` (required)
    array of strings: every key of the state dict, aliases included, each once, in the state
    dict's order. ``write`` outputs the state dict in this order; names it gets that the array
    lacks follow in the order they arrive; a name in the array that never arrives is an error.
``versions`` (optional)
    map from string to map from string to (integer, string, boolean or nil): the state dict's
    ``_metadata`` attribute, PyTorch's per-module version record (``{"": {"version": 1},
    "bn": {"version": 2}}``; the key is the module's prefix without its trailing dot), which
    ``load_state_dict`` hands to each module's ``_load_from_state_dict`` to upgrade old
    checkpoints. Absent when the state dict has no ``_metadata``, or one holding other types.

A reader rejects structure bytes that are not such a map (``BadDescriptor``).
"""

from __future__ import annotations

import collections
import pickle
import pickletools
import re
import warnings
import weakref
from typing import Any, Iterable, Mapping

import msgpack
import numpy as np

from .. import dtypes
from ..errors import BadDescriptor, InvalidInput, MissingExtra, UnsupportedDtype
from . import Model, seekable

#: where a checkpoint keeps its state dict, tried in this order
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")

INSTALL = ("reading or writing PyTorch files needs torch (the nnar[torch] extra); install the CPU build first: "
           "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu "
           "(an unpinned torch from PyPI pulls several GB of CUDA packages)")

_MSGPACK_INT = (-(1 << 63), (1 << 64) - 1)  # what a msgpack integer holds


def _torch():
    try:
        import torch
    except ImportError as e:
        raise MissingExtra(INSTALL) from e
    return torch


def _dtype_names(torch) -> dict:
    """torch dtype → nnar spec name."""
    return {torch.bool: "bool", torch.uint8: "uint8", torch.int8: "int8", torch.int16: "int16",
            torch.int32: "int32", torch.int64: "int64", torch.float16: "float16", torch.bfloat16: "bfloat16",
            torch.float32: "float32", torch.float64: "float64",
            **{getattr(torch, n): n for n in ("uint16", "uint32", "uint64", *dtypes.FLOAT8_DTYPES)
               if hasattr(torch, n)}}


# -- reading -------------------------------------------------------------------------------------


def read(f) -> Model:
    torch = _torch()
    f, spool = seekable(f)  # torch.load seeks (a ZIP is read from its end)
    clean = None
    try:
        start = f.tell()
        clean = _rezip(f)
        src = clean if clean is not None else f
        obj = _load(torch, src)
        src.seek(0 if clean is not None else start)
        _check_storages(torch, src, obj)
    finally:
        for g in (spool, clean):  # torch.load has read every tensor into memory
            if g is not None:
                g.close()
    return model_from_state_dict(_state_dict_in(obj, torch))


#: a rewritten checkpoint stays in memory up to this size, then spills to a temporary file
_REZIP_IN_MEMORY = 64 << 20


def _rezip(f):
    """A zip checkpoint rewritten by Python's zipfile, entry for entry (each read with its CRC-32
    checked, stored, in order), or None for a legacy (pickle) one. torch's own zip reader checks
    no CRC and, on some damaged local headers that zipfile reads right, reads a record from
    uninitialized memory: loads of one such file then fail or succeed at random (the fuzzer found
    one). From the rewritten file every load reads what zipfile read, or fails the same way."""
    import shutil
    import tempfile
    import zipfile

    here = f.tell()
    magic = f.read(4)
    f.seek(here)
    if magic != b"PK\x03\x04":
        return None
    size = f.seek(0, 2) - here
    f.seek(here)
    out = tempfile.SpooledTemporaryFile(max_size=_REZIP_IN_MEMORY)
    try:
        with zipfile.ZipFile(f) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as dst:
            for info in src.infolist():
                # torch.save stores every record; a compressed one could inflate without bound
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                    raise InvalidInput(f"input: ZIP entry {info.filename!r:.80}: expected a stored record no larger "
                                       f"than the file, as torch.save writes, found compression method "
                                       f"{info.compress_type} and {info.file_size} bytes")
                with src.open(info) as r, dst.open(zipfile.ZipInfo(info.filename, info.date_time), "w",
                                                  force_zip64=info.file_size >= 1 << 31) as w:
                    shutil.copyfileobj(r, w, 1 << 20)
    except InvalidInput:
        out.close()
        raise
    except Exception as e:  # noqa: BLE001  zipfile on hostile bytes (BadZipFile, a CRC, EOF ...)
        out.close()
        raise InvalidInput(f"input: expected a PyTorch checkpoint whose ZIP reads whole, found a damaged one "
                           f"({type(e).__name__}: {str(e)[:120]})") from None
    f.seek(here)
    out.seek(0)
    return out


def _reason(e: BaseException) -> str:
    """torch's own reason, on one short line (its messages run to a dozen lines of advice)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(e).splitlines()]
    lines = [line for line in lines if line]
    pick = next((line for line in lines if re.search(r"GLOBAL|Unsupported|Can only|allowlisted", line)),
                lines[0] if lines else type(e).__name__)
    pick = pick.split("WeightsUnpickler error:")[-1].strip()
    pick = re.split(r"\. ", pick, maxsplit=1)[0].rstrip(".")  # its first sentence: the rest is advice
    return pick if len(pick) <= 160 else pick[:157] + "..."


class _Capped:
    """A seekable file whose ``read(n)`` asks for no more than the bytes left: torch's unpickler
    reads a string of the length the file declares with one ``read(n)``, and a buffered reader
    reserves ``n`` bytes first, so a 500-byte file declaring a 2^60-byte string was a
    MemoryError. Memory then follows the file's size, not its declarations."""

    def __init__(self, f):
        self._f = f
        here = f.tell()
        self._end = f.seek(0, 2)
        f.seek(here)

    def _left(self, n) -> int:
        left = max(0, self._end - self._f.tell())
        return left if n is None or n < 0 else min(n, left)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(self._left(n))

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        return self._f.readinto(view[:self._left(len(view))])

    def readline(self, n: int = -1) -> bytes:
        return self._f.readline(self._left(n))

    def seek(self, *args) -> int:
        return self._f.seek(*args)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def _load(torch, f):
    try:
        return torch.load(_Capped(f), weights_only=True, map_location="cpu")
    except MemoryError as e:
        raise InvalidInput("input: expected a PyTorch checkpoint its size can hold, found one whose reading ran out "
                           "of memory (a declared size far beyond the file?)") from e
    except pickle.UnpicklingError as e:
        text = str(e)
        if "GLOBAL" in text or "allowlisted" in text:
            raise InvalidInput(
                f"input: this checkpoint needs arbitrary unpickling, which can run code, so nnar refuses it "
                f"(torch weights_only: {_reason(e)}); load it yourself in code you trust and save the weights "
                f"alone with torch.save(model.state_dict(), path), or pass the state dict to nnar.pack") from None
        raise InvalidInput(f"input: expected a PyTorch checkpoint (torch.save), found something else "
                           f"({_reason(e)})") from None
    except Exception as e:  # noqa: BLE001  torch on hostile bytes raises anything; nnar raises NnarError
        detail = _reason(e) if str(e).strip() else "the file ended early" if isinstance(e, EOFError) else "no detail"
        raise InvalidInput(f"input: expected a PyTorch checkpoint (torch.save), found something torch cannot "
                           f"read ({type(e).__name__}: {detail})") from e


def _storages(torch, obj) -> dict[int, Any] | None:
    """data address → untyped storage, of every tensor anywhere in a loaded checkpoint; None
    when one is not a plain dense CPU tensor (nnar refuses those anyway, with its own error)."""
    out, seen, todo = {}, set(), [obj]
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            if x.layout != torch.strided or x.device.type != "cpu" or x.is_quantized or type(x) is not torch.Tensor \
                    and not isinstance(x, torch.nn.Parameter):
                return None
            s = x.untyped_storage()
            if s.nbytes():
                out[s.data_ptr()] = s
        elif isinstance(x, Mapping):
            todo.extend(x.values())
        elif isinstance(x, (list, tuple, set, frozenset)):
            todo.extend(x)
    return out


def _check_storages(torch, f, obj) -> None:
    """A zip checkpoint's storages must hold the bytes of its data records: torch may fill a
    storage from somewhere else, or not at all, when a record's local header is damaged (the
    fuzzer found one whose storage came back as uninitialized memory, different each load), and
    nnar must not pack that. Compared as multisets of (length, SHA-256), since which record a
    storage came from is known only inside torch."""
    import hashlib
    import zipfile

    here = f.tell()
    if f.read(4) != b"PK\x03\x04":  # as torch tells a zip checkpoint from a legacy one
        f.seek(here)
        _check_legacy(f)
        return
    f.seek(here)
    try:
        with zipfile.ZipFile(f) as z:
            records = sorted((i.file_size, hashlib.sha256(z.read(i)).digest()) for i in z.infolist()
                             if re.fullmatch(r"[^/]+/data/[^/]+", i.filename) and i.file_size)
    except Exception as e:  # noqa: BLE001  zipfile on hostile bytes
        raise InvalidInput(f"input: expected a PyTorch checkpoint whose ZIP Python can read too, found one it cannot "
                           f"({type(e).__name__}: {str(e)[:100]})") from e
    storages = _storages(torch, obj)
    if storages is None:
        return
    loaded = []
    for s in storages.values():
        raw = torch.empty(0, dtype=torch.uint8).set_(s).numpy()
        loaded.append((s.nbytes(), hashlib.sha256(raw).digest()))
    if sorted(loaded) != records:
        raise InvalidInput(f"input: expected the checkpoint's {len(loaded)} storages to hold its {len(records)} data "
                           "records, found storages whose bytes are not in the file (a damaged ZIP entry)")


class _Stub:
    """Whatever a legacy checkpoint's pickle names, without loading it: no code runs here."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _Walk(pickle._Unpickler):  # noqa: SLF001  the Python unpickler: its memo is a dict, where the
    # C one grows an array to the largest memo index a pickle names (2^31 in a 161-byte file)
    """Unpickles with stubs for every class and records the storages the pickle refers to."""

    def __init__(self, f):
        super().__init__(f)
        self.storages: dict[str, int] = {}  # key → elements declared

    def find_class(self, module, name):
        return type(f"{module}.{name}", (_Stub,), {})

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[2], str):
            self.storages[pid[2]] = pid[4] if isinstance(pid[4], int) else -1
        return _Stub()


class _Plain(pickle._Unpickler):  # noqa: SLF001  (see _Walk)
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name}: expected plain data")


def _check_legacy(f) -> None:
    """A legacy (pre-zip) checkpoint: five pickles (magic, protocol, system info, the object,
    the storage keys), then each listed storage's bytes. torch creates every storage the object
    refers to at its declared size and fills only those the key list names: one it does not name
    comes back as uninitialized memory (the fuzzer found one: the heap's pointers, different at
    each load). So every storage referred to must be listed; the pickles are walked here with
    stubs, no class loaded and no code run."""
    here = f.tell()
    capped = _Capped(f)  # a declared length never reserves more than the file holds

    def load(unpickler):
        # pickletools reads every opcode's declared length from the file first (a short read is
        # an error); the unpickler itself would allocate a BINBYTES8's declared size up front
        start = capped.tell()
        for _ in pickletools.genops(capped):
            pass
        capped.seek(start)
        u = unpickler(capped)
        return u, u.load()
    try:
        for _ in range(3):
            load(_Plain)
        walk, _ = load(_Walk)
        _, keys = load(_Plain)
    except Exception as e:  # noqa: BLE001  hostile pickles raise anything; torch then says what is wrong
        f.seek(here)
        raise InvalidInput(f"input: expected a PyTorch checkpoint (torch.save), found a legacy one whose pickles "
                           f"do not read ({type(e).__name__}: {str(e)[:100]})") from None
    f.seek(here)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise InvalidInput("input: a legacy PyTorch checkpoint whose storage list is not a list of keys")
    missing = sorted(set(walk.storages) - set(keys))
    if missing:
        raise InvalidInput(f"input: a legacy PyTorch checkpoint whose tensors use {len(missing)} storage(s) it does "
                           f"not store ({', '.join(missing[:3])}): torch would hand out uninitialized memory")


def _holds_tensors(value: Any, torch) -> bool:
    return isinstance(value, Mapping) and any(isinstance(v, torch.Tensor) for v in value.values())


def _state_dict_in(obj: Any, torch) -> Mapping:
    """The state dict a loaded checkpoint holds (see the module docstring)."""
    if not isinstance(obj, Mapping):
        hint = " (a single tensor: save it in a dict, {'name': tensor})" if isinstance(obj, torch.Tensor) else ""
        raise InvalidInput(f"input: expected a state dict (a dict of names to tensors), found a "
                           f"{type(obj).__name__}{hint}")
    if not obj or _holds_tensors(obj, torch):
        return obj
    chosen = next((k for k in NESTED_KEYS if k in obj and _holds_tensors(obj[k], torch)), None)
    if chosen is None:
        found = [k for k, v in obj.items() if _holds_tensors(v, torch)]
        if len(found) > 1:
            raise InvalidInput(f"input: expected one state dict in the checkpoint, found {len(found)} "
                               f"({_names(found)}); save the one to pack on its own")
        if not found:
            raise InvalidInput(f"input: expected a state dict, or a checkpoint holding one under "
                               f"{' or '.join(map(repr, NESTED_KEYS))}; found a dict without tensors "
                               f"(keys {_names(list(obj))})")
        chosen = found[0]
    others = [k for k in obj if k != chosen]
    if others:
        warnings.warn(f"checkpoint: packing the state dict under {chosen!r}; left out {_names(others)} "
                      f"(an unpacked file holds the state dict alone)", stacklevel=3)
    return obj[chosen]


def _names(keys: list, at_most: int = 8) -> str:
    shown = ", ".join(repr(k)[:60] for k in keys[:at_most])
    return shown + (f" and {len(keys) - at_most} more" if len(keys) > at_most else "")


def model_from_state_dict(sd: Mapping) -> Model:
    """A state dict (name → tensor, as ``model.state_dict()`` gives) as a :class:`Model`: aliases
    for tied tensors, the key order and module versions as structure. Tensors are converted to
    numpy one at a time, when ``tensors()`` yields them; nothing is copied that is contiguous."""
    torch = _torch()
    if not isinstance(sd, Mapping):
        raise InvalidInput(f"state dict: expected a mapping of names to tensors, found {type(sd).__name__}")
    names = _dtype_names(torch)
    keys = list(sd)
    for key in keys:
        if not isinstance(key, str):
            raise InvalidInput(f"state dict key {key!r:.60}: expected a string, found {type(key).__name__}")
    not_tensors = [k for k in keys if not isinstance(sd[k], torch.Tensor)]
    if not_tensors:
        k = not_tensors[0]
        raise InvalidInput(f"state dict entry {k!r}: expected a tensor, found {type(sd[k]).__name__}"
                           + (f" (and {len(not_tensors) - 1} more entries that are not tensors)" if len(not_tensors) > 1
                              else "")
                           + "; nnar stores tensors only: save the state dict without them")
    first: dict[tuple, str] = {}
    aliases: dict[str, str] = {}
    for k in keys:
        t = sd[k]
        _check(k, t, names, torch)
        ident = _identity(t)
        if ident is None:
            continue
        if ident in first:
            aliases[k] = first[ident]
        else:
            first[ident] = k
    # Tensors that overlap without being the same view (``a`` and ``a[:2]``, ``a`` and ``a.t()``)
    # are stored as independent tensors: their values come back right, their sharing does not.
    targets = [k for k in keys if k not in aliases]

    def tensors():
        for k in targets:
            arr, dt = _to_numpy(sd[k], names, torch)
            yield k, arr, dt

    return Model("torch", {}, tensors, len(targets), aliases=aliases,
                 structure=_structure(keys, getattr(sd, "_metadata", None)))


def _check(key: str, t, names: dict, torch) -> None:
    if t.layout != torch.strided:
        raise InvalidInput(f"state dict entry {key!r}: expected a dense tensor, found layout {t.layout} "
                           "(convert it with .to_dense())")
    if t.device.type == "meta":
        raise InvalidInput(f"state dict entry {key!r}: a tensor on the meta device has no values to store")
    if t.dtype not in names:
        hint = " (dequantize it first)" if t.is_quantized else ""
        raise UnsupportedDtype(f"state dict entry {key!r}: torch dtype {t.dtype} is not supported{hint}; expected "
                               f"one of {', '.join(str(d) for d in names)}")


def _identity(t) -> tuple | None:
    """What makes two tensors one: the same view of the same storage. None for an empty tensor
    (every empty storage has address 0, and there is nothing to share)."""
    try:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
    except (RuntimeError, NotImplementedError):  # tensor subclasses without a plain storage
        return None
    if t.numel() == 0 or storage.nbytes() == 0:
        return None
    return (str(t.device), ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _to_numpy(t, names: dict, torch) -> tuple[np.ndarray, str]:
    """The tensor's logical values in C order (views and non-contiguous tensors included)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_neg().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16), "bfloat16"
    if names[t.dtype] in dtypes.FLOAT8_DTYPES:  # numpy has no float8: its bit patterns
        return t.view(torch.uint8).numpy(), names[t.dtype]
    return t.numpy(), names[t.dtype]


def _structure(keys: list[str], metadata: Any) -> bytes:
    d: dict[str, Any] = {"keys": keys}
    if metadata is not None:
        versions = _versions(metadata)
        if versions is None:
            warnings.warn("state dict: its _metadata (module versions) holds more than strings, integers, booleans "
                          "and None; left out (load_state_dict then sees no module version)", stacklevel=3)
        else:
            d["versions"] = versions
    try:
        return msgpack.packb(d, use_bin_type=True)
    except UnicodeEncodeError:
        bad = next(k for k in keys if not _is_text(k))
        raise InvalidInput(f"state dict key {bad!r:.80}: expected valid Unicode text (lone surrogate)") from None


def _is_text(s: Any) -> bool:
    if not isinstance(s, str):
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_scalar(v: Any) -> bool:
    lo, hi = _MSGPACK_INT
    return v is None or isinstance(v, bool) or _is_text(v) or isinstance(v, int) and lo <= v <= hi


def _versions(metadata: Any) -> dict | None:
    """``_metadata`` as plain dicts, or None when it holds anything else."""
    if not isinstance(metadata, Mapping):
        return None
    out = {}
    for prefix, entry in metadata.items():
        if not _is_text(prefix) or not isinstance(entry, Mapping):
            return None
        if not all(_is_text(k) and _is_scalar(v) for k, v in entry.items()):
            return None
        out[prefix] = dict(entry)
    return out


# -- writing -------------------------------------------------------------------------------------


def parse_structure(structure: bytes | bytearray | memoryview) -> tuple[list[str], dict | None]:
    """``(keys, versions)`` from structure bytes, checked against the schema above; the bytes
    come from an archive, so anything else is a ``BadDescriptor``."""
    def bad(expected: str, found: Any) -> BadDescriptor:
        return BadDescriptor(f"torch structure: expected {expected}, found {found!r:.80}", where="MODL record")

    if not isinstance(structure, (bytes, bytearray, memoryview)):
        raise bad("bytes", type(structure).__name__)
    try:
        d = msgpack.unpackb(bytes(structure), raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise BadDescriptor(f"torch structure: expected a msgpack map, found bytes that do not decode "
                            f"({type(e).__name__}: {str(e)[:80]})", where="MODL record") from None
    if not isinstance(d, dict):
        raise bad("a map", type(d).__name__)
    unknown = [k for k in d if k not in ("keys", "versions")]
    if unknown:
        raise bad("only the keys 'keys' and 'versions'", unknown[0])
    keys = d.get("keys")
    if not isinstance(keys, list):
        raise bad("'keys': an array of strings", type(keys).__name__ if keys is not None else "no 'keys'")
    for k in keys:
        if not isinstance(k, str):
            raise bad("'keys': an array of strings; an element", k)
    if len(set(keys)) != len(keys):
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise bad("'keys': each key once; twice", dup)
    versions = d.get("versions")
    if "versions" in d:
        if not isinstance(versions, dict):
            raise bad("'versions': a map", type(versions).__name__)
        for prefix, entry in versions.items():
            if not isinstance(prefix, str) or not isinstance(entry, dict):
                raise bad("'versions': a map of strings to maps; an entry", prefix)
            for k, v in entry.items():
                if not isinstance(k, str) or not _is_scalar(v):
                    raise bad(f"'versions'[{prefix!r}]: strings to integers, strings, booleans or nil; an entry",
                              (k, v))
    return keys, versions


def _ref(arr):
    try:
        return weakref.ref(arr)
    except TypeError:  # not weak-referenceable: keep it alive so its id stays its own
        return lambda: arr


def _to_torch(torch, name: str, arr: Any, dt: str):
    storage = dtypes.storage_dtype(dt)  # UnsupportedDtype for an unknown name
    arr = np.asarray(arr)
    if arr.dtype.newbyteorder("=") != storage.newbyteorder("="):
        raise InvalidInput(f"tensor {name!r}: expected a {storage} array for dtype {dt}, found {arr.dtype}")
    # a copy in native order that torch owns: the input may be read-only, or a view into a buffer
    # other tensors share (torch.save would then see one storage under two dtypes)
    owned = np.array(arr, dtype=storage.newbyteorder("="), order="C", copy=True)
    if dt == "bfloat16":
        return torch.from_numpy(owned.view(np.int16)).view(torch.bfloat16)
    if dt in dtypes.FLOAT8_DTYPES:
        return torch.from_numpy(owned).view(getattr(torch, dt))
    return torch.from_numpy(owned)


def build_state_dict(tensors: Iterable[tuple[str, np.ndarray, str]], structure: bytes | None = None
                     ) -> "collections.OrderedDict":
    """The state dict ``write`` saves: one tensor per distinct array object (an alias arrives as
    its target's very array, and gets its very tensor), in the order ``structure`` gives, with
    ``_metadata`` from it."""
    torch = _torch()
    order, versions = parse_structure(structure) if structure is not None else (None, None)
    built: dict[str, Any] = {}
    made: dict[int, tuple] = {}  # id(array) → (weak reference to it, its tensor, dtype)
    for name, arr, dt in tensors:
        if name in built:
            raise InvalidInput(f"tensor name {name!r}: expected unique names, found it twice")
        seen = made.get(id(arr))
        if seen is not None and seen[0]() is arr:  # the same object, not a new one at a reused address
            if seen[2] != dt:
                raise InvalidInput(f"tensor {name!r}: the same array as an earlier tensor, but as {dt}, not {seen[2]}")
            built[name] = seen[1]
            continue
        t = _to_torch(torch, name, arr, dt)
        made[id(arr)] = (_ref(arr), t, dt)
        built[name] = t
    names = list(built)
    if order is not None:
        missing = [k for k in order if k not in built]
        if missing:
            raise InvalidInput(f"torch structure lists {len(missing)} key(s) no tensor was given for: {_names(missing)}")
        listed = set(order)
        names = order + [k for k in names if k not in listed]
    sd = collections.OrderedDict((k, built[k]) for k in names)
    if versions is not None:
        sd._metadata = collections.OrderedDict((p, dict(e)) for p, e in versions.items())
    return sd


def write(f, tensors, metadata, layout=None, structure=None) -> None:
    """``torch.save`` of the state dict (the whole model is held in memory: torch.save needs it).
    ``layout`` is not needed and ignored; ``f`` may be a pipe."""
    torch = _torch()
    if metadata:
        warnings.warn("a PyTorch state dict has no place for metadata; it was left out", stacklevel=3)
    torch.save(build_state_dict(tensors, structure), f)
