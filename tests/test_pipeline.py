"""The pipeline: encode/decode laws and the grammar a stored pipeline must follow (spec §6):
array→array stages, then exactly one array→bytes stage whose streams are exactly the segments,
each with its own bytes→bytes chain; every size within the limits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import nnar
from nnar import pipeline as P
from nnar.codecs import ArrayArrayCodec, _REGISTRY, register
from nnar.codecs.abc import TensorSpec
from nnar.codecs.byteplanes import BytePlanes
from nnar.codecs.raw import Raw
from nnar.codecs.zstd import Zstd
from nnar.errors import CodecDataError

import helpers as H
import strategies as S

LIMITS = nnar.DEFAULT_LIMITS
RAW = {"codec": "nnar.raw", "config": {}, "params": {}}
PLANES = {"codec": "nnar.byteplanes", "config": {}, "params": {}}
ZSTD = {"codec": "nnar.zstd", "config": {"level": 3}, "params": {}}


# -- array→array codecs that exist only in these tests (nnar has none yet) -----------------------


class Xor(ArrayArrayCodec):
    param_keys = frozenset({"masked"})
    """Lossless: XOR every element's bits with ``mask``."""

    codec_id = "test.xor"

    def __init__(self, mask: int = 0):
        if not isinstance(mask, int) or not 0 <= mask < 256:
            raise CodecDataError("test.xor: bad mask")
        self.mask = mask

    def get_config(self):
        return {"mask": self.mask}

    def _apply(self, array, spec):
        u = np.ascontiguousarray(array).view(np.uint8) ^ np.uint8(self.mask)
        return u.view(spec.storage_dtype).reshape(spec.shape)

    def encode(self, array, spec):
        return self._apply(array, spec), {"masked": array.size}

    def decode(self, array, spec, params):
        return self._apply(array, spec)


class Inflate(ArrayArrayCodec):
    """Claims its output is ``factor`` times longer: for the intermediate-size limit."""

    codec_id = "test.inflate"
    param_keys = frozenset({"factor"})

    def encoded_spec(self, spec, params):
        return TensorSpec(spec.dtype, (spec.size * params["factor"],))

    def decode(self, array, spec, params):
        raise AssertionError("must be refused before any decoding")


class Liar(ArrayArrayCodec):
    """Decodes to the wrong dtype, or fails with a stray builtin error."""

    codec_id = "test.liar"

    def __init__(self, how: str = "dtype"):
        self.how = how

    def get_config(self):
        return {"how": self.how}

    def encode(self, array, spec):
        return array, {}

    def decode(self, array, spec, params):
        if self.how == "dtype":
            return array.astype(np.float64)
        if self.how == "shape":
            return array.reshape(-1)[:0]
        raise ValueError("stray error from a codec's own code")


@pytest.fixture(scope="module", autouse=True)
def test_codecs():
    for cls in (Xor, Inflate, Liar):
        register(cls)
    yield
    for cls in (Xor, Inflate, Liar):
        del _REGISTRY[cls.codec_id]


def stage(codec_id, **config):
    return {"codec": codec_id, "config": config, "params": {}}


def segments_of(enc: P.EncodedTensor) -> dict:
    return {s.name: (s.codecs, s.raw_length, s.data) for s in enc.segments}


def round_trip(arr, spec, pipeline, **kw):
    enc = P.encode(arr, spec, pipeline)
    return enc, P.decode(spec, enc.pipeline, segments_of(enc), LIMITS, "tensor 'x'", **kw)


# -- laws ----------------------------------------------------------------------------------------

zstd_chains = st.sampled_from([
    ((),), ((Zstd(1),),), ((), (Zstd(3),)), ((Zstd(1), Zstd(2)),), ((), (Zstd(-1),), (Zstd(5), Zstd(1))),
])
pipelines = st.builds(
    P.Pipeline,
    array_codecs=st.lists(st.builds(Xor, st.integers(0, 255)), max_size=2).map(tuple),
    array_bytes=st.sampled_from([Raw(), BytePlanes()]),
    stream_chains=zstd_chains,
)


@given(S.storage_arrays(), pipelines)
def test_any_pipeline_round_trips_exactly(pair, pipeline):
    arr, dtype = pair
    spec = TensorSpec(dtype, arr.shape)
    enc, out = round_trip(arr, spec, pipeline)
    H.assert_same_tensor(out, arr, dtype)
    assert [s["codec"] for s in enc.pipeline] == [c.codec_id for c in (*pipeline.array_codecs, pipeline.array_bytes)]
    assert enc.stored_bytes == sum(len(s.data) for s in enc.segments)


@given(S.storage_arrays(), pipelines)
def test_each_stream_keeps_the_smallest_of_its_chains(pair, pipeline):
    arr, dtype = pair
    spec = TensorSpec(dtype, arr.shape)
    enc = P.encode(arr, spec, pipeline)
    for seg in enc.segments:
        sizes = []
        for chain in pipeline.stream_chains:
            single = P.encode(arr, spec, P.Pipeline(pipeline.array_codecs, pipeline.array_bytes, (chain,)))
            sizes.append(len(next(s for s in single.segments if s.name == seg.name).data))
        assert len(seg.data) == min(sizes)
        assert [c["codec"] for c in seg.codecs] == [c.codec_id for c in pipeline.stream_chains[sizes.index(min(sizes))]]


@given(S.storage_arrays(), pipelines)
def test_stage_records_hold_codec_config_params(pair, pipeline):
    arr, dtype = pair
    enc = P.encode(arr, TensorSpec(dtype, arr.shape), pipeline)
    for rec in [*enc.pipeline, *(c for s in enc.segments for c in s.codecs)]:
        assert set(rec) == {"codec", "config", "params"}
        assert type(_REGISTRY[rec["codec"]].from_config(rec["config"])).codec_id == rec["codec"]
    assert [r["params"] for r in enc.pipeline[:-1]] == [{"masked": arr.size}] * len(pipeline.array_codecs)


def test_incompressible_streams_are_stored_verbatim_and_runs_compressed():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8)
    enc = P.encode(noise, TensorSpec("uint8", (4096,)), P.Pipeline(stream_chains=((), (Zstd(3),))))
    assert enc.segments[0].codecs == [] and len(enc.segments[0].data) == 4096
    zeros = np.zeros(4096, np.uint8)
    enc = P.encode(zeros, TensorSpec("uint8", (4096,)), P.Pipeline(stream_chains=((), (Zstd(3),))))
    assert [c["codec"] for c in enc.segments[0].codecs] == ["nnar.zstd"] and len(enc.segments[0].data) < 100


def test_describe():
    assert P.Pipeline().describe() == "nnar.raw"
    assert P.Pipeline((Xor(1),), BytePlanes()).describe() == "test.xor | nnar.byteplanes"


# -- the grammar of a stored pipeline ------------------------------------------------------------

SPEC = TensorSpec("float32", (2, 3))
DATA = np.arange(6, dtype="<f4").reshape(2, 3)


def decode(stages, segments=None, *, spec=SPEC, limits=LIMITS, strict=True):
    if segments is None:
        segments = {"data": ([], spec.nbytes, DATA.tobytes())}
    return P.decode(spec, stages, segments, limits, "tensor 'w'", strict)


def test_the_reference_pipeline_decodes():
    assert np.array_equal(decode([RAW]), DATA)
    assert np.array_equal(decode([stage("test.xor", mask=0), RAW]), DATA)


@pytest.mark.parametrize("stages", [[], None, {}, "nnar.raw", RAW, 0], ids=repr)
def test_pipeline_must_be_a_non_empty_list(stages):
    with pytest.raises(nnar.BadDescriptor):
        decode(stages)


@pytest.mark.parametrize("stages", [
    [ZSTD],  # bytes→bytes where the array→bytes stage belongs
    [RAW, ZSTD],
    [RAW, stage("test.xor")],  # array→bytes must be last
    [RAW, RAW],
    [stage("test.xor")],  # no array→bytes stage at all
    [ZSTD, RAW],
    [PLANES, stage("test.xor"), RAW],
], ids=lambda s: "|".join(x["codec"] for x in s))
def test_array_bytes_stage_must_be_last_and_alone(stages):
    with pytest.raises(nnar.BadDescriptor, match="array-bytes"):
        decode(stages)


@pytest.mark.parametrize("codec_id", ["nnar.lz4", "NNAR.RAW", "", "nnar.raw ", 5, None, ["nnar.raw"], {"a": 1}, b"nnar.raw"],
                         ids=repr)
def test_unknown_codec_id_is_unsupported_codec(codec_id):
    bad = {"codec": codec_id, "config": {}, "params": {}}
    with pytest.raises(nnar.UnsupportedCodec) as e:
        decode([bad])
    assert not isinstance(e.value, nnar.CorruptArchive)  # valid, just not known here (spec §10)
    with pytest.raises(nnar.UnsupportedCodec):
        decode([stage("test.xor"), bad])
    with pytest.raises(nnar.UnsupportedCodec):
        decode([RAW], {"data": ([bad], SPEC.nbytes, DATA.tobytes())})


def test_too_many_stages_is_limit_exceeded():
    with pytest.raises(nnar.LimitExceeded):
        decode([stage("test.xor")] * LIMITS.max_stages + [RAW])
    decode([stage("test.xor")] * (LIMITS.max_stages - 1) + [RAW])  # exactly at the limit is fine
    tight = LIMITS.replace(max_stages=2)
    decode([stage("test.xor"), RAW], limits=tight)
    with pytest.raises(nnar.LimitExceeded):
        decode([stage("test.xor"), stage("test.xor"), RAW], limits=tight)


def test_too_many_codecs_on_a_segment_is_limit_exceeded():
    data = DATA.tobytes()
    for _ in range(3):
        data = Zstd(1).encode(data)[0]
    chain = [ZSTD] * 3
    assert np.array_equal(decode([RAW], {"data": (chain, SPEC.nbytes, data)}), DATA)
    with pytest.raises(nnar.LimitExceeded):
        decode([RAW], {"data": (chain, SPEC.nbytes, data)}, limits=LIMITS.replace(max_stages=2))
    with pytest.raises(nnar.LimitExceeded):
        decode([RAW], {"data": ([ZSTD] * (LIMITS.max_stages + 1), SPEC.nbytes, data)})


def test_intermediate_size_beyond_the_limit_is_refused_before_decoding():
    big = {"codec": "test.inflate", "config": {}, "params": {"factor": 1 << 40}}
    with pytest.raises(nnar.LimitExceeded):
        decode([big, RAW])


@pytest.mark.parametrize("record", [
    ["nnar.raw", {}, {}], "nnar.raw", None,
    {"codec": "nnar.raw", "config": {}},
    {"codec": "nnar.raw", "params": {}},
    {"config": {}, "params": {}},
    {"codec": "nnar.raw", "config": {}, "params": []},
    {"codec": "nnar.raw", "config": {}, "params": None},
], ids=repr)
def test_malformed_stage_map_is_bad_descriptor(record):
    with pytest.raises(nnar.BadDescriptor):
        decode([record])


def test_unknown_stage_key_is_bad_descriptor_unless_from_a_newer_minor():
    record = {**RAW, "hint": 1}
    with pytest.raises(nnar.BadDescriptor):
        decode([record])
    assert np.array_equal(decode([record], strict=False), DATA)


@pytest.mark.parametrize("config", [None, [], "x", {"level": 3}], ids=repr)
def test_bad_config_is_codec_data_error(config):
    with pytest.raises(nnar.CodecDataError):
        decode([{"codec": "nnar.raw", "config": config, "params": {}}])


def test_bad_config_of_a_segment_codec_is_codec_data_error():
    enc = Zstd().encode(DATA.tobytes())[0]
    for config in [{"level": 99}, {"level": "3"}, {"lvl": 3}, None]:
        with pytest.raises(nnar.CodecDataError):
            decode([RAW], {"data": ([{**ZSTD, "config": config}], SPEC.nbytes, enc)})


@pytest.mark.parametrize("names", [[], ["p0"], ["data", "p0"], ["DATA"], ["data", "data2"]], ids=repr)
def test_segment_names_must_be_the_streams(names):
    segments = {n: ([], SPEC.nbytes, DATA.tobytes()) for n in names}
    with pytest.raises(nnar.BadDescriptor):
        decode([RAW], segments)


def test_byteplanes_segments_must_be_its_planes():
    enc = P.encode(DATA, SPEC, P.Pipeline(array_bytes=BytePlanes()))
    segs = segments_of(enc)
    assert sorted(segs) == ["p0", "p1", "p2", "p3"]
    assert np.array_equal(decode([PLANES], segs), DATA)
    for victim in segs:
        missing = {k: v for k, v in segs.items() if k != victim}
        with pytest.raises(nnar.BadDescriptor):
            decode([PLANES], missing)
    with pytest.raises(nnar.BadDescriptor):
        decode([PLANES], {**segs, "p4": segs["p0"]})


@pytest.mark.parametrize("chain", [RAW, None, "nnar.zstd", {"codec": "nnar.zstd"}], ids=repr)
def test_segment_codecs_must_be_a_list(chain):
    with pytest.raises(nnar.BadDescriptor):
        decode([RAW], {"data": (chain, SPEC.nbytes, DATA.tobytes())})


@pytest.mark.parametrize("chain", [[RAW], [PLANES], [stage("test.xor")], [ZSTD, RAW]], ids=repr)
def test_segment_codecs_must_be_bytes_to_bytes(chain):
    data = Zstd().encode(DATA.tobytes())[0]
    with pytest.raises(nnar.BadDescriptor, match="bytes-bytes"):
        decode([RAW], {"data": (chain, SPEC.nbytes, data)})


def test_decoded_segment_must_be_exactly_raw_length():
    data = DATA.tobytes()
    with pytest.raises(nnar.CodecDataError):
        decode([RAW], {"data": ([], SPEC.nbytes, data[:-1])})
    with pytest.raises(nnar.CodecDataError):
        decode([RAW], {"data": ([], SPEC.nbytes + 1, data + b"\0")})
    enc = Zstd().encode(data)[0]
    with pytest.raises(nnar.CodecDataError):  # the frame declares more than raw_length allows
        decode([RAW], {"data": ([ZSTD], SPEC.nbytes - 1, enc)})
    short = Zstd().encode(data[:-4])[0]
    with pytest.raises(nnar.CodecDataError):
        decode([RAW], {"data": ([ZSTD], SPEC.nbytes, short)})


@pytest.mark.parametrize("how", ["dtype", "shape"])
def test_pipeline_output_must_have_the_tensor_dtype_and_shape(how):
    with pytest.raises(nnar.CodecDataError, match="pipeline output"):
        decode([stage("test.liar", how=how), RAW])


def test_stray_builtin_errors_from_a_codec_become_codec_data_error_with_where():
    with pytest.raises(nnar.CodecDataError) as e:
        decode([stage("test.liar", how="crash"), RAW])
    assert e.value.where == "tensor 'w'" and "stray error" in str(e.value)


def test_errors_say_which_tensor():
    for stages in ([], [ZSTD], [stage("nnar.nope")], [{"codec": "nnar.raw", "config": {"x": 1}, "params": {}}]):
        with pytest.raises(nnar.NnarError) as e:
            decode(stages)
        assert e.value.where == "tensor 'w'" and "tensor 'w'" in str(e.value)
    with pytest.raises(nnar.CodecDataError) as e:
        decode([RAW], {"data": ([], SPEC.nbytes, b"")})
    assert "tensor 'w'" in str(e.value)


def test_check_pipeline_returns_the_spec_at_the_array_bytes_stage():
    inflate = {"codec": "test.inflate", "config": {}, "params": {"factor": 3}}
    aa, (ab, params), spec = P.check_pipeline(SPEC, [stage("test.xor", mask=1), inflate, RAW], LIMITS, "here")
    assert [type(c) for c, _, _ in aa] == [Xor, Inflate] and isinstance(ab, Raw) and params == {}
    assert [s for _, _, s in aa] == [SPEC, SPEC] and spec == TensorSpec("float32", (18,))


def test_params_a_codec_does_not_define_are_codec_data_error():
    odd = {"scale": 2}
    with pytest.raises(nnar.CodecDataError):
        decode([{**RAW, "params": odd}])
    with pytest.raises(nnar.CodecDataError):
        decode([{**PLANES, "params": odd}], segments_of(P.encode(DATA, SPEC, P.Pipeline(array_bytes=BytePlanes()))))
    enc = Zstd().encode(DATA.tobytes())[0]
    with pytest.raises(nnar.CodecDataError):
        decode([RAW], {"data": ([{**ZSTD, "params": odd}], SPEC.nbytes, enc)})
