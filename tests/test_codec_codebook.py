"""Laws of ``nnar.codebook``: every element an index into a table of at most 2**bits values,
``value = codebook[index]`` (spec/codecs/codebook.md). Without a quantizer the table is the
tensor's own distinct bit patterns (exact, for any dtype); with one, each element goes to its
nearest entry by value, ties to the lower. Decoding checks the table size, every index and
every stream length."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import nnar
from nnar import pipeline as P
from nnar.codecs import get_codec_class, packing
from nnar.codecs.abc import TensorSpec
from nnar.codecs.codebook import Codebook
from nnar.codecs.zstd import Zstd

import helpers as H
import strategies as S

pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

DTYPES = ("float16", "float32", "float64")
BITS = st.integers(1, 8)


# -- values for the nearest-entry tests ----------------------------------------------------------
# float16: any finite value. float32/float64: multiples of 2**-24 within ±2**24, where the float64
# midpoint of two entries is exact; outside that range nearest() rounds its midpoints and can
# pick the farther entry (the xfail tests at the end of the "quantizer" section). Exact mode has
# no such limit: its tests draw any array.


def finite_values(dtype: str) -> st.SearchStrategy[float]:
    if dtype == "float16":
        return st.floats(width=16, allow_nan=False, allow_infinity=False).map(lambda x: x + 0.0)  # no -0.0
    return st.integers(-(1 << 48), 1 << 48).map(lambda k: float(np.array(k / (1 << 24), dtype)))


def shapes() -> st.SearchStrategy[tuple[int, ...]]:
    """0-d, empty and small multi-dimensional shapes, and 1-d ones long enough to fill every slot."""
    return st.one_of(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5), st.tuples(st.integers(0, 200)))


def as_dtype(values, dtype: str) -> np.ndarray:
    return np.array(values, H.STORAGE[dtype]).reshape(-1) if len(values) else np.zeros(0, H.STORAGE[dtype])


@st.composite
def tables(draw, dtype: str, bits: int, min_size: int = 1) -> np.ndarray:
    """A sorted table of distinct values of ``dtype``, 1 to 2**bits entries."""
    vals = draw(st.lists(finite_values(dtype), min_size=min_size, max_size=1 << bits, unique=True))
    return np.unique(as_dtype(vals, dtype))


# -- helpers -------------------------------------------------------------------------------------


def segments_of(enc: P.EncodedTensor) -> dict:
    return {s.name: (s.codecs, s.raw_length, s.data) for s in enc.segments}


def run(arr: np.ndarray, dtype: str, codec: Codebook, chains=((),)) -> tuple[P.EncodedTensor, np.ndarray]:
    spec = TensorSpec(dtype, arr.shape)
    enc = P.encode(arr, spec, P.Pipeline(array_bytes=codec, stream_chains=chains))
    return enc, P.decode(spec, enc.pipeline, segments_of(enc), nnar.DEFAULT_LIMITS, "tensor 'w'")


def encode(arr: np.ndarray, dtype: str, codec: Codebook):
    spec = TensorSpec(dtype, arr.shape)
    streams, params = codec.encode(arr, spec)
    return spec, {k: bytes(v) for k, v in streams.items()}, params


def reference_nearest(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The nearest entry of a sorted table for each element, ties to the lower entry, with exact
    (rational) distances."""
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    right = np.searchsorted(table, flat)  # exact comparisons in the values' own dtype
    for i, (v, r) in enumerate(zip(flat.tolist(), right.tolist())):
        if r == 0:
            out[i] = table[0]
        elif r == table.size:
            out[i] = table[-1]
        else:
            lo, hi = table[r - 1], table[r]
            out[i] = lo if abs(Fraction(v) - Fraction(float(lo))) <= abs(Fraction(float(hi)) - Fraction(v)) else hi
    return out.reshape(x.shape)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    u = f"u{a.dtype.itemsize}"
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(u), b.view(u))


# -- exact mode ----------------------------------------------------------------------------------


@st.composite
def few_patterns(draw, bits: int, dtype=None) -> tuple[np.ndarray, str]:
    """An array of any dtype (NaN payloads, -0.0 and 0.0, subnormals, integers, bool) holding at
    most 2**bits distinct bit patterns."""
    pool, dtype = draw(S.storage_arrays(dtype=dtype, shape=st.tuples(st.integers(1, 1 << bits))))
    shape = draw(shapes())
    n = int(np.prod(shape))
    idx = draw(st.lists(st.integers(0, pool.size - 1), min_size=n, max_size=n))
    return pool[np.array(idx, np.intp)].reshape(shape) if n else np.zeros(shape, pool.dtype), dtype


def patterns(arr: np.ndarray) -> np.ndarray:
    flat = H.c_order(arr).reshape(-1)
    return flat.view(f"u{flat.itemsize}") if flat.dtype != np.bool_ else flat.view(np.uint8)


@given(BITS, st.data())
def test_exact_mode_round_trips_any_tensor_of_at_most_2_pow_bits_distinct_values(bits, data):
    arr, dtype = data.draw(few_patterns(bits))
    chains = data.draw(st.sampled_from([((),), ((Zstd(3),),)]))
    enc, out = run(arr, dtype, Codebook(bits), chains)
    H.assert_same_tensor(out, arr, dtype)
    assert enc.pipeline[-1]["params"] == {"size": max(1, np.unique(patterns(arr)).size)}


@given(BITS, st.data())
def test_stream_lengths_are_table_entries_and_packed_indices(bits, data):
    arr, dtype = data.draw(few_patterns(bits))
    spec, streams, params = encode(arr, dtype, Codebook(bits))
    assert tuple(streams) == Codebook(bits).stream_names(spec, params) == ("codebook", "indices")
    lengths = {k: len(v) for k, v in streams.items()}
    assert lengths == dict(Codebook(bits).stream_lengths(spec, params))
    assert lengths["indices"] == packing.packed_length(arr.size, bits)
    assert lengths["codebook"] == params["size"] * H.STORAGE[dtype].itemsize
    table = patterns(np.frombuffer(streams["codebook"], H.STORAGE[dtype]))
    assert sorted(table.tolist()) == (np.unique(patterns(arr)).tolist() or [0])


@given(st.sampled_from(DTYPES), BITS)
def test_too_many_distinct_values_for_exact_mode_is_refused_when_encoding(dtype, bits):
    arr = np.arange((1 << bits) + 1).astype(H.STORAGE[dtype])
    with pytest.raises(ValueError):
        Codebook(bits).encode(arr, TensorSpec(dtype, arr.shape))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (2, 0, 3), (1,)])
def test_empty_and_zero_d_tensors(dtype, shape):
    arr = np.full(shape, -2.5, H.STORAGE[dtype])
    for bits in (1, 3, 8):
        _, out = run(arr, dtype, Codebook(bits))
        H.assert_same_tensor(out, arr, dtype)


# -- with a quantizer: nearest entry -------------------------------------------------------------


@given(st.sampled_from(DTYPES), BITS, st.data())
def test_each_element_decodes_to_its_nearest_entry_ties_to_the_lower(dtype, bits, data):
    table = data.draw(tables(dtype, bits))
    shape = data.draw(shapes())
    n = int(np.prod(shape))
    # values anywhere, plus the entries themselves and the exact midpoints between neighbours
    mids = [float((Fraction(float(a)) + Fraction(float(b))) / 2) for a, b in zip(table[:-1], table[1:])]
    pool = st.one_of(finite_values(dtype), st.sampled_from(table.tolist()),
                     *([st.sampled_from(mids)] if mids else []))
    arr = as_dtype(data.draw(st.lists(pool, min_size=n, max_size=n)), dtype).reshape(shape)
    seen = []

    def quantizer(values, k):
        seen.append((values.copy(), k))
        return table

    _, out = run(arr, dtype, Codebook(bits).using(quantizer))
    assert len(seen) == 1 and seen[0][1] == 1 << bits and np.array_equal(seen[0][0], arr.reshape(-1))
    assert same_bits(out, reference_nearest(arr, table))


@given(st.sampled_from(DTYPES), BITS, st.data())
def test_decoded_values_all_lie_in_the_codebook(dtype, bits, data):
    """For any input, NaN and infinities included, and any finite table of the dtype."""
    width = {"float16": 16, "float32": 32, "float64": 64}[dtype]
    vals = data.draw(st.lists(st.floats(width=width, allow_nan=False, allow_infinity=False).map(lambda x: x + 0.0),
                              min_size=1, max_size=1 << bits, unique=True))
    table = np.unique(as_dtype(vals, dtype))
    arr, _ = data.draw(S.storage_arrays(dtype=dtype, shape=shapes()))
    _, out = run(arr, dtype, Codebook(bits).using(lambda v, k: table))
    assert np.isin(out.reshape(-1), table).all()


def test_quantizer_values_are_rounded_to_the_tensor_dtype_and_not_stored():
    codec = Codebook(2).using(lambda v, k: np.array([-1.0, 0.0, 1.0 / 3.0]))
    assert codec.get_config() == {"bits": 2} and codec == Codebook(2)
    arr = np.array([0.3, -0.8, 0.1], "<f2")
    _, out = run(arr, "float16", codec)
    assert out.tolist() == np.array([1 / 3, -1.0, 0.0], "<f2").tolist()


@given(st.sampled_from(DTYPES), BITS, st.data())
def test_a_quantizer_may_assign_the_indices_itself(dtype, bits, data):
    """(table, indices): entropy-constrained quantization picks entries other than the nearest."""
    table = data.draw(tables(dtype, bits))
    n = data.draw(st.integers(0, 100))
    idx = np.array(data.draw(st.lists(st.integers(0, table.size - 1), min_size=n, max_size=n)), np.uint8)
    arr = np.zeros(n, H.STORAGE[dtype])
    _, out = run(arr, dtype, Codebook(bits).using(lambda v, k: (table, idx)))
    assert same_bits(out, table[idx.astype(np.intp)] if n else np.zeros(0, table.dtype))


def test_a_quantizer_returning_an_unsorted_table_is_refused():
    with pytest.raises(ValueError):
        Codebook(2).using(lambda v, k: np.array([1.0, 0.0], np.float32)).encode(
            np.zeros(3, np.float32), TensorSpec("float32", (3,)))


def _quantized(table, values, dtype):
    table, arr = np.array(table, dtype), np.array(values, dtype)
    _, out = run(arr, dtype, Codebook(1).using(lambda v, k: table))
    return out, reference_nearest(arr, table)


def test_float64_neighbouring_entries():
    a = 1.0 + 2.0 ** -52
    out, want = _quantized([a, np.nextafter(a, 2.0)], [a, np.nextafter(a, 2.0)], "float64")
    assert same_bits(out, want)


def test_float64_neighbouring_values_in_exact_mode():
    a = 1.0 + 2.0 ** -52
    arr = np.array([a, np.nextafter(a, 2.0)], np.float64)
    _, out = run(arr, "float64", Codebook(1))
    H.assert_same_tensor(out, arr, "float64")


def test_float64_huge_entries():
    out, want = _quantized([1e308, 1.5e308], [1.5e308, 1.4e308], "float64")
    assert same_bits(out, want)


def test_float32_entries_of_very_different_magnitude():
    out, want = _quantized([-2.0 ** -100, 2.0 ** 100], [2.0 ** 99], "float32")
    assert want.tolist() == [2.0 ** 100]
    assert same_bits(out, want)


@pytest.mark.parametrize("dtype", S.FLOAT_DTYPES)
def test_exact_mode_keeps_signed_zeros_and_nan_payloads(dtype):
    w = H.STORAGE[dtype].itemsize * 8
    sign = 1 << (w - 1)
    nan = {16: 0x7C01 if dtype == "float16" else 0x7F81, 32: 0x7F800001, 64: 0x7FF0000000000001}[w]
    arr = np.array([0, sign, nan, nan | sign, 0, sign], f"<u{w // 8}").view(H.STORAGE[dtype])
    _, out = run(arr, dtype, Codebook(2))
    H.assert_same_tensor(out, arr, dtype)


# -- the spec's example ------------------------------------------------------------------------

SPEC_ARRAY = np.array([[0.5, -1.0, 0.5], [2.0, -1.0, 2.0]], "<f4")
SPEC_CODEBOOK = bytes.fromhex("000080BF 0000003F 00000040".replace(" ", ""))


def test_the_spec_example_decodes():
    streams = {"codebook": SPEC_CODEBOOK, "indices": bytes.fromhex("9108")}
    out = Codebook(2).decode(streams, TensorSpec("float32", (2, 3)), {"size": 3})
    H.assert_same_tensor(out, SPEC_ARRAY, "float32")


def test_the_spec_example_encodes():
    spec, streams, params = encode(SPEC_ARRAY, "float32", Codebook(2))
    assert params == {"size": 3}
    assert streams == {"codebook": bytes.fromhex("0000003F00000040000080BF"), "indices": bytes.fromhex("4806")}


@pytest.mark.parametrize("indices", ["9103", "9118"])
def test_the_spec_corrupt_examples(indices):
    streams = {"codebook": SPEC_CODEBOOK, "indices": bytes.fromhex(indices)}
    with pytest.raises(nnar.CodecDataError):
        Codebook(2).decode(streams, TensorSpec("float32", (2, 3)), {"size": 3})


# -- hostile params and streams ------------------------------------------------------------------


@given(BITS, st.data())
def test_an_index_at_or_above_the_table_size_is_codec_data_error(bits, data):
    s = packing.slot_bits(bits)
    arr, dtype = data.draw(few_patterns(bits))
    if arr.size == 0:
        return
    spec, streams, params = encode(arr, dtype, Codebook(bits))
    size = params["size"]
    if size == 1 << s:  # a full table: every slot value is a valid index
        return
    bad = data.draw(st.integers(size, (1 << s) - 1))
    at = data.draw(st.integers(0, arr.size - 1))
    per = 8 // s
    packed = bytearray(streams["indices"])
    packed[at // per] &= 0xFF ^ (((1 << s) - 1) << (s * (at % per)))
    packed[at // per] |= bad << (s * (at % per))
    streams["indices"] = bytes(packed)
    with pytest.raises(nnar.CodecDataError):
        Codebook(bits).decode(streams, spec, params)


@given(BITS, st.data())
def test_size_param_out_of_range_is_codec_data_error(bits, data):
    arr, dtype = data.draw(few_patterns(bits))
    spec, streams, params = encode(arr, dtype, Codebook(bits))
    size = data.draw(st.one_of(st.integers(max_value=0), st.integers(min_value=(1 << bits) + 1),
                               st.sampled_from([True, False, 1.0, "1", None, [1]])))
    params = {**params, "size": size}
    for call in (lambda: Codebook(bits).decode(streams, spec, params),
                 lambda: Codebook(bits).stream_lengths(spec, params)):
        with pytest.raises(nnar.CodecDataError, match="size"):
            call()


@pytest.mark.parametrize("params", [{}, None, {"count": 1}])
def test_missing_size_is_codec_data_error(params):
    spec = TensorSpec("float32", (2,))
    with pytest.raises(nnar.CodecDataError):
        Codebook(2).decode({"codebook": bytes(4), "indices": bytes(1)}, spec, params)


@given(BITS, st.data())
def test_streams_of_the_wrong_length_are_codec_data_error(bits, data):
    arr, dtype = data.draw(few_patterns(bits))
    spec, streams, params = encode(arr, dtype, Codebook(bits))
    victim = data.draw(st.sampled_from(sorted(streams)))
    good = len(streams[victim])
    n = data.draw(st.integers(0, good + 9).filter(lambda k: k != good))
    streams[victim] = (streams[victim] + bytes(n))[:n]
    with pytest.raises(nnar.CodecDataError):
        Codebook(bits).decode(streams, spec, params)


@given(BITS, st.data())
def test_missing_or_extra_streams_are_codec_data_error(bits, data):
    arr, dtype = data.draw(few_patterns(bits))
    spec, streams, params = encode(arr, dtype, Codebook(bits))
    if data.draw(st.booleans()):
        del streams[data.draw(st.sampled_from(sorted(streams)))]
    else:
        streams[data.draw(st.sampled_from(["data", "codebook2", "values.indices"]))] = b""
    with pytest.raises(nnar.CodecDataError):
        Codebook(bits).decode(streams, spec, params)


def test_a_stored_stream_claiming_another_length_is_refused_before_decompressing(monkeypatch):
    arr = np.array([1.0, 2.0, 2.0, 1.0], np.float32)
    spec = TensorSpec("float32", arr.shape)
    enc = P.encode(arr, spec, P.Pipeline(array_bytes=Codebook(1), stream_chains=((Zstd(3),),)))
    segments = segments_of(enc)
    chain, length, data = segments["codebook"]
    segments["codebook"] = (chain, length + 4, data)
    monkeypatch.setattr(Zstd, "decode", lambda *a: pytest.fail("decompressed before checking lengths"))
    with pytest.raises(nnar.CodecDataError, match="raw_length"):
        P.decode(spec, enc.pipeline, segments, nnar.DEFAULT_LIMITS, "tensor 'w'")


# -- config --------------------------------------------------------------------------------------


def test_registered_under_its_id():
    assert get_codec_class("nnar.codebook") is Codebook
    assert Codebook.kind == "array-bytes" and not Codebook.lossless
    assert Codebook.param_keys == {"size"}


@given(BITS)
def test_config_round_trip(bits):
    codec = Codebook(bits)
    assert codec.get_config() == {"bits": bits}
    again = Codebook.from_config(codec.get_config())
    assert again == codec and hash(again) == hash(codec)


@pytest.mark.parametrize("config", [
    {}, {"bits": 0}, {"bits": 9}, {"bits": -1}, {"bits": True}, {"bits": 4.0}, {"bits": "4"}, {"bits": None},
    {"bits": 4, "size": 16}, None, [], 4,
])
def test_bad_config_is_codec_data_error(config):
    with pytest.raises(nnar.CodecDataError):
        Codebook.from_config(config)
