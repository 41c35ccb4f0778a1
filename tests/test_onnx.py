"""ONNX in and out: real torch exports (a CNN with BatchNorm, an MLP with tied embedding and
output weights, a transformer block), models built with onnx.helper (Constant nodes, If and
Loop subgraphs, a model-local function, every dtype) and the PP-OCRv4 models go through
nnar pack → nnar unpack, and every round trip is proven by running both models with
onnxruntime on the same seeded inputs. ``--keep-quantized`` models stay small and compute
exactly what nnar's decoder gives, at opsets 12, 13 and 21. External data is read from the
model's directory only."""

from __future__ import annotations

import builtins
import io
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
nn = torch.nn

from onnx import TensorProto, helper as H, numpy_helper as NH  # noqa: E402

import nnar  # noqa: E402
from nnar.cli import main  # noqa: E402
from nnar.formats import onnx as onnx_format  # noqa: E402

import strategies as S  # noqa: E402

# -- models ----------------------------------------------------------------------------------------


from models import CNN, Block, TiedLM  # noqa: E402


KINDS = ("cnn", "tied", "block")


def make(kind: str) -> nn.Module:
    torch.manual_seed({"cnn": 1, "tied": 2, "block": 3}[kind])
    model = {"cnn": CNN, "tied": TiedLM, "block": Block}[kind]()
    if kind == "cnn":  # running statistics that are not the initial ones
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(4, 3, 8, 8))
    return model.eval()


def example_input(kind: str, seed: int = 99) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "cnn":
        return torch.randn(2, 3, 8, 8, generator=g)
    if kind == "tied":
        return torch.randint(0, 640, (2, 7), generator=g)  # int64 token ids
    return torch.randn(2, 5, 32, generator=g)


def export(model: nn.Module, x: torch.Tensor, path: Path, *, fold: bool = True, opset: int = 17) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter says it is deprecated
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # MultiheadAttention's shape checks
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, do_constant_folding=fold,
                          input_names=["x"], output_names=["y"])
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(kind, fold=True)``: the path of that model exported once for the module."""
    root = tmp_path_factory.mktemp("exported")
    cache: dict[tuple[str, bool], Path] = {}

    def get(kind: str, fold: bool = True) -> Path:
        if (kind, fold) not in cache:
            cache[kind, fold] = export(make(kind), example_input(kind), root / f"{kind}-{'folded' if fold else 'raw'}.onnx",
                                       fold=fold)
        return cache[kind, fold]
    return get


def feeds_for(kind: str, seed: int = 7) -> dict[str, np.ndarray]:
    return {"x": example_input(kind, seed).numpy()}


# -- helpers ---------------------------------------------------------------------------------------


def session(path, **kw):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"], **kw)


def run(path, feeds, **kw) -> list[np.ndarray]:
    return session(path, **kw).run(None, feeds)


def assert_same_outputs(found: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(found) == len(expected)
    for k, (a, b) in enumerate(zip(found, expected)):
        assert a.dtype == b.dtype and a.shape == b.shape, k
        assert np.array_equal(a, b), (k, float(np.max(np.abs(a.astype(np.float64) - b))))


def tensor_protos(model) -> list[tuple[str, object]]:
    """(where, TensorProto) of every initializer and every TENSOR attribute (Constant values),
    graph by graph: the main graph, its subgraphs at any depth, then each function."""
    out = []

    def walk(g, where):
        for i, t in enumerate(getattr(g, "initializer", ())):
            out.append((f"{where}/initializer[{i}]", t))
        for k, node in enumerate(g.node):
            for a in node.attribute:
                at = f"{where}/node[{k}]:{node.op_type}.{a.name}"
                if a.type == onnx.AttributeProto.TENSOR:
                    out.append((at, a.t))
                elif a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g, at)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for j, sub in enumerate(a.graphs):
                        walk(sub, f"{at}[{j}]")
    walk(model.graph, "graph")
    for f in model.functions:
        walk(f, f"function {f.domain}.{f.name}")
    return out


def assert_same_tensors(found_model, expected_model) -> None:
    """Every initializer and Constant tensor, matched by its position in the graph: the same
    name, data type and dims, and the same values bit for bit."""
    found, expected = tensor_protos(found_model), tensor_protos(expected_model)
    assert [w for w, _ in found] == [w for w, _ in expected]
    for (where, a), (_, b) in zip(found, expected):
        assert (a.name, a.data_type, list(a.dims)) == (b.name, b.data_type, list(b.dims)), where
        assert not a.external_data and a.data_location == 0, where  # self-contained again
        x, y = NH.to_array(a), NH.to_array(b)
        assert x.dtype == y.dtype and x.shape == y.shape, where
        assert x.tobytes() == y.tobytes(), where


def load(path):
    return onnx.load(str(path))


def round_trip(src: Path, tmp_path: Path, name: str = "m", **pack_kwargs):
    arc, out = tmp_path / f"{name}.nnar", tmp_path / f"{name}.out.onnx"
    infos = nnar.pack(src, arc, **pack_kwargs)
    nnar.unpack(arc, out)
    return infos, arc, out


def weight_names(model) -> list[str]:
    """What nnar stores, as spec/onnx.md says: initializers and Constants of >= 16 elements."""
    return [name for name, _ in onnx_format.weight_protos(model)]


# -- 1. lossless: real torch exports -----------------------------------------------------------------


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "raw"])
@pytest.mark.parametrize("kind", KINDS)
def test_exported_models_round_trip_bit_for_bit(tmp_path, exported, kind, fold):
    src = exported(kind, fold)
    original = load(src)
    infos, arc, out = round_trip(src, tmp_path)
    onnx.checker.check_model(str(out), full_check=True)
    back = load(out)
    assert_same_tensors(back, original)
    assert out.read_bytes() == src.read_bytes()  # every weight was in raw_data: byte for byte too
    feeds = feeds_for(kind)
    assert_same_outputs(run(out, feeds), run(src, feeds))
    assert [i.name for i in infos] == weight_names(original) and infos
    assert all(not i.lossy for i in infos)
    with nnar.open(arc) as a:
        assert a.source_format == "onnx" and a.structure[0] == "onnx"
        assert a.names() == [i.name for i in infos]
        names = a.names()
    if kind == "cnn" and not fold:  # BatchNorm's parameters and running statistics are weights of their own
        assert {"features.1.weight", "features.1.running_mean", "features.1.running_var", "features.4.bias"} <= set(names)
    if kind == "cnn" and fold:  # folded into the convolutions
        assert not any("running" in n for n in names)
    if kind == "tied":  # one embedding, used by Gather (and, unfolded, by the output MatMul)
        assert "emb.weight" in names and not any(n.startswith("lm_head") for n in names)
        assert original.graph.input[0].type.tensor_type.elem_type == TensorProto.INT64


def test_tied_weight_is_one_initializer_read_twice(tmp_path, exported):
    """Unfolded, the tied weight is one initializer that Gather and the output layer both use;
    it is stored once and comes back once."""
    src = exported("tied", False)
    model = load(src)
    users = [n.op_type for n in model.graph.node if "emb.weight" in n.input]
    assert len(users) >= 2, users  # Gather, and the output layer's MatMul (or a Transpose feeding it)
    infos, _, out = round_trip(src, tmp_path)
    assert [i.name for i in infos].count("emb.weight") == 1
    back = load(out)
    assert [t.name for t in back.graph.initializer].count("emb.weight") == 1
    assert_same_outputs(run(out, feeds_for("tied", 3)), run(src, feeds_for("tied", 3)))


def test_command_line_pack_ls_unpack(tmp_path, exported, capsys):
    src = exported("block")
    arc, out = tmp_path / "m.nnar", tmp_path / "out.onnx"
    assert main(["pack", str(src), "-o", str(arc)]) == 0
    assert main(["ls", str(arc)]) == 0
    listing = capsys.readouterr().out
    for name in weight_names(load(src)):
        assert name in listing
    assert main(["verify", str(arc)]) == 0
    assert main(["unpack", str(arc), "-o", str(out)]) == 0
    capsys.readouterr()
    onnx.checker.check_model(str(out), full_check=True)
    assert_same_tensors(load(out), load(src))
    assert_same_outputs(run(out, feeds_for("block")), run(src, feeds_for("block")))
    assert main(["unpack", str(arc), "-o", str(out)]) == 1  # no --force: the output is kept
    assert "error[output-exists]" in capsys.readouterr().err


def test_pipes_both_ways(exported):
    """From a stream (no external data needed) to a stream: bytes in, bytes out."""
    src = exported("cnn")
    data = nnar.pack(io.BytesIO(src.read_bytes()), fmt="onnx")
    out = io.BytesIO()
    nnar.unpack(data, out, to="onnx")
    assert out.getvalue() == src.read_bytes()


# -- 2. Constant nodes, If/Loop subgraphs, a model-local function -------------------------------------------


def constant(out: str, arr: np.ndarray):
    return H.make_node("Constant", [], [out], value=NH.from_array(arr, out))


def subgraph_model(opset: int = 17, function: bool = True):
    """X [2,16] → MatMul(Constant W0) → Mul(small Constant) → If(cond): then MatMul(Constant Wb),
    else MatMul(Constant Wb) + initializer else_bias → Loop 3×: Tanh(MatMul(Constant Wl)) →
    local.Affine (a model-local function: MatMul(Constant Wf); with no ``function``, Identity).
    Both branches name their weight ``Wb``."""
    rng = np.random.default_rng(7)
    f32 = np.float32

    def w(*shape, scale=1.0):
        return (rng.normal(size=shape) * scale).astype(f32)

    then_g = H.make_graph([constant("Wb", w(16, 8)), H.make_node("MatMul", ["h2", "Wb"], ["then_y"])], "then", [],
                          [H.make_tensor_value_info("then_y", TensorProto.FLOAT, [2, 8])])
    else_g = H.make_graph([constant("Wb", w(16, 8)), H.make_node("MatMul", ["h2", "Wb"], ["mm"]),
                           H.make_node("Add", ["mm", "else_bias"], ["else_y"])], "else", [],
                          [H.make_tensor_value_info("else_y", TensorProto.FLOAT, [2, 8])],
                          [NH.from_array(w(8), "else_bias")])
    body = H.make_graph([constant("Wl", w(8, 8, scale=0.5)), H.make_node("MatMul", ["s", "Wl"], ["sm"]),
                         H.make_node("Tanh", ["sm"], ["s_out"]), H.make_node("Identity", ["c"], ["c_out"])], "body",
                        [H.make_tensor_value_info("i", TensorProto.INT64, []),
                         H.make_tensor_value_info("c", TensorProto.BOOL, []),
                         H.make_tensor_value_info("s", TensorProto.FLOAT, [2, 8])],
                        [H.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                         H.make_tensor_value_info("s_out", TensorProto.FLOAT, [2, 8])])
    fn = H.make_function("local", "Affine", ["a"], ["b"], [constant("Wf", w(8, 8)), H.make_node("MatMul", ["a", "Wf"], ["b"])],
                         [H.make_opsetid("", opset)])
    g = H.make_graph([constant("W0", w(16, 16)), H.make_node("MatMul", ["X", "W0"], ["h"]),
                      constant("small", np.array([[0.5], [-2.0]], f32)), H.make_node("Mul", ["h", "small"], ["h2"]),
                      H.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
                      constant("trip", np.array(3, np.int64)), H.make_node("Loop", ["trip", "", "y"], ["z"], body=body),
                      H.make_node("Affine", ["z"], ["out"], domain="local") if function
                      else H.make_node("Identity", ["z"], ["out"])], "main",
                     [H.make_tensor_value_info("X", TensorProto.FLOAT, [2, 16]),
                      H.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                     [H.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8]),
                      H.make_tensor_value_info("out", TensorProto.FLOAT, [2, 8])])
    model = H.make_model(g, opset_imports=[H.make_opsetid("", opset)] + [H.make_opsetid("local", 1)] * function,
                         functions=[fn] * function, ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


SUBGRAPH_FEEDS = [{"X": np.random.default_rng(s).normal(size=(2, 16)).astype(np.float32), "cond": np.array(c)}
                  for s, c in ((1, True), (2, False))]


def test_constants_and_subgraph_weights_round_trip(tmp_path):
    src = tmp_path / "sub.onnx"
    onnx.save(subgraph_model(), src)
    infos, arc, out = round_trip(src, tmp_path)
    # every graph's weights: the function's, the main graph's, the Loop body's, both If branches'
    # (the second "Wb" made unique); "small" (2 elements) and "trip" (1) stay in the structure
    expected = ["Wf", "W0", "Wl", "Wb", "else_bias", "Wb#2"]
    assert sorted(i.name for i in infos) == sorted(expected)
    with nnar.open(arc) as a:
        assert sorted(a.names()) == sorted(expected)
        structure = onnx_format.parse_structure(a.structure[1])
    kept = {t.name: NH.to_array(t) for _, t in tensor_protos(structure) if not t.external_data}
    assert set(kept) == {"small", "trip"}  # still holding their values in the structure
    onnx.checker.check_model(str(out), full_check=True)
    assert_same_tensors(load(out), load(src))
    assert out.read_bytes() == src.read_bytes()
    results = []
    for feeds in SUBGRAPH_FEEDS:  # the If's two branches
        want = run(src, feeds)
        assert_same_outputs(run(out, feeds), want)
        results.append(want[0])
    assert not np.array_equal(results[0], results[1])  # the branches did differ


def test_constant_threshold_is_sixteen_elements(tmp_path):
    """A Constant of 15 elements stays in the graph, one of 16 moves to the archive; any
    initializer moves, however small; scalar-valued attributes (value_float) stay."""
    nodes = [constant("c15", np.arange(15, dtype=np.float32)), constant("c16", np.arange(16, dtype=np.float32)),
             H.make_node("Constant", [], ["cf"], value_floats=[1.0] * 32),
             H.make_node("Concat", ["c15", "c16", "i1", "cf"], ["y"], axis=0)]
    g = H.make_graph(nodes, "g", [], [H.make_tensor_value_info("y", TensorProto.FLOAT, [64])],
                     [NH.from_array(np.array([7.0], np.float32), "i1")])
    model = H.make_model(g, opset_imports=[H.make_opsetid("", 17)], ir_version=8)
    src = tmp_path / "t.onnx"
    onnx.save(model, src)
    infos, _, out = round_trip(src, tmp_path)
    assert [i.name for i in infos] == ["i1", "c16"]
    assert out.read_bytes() == src.read_bytes()
    assert_same_outputs(run(out, {}), run(src, {}))


def test_keep_quantized_in_subgraphs(tmp_path):
    """Quantized Constants inside If branches and a Loop body get their small form inside that
    subgraph; the If's two branches both still give exactly the plain unpack's outputs."""
    src = tmp_path / "sub.onnx"
    onnx.save(subgraph_model(function=False), src)  # a function's weights: the test below
    arc, plain, kq = tmp_path / "q.nnar", tmp_path / "plain.onnx", tmp_path / "kq.onnx"
    nnar.pack(src, arc, config={"preset": "int8", "min_params": 0})
    nnar.unpack(arc, plain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnar.unpack(arc, kq, keep_quantized=True)
    onnx.checker.check_model(str(kq), full_check=True)
    graphs = {name: g for name, g in _all_graphs(load(kq))}
    for gname, weight in (("main", "W0"), ("then", "Wb"), ("else", "Wb"), ("body", "Wl")):
        assert _chain(graphs[gname], weight) == ["DequantizeLinear"], (gname, weight)
        assert any(t.name.startswith(weight + ".nnar_codes") for t in graphs[gname].initializer)  # unique: Wb's 2nd
    for feeds in SUBGRAPH_FEEDS:
        assert_same_outputs(run(kq, feeds), run(plain, feeds))


def test_keep_quantized_weight_in_a_function_is_written_expanded(tmp_path):
    src = tmp_path / "sub.onnx"
    onnx.save(subgraph_model(), src)
    arc, plain, kq = tmp_path / "q.nnar", tmp_path / "plain.onnx", tmp_path / "kq.onnx"
    nnar.pack(src, arc, config={"preset": "int8", "min_params": 0})
    nnar.unpack(arc, plain)
    with pytest.warns(UserWarning, match=r"1 quantized weights .* written expanded: Wf$"):
        nnar.unpack(arc, kq, keep_quantized=True)
    for feeds in SUBGRAPH_FEEDS:
        assert_same_outputs(run(kq, feeds), run(plain, feeds))


def _all_graphs(model):
    out = [(model.graph.name, model.graph)]
    for node in model.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out.append((a.g.name, a.g))
    return out


def _chain(graph, weight: str) -> list[str]:
    """The op types of the nodes nnar added to expand ``weight`` (named ``<weight>.nnar_*``), in
    graph order; the last one must produce ``weight`` itself."""
    nodes = [n for n in graph.node if n.name.startswith(weight + ".nnar_")]
    if nodes:
        assert list(nodes[-1].output) == [weight]
    return [n.op_type for n in nodes]


# -- every dtype, data in raw_data or in the typed fields (hypothesis) ------------------------------------

ONNX_TYPES = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8, "int8": TensorProto.INT8,
              "uint16": TensorProto.UINT16, "int16": TensorProto.INT16, "int32": TensorProto.INT32,
              "int64": TensorProto.INT64, "bool": TensorProto.BOOL, "float16": TensorProto.FLOAT16,
              "float64": TensorProto.DOUBLE, "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64,
              "bfloat16": TensorProto.BFLOAT16}


def make_tensor(name: str, arr: np.ndarray, dt: str, typed: bool):
    """A TensorProto holding ``arr`` (bfloat16 as uint16 bits) in raw_data, or in the typed field
    onnx.proto assigns that type: float_data, double_data, int64_data, uint64_data (uint32 and
    uint64), or int32_data (the rest; 16-bit floats as their bit patterns)."""
    t = TensorProto()
    t.name, t.data_type = name, ONNX_TYPES[dt]
    t.dims.extend(arr.shape)
    flat = np.ascontiguousarray(arr).reshape(-1)
    if not typed:
        t.raw_data = flat.astype(flat.dtype.newbyteorder("<")).tobytes()
    elif dt == "float32":
        t.float_data.extend(flat.tolist())
    elif dt == "float64":
        t.double_data.extend(flat.tolist())
    elif dt == "int64":
        t.int64_data.extend(flat.tolist())
    elif dt in ("uint32", "uint64"):
        t.uint64_data.extend(flat.tolist())
    elif dt in ("float16", "bfloat16"):
        t.int32_data.extend(flat.view(np.uint16).tolist())
    else:
        t.int32_data.extend(flat.astype(np.int64).tolist())
    return t


@st.composite
def weight_models(draw):
    """A model whose outputs are its weights (Identity of each): initializers and Constant
    nodes of any dtype nnar stores, small random shapes, data raw or typed."""
    n = draw(st.integers(1, 5))
    inits, nodes, outputs = [], [], []
    for k in range(n):
        arr, dt = draw(S.storage_arrays(shape=S.shapes(max_side=5)))
        typed = dt != "float16" and draw(st.booleans())  # typed float16: the xfail test below
        name = f"w{k}"
        t = make_tensor(name, arr, dt, typed)
        if draw(st.booleans()):
            inits.append(t)
        else:
            nodes.append(H.make_node("Constant", [], [name], value=t))
        src = name
        if dt == "bfloat16":  # onnxruntime's Python API has no bfloat16 arrays: widen, exactly
            nodes.append(H.make_node("Cast", [src], [f"out{k}"], to=TensorProto.FLOAT))
        else:
            nodes.append(H.make_node("Identity", [src], [f"out{k}"]))
        out_type = TensorProto.FLOAT if dt == "bfloat16" else ONNX_TYPES[dt]
        outputs.append(H.make_tensor_value_info(f"out{k}", out_type, list(arr.shape)))
    g = H.make_graph(nodes, "g", [], outputs, inits)
    return H.make_model(g, opset_imports=[H.make_opsetid("", 17)], ir_version=8)


@settings(max_examples=30)
@given(weight_models())
def test_any_dtype_and_shape_round_trips_exactly(model):
    data = model.SerializeToString()
    arc = nnar.pack(io.BytesIO(data), fmt="onnx")
    out = io.BytesIO()
    nnar.unpack(arc, out, to="onnx")
    back = onnx.ModelProto()
    back.ParseFromString(out.getvalue())
    assert_same_tensors(back, model)
    moved = set(weight_names(model))
    for _, t in tensor_protos(back):  # a moved weight comes back in raw_data (unless it is empty)
        if t.name in moved and math.prod(t.dims):
            assert t.raw_data and not (t.float_data or t.int32_data or t.int64_data or t.double_data or t.uint64_data)
    found, want = session_run(out.getvalue()), session_run(data)
    for a, b in zip(found, want):  # as bit patterns: NaN payloads included
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def session_run(data: bytes) -> list[np.ndarray]:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {})


def test_float16_in_int32_data_round_trips_exactly():
    """onnx.helper.make_tensor(..., FLOAT16, values) (raw=False, its default) puts float16 bit
    patterns in int32_data."""
    values = np.linspace(-2, 2, 16).astype(np.float16)
    t = H.make_tensor("w", TensorProto.FLOAT16, [16], values)
    assert not t.raw_data and len(t.int32_data) == 16
    g = H.make_graph([H.make_node("Identity", ["w"], ["y"])], "g", [],
                     [H.make_tensor_value_info("y", TensorProto.FLOAT16, [16])], [t])
    model = H.make_model(g, opset_imports=[H.make_opsetid("", 17)], ir_version=8)
    out = io.BytesIO()
    nnar.unpack(nnar.pack(io.BytesIO(model.SerializeToString()), fmt="onnx"), out, to="onnx")
    assert session_run(out.getvalue())[0].tobytes() == values.tobytes()


# -- 3. external data ------------------------------------------------------------------------------


def save_external(model, path: Path) -> Path:
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.data",
                    size_threshold=0)
    return path


def test_external_data_is_read_from_beside_the_model(tmp_path, exported):
    src = exported("cnn", False)
    d = tmp_path / "model"
    d.mkdir()
    ext = save_external(load(src), d / "model.onnx")
    assert (d / "w.data").stat().st_size > 0
    assert ext.stat().st_size < (d / "w.data").stat().st_size  # the weights really are outside
    infos, _, out = round_trip(ext, tmp_path)
    assert len(infos) == 14
    onnx.checker.check_model(str(out), full_check=True)
    back = load(out)
    assert_same_tensors(back, load(src))  # and self-contained: no external data
    assert_same_outputs(run(out, feeds_for("cnn")), run(src, feeds_for("cnn")))
    assert out.read_bytes() == src.read_bytes()
    # a file object opened from a path carries its name: the directory is found from it
    with open(ext, "rb") as f:
        assert nnar.pack(f, fmt="onnx") == nnar.pack(ext)


def test_external_data_from_a_stream_is_refused_clearly(tmp_path, exported):
    ext = save_external(load(exported("cnn", False)), tmp_path / "model.onnx")
    with pytest.raises(nnar.InvalidInput, match=r"external file \('w\.data'\).*give the model as a file path, not a stream"):
        nnar.pack(io.BytesIO(ext.read_bytes()), fmt="onnx")


@pytest.fixture
def open_spy(monkeypatch):
    """Every path nnar's ONNX reader opens (it opens external data files and nothing else)."""
    opened = []

    def spy(path, *args, **kw):
        opened.append(os.path.realpath(path))
        return builtins.open(path, *args, **kw)
    monkeypatch.setattr(onnx_format, "open", spy, raising=False)
    return opened


@pytest.mark.parametrize("where", ["../evil.bin", "sub/../../evil.bin", "absolute", "link.bin", "..", ""])
def test_external_data_outside_the_model_directory_is_refused_unread(tmp_path, exported, open_spy, where):
    src = exported("cnn", False)
    d = tmp_path / "model"
    d.mkdir()
    (d / "sub").mkdir()
    ext = save_external(load(src), d / "model.onnx")
    evil = tmp_path / "evil.bin"
    evil.write_bytes((d / "w.data").read_bytes())  # would give valid weights if it were read
    (d / "link.bin").symlink_to(evil)
    model = onnx.load(str(ext), load_external_data=False)
    location = str(evil) if where == "absolute" else where
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(model, str(ext))
    arc = tmp_path / "m.nnar"
    with pytest.raises(nnar.InvalidInput, match="external data location .*expected a file inside the model's directory"):
        nnar.pack(ext, arc)
    assert open_spy == []
    assert not arc.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.nnar")]  # no temporary file left


@pytest.mark.parametrize("damage, match", [("missing", "cannot read external data file 'w.data'"),
                                           ("short", "ends after"),
                                           ("length", "expected .* bytes at a non-negative offset"),
                                           ("offset", "expected integers")])
def test_damaged_external_data_is_invalid_input(tmp_path, exported, damage, match):
    ext = save_external(load(exported("cnn", False)), tmp_path / "model.onnx")
    data = tmp_path / "w.data"
    if damage == "missing":
        data.unlink()
    elif damage == "short":
        data.write_bytes(data.read_bytes()[:-10])
    else:
        model = onnx.load(str(ext), load_external_data=False)
        entries = {e.key: e for e in model.graph.initializer[0].external_data}
        if damage == "length":
            entries["length"].value = "3"
        else:
            entries["offset"].value = "zero"
        onnx.save(model, str(ext))
    with pytest.raises(nnar.InvalidInput, match=match):
        nnar.pack(ext, tmp_path / "m.nnar")


# -- 4. the large-model path: weights in <name>.onnx.data ---------------------------------------------


def test_large_models_write_their_weights_beside_the_model(tmp_path, exported, monkeypatch):
    monkeypatch.setattr(onnx_format, "EXTERNAL_DATA_THRESHOLD", 1000)
    src = exported("tied", False)
    arc = tmp_path / "m.nnar"
    nnar.pack(src, arc)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a spurious checker warning: the xfail test below
        nnar.unpack(arc, out)
    data = out.parent / "model.onnx.data"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    original = load(src)
    big = sum(len(t.raw_data) for _, t in tensor_protos(original) if len(t.raw_data) >= onnx_format.EXTERNAL_MIN_BYTES)
    assert big > 0.9 * src.stat().st_size
    assert data.stat().st_size >= big and out.stat().st_size < 0.1 * src.stat().st_size
    bare = onnx.load(str(out), load_external_data=False)
    for _, t in tensor_protos(bare):
        info = {e.key: e.value for e in t.external_data}
        if len(t.raw_data) or not info:  # small weights stay inline
            assert len(t.raw_data) < onnx_format.EXTERNAL_MIN_BYTES
            continue
        assert info["location"] == "model.onnx.data" and int(info["offset"]) % 4096 == 0
    onnx.checker.check_model(str(out), full_check=True)
    assert_same_outputs(run(out, feeds_for("tied")), run(src, feeds_for("tied")))  # onnxruntime finds the file
    back = load(out)
    onnx.external_data_helper.convert_model_from_external_data(back)
    for t in back.graph.initializer:  # only the data's place differs: bring it back inline to compare
        t.ClearField("data_location")
    assert_same_tensors(back, original)
    # and the archive packed from the external-data model gives the same weights again
    again = nnar.unpack(nnar.pack(out))
    for name, arr in nnar.unpack(arc).items():
        assert again[name].tobytes() == arr.tobytes()


def test_large_models_are_written_without_a_spurious_checker_warning(tmp_path, exported, monkeypatch):
    monkeypatch.setattr(onnx_format, "EXTERNAL_DATA_THRESHOLD", 1000)
    monkeypatch.chdir(tmp_path)  # anywhere but the output's directory
    arc = tmp_path / "m.nnar"
    nnar.pack(exported("tied", False), arc)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nnar.unpack(arc, out)
    onnx.checker.check_model(str(out), full_check=True)  # the model is fine
    assert [str(w.message) for w in caught] == []


def test_large_models_cannot_go_to_a_stream(tmp_path, exported, monkeypatch, capsys):
    monkeypatch.setattr(onnx_format, "EXTERNAL_DATA_THRESHOLD", 1000)
    arc = tmp_path / "m.nnar"
    nnar.pack(exported("tied", False), arc)
    sink = io.BytesIO()
    with pytest.raises(nnar.InvalidInput, match="external data file beside the model: give an output file path"):
        nnar.unpack(arc, sink, to="onnx")
    assert sink.getvalue() == b""
    assert main(["unpack", str(arc), "-o", "-", "--to", "onnx"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnar: error[invalid-input]:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnar"]


def test_an_existing_data_file_is_not_replaced_without_force(tmp_path, exported, monkeypatch):
    monkeypatch.setattr(onnx_format, "EXTERNAL_DATA_THRESHOLD", 1000)
    arc = tmp_path / "m.nnar"
    nnar.pack(exported("tied", False), arc)
    mine = tmp_path / "model.onnx.data"
    mine.write_bytes(b"someone else's file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the spurious checker warning of the test above
            nnar.unpack(arc, tmp_path / "model.onnx")
    except nnar.OutputExists:
        pass
    assert mine.read_bytes() == b"someone else's file"


# -- 5. --keep-quantized --------------------------------------------------------------------------


def weights_as_run(path, names: list[str], feeds) -> dict[str, np.ndarray]:
    """The values onnxruntime computes for ``names`` in the model at ``path`` (made graph
    outputs, so the expansion itself is what runs)."""
    model = load(path)
    have = {o.name for o in model.graph.output}
    for n in names:
        if n not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=n))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = [o.name for o in sess.get_outputs()]
    return dict(zip(wanted, sess.run(None, feeds)))


def initializer_arrays(path) -> dict[str, np.ndarray]:
    return {t.name: NH.to_array(t) for _, t in tensor_protos(load(path))}


def assert_exact_expansion(kq: Path, plain: Path, names: list[str], feeds) -> None:
    """onnxruntime's expansion of each quantized weight is nnar's decode, bit for bit."""
    got = weights_as_run(kq, names, feeds)
    want = initializer_arrays(plain)
    for n in names:
        assert got[n].dtype == want[n].dtype and got[n].shape == want[n].shape, n
        assert got[n].tobytes() == want[n].tobytes(), n


def keep_quantized_pair(src: Path, tmp_path: Path, config, name: str = "q"):
    arc, plain, kq = tmp_path / f"{name}.nnar", tmp_path / f"{name}.plain.onnx", tmp_path / f"{name}.kq.onnx"
    infos = nnar.pack(src, arc, config=config)
    nnar.unpack(arc, plain)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nnar.unpack(arc, kq, keep_quantized=True)
    return infos, arc, plain, kq, [str(w.message) for w in caught]


BLOCK4 = {"quant": "uniform", "bits": 4, "granularity": "block", "block": 16}
PRESET_CASES = {  # config → the nodes that expand each lossy weight of the exported MLP (opset 17)
    "int8": ["DequantizeLinear"],
    "balanced": ["Cast", "Gather"],
    "fp16": ["Cast"],
    "block4": ["Cast", "Sub", "Mul", "Reshape"],  # blocked DequantizeLinear needs opset 21
    "kmeans4-prune": ["Cast", "Gather"],
    "ternary": ["Cast", "Gather"],
}
CONFIGS = {"int8": "int8", "balanced": "balanced", "fp16": "fp16", "block4": BLOCK4,
           "kmeans4-prune": {"quant": "kmeans", "bits": 4, "prune": 0.5}, "ternary": {"quant": "ternary"}}


@pytest.mark.parametrize("case", list(PRESET_CASES))
def test_keep_quantized_runs_exactly_as_the_plain_unpack(tmp_path, exported, case):
    src = exported("tied")
    infos, _, plain, kq, warned = keep_quantized_pair(src, tmp_path, CONFIGS[case])
    assert warned == []
    lossy = [i.name for i in infos if i.lossy]
    assert len(lossy) == 4, lossy  # the embedding and the three matrices
    onnx.checker.check_model(str(kq), full_check=True)
    model = load(kq)
    initializers = {t.name: t for t in model.graph.initializer}
    for name in lossy:
        assert name not in initializers
        assert _chain(model.graph, name) == PRESET_CASES[case], name
    if case == "int8":
        dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
        assert all(H.get_attribute_value(a) == 0 for n in dq for a in n.attribute if a.name == "axis") and dq
        assert all(initializers[n + ".nnar_codes"].data_type == TensorProto.UINT8 for n in lossy)
    if case == "fp16":
        assert all(initializers[n + ".nnar_half"].data_type == TensorProto.FLOAT16 for n in lossy)
    if case in ("balanced", "kmeans4-prune", "ternary"):
        assert all(initializers[n + ".nnar_indices"].data_type == TensorProto.UINT8 for n in lossy)
    for seed in (1, 2):
        feeds = feeds_for("tied", seed)
        assert_same_outputs(run(kq, feeds), run(plain, feeds))
    assert_exact_expansion(kq, plain, lossy, feeds_for("tied"))
    ratio = plain.stat().st_size / kq.stat().st_size
    print(f"{case}: keep-quantized {kq.stat().st_size} bytes, plain {plain.stat().st_size} ({ratio:.2f}x smaller)")
    assert ratio > {"int8": 3.0, "balanced": 3.0, "kmeans4-prune": 3.0}.get(case, 1.5)


def test_keep_quantized_on_the_command_line(tmp_path, exported, capsys):
    src = exported("block")
    arc, plain, kq = tmp_path / "m.nnar", tmp_path / "plain.onnx", tmp_path / "kq.onnx"
    assert main(["pack", str(src), "-o", str(arc), "--preset", "int8", "--min-params", "0", "-q"]) == 0
    assert main(["unpack", str(arc), "-o", str(plain), "-q"]) == 0
    assert main(["unpack", str(arc), "-o", str(kq), "--keep-quantized", "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert "DequantizeLinear" in {n.op_type for n in load(kq).graph.node}
    assert kq.stat().st_size < plain.stat().st_size / 2
    assert_same_outputs(run(kq, feeds_for("block")), run(plain, feeds_for("block")))


def opset_model(opset: int):
    """MatMul + Add (W [64, 48], B [48]) and a Conv (K [8, 4, 3, 3]) at ``opset``."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (64, 48)).astype(np.float32)
    b = rng.normal(0, 0.1, 48).astype(np.float32)
    k = rng.normal(0, 0.1, (8, 4, 3, 3)).astype(np.float32)
    g = H.make_graph([H.make_node("MatMul", ["X", "W"], ["h"]), H.make_node("Add", ["h", "B"], ["Y"]),
                      H.make_node("Conv", ["I", "K"], ["Z"])], "g",
                     [H.make_tensor_value_info("X", TensorProto.FLOAT, [2, 64]),
                      H.make_tensor_value_info("I", TensorProto.FLOAT, [1, 4, 6, 6])],
                     [H.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 48]),
                      H.make_tensor_value_info("Z", TensorProto.FLOAT, [1, 8, 4, 4])],
                     [NH.from_array(w, "W"), NH.from_array(b, "B"), NH.from_array(k, "K")])
    model = H.make_model(g, opset_imports=[H.make_opsetid("", opset)], ir_version={12: 7, 13: 7, 21: 10}[opset])
    onnx.checker.check_model(model, full_check=True)
    return model


OPSET_FEEDS = {"X": np.random.default_rng(5).normal(size=(2, 64)).astype(np.float32),
               "I": np.random.default_rng(6).normal(size=(1, 4, 6, 6)).astype(np.float32)}
FALLBACK = ["Cast", "Sub", "Mul", "Reshape"]
OPSET_CASES = {  # config → opset → (nodes, codes' data type, DequantizeLinear's attributes)
    "int8": {12: (FALLBACK, TensorProto.UINT8, None),
             13: (["DequantizeLinear"], TensorProto.UINT8, {"axis": 0}),
             21: (["DequantizeLinear"], TensorProto.UINT8, {"axis": 0})},
    "block4": {12: (FALLBACK, TensorProto.UINT8, None),
               13: (FALLBACK, TensorProto.UINT8, None),
               21: (["DequantizeLinear", "Reshape"], TensorProto.UINT4, {"axis": 1, "block_size": 16})},
    "channel4": {12: (FALLBACK, TensorProto.UINT8, None),
                 13: (["DequantizeLinear"], TensorProto.UINT8, {"axis": 0}),
                 21: (["DequantizeLinear"], TensorProto.UINT4, {"axis": 0})},
    "kmeans4": {v: (["Cast", "Gather"], None, None) for v in (12, 13, 21)},
    "fp16": {v: (["Cast"], None, None) for v in (12, 13, 21)},
    "bf16": {12: ([], None, None), 13: (["Cast"], None, None), 21: (["Cast"], None, None)},
}
OPSET_CONFIGS = {"int8": {"preset": "int8"}, "block4": BLOCK4,
                 "channel4": {"quant": "uniform", "bits": 4, "granularity": "channel"},
                 "kmeans4": {"quant": "kmeans", "bits": 4}, "fp16": {"quant": "fp16"}, "bf16": {"quant": "bf16"}}


@pytest.mark.parametrize("opset", [12, 13, 21])
@pytest.mark.parametrize("case", list(OPSET_CASES))
def test_keep_quantized_at_each_opset(tmp_path, case, opset):
    src = tmp_path / "m.onnx"
    onnx.save(opset_model(opset), src)
    infos, _, plain, kq, warned = keep_quantized_pair(src, tmp_path, {**OPSET_CONFIGS[case], "min_params": 0})
    assert sorted(i.name for i in infos if i.lossy) == ["K", "W"]
    nodes, codes, attrs = OPSET_CASES[case][opset]
    if nodes:
        assert warned == []
    else:  # no small form at this opset: written expanded, and said so
        assert len(warned) == 1 and f"no small ONNX form at opset {opset}" in warned[0]
        assert set(warned[0].rsplit(": ", 1)[1].split(", ")) == {"W", "K"}
        assert kq.read_bytes() == plain.read_bytes()
    onnx.checker.check_model(str(kq), full_check=True)
    model = load(kq)
    assert [o.version for o in model.opset_import] == [opset]  # never changed
    inits = {t.name: t for t in model.graph.initializer}
    for name in ("W", "K"):
        assert _chain(model.graph, name) == nodes, name
        if codes is not None:
            assert inits[name + ".nnar_codes"].data_type == codes
            zero_point = codes if nodes[0] == "DequantizeLinear" else TensorProto.FLOAT  # Sub takes a float
            assert inits[name + ".nnar_zero_point"].data_type == zero_point
        if attrs is not None:
            dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.name.startswith(name + "."))
            assert {a.name: H.get_attribute_value(a) for a in dq.attribute} == attrs
        if case == "bf16" and nodes:
            assert inits[name + ".nnar_half"].data_type == TensorProto.BFLOAT16
    assert "B" in inits and _chain(model.graph, "B") == []  # lossless: untouched
    # what onnxruntime computes for each weight is nnar's decode, bit for bit ...
    assert_exact_expansion(kq, plain, ["W", "K"], OPSET_FEEDS)
    # ... and so are the outputs. onnxruntime's NCHWc layout transformer rewrites a Conv whose
    # weight is an initializer to another kernel, whose sums round differently in the last bit;
    # a weight computed at run time keeps the plain Conv, so compare with that rewrite off
    # (with it on, the Conv agrees to a few ulps)
    no_nchwc = {"disabled_optimizers": ["NchwcTransformer"]}
    assert_same_outputs(run(kq, OPSET_FEEDS, **no_nchwc), run(plain, OPSET_FEEDS, **no_nchwc))
    got, want = run(kq, OPSET_FEEDS), run(plain, OPSET_FEEDS)
    assert np.array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
    if case in ("int8", "kmeans4", "block4", "channel4"):
        assert kq.stat().st_size < plain.stat().st_size / 2


def per_tensor_pair(tmp_path, opset: int = 13):
    src = tmp_path / "m.onnx"
    onnx.save(opset_model(opset), src)
    return keep_quantized_pair(src, tmp_path, {"quant": "uniform", "bits": 8, "min_params": 0})


def test_keep_quantized_per_tensor_is_exact_where_onnxruntime_does_not_requantize(tmp_path):
    """One scale per tensor, opset 13: DequantizeLinear(axis=0), the scale repeated per output
    channel. The expansion is exact, and so is the model's output."""
    _, _, plain, kq, warned = per_tensor_pair(tmp_path)
    assert warned == []
    model = load(kq)
    for name, channels in (("W", 64), ("K", 8)):
        assert _chain(model.graph, name) == ["DequantizeLinear"]
        scale = {t.name: t for t in model.graph.initializer}[name + ".nnar_scale"]
        assert list(scale.dims) == [channels] and len(set(NH.to_array(scale).tolist())) == 1
    assert_exact_expansion(kq, plain, ["W", "K"], OPSET_FEEDS)
    so = ort.SessionOptions()
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    no_nchwc = {"disabled_optimizers": ["NchwcTransformer"]}
    assert_same_outputs(run(kq, OPSET_FEEDS, sess_options=so, **no_nchwc), run(plain, OPSET_FEEDS, **no_nchwc))


@pytest.mark.parametrize("opset", [12, 13, 21])
def test_keep_quantized_per_tensor_matmul_runs_exactly_with_default_options(tmp_path, opset):
    """onnxruntime would turn a per-tensor DequantizeLinear -> MatMul into MatMulNBits with int8
    activations; nnar writes one scale per channel (or, below opset 13, the arithmetic) instead."""
    _, _, plain, kq, _ = per_tensor_pair(tmp_path, opset)
    assert np.array_equal(run(kq, OPSET_FEEDS)[0], run(plain, OPSET_FEEDS)[0])


def test_keep_quantized_fallback_after_a_small_form_keeps_the_weight(tmp_path):
    """Blocks of 64 divide W (3072 elements) but not K (288): W gets its small form, K is
    written expanded, with a warning, and the model runs as the plain unpack does."""
    src = tmp_path / "m.onnx"
    onnx.save(opset_model(12), src)
    _, _, plain, kq, warned = keep_quantized_pair(
        src, tmp_path, {"quant": "uniform", "bits": 4, "granularity": "block", "block": 64, "min_params": 0})
    assert any("written expanded: K" in w for w in warned)
    k = {t.name: t for t in onnx.load(str(kq), load_external_data=False).graph.initializer}["K"]
    assert len(k.raw_data) == 288 * 4 and not k.external_data
    no_nchwc = {"disabled_optimizers": ["NchwcTransformer"]}
    assert_same_outputs(run(kq, OPSET_FEEDS, **no_nchwc), run(plain, OPSET_FEEDS, **no_nchwc))


def test_keep_quantized_weights_that_have_no_small_form_are_expanded(tmp_path):
    """Blocks that divide no weight, and bfloat16 casts below opset 13: every weight written
    expanded, with one warning naming them; the model is the plain unpack's."""
    src = tmp_path / "m.onnx"
    onnx.save(opset_model(12), src)
    for name, config in (("blocks", {"quant": "uniform", "bits": 4, "granularity": "block", "block": 7}),
                         ("bf16", {"quant": "bf16"})):
        _, _, plain, kq, warned = keep_quantized_pair(src, tmp_path, {**config, "min_params": 0}, name=name)
        assert len(warned) == 1 and "2 quantized weights have no small ONNX form at opset 12" in warned[0], warned
        assert set(warned[0].rsplit(": ", 1)[1].split(", ")) == {"W", "K"}
        assert kq.read_bytes() == plain.read_bytes()


@pytest.mark.parametrize("dst", ["out.safetensors", "out.npz", "out.pt"])
def test_keep_quantized_writes_onnx_only(tmp_path, exported, dst):
    arc = tmp_path / "m.nnar"
    nnar.pack(exported("tied"), arc, config="int8")
    with pytest.raises(nnar.InvalidInput, match="--keep-quantized writes ONNX models"):
        nnar.unpack(arc, tmp_path / dst, keep_quantized=True)
    assert not (tmp_path / dst).exists()


# -- 6. errors -------------------------------------------------------------------------------------


@pytest.fixture
def plain_archives(tmp_path):
    """Archives packed from .npz, .safetensors and a Python mapping: no ONNX graph in them."""
    tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(4, np.float32)}
    npz = tmp_path / "w.npz"
    np.savez(npz, **tensors)
    st_ = tmp_path / "w.safetensors"
    nnar.unpack(nnar.pack(tensors), st_)
    out = {}
    for name, src in (("npz", npz), ("safetensors", st_), ("python", tensors)):
        out[name] = tmp_path / f"{name}.nnar"
        nnar.pack(src, out[name])
    return out


@pytest.mark.parametrize("source", ["npz", "safetensors", "python"])
def test_an_archive_without_a_graph_cannot_become_onnx(tmp_path, plain_archives, capsys, source):
    arc = plain_archives[source]
    out = tmp_path / "x.onnx"
    with pytest.raises(nnar.InvalidInput, match=r"holds no ONNX graph.*unpack it to \.safetensors, \.npz or \.pt"):
        nnar.unpack(arc, out)
    assert main(["unpack", str(arc), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnar: error[invalid-input]: ") and ".safetensors, .npz or .pt" in err[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".x.onnx")]  # no temporary file left


@pytest.mark.parametrize("data", [b"", b"garbage" * 10, b"\xff" * 64, b"PK\x03\x04" + bytes(40), b"\x08\x07",
                                  b"\x3a\x05\x0a\x03abc"])
def test_garbage_named_onnx_is_invalid_input(tmp_path, data):
    src = tmp_path / "model.onnx"
    src.write_bytes(data)
    with pytest.raises(nnar.InvalidInput, match="expected an ONNX model"):
        nnar.pack(src, tmp_path / "m.nnar")
    assert not (tmp_path / "m.nnar").exists()


@pytest.mark.parametrize("cut", [0.01, 0.1, 0.5, 0.9, 0.999])
def test_a_truncated_model_is_invalid_input(tmp_path, exported, cut):
    data = exported("block").read_bytes()
    src = tmp_path / "model.onnx"
    src.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(nnar.InvalidInput, match="expected an ONNX model"):
        nnar.pack(src, tmp_path / "m.nnar")


@settings(max_examples=100)
@given(st.binary(max_size=96))
def test_any_bytes_give_an_archive_or_an_nnar_error(data):
    try:
        arc = nnar.pack(io.BytesIO(data), fmt="onnx")
    except nnar.NnarError:
        return
    nnar.unpack(arc, io.BytesIO(), to="onnx")  # whatever parsed also rebuilds


def _structure_archive(structure: bytes, tensors: dict) -> bytes:
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf, source_format="onnx", structure=("onnx", structure)) as w:
        for name, arr in tensors.items():
            w.write(name, arr)
    return buf.getvalue()


def test_a_structure_that_disagrees_with_the_tensors_is_invalid_input(tmp_path):
    model = subgraph_model()
    structure = onnx_format.read(io.BytesIO(model.SerializeToString())).structure
    good = {n: a for n, a, _ in onnx_format.read(io.BytesIO(model.SerializeToString())).tensors()}
    cases = [
        ({**good, "W0": good["W0"].astype(np.float64)}, "'W0': the ONNX graph expects float32\\[16, 16\\], the archive holds float64"),
        ({**good, "W0": good["W0"][:8]}, "'W0': the ONNX graph expects float32\\[16, 16\\]"),
        ({k: v for k, v in good.items() if k != "Wl"}, "needs tensors the archive lacks: \\['Wl'\\]"),
        ({**good, "extra": np.ones(3, np.float32)}, "'extra': the ONNX graph has no place for it"),
    ]
    for tensors, match in cases:
        with pytest.raises(nnar.InvalidInput, match=match):
            nnar.unpack(_structure_archive(structure, tensors), io.BytesIO(), to="onnx")
    with pytest.raises(nnar.InvalidInput, match="ONNX structure in the archive: expected a ModelProto"):
        nnar.unpack(_structure_archive(b"\xff\xff\xff", {}), io.BytesIO(), to="onnx")
    out = io.BytesIO()  # and the right tensors rebuild the model
    nnar.unpack(_structure_archive(structure, good), out, to="onnx")
    assert out.getvalue() == model.SerializeToString()


def test_onnx_missing_names_the_extra(tmp_path, exported, capsys, monkeypatch):
    src = exported("cnn")
    arc = tmp_path / "m.nnar"
    nnar.pack(src, arc)
    names = weight_names(load(src))
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(nnar.MissingExtra, match=r"nnar\[onnx\].*pip install onnx"):
        nnar.pack(src, tmp_path / "again.nnar")
    with pytest.raises(nnar.MissingExtra, match=r"nnar\[onnx\]"):
        nnar.unpack(arc, tmp_path / "out.onnx")
    assert main(["unpack", str(arc), "-o", str(tmp_path / "out.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnar: error[missing-extra]:") and "nnar[onnx]" in err[0]
    assert not (tmp_path / "again.nnar").exists() and not (tmp_path / "out.onnx").exists()
    assert list(nnar.unpack(arc)) == names  # the tensors themselves need no onnx
    nnar.unpack(arc, tmp_path / "w.safetensors")


# -- 7. lossy within the reported fidelity ----------------------------------------------------------


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "raw"])
def test_balanced_stays_within_its_reported_error(tmp_path, exported, fold):
    src = exported("cnn", fold)
    infos, _, out = round_trip(src, tmp_path, config="balanced")
    lossy = [i for i in infos if i.fidelity]
    assert lossy, "no tensor was eligible for the lossy settings"
    for i in lossy:
        assert i.fidelity["sqnr_db"] >= 31.0, (i.name, i.fidelity)
    onnx.checker.check_model(str(out), full_check=True)
    # To first order each weight's relative error reaches the output undamped: the output's
    # relative error stays under the sum of the reported ones
    bound = sum(i.fidelity["rel_l2"] for i in lossy) + 1e-6
    for seed in (1, 2, 3):
        feeds = feeds_for("cnn", seed)
        want, got = run(src, feeds)[0], run(out, feeds)[0]
        err = float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want))
        assert 0 < err < bound, (err, bound)
    lossless = {i.name for i in infos if not i.fidelity}
    back = {t.name: NH.to_array(t) for t in load(out).graph.initializer}
    orig = {t.name: NH.to_array(t) for t in load(src).graph.initializer}
    for name in lossless:
        assert back[name].tobytes() == orig[name].tobytes(), name


# -- 8. the real OCR models (slow) -----------------------------------------------------------------


def _ocr_models() -> dict[str, Path]:
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    root = Path(os.path.dirname(rapidocr.__file__))
    found = {}
    for p in root.rglob("*.onnx"):
        for kind in ("det", "rec", "cls"):
            if f"_{kind}_" in p.name:
                found[kind] = p
    assert set(found) == {"det", "rec", "cls"}, found
    return found


def _random_feeds(path: Path, kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    sizes = {"det": (1, 3, 96, 160), "rec": (1, 3, 48, 320), "cls": (1, 3, 48, 192)}
    sess = session(path)
    rng = np.random.default_rng(seed)
    return {i.name: rng.random(sizes[kind], dtype=np.float32) for i in sess.get_inputs()}


def _render(text: str) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    img = np.full((160, 900, 3), 255, np.uint8)
    cv2.putText(img, text, (20, 100), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 4, cv2.LINE_AA)
    return img


def _ocr(models: dict[str, Path], img: np.ndarray) -> list[str]:
    from rapidocr_onnxruntime import RapidOCR
    engine = RapidOCR(det_model_path=str(models["det"]), rec_model_path=str(models["rec"]),
                      cls_model_path=str(models["cls"]))
    used = {"det": engine.text_det.infer, "rec": engine.text_rec.session, "cls": engine.text_cls.infer}
    for kind, sess in used.items():  # the engine really loaded the files given
        assert os.path.samefile(sess.session._model_path, models[kind]), kind
    result, _ = engine(img)
    assert result, "nothing recognised"
    return [line[1] for line in result]


@pytest.mark.slow
def test_ocr_models_round_trip_and_read_the_same_text(tmp_path):
    models = _ocr_models()
    lossless = {}
    for kind, src in models.items():
        arc, out = tmp_path / f"{kind}.nnar", tmp_path / src.name
        nnar.pack(src, arc)
        nnar.unpack(arc, out)
        lossless[kind] = out
        original, back = load(src), load(out)
        assert_same_tensors(back, original)
        if kind == "cls":  # its weights are in typed float_data fields; nnar writes them back as raw_data
            assert out.read_bytes() != src.read_bytes()
            assert any(t.float_data for _, t in tensor_protos(original))
        else:
            assert out.read_bytes() == src.read_bytes()
        feeds = _random_feeds(src, kind)
        assert_same_outputs(run(out, feeds), run(src, feeds))
    text = "NNAR 2026 hello world"
    img = _render(text)
    want = _ocr(models, img)
    assert want == [text]
    assert _ocr(lossless, img) == want
    # the recogniser, int8 per output channel, kept quantized in the .onnx (opset 12: Cast/Sub/Mul)
    rec_arc, rec_kq = tmp_path / "rec-int8.nnar", tmp_path / "q" / models["rec"].name
    rec_kq.parent.mkdir()
    infos = nnar.pack(models["rec"], rec_arc, config="int8")
    assert all(i.fidelity["sqnr_db"] >= 30 for i in infos if i.fidelity)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnar.unpack(rec_arc, rec_kq, keep_quantized=True)
    rec_plain = tmp_path / "rec-int8.onnx"
    nnar.unpack(rec_arc, rec_plain)
    assert_exact_expansion(rec_kq, rec_plain, [i.name for i in infos if i.lossy][:8], _random_feeds(rec_plain, "rec"))
    no_nchwc = {"disabled_optimizers": ["NchwcTransformer"]}  # as in test_keep_quantized_at_each_opset
    feeds = _random_feeds(rec_plain, "rec", seed=1)
    assert_same_outputs(run(rec_kq, feeds, **no_nchwc), run(rec_plain, feeds, **no_nchwc))
    ratio = models["rec"].stat().st_size / rec_kq.stat().st_size
    print(f"PP-OCRv4 rec: {models['rec'].stat().st_size} bytes -> keep-quantized int8 {rec_kq.stat().st_size} "
          f"bytes ({ratio:.2f}x smaller)")
    assert ratio >= 3.5
    assert _ocr({**models, "rec": rec_kq}, img) == want
