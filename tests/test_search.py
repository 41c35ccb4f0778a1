"""Output-aware packing through the Python API (nnar.pack(evaluate=, max_output_error=)): the
bound holds on the archive that is written, sensitive tensors are kept precise, the proof
refuses what misses it, and bad arguments get clear errors.

The model here is a small numpy network evaluated for real (the ONNX path, run by
onnxruntime, is in test_search_cli.py)."""

from __future__ import annotations

import numpy as np
import pytest

import nnar
from nnar.errors import InvalidInput, OutputBoundNotMet

RNG = np.random.default_rng(7)
X_CAL = RNG.normal(size=(96, 64)).astype(np.float32)
X_HELD = RNG.normal(size=(96, 64)).astype(np.float32)


def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "body.weight": (rng.normal(size=(64, 256)) * 0.12).astype(np.float32),
        "body.bias": (rng.normal(size=256) * 0.01).astype(np.float32),
        "head.weight": (rng.normal(size=(256, 16)) * 0.06).astype(np.float32),
        # the sensitive layer: its branch is scaled up 20x and dominates the output
        "sens.weight": (rng.normal(size=(64, 32)) * 0.1).astype(np.float32),
        "proj.weight": (rng.normal(size=(32, 16)) * 0.2).astype(np.float32),
    }


def forward(t, x):
    h = np.maximum(x @ t["body.weight"] + t["body.bias"], 0)
    return h @ t["head.weight"] + 20.0 * np.tanh(x @ t["sens.weight"]) @ t["proj.weight"]


W = weights()
REF_CAL, REF_HELD = forward(W, X_CAL), forward(W, X_HELD)


def cos_error(y, ref) -> float:
    c = (y * ref).sum(1) / np.linalg.norm(y, axis=1) / np.linalg.norm(ref, axis=1)
    return float(1.0 - c.min())


def evaluate(t) -> float:
    return cos_error(forward(t, X_CAL), REF_CAL)


def test_the_bound_holds_on_the_written_archive_and_sensitive_layers_stay_precise(tmp_path):
    dst = tmp_path / "m.nnar"
    bound = 2e-4
    res = nnar.pack(W, dst, evaluate=evaluate, max_output_error=bound, max_evals=200)
    r = res.search
    decoded = nnar.unpack(dst)
    assert evaluate(decoded) <= bound
    assert r.final_error == pytest.approx(evaluate(decoded))
    assert cos_error(forward(decoded, X_HELD), REF_HELD) <= 3 * bound  # held-out inputs: same scale of error
    assert r.evaluations <= 200 and r.archive_bytes == dst.stat().st_size
    by = {t.name: t for t in r.tensors}
    assert set(by) == {"body.weight", "head.weight", "sens.weight"}  # 1-D and small tensors stay lossless
    assert np.array_equal(decoded["body.bias"], W["body.bias"]) and np.array_equal(decoded["proj.weight"],
                                                                                    W["proj.weight"])
    # per unit of weight error the sensitive layer moves the output most: it gets the most precise setting
    assert by["sens.weight"].sqnr_db > max(by["body.weight"].sqnr_db, by["head.weight"].sqnr_db) + 3
    assert by["body.weight"].bytes < by["body.weight"].lossless_bytes / 3
    lossless = len(nnar.pack(W))
    assert r.archive_bytes < lossless / 2
    with nnar.open(dst) as a:
        f = a.info("body.weight").fidelity
        assert f["output_metric"] == "evaluate" and f["output_error"] == pytest.approx(by["body.weight"].error_alone)
        assert a.metadata["nnar.output_bound"] == "evaluate <= 0.0002"
        assert float(a.metadata["nnar.output_error"]) <= bound


def test_a_looser_bound_gives_a_smaller_archive():
    sizes = [len(nnar.pack(W, evaluate=evaluate, max_output_error=b, max_evals=150)) for b in (1e-5, 1e-3, 3e-2)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_evaluate_sees_every_tensor_read_only_with_aliases():
    seen = []

    def spy(t):
        seen.append(set(t))
        with pytest.raises(ValueError):
            t["body.weight"][0, 0] = 1.0
        return evaluate(t)
    nnar.pack(W, evaluate=spy, max_output_error=1e-3, max_evals=20)
    assert seen and all(s == set(W) for s in seen)


def test_the_evaluation_budget_is_kept(tmp_path):
    calls = []

    def counted(t):
        calls.append(1)
        return evaluate(t)
    res = nnar.pack(W, tmp_path / "m.nnar", evaluate=counted, max_output_error=1e-3, max_evals=12)
    assert len(calls) == res.search.evaluations <= 12
    assert evaluate(nnar.unpack(tmp_path / "m.nnar")) <= 1e-3


def test_the_proof_refuses_an_archive_that_misses_the_bound(tmp_path):
    """An evaluation that changes its mind after the search (nondeterministic, or data that
    moved) fails the proof on the written archive: nothing is written, nothing is replaced."""
    proof_call = nnar.pack(W, evaluate=evaluate, max_output_error=1e-3, max_evals=40).search.evaluations
    calls = []

    def fickle(t):  # the search is deterministic: the same calls, and the last one is the proof
        calls.append(1)
        return evaluate(t) if len(calls) < proof_call else 1.0
    dst = tmp_path / "m.nnar"
    dst.write_bytes(b"old")
    with pytest.raises(OutputBoundNotMet, match="above the bound"):
        nnar.pack(W, dst, evaluate=fickle, max_output_error=1e-3, max_evals=40, force=True)
    assert dst.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.nnar"]


@pytest.mark.parametrize("kwargs, match", [
    ({"evaluate": evaluate}, "together"),
    ({"max_output_error": 0.1}, "together"),
    ({"evaluate": "not callable", "max_output_error": 0.1}, "callable"),
    ({"evaluate": evaluate, "max_output_error": -1}, "number >= 0"),
    ({"evaluate": evaluate, "max_output_error": 0.1, "max_evals": 2}, "max_evals"),
    ({"evaluate": evaluate, "max_output_error": 0.1, "config": "int8"}, "no preset"),
    ({"evaluate": lambda t: "x", "max_output_error": 0.1}, "expected a number"),
    ({"evaluate": lambda t: 0.5, "max_output_error": 0.1}, "original weights"),
    ({"calibrate": "x.npz", "max_output_error": "cos=0.9"}, "ONNX"),
])
def test_bad_arguments_are_clear(tmp_path, kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        nnar.pack(W, tmp_path / "m.nnar", **kwargs)
    assert not (tmp_path / "m.nnar").exists()


def test_rules_keep_tensors_exact_or_fix_them():
    res = nnar.pack(W, evaluate=evaluate, max_output_error=1e-3, max_evals=80,
                    config={"layers": {"sens.*": {"lossless": True}, "head.*": {"quant": "fp16"}}})
    assert [t.name for t in res.search.tensors] == ["body.weight"]
    with nnar.open(bytes(res)) as a:
        assert not a.info("sens.weight").lossy
        assert a.info("head.weight").fidelity["method"] == "fp16"


def test_a_menu_limits_the_options():
    res = nnar.pack(W, evaluate=evaluate, max_output_error=1e-2, max_evals=60,
                    menu=[{"quant": "uniform", "bits": 8, "granularity": "channel"}, {"quant": "fp16"}])
    assert {t.setting for t in res.search.tensors} <= {"uniform 8-bit per channel", "fp16", "lossless"}
    with pytest.raises(InvalidInput, match="menu item"):
        nnar.pack(W, evaluate=evaluate, max_output_error=1e-2, menu=[{}])


def test_report_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from nnar.search import report
    res = nnar.pack(W, tmp_path / "m.nnar", evaluate=evaluate, max_output_error=1e-3, max_evals=100)
    text = report.text(res.search, None, sum(a.nbytes for a in W.values()))
    assert "body.weight" in text and "output error measured on the archive" in text
    report.plot(res.search, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.search.to_json()["final_error"] == res.search.final_error
