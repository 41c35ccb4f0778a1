"""The ONNX side of the output-aware search: calibration files (nnar.search.calibration) read
and checked against real graphs, every bad file a one-line error naming file and array; and
the evaluator (nnar.search.onnx_runner) on a real torch CNN exported to ONNX and run by
onnxruntime: 0 for the original weights, more for a perturbed one, the same number from the
fully rebuilt model (``final``) as from the calls, on every path."""

from __future__ import annotations

import builtins
import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from onnx import TensorProto, helper as H, numpy_helper as NH  # noqa: E402

from nnar.errors import InvalidInput, MissingExtra  # noqa: E402
from nnar.formats import onnx as onnx_format  # noqa: E402
from nnar.search import calibration, onnx_runner, outputs  # noqa: E402

from models import CNN  # noqa: E402

# -- models ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """(structure, {name: array}, {name: dtype}, model proto) of a trained-looking CNN with
    BatchNorm, exported unfolded with free batch, height and width."""
    torch.manual_seed(1)
    model = CNN().train()
    with torch.no_grad():
        for _ in range(3):  # running statistics that are not the initial ones
            model(torch.randn(4, 3, 8, 8))
    model.eval()
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.randn(2, 3, 8, 8),), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}, "y": {0: "batch"}})
    proto = onnx.load(str(path))
    m = onnx_format.from_proto(onnx.load(str(path)))
    items = list(m.tensors())
    return m.structure, {n: a for n, a, _ in items}, {n: d for n, a, d in items}, proto


def gather_model():
    """x [batch, 16] → MatMul(Constant W, float) → Gather(Constant idx, int64, 16 of them): a
    float weight the lifted path feeds and an integer one it bakes in."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(16, 16)).astype(np.float32)
    idx = rng.permutation(16).astype(np.int64)
    g = H.make_graph([H.make_node("Constant", [], ["W"], value=NH.from_array(w, "W")),
                      H.make_node("Constant", [], ["idx"], value=NH.from_array(idx, "idx")),
                      H.make_node("MatMul", ["x", "W"], ["h"]), H.make_node("Gather", ["h", "idx"], ["y"], axis=1)],
                     "g", [H.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                     [H.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])])
    return H.make_model(g, opset_imports=[H.make_opsetid("", 17)], ir_version=8)


def inputs_model():
    """Inputs x float[batch, 3, w], ids int64[batch], and w0, an input with an initializer (a
    weight, not a model input) — for checking calibration files only."""
    g = H.make_graph([H.make_node("Identity", ["x"], ["y"]), H.make_node("Add", ["ids", "w0"], ["z"])], "g",
                     [H.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "w"]),
                      H.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]),
                      H.make_tensor_value_info("w0", TensorProto.INT64, [1])],
                     [H.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "w"]),
                      H.make_tensor_value_info("z", TensorProto.INT64, ["batch"])],
                     [NH.from_array(np.array([1], np.int64), "w0")])
    return H.make_model(g, opset_imports=[H.make_opsetid("", 17)], ir_version=8)


def images(n: int, hw: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, hw, hw)).astype(np.float32)


def batch(**arrays) -> calibration.Batch:
    return calibration.Batch(arrays, "test.npz")


def perturbed(tensors: dict, name: str, scale: float) -> dict:
    out = dict(tensors)
    out[name] = (tensors[name] * np.float32(1 + scale)).astype(tensors[name].dtype)
    return out


# -- calibration files -----------------------------------------------------------------------------


def test_load_a_file_and_a_directory_of_batches(tmp_path):
    np.savez(tmp_path / "one.npz", x=images(4))
    [b] = calibration.load(tmp_path / "one.npz")
    assert list(b) == ["x"] and b["x"].shape == (4, 3, 8, 8) and b.source.endswith("one.npz")
    d = tmp_path / "batches"
    d.mkdir()
    np.savez_compressed(d / "b.npz", x=images(2, 10))
    np.savez(d / "a.npz", x=images(3, 8))
    (d / "README.txt").write_text("not a batch")
    found = calibration.load(d)
    assert [b.source.rsplit("/", 1)[-1] for b in found] == ["a.npz", "b.npz"]
    assert [b["x"].shape for b in found] == [(3, 3, 8, 8), (2, 3, 10, 10)]


def damaged_member(path: Path, compressed: bool) -> None:
    (np.savez_compressed if compressed else np.savez)(path, x=images(2), y=np.arange(1000.0))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("y.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 200] ^= 0xFF  # inside y's data, after its .npy header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case, says", [
    ("missing", ["found nothing at that path", "nowhere.npz"]),
    ("empty-dir", ["expected .npz files", "found none"]),
    ("text", ["expected an .npz file", "not one", "b'hello"]),
    ("npy", ["found a single .npy array", "np.savez"]),
    ("no-arrays", ["found no arrays"]),
    ("object", ["array 'x'", "object array"]),
    ("truncated", ["expected an .npz file", "damaged or truncated zip", "data.npz"]),
    ("damaged", ["array 'y'", "damaged"]),
    ("damaged-compressed", ["array 'y'", "damaged"]),
    ("not-npy-member", ["member 'notes.txt'", "expected a .npy array"]),
])
def test_bad_calibration_files_are_one_line_errors(tmp_path, case, says):
    p = tmp_path / "data.npz"
    if case == "missing":
        p = tmp_path / "nowhere.npz"
    elif case == "empty-dir":
        p = tmp_path / "empty"
        p.mkdir()
    elif case == "text":
        p.write_text("hello, world")
    elif case == "npy":
        np.save(tmp_path / "data.npy", images(1))
        (tmp_path / "data.npy").rename(p)
    elif case == "no-arrays":
        np.savez(p)
    elif case == "object":
        np.savez(p, x=np.array([{"a": 1}], dtype=object))
    elif case == "truncated":
        np.savez(p, x=images(4))
        p.write_bytes(p.read_bytes()[:300])
    elif case.startswith("damaged"):
        damaged_member(p, compressed=case.endswith("compressed"))
    elif case == "not-npy-member":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("x.npy", _npy(images(1)))
            z.writestr("notes.txt", "hello")
    with pytest.raises(InvalidInput) as e:
        calibration.load(p)
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message
    for s in says:
        assert s in message, message


def _npy(arr: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, arr)
    return f.getvalue()


@pytest.mark.parametrize("arrays, says", [
    ({"x": np.zeros((2, 3, 5), np.float32), "ids": np.zeros(2, np.int64)}, None),
    ({"x": np.zeros((2, 3, 5), np.float32), "ids": np.zeros(2, np.int64), "extra": np.zeros(2)},
     ["array 'extra' is not an input", "'x', 'ids'"]),
    ({"x": np.zeros((2, 3, 5), np.float32), "ids": np.zeros(2, np.int64), "w0": np.zeros(1, np.int64)},
     ["'w0'", "one of the model's weights"]),
    ({"x": np.zeros((2, 3, 5), np.float32)}, ["input 'ids' is missing", "'x', 'ids'"]),
    ({"x": np.zeros((2, 3, 5), np.float64), "ids": np.zeros(2, np.int64)},
     ["input 'x'", "float32", "FLOAT", "float64"]),
    ({"x": np.zeros((2, 3, 5), np.float32), "ids": np.zeros(2, np.int32)}, ["input 'ids'", "int64", "int32"]),
    ({"x": np.zeros((2, 3), np.float32), "ids": np.zeros(2, np.int64)}, ["input 'x'", "3 dimensions", "[2, 3]"]),
    ({"x": np.zeros((2, 4, 5), np.float32), "ids": np.zeros(2, np.int64)},
     ["input 'x' axis 1", "expected 3", "found 4"]),
    ({"x": np.zeros((0, 3, 5), np.float32), "ids": np.zeros(0, np.int64)}, ["input 'x'", "at least one sample"]),
    ({"x": np.zeros((2, 3, 5), np.float32), "ids": np.zeros(3, np.int64)}, ["'ids' has 3 samples", "'x' has 2"]),
])
def test_check_against_the_graph_inputs(arrays, says):
    b = calibration.Batch(arrays, "cal/batch-7.npz")
    if says is None:
        calibration.check([b], inputs_model())
        return
    with pytest.raises(InvalidInput) as e:
        calibration.check([b], inputs_model())
    message = str(e.value)
    assert "\n" not in message and "cal/batch-7.npz" in message
    for s in says:
        assert s in message, message


def test_fixed_batch_dimension_is_checked_with_a_hint():
    model = gather_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    with pytest.raises(InvalidInput, match=r"axis 0: expected 1 .* found 4 .*directory of \.npz files"):
        calibration.check([batch(x=np.zeros((4, 16), np.float32))], model)
    calibration.check([batch(x=np.zeros((1, 16), np.float32))], model)


def test_loaded_directory_is_checked_file_by_file(tmp_path, cnn):
    structure, _, _, proto = cnn
    np.savez(tmp_path / "a.npz", x=images(2))
    np.savez(tmp_path / "b.npz", x=images(2).astype(np.float16))
    with pytest.raises(InvalidInput, match=r"b\.npz: input 'x': expected dtype float32 \(ONNX FLOAT\), found float16"):
        calibration.check(calibration.load(tmp_path), proto)


# -- the evaluator ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", onnx_runner.MODES)
def test_original_scores_zero_a_perturbed_weight_more_and_final_agrees(cnn, mode):
    structure, tensors, dtypes, _ = cnn
    batches = [batch(x=images(4, 8, seed=1)), batch(x=images(2, 11, seed=2))]
    ev = onnx_runner.OnnxEvaluator(structure, batches, outputs.parse_bound("cos=0.999"), dtypes=dtypes, mode=mode)
    ev.reference(tensors)
    assert ev.path in ("rebuild", "lifted") and (mode != "rebuild" or ev.path == "rebuild")
    assert ev(tensors) == 0
    conv = next(n for n, a in tensors.items() if a.ndim == 4)  # the first convolution's kernel
    for scale in (0.02, 0.3):
        cand = perturbed(tensors, conv, scale)
        got = ev(cand)
        assert got > 0
        assert ev.final(cand) == pytest.approx(got, rel=1e-3, abs=1e-9)
        if ev.path == "rebuild":  # the same computation: the same number
            assert ev.final(cand) == got
    assert ev.final(tensors) == 0
    assert ev.calls == 3 and ev.seconds > 0
    assert len(ev.last_outputs) == 2 and ev.last_outputs[1][0].shape == (2, 10)


def test_auto_takes_the_lifted_path_only_when_it_is_exact(cnn):
    structure, tensors, dtypes, _ = cnn
    bs = [batch(x=images(3))]
    auto = onnx_runner.OnnxEvaluator(structure, bs, outputs.parse_bound("max-abs=1"), dtypes=dtypes)
    auto.reference(tensors)
    lifted = onnx_runner.OnnxEvaluator(structure, bs, outputs.parse_bound("max-abs=1"), dtypes=dtypes, mode="lifted")
    lifted.reference(tensors)
    assert lifted.path == "lifted"
    assert (auto.path == "lifted") == (lifted.path_gap == 0 and
                                       outputs.score("max-abs", auto.reference_outputs, lifted._refs["lifted"]) == 0)
    assert lifted.path_gap < 1e-5  # the last bits only


@settings(max_examples=8, deadline=None)
@given(st.sampled_from(["cos=0.99", "rel-l2=0.01", "max-abs=0.01", "argmax=0"]), st.floats(-0.5, 0.5),
       st.integers(0, 3))
def test_every_metric_agrees_between_the_calls_and_the_proof(cnn, bound, scale, which):
    structure, tensors, dtypes, _ = cnn
    names = sorted(n for n, a in tensors.items() if a.dtype == np.float32 and a.size > 1)
    ev = onnx_runner.OnnxEvaluator(structure, [batch(x=images(5, 9, seed=4))], outputs.parse_bound(bound),
                                   dtypes=dtypes, mode="rebuild")
    ev.reference(tensors)
    cand = perturbed(tensors, names[which % len(names)], scale)
    assert ev(cand) == ev.final(cand)
    b = outputs.parse_bound(bound)
    text = outputs.describe(b, ev(cand), outputs.changed(ev.reference_outputs, ev.last_outputs))
    assert text and "\n" not in text


def test_argmax_bound_counts_changed_classes(cnn):
    structure, tensors, dtypes, _ = cnn
    ev = onnx_runner.OnnxEvaluator(structure, [batch(x=images(16, seed=5))], outputs.parse_bound("argmax=0"),
                                   dtypes=dtypes)
    ev.reference(tensors)
    fc = next(n for n, a in tensors.items() if a.shape == (10, 16))
    wrecked = dict(tensors, **{fc: np.ascontiguousarray(tensors[fc][::-1])})  # classes swapped around
    score = ev(wrecked)
    count, total = outputs.changed(ev.reference_outputs, ev.last_outputs)
    assert total == 16 and count > 0 and score >= 1 and not ev.bound.holds(score)
    assert outputs.describe(ev.bound, score, (count, total)) == f"argmax changed ({count} of 16 changed)"
    assert ev.bound.holds(ev(perturbed(tensors, fc, 1e-4)))


def test_lifted_path_rebuilds_when_a_baked_weight_changes():
    model = gather_model()
    m = onnx_format.from_proto(model)
    tensors = {n: a for n, a, _ in m.tensors()}
    assert sorted(tensors) == ["W", "idx"]
    bs = [batch(x=np.random.default_rng(0).normal(size=(6, 16)).astype(np.float32))]
    lifted = onnx_runner.OnnxEvaluator(m.structure, bs, outputs.parse_bound("max-abs=0"), mode="lifted")
    lifted.reference(tensors)
    rebuilt = onnx_runner.OnnxEvaluator(m.structure, bs, outputs.parse_bound("max-abs=0"), mode="rebuild")
    rebuilt.reference(tensors)
    assert lifted.path == "lifted" and lifted(tensors) == 0
    shuffled = dict(tensors, idx=np.ascontiguousarray(tensors["idx"][::-1]))  # the integer weight, baked in
    assert lifted(shuffled) == rebuilt(shuffled) > 0
    scaled = dict(tensors, W=tensors["W"] * np.float32(2))
    assert lifted(scaled) == pytest.approx(rebuilt(scaled), rel=1e-6) and rebuilt(scaled) > 0


def test_onnxruntime_errors_name_the_file_and_input(cnn):
    structure, tensors, dtypes, _ = cnn
    tiny = calibration.Batch({"x": images(2, 3)}, "cal/tiny.npz")  # 3×3 pixels: the second 3×3 conv has none left
    ev = onnx_runner.OnnxEvaluator(structure, [tiny], outputs.parse_bound("cos=0.9"), dtypes=dtypes)
    with pytest.raises(InvalidInput) as e:
        ev.reference(tensors)
    message = str(e.value)
    assert "cal/tiny.npz" in message and "x float32[2, 3, 3, 3]" in message and "onnxruntime" in message
    assert "\n" not in message


def test_misuse_is_refused(cnn):
    structure, tensors, dtypes, _ = cnn
    ev = onnx_runner.OnnxEvaluator(structure, [batch(x=images(2))], outputs.parse_bound("cos=0.9"), dtypes=dtypes)
    with pytest.raises(InvalidInput, match="reference"):
        ev(tensors)
    ev.reference(tensors)
    with pytest.raises(InvalidInput, match="missing"):
        ev({n: a for n, a in list(tensors.items())[1:]})
    name = next(iter(tensors))
    with pytest.raises(InvalidInput, match=f"tensor '{name}'.*float64"):
        ev(dict(tensors, **{name: tensors[name].astype(np.float64)}))
    with pytest.raises(InvalidInput, match="mode"):
        onnx_runner.OnnxEvaluator(structure, [batch(x=images(2))], ev.bound, mode="fast")
    with pytest.raises(InvalidInput, match="'y' is not an input"):
        onnx_runner.OnnxEvaluator(structure, [batch(y=images(2))], ev.bound)


def test_without_onnxruntime_the_extra_is_named(cnn, monkeypatch):
    structure, *_ = cnn
    real = builtins.__import__

    def no_ort(name, *a, **kw):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(MissingExtra, match="pip install"):
        onnx_runner.OnnxEvaluator(structure, [batch(x=images(2))], outputs.parse_bound("cos=0.9"))


def test_ctc_bound_on_a_sequence_model_run_by_onnxruntime():
    """x [batch, time, 8] → MatMul W → [batch, time, 5] logits, class 0 the blank: the ctc score
    is 0 for the original, below 1 for a nudge, at least 1 once texts change, as final says."""
    rng = np.random.default_rng(7)
    w = rng.normal(size=(8, 5)).astype(np.float32)
    g = H.make_graph([H.make_node("MatMul", ["x", "W"], ["y"])], "g",
                     [H.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 8])],
                     [H.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", 5])],
                     [NH.from_array(w, "W")])
    m = onnx_format.from_proto(H.make_model(g, opset_imports=[H.make_opsetid("", 17)], ir_version=8))
    tensors = {n: a for n, a, _ in m.tensors()}
    bs = [batch(x=rng.normal(size=(4, 12, 8)).astype(np.float32)),
          batch(x=rng.normal(size=(3, 20, 8)).astype(np.float32))]  # batches of other lengths
    ev = onnx_runner.OnnxEvaluator(m.structure, bs, outputs.parse_bound("ctc=0"), mode="rebuild")
    ev.reference(tensors)
    assert ev(tensors) == 0
    nudged = perturbed(tensors, "W", 1e-5)
    assert ev.bound.holds(ev(nudged)) and ev(nudged) == ev.final(nudged)
    swapped = dict(tensors, W=np.ascontiguousarray(tensors["W"][:, ::-1]))  # the blank is now a letter
    score = ev(swapped)
    assert score >= 1 and not ev.bound.holds(score) and score == ev.final(swapped)
    assert outputs.describe(ev.bound, score).startswith("text changed")
