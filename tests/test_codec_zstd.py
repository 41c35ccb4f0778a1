"""Laws of ``nnar.zstd``: exactly one Zstandard frame that declares its content size, decoded
to at most ``max_length`` bytes; anything else is ``CodecDataError`` (spec/codecs/zstd.md)."""

from __future__ import annotations

import struct

import pytest
import zstandard
from hypothesis import given, strategies as st

import nnar
from nnar.codecs import get_codec_class
from nnar.codecs.zstd import ENTROPY, MAX_LEVEL, MIN_LEVEL, PARAMETERS, Zstd

import strategies as S

# high levels are slow on big inputs; the law is the same at every level
levels = st.one_of(st.integers(-5, 9), st.sampled_from([MIN_LEVEL, -1000, 19, MAX_LEVEL]))


def frame(data: bytes, **kw) -> bytes:
    kw.setdefault("write_content_size", True)
    return zstandard.ZstdCompressor(level=3, **kw).compress(data)


@given(S.byte_strings(), levels)
def test_round_trip_is_exact(data, level):
    codec = Zstd(level)
    enc, params = codec.encode(data)
    assert bytes(codec.decode(enc, params, len(data))) == data
    # a larger bound is fine too: max_length bounds, it does not prescribe
    assert bytes(codec.decode(enc, params, len(data) + 100)) == data


@given(S.byte_strings(), levels)
def test_decoding_does_not_depend_on_the_level(data, level):
    enc, params = Zstd(level).encode(data)
    assert bytes(Zstd().decode(enc, params, len(data))) == data


@given(S.byte_strings(max_size=1024), levels)
def test_encoder_is_deterministic_and_writes_content_size_without_checksum(data, level):
    a, pa = Zstd(level).encode(data)
    b, pb = Zstd(level).encode(bytes(data))
    assert bytes(a) == bytes(b) and pa == pb == {}
    fp = zstandard.get_frame_parameters(bytes(a))
    assert fp.content_size == len(data)
    assert not fp.has_checksum  # the record's body_crc covers these bytes already


@given(S.byte_strings(max_size=2048))
def test_decoder_accepts_memoryviews(data):
    enc, _ = Zstd().encode(data)
    padded = bytearray(b"xx" + bytes(enc) + b"yy")
    assert bytes(Zstd().decode(memoryview(padded)[2:-2], {}, len(data))) == data


def test_runs_compress():
    data = bytes(10_000)
    enc, _ = Zstd().encode(data)
    assert len(enc) < 100


# -- config --------------------------------------------------------------------------------------


def test_registered_under_its_id():
    assert get_codec_class("nnar.zstd") is Zstd
    assert Zstd.kind == "bytes-bytes" and Zstd.lossless


@given(st.integers(MIN_LEVEL, MAX_LEVEL))
def test_config_round_trip(level):
    codec = Zstd(level)
    assert codec.get_config() == {"level": level}
    again = Zstd.from_config(codec.get_config())
    assert again == codec and hash(again) == hash(codec) and again.level == level
    assert again != Zstd(level + 1 if level < MAX_LEVEL else level - 1)


overrides = st.fixed_dictionaries({}, optional={k: st.integers(lo, hi) for k, (lo, hi) in PARAMETERS.items()})


@given(st.integers(-20, MAX_LEVEL), overrides, S.byte_strings(max_size=2048))
def test_parameter_overrides_round_trip_config_and_data(level, ov, data):
    codec = Zstd(level, **ov)
    assert codec.get_config() == {"level": level, **ov}
    assert Zstd.from_config(codec.get_config()) == codec
    enc, params = codec.encode(data)
    assert bytes(Zstd().decode(enc, params, len(data))) == data  # decoding needs no config


def test_the_entropy_profile_is_a_valid_config():
    again = Zstd.from_config(ENTROPY.get_config())
    assert again == ENTROPY and again.get_config()["level"] == ENTROPY.level
    data = bytes(range(256)) * 40
    enc, _ = ENTROPY.encode(data)
    assert bytes(Zstd().decode(enc, {}, len(data))) == data


@pytest.mark.parametrize("key", sorted(PARAMETERS))
def test_out_of_range_overrides_are_codec_data_error(key):
    lo, hi = PARAMETERS[key]
    for value in (lo - 1, hi + 1, True, "1", 1.0, None):
        with pytest.raises(nnar.CodecDataError):
            Zstd.from_config({"level": 3, key: value})


def test_default_level_is_3():
    assert Zstd().get_config() == {"level": 3} == Zstd.from_config({}).get_config()


@pytest.mark.parametrize("config", [
    {"level": MAX_LEVEL + 1}, {"level": MIN_LEVEL - 1}, {"level": 10**30}, {"level": True}, {"level": 3.0},
    {"level": "3"}, {"level": None}, {"level": [3]}, {"level": 3, "checksum": True}, {"lvl": 3},
    None, [], "level=3", 3,
])
def test_bad_config_is_codec_data_error(config):
    with pytest.raises(nnar.CodecDataError):
        Zstd.from_config(config)


@given(st.one_of(st.integers().filter(lambda n: not MIN_LEVEL <= n <= MAX_LEVEL), st.floats(), st.text(), st.none()))
def test_bad_level_is_codec_data_error(level):
    with pytest.raises(nnar.CodecDataError):
        Zstd.from_config({"level": level})


# -- hostile streams -----------------------------------------------------------------------------


@given(S.byte_strings(max_size=2048))
def test_frame_without_content_size_is_rejected(data):
    enc = frame(data, write_content_size=False)
    assert zstandard.frame_content_size(enc) == -1
    with pytest.raises(nnar.CodecDataError):
        Zstd().decode(enc, {}, 1 << 20)


def test_streamed_frame_without_content_size_is_rejected():
    cobj = zstandard.ZstdCompressor().compressobj()
    enc = cobj.compress(b"abc" * 100) + cobj.flush()
    with pytest.raises(nnar.CodecDataError):
        Zstd().decode(enc, {}, 1 << 20)


@given(S.byte_strings(max_size=2048).filter(bool), st.data())
def test_frame_declaring_more_than_max_length_is_rejected(data, d):
    enc, _ = Zstd().encode(data)
    limit = d.draw(st.integers(0, len(data) - 1))
    with pytest.raises(nnar.CodecDataError):
        Zstd().decode(enc, {}, limit)


def test_a_bomb_is_refused_by_its_header():
    enc, _ = Zstd().encode(bytes(20 << 20))  # 20 MiB of zeros in a few KiB
    assert len(enc) < (20 << 20) // 1000
    with pytest.raises(nnar.CodecDataError, match="declares"):
        Zstd().decode(enc, {}, 1 << 20)


@given(S.byte_strings(max_size=2048), st.binary(min_size=1, max_size=64))
def test_trailing_bytes_after_the_frame_are_rejected(data, trailing):
    enc, _ = Zstd().encode(data)
    with pytest.raises(nnar.CodecDataError):
        Zstd().decode(bytes(enc) + trailing, {}, len(data))


@given(S.byte_strings(max_size=1024), S.byte_strings(max_size=1024))
def test_two_frames_are_rejected(a, b):
    enc_a, _ = Zstd().encode(a)
    enc_b, _ = Zstd().encode(b)
    with pytest.raises(nnar.CodecDataError):
        Zstd().decode(bytes(enc_a) + bytes(enc_b), {}, len(a) + len(b))


SAMPLES = [b"", b"a", b"hello world" * 50, bytes(range(256)) * 8]


@pytest.mark.parametrize("data", SAMPLES, ids=["empty", "one", "text", "ramp"])
def test_truncated_frame_is_rejected_at_every_length_past_its_header(data):
    enc = bytes(Zstd().encode(data)[0])
    for k in range(zstandard.frame_header_size(enc), len(enc)):
        with pytest.raises(nnar.CodecDataError):
            Zstd().decode(enc[:k], {}, len(data))
    for k in range(4):  # not even a magic number
        with pytest.raises(nnar.CodecDataError):
            Zstd().decode(enc[:k], {}, len(data))


def test_truncated_frame_is_rejected_at_every_length():
    for data in SAMPLES:
        enc = bytes(Zstd().encode(data)[0])
        for k in range(len(enc)):
            with pytest.raises(nnar.CodecDataError):
                Zstd().decode(enc[:k], {}, len(data))


def test_skippable_frame_is_not_a_frame_of_data():
    skippable = struct.pack("<II", 0x184D2A50, 4) + b"abcd"
    with pytest.raises(nnar.CodecDataError):
        Zstd().decode(skippable, {}, 100)
    enc, _ = Zstd().encode(b"x" * 100)
    with pytest.raises(nnar.CodecDataError):
        Zstd().decode(skippable + bytes(enc), {}, 100)


def test_a_frame_with_a_content_checksum_is_accepted():
    """spec/codecs/zstd.md: the optional content checksum MAY be present."""
    data = b"abc" * 100
    assert bytes(Zstd().decode(frame(data, write_checksum=True), {}, len(data))) == data


def test_checksummed_frame_with_a_bad_checksum_is_rejected():
    enc = bytearray(frame(b"abc" * 100, write_checksum=True))
    enc[-1] ^= 0xFF
    with pytest.raises(nnar.CodecDataError):
        Zstd().decode(bytes(enc), {}, 300)


def test_content_size_that_lies_is_rejected():
    data = b"0123456789" * 10  # 100 bytes: single-segment frame, 1-byte Frame_Content_Size at offset 5
    enc = bytearray(frame(data))
    assert enc[4] & 0xE0 == 0x20 and enc[5] == 100  # FCS_flag 0 + Single_Segment_flag -> one byte
    for lie in (99, 101, 1, 255):
        enc[5] = lie
        with pytest.raises(nnar.CodecDataError):
            Zstd().decode(bytes(enc), {}, 1000)


def test_content_size_zero_that_lies_is_rejected():
    enc = bytearray(frame(b"0123456789" * 10))
    enc[5] = 0
    with pytest.raises(nnar.CodecDataError):
        Zstd().decode(bytes(enc), {}, 1000)


def corrupt(enc: bytearray, d, first: int, end: int) -> None:
    for _ in range(d.draw(st.integers(1, 4))):
        i = d.draw(st.integers(first, end - 1))
        enc[i] ^= d.draw(st.integers(1, 255))


@given(S.byte_strings(max_size=512), st.data())
def test_corrupt_blocks_are_codec_data_error_or_bytes_of_the_declared_length(data, d):
    """Damage a valid frame after its header: either a CodecDataError or (zstd keeps no checksum
    here; the record CRC does that) some bytes of the declared length; never another error."""
    enc = bytearray(Zstd().encode(data)[0])
    corrupt(enc, d, zstandard.frame_header_size(bytes(enc)), len(enc))
    try:
        out = Zstd().decode(bytes(enc), {}, len(data))
    except nnar.CodecDataError:
        return
    assert len(out) == len(data)


@given(S.byte_strings(max_size=512), st.data())
def test_corrupt_frame_header_is_codec_data_error_or_bytes(data, d):
    enc = bytearray(Zstd().encode(data)[0])
    corrupt(enc, d, 4, zstandard.frame_header_size(bytes(enc)))
    try:
        out = Zstd().decode(bytes(enc), {}, len(data))
    except nnar.CodecDataError:
        return
    assert len(out) <= len(data)


def test_frames_with_a_bad_magic_number_are_codec_data_error_short():
    for data in [b"", b"\x28", b"\x28\xb5\x2f", b"abc", b"abcde"]:
        with pytest.raises(nnar.CodecDataError):
            Zstd().decode(data, {}, 100)


def test_non_zstd_data_is_codec_data_error():
    for data in [b"garbage!", bytes(6), b"\xff" * 64, b"NNAR" * 4]:
        with pytest.raises(nnar.CodecDataError):
            Zstd().decode(data, {}, 100)


@given(st.binary(min_size=6, max_size=64))
def test_arbitrary_bytes_are_codec_data_error_or_bytes(data):
    try:
        out = Zstd().decode(data, {}, 1000)
    except nnar.CodecDataError:
        return
    assert isinstance(out, (bytes, bytearray, memoryview))
