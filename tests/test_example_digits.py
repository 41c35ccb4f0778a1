"""examples/deep_compression_digits.py in its quick mode, as a user runs it: it trains, compresses
and packs both nets, and what it writes loads: the archive into the net (its accuracy the one
printed), the fp32 ONNX model into onnxruntime with the state dict's names."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import nnar  # noqa: E402
import nnar.torch  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "deep_compression_digits.py"


def example():
    spec = importlib.util.spec_from_file_location("deep_compression_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    done = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--out", str(out), "--seed", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_quick_mode_writes_an_archive_that_loads_into_the_net(quick_run, kind):
    out, stdout = quick_run
    ex = example()
    archive = (out / f"{kind}.nnar").read_bytes()
    model = ex.from_archive(kind, archive)  # strict load_state_dict of the decoded weights
    _, _, Xte, yte = ex.data(kind)
    acc = ex.accuracy(model, Xte, yte)
    section = stdout[stdout.index(f"{kind.upper()} (seed 1)"):]
    written = re.search(r"written: (\d+) bytes \(([\d.]+)x smaller than fp32\), test accuracy ([\d.]+)%", section)
    assert written, section[:2000]
    assert int(written.group(1)) == len(archive)
    assert float(written.group(3)) == pytest.approx(acc, abs=0.006)
    assert acc > 80  # a short run, but a net that reads digits
    fp32 = sum(v.numel() * v.element_size() for v in ex.NETS[kind][0]().state_dict().values())
    assert fp32 / len(archive) > 10  # pruned and shared, not merely packed
    for name in dict(model.named_parameters()):
        if name.endswith("weight"):
            info = nnar.open(archive).info(name)
            assert "codebook" in info.describe_pipeline() and not info.lossy, name
    assert "preset int8" in section and "zstd -19" in section and "retrained" in section


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_quick_mode_exports_the_fp32_net_to_onnx(quick_run, kind):
    out, _ = quick_run
    ex = example()
    proto = onnx.load(str(out / f"{kind}.fp32.onnx"))
    names = {i.name for i in proto.graph.initializer}
    assert names == set(ex.NETS[kind][0]().state_dict())
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    _, _, Xte, _ = ex.data(kind)
    session = ort.InferenceSession(str(out / f"{kind}.fp32.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": Xte[:16].numpy()})[0]
    assert logits.shape == (16, 10)
    # the ONNX net is the trained fp32 net: its weights are the initializers, by state dict key
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    model = ex.NETS[kind][0]()
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model.eval()(Xte[:16]).numpy(), rtol=1e-4, atol=1e-4)


def test_quick_mode_draws_the_saturation_curve(quick_run):
    out, _ = quick_run
    png = out / "deep_compression_digits.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
