"""Laws of ``nnar.affine``: uniform quantization per group of consecutive float32 elements,
``value = float32(q - zero_point) * scale`` (spec/codecs/affine.md). Each element decodes within
half its group's scale (plus the float32 rounding of the product), 0.0 is a grid point and
decodes to exactly 0.0, decoding is one rounded multiplication (so deterministic), and stored
scales, zero points, indices and stream lengths are checked."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import nnar
from nnar import pipeline as P
from nnar.codecs import get_codec_class, packing
from nnar.codecs.abc import TensorSpec
from nnar.codecs.affine import Affine
from nnar.codecs.zstd import Zstd

import strategies as S

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).smallest_subnormal)
BITS = st.integers(2, 8)

# -- arrays --------------------------------------------------------------------------------------

KINDS = {
    "any": dict(),
    "weights": dict(min_value=-0.25, max_value=0.25),
    "positive": dict(min_value=0.0),
    "negative": dict(max_value=-0.0),
    "tiny": dict(min_value=-float(np.float32(1e-36)), max_value=float(np.float32(1e-36))),  # subnormals and the smallest normals
    "huge": dict(min_value=-F32_MAX, max_value=F32_MAX),
}


@st.composite
def float32_arrays(draw, max_abs: float = F32_MAX) -> np.ndarray:
    """Finite float32 arrays: any values, weight-like, one sign, tiny, huge (near ±FLT_MAX), all
    zero, constant; 1-d or 2-d, with empty and single-element shapes."""
    max_abs = float(np.float32(max_abs))
    shape = draw(st.one_of(st.tuples(st.integers(0, 60)), st.tuples(st.integers(1, 6), st.integers(0, 20)), st.just(())))
    n = int(np.prod(shape))
    kind = draw(st.sampled_from([*KINDS, "zero", "constant"]))
    if kind == "zero":
        return np.zeros(shape, np.float32)
    if kind == "constant":
        return np.full(shape, draw(st.floats(-max_abs, max_abs, width=32)), np.float32)
    kw = dict(KINDS[kind])
    kw["min_value"] = max(kw.get("min_value", -max_abs), -max_abs)
    kw["max_value"] = min(kw.get("max_value", max_abs), max_abs)
    elems = st.floats(width=32, allow_nan=False, allow_infinity=False, **kw)
    if kind == "huge":
        elems = st.one_of(elems, st.floats(max_abs / 4, max_abs, width=32), st.floats(-max_abs, -max_abs / 4, width=32))
    return np.array(draw(st.lists(elems, min_size=n, max_size=n)), np.float32).reshape(shape)


@st.composite
def group_sizes(draw, arr: np.ndarray) -> int:
    """1, 7, one row of the leading axis, or the whole tensor and more."""
    n = arr.size
    per_row = max(1, int(np.prod(arr.shape[1:]))) if arr.ndim else 1
    return draw(st.sampled_from([1, 7, per_row, max(1, n), n + 1 + draw(st.integers(0, 100)), 1 << 62]))


# -- helpers -------------------------------------------------------------------------------------


def encode(arr: np.ndarray, codec: Affine):
    """Encode; the codec may refuse (ValueError) only a group whose grid end would pass
    float32's range, which needs values within a factor 2**(bits + 1) of FLT_MAX."""
    spec = TensorSpec("float32", arr.shape)
    try:
        streams, params = codec.encode(arr, spec)
    except ValueError as e:
        assert "float32 limit" in str(e) and float(np.abs(arr).max()) >= F32_MAX / 2 ** (codec.bits + 2), e
        assume(False)
    return spec, {k: bytes(v) for k, v in streams.items()}, params


def groups_of(values: np.ndarray, n: int, group_size: int) -> np.ndarray:
    """Each element's entry of a per-group array."""
    return np.repeat(values, min(group_size, max(n, 1)))[:n]


def error_bound(arr: np.ndarray, out: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """scale / 2 of each element's group, plus two float32 ulps of the larger of x and its decoded
    value (the product scale * (q - zero_point) is rounded to float32)."""
    x = arr.reshape(-1).astype(np.float64)
    y = out.reshape(-1).astype(np.float64)
    s = groups_of(scales.astype(np.float64), x.size, group_size)
    ulp = np.spacing(np.maximum(np.abs(x), np.abs(y)).astype(np.float32)).astype(np.float64)
    return s / 2 + 2 * ulp


def in_the_clipping_window(arr: np.ndarray, bits: int, group_size: int) -> bool:
    """A group whose smaller side (positive or negative extent) is between 1/(2*qmax) and
    1/(2*qmax - 1) of its larger side: the known bug below (test_..._clipping)."""
    qmax = (1 << bits) - 1
    x = arr.reshape(-1).astype(np.float64)
    for i in range(0, x.size, min(group_size, max(x.size, 1))):
        g = x[i:i + group_size]
        hi, lo = max(g.max(), 0.0), -min(g.min(), 0.0)
        small, big = min(hi, lo), max(hi, lo)
        if small > 0 and big / (2 * qmax) < small * (1 + 1e-6) and small <= big / (2 * qmax - 1) * (1 + 1e-6):
            return True
    return False


# -- the error bound -----------------------------------------------------------------------------


@given(float32_arrays(max_abs=F32_MAX / 2), BITS, st.data())
def test_every_element_decodes_within_half_its_group_scale(arr, bits, data):
    """Outside the two known bugs (a group's small side in the clipping window; values within a
    step of ±FLT_MAX), which the xfail tests below pin."""
    G = data.draw(group_sizes(arr))
    codec = Affine(bits, G)
    spec, streams, params = encode(arr, codec)
    assert params == {}
    out = codec.decode(streams, spec, params)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == arr.shape
    scales = np.frombuffer(streams["scales"], "<f4")
    assert np.isfinite(scales).all() and (scales > 0).all()
    err = np.abs(out.reshape(-1).astype(np.float64) - arr.reshape(-1).astype(np.float64))
    assert (err <= error_bound(arr, out, scales, G)).all()


@pytest.mark.parametrize("values, bits", [
    ([-1.0, 0.19], 2), ([1.0, -0.19], 2), ([-1.0, 0.001962], 8), ([0.5, 0.0, -0.08], 3),
])
def test_the_smaller_side_of_a_lopsided_group_is_not_clipped(values, bits):
    arr = np.array(values, np.float32)
    spec, streams, params = encode(arr, Affine(bits, arr.size))
    out = Affine(bits, arr.size).decode(streams, spec, params)
    scales = np.frombuffer(streams["scales"], "<f4")
    err = np.abs(out.astype(np.float64) - arr.astype(np.float64))
    assert (err <= error_bound(arr, out, scales, arr.size)).all(), (out, scales)


@pytest.mark.parametrize("bits", [5, 7])
def test_values_whose_grid_would_overflow_are_refused_not_turned_into_inf(bits):
    """[FLT_MAX, 1.0]: the grid's top point would round past float32's range; the encoder refuses
    (the planner then stores the tensor losslessly) rather than decode a finite value as inf."""
    arr = np.array([F32_MAX, 1.0], np.float32)
    with pytest.raises(ValueError, match="float32 limit"):
        Affine(bits, 2).encode(arr, TensorSpec("float32", arr.shape))


@given(float32_arrays(), BITS, st.data())
def test_zero_decodes_to_exactly_zero_and_decoding_is_deterministic(arr, bits, data):
    G = data.draw(group_sizes(arr))
    codec = Affine(bits, G)
    if arr.size:
        flat = arr.reshape(-1).copy()
        flat[data.draw(st.lists(st.integers(0, arr.size - 1), max_size=5))] = data.draw(st.sampled_from([0.0, -0.0]))
        arr = flat.reshape(arr.shape)
    spec, streams, params = encode(arr, codec)
    out = codec.decode(streams, spec, params)
    zero = arr.reshape(-1) == 0
    assert (out.reshape(-1)[zero] == 0).all()
    assert not np.signbit(out.reshape(-1)[zero & ~np.signbit(arr.reshape(-1))]).any()  # +0.0 stays +0.0
    again = Affine.from_config(codec.get_config()).decode(dict(streams), spec, params)
    assert out.tobytes() == again.tobytes()
    assert encode(arr.copy(), codec)[1] == streams  # and so is encoding


@given(float32_arrays(), BITS, st.data())
def test_streams_have_their_documented_lengths(arr, bits, data):
    G = data.draw(group_sizes(arr))
    codec = Affine(bits, G)
    spec, streams, params = encode(arr, codec)
    groups = -(-arr.size // G)
    assert tuple(streams) == codec.stream_names(spec, params) == ("scales", "zero_points", "indices")
    assert {k: len(v) for k, v in streams.items()} == dict(codec.stream_lengths(spec, params)) == {
        "scales": 4 * groups, "zero_points": groups, "indices": packing.packed_length(arr.size, bits)}
    zp = np.frombuffer(streams["zero_points"], np.uint8)
    assert (zp <= (1 << bits) - 1).all()


@given(float32_arrays(max_abs=1e30), BITS, st.data())
def test_pipeline_round_trip_equals_the_codec(arr, bits, data):
    G = data.draw(group_sizes(arr))
    spec = TensorSpec("float32", arr.shape)
    chains = data.draw(st.sampled_from([((),), ((Zstd(3),),), ((), (Zstd(1),))]))
    enc = P.encode(arr, spec, P.Pipeline(array_bytes=Affine(bits, G), stream_chains=chains))
    segments = {s.name: (s.codecs, s.raw_length, s.data) for s in enc.segments}
    out = P.decode(spec, enc.pipeline, segments, nnar.DEFAULT_LIMITS, "tensor 'w'")
    s2, streams, params = encode(arr, Affine(bits, G))
    assert out.tobytes() == Affine(bits, G).decode(streams, s2, params).tobytes()
    assert enc.pipeline[-1] == {"codec": "nnar.affine", "config": {"bits": bits, "group_size": G}, "params": {}}


@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (1,), (1, 1)])
def test_empty_and_zero_d_tensors(shape):
    arr = np.full(shape, -0.75, np.float32)
    for bits in (2, 8):
        for G in (1, 7, 1 << 62):
            spec, streams, params = encode(arr, Affine(bits, G))
            out = Affine(bits, G).decode(streams, spec, params)
            assert out.shape == shape and out.dtype == np.float32
            assert np.array_equal(out, arr)  # -0.75 is an end of its range, so it is a grid point


def test_a_known_encoding():
    # per tensor, 2 bits: range [-1, 2] -> step 1, zero point 1; grid -1, 0, 1, 2
    arr = np.array([-1.0, 0.0, 0.4, 0.6, 2.0], np.float32)
    spec, streams, params = encode(arr, Affine(2, 8))
    assert np.frombuffer(streams["scales"], "<f4").tolist() == [1.0]
    assert streams["zero_points"] == b"\x01"
    assert streams["indices"] == packing.pack(np.array([0, 1, 1, 2, 3], np.uint8), 2)
    assert Affine(2, 8).decode(streams, spec, params).tolist() == [-1.0, 0.0, 0.0, 1.0, 2.0]


# -- decoding is one rounded multiplication -----------------------------------------------------


@given(st.integers(0, 200), st.integers(1, 8), st.integers(1, 300), st.data())
def test_decoding_is_float32_of_the_exact_product(n, bits, G, data):
    """For any valid streams (any finite scale: zero, negative, subnormal, huge), element i is
    float32((q - zp) * scale) of its group, rounded once: all decoders agree bit for bit."""
    g = -(-n // G)
    qmax = (1 << bits) - 1
    scales = np.array(data.draw(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False),
                                         min_size=g, max_size=g)), "<f4")
    zp = np.array(data.draw(st.lists(st.integers(0, qmax), min_size=g, max_size=g)), np.uint8)
    q = np.array(data.draw(st.lists(st.integers(0, qmax), min_size=n, max_size=n)), np.uint8)
    streams = {"scales": scales.tobytes(), "zero_points": zp.tobytes(), "indices": packing.pack(q, bits)}
    out = Affine(bits, G).decode(streams, TensorSpec("float32", (n,)), {})
    grp = np.arange(n) // G
    with np.errstate(over="ignore"):
        want = ((q.astype(np.float64) - zp[grp]) * scales[grp].astype(np.float64)).astype(np.float32)
    assert out.tobytes() == want.tobytes()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_scale_is_codec_data_error(bad):
    scales = np.array([1.0, bad], "<f4")
    streams = {"scales": scales.tobytes(), "zero_points": bytes(2), "indices": bytes(2)}
    with pytest.raises(nnar.CodecDataError, match="finite"):
        Affine(4, 2).decode(streams, TensorSpec("float32", (4,)), {})


SPEC_ARRAY = np.array([-1.0, -0.5, 0.0, 0.25, 1.5, 3.0], "<f4")
SPEC_STREAMS = {"scales": bytes.fromhex("ABAAAA3DCDCC4C3E"), "zero_points": bytes.fromhex("0C00"),
                "indices": bytes.fromhex("60FCF7")}


def test_the_spec_example():
    spec, streams, params = encode(SPEC_ARRAY, Affine(4, 4))
    assert params == {} and streams == SPEC_STREAMS
    out = Affine(4, 4).decode(SPEC_STREAMS, spec, {})
    assert out.tolist() == np.array([-1.0, -0.5, 0.0, 0.25, 1.4, 3.0], "<f4").tolist()
    assert out.view("<u4")[4] == 0x3FB33333
    with pytest.raises(nnar.CodecDataError):
        Affine(4, 4).decode({**SPEC_STREAMS, "zero_points": bytes.fromhex("1000")}, spec, {})


# -- hostile streams and specs -------------------------------------------------------------------


@given(float32_arrays(max_abs=1e6).filter(lambda a: a.size > 0), st.integers(1, 7), st.data())
def test_a_zero_point_above_the_largest_index_is_codec_data_error(arr, bits, data):
    """(At 8 bits every byte is a valid zero point.)"""
    G = data.draw(group_sizes(arr))
    spec, streams, params = encode(arr, Affine(bits, G))
    zp = bytearray(streams["zero_points"])
    zp[data.draw(st.integers(0, len(zp) - 1))] = data.draw(st.integers(1 << bits, 255))
    streams["zero_points"] = bytes(zp)
    with pytest.raises(nnar.CodecDataError, match="zero point"):
        Affine(bits, G).decode(streams, spec, params)


@given(float32_arrays(max_abs=1e6).filter(lambda a: a.size > 0), st.sampled_from([3, 5, 6, 7]), st.data())
def test_an_index_above_the_largest_is_codec_data_error(arr, bits, data):
    """3-, 5-, 6- and 7-bit indices sit in wider slots, which can hold larger values."""
    G = data.draw(group_sizes(arr))
    spec, streams, params = encode(arr, Affine(bits, G))
    s = packing.slot_bits(bits)
    per = 8 // s
    at = data.draw(st.integers(0, arr.size - 1))
    packed = bytearray(streams["indices"])
    packed[at // per] |= data.draw(st.integers(1 << bits, (1 << s) - 1)) << (s * (at % per))
    streams["indices"] = bytes(packed)
    with pytest.raises(nnar.CodecDataError):
        Affine(bits, G).decode(streams, spec, params)


@given(float32_arrays(max_abs=1e6), BITS, st.data())
def test_streams_of_the_wrong_length_or_name_are_codec_data_error(arr, bits, data):
    G = data.draw(group_sizes(arr))
    spec, streams, params = encode(arr, Affine(bits, G))
    if data.draw(st.booleans()):
        victim = data.draw(st.sampled_from(sorted(streams)))
        good = len(streams[victim])
        n = data.draw(st.integers(0, good + 9).filter(lambda k: k != good))
        streams[victim] = (streams[victim] + bytes(n))[:n]
    elif data.draw(st.booleans()):
        del streams[data.draw(st.sampled_from(sorted(streams)))]
    else:
        streams["offsets"] = b""
    with pytest.raises(nnar.CodecDataError):
        Affine(bits, G).decode(streams, spec, params)


@pytest.mark.parametrize("dtype", [d for d in S.DTYPES if d != "float32"])
def test_a_spec_other_than_float32_is_codec_data_error(dtype):
    spec = TensorSpec(dtype, (4,))
    codec = Affine(4, 2)
    streams = {"scales": bytes(8), "zero_points": bytes(2), "indices": bytes(2)}
    for call in (lambda: codec.decode(streams, spec, {}), lambda: codec.stream_lengths(spec, {}),
                 lambda: codec.encode(np.zeros(4, spec.storage_dtype), spec)):
        with pytest.raises(nnar.CodecDataError, match="float32"):
            call()


@pytest.mark.parametrize("dtype", ["float16", "float64", "bfloat16", "int8"])
def test_a_stored_non_float32_pipeline_is_codec_data_error(dtype):
    stages = [{"codec": "nnar.affine", "config": {"bits": 4, "group_size": 2}, "params": {}}]
    segments = {n: ([], k, bytes(k)) for n, k in {"scales": 8, "zero_points": 2, "indices": 2}.items()}
    with pytest.raises(nnar.CodecDataError):
        P.decode(TensorSpec(dtype, (4,)), stages, segments, nnar.DEFAULT_LIMITS, "tensor 'w'")


# -- config --------------------------------------------------------------------------------------


def test_registered_under_its_id():
    assert get_codec_class("nnar.affine") is Affine
    assert Affine.kind == "array-bytes" and not Affine.lossless and Affine.param_keys == frozenset()


@given(st.integers(1, 8), st.integers(1, (1 << 63) - 1))
def test_config_round_trip(bits, group_size):
    codec = Affine(bits, group_size)
    assert codec.get_config() == {"bits": bits, "group_size": group_size}
    again = Affine.from_config(codec.get_config())
    assert again == codec and hash(again) == hash(codec)


@pytest.mark.parametrize("config", [
    {}, {"bits": 4}, {"group_size": 8}, {"bits": 0, "group_size": 8}, {"bits": 9, "group_size": 8},
    {"bits": True, "group_size": 8}, {"bits": 4.0, "group_size": 8}, {"bits": 4, "group_size": 0},
    {"bits": 4, "group_size": -1}, {"bits": 4, "group_size": 1 << 63}, {"bits": 4, "group_size": True},
    {"bits": 4, "group_size": "8"}, {"bits": 4, "group_size": 8, "symmetric": True}, None, [],
])
def test_bad_config_is_codec_data_error(config):
    with pytest.raises(nnar.CodecDataError):
        Affine.from_config(config)
