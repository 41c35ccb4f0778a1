"""Output-aware packing of ONNX models from the command line, run by onnxruntime: a real torch
model exported with one deliberately sensitive layer, calibration inputs in an .npz, held-out
inputs to check that the bound generalizes, and the errors a user meets."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import nnar  # noqa: E402
from nnar.cli import main  # noqa: E402

nn = torch.nn


class Sensitive(nn.Module):
    """A classifier whose logits are dominated by one branch (``sens``), scaled up 20x: per unit
    of weight error, that layer moves the outputs most."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(64, 256)
        self.head = nn.Linear(256, 16)
        self.sens = nn.Linear(64, 32, bias=False)
        self.proj = nn.Linear(32, 16, bias=False)

    def forward(self, x):
        return self.head(torch.relu(self.body(x))) + 20.0 * self.proj(torch.tanh(self.sens(x)))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    m = Sensitive().eval()
    path = tmp_path_factory.mktemp("search") / "sens.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(m, (torch.randn(2, 64),), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return path


def inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 64)).astype(np.float32)


def run(path, x) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def min_cos(a, b) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


@pytest.fixture
def calib(tmp_path) -> Path:
    p = tmp_path / "cal.npz"
    np.savez(p, x=inputs(128, 1))
    return p


def test_cos_bound_holds_on_held_out_inputs_and_keeps_the_sensitive_layer_precise(tmp_path, model_path, calib,
                                                                                   capsys):
    arc, out, plot = tmp_path / "m.nnar", tmp_path / "m.onnx", tmp_path / "curve.png"
    assert main(["pack", str(model_path), "-o", str(arc), "--calibrate", str(calib), "--max-output-error",
                 "cos=0.999", "--max-evals", "300", "--plot", str(plot)]) == 0
    err = capsys.readouterr().err
    assert "output error measured on the archive" in err and "min cos" in err
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["ls", str(arc)]) == 0
    listed = capsys.readouterr().out
    assert "outputs: packed against cos <= 0.001" in listed and "out err" in listed
    assert main(["unpack", str(arc), "-o", str(out)]) == 0
    held = inputs(256, 2)
    ref, got = run(model_path, held), run(out, held)
    assert min_cos(ref, got) >= 0.997  # the bound, measured on calibration, nearly holds on inputs never seen
    assert min_cos(run(model_path, inputs(128, 1)), run(out, inputs(128, 1))) >= 0.999
    with nnar.open(arc) as a:
        f = {n: a.info(n).fidelity for n in a.names() if a.info(n).lossy}
        assert arc.stat().st_size < model_path.stat().st_size / 2.5
    sqnr = {n: v["sqnr_db"] for n, v in f.items()}
    body, head = sqnr["body.weight"], sqnr["head.weight"]
    sens = sensitive_name(model_path)
    assert sens not in sqnr or sqnr[sens] > max(body, head) + 3, (sens, sqnr)


def sensitive_name(model_path) -> str:
    """The exporter names bias-free Linear weights after their MatMul: find it by its shape."""
    with nnar.open(nnar.pack(model_path)) as a:
        return next(n for n in a.names() if a.info(n).shape == (64, 32))


def test_argmax_bound_keeps_every_label(tmp_path, model_path, calib):
    arc, out = tmp_path / "m.nnar", tmp_path / "m.onnx"
    assert main(["pack", str(model_path), "-o", str(arc), "--calibrate", str(calib), "--max-output-error",
                 "argmax=0", "--max-evals", "200", "-q"]) == 0
    assert main(["unpack", str(arc), "-o", str(out)]) == 0
    x = inputs(128, 1)
    assert np.array_equal(run(model_path, x).argmax(-1), run(out, x).argmax(-1))


def test_a_directory_of_batches_and_json_report(tmp_path, model_path, capsys):
    d = tmp_path / "cal"
    d.mkdir()
    for k in range(3):
        np.savez(d / f"b{k}.npz", x=inputs(32, 10 + k))
    arc = tmp_path / "m.nnar"
    assert main(["pack", str(model_path), "-o", str(arc), "--calibrate", str(d), "--max-output-error",
                 "rel-l2=0.02", "--max-evals", "120", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["search"]
    assert report["final_error"] <= 0.02 and report["evaluations"] <= 120
    assert {t["name"] for t in report["tensors"]} == {"body.weight", "head.weight", sensitive_name(model_path)}


@pytest.mark.parametrize("make, flag, match", [
    (lambda p: np.savez(p, y=inputs(8, 0)), "cos=0.99", "'y'"),
    (lambda p: np.savez(p, x=inputs(8, 0).astype(np.float64)), "cos=0.99", "double|float64"),
    (lambda p: np.savez(p, x=inputs(8, 0)[:, :10]), "cos=0.99", "64"),
    (lambda p: np.savez(p, x=inputs(8, 0)[None]), "cos=0.99", "rank|dimensions"),
    (lambda p: p.write_bytes(b"PK\x03\x04 not a zip"), "cos=0.99", "npz|zip"),
    (lambda p: np.savez(p, x=inputs(8, 0)), "cosine=0.9", "cos, rel-l2, max-abs, argmax"),
    (lambda p: np.savez(p, x=inputs(8, 0)), "cos=2", "cos"),
])
def test_bad_calibration_and_bounds_are_one_line_errors(tmp_path, model_path, capsys, make, flag, match):
    cal = tmp_path / "cal.npz"
    make(cal)
    arc = tmp_path / "m.nnar"
    assert main(["pack", str(model_path), "-o", str(arc), "--calibrate", str(cal), "--max-output-error", flag]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnar: error[invalid-input]:") and len(err.splitlines()) == 1
    import re
    assert re.search(match, err), err
    assert not arc.exists()


@pytest.mark.parametrize("args, match", [
    (["--calibrate", "X"], "both"),
    (["--max-output-error", "cos=0.9"], "both"),
    (["--plot", "c.png"], "belong to the output-aware search"),
    (["--calibrate", "X", "--max-output-error", "cos=0.9", "--preset", "int8"], "no preset"),
])
def test_search_flags_that_do_not_fit(tmp_path, model_path, calib, capsys, args, match):
    args = [str(calib) if a == "X" else a for a in args]
    assert main(["pack", str(model_path), "-o", str(tmp_path / "m.nnar"), *args]) == 1
    assert match in capsys.readouterr().err


def test_calibration_needs_an_onnx_model(tmp_path, calib, capsys):
    src = tmp_path / "w.npz"
    np.savez(src, w=np.ones((64, 64), np.float32))
    assert main(["pack", str(src), "-o", str(tmp_path / "m.nnar"), "--calibrate", str(calib),
                 "--max-output-error", "cos=0.9"]) == 1
    assert "expected an ONNX model" in capsys.readouterr().err
