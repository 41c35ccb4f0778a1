"""Laws of ``nnar.byteplanes``: one stream per byte of significance, floats rotated left by one
bit first so the exponent lands in one plane (spec/codecs/byteplanes.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import nnar
from nnar.codecs import get_codec_class
from nnar.codecs.abc import TensorSpec
from nnar.codecs.byteplanes import BytePlanes

import helpers as H
import strategies as S


def spec_of(arr: np.ndarray, dtype: str) -> TensorSpec:
    return TensorSpec(dtype, tuple(arr.shape))


def encode(arr, dtype):
    spec = spec_of(arr, dtype)
    streams, params = BytePlanes().encode(arr, spec)
    return spec, {k: bytes(v) for k, v in streams.items()}, params


@given(S.storage_arrays())
def test_round_trip_is_exact(pair):
    arr, dtype = pair
    spec, streams, params = encode(arr, dtype)
    out = BytePlanes().decode(streams, spec, params)
    H.assert_same_tensor(out, arr, dtype)


@given(S.storage_arrays())
def test_one_plane_per_byte_each_one_byte_per_element(pair):
    arr, dtype = pair
    spec, streams, params = encode(arr, dtype)
    width = H.STORAGE[dtype].itemsize
    assert tuple(streams) == tuple(f"p{i}" for i in range(width)) == BytePlanes().stream_names(spec, params)
    assert all(len(s) == arr.size for s in streams.values())


@given(S.storage_arrays(dtype=st.sampled_from(("bool",) + S.INT_DTYPES)))
def test_integers_are_split_without_rotation(pair):
    arr, dtype = pair
    _, streams, _ = encode(arr, dtype)
    width = H.STORAGE[dtype].itemsize
    le = np.frombuffer(H.canonical_bytes(arr), np.uint8).reshape(-1, width)
    for i in range(width):
        assert streams[f"p{i}"] == le[:, i].tobytes()


@given(S.storage_arrays(dtype=st.sampled_from(S.FLOAT_DTYPES)))
def test_floats_are_rotated_left_by_one_bit_then_split(pair):
    arr, dtype = pair
    _, streams, _ = encode(arr, dtype)
    width = H.STORAGE[dtype].itemsize
    bits = 8 * width
    v = np.frombuffer(H.canonical_bytes(arr), dtype=f"<u{width}")
    one, top = v.dtype.type(1), v.dtype.type(bits - 1)
    rotated = ((v << one) | (v >> top)).view(np.uint8).reshape(-1, width)
    for i in range(width):
        assert streams[f"p{i}"] == rotated[:, i].tobytes()


@pytest.mark.parametrize("dtype, value, planes", [
    # float32 1.0 = 0x3F800000 -> rotl 0x7F000000: the whole exponent in the top plane, sign in bit 0
    ("float32", np.float32(1.0), [0x00, 0x00, 0x00, 0x7F]),
    ("float32", np.float32(-1.0), [0x01, 0x00, 0x00, 0x7F]),
    ("float32", np.float32(-1.5), [0x01, 0x00, 0x80, 0x7F]),  # the example of spec/codecs/byteplanes.md
    # bfloat16 -2.0 = 0xC000 -> rotl 0x8001
    ("bfloat16", np.uint16(0xC000), [0x01, 0x80]),
    ("int32", np.int32(0x01020304), [0x04, 0x03, 0x02, 0x01]),
    ("int16", np.int16(-2), [0xFE, 0xFF]),
])
def test_known_planes(dtype, value, planes):
    arr = np.array([value], dtype=H.STORAGE[dtype])
    _, streams, _ = encode(arr, dtype)
    assert [streams[f"p{i}"][0] for i in range(len(planes))] == planes


def test_trained_float_weights_exponent_plane_is_low_entropy():
    w = (np.random.default_rng(0).normal(size=4096) * 0.02).astype(np.float32)
    _, streams, _ = encode(w, "float32")
    assert 4 * len(set(streams["p3"])) < len(set(streams["p0"])) == 256


def test_registered_under_its_id():
    assert get_codec_class("nnar.byteplanes") is BytePlanes
    assert BytePlanes.kind == "array-bytes" and BytePlanes.lossless


def test_config_round_trip():
    codec = BytePlanes()
    assert codec.get_config() == {}
    assert BytePlanes.from_config(codec.get_config()) == codec
    assert hash(BytePlanes.from_config({})) == hash(codec)


@pytest.mark.parametrize("config", [{"width": 4}, {"": 1}, None, [], "p0", 1.5])
def test_bad_config_is_codec_data_error(config):
    with pytest.raises(nnar.CodecDataError):
        BytePlanes.from_config(config)


@given(S.storage_arrays(), st.data())
def test_a_plane_of_wrong_length_is_codec_data_error(pair, data):
    arr, dtype = pair
    spec, streams, params = encode(arr, dtype)
    victim = data.draw(st.sampled_from(sorted(streams)))
    new_len = data.draw(st.integers(0, arr.size + 5).filter(lambda n: n != arr.size))
    streams[victim] = (streams[victim] * 2 + bytes(new_len))[:new_len]
    with pytest.raises(nnar.CodecDataError):
        BytePlanes().decode(streams, spec, params)


@given(S.storage_arrays(), st.data())
def test_missing_or_extra_planes_are_codec_data_error(pair, data):
    arr, dtype = pair
    spec, streams, params = encode(arr, dtype)
    if data.draw(st.booleans()) and streams:
        del streams[data.draw(st.sampled_from(sorted(streams)))]
    else:
        streams[data.draw(st.sampled_from([f"p{len(streams)}", "data", "p-1", "P0"]))] = bytes(arr.size)
    with pytest.raises(nnar.CodecDataError):
        BytePlanes().decode(streams, spec, params)


@pytest.mark.parametrize("streams", [{"p0": b"\x01\x02", "p1": b"\x03"}, {"p1": b"ab", "p2": b"cd"}])
def test_planes_must_all_be_the_element_count(streams):
    with pytest.raises(nnar.CodecDataError):
        BytePlanes().decode(streams, TensorSpec("int16", (2,)), {})


def test_empty_and_zero_d_tensors():
    for shape in [(), (0,), (3, 0, 2)]:
        for dtype in S.DTYPES:
            arr = np.zeros(shape, H.STORAGE[dtype])
            spec, streams, params = encode(arr, dtype)
            H.assert_same_tensor(BytePlanes().decode(streams, spec, params), arr, dtype)
