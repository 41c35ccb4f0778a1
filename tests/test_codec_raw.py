"""Laws of ``nnar.raw``: one stream, the array's little-endian C-order bytes, verbatim."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import nnar
from nnar.codecs import get_codec_class
from nnar.codecs.abc import TensorSpec
from nnar.codecs.raw import Raw

import helpers as H
import strategies as S


def spec_of(arr: np.ndarray, dtype: str) -> TensorSpec:
    return TensorSpec(dtype, tuple(arr.shape))


@given(S.storage_arrays())
def test_round_trip_is_exact(pair):
    arr, dtype = pair
    spec = spec_of(arr, dtype)
    streams, params = Raw().encode(arr, spec)
    assert list(streams) == ["data"]
    assert bytes(streams["data"]) == H.canonical_bytes(arr)  # verbatim: nothing added, nothing lost
    out = Raw().decode({"data": bytes(streams["data"])}, spec, params)
    H.assert_same_tensor(out, arr, dtype)


@given(S.storage_arrays())
def test_encoding_is_deterministic_and_stream_names_match(pair):
    arr, dtype = pair
    spec = spec_of(arr, dtype)
    a, pa = Raw().encode(arr, spec)
    b, pb = Raw().encode(arr.copy(), spec)
    assert {k: bytes(v) for k, v in a.items()} == {k: bytes(v) for k, v in b.items()} and pa == pb
    assert tuple(a) == Raw().stream_names(spec, pa)


def test_registered_under_its_id():
    assert get_codec_class("nnar.raw") is Raw
    assert Raw.kind == "array-bytes" and Raw.lossless


def test_config_round_trip():
    codec = Raw()
    assert codec.get_config() == {}
    again = Raw.from_config(codec.get_config())
    assert again == codec and hash(again) == hash(codec)
    assert repr(again) == "Raw()"


@pytest.mark.parametrize("config", [{"level": 3}, {"x": None}, None, [], "raw", 0, [("a", 1)]])
def test_bad_config_is_codec_data_error(config):
    with pytest.raises(nnar.CodecDataError):
        Raw.from_config(config)


@given(S.storage_arrays(), st.integers(-3, 3).filter(bool))
def test_stream_of_wrong_length_is_codec_data_error(pair, delta):
    arr, dtype = pair
    spec = spec_of(arr, dtype)
    data = H.canonical_bytes(arr)
    bad = data + bytes(delta) if delta > 0 else data[:delta]
    assume(len(bad) != len(data))  # an empty stream cannot be cut shorter
    with pytest.raises(nnar.CodecDataError):
        Raw().decode({"data": bad}, spec, {})


@pytest.mark.parametrize("streams", [{}, {"p0": b"\0" * 8}, {"data": b"\0" * 8, "extra": b""}, {"DATA": b"\0" * 8}])
def test_wrong_stream_names_are_codec_data_error(streams):
    with pytest.raises(nnar.CodecDataError):
        Raw().decode(streams, TensorSpec("float32", (2,)), {})


def test_decoded_array_views_the_stream_with_the_storage_dtype():
    spec = TensorSpec("bfloat16", (2, 1))
    out = Raw().decode({"data": bytes([0x80, 0x3F, 0x00, 0xC0])}, spec, {})
    assert out.dtype == np.dtype("<u2") and out.shape == (2, 1)
    assert out.ravel().tolist() == [0x3F80, 0xC000]
