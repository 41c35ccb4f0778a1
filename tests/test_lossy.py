"""Lossy packing end to end (issue 3): settings → pipelines → archive → the same values back,
with the fidelity report measured against the input and stored in the archive."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nnar
from nnar import config, lossy
from nnar.quant import metrics

from test_cli import run


def weights(shape=(128, 256), seed=0, scale=0.05):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def model(seed=0):
    return {"fc1.weight": weights((128, 256), seed), "fc1.bias": weights((128,), seed + 1),
            "fc2.weight": weights((64, 128), seed + 2), "norm.weight": np.ones(64, np.float32)}


def packed(cfg, m=None):
    m = m or model()
    blob = nnar.pack(m, config=cfg)
    return m, blob, nnar.open(io.BytesIO(blob))


@pytest.mark.parametrize("preset", list(config.PRESETS))
def test_every_preset_round_trips_and_verifies(preset):
    m, blob, a = packed(preset)
    nnar.verify(blob)  # digests are of the decoded (lossy) arrays
    for name, x in m.items():
        info = a.info(name)
        y = a.read(name, verify=True)
        assert y.dtype == x.dtype and y.shape == x.shape
        if preset == "lossless" or x.ndim < 2:  # biases and norms stay exact under every preset
            assert not info.lossy and np.array_equal(x, y)
        else:
            assert info.lossy
            stats = metrics.error_stats(x, y)
            assert info.fidelity["sqnr_db"] == pytest.approx(stats["sqnr_db"])
            assert info.fidelity["rel_l2"] == pytest.approx(stats["rel_l2"])
            assert info.fidelity["sparsity"] == pytest.approx(stats["sparsity"])
    # streaming reads give the same arrays as random access
    streamed = nnar.unpack(blob)
    for name in m:
        assert np.array_equal(streamed[name], a.read(name))


def test_lossy_is_smaller_in_the_expected_order():
    sizes = {p: len(packed(p)[1]) for p in ("lossless", "fp16", "int8", "balanced", "small", "tiny")}
    assert sizes["lossless"] > sizes["fp16"] > sizes["int8"] > sizes["small"] > sizes["tiny"]
    assert sizes["balanced"] < sizes["int8"]  # entropy-coded 8-bit k-means beats plain int8


def test_kmeans_values_lie_in_the_codebook_and_pruned_weights_are_zero():
    x = weights((256, 256), 3)
    m, blob, a = packed({"quant": "kmeans", "bits": 4, "prune": 0.75}, {"w": x})
    y = a.read("w")
    assert np.count_nonzero(y) == round(0.25 * x.size)
    survivors = np.argsort(np.abs(x).reshape(-1), kind="stable")[-round(0.25 * x.size):]
    assert set(np.flatnonzero(y.reshape(-1))) == set(survivors)  # exactly the largest magnitudes survive
    assert len(np.unique(y[y != 0])) <= 16


@pytest.mark.parametrize("target", [15.0, 24.0, 30.0, 36.0])
def test_max_error_with_kmeans_is_entropy_constrained_and_beats_plain_kmeans(target):
    x = (np.random.default_rng(11).laplace(size=(256, 256)) * 0.02).astype(np.float32)
    _, blob, a = packed({"quant": "kmeans", "max_error": target}, {"w": x})
    info = a.info("w")
    assert info.fidelity["sqnr_db"] >= target and "kmeans-ec" in info.fidelity["method"]
    assert info.fidelity["sqnr_db"] < target + 1.0  # just meets it: no rate wasted on accuracy not asked for
    # the smallest plain (MSE-optimal) k-means that meets the target is larger
    for bits in range(1, 9):
        _, plain, b = packed({"quant": "kmeans", "bits": bits}, {"w": x})
        if b.info("w").fidelity["sqnr_db"] >= target:
            assert len(blob) < len(plain)
            break


@pytest.mark.parametrize("target", [15.0, 30.0, 45.0])
def test_max_error_picks_the_smallest_setting_that_meets_it(target):
    quant = "uniform"
    x = weights((128, 256), 5)
    _, _, a = packed({"quant": quant, "max_error": target}, {"w": x})
    info = a.info("w")
    assert info.fidelity["sqnr_db"] >= target and info.fidelity["max_error"] == target
    if info.fidelity["method"] == "fp16":  # beyond the ladder: its top did not meet the target
        _, _, b = packed({"quant": quant, "bits": 8}, {"w": x})
        assert b.info("w").fidelity["sqnr_db"] < target
        return
    bits = int(info.fidelity["method"].split()[1].split("-")[0])
    if bits > (1 if quant == "kmeans" else 2):  # one bit fewer would not have met the target
        _, _, b = packed({"quant": quant, "bits": bits - 1}, {"w": x})
        assert b.info("w").fidelity["sqnr_db"] < target


def test_max_error_beyond_reach_falls_back_to_fp16_then_lossless():
    x = weights((64, 64), 6)
    _, _, a = packed({"quant": "kmeans", "max_error": 60.0}, {"w": x})
    assert a.info("w").fidelity["method"] == "fp16"
    with pytest.warns(lossy.LossyWarning, match="no setting meets SQNR >= 200 dB"):
        _, _, b = packed({"quant": "kmeans", "max_error": 200.0}, {"w": x})
    assert not b.info("w").lossy and np.array_equal(b.read("w"), x)
    with pytest.warns(lossy.LossyWarning, match="pruning 90% alone"):
        _, _, c = packed({"quant": "kmeans", "prune": 0.9, "max_error": 30.0}, {"w": x})
    assert not c.info("w").lossy and np.array_equal(c.read("w"), x)


def test_layer_rules_override_by_glob_later_rules_winning():
    cfg = {"quant": "kmeans", "bits": 4, "layers": [("fc2.*", {"bits": 8}), ("fc1.bias", {"quant": "uniform", "bits": 8}),
                                                     ("fc1.weight", {"lossless": True})]}
    m, _, a = packed(cfg)
    assert not a.info("fc1.weight").lossy and np.array_equal(a.read("fc1.weight"), m["fc1.weight"])
    assert a.info("fc2.weight").fidelity["method"] == "kmeans 8-bit"
    assert a.info("fc1.bias").fidelity["method"] == "uniform 8-bit"  # a rule names it: small or not
    assert not a.info("norm.weight").lossy


def test_global_pruning_uses_one_threshold_across_tensors():
    m = {"a": weights((64, 64), 1, scale=1.0), "b": weights((64, 64), 2, scale=0.1)}
    _, _, a = packed({"prune_global": 0.5}, m)
    ya, yb = a.read("a"), a.read("b")
    total = np.count_nonzero(ya == 0) + np.count_nonzero(yb == 0)
    assert abs(total - 0.5 * (ya.size + yb.size)) <= 1
    assert np.count_nonzero(yb == 0) > np.count_nonzero(ya == 0)  # the small-valued tensor loses more
    kept_min = min(np.abs(ya[ya != 0]).min(), np.abs(yb[yb != 0]).min())
    pruned_max = max(np.abs(m["a"][ya == 0]).max(), np.abs(m["b"][yb == 0]).max())
    assert kept_min >= pruned_max


def test_fp16_overflow_warns_and_uses_bf16():
    x = weights((64, 64), 7)
    x[0, 0] = 1e8  # a BatchNorm running variance would do this
    with pytest.warns(lossy.LossyWarning, match="overflows float16"):
        _, _, a = packed("fp16", {"w": x})
    y = a.read("w")
    assert np.isfinite(y).all() and a.info("w").fidelity["method"] == "bf16"


def test_non_finite_tensors_stay_lossless_with_a_warning():
    x = weights((64, 64), 8)
    x[1, 2] = np.nan
    with pytest.warns(lossy.LossyWarning, match="NaN"):
        _, _, a = packed("balanced", {"w": x})
    assert not a.info("w").lossy
    assert np.array_equal(a.read("w"), x, equal_nan=True)


@pytest.mark.parametrize("dtype", ["float16", "float64", "bfloat16"])
def test_other_float_dtypes_come_back_in_their_own_dtype(dtype):
    import ml_dtypes
    x = weights((64, 64), 9).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    for cfg in ("balanced", "int8", "fp16", "bf16", {"prune": 0.5}):
        _, blob, a = packed(cfg, {"w": x})
        y = a.read("w", verify=True)
        assert y.dtype == (np.uint16 if dtype == "bfloat16" else np.dtype(dtype)) and y.shape == x.shape


def test_pruning_alone_is_otherwise_lossless():
    x = weights((128, 128), 10)
    _, _, a = packed({"prune": 0.6}, {"w": x})
    y = a.read("w")
    kept = y != 0
    assert np.array_equal(y[kept], x[kept]) and abs(kept.mean() - 0.4) < 1e-3


def test_fidelity_is_listed_by_ls_and_reported_by_pack(tmp_path):
    import safetensors.numpy
    src = tmp_path / "m.safetensors"
    safetensors.numpy.save_file(model(), str(src))
    out = tmp_path / "m.nnar"
    r = run("pack", str(src), "-o", str(out), "--quant", "kmeans", "--bits", "4", "--prune", "0.5",
            "--layer", "fc2.*:bits=6")
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode()
    assert "SQNR dB" in err and "prune 50%, kmeans 4-bit" in err and "kmeans 6-bit" in err
    ls = run("ls", str(out))
    assert ls.returncode == 0 and "fidelity" in ls.stdout.decode() and "kmeans 6-bit" in ls.stdout.decode()
    js = json.loads(run("ls", str(out), "--json").stdout)
    fc1 = next(t for t in js["tensors"] if t["name"] == "fc1.weight")
    assert fc1["fidelity"]["method"] == "prune 50%, kmeans 4-bit" and set(fc1["bits_per_weight"]) == {"values", "indices", "codebook"}
    assert js["totals"]["fidelity"]["lossy_tensors"] == 2
    r = run("pack", str(src), "-o", str(tmp_path / "n.nnar"), "--preset", "int8", "--json")
    rep = json.loads(r.stdout)
    assert rep["totals"]["lossy_tensors"] == 2 and all(
        t["fidelity"]["sqnr_db"] > 35 for t in rep["tensors"] if "fidelity" in t)


@pytest.mark.parametrize("args, message, status", [
    (["--bits", "9", "--quant", "kmeans"], "bits", 1),
    (["--quant", "fp16", "--bits", "4"], "--bits 4 has no effect", 2),  # a usage error (tests/test_cli_mistakes.py)
    (["--layer", "nocolon"], "GLOB", 1),
    (["--layer", "x:colour=red"], "colour", 1),
    (["--prune", "0.5", "--prune-threshold", "0.1"], "either", 1),
])
def test_bad_settings_are_one_line_errors(tmp_path, args, message, status):
    import safetensors.numpy
    src = tmp_path / "m.safetensors"
    safetensors.numpy.save_file(model(), str(src))
    r = run("pack", str(src), "-o", str(tmp_path / "o.nnar"), *args)
    assert r.returncode == status and message in r.stderr.decode() and len(r.stderr.decode().strip().splitlines()) == 1
    assert not (tmp_path / "o.nnar").exists()


quant_settings = st.fixed_dictionaries({
    "quant": st.sampled_from([None, *config.QUANTS]),
    "prune": st.one_of(st.none(), st.sampled_from([0.0, 0.3, 0.9, 0.99])),
}).map(lambda d: {**d, "bits": None})


@settings(max_examples=25, deadline=None)
@given(quant_settings, st.integers(0, 2**16), st.sampled_from([(33, 47), (64, 64), (2, 3, 200)]))
def test_any_settings_give_an_archive_that_verifies_and_reports_truthfully(cfg, seed, shape):
    x = weights(shape, seed)
    blob = nnar.pack({"w": x}, config={**cfg, "min_params": 1})
    nnar.verify(blob)
    a = nnar.open(io.BytesIO(blob))
    y = a.read("w")
    info = a.info("w")
    if info.lossy:
        s = metrics.error_stats(x, y)
        assert info.fidelity["sqnr_db"] == pytest.approx(s["sqnr_db"]) or math.isinf(s["sqnr_db"])
    else:
        assert np.array_equal(x, y)


def test_config_parsing():
    glob, changes = config.parse_rule("classifier.*:bits=8,quant=kmeans")
    assert glob == "classifier.*" and changes == {"bits": 8, "quant": "kmeans"}
    assert config.parse_rule("a:b:lossless") == ("a:b", {"lossless": True})
    assert config.parse_rule("x:uniform") == ("x", {"quant": "uniform"})
    assert config.parse_rule("x:int8")[1] == config.PRESETS["int8"]
    cfg = config.build(preset="small", quant="uniform")
    assert cfg.default.quant == "uniform" and cfg.default.bits is None  # the preset's bits were k-means'
    with pytest.raises(nnar.InvalidInput, match="preset"):
        config.build(preset="huge")
    s = config.from_mapping({"quant": "kmeans", "layers": {"fc*": {"bits": 3}}}).settings_for("fc1", (64, 64), True)
    assert s.quant == "kmeans" and s.bits == 3
    assert not config.from_mapping("balanced").settings_for("b", (10,), True).lossy  # 1-D: lossless
    assert config.from_mapping("balanced").settings_for("e", (64, 64), False).lossless  # integers: lossless


def test_an_explicit_lossy_pipeline_records_the_digest_of_what_decodes():
    """ArchiveWriter.write(pipeline=...) with a narrowing stage: the record's digest is of the
    decoded array (FORMAT.md §5.2.4), so the archive verifies (it recorded the input's before)."""
    import io
    from nnar import pipeline as P
    from nnar.archive import ArchiveWriter
    from nnar.codecs.cast import Cast
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    buf = io.BytesIO()
    with ArchiveWriter(buf) as wr:
        wr.write("w", w, pipeline=P.Pipeline(array_codecs=(Cast("float16"),)))
    nnar.verify(buf.getvalue())
    assert np.array_equal(nnar.unpack(buf.getvalue())["w"], w.astype(np.float16).astype(np.float32))


def reference_stats(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """error_stats in one float64 pass, the plain way (its definition)."""
    d = x.astype(np.float64).reshape(-1) - y.astype(np.float64).reshape(-1)
    sig, err = float(np.square(x.astype(np.float64)).sum()), float(np.square(d).sum())
    return {"sig": sig, "err": err, "worst": float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 0.0,
            "sparsity": float(np.sum(y.reshape(-1) == 0)) / y.size if y.size else 0.0}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3 * metrics.CHUNK + 5), st.sampled_from(["float32", "float16", "float64"]), st.integers(0, 99))
def test_error_stats_agree_with_their_definition_and_a_known_signal_changes_nothing(n, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    y = (x + rng.standard_normal(n).astype(np.float32) * 0.01).astype(dtype)
    y[::7] = 0
    y[3::11] = -0.0  # an exact zero too
    s = metrics.error_stats(x, y)
    assert metrics.error_stats(x, y, metrics.powers(x)[0]) == s
    ref = reference_stats(x, y)
    assert metrics.powers(x) == (pytest.approx(ref["sig"], rel=1e-12), 0.0)
    assert metrics.powers(x, y)[1] == pytest.approx(ref["err"], rel=1e-12)
    assert s["max_abs_error"] == ref["worst"]
    assert s["sparsity"] == ref["sparsity"]
    if n:
        assert s["sqnr_db"] == pytest.approx(10 * math.log10(ref["sig"] / ref["err"]), rel=1e-12)
