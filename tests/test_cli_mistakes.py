"""Mistakes a newcomer makes at the command line get one line that says what is wrong and what
to do, exit non-zero, and write nothing: flags that would do nothing or contradict the preset
(a usage error, status 2), an archive named like a model, a model given to unpack, a format
named that the content contradicts. The input format is told by content when the name can't."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import nnar
from nnar.cli import main

from safetensors.numpy import save_file


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "m.safetensors"
    save_file({"w": rng.normal(size=(64, 64)).astype(np.float32), "b": np.zeros(64, np.float32)}, str(path))
    return path


def run(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_line(err: str) -> str:
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("flags, says", [
    (["--bits", "4"], "--bits 4 has no effect without --quant kmeans or --quant uniform (no quantizer given)"),
    (["--granularity", "channel"], "--granularity channel has no effect without --quant uniform"),
    (["--preset", "int8", "--init", "linear"], "--init linear has no effect without --quant kmeans (the preset 'int8' uses uniform)"),
    (["--quant", "fp16", "--block", "32"], "--block 32 has no effect without --quant uniform"),
    (["--preset", "lossless", "--prune", "0.5"], "--preset lossless contradicts --prune"),
    (["--preset", "lossless", "--quant", "kmeans", "--bits", "4"], "--preset lossless contradicts --quant, --bits"),
])
def test_flags_that_would_do_nothing_are_usage_errors(tmp_path, model, capsys, flags, says):
    rc, err = run(capsys, "pack", model, "-o", tmp_path / "o.nnar", *flags)
    assert rc == 2
    assert one_line(err).startswith("nnar: usage error: ") and says in err
    assert not (tmp_path / "o.nnar").exists()


@pytest.mark.parametrize("flags", [["--quant", "kmeans", "--bits", "4"], ["--preset", "balanced", "--init", "linear"],
                                   ["--bits", "4", "--layer", "w:quant=kmeans"], ["--max-error", "30", "--bits", "6"],
                                   ["--preset", "int8", "--granularity", "block", "--block", "32"]])
def test_flags_that_take_effect_are_accepted(tmp_path, model, capsys, flags):
    rc, err = run(capsys, "pack", model, "-o", tmp_path / "o.nnar", "-q", *flags)
    assert rc == 0, err
    assert nnar.open(tmp_path / "o.nnar").info("w").lossy


def test_an_archive_named_like_a_model_is_refused_unless_forced(tmp_path, model, capsys):
    out = tmp_path / "x.safetensors"
    rc, err = run(capsys, "pack", model, "-o", out)
    assert rc == 1 and "pack writes an nnar archive, but the extension '.safetensors' says safetensors" in one_line(err)
    assert not out.exists()
    assert run(capsys, "pack", model, "-o", out, "--force", "-q")[0] == 0
    assert nnar.verify(out)


def test_unpack_of_a_model_says_to_use_pack(tmp_path, model, capsys):
    rc, err = run(capsys, "unpack", model, "-o", tmp_path / "o.npz")
    assert rc == 1
    assert f"is a safetensors model, not an nnar archive: to compress it, nnar pack {model} -o m.nnar" in one_line(err)
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_unpack_to_an_archive_name_says_what_unpack_writes(tmp_path, model, capsys):
    nnar.pack(model, tmp_path / "a.nnar")
    rc, err = run(capsys, "unpack", tmp_path / "a.nnar", "-o", tmp_path / "b.nnar")
    assert rc == 1 and "unpack writes a model file" in one_line(err) and "nnar pack" in err
    assert not (tmp_path / "b.nnar").exists()


def test_packing_an_archive_says_it_is_one(tmp_path, model, capsys):
    nnar.pack(model, tmp_path / "a.nnar")
    rc, err = run(capsys, "pack", tmp_path / "a.nnar", "-o", tmp_path / "b.nnar")
    assert rc == 1 and "is already an nnar archive" in one_line(err)


@pytest.mark.parametrize("named", ["torch", "onnx", "npz"])
def test_a_format_the_content_contradicts_names_both(tmp_path, model, capsys, named):
    rc, err = run(capsys, "pack", model, "-o", tmp_path / "o.nnar", "--from", named)
    assert rc == 1 and f"--from {named} says {named}, but its content is safetensors" in one_line(err)


def test_a_wrong_extension_is_caught_by_content(tmp_path, model, capsys):
    wrong = tmp_path / "m.onnx"
    wrong.write_bytes(model.read_bytes())
    rc, err = run(capsys, "pack", wrong, "-o", tmp_path / "o.nnar")
    assert rc == 1 and "the extension '.onnx' says onnx, but its content is safetensors" in one_line(err)


@pytest.mark.parametrize("kind", ["npz", "safetensors", "torch", "onnx"])
def test_stdin_and_nameless_files_are_told_by_content(tmp_path, kind):
    """``nnar pack - -o x.nnar`` with no --from: the content says the format."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 4)).astype(np.float32)
    path = tmp_path / "model"
    if kind == "npz":
        np.savez(path.with_suffix(".npz"), w=w)
        path.with_suffix(".npz").rename(path)
    elif kind == "safetensors":
        save_file({"w": w}, str(path))
    elif kind == "torch":
        torch = pytest.importorskip("torch")
        torch.save({"w": torch.from_numpy(w)}, path)
    else:
        onnx = pytest.importorskip("onnx")
        from onnx import helper, numpy_helper
        g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(w, "w")])
        onnx.save(helper.make_model(g), str(path))
    done = subprocess.run([sys.executable, "-m", "nnar", "pack", "-", "-o", str(tmp_path / "o.nnar")],
                          stdin=path.open("rb"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(nnar.open(tmp_path / "o.nnar").read("w"), w)
    assert nnar.open(tmp_path / "o.nnar").source_format == kind


@pytest.mark.parametrize("cfg, says", [
    ({"preset": "lossless", "prune": 0.5}, "preset 'lossless' contradicts prune"),
    ({"preset": "lossless", "prune_global": 0.5}, "preset 'lossless' contradicts prune_global"),
    ({"bits": 4}, "bits=4 has no effect"),
    ({"quant": "fp16", "bits": 4}, "bits=4 has no effect"),
])
def test_the_api_refuses_the_same_contradictions(model, cfg, says):
    with pytest.raises(nnar.InvalidInput, match=re.escape(says)):
        nnar.pack(model, config=cfg)


def test_bits_given_to_a_rule_quantizer_is_accepted(model):
    data = nnar.pack(model, config={"bits": 4, "layers": {"w": {"quant": "kmeans"}}})
    assert "4-bit" in nnar.open(io.BytesIO(data)).info("w").fidelity["method"]
