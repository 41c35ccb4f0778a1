"""Laws of ``nnar.sparse``: only the elements whose bits are not all zero are stored, by a nested
array→bytes codec, and their positions as a stream of their own: a bitmask, or gaps in
``gap_bits``-bit symbols (LSB first) with the all-ones symbol as a filler for long gaps, listing
the zeros instead when more than half survive (spec/codecs/sparse.md).

Lossless for any array; a positions stream is accepted only if it is exactly the encoding of a
set of positions of the stated count inside the tensor."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import nnar
from nnar import pipeline as P
from nnar.codecs import get_codec_class, registered
from nnar.codecs.abc import TensorSpec
from nnar.codecs.affine import Affine
from nnar.codecs.byteplanes import BytePlanes
from nnar.codecs.cast import Cast
from nnar.codecs.codebook import Codebook
from nnar.codecs.raw import Raw
from nnar.codecs.sparse import Sparse
from nnar.codecs.zstd import ENTROPY, Zstd

import helpers as H
import strategies as S

GAP_BITS = st.integers(1, 8)
INNER = st.sampled_from([Raw(), BytePlanes()])


@st.composite
def codecs(draw, inner=INNER) -> Sparse:
    if draw(st.booleans()):
        return Sparse("bitmask", draw(inner))
    return Sparse("gaps", draw(inner), draw(GAP_BITS))


# -- arrays with chosen zeros --------------------------------------------------------------------


@st.composite
def masks(draw, n: int) -> np.ndarray:
    """Survivor masks of n elements: none, all, iid at any density, or runs (long ones need
    filler symbols: up to 600 zeros, more than 2**8 - 1)."""
    kind = draw(st.sampled_from(["none", "all", "iid", "runs", "runs", "keep"]))
    if kind == "none":
        return np.zeros(n, bool)
    if kind == "all":
        return np.ones(n, bool)
    if kind == "iid":
        density = draw(st.sampled_from([0.01, 0.2, 0.5, 0.8, 0.99]))
        return np.random.default_rng(draw(st.integers(0, 2**32))).random(n) < density
    if kind == "keep":
        return None  # keep the drawn array's own zeros
    runs = draw(st.lists(st.tuples(st.booleans(), st.one_of(st.integers(1, 9), st.integers(250, 600))),
                         min_size=1, max_size=8))
    pattern = np.concatenate([np.full(k, v) for v, k in runs])
    return np.resize(pattern, n)


@st.composite
def sparse_arrays(draw, dtype=None) -> tuple[np.ndarray, str]:
    """Any storage array with a drawn set of elements zeroed (all bits): small ones from the shared
    strategy (NaN payloads, -0.0, subnormals, any dtype, 0-d and empty shapes), and long ones
    (256 to 1300 elements: gaps that need fillers even with 8-bit symbols) of random bytes."""
    if draw(st.booleans()):
        small = st.one_of(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6), st.tuples(st.integers(0, 64)))
        arr, dtype = draw(S.storage_arrays(dtype=dtype, shape=small))
    else:
        dtype = draw(st.sampled_from(S.DTYPES)) if dtype is None else dtype
        n = draw(st.integers(256, 1300))
        shape = draw(st.sampled_from([(n,), (2, n // 2), (n // 4, 2, 2)]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32)))
        raw = rng.integers(0, 256, math.prod(shape) * H.STORAGE[dtype].itemsize, dtype=np.uint8)
        arr = raw.astype(bool) if dtype == "bool" else raw.view(H.STORAGE[dtype])
        arr = arr.reshape(shape)
    mask = draw(masks(arr.size))
    if mask is not None:
        flat = arr.reshape(-1).copy()
        bits = flat if flat.dtype == np.bool_ else flat.view(f"u{flat.dtype.itemsize}")
        bits[~mask] = 0
        arr = flat.reshape(arr.shape)
    return arr, dtype


def survivors(arr: np.ndarray) -> np.ndarray:
    flat = H.c_order(arr).reshape(-1)
    return flat if flat.dtype == np.bool_ else flat.view(f"u{flat.dtype.itemsize}") != 0


# -- reference gap coding ------------------------------------------------------------------------


def ref_gap_symbols(positions, width: int) -> list[int]:
    cap = (1 << width) - 1
    out, prev = [], -1
    for p in positions:
        gap = p - prev - 1
        out += [cap] * (gap // cap) + [gap % cap]
        prev = p
    return out


def ref_gap_stream(positions, width: int) -> bytes:
    """The documented gap stream: symbol k in stream bits k*width ... k*width + width - 1, bit t
    of the symbol being stream bit k*width + t, stream bit j bit j % 8 of byte j // 8; zero padding."""
    symbols = np.array(ref_gap_symbols(positions, width), np.int64)
    bits = ((symbols[:, None] >> np.arange(width)) & 1).reshape(-1).astype(np.uint8)
    return np.packbits(bits, bitorder="little").tobytes()


def ref_parse(data: bytes, n: int, listed: int, width: int):
    """The positions ``data`` lists if it is exactly the encoding of ``listed`` positions in
    [0, n) (the reading procedure of the spec), else None."""
    cap = (1 << width) - 1
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    have = bits.size // width
    symbols = (bits[:have * width].reshape(have, width).astype(np.int64) << np.arange(width)).sum(axis=1).tolist()
    positions, p, k = [], 0, 0
    while len(positions) < listed:
        if k == have:
            return None
        r = symbols[k]
        k += 1
        if r == cap:
            p += cap
        else:
            p += r
            if p >= n:
                return None
            positions.append(p)
            p += 1
    if len(data) != -(-k * width // 8) or bits[k * width:].any():
        return None
    return positions


# -- helpers -------------------------------------------------------------------------------------


def encode(arr, dtype, codec):
    spec = TensorSpec(dtype, arr.shape)
    streams, params = codec.encode(arr, spec)
    return spec, {k: bytes(v) for k, v in streams.items()}, params


def segments_of(enc: P.EncodedTensor) -> dict:
    return {s.name: (s.codecs, s.raw_length, s.data) for s in enc.segments}


def pipeline_round_trip(arr, dtype, codec, chains=((),)):
    spec = TensorSpec(dtype, arr.shape)
    enc = P.encode(arr, spec, P.Pipeline(array_bytes=codec, stream_chains=chains))
    return enc, P.decode(spec, enc.pipeline, segments_of(enc), nnar.DEFAULT_LIMITS, "tensor 'w'")


def entropy_bits(d: float, n: int) -> float:
    return n * -(d * math.log2(d) + (1 - d) * math.log2(1 - d))


# -- lossless ------------------------------------------------------------------------------------

chains = st.sampled_from([((),), ((Zstd(1),),), ((), (Zstd(3),))])


@given(sparse_arrays(), codecs(), chains)
def test_lossless_for_any_array_through_the_pipeline(pair, codec, chain):
    arr, dtype = pair
    _, out = pipeline_round_trip(arr, dtype, codec, chain)
    H.assert_same_tensor(out, arr, dtype)


@given(sparse_arrays(), codecs())
def test_params_count_the_survivors_and_invert_when_more_than_half_survive(pair, codec):
    arr, dtype = pair
    spec, streams, params = encode(arr, dtype, codec)
    keep = survivors(arr)
    assert set(params) == {"count", "invert", "values"}
    assert params["count"] == int(keep.sum())
    assert params["invert"] is (codec.positions == "gaps" and 2 * int(keep.sum()) > arr.size)
    assert tuple(streams) == codec.stream_names(spec, params)
    H.assert_same_tensor(codec.decode(streams, spec, params), arr, dtype)
    # the nested codec stores exactly the survivors, in order
    values = H.c_order(arr).reshape(-1)[keep]
    inner = {k[len("values."):]: v for k, v in streams.items() if k.startswith("values.")}
    H.assert_same_tensor(codec.inner.decode(inner, TensorSpec(dtype, (values.size,)), params["values"]), values, dtype)


@given(sparse_arrays(), GAP_BITS)
def test_gap_positions_stream_is_exactly_the_documented_encoding(pair, gap_bits):
    """Gaps between listed positions (the zeros when invert), each as gap // cap fillers then
    gap % cap, cap = 2**gap_bits - 1; ceil(symbols * gap_bits / 8) bytes."""
    arr, dtype = pair
    codec = Sparse("gaps", Raw(), gap_bits)
    spec, streams, params = encode(arr, dtype, codec)
    keep = survivors(arr)
    listed = np.flatnonzero(~keep if params["invert"] else keep).tolist()
    cap = (1 << gap_bits) - 1
    gaps = np.diff(listed, prepend=-1) - 1
    symbols = len(listed) + int((gaps // cap).sum())
    assert len(streams["positions"]) == -(-symbols * gap_bits // 8)
    assert streams["positions"] == ref_gap_stream(listed, gap_bits)
    assert len(streams["positions"]) <= codec.stream_bounds(spec, params)["positions"]
    assert "positions" not in codec.stream_lengths(spec, params)


@given(sparse_arrays(), INNER)
def test_bitmask_is_one_bit_per_element_lsb_first(pair, inner):
    arr, dtype = pair
    codec = Sparse("bitmask", inner)
    spec, streams, params = encode(arr, dtype, codec)
    assert streams["positions"] == np.packbits(survivors(arr), bitorder="little").tobytes()
    assert codec.stream_lengths(spec, params)["positions"] == -(-arr.size // 8)
    assert "positions" not in codec.stream_bounds(spec, params)


def test_negative_zero_and_nan_payloads_survive():
    arr = np.array([0.0, -0.0, 0.0, np.nan, 0.0, 1e-45, 0.0], np.float32)
    arr.view(np.uint32)[3] = 0x7F800001
    for codec in (Sparse("bitmask", Raw()), Sparse("gaps", BytePlanes(), 3)):
        spec, streams, params = encode(arr, "float32", codec)
        assert params["count"] == 3
        H.assert_same_tensor(codec.decode(streams, spec, params), arr, "float32")


@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (1,), (2, 3)])
@pytest.mark.parametrize("fill", [0, 1])
def test_empty_zero_d_all_zero_and_full_tensors(shape, fill):
    for dtype in S.DTYPES:
        arr = np.full(shape, fill, H.STORAGE[dtype])
        for codec in (Sparse("bitmask", Raw()), Sparse("gaps", BytePlanes(), 1), Sparse("gaps", Raw(), 8)):
            _, out = pipeline_round_trip(arr, dtype, codec)
            H.assert_same_tensor(out, arr, dtype)


@pytest.mark.parametrize("gap_bits", range(1, 9))
def test_long_runs_use_filler_symbols(gap_bits):
    n = 3000
    arr = np.zeros(n, np.int16)
    at = [0, 1, 2 + 254, 2 + 255 + 255, 2999]
    arr[at] = 7
    codec = Sparse("gaps", Raw(), gap_bits)
    spec, streams, params = encode(arr, "int16", codec)
    assert streams["positions"] == ref_gap_stream(at, gap_bits)
    H.assert_same_tensor(codec.decode(streams, spec, params), arr, "int16")


def test_nested_quantizing_codecs_store_the_survivors():
    arr = np.array([0, 0, 1.5, 0, -2.0, 0, 1.5], np.float32)
    for inner in (Codebook(2), Affine(8, 4)):
        _, out = pipeline_round_trip(arr, "float32", Sparse("gaps", inner, 5))
        assert np.array_equal(out == 0, arr == 0) and np.allclose(out, arr, atol=0.01)


# -- efficiency ----------------------------------------------------------------------------------


def compressors():
    out = {"zstd-19": Zstd(19), "zstd-entropy": ENTROPY}
    huffman = registered().get("nnar.huffman")
    if huffman is not None:
        out["huffman"] = huffman()
    return out


@pytest.mark.parametrize("density", [0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_positions_cost_at_most_110_percent_of_the_entropy(density):
    """An iid mask over 1M elements: the positions stream (gaps, 8 bits, or bitmask) after the
    best of the entropy coders costs at most 1.10 * n * H(density) bits."""
    n = 1_000_000
    mask = np.random.default_rng(int(density * 1000)).random(n) < density
    sizes = {}
    for codec in (Sparse("gaps", Raw(), 8), Sparse("bitmask", Raw())):
        positions = bytes(codec.encode(mask, TensorSpec("bool", (n,)))[0]["positions"])
        for name, c in compressors().items():
            data, params = c.encode(positions)
            assert bytes(c.decode(data, params, len(positions))) == positions
            sizes[f"{codec.positions}+{name}"] = 8 * len(data)
    ratios = {k: round(v / entropy_bits(density, n), 4) for k, v in sizes.items()}
    assert min(ratios.values()) <= 1.10, ratios


# -- hostile positions ---------------------------------------------------------------------------


def gap_case(data, min_size: int = 0):
    """A valid gaps encoding with inner raw: (codec, spec, streams, params, listed positions)."""
    arr, dtype = data.draw(sparse_arrays().filter(lambda p: p[0].size >= min_size))
    codec = Sparse("gaps", Raw(), data.draw(GAP_BITS))
    spec, streams, params = encode(arr, dtype, codec)
    keep = survivors(arr)
    listed = np.flatnonzero(~keep if params["invert"] else keep).tolist()
    return codec, spec, streams, params, listed


def listed_count(spec, params):
    return spec.size - params["count"] if params["invert"] else params["count"]


def decode_or_reference(codec, spec, streams, params):
    """Decode a tampered positions stream: CodecDataError exactly when the reference says it is
    not the encoding of ``listed`` positions inside the tensor; otherwise those positions."""
    want = ref_parse(streams["positions"], spec.size, listed_count(spec, params), codec.gap_bits)
    if want is None:
        with pytest.raises(nnar.CodecDataError):
            codec.decode(streams, spec, params)
        return None
    out = codec.decode(streams, spec, params)
    keep = survivors(out)  # the stored values are all nonzero, so they mark the positions
    assert np.flatnonzero(~keep if params["invert"] else keep).tolist() == want
    return want


@given(st.data())
def test_truncated_gap_stream_is_codec_data_error(data):
    codec, spec, streams, params, listed = gap_case(data)
    if not streams["positions"]:
        return
    cut = data.draw(st.integers(0, len(streams["positions"]) - 1))
    streams["positions"] = streams["positions"][:cut]
    with pytest.raises(nnar.CodecDataError):
        codec.decode(streams, spec, params)


@given(st.data())
def test_trailing_bytes_after_the_gap_stream_are_codec_data_error(data):
    codec, spec, streams, params, listed = gap_case(data)
    streams["positions"] += data.draw(st.binary(min_size=1, max_size=4))
    with pytest.raises(nnar.CodecDataError):
        codec.decode(streams, spec, params)


@given(st.data())
def test_nonzero_padding_bits_after_the_last_gap_are_codec_data_error(data):
    codec, spec, streams, params, listed = gap_case(data)
    used_bits = len(ref_gap_symbols(listed, codec.gap_bits)) * codec.gap_bits
    pad = -used_bits % 8
    if pad == 0:
        return
    last = bytearray(streams["positions"])
    last[-1] |= data.draw(st.integers(1, (1 << pad) - 1)) << (8 - pad)
    streams["positions"] = bytes(last)
    with pytest.raises(nnar.CodecDataError, match="padding"):
        codec.decode(streams, spec, params)


@given(st.data())
def test_a_gap_past_the_end_of_the_tensor_is_codec_data_error(data):
    codec, spec, streams, params, listed = gap_case(data, min_size=1)
    if not listed:
        return
    beyond = listed[:-1] + [spec.size + data.draw(st.integers(0, 600))]
    if len(beyond) > 1 and beyond[-2] >= beyond[-1]:
        return
    streams["positions"] = ref_gap_stream(beyond, codec.gap_bits)
    with pytest.raises(nnar.CodecDataError):
        codec.decode(streams, spec, params)


@given(st.data())
def test_a_stream_listing_another_count_is_codec_data_error(data):
    """The stored count says k positions; the stream lists k - 1 or k + 1 (the nested values
    stream matches the count, so only the positions are wrong)."""
    codec, spec, streams, params, listed = gap_case(data, min_size=2)
    free = sorted(set(range(spec.size)) - set(listed))
    if data.draw(st.booleans()) and listed:
        other = sorted(set(listed) - {data.draw(st.sampled_from(listed))})
    elif free:
        other = sorted(set(listed) | {data.draw(st.sampled_from(free))})
    else:
        return
    streams["positions"] = ref_gap_stream(other, codec.gap_bits)
    # refused, unless the bytes happen to be an exact encoding of the stated count too (one more
    # position right after the last, with 1-bit gaps, adds one zero bit that may be padding)
    decode_or_reference(codec, spec, streams, params)


@given(st.data())
def test_any_damage_to_a_gap_stream_is_refused_or_is_another_exact_encoding(data):
    codec, spec, streams, params, listed = gap_case(data)
    pos = bytearray(streams["positions"])
    for _ in range(data.draw(st.integers(1, 3))):
        how = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if how == "flip" and pos:
            pos[data.draw(st.integers(0, len(pos) - 1))] ^= data.draw(st.integers(1, 255))
        elif how == "insert":
            pos.insert(data.draw(st.integers(0, len(pos))), data.draw(st.integers(0, 255)))
        elif pos:
            del pos[data.draw(st.integers(0, len(pos) - 1))]
    streams["positions"] = bytes(pos)
    decode_or_reference(codec, spec, streams, params)


@given(sparse_arrays().filter(lambda p: p[0].size > 0), INNER, st.data())
def test_bitmask_corruption_is_codec_data_error(pair, inner, data):
    arr, dtype = pair
    codec = Sparse("bitmask", inner)
    spec, streams, params = encode(arr, dtype, codec)
    pos = bytearray(streams["positions"])
    n = arr.size
    how = data.draw(st.sampled_from(["count", "padding", "trailing", "truncated"]))
    if how == "count":  # one more or one fewer marked element than the count
        i = data.draw(st.integers(0, n - 1))
        pos[i // 8] ^= 1 << (i % 8)
    elif how == "padding":
        if n % 8 == 0:
            return
        pos[-1] |= data.draw(st.integers(1, (1 << (8 - n % 8)) - 1)) << (n % 8)
    elif how == "trailing":
        pos += data.draw(st.binary(min_size=1, max_size=3))
    else:
        del pos[data.draw(st.integers(0, len(pos) - 1)):]
    streams["positions"] = bytes(pos)
    with pytest.raises(nnar.CodecDataError):
        codec.decode(streams, spec, params)


@given(st.data())
def test_raw_length_above_the_bound_is_refused_before_decompressing(data):
    arr, dtype = data.draw(sparse_arrays())
    codec = Sparse("gaps", data.draw(INNER), data.draw(GAP_BITS))
    spec = TensorSpec(dtype, arr.shape)
    enc = P.encode(arr, spec, P.Pipeline(array_bytes=codec, stream_chains=((Zstd(1),),)))
    segments = segments_of(enc)
    bound = codec.stream_bounds(spec, enc.pipeline[-1]["params"])["positions"]
    chain, length, blob = segments["positions"]
    assert length <= bound
    segments["positions"] = (chain, bound + data.draw(st.sampled_from([1, 2, 1 << 40])), blob)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Zstd, "decode", lambda *a: pytest.fail("decompressed a stream before checking its bound"))
        with pytest.raises(nnar.CodecDataError, match="at most"):
            P.decode(spec, enc.pipeline, segments, nnar.DEFAULT_LIMITS, "tensor 'w'")


# -- hostile params ------------------------------------------------------------------------------


@given(sparse_arrays(), codecs(), st.data())
def test_bad_params_are_codec_data_error(pair, codec, data):
    arr, dtype = pair
    spec, streams, params = encode(arr, dtype, codec)
    key = data.draw(st.sampled_from(["count", "invert", "values", "missing"]))
    bad = dict(params)
    if key == "count":
        bad["count"] = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=arr.size + 1),
                                           st.sampled_from([True, 1.0, "1", None])))
    elif key == "invert":
        bad["invert"] = data.draw(st.sampled_from([1, 0, "true", None] + ([True] if codec.positions == "bitmask" else [])))
    elif key == "values":
        bad["values"] = data.draw(st.sampled_from([None, [], "raw", 0, {"size": 2}, {"count": 1}]))
    else:
        del bad[data.draw(st.sampled_from(sorted(bad)))]
    for call in (lambda: codec.decode(streams, spec, bad), lambda: codec.stream_names(spec, bad),
                 lambda: codec.stream_bounds(spec, bad)):
        with pytest.raises(nnar.CodecDataError):
            call()


# -- config --------------------------------------------------------------------------------------

RAW = {"codec": "nnar.raw", "config": {}}


def test_registered_under_its_id():
    assert get_codec_class("nnar.sparse") is Sparse
    assert Sparse.kind == "array-bytes" and Sparse.param_keys == {"count", "invert", "values"}


@given(codecs(inner=st.sampled_from([Raw(), BytePlanes(), Codebook(3), Affine(4, 32)])))
def test_config_round_trip(codec):
    cfg = codec.get_config()
    assert cfg["values"] == {"codec": codec.inner.codec_id, "config": codec.inner.get_config()}
    assert ("gap_bits" in cfg) is (codec.positions == "gaps")
    again = Sparse.from_config(cfg)
    assert again == codec and hash(again) == hash(codec) and again.inner == codec.inner
    assert Sparse(codec.positions, cfg["values"], codec.gap_bits) == codec


@pytest.mark.parametrize("inner", [
    Sparse("bitmask", Raw()), Sparse("gaps", Raw(), 8), Zstd(3), Cast("float16"),
], ids=repr)
def test_nested_sparse_or_a_codec_of_another_kind_is_refused(inner):
    for positions, gap_bits in (("bitmask", None), ("gaps", 5)):
        with pytest.raises(nnar.CodecDataError):
            Sparse(positions, inner, gap_bits)
        with pytest.raises(nnar.CodecDataError):
            Sparse.from_config({"positions": positions, "values": {"codec": inner.codec_id, "config": inner.get_config()},
                                **({"gap_bits": gap_bits} if gap_bits else {})})


@pytest.mark.parametrize("config", [
    {"positions": "runs", "values": RAW},
    {"positions": "Bitmask", "values": RAW},
    {"positions": None, "values": RAW},
    {"positions": ["gaps"], "values": RAW, "gap_bits": 8},
    {"values": RAW},
    {"positions": "bitmask", "values": RAW, "gap_bits": 8},
    {"positions": "bitmask", "values": RAW, "gap_bits": 0},
    {"positions": "gaps", "values": RAW},
    {"positions": "gaps", "values": RAW, "gap_bits": None},
    {"positions": "gaps", "values": RAW, "gap_bits": 0},
    {"positions": "gaps", "values": RAW, "gap_bits": 9},
    {"positions": "gaps", "values": RAW, "gap_bits": True},
    {"positions": "gaps", "values": RAW, "gap_bits": 8.0},
    {"positions": "gaps", "values": RAW, "gap_bits": "8"},
    {"positions": "gaps", "gap_bits": 8},
    {"positions": "gaps", "gap_bits": 8, "values": None},
    {"positions": "gaps", "gap_bits": 8, "values": "nnar.raw"},
    {"positions": "gaps", "gap_bits": 8, "values": {"codec": "nnar.raw"}},
    {"positions": "gaps", "gap_bits": 8, "values": {"codec": "nnar.raw", "config": {}, "params": {}}},
    {"positions": "gaps", "gap_bits": 8, "values": {"codec": "nnar.raw", "config": {"x": 1}}},
    {"positions": "gaps", "gap_bits": 8, "values": {"codec": "nnar.codebook", "config": {"bits": 99}}},
    {"positions": "gaps", "gap_bits": 8, "values": RAW, "invert": True},
    None, [], "gaps",
], ids=repr)
def test_hostile_config_is_codec_data_error(config):
    with pytest.raises(nnar.CodecDataError):
        Sparse.from_config(config)


@pytest.mark.parametrize("codec_id", ["nnar.nope", "x.raw", "NNAR.RAW", ["nnar.raw"], None])
def test_an_unknown_nested_codec_is_unsupported_codec(codec_id):
    """Looked up before its config is read (spec step 1): unknown is unsupported, not corrupt."""
    with pytest.raises(nnar.UnsupportedCodec):
        Sparse.from_config({"positions": "gaps", "gap_bits": 8, "values": {"codec": codec_id, "config": {"x": 1}}})


def test_a_nested_codec_is_checked_before_its_config_is_read():
    with pytest.raises(nnar.CodecDataError, match="other than nnar.sparse"):
        Sparse.from_config({"positions": "bitmask", "values": {"codec": "nnar.sparse", "config": None}})


def nested_config(depth: int) -> dict:
    cfg = RAW
    for _ in range(depth):
        cfg = {"codec": "nnar.sparse", "config": {"positions": "bitmask", "values": cfg}}
    return cfg


def test_deeply_nested_config_is_codec_data_error():
    with pytest.raises(nnar.CodecDataError):
        Sparse.from_config(nested_config(400)["config"])


def test_deeply_nested_stored_stage_is_codec_data_error():
    stage = {**nested_config(400), "params": {}}
    with pytest.raises(nnar.CodecDataError):
        P.decode(TensorSpec("uint8", (1,)), [stage], {"positions": ([], 1, b"\x00")}, nnar.DEFAULT_LIMITS, "tensor 'w'")


# -- the spec's examples -------------------------------------------------------------------------

SPEC_ARRAY = np.zeros((4, 5), "<f4")
SPEC_ARRAY.reshape(-1)[[2, 11, 13, 19]] = [1.5, -0.0, 2.0, -1.0]
SPEC_VALUES = bytes.fromhex("0000C03F 00000080 00000040 000080BF".replace(" ", ""))
SPEC_SPEC = TensorSpec("float32", (4, 5))
SPEC_PARAMS = {"count": 4, "invert": False, "values": {}}


@pytest.mark.parametrize("codec, positions", [
    (Sparse("bitmask", Raw()), "042808"), (Sparse("gaps", Raw(), 3), "7A52"),
], ids=["bitmask", "gaps3"])
def test_the_spec_example(codec, positions):
    spec, streams, params = encode(SPEC_ARRAY, "float32", codec)
    assert params == SPEC_PARAMS
    assert streams == {"positions": bytes.fromhex(positions), "values.data": SPEC_VALUES}
    H.assert_same_tensor(codec.decode(streams, spec, params), SPEC_ARRAY, "float32")


def test_the_spec_example_bound():
    assert Sparse("gaps", Raw(), 3).stream_bounds(SPEC_SPEC, SPEC_PARAMS)["positions"] == 3
    stage = {"codec": "nnar.sparse", "config": Sparse("gaps", Raw(), 3).get_config(), "params": SPEC_PARAMS}
    segments = {"positions": ([], 4, b"\x7a\x52\x00\x00"), "values.data": ([], 16, SPEC_VALUES)}
    with pytest.raises(nnar.CodecDataError, match="at most 3"):
        P.decode(SPEC_SPEC, [stage], segments, nnar.DEFAULT_LIMITS, "tensor 'w'")


@pytest.mark.parametrize("codec, positions", [
    (Sparse("gaps", Raw(), 3), "7A5200"), (Sparse("gaps", Raw(), 3), "7AD2"), (Sparse("gaps", Raw(), 3), "7A62"),
    (Sparse("bitmask", Raw()), "042818"), (Sparse("bitmask", Raw()), "042809"),
], ids=["gaps-trailing", "gaps-padding", "gaps-past-the-end", "bitmask-padding", "bitmask-count"])
def test_the_spec_corrupt_examples(codec, positions):
    with pytest.raises(nnar.CodecDataError):
        codec.decode({"positions": bytes.fromhex(positions), "values.data": SPEC_VALUES}, SPEC_SPEC, SPEC_PARAMS)


def test_the_spec_example_with_a_nested_codebook():
    arr = np.zeros((4, 5), "<f4")
    arr.reshape(-1)[[2, 11, 13, 19]] = [1.5, -0.5, 1.5, -0.5]
    codec = Sparse("gaps", Codebook(1), 3)
    streams = {"positions": bytes.fromhex("7A52"), "values.codebook": bytes.fromhex("000000BF0000C03F"),
               "values.indices": b"\x05"}
    params = {"count": 4, "invert": False, "values": {"size": 2}}
    H.assert_same_tensor(codec.decode(streams, SPEC_SPEC, params), arr, "float32")
    _, enc_streams, enc_params = encode(arr, "float32", codec)
    assert enc_params == params and enc_streams["positions"] == streams["positions"]


def test_the_spec_invert_example():
    arr = np.array([5, -3, 7, 0, 1, 2, 9, -8], np.int8)
    spec, streams, params = encode(arr, "int8", Sparse("gaps", Raw(), 2))
    assert params == {"count": 7, "invert": True, "values": {}}
    assert streams == {"positions": b"\x03", "values.data": bytes.fromhex("05FD07010209F8")}
    H.assert_same_tensor(Sparse("gaps", Raw(), 2).decode(streams, spec, params), arr, "int8")
