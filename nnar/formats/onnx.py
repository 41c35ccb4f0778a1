"""ONNX models in and out: the weights go into TENS records, the rest of the model (graph,
opsets, metadata) into the MODL record, so ``unpack`` rebuilds the whole model.

Weights are the tensors of every ``initializer`` and of every ``Constant`` node's ``value``
holding at least ``MIN_CONSTANT_ELEMENTS`` elements (exported models keep their weights in
Constant nodes; the small ones are shape plumbing, cheaper left in the graph), in the main
graph, in subgraphs (``If``/``Loop``/``Scan`` bodies, at any depth) and in model-local
functions, with data inline or in external data files. Tensors of a dtype nnar does not store
(string, complex, the float8 ``FNUZ`` and ``E8M0`` kinds, int4) stay in the graph; FLOAT8E4M3FN and
FLOAT8E5M2 are float8_e4m3fn and float8_e5m2, their bit patterns kept.

Structure (the MODL record's body when the format is ``onnx``; spec/FORMAT.md §5.4.1) is the
model's ``ModelProto``, serialized, with each weight's data taken out: its ``TensorProto``
keeps ``name``, ``data_type`` and ``dims``, has no data fields, ``data_location`` EXTERNAL,
and exactly one ``external_data`` entry, key ``"nnar"``, whose value is the weight's tensor
name in the archive. Writing fills each such tensor back (``raw_data``, little-endian) from the
archive tensor of that name, which must have that dtype and shape.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import math
import os
import stat
import warnings
from typing import Any, Iterator

import numpy as np

from .. import dtypes
from ..errors import InvalidInput, MissingExtra
from ..limits import DEFAULT_LIMITS
from . import Model

#: a Constant node's tensor moves into the archive from this many elements on
MIN_CONSTANT_ELEMENTS = 16
#: the key that marks a weight taken out of the structure
NNAR_KEY = "nnar"
#: protobuf refuses messages of 2 GiB; a model whose weights come near it is written with its
#: weights in an external data file beside it (``<name>.onnx.data``)
EXTERNAL_DATA_THRESHOLD = (2 << 30) - (64 << 20)
#: weights of at least this many bytes go to the external data file, as onnx's own saver does
EXTERNAL_MIN_BYTES = 1024

INSTALL = "reading or writing ONNX models needs onnx (the nnar[onnx] extra): pip install onnx onnxruntime"

# TensorProto.DataType → nnar dtype; the others stay in the graph
_TO_NNAR = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
            10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
            17: "float8_e4m3fn", 19: "float8_e5m2"}  # FLOAT8E4M3FN, FLOAT8E5M2 (the fnuz kinds are others)
_FROM_NNAR = {v: k for k, v in _TO_NNAR.items()}


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise MissingExtra(INSTALL) from e
    return onnx


# -- walking a model -------------------------------------------------------------------------------

def _graphs(model) -> Iterator[Any]:
    """Every graph and function of the model, subgraphs at any depth (iteratively: a hostile
    model may nest deeper than Python's recursion limit)."""
    stack = [model.graph]
    stack += list(model.functions)
    while stack:
        g = stack.pop()
        yield g
        for node in g.node:
            for a in node.attribute:
                if a.type == 5:  # GRAPH
                    stack.append(a.g)
                elif a.type == 10:  # GRAPHS
                    stack.extend(a.graphs)


def _tensor_protos(g) -> Iterator[tuple[Any, Any, str | None]]:
    """(TensorProto, node or None, attribute name or None) of every tensor of one graph: its
    initializers (a FunctionProto has none), then the tensor attributes of its nodes."""
    for t in getattr(g, "initializer", ()):
        yield t, None, None
    for node in g.node:
        for a in node.attribute:
            if a.type == 4:  # TENSOR
                yield a.t, node, a.name


def weight_protos(model) -> Iterator[tuple[str, Any]]:
    """(proposed name, TensorProto) of every weight, in graph order: initializers, then the
    Constant nodes, graph by graph."""
    for g in _graphs(model):
        for t, node, attr in _tensor_protos(g):
            if t.data_type not in _TO_NNAR:
                continue
            if node is None:
                yield t.name or "initializer", t
            elif node.op_type == "Constant" and node.domain in ("", "ai.onnx") and attr == "value" \
                    and math.prod(t.dims) >= MIN_CONSTANT_ELEMENTS:
                yield (node.output[0] if node.output else node.name) or "constant", t


def _unique(name: str, taken: dict[str, int]) -> str:
    """``name``, or ``name#2``, ``name#3``, ... the first not taken. ``taken`` maps each name
    given out to the next suffix to try for it, so n tensors of one name cost O(n), not O(n^2)."""
    out, k = name, taken.get(name, 1)
    while out in taken:
        k += 1
        out = f"{name}#{k}"
    taken[name] = k
    taken.setdefault(out, 1)
    return out


def _nnar_ref(t) -> str | None:
    if t.data_location == 1 and len(t.external_data) == 1 and t.external_data[0].key == NNAR_KEY:
        return t.external_data[0].value
    return None


# -- reading ---------------------------------------------------------------------------------------

def read(f) -> Model:
    onnx = _onnx()
    path = getattr(f, "name", None)
    base = os.path.dirname(os.path.abspath(path)) if isinstance(path, str) and os.path.exists(path) else None
    data = f.read()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise InvalidInput(f"input: expected an ONNX model (a ModelProto), found bytes protobuf cannot parse ({e})") \
            from None
    del data
    return from_proto(model, base)


def from_proto(model, base: str | None = None) -> Model:
    """A Model from an ``onnx.ModelProto``, which it takes apart: pass a copy to keep yours.
    ``base`` is the directory external data files are found in."""
    if not model.HasField("graph"):
        raise InvalidInput("input: expected an ONNX model with a graph, found none (not an ONNX model?)")
    weights, taken, claimed = [], {}, {}
    for name, t in weight_protos(model):
        if not isinstance(name, str):  # protobuf gives a string field that is not UTF-8 as bytes
            raise InvalidInput(f"ONNX tensor name {name!r:.80}: expected UTF-8 text, found other bytes")
        name = _unique(name, taken)
        dt = _TO_NNAR[t.data_type]
        arr = _array(t, dt, base, name, claimed)
        # take the data out; what marks the place is the archive name
        t.ClearField("raw_data")
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "external_data"):
            t.ClearField(field)
        t.data_location = 1
        entry = t.external_data.add()
        entry.key, entry.value = NNAR_KEY, name
        weights.append((name, arr, dt))
    structure = model.SerializeToString()

    def tensors():
        yield from weights

    return Model("onnx", {}, tensors, len(weights), structure=structure)


def _array(t, dt: str, base: str | None, name: str, claimed: dict | None = None) -> np.ndarray:
    """The tensor's values as a little-endian C-order array of nnar's storage dtype.
    ``claimed``: the external data ranges read so far (see :func:`_external`)."""
    shape = tuple(t.dims)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"ONNX tensor {name!r}: dims {list(shape)}: expected no negative dimension")
    storage = dtypes.storage_dtype(dt)
    nbytes = math.prod(shape) * storage.itemsize
    if t.data_location == 1:
        raw = _external(t, base, name, nbytes, {} if claimed is None else claimed)
    elif t.raw_data or nbytes == 0:
        raw = t.raw_data
    else:
        return _typed(t, dt, storage, shape, name)
    if len(raw) != nbytes:
        raise InvalidInput(f"ONNX tensor {name!r}: expected {nbytes} bytes of data for {dt}{list(shape)}, "
                           f"found {len(raw)}")
    return np.frombuffer(raw, storage).reshape(shape)


def _typed(t, dt: str, storage: np.dtype, shape: tuple, name: str) -> np.ndarray:
    """Data in the typed fields; 16-bit floats and small ints sit in int32_data as their bits."""
    fields = {"float32": "float_data", "float64": "double_data", "int64": "int64_data", "uint32": "uint64_data",
              "uint64": "uint64_data"}
    values = getattr(t, fields.get(dt, "int32_data"))
    if len(values) != math.prod(shape):
        raise InvalidInput(f"ONNX tensor {name!r}: expected {math.prod(shape)} values for {dt}{list(shape)}, "
                           f"found {len(values)}")
    if dt in ("float16", "bfloat16"):  # the bit patterns, NaN payloads included: reinterpreted, not converted
        return np.array(values, np.int64).astype("<u2").view(storage).reshape(shape)
    if dt in dtypes.FLOAT8_DTYPES:  # one bit pattern per int32, in its low byte (as onnx.numpy_helper reads it)
        return np.array(values, np.int64).astype("<u1").reshape(shape)
    if dt == "bool":
        arr = np.array(values, np.int64).astype(np.uint8)
    else:
        arr = np.array(values, dtypes.storage_dtype(dt).newbyteorder("="))
    return np.ascontiguousarray(arr.astype(storage)).reshape(shape)


def _external(t, base: str | None, name: str, nbytes: int, claimed: dict) -> bytes:
    """External data, read from a file beside the model. The location must stay inside the
    model's directory (a hostile model must not read /etc/passwd into an archive) and name a
    regular file (a FIFO would block the read forever, a device never end), which must hold the
    range before it is read. Each byte of a file belongs to one tensor: ``claimed`` maps each
    file read so far to its ranges, sorted (many tensors over one range would multiply it)."""
    where = f"ONNX tensor {name!r}"
    info = {e.key: e.value for e in t.external_data}
    bad = next(((k, v) for k, v in info.items() if not isinstance(k, str) or not isinstance(v, str)), None)
    if bad is not None:  # protobuf gives a string field that is not UTF-8 as bytes
        raise InvalidInput(f"{where}: external data entry {bad[0]!r:.40}: {bad[1]!r:.80}: expected UTF-8 text, found "
                           "other bytes")
    if base is None:
        raise InvalidInput(f"{where}: its data is in an external file ({info.get('location')!r:.120}); give the model "
                           "as a file path, not a stream, so that nnar can find the file beside it")
    loc = info.get("location", "")
    if "\0" in loc:
        raise InvalidInput(f"{where}: external data location {loc!r:.120}: expected a file name, found a NUL byte")
    path = os.path.realpath(os.path.join(base, loc))
    if not loc or os.path.isabs(loc) or os.path.commonpath([path, os.path.realpath(base)]) != os.path.realpath(base):
        raise InvalidInput(f"{where}: external data location {loc!r:.120}: expected a file inside the model's "
                           "directory")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(nbytes)))
    except ValueError:
        raise InvalidInput(f"{where}: external data offset/length: expected integers, found {info!r:.120}") from None
    if length != nbytes or offset < 0:
        raise InvalidInput(f"{where}: external data: expected {nbytes} bytes at a non-negative offset, found "
                           f"length {length} at offset {offset}")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"{where}: external data location {loc!r:.120}: expected a regular file, found "
                               f"{_file_kind(st.st_mode)}")
        # O_NONBLOCK: should a FIFO replace the file after the stat, opening it does not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with open(fd, "rb") as ext:
            st = os.fstat(ext.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"{where}: external data location {loc!r:.120}: expected a regular file, found "
                                   f"{_file_kind(st.st_mode)}")
            if offset + nbytes > st.st_size:
                raise InvalidInput(f"{where}: external data file {loc!r:.120} ends after "
                                   f"{max(0, st.st_size - offset)} of the {nbytes} bytes at offset {offset} (a "
                                   f"{st.st_size}-byte file)")
            DEFAULT_LIMITS.check(f"{where}: external data bytes", nbytes, "max_tensor_bytes")
            _claim(claimed, (st.st_dev, st.st_ino), offset, offset + nbytes, name, where, loc)
            ext.seek(offset)
            raw = ext.read(nbytes)
    except OSError as e:
        raise InvalidInput(f"{where}: cannot read external data file {loc!r:.120}: {e.strerror}") from e
    if len(raw) != nbytes:
        raise InvalidInput(f"{where}: external data file {loc!r:.120} ends after {len(raw)} of the {nbytes} bytes at "
                           f"offset {offset}")
    return raw


def _file_kind(mode: int) -> str:
    return next((kind for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                                         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                                         (stat.S_ISSOCK, "a socket")) if test(mode)), "not a regular file")


def _claim(claimed: dict, file: tuple, begin: int, end: int, name: str, where: str, loc: str) -> None:
    """Record [begin, end) of ``file`` as ``name``'s; an overlap with a range already read is an error."""
    if begin == end:
        return
    ranges = claimed.setdefault(file, [])
    i = bisect.bisect_left(ranges, (begin,))
    for j in (i - 1, i):
        if 0 <= j < len(ranges) and ranges[j][0] < end and begin < ranges[j][1]:
            raise InvalidInput(f"{where}: external data file {loc!r:.120}: expected bytes of its own, found "
                               f"[{begin}, {end}) overlapping [{ranges[j][0]}, {ranges[j][1]}) of tensor "
                               f"{ranges[j][2]!r:.80}")
    ranges.insert(i, (begin, end, name))


# -- writing ---------------------------------------------------------------------------------------

def parse_structure(structure: bytes):
    onnx = _onnx()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(bytes(structure))
    except Exception as e:
        raise InvalidInput(f"ONNX structure in the archive: expected a ModelProto, found bytes protobuf cannot parse "
                           f"({e})") from None
    return model


@dataclasses.dataclass
class Ref:
    """Where a weight's data goes: its TensorProto, the graph (or function) holding it, and the
    Constant node whose value it is (None for an initializer)."""

    tensor: Any
    graph: Any
    node: Any = None

    @property
    def in_function(self) -> bool:
        return not hasattr(self.graph, "initializer")  # a FunctionProto has none


def references(model) -> dict[str, Ref]:
    """archive name → where the structure takes its data."""
    out = {}
    for g in _graphs(model):
        for t, node, _ in _tensor_protos(g):
            name = _nnar_ref(t)
            if name is not None:
                if name in out:
                    raise InvalidInput(f"ONNX structure: tensor {name!r} is referenced twice")
                out[name] = Ref(t, g, node)
    return out


def fill(t, name: str, arr: np.ndarray, dt: str) -> None:
    """Put an archive tensor's data back into its place in the structure."""
    if _TO_NNAR.get(t.data_type) != dt or tuple(t.dims) != tuple(arr.shape):
        raise InvalidInput(f"tensor {name!r}: the ONNX graph expects {_TO_NNAR.get(t.data_type, t.data_type)}"
                           f"{list(t.dims)}, the archive holds {dt}{list(arr.shape)}")
    t.ClearField("external_data")
    t.ClearField("data_location")  # proto2: cleared, not set to DEFAULT, so the bytes are as they were
    t.raw_data = dtypes.to_storage(np.ascontiguousarray(arr), dt).tobytes()


def write(f, tensors, metadata, layout=None, structure=None, *, path: str | None = None,
          quantized: bool = False, force: bool = False) -> None:
    """Rebuild the model from its structure and the archive's tensors, check it with
    ``onnx.checker``, and write it. ``path`` (the final output path) is needed only when the
    weights are too large for one protobuf and go to ``<path>.data``.

    With ``quantized``, tensors may come as :class:`nnar.quantized.Quantized` forms, written
    as small initializers and the nodes that expand them at run time (``nnar.formats.onnx_quantized``).
    """
    onnx = _onnx()
    if structure is None:
        raise InvalidInput("this archive holds no ONNX graph (it was not packed from an ONNX model), so no ONNX "
                           "model can be rebuilt from it; unpack it to .safetensors, .npz or .pt instead")
    model = parse_structure(structure)
    refs = references(model)
    total, expanded = 0, []
    for name, arr, dt in tensors:
        ref = refs.pop(name, None)
        if ref is None:
            raise InvalidInput(f"tensor {name!r}: the ONNX graph has no place for it")
        if quantized and not isinstance(arr, np.ndarray):
            expanded.append((ref, name, arr))
            continue
        fill(ref.tensor, name, arr, dt)
        total += arr.nbytes
    if refs:
        raise InvalidInput(f"the ONNX graph needs tensors the archive lacks: {sorted(refs)[:5]}")
    if expanded:
        from . import onnx_quantized
        onnx_quantized.apply(model, expanded)
    for k, v in (metadata or {}).items():  # what the user added with --meta
        _set_metadata(model, k, v)
    external = total > EXTERNAL_DATA_THRESHOLD
    created = _write_external(model, path, force) if external else None
    data = model.SerializeToString()
    try:
        f.write(data)
    except BaseException:
        if created:  # no model will point at it: take back the data file this call added
            with contextlib.suppress(OSError):
                os.unlink(created)
        raise
    try:
        if external:
            _check_beside(onnx, data, path)
        else:
            onnx.checker.check_model(model)
    except Exception as e:  # onnx.checker.ValidationError and its C++ cousins
        warnings.warn(f"the rebuilt ONNX model does not pass onnx.checker ({str(e).splitlines()[0][:200]}); "
                      "it was written anyway, as the packed model was", stacklevel=3)


def _check_beside(onnx, data: bytes, path: str) -> None:
    """Check a model whose weights are in a data file: the checker finds the file relative to the
    model's own, so the (small) model is checked from a temporary copy beside the output."""
    import tempfile
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(path)), suffix=".onnx") as tmp:
        tmp.write(data)
        tmp.flush()
        onnx.checker.check_model(tmp.name)


def _set_metadata(model, key: str, value: str) -> None:
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value


def _write_external(model, path: str | None, force: bool) -> str | None:
    """Move large weights into ``<path>.data`` (written atomically) and point the model at it.
    Returns the data file's path if there was no such file before."""
    from ..fsutil import atomic_output
    if not path or path == "-":
        raise InvalidInput("this ONNX model's weights exceed protobuf's 2 GiB, so they go to an external data file "
                           "beside the model: give an output file path, not a stream")
    location = os.path.basename(path) + ".data"
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), location)
    existed = os.path.exists(data_path)
    with atomic_output(data_path, force=force) as out:
        offset = 0
        for g in _graphs(model):
            for t, _, _ in _tensor_protos(g):
                if len(t.raw_data) >= EXTERNAL_MIN_BYTES:
                    pad = -offset % 4096  # as onnx aligns them, so the runtime can map them
                    out.write(bytes(pad))
                    offset += pad
                    out.write(t.raw_data)
                    t.ClearField("external_data")
                    for k, v in (("location", location), ("offset", str(offset)), ("length", str(len(t.raw_data)))):
                        e = t.external_data.add()
                        e.key, e.value = k, v
                    offset += len(t.raw_data)
                    t.ClearField("raw_data")
                    t.data_location = 1
    return None if existed else data_path


__all__ = ["read", "write", "weight_protos", "references", "parse_structure", "MIN_CONSTANT_ELEMENTS"]
