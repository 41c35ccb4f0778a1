"""Run an ONNX model with candidate weights on calibration data, with onnxruntime, and score its
outputs against the original's: the ``evaluate`` callable of the search, for ONNX models.

The model comes as nnar holds it: its *structure* (``nnar.formats.onnx``: the ModelProto with
each weight's data taken out and marked by an ``external_data`` entry ``"nnar"``) and a dict of
weights by archive name. Two ways to run one set of weights:

- **rebuild** (the default): fill every weight into the structure (``nnar.formats.onnx.fill``),
  serialize, and load it in a new onnxruntime session with default options: exactly the model
  ``unpack`` writes, as a user's runtime loads it. :meth:`OnnxEvaluator.final` always uses it.
  Its cost per call beyond running the calibration data is mostly onnxruntime's session
  creation (graph optimization, weight pre-packing). Measured on PP-OCRv4 (CPU time, one
  thread): session 14 ms (cls), 20 ms (det), 41 ms (rec); filling and serializing the protobuf
  2-7 ms; a call on one crop or image costs 19 / 54 / 69 ms against a bare run of 1 / 20 / 18
  ms, on a realistic set (32 crops; two 640-pixel pages) 69 / 222 / 1120 ms against 40 / 166 /
  967 ms. Handing the weights over as in-memory external initializers of a skeleton model
  (``SessionOptions.add_external_initializers``) is exact too, but saves only the protobuf's
  few ms, so it is not used.
- **lifted**: one session, built once, in which the main graph's float weights are graph
  inputs fed on every run. No session per call: a large gain when the calibration set is small
  (one crop: cls 2 ms a call, det 29, rec 27), none with a realistic one (69 / 228 / 1353 ms:
  slower than rebuilding for rec), because onnxruntime can no longer fold, fuse, pre-pack or
  re-layout weights it does not know; for the same reason its outputs differ from a normal
  session's in the last bits (PP-OCRv4: up to 4e-6 absolute; on the detector's near-zero
  probability maps that moved a cos score by 0.005). ``mode="auto"`` takes it only when its
  outputs for the original weights equal the rebuilt model's bit for bit (neither PP-OCRv4
  model nor the test CNN does); ``mode="lifted"`` takes it anyway (``path_gap`` says by how
  much the two references differ; ``final`` still proves on the rebuilt model). Weights it
  cannot feed (in subgraphs or functions, bfloat16, not float, or also a graph output) are
  baked in with their original values; a call that changes one of them goes the rebuild way.

Scores are :mod:`.outputs`' (per batch, per output, samples along axis 0).

:meth:`OnnxEvaluator.reference` runs the original weights through each path it may use and
keeps each path's outputs: a candidate is always scored against the reference of the path it
went through.
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from .. import dtypes as D
from ..errors import InvalidInput, MissingExtra
from ..formats import onnx as F
from . import calibration
from .outputs import Bound

MODES = ("auto", "rebuild", "lifted")

_LIFTABLE = {1, 10, 11}  # ONNX float32, float16, float64: fed as numpy arrays


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingExtra(F.INSTALL) from e
    return onnxruntime


def _marked(t) -> str | None:
    """The archive name of a weight taken out of the structure (None for other tensors)."""
    if t.data_location == 1 and len(t.external_data) == 1 and t.external_data[0].key == F.NNAR_KEY:
        return t.external_data[0].value
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit (-0.0 is not 0.0, NaN payloads count)."""
    if a is b:
        return True
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(D.bit_patterns(a), D.bit_patterns(b))


def _same_outputs(a, b) -> bool:
    return len(a) == len(b) and all(len(x) == len(y) and all(_same(np.asarray(u), np.asarray(v)) for u, v in zip(x, y))
                                    for x, y in zip(a, b))


class OnnxEvaluator:
    """``fn(tensors) -> float``: the model's output error with these weights, under ``bound``,
    against the original weights' outputs (given once to :meth:`reference`).

    ``structure`` is ``Model.structure`` of ``nnar.formats.onnx.from_proto``; ``batches`` come
    from :func:`calibration.load` (checked here against the graph's inputs); ``dtypes`` maps
    archive names to nnar dtype names (needed for bfloat16, held as uint16 bit patterns; the
    others are read from the arrays and the graph); ``threads`` is onnxruntime's intra-op thread
    count (None: its default); ``mode`` one of :data:`MODES` (module docstring).

    Every call gets the full set of weights by archive name, each of the original's dtype and
    shape. ``calls`` and ``seconds`` count the calls; ``path`` is the path chosen;
    ``last_outputs`` keeps the outputs of the last call (per batch, per output) for reports,
    e.g. ``outputs.changed(ev.reference_outputs, ev.last_outputs)``.
    """

    def __init__(self, structure: bytes, batches, bound: Bound, *, dtypes: Mapping[str, str] | None = None,
                 threads: int | None = None, mode: str = "auto"):
        if mode not in MODES:
            raise InvalidInput(f"OnnxEvaluator mode: expected one of {', '.join(MODES)}, found {mode!r}")
        self._ort = _ort()
        self._structure = bytes(structure)
        model = F.parse_structure(self._structure)
        calibration.check(batches, model)
        self.batches = list(batches)
        self.bound = bound
        self.mode = mode
        self._threads = threads
        self._dtypes = dict(dtypes or {})
        self._elem = {name: ref.tensor.data_type for name, ref in F.references(model).items()}
        self.path: str | None = None
        self.path_gap = 0.0  # the lifted reference's score against the rebuilt one (0 when exact)
        self.reference_outputs: list | None = None
        self.last_outputs: list | None = None
        self.calls, self.seconds = 0, 0.0
        self._base: dict[str, np.ndarray] | None = None
        self._refs: dict[str, list] = {}
        self._lifted = None  # (session, {archive name: graph input name}, [archive names baked in])

    # -- the contract ---------------------------------------------------------------------------

    def reference(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Run the original weights through the rebuilt model (and, unless ``mode`` is
        "rebuild", the lifted one), keep their outputs, and choose the path of the calls."""
        self._base = dict(tensors)
        self._check(self._base)
        self.reference_outputs = self._refs["rebuild"] = self._run_rebuild(self._base)
        self.path, self.path_gap, self._lifted = "rebuild", 0.0, None
        if self.mode == "rebuild":
            return
        try:
            self._lifted = self._build_lifted()
            lifted = self._run_lifted(self._base)
        except _PathUnavailable:  # onnxruntime refused the transformed model: rebuild it is
            self._lifted = None
            return
        if _same_outputs(lifted, self.reference_outputs):
            self._refs["lifted"] = self.reference_outputs
        elif self.mode == "lifted":
            self._refs["lifted"] = lifted
            self.path_gap = self.bound.score(self.reference_outputs, lifted)
        else:
            self._lifted = None  # inexact: not used, not kept
            return
        self.path = "lifted"

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> float:
        """The output error of these weights (``bound``'s score: ``<= bound.threshold`` keeps it)."""
        t0 = time.perf_counter()
        self._check(tensors)
        path = self.path
        if path == "lifted" and not all(_same(tensors[n], self._base[n]) for n in self._lifted[2]):
            path = "rebuild"  # a weight baked into the lifted model changed
        out = None
        if path == "lifted":
            try:
                out = self._run_lifted(tensors)
            except _PathUnavailable:  # onnxruntime refused these fed weights: let the rebuilt model say why
                path = "rebuild"
        if out is None:
            out = self._run_rebuild(tensors)
        self.last_outputs = out
        value = self.bound.score(self._refs[path], out)
        self.calls += 1
        self.seconds += time.perf_counter() - t0
        return value

    def final(self, tensors: Mapping[str, np.ndarray]) -> float:
        """The proof: the output error of the fully rebuilt model (what ``unpack`` writes) in a
        normal onnxruntime session, against the rebuilt original."""
        self._check(tensors)
        self.last_outputs = self._run_rebuild(tensors)
        return self.bound.score(self.reference_outputs, self.last_outputs)

    # -- running --------------------------------------------------------------------------------

    def _options(self):
        so = self._ort.SessionOptions()
        so.log_severity_level = 4  # onnxruntime's own log lines: a refused input is reported as one InvalidInput
        if self._threads:
            so.intra_op_num_threads = int(self._threads)
        return so

    def _session(self, data: bytes, *, transformed: bool = False):
        try:
            return self._ort.InferenceSession(data, self._options(), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's pybind exceptions share no useful base class
            if transformed:
                raise _PathUnavailable() from e
            raise InvalidInput(f"onnxruntime cannot load the model: {_first_line(e)}") from None

    def _run(self, session, weights: Mapping[str, np.ndarray] | None = None) -> list[list[np.ndarray]]:
        out = []
        for i, batch in enumerate(self.batches):
            try:
                out.append(session.run(None, {**batch, **(weights or {})}))
            except Exception as e:
                if weights:  # the calibration data ran on the rebuilt model: this is the transformation's
                    raise _PathUnavailable() from e
                source = getattr(batch, "source", f"#{i + 1}")
                shapes = ", ".join(f"{k} {a.dtype}{list(a.shape)}" for k, a in batch.items())
                raise InvalidInput(f"calibration file {source} (inputs {shapes}): onnxruntime refused it: "
                                   f"{_first_line(e)}") from None
        return out

    def _run_rebuild(self, tensors: Mapping[str, np.ndarray]) -> list[list[np.ndarray]]:
        model = F.parse_structure(self._structure)
        for name, ref in F.references(model).items():
            F.fill(ref.tensor, name, tensors[name], self._dtype(name, tensors[name]))
        return self._run(self._session(model.SerializeToString()))

    def _run_lifted(self, tensors: Mapping[str, np.ndarray]) -> list[list[np.ndarray]]:
        session, feeds, _ = self._lifted
        return self._run(session, {value: np.ascontiguousarray(tensors[name]) for name, value in feeds.items()})

    def _build_lifted(self):
        """(session, feeds, baked): a session whose main-graph float weights are graph inputs
        (``feeds``: archive name → input name), every other weight baked in with its original value."""
        from onnx import helper
        model = F.parse_structure(self._structure)
        g = model.graph
        refs = F.references(model)
        main = {}  # archive name → the value name the graph knows it by
        for t in g.initializer:
            if _marked(t) is not None:
                main[_marked(t)] = t.name
        for node in g.node:
            for a in node.attribute:
                if node.op_type == "Constant" and node.output and a.name == "value" and _marked(a.t) is not None:
                    main[_marked(a.t)] = node.output[0]
        taken = {o.name for o in g.output}  # a weight that is also an output stays where it is
        feeds = {n: v for n, v in main.items() if refs[n].tensor.data_type in _LIFTABLE and v not in taken}
        values = set(feeds.values())
        baked = [n for n in refs if n not in feeds]
        for name in baked:
            F.fill(refs[name].tensor, name, self._base[name], self._dtype(name, self._base[name]))
        declared = {i.name for i in g.input}
        for name, value in feeds.items():
            if value not in declared:
                t = refs[name].tensor
                g.input.append(helper.make_tensor_value_info(value, t.data_type, list(t.dims)))
        keep_init = [t for t in g.initializer if t.name not in values]
        keep_nodes = [node for node in g.node if not (node.op_type == "Constant" and node.output
                                                      and node.output[0] in values)]
        del g.initializer[:]
        g.initializer.extend(keep_init)
        del g.node[:]
        g.node.extend(keep_nodes)
        return self._session(model.SerializeToString(), transformed=True), feeds, baked

    # -- small things ---------------------------------------------------------------------------

    def _dtype(self, name: str, arr: np.ndarray) -> str:
        if name in self._dtypes:
            return self._dtypes[name]
        graph_dt = F._TO_NNAR.get(self._elem.get(name))  # bfloat16 and float8 are bits: the graph says which
        return graph_dt if graph_dt in D.BIT_PATTERN_DTYPES else D.dtype_name_of(arr)

    def _check(self, tensors: Mapping[str, np.ndarray]) -> None:
        if self._base is None:
            raise InvalidInput("OnnxEvaluator: call reference(original weights) before evaluating candidates")
        missing = [n for n in self._elem if n not in tensors]
        extra = [n for n in tensors if n not in self._elem]
        if missing or extra:
            raise InvalidInput(f"ONNX evaluation: expected every weight of the model by name, found "
                               f"{len(missing)} missing {missing[:3]} and {len(extra)} unknown {extra[:3]}")
        if tensors is not self._base:
            for name, arr in tensors.items():
                base = self._base[name]
                if arr.shape != base.shape or arr.dtype != base.dtype:
                    raise InvalidInput(f"ONNX evaluation: tensor {name!r}: expected {base.dtype}{list(base.shape)} "
                                       f"as the original, found {arr.dtype}{list(arr.shape)}")


class _PathUnavailable(Exception):
    """onnxruntime refused the lifted model (internal: the rebuild path is used instead)."""


__all__ = ["OnnxEvaluator", "MODES"]
