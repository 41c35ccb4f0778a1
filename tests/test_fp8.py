"""float8_e4m3fn and float8_e5m2 (FORMAT.md §5.2.2, since 1.4): every bit pattern round-trips
bit for bit through the archive and through each model format (safetensors, PyTorch, ONNX,
.npz), and ``nnar.cast`` narrows to them as torch does, refusing what float8 cannot hold
(spec/codecs/cast.md, "float8")."""

from __future__ import annotations

import io
import re
import sys
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import nnar
from nnar import dtypes
from nnar import pipeline as P
from nnar.archive import ArchiveWriter
from nnar.codecs.abc import TensorSpec
from nnar.codecs.cast import FLOAT8_PAIRS, Cast, convert, to_float8
from nnar.codecs.raw import Raw
from nnar.codecs.zstd import Zstd

import strategies as S
from test_spec_tables import table_after

ROOT = Path(__file__).resolve().parents[1]
FP8 = dtypes.FLOAT8_DTYPES
ALL = np.arange(256, dtype=np.uint8)
#: the largest finite value and the bound beyond which nnar.cast refuses (spec/codecs/cast.md)
RANGE = {"float8_e4m3fn": (448.0, 464.0), "float8_e5m2": (57344.0, 61440.0)}
ST = {"float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
ONNX = {"float8_e4m3fn": 17, "float8_e5m2": 19}  # TensorProto.FLOAT8E4M3FN, FLOAT8E5M2


def torch_dtype(name):
    torch = pytest.importorskip("torch")
    return getattr(torch, name)


def same_bits(found, expected) -> bool:
    found, expected = np.asarray(found), np.asarray(expected)
    return found.shape == expected.shape and found.dtype.itemsize == expected.dtype.itemsize and \
        np.array_equal(found.view(f"u{found.dtype.itemsize}"), expected.view(f"u{expected.dtype.itemsize}"))


# -- the definition ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FP8)
def test_values_are_the_spec_definition_and_ml_dtypes(name):
    values = dtypes.float8_values(name)
    np.testing.assert_array_equal(values, ALL.view(getattr(ml_dtypes, name)).astype(np.float64))
    finite = values[np.isfinite(values)]
    assert finite.max() == RANGE[name][0] and finite.min() == -RANGE[name][0]
    nans = set(np.flatnonzero(np.isnan(values)).tolist())
    if name == "float8_e4m3fn":
        assert nans == {0x7F, 0xFF} and not np.isinf(values).any()  # S.1111.111 only, no infinities
        assert values[0x01] == 2.0 ** -9 and values[0x7E] == 448
    else:
        assert nans == {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF}
        assert values[0x7C] == np.inf and values[0xFC] == -np.inf and values[0x01] == 2.0 ** -16
        # the upper byte of a binary16, NaNs included
        f16 = (ALL.astype(np.uint16) << 8).view(np.float16).astype(np.float64)
        np.testing.assert_array_equal(values, f16)
    assert values[0x80] == 0 and np.signbit(values[0x80])


def test_spec_dtype_table_matches_the_code():
    rows = {re.findall(r"`(\w+)`", r[0])[0]: r for r in table_after("#### 5.2.2 Dtypes")}
    for name in FP8:
        assert name in rows and "since 1.4" in rows[name][0]
        assert int(rows[name][2]) == dtypes.itemsize(name) == 1
        assert dtypes.storage_dtype(name) == np.dtype("u1")
    assert set(FP8) <= set(dtypes.DTYPE_NAMES) and not set(FP8) & set(dtypes.FLOAT_DTYPES)


# -- through the archive -------------------------------------------------------------------------


@pytest.mark.parametrize("name", FP8)
def test_all_256_patterns_round_trip_through_the_archive(name):
    bits = ALL.reshape(16, 16)
    buf = io.BytesIO()
    with ArchiveWriter(buf) as w:
        w.write("bits", bits, dtype=name)  # uint8 bit patterns marked as float8
        w.write("ml", bits.view(getattr(ml_dtypes, name)))  # an ml_dtypes array: its own name
        w.write("signed", bits.view(np.int8), dtype=name)
        w.write("z", np.tile(ALL, 64), dtype=name)  # large enough for the planner to compress
    data = buf.getvalue()
    assert len(nnar.verify(data)) == 4
    got = nnar.unpack(data)
    for key in ("bits", "ml", "signed"):
        assert got[key].dtype == np.uint8 and np.array_equal(got[key], bits)
    assert np.array_equal(got["z"], np.tile(ALL, 64))
    with nnar.open(data) as a:
        assert {i.dtype for i in a.infos()} == {name}
        assert a.info("z").stored_bytes < 16384 // 4


def test_only_byte_arrays_can_be_marked_float8():
    with ArchiveWriter(io.BytesIO()) as w:
        with pytest.raises(nnar.InvalidInput, match="uint8 ones float8"):
            w.write("x", np.zeros(3, np.uint16), dtype="float8_e4m3fn")
        with pytest.raises(nnar.InvalidInput):
            w.write("y", np.zeros(3, np.float32), dtype="float8_e5m2")


@given(dtype=st.sampled_from(FP8), shape=S.shapes(),
       pipeline=st.sampled_from([None, P.Pipeline(), P.Pipeline(array_bytes=Raw(), stream_chains=((Zstd(3),),))]),
       data=st.data())
def test_property_round_trip(dtype, shape, pipeline, data):
    bits = data.draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 255)))
    buf = io.BytesIO()
    with ArchiveWriter(buf) as w:
        w.write("t", bits, dtype=dtype, pipeline=pipeline)
    with nnar.open(buf.getvalue()) as a:
        assert a.info("t").dtype == dtype
        got = a.read("t", verify=True)
    assert got.dtype == np.uint8 and got.shape == bits.shape and np.array_equal(got, bits)


def test_planner_compresses_fp8_like_zstd_on_its_bytes():
    """A realistic FP8 tensor (a normal weight matrix scaled to e4m3fn's range, cast by torch):
    stored within 1% of zstd -3 on the raw bytes, and near its order-0 entropy."""
    torch = pytest.importorskip("torch")
    import zstandard
    g = torch.Generator().manual_seed(0)
    w = torch.randn(512, 384, generator=g) * 0.04
    bits = (w * (448 / w.abs().max())).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    buf = io.BytesIO()
    with ArchiveWriter(buf) as wr:
        info = wr.write("w", bits, dtype="float8_e4m3fn")
    zstd3 = len(zstandard.ZstdCompressor(level=3).compress(bits.tobytes()))
    p = np.bincount(bits.reshape(-1), minlength=256) / bits.size
    entropy = -(p[p > 0] * np.log2(p[p > 0])).sum() / 8 * bits.size
    assert info.stored_bytes <= 1.01 * zstd3 and info.stored_bytes < 0.9 * bits.size
    assert info.stored_bytes <= 1.03 * entropy


# -- the model formats ---------------------------------------------------------------------------


def _tensors():
    return {"e4m3fn": (ALL.reshape(16, 16), "float8_e4m3fn"), "e5m2": (ALL.copy(), "float8_e5m2"),
            "e5m2.scalar": (np.array(0x7E, np.uint8), "float8_e5m2"), "w": (np.arange(6, dtype=np.float32), "float32")}


def test_safetensors_round_trip_is_byte_identical(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file
    sd = {k: torch.from_numpy(np.array(a)).view(torch_dtype(dt)) if dt in FP8 else torch.from_numpy(a)
          for k, (a, dt) in _tensors().items()}
    src, arc, out = tmp_path / "m.safetensors", tmp_path / "m.nnar", tmp_path / "out.safetensors"
    save_file(sd, src)
    infos = nnar.pack(src, arc)
    assert {i.name: i.dtype for i in infos} == {k: dt for k, (_, dt) in _tensors().items()}
    nnar.unpack(arc, out)
    assert out.read_bytes() == src.read_bytes()
    back = load_file(out)
    for k, (a, dt) in _tensors().items():
        assert back[k].dtype == (torch_dtype(dt) if dt in FP8 else torch.float32)
        assert back[k].shape == a.shape
        assert back[k].view(torch.uint8).numpy().tobytes() == a.tobytes()


def test_safetensors_header_dtype_names(tmp_path):
    from helpers import parse_safetensors
    buf = io.BytesIO()
    with ArchiveWriter(buf, source_format="safetensors") as w:
        for k, (a, dt) in _tensors().items():
            w.write(k, a, dtype=dt)
    out = tmp_path / "o.safetensors"
    nnar.unpack(buf.getvalue(), out)
    header, entries = parse_safetensors(out)
    assert entries["e4m3fn"][0] == "F8_E4M3" and entries["e5m2"][0] == "F8_E5M2"
    assert entries["e4m3fn"][2] == ALL.tobytes()


def test_torch_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {k: torch.from_numpy(np.array(a)).view(torch_dtype(dt)) if dt in FP8 else torch.from_numpy(a)
          for k, (a, dt) in _tensors().items()}
    sd["e4m3fn.t"] = sd["e4m3fn"].t()  # a non-contiguous view: its logical values
    src, arc, out = tmp_path / "m.pt", tmp_path / "m.nnar", tmp_path / "out.pt"
    torch.save(sd, src)
    nnar.pack(src, arc)
    nnar.unpack(arc, out)
    back = torch.load(out, weights_only=True)
    assert list(back) == list(sd)
    for k, t in sd.items():
        assert back[k].dtype == t.dtype and back[k].shape == t.shape
        assert torch.equal(back[k].view(torch.uint8), t.contiguous().view(torch.uint8))
    # from a state dict in memory, and back
    arc2 = tmp_path / "sd.nnar"
    nnar.pack(sd, arc2)
    with nnar.open(arc2) as a:
        assert a.info("e5m2").dtype == "float8_e5m2"


def test_torch_other_float8_kinds_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(nnar.UnsupportedDtype, match="float8_e5m2fnuz"):
        nnar.pack({"w": torch.zeros(2).to(torch.float8_e5m2fnuz)}, io.BytesIO())


def _onnx_model(raw: bool):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def init(name, dt):
        t = TensorProto(name=name, data_type=ONNX[dt], dims=[16, 16])
        if raw:
            t.raw_data = ALL.tobytes()
        else:
            t.int32_data.extend(ALL.tolist())  # one bit pattern per int32, as onnx writes them
        return t

    inits = [init("a", "float8_e4m3fn"), init("b", "float8_e5m2")]
    nodes = [helper.make_node("Cast", [n], [n + "f"], to=TensorProto.FLOAT) for n in ("a", "b")]
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info(n + "f", TensorProto.FLOAT, [16, 16])
                                               for n in ("a", "b")], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "int32_data"])
def test_onnx_round_trip(tmp_path, raw):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    model = _onnx_model(raw)
    src, arc, out = tmp_path / "m.onnx", tmp_path / "m.nnar", tmp_path / "out.onnx"
    onnx.save(model, src)
    assert {i.name: i.dtype for i in nnar.pack(src, arc)} == {"a": "float8_e4m3fn", "b": "float8_e5m2"}
    nnar.unpack(arc, out)
    if raw:
        assert out.read_bytes() == src.read_bytes()
    back = onnx.load(out)
    onnx.checker.check_model(back)
    for t in back.graph.initializer:
        assert t.data_type == ONNX["float8_e4m3fn" if t.name == "a" else "float8_e5m2"]
        assert numpy_helper.to_array(t).view(np.uint8).tobytes() == ALL.tobytes()
    ort = pytest.importorskip("onnxruntime")
    try:
        session = ort.InferenceSession(str(out))
    except Exception as e:  # noqa: BLE001  a runtime without float8 kernels
        pytest.skip(f"onnxruntime cannot run float8 Cast: {str(e)[:80]}")
    a, b = session.run(None, {})
    np.testing.assert_array_equal(a.reshape(-1), dtypes.float8_values("float8_e4m3fn").astype(np.float32))
    np.testing.assert_array_equal(b.reshape(-1), dtypes.float8_values("float8_e5m2").astype(np.float32))


def test_npz_records_the_dtype_in_a_structured_field(tmp_path):
    buf = io.BytesIO()
    with ArchiveWriter(buf) as w:
        for k, (a, dt) in _tensors().items():
            w.write(k, a, dtype=dt)
    out, arc2, out2 = tmp_path / "o.npz", tmp_path / "again.nnar", tmp_path / "again.npz"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nnar.unpack(buf.getvalue(), out)
    assert sum("has no float8" in str(c.message) for c in caught) == 3
    assert any(re.match(r"e4m3fn: \.npz has no float8_e4m3fn; written as its bit patterns", str(c.message))
               for c in caught)
    with np.load(out, allow_pickle=False) as z:  # plain numpy reads it, without pickle
        assert z["e4m3fn"].dtype == np.dtype([("float8_e4m3fn", "u1")])
        assert np.array_equal(z["e4m3fn"]["float8_e4m3fn"], ALL.reshape(16, 16))
        assert z["e5m2.scalar"].shape == () and z["e5m2.scalar"]["float8_e5m2"] == 0x7E
        assert same_bits(z["e5m2"]["float8_e5m2"].view(ml_dtypes.float8_e5m2), ALL.view(ml_dtypes.float8_e5m2))
    infos = nnar.pack(out, arc2)  # and nnar reads it back as float8
    assert {i.name: i.dtype for i in infos} == {k: dt for k, (_, dt) in _tensors().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nnar.unpack(arc2, out2)
    assert out2.read_bytes() == out.read_bytes()


def test_npz_void_bytes_are_refused(tmp_path):
    path = tmp_path / "v.npz"
    np.savez(path, x=ALL.view(ml_dtypes.float8_e4m3fn))  # numpy stores it as |V1: its kind is lost
    with pytest.raises(nnar.InvalidInput, match="V1"):
        nnar.pack(path, tmp_path / "v.nnar")


# -- nnar.cast to float8 -------------------------------------------------------------------------


def _refused(values: np.ndarray, dst: str) -> np.ndarray:
    a = np.abs(values.astype(np.float64))
    top, mid = RANGE[dst]
    over = (a > mid) | (a == mid) if dst == "float8_e5m2" else (a > mid)
    return over & ~np.isinf(a) | (np.isinf(a) & (dst == "float8_e4m3fn"))


def _torch_cast(values: np.ndarray, src: str, dst: str) -> np.ndarray:
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(values.view(np.int16).copy()).view(torch.bfloat16) if src == "bfloat16" else \
        torch.from_numpy(values.copy())
    return t.to(torch_dtype(dst)).view(torch.uint8).numpy()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dst", FP8)
@pytest.mark.parametrize("src", ["float16", "bfloat16"])
def test_every_16_bit_input_matches_torch(src, dst):
    bits = np.arange(65536, dtype=np.uint16)
    values = bits.view(np.float16) if src == "float16" else dtypes.bfloat16_to_float32(bits)
    refused = _refused(values, dst)
    inputs = bits.view(np.float16) if src == "float16" else bits
    ok = inputs[~refused]
    assert np.array_equal(to_float8(ok, src, dst), _torch_cast(ok, src, dst))
    assert refused.sum() == {("float16", "float8_e4m3fn"): 14720, ("float16", "float8_e5m2"): 256,
                             ("bfloat16", "float8_e4m3fn"): 30512, ("bfloat16", "float8_e5m2"): 28704}[src, dst]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dst", FP8)
def test_random_float32_matches_torch(dst):
    rng = np.random.default_rng(16)
    patterns = rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32)
    scales = rng.choice([1e-4, 1e-3, 1e-2, 0.1, 1, 30, 300, 3000, 50000], 1 << 20)
    near = (rng.standard_normal(1 << 20) * scales).astype(np.float32)
    # ties and their neighbours: every float8 midpoint, and one float32 step either side
    mids = np.unique(np.abs(dtypes.float8_values(dst)[np.isfinite(dtypes.float8_values(dst))]))
    mids = ((mids[1:] + mids[:-1]) / 2).astype(np.float32)
    ties = np.concatenate([mids, np.nextafter(mids, 0), np.nextafter(mids, np.inf)])
    values = np.concatenate([patterns, near, ties, -ties])
    ok = values[~_refused(values, dst)]
    assert np.array_equal(to_float8(ok, "float32", dst), _torch_cast(ok, "float32", dst))


@pytest.mark.parametrize("dst", FP8)
def test_nan_sign_zero_and_subnormal_rules(dst):
    nans = np.array([0x7FC12345, 0xFFC00000, 0x7F800001, 0xFF800001], np.uint32).view(np.float32)
    assert to_float8(nans, "float32", dst).tolist() == [0x7F, 0xFF, 0x7F, 0xFF]
    tiny = np.array([0.0, -0.0, -1e-30, 1e-30], np.float32)
    assert to_float8(tiny, "float32", dst).tolist() == [0x00, 0x80, 0x80, 0x00]
    smallest = 2.0 ** (-9 if dst == "float8_e4m3fn" else -16)
    x = np.array([smallest / 2, smallest / 2 * (1 + 2 ** -20), smallest, 1.5 * smallest], np.float32)
    assert to_float8(x, "float32", dst).tolist() == [0x00, 0x01, 0x01, 0x02]  # 1.5: a tie to the even 0x02
    if dst == "float8_e5m2":
        assert to_float8(np.array([np.inf, -np.inf], np.float32), "float32", dst).tolist() == [0x7C, 0xFC]


@pytest.mark.parametrize("dst, value", [("float8_e4m3fn", 464.25), ("float8_e4m3fn", -1e6), ("float8_e4m3fn", np.inf),
                                        ("float8_e5m2", 61440.0), ("float8_e5m2", -1e38)])
def test_out_of_range_is_refused_with_the_value_and_place(dst, value):
    x = np.array([1.0, 2.0, value], np.float32)
    found = re.escape(repr(float(np.float32(value))))
    with pytest.raises(nnar.InvalidInput, match=rf"nnar.cast to {dst}: expected .* found {found} at element 2"):
        Cast(dst).encode(x, TensorSpec("float32", x.shape))
    # what rounding still reaches is accepted
    top, mid = RANGE[dst]
    edge = np.array([mid if dst == "float8_e4m3fn" else np.nextafter(np.float32(mid), 0), -top], np.float32)
    assert Cast(dst).encode(edge, TensorSpec("float32", edge.shape))[0].tolist() == \
        ([0x7E, 0xFE] if dst == "float8_e4m3fn" else [0x7B, 0xFB])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("src, dst", sorted(FLOAT8_PAIRS))
def test_decoding_widens_exactly(src, dst):
    codes = ALL.reshape(16, 16)
    wide = Cast(dst).decode(codes, TensorSpec(src, codes.shape), {})
    assert wide.dtype == dtypes.storage_dtype(src) and wide.shape == (16, 16)
    as_f64 = (dtypes.bfloat16_to_float32(wide) if src == "bfloat16" else wide).astype(np.float64).reshape(-1)
    values = dtypes.float8_values(dst)
    finite = ~np.isnan(values)
    np.testing.assert_array_equal(as_f64[finite], values[finite])
    # NaNs: the sign and trailing significand, followed by zeros (step 3)
    width, mant = {"float32": (32, 23), "float16": (16, 10), "bfloat16": (16, 7)}[src]
    m8 = 3 if dst == "float8_e4m3fn" else 2
    u = wide.reshape(-1).view(f"u{width // 8}").astype(np.int64)
    for code in np.flatnonzero(~finite):
        expect = (code >> 7) << (width - 1) | ((1 << (width - 1 - mant)) - 1) << mant | (code & ((1 << m8) - 1)) << (mant - m8)
        assert u[code] == expect, hex(code)
    # narrowing what it widened gives every byte back, but a NaN becomes the all-ones NaN of its
    # sign (step 3 of the float8 section: float8_e5m2 0x7D and 0x7E come back 0x7F)
    again = np.where(np.isnan(values), (ALL & 0x80) | 0x7F, ALL).reshape(16, 16)
    assert np.array_equal(convert(wide, src, dst), again)


def test_float8_pairs_and_config():
    assert FLOAT8_PAIRS == {(a, b) for a in ("float32", "float16", "bfloat16") for b in FP8}
    for dst in FP8:
        assert Cast.from_config({"dtype": dst}).get_config() == {"dtype": dst}
        assert Cast(dst).encoded_spec(TensorSpec("float32", (2, 3)), {}) == TensorSpec(dst, (2, 3))
        for src in ("float64", "float8_e4m3fn", "float8_e5m2", "int8", "uint8"):
            with pytest.raises(nnar.CodecDataError):
                Cast(dst).encoded_spec(TensorSpec(src, (2,)), {})
    for src in FP8:  # a float8 tensor is not widened by nnar.cast: it is stored as it is
        with pytest.raises(nnar.CodecDataError):
            Cast("float32").encoded_spec(TensorSpec(src, (2,)), {})


@pytest.mark.parametrize("dst", FP8)
def test_float8_choice_records_fidelity_and_verifies(dst):
    from nnar import lossy
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 48)) * 20).astype(np.float32)
    buf = io.BytesIO()
    with ArchiveWriter(buf) as aw:
        aw.write("w", w, choice=lossy.float8_choice(w, TensorSpec("float32", w.shape), dst))
    nnar.verify(buf.getvalue())
    with nnar.open(buf.getvalue()) as a:
        info = a.info("w")
        assert info.dtype == "float32" and info.fidelity["method"] == dst and 15 < info.fidelity["sqnr_db"] < 40
        assert [s["codec"] for s in info.pipeline] == ["nnar.cast", "nnar.raw"]
        got = a.read("w")
    expect = dtypes.float8_values(dst)[to_float8(w, "float32", dst)].astype(np.float32)
    assert np.array_equal(got, expect)
    with pytest.raises(nnar.InvalidInput, match="nnar.cast"):
        lossy.float8_choice(w * 1e4, TensorSpec("float32", w.shape), dst)


# -- the vectors ---------------------------------------------------------------------------------


def _vectors() -> dict:
    sys.path.insert(0, str(ROOT / "tools"))
    import make_vectors
    import vectors_fp8
    return vectors_fp8.valid_vectors_fp8(make_vectors)


def test_vectors_decode_to_their_expected_tensors():
    vectors = _vectors()
    assert set(vectors) == {"dtypes-float8", "cast-float8"}
    for name, (data, tensors, md) in vectors.items():
        assert data[10:12] == b"\x04\x00"  # format_minor 4
        infos = nnar.verify(data)
        assert [i.name for i in infos] == list(tensors)
        got = nnar.unpack(data)
        with nnar.open(data) as a:
            assert a.metadata == md
            for tname, (expected, dt) in tensors.items():
                assert a.info(tname).dtype == dt
                assert got[tname].dtype == dtypes.storage_dtype(dt)
                assert same_bits(got[tname], np.asarray(expected)), (name, tname)
                assert same_bits(a.read(tname, verify=True), np.asarray(expected))
    data, tensors, _ = vectors["dtypes-float8"]
    assert np.array_equal(tensors["e4m3fn.all"][0].reshape(-1), ALL) and tensors["e4m3fn.all"][1] == "float8_e4m3fn"
    assert np.array_equal(tensors["e5m2.all"][0], ALL) and tensors["e5m2.all"][1] == "float8_e5m2"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cast_vector_is_torchs_conversion_widened():
    """The cast vector's expected values, from torch: its inputs narrowed by ``.to(float8)``,
    widened exactly (NaNs compared as NaNs of the same sign: torch quiets them when it widens,
    the spec keeps their bits)."""
    torch = pytest.importorskip("torch")
    import vectors_fp8
    data, tensors, _ = _vectors()["cast-float8"]
    inputs = vectors_fp8.cast_inputs()
    assert list(inputs) == list(tensors)
    with nnar.open(data) as a:
        for tname, (array, src, dst, _) in inputs.items():
            assert a.info(tname).dtype == src and tensors[tname][1] == src
            stored = _torch_cast(array, src, dst)
            got = a.read(tname)
            f = dtypes.bfloat16_to_float32(got) if src == "bfloat16" else got.astype(np.float32)
            want = torch.from_numpy(stored).view(torch_dtype(dst)).float().numpy()
            assert np.array_equal(np.isnan(f), np.isnan(want))
            assert np.array_equal(np.signbit(f), np.signbit(want))
            assert np.array_equal(f[~np.isnan(f)], want[~np.isnan(want)])


@pytest.mark.parametrize("dst, opset", [("float8_e4m3fn", 19), ("float8_e5m2", 21), ("float8_e4m3fn", 17)])
def test_onnx_keep_quantized_writes_a_float8_initializer(tmp_path, dst, opset):
    """A weight narrowed to float8 stays float8 in the model, widened by Cast (opset 19 on);
    below opset 19 it is written widened. The outputs equal those of the plain unpack."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    from nnar import lossy
    from nnar.formats import onnx as onnx_format
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((8, 4)) * 3).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m = onnx_format.from_proto(model)
    buf = io.BytesIO()
    with ArchiveWriter(buf, source_format="onnx", structure=("onnx", m.structure)) as aw:
        for name, arr, dt in m.tensors():
            aw.write(name, arr, choice=lossy.float8_choice(arr, TensorSpec(dt, arr.shape), dst))
    plain, kept = tmp_path / "plain.onnx", tmp_path / "kept.onnx"
    nnar.unpack(buf.getvalue(), plain)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nnar.unpack(buf.getvalue(), kept, keep_quantized=True)
    assert any("written expanded" in str(c.message) for c in caught) == (opset < 19)
    types = {t.data_type for t in onnx.load(kept).graph.initializer}
    assert types == ({ONNX[dst]} if opset >= 19 else {TensorProto.FLOAT})
    x = rng.standard_normal((2, 8)).astype(np.float32)
    outs = [ort.InferenceSession(str(p)).run(None, {"x": x})[0] for p in (plain, kept)]
    np.testing.assert_array_equal(outs[0], outs[1])
    widened = dtypes.float8_values(dst)[to_float8(w, "float32", dst)].astype(np.float32)
    np.testing.assert_array_equal(numpy_helper.to_array(onnx.load(plain).graph.initializer[0]), widened)


def test_cli_one_tensor_to_npy_keeps_the_dtype_in_its_field(tmp_path):
    from nnar.cli import main
    buf = io.BytesIO()
    with ArchiveWriter(buf) as w:
        w.write("e4", ALL.reshape(16, 16), dtype="float8_e4m3fn")
    arc = tmp_path / "a.nnar"
    arc.write_bytes(buf.getvalue())
    for src in (str(arc), "-"):
        out = tmp_path / f"e4{len(src)}.npy"
        if src == "-":
            import subprocess
            r = subprocess.run([sys.executable, "-m", "nnar", "unpack", "-", "--tensor", "e4", "-o", str(out)],
                               input=arc.read_bytes(), capture_output=True)
            assert r.returncode == 0, r.stderr
        else:
            assert main(["unpack", src, "--tensor", "e4", "-o", str(out), "-q"]) == 0
        a = np.load(out, allow_pickle=False)
        assert a.dtype == np.dtype([("float8_e4m3fn", "u1")]) and np.array_equal(a["float8_e4m3fn"], ALL.reshape(16, 16))
