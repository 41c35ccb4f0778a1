"""Calibration data: the inputs the model is run on to measure its output error.

A calibration file is an ``.npz`` (``np.savez``) holding one array per model input, by input
name, samples along axis 0; a directory of such files is a list of batches (sorted by file name,
other files ignored), for inputs whose non-sample dimensions vary between batches (images of
different sizes). :func:`load` reads them without ever unpickling; :func:`check` compares them
with the ONNX graph's inputs. Every problem is one :class:`~nnar.errors.InvalidInput` line that
names the file, the array and what was expected.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..errors import InvalidInput, MissingExtra

_WHAT = "an .npz file (np.savez: one array per model input, samples along axis 0) or a directory of them"


class Batch(dict):
    """One calibration file: {input name: array}, and ``source``, the file it came from."""

    def __init__(self, arrays: dict[str, np.ndarray], source: str):
        super().__init__(arrays)
        self.source = source


def load(path) -> list[Batch]:
    """The batches in ``path``: one per ``.npz`` file (the file itself, or every ``*.npz`` in the
    directory, sorted by name). Arrays are read into memory and the files closed."""
    path = os.fspath(path)
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(".npz") and os.path.isfile(os.path.join(path, n)))
        if not names:
            raise InvalidInput(f"calibration directory {path}: expected .npz files (one batch each), found none")
        return [_load_file(os.path.join(path, n)) for n in names]
    if not os.path.exists(path):
        raise InvalidInput(f"calibration data {path}: expected {_WHAT}, found nothing at that path")
    return [_load_file(path)]


def _load_file(path: str) -> Batch:
    where = f"calibration file {path}"
    try:
        npz = np.load(path, allow_pickle=False)
    except zipfile.BadZipFile as e:  # a zip's signature, then no central directory: truncated or damaged
        raise InvalidInput(f"{where}: expected an .npz file, found a damaged or truncated zip ({_first_line(e)})") \
            from None
    except OSError as e:
        raise InvalidInput(f"{where}: cannot read it: {e.strerror or e}") from None
    except Exception:  # ValueError (a pickle, text), EOFError, ...
        raise InvalidInput(f"{where}: expected {_WHAT}, found a file that is not one (it starts with "
                           f"{_head(path)!r})") from None
    if isinstance(npz, np.ndarray):
        raise InvalidInput(f"{where}: expected an .npz file (one array per model input, by name), found a single "
                           ".npy array; save it with np.savez(path, INPUT_NAME=array)")
    with npz:
        names = list(npz.keys())
        if not names:
            raise InvalidInput(f"{where}: expected one array per model input, found no arrays")
        arrays = {name: _member(npz, name, where) for name in names}
    return Batch(arrays, path)


def _member(npz, name: str, where: str) -> np.ndarray:
    try:
        arr = npz[name]
    except ValueError as e:
        if "bject arrays" in str(e) or "pickle" in str(e):
            raise InvalidInput(f"{where}, array {name!r}: expected a numeric array, found an object array (pickled "
                               "Python objects, which nnar does not load)") from None
        raise InvalidInput(f"{where}, array {name!r}: expected a .npy array, found one numpy cannot read "
                           f"({_first_line(e)})") from None
    except Exception as e:  # zipfile.BadZipFile (CRC), zlib.error, EOFError: a damaged file
        raise InvalidInput(f"{where}, array {name!r}: expected an intact .npy member, found damaged data "
                           f"({_first_line(e)})") from None
    if not isinstance(arr, np.ndarray):  # numpy hands out members that are not .npy as raw bytes
        raise InvalidInput(f"{where}, member {name!r}: expected a .npy array, found another kind of file")
    return arr


def _head(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(8)
    except OSError:
        return b""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


# -- against the model ----------------------------------------------------------------------------

def check(batches, model_proto) -> None:
    """Check calibration batches against the model's real inputs (``graph.input`` minus the
    initializers): every input present and no other name; dtype as the ONNX element type; rank
    as declared; fixed dimensions equal (symbolic and unknown ones are free); at least one sample
    along axis 0, and as many for every input of a batch. ``model_proto`` is an
    ``onnx.ModelProto`` (its weights may be taken out, as in an nnar structure)."""
    if not batches:
        raise InvalidInput(f"calibration data: expected at least one batch ({_WHAT}), found none")
    specs = _inputs(model_proto)
    weights = {t.name for t in model_proto.graph.initializer}
    listed = ", ".join(map(repr, specs)) or "(none)"
    for i, batch in enumerate(batches):
        where = f"calibration file {getattr(batch, 'source', f'#{i + 1}')}"
        for name in batch:
            if name not in specs:
                note = " (it is one of the model's weights)" if name in weights else ""
                raise InvalidInput(f"{where}: array {name!r} is not an input of the model{note}; expected arrays "
                                   f"named {listed}")
        for name, spec in specs.items():
            if name not in batch:
                raise InvalidInput(f"{where}: input {name!r} is missing; expected arrays named {listed}")
            _check_array(batch[name], name, spec, where)
        counts = {name: np.shape(arr)[0] for name, arr in batch.items()}
        first = next(iter(counts))
        for name, n in counts.items():
            if n != counts[first]:
                raise InvalidInput(f"{where}: input {name!r} has {n} samples, input {first!r} has {counts[first]}: "
                                   "expected the same number along axis 0 for every input of a file")


def _check_array(arr, name: str, spec, where: str) -> None:
    elem, dims = spec
    expected = _np_dtype(elem)
    if expected is None:
        raise InvalidInput(f"{where}: input {name!r} has ONNX type {_onnx_type_name(elem)}, which calibration data "
                           "cannot be given in")
    if expected == "string":
        ok = arr.dtype.kind in "US"
    else:
        ok = arr.dtype == expected
    if not ok:
        raise InvalidInput(f"{where}: input {name!r}: expected dtype {expected} (ONNX {_onnx_type_name(elem)}), "
                           f"found {arr.dtype}")
    shape = arr.shape
    if dims is not None:
        declared = "[" + ", ".join(str(d) for d in dims) + "]"
        if len(shape) != len(dims):
            raise InvalidInput(f"{where}: input {name!r}: expected {len(dims)} dimensions {declared} (samples first), "
                               f"found shape {list(shape)}")
        for axis, (want, got) in enumerate(zip(dims, shape)):
            if isinstance(want, int) and want != got:
                hint = (f"; give a directory of .npz files of {want} sample(s) each" if axis == 0 else "")
                raise InvalidInput(f"{where}: input {name!r} axis {axis}: expected {want} (the model fixes it; "
                                   f"declared {declared}), found {got} (shape {list(shape)}){hint}")
    if len(shape) == 0 or shape[0] == 0:
        raise InvalidInput(f"{where}: input {name!r}: expected at least one sample along axis 0, found shape "
                           f"{list(shape)}")


def _inputs(model) -> dict[str, tuple[int, list | None]]:
    """name → (ONNX elem type, dims) of the graph's real inputs; a dim is an int when fixed, else
    its symbol or '?'; dims None when the rank is not declared."""
    weights = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in weights:
            continue
        if vi.type.WhichOneof("value") != "tensor_type":
            raise InvalidInput(f"model input {vi.name!r} is a {vi.type.WhichOneof('value') or 'value of no type'}: "
                               "calibration supports tensor inputs only")
        tt = vi.type.tensor_type
        dims = None
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
                    for d in tt.shape.dim]
        out[vi.name] = (tt.elem_type, dims)
    return out


def _np_dtype(elem: int):
    """numpy dtype an input of ONNX element type ``elem`` is fed in; "string"; or None."""
    onnx = _onnx()
    if elem == onnx.TensorProto.STRING:
        return "string"
    if elem == onnx.TensorProto.BFLOAT16 or elem not in onnx.TensorProto.DataType.values():
        return None
    try:
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    except Exception:
        return None
    return dt if dt.kind in "biufc" else None  # ml_dtypes' float8/int4 (kind V) have no calibration form


def _onnx_type_name(elem: int) -> str:
    onnx = _onnx()
    try:
        return onnx.TensorProto.DataType.Name(elem)
    except ValueError:
        return f"#{elem}"


def _onnx():
    try:
        import onnx
    except ImportError as e:
        from ..formats.onnx import INSTALL
        raise MissingExtra(INSTALL) from e
    return onnx


__all__ = ["Batch", "load", "check"]
