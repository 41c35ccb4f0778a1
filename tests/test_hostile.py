"""Hostile archives with valid CRCs, built with tests/archive_builder.py (from the spec, not from
nnar): every reader answers with data or an ``nnar.NnarError``, and applies the rules of
spec/FORMAT.md §5-§10 that a damaged-bytes test cannot reach."""

from __future__ import annotations

import io

import numpy as np
import pytest

import nnar
from nnar import constants as C
from nnar.cli import main

import archive_builder as AB
import helpers as H
from archive_builder import RAW, Builder

I32 = np.arange(3, dtype=np.int32)
I32_BYTES = I32.tobytes()


def read_every_way(blob: bytes) -> list[dict]:
    """What each reader gives; any NnarError propagates."""
    out = [nnar.unpack(blob)]
    with nnar.open(io.BytesIO(blob)) as a:
        out.append({n: a.read(n, verify=True) for n in a.names()})
        a.infos()
    nnar.verify(blob)
    return out


def bad(**kw) -> bytes:
    """An archive of one int32 tensor "x" whose TENS descriptor is overridden by ``kw``."""
    fields = {"members": [("x", (3,))], "dtype": "int32", "segments": [("data", [], 12, I32_BYTES)],
              "decoded": I32_BYTES}
    fields.update(kw)
    members, dtype, segments = fields.pop("members"), fields.pop("dtype"), fields.pop("segments")
    return Builder().tensor(members, dtype, segments, **fields).build()


def test_the_builder_writes_what_nnar_reads():
    tensors = {"a": np.arange(7, dtype=np.float64), "😀": np.array(True), "e": np.zeros((0, 2), np.uint16)}
    b = Builder({"m": "1"})
    for n, arr in tensors.items():
        b.raw_tensor(n, arr)
    b.raw_group({"g1": np.ones(2, np.int8), "g2": np.array(-3, np.int8)})
    blob = b.build()
    for got in read_every_way(blob):
        assert list(got) == [*tensors, "g1", "g2"]
        for n, arr in tensors.items():
            H.assert_same_tensor(got[n], arr)
        assert got["g1"].tolist() == [1, 1] and got["g2"].shape == () and got["g2"] == -3


# -- descriptors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, error", [
    ({"members": [("x", (3,)), ("x", ())], "segments": [("data", [], 16, I32_BYTES + bytes(4))]}, nnar.BadLayout),
    ({"members": []}, nnar.BadDescriptor),
    ({"extra": {"tensors": [["x", 3]]}}, nnar.BadDescriptor),
    ({"extra": {"tensors": [["x"]]}}, nnar.BadDescriptor),
    ({"extra": {"tensors": "x"}}, nnar.BadDescriptor),
    ({"members": [("x", (-3,))]}, nnar.BadDescriptor),
    ({"members": [("x", (3.0,))]}, nnar.BadDescriptor),
    ({"members": [("x", (True, 3))]}, nnar.BadDescriptor),
    ({"members": [("x\n", (3,))]}, nnar.BadDescriptor),
    ({"members": [("", (3,))]}, nnar.BadDescriptor),
    ({"members": [(b"x", (3,))]}, nnar.BadDescriptor),
    ({"members": [("x", (1,) * 40)]}, nnar.LimitExceeded),
    ({"members": [("x", (1 << 40, 1 << 40))]}, nnar.LimitExceeded),
    ({"members": [("x", (1 << 62,))]}, nnar.LimitExceeded),
    ({"dtype": "float8_e4m3"}, nnar.UnsupportedDtype),
    ({"dtype": 4}, nnar.BadDescriptor),
    ({"digest": b"\0" * 31}, nnar.BadDescriptor),
    ({"digest": "00" * 32}, nnar.BadDescriptor),
    ({"digest": b"\0" * 32}, nnar.DigestMismatch),
    ({"pipeline": []}, nnar.BadDescriptor),
    ({"pipeline": "nnar.raw"}, nnar.BadDescriptor),
    ({"pipeline": [AB.zstd_stage()]}, nnar.BadDescriptor),
    ({"pipeline": [{"codec": "x.lz4", "config": {}, "params": {}}]}, nnar.UnsupportedCodec),
    ({"segments": []}, nnar.BadDescriptor),
    ({"segments": [("p0", [], 12, I32_BYTES)]}, nnar.BadDescriptor),
    ({"segments": [("data", [], 12, I32_BYTES), ("data2", [], 0, b"")]}, nnar.BadDescriptor),
    ({"segments": [("data", [], 8, I32_BYTES[:8])]}, nnar.CodecDataError),
    ({"segments": [("data", [], 16, I32_BYTES + bytes(4))]}, nnar.CodecDataError),
    ({"segments": [("data", [AB.zstd_stage()], 12, b"(\xb5/\xfd")]}, nnar.CodecDataError),
    ({"segments": [("data", [RAW], 12, I32_BYTES)]}, nnar.BadDescriptor),
    ({"extra": {"note": "hi"}}, nnar.BadDescriptor),
    ({"index_names": ["y"]}, nnar.BadLayout),
], ids=lambda v: v.__name__ if isinstance(v, type) else repr(v)[:60])
def test_bad_tensor_records_raise_their_error_in_order(kw, error):
    with pytest.raises(error):
        nnar.verify(bad(**kw))


@pytest.mark.parametrize("kw", [
    {"members": [("x", (-3,))]}, {"dtype": "float8_e4m3"}, {"pipeline": []},
    {"segments": [("data", [], 8, I32_BYTES[:8])]}, {"digest": b"\0" * 32}, {"index_names": ["y"]},
    {"members": [("x", (3,)), ("x", ())], "segments": [("data", [], 16, I32_BYTES + bytes(4))]},
], ids=repr)
def test_bad_tensor_records_are_errors_at_random_too(kw):
    blob = bad(**kw)
    with pytest.raises(nnar.NnarError):
        with nnar.open(io.BytesIO(blob)) as a:
            a.verify()


def test_a_group_whose_array_is_not_its_members_is_codec_data_error():
    members = [("a", (2,)), ("b", ())]  # 3 int32 elements: 12 bytes
    with pytest.raises(nnar.CodecDataError):
        nnar.unpack(bad(members=members, segments=[("data", [], 16, bytes(16))], decoded=bytes(16)))
    blob = bad(members=members)
    assert {k: v.tolist() for k, v in nnar.unpack(blob).items()} == {"a": [0, 1], "b": 2}


def test_a_name_in_two_records_is_bad_layout():
    b = Builder().raw_tensor("x", I32).raw_tensor("x", I32)
    with pytest.raises(nnar.BadLayout):
        nnar.verify(b.build(index=[]))  # in order: the second record, before the index is read
    with pytest.raises(nnar.BadLayout):
        nnar.open(io.BytesIO(b.build()))


def test_bool_bytes_other_than_0_and_1_are_kept_as_they_are():
    """spec §5.2.2: a bool byte other than 0 or 1 is kept."""
    data = bytes([0, 1, 2, 255])
    blob = Builder().tensor([("b", (4,))], "bool", [("data", [], 4, data)], decoded=data).build()
    out = nnar.unpack(blob)["b"]
    assert out.dtype == np.bool_ and out.view(np.uint8).tolist() == [0, 1, 2, 255]


def test_a_newer_minor_may_add_keys_an_older_reader_ignores():
    """spec §10: unknown keys are bad-descriptor for a known minor, ignored for a greater one."""
    for minor, ok in ((0, False), (1, False), (C.FORMAT_MINOR, False), (C.FORMAT_MINOR + 1, True), (7, True)):
        b = Builder(minor=minor, meta={"nnar_version": "9", "source_format": "x", "metadata": {}, "new": 1})
        b.tensor([("x", (3,))], "int32", [("data", [], 12, I32_BYTES)], decoded=I32_BYTES, extra={"later": [1, 2]})
        blob = b.build()
        if ok:
            assert nnar.unpack(blob)["x"].tolist() == [0, 1, 2]
            with nnar.open(io.BytesIO(blob)) as a:
                assert a.format_version == (1, minor)
        else:
            with pytest.raises(nnar.BadDescriptor):
                nnar.verify(blob)


# -- unknown records and codecs (spec §10) -------------------------------------------------------


def test_unknown_records_are_skipped_unless_must_understand():
    blob = Builder().raw_tensor("a", I32).add(b"XTRA", {"anything": [1, 2]}, b"body bytes").raw_tensor("b", I32).build()
    for got in read_every_way(blob):
        assert list(got) == ["a", "b"]
    strict = Builder().raw_tensor("a", I32).add(b"XTRA", {}, b"", flags=1).build()
    with pytest.raises(nnar.UnsupportedRecord):
        nnar.verify(strict)
    with pytest.raises(nnar.UnsupportedRecord):
        nnar.open(io.BytesIO(strict))


def test_an_unknown_record_with_a_bad_body_crc_is_an_error():
    blob = bytearray(Builder().add(b"XTRA", {}, b"body bytes").build())
    blob[blob.index(b"body bytes")] ^= 1
    with pytest.raises(nnar.ChecksumMismatch):
        nnar.verify(bytes(blob))
    with pytest.raises(nnar.ChecksumMismatch):
        nnar.open(io.BytesIO(bytes(blob)))


@pytest.mark.parametrize("rtype", [b"META", b"INDX"])
def test_known_records_out_of_place_are_bad_layout(rtype):
    desc = {"nnar_version": "0", "source_format": "x", "metadata": {}} if rtype == b"META" else {"records": []}
    blob = Builder().raw_tensor("a", I32).add(rtype, desc, flags=1).build()
    with pytest.raises(nnar.BadLayout):
        nnar.verify(blob)
    with pytest.raises(nnar.BadLayout):
        nnar.open(io.BytesIO(blob))


def test_an_unknown_codec_leaves_the_other_tensors_and_the_listing_readable(tmp_path):
    lz4 = {"codec": "x.lz4", "config": {}, "params": {}}
    blob = Builder().raw_tensor("ok", I32).tensor([("lz", (3,))], "uint8", [("data", [], 3, b"abc")], pipeline=[lz4],
                                                  decoded=b"abc").build()
    with nnar.open(io.BytesIO(blob)) as a:
        assert a.read("ok").tolist() == [0, 1, 2]
        assert [i.name for i in a.infos()] == ["ok", "lz"]
        with pytest.raises(nnar.UnsupportedCodec):
            a.read("lz")
    with pytest.raises(nnar.UnsupportedCodec):
        nnar.unpack(blob)
    path = tmp_path / "lz.nnar"
    path.write_bytes(blob)
    assert main(["ls", str(path)]) == 0


def test_an_unknown_dtype_leaves_the_listing_readable(tmp_path):
    blob = Builder().raw_tensor("ok", I32).tensor([("f8", (3,))], "float8_e4m3", [("data", [], 3, b"abc")],
                                                  decoded=b"abc").build()
    with nnar.open(io.BytesIO(blob)) as a:
        assert a.read("ok").tolist() == [0, 1, 2]
        with pytest.raises(nnar.UnsupportedDtype):
            a.read("f8")
        assert [i.name for i in a.infos()] == ["ok", "f8"]


def test_an_unknown_dtype_leaves_the_other_tensors_readable():
    blob = Builder().raw_tensor("ok", I32).tensor([("f8", (3,))], "float8_e4m3", [("data", [], 3, b"abc")],
                                                  decoded=b"abc").build()
    with nnar.open(io.BytesIO(blob)) as a:
        assert a.names() == ["ok", "f8"] and a.read("ok").tolist() == [0, 1, 2]
        with pytest.raises(nnar.UnsupportedDtype):
            a.read("f8")


# -- hostile stage maps reach code that only lists ----------------------------------------------


HOSTILE_STAGES = [[1], ["nnar.raw"], [None]]


def test_ls_of_hostile_stage_records_is_an_error_or_a_listing(tmp_path, capsys):
    for i, pipeline in enumerate(HOSTILE_STAGES):
        path = tmp_path / f"h{i}.nnar"
        path.write_bytes(bad(pipeline=pipeline))
        assert main(["ls", str(path)]) in (0, 1)
        assert main(["ls", "--json", str(path)]) in (0, 1)


@pytest.mark.parametrize("pipeline", [*HOSTILE_STAGES, [{"codec": ["x"], "config": {}, "params": {}}]], ids=repr)
def test_decoding_hostile_stage_records_is_bad_descriptor_or_unsupported_codec(pipeline):
    with pytest.raises((nnar.BadDescriptor, nnar.UnsupportedCodec)):
        nnar.verify(bad(pipeline=pipeline))


def test_a_zstd_segment_that_is_not_zstd_is_codec_data_error():
    for data in (b"garbage bytes!", bytes(12), b"(\xb5/\xfd" + bytes(10)):
        blob = bad(segments=[("data", [AB.zstd_stage()], 12, data)])
        with pytest.raises(nnar.CodecDataError):
            nnar.verify(blob)
        with pytest.raises(nnar.CodecDataError):
            with nnar.open(io.BytesIO(blob)) as a:
                a.read("x")


# -- the index and the trailer --------------------------------------------------------------------


def test_an_index_that_disagrees_with_the_records_is_bad_layout():
    b = Builder().raw_tensor("a", I32).raw_tensor("b", I32)
    good = b.build()
    with nnar.open(io.BytesIO(good)) as a:
        entries = a._reader.index()
    rows = [[e.record_type, e.offset, e.length, list(e.names)] for e in entries]
    variants = [
        rows[::-1],  # order
        rows[:1],  # a record missing
        [rows[0], [*rows[1][:3], ["c"]]],  # a wrong name
        [rows[0], [*rows[1][:3], []]],  # a TENS entry without names
        [rows[0], ["XTRA", *rows[1][1:]]],  # a wrong type
        [rows[0], [rows[1][0], rows[1][1] + 1, rows[1][2] - 1, rows[1][3]]],  # a hole
    ]
    for index in variants:
        blob = b.build(index=index)
        with pytest.raises(nnar.BadLayout):
            nnar.verify(blob)
        with pytest.raises(nnar.BadLayout):
            with nnar.open(io.BytesIO(blob)) as a:
                a.verify()


def test_trailer_fields_are_checked():
    b = Builder().raw_tensor("a", I32)
    cases = {
        "index offset": (lambda io_, n: AB.trailer(io_ + 1, n), nnar.BadLayout),
        "archive length": (lambda io_, n: AB.trailer(io_, n + 1), nnar.BadLayout),
        "end magic": (lambda io_, n: AB.trailer(io_, n)[:-1] + b"!", nnar.Truncated),
        "crc": (lambda io_, n: AB.trailer(io_, n)[:20] + b"\0\0\0\0" + AB.END_MAGIC, nnar.ChecksumMismatch),
    }
    for name, (patch, error) in cases.items():
        blob = b.build(trailer_patch=patch)
        with pytest.raises(error):
            nnar.verify(blob)
        with pytest.raises(error if error is not nnar.BadLayout else nnar.NnarError):  # may land mid-record
            nnar.open(io.BytesIO(blob))


def test_preamble_fields_are_checked():
    body = Builder().raw_tensor("a", I32).build()[16:]
    for pre, error in [(AB.preamble(magic=b"\x89NNAR\n\n\x1a"), nnar.BadMagic),
                       (AB.preamble(major=2), nnar.UnsupportedVersion), (AB.preamble(major=0), nnar.UnsupportedVersion),
                       (AB.preamble(flags=1), nnar.ReservedNonZero), (AB.preamble(flags=1 << 31), nnar.ReservedNonZero)]:
        with pytest.raises(error):
            nnar.verify(pre + body)
        with pytest.raises(error):
            nnar.open(io.BytesIO(pre + body))


def test_frame_reserved_bits_are_checked():
    for kw in ({"flags": 4}, {"flags": 1 | 1 << 31}, {"reserved": 1}):
        blob = Builder().add(b"XTRA", {}, b"", **kw).build()
        with pytest.raises(nnar.ReservedNonZero):
            nnar.verify(blob)


def test_nonzero_padding_before_an_aligned_segment_is_reserved_nonzero():
    blob = bytearray(Builder().raw_tensor("a", I32).build())
    pad_at = blob.index(I32_BYTES) - 1
    assert blob[pad_at] == 0 and (pad_at + 1) % 64 == 0
    blob[pad_at] = 7
    # fix the body CRC so only the padding rule can object
    import struct
    import zlib
    tens = blob.index(b"TENS")
    body_len, desc_len = struct.unpack_from("<QI", blob, tens + 8)
    body_start = tens + 32 + desc_len
    struct.pack_into("<I", blob, tens + 20, zlib.crc32(bytes(blob[body_start:body_start + body_len])))
    struct.pack_into("<I", blob, tens + 28, zlib.crc32(bytes(blob[body_start - desc_len:body_start]),
                                                        zlib.crc32(bytes(blob[tens:tens + 28]))))
    with pytest.raises(nnar.ReservedNonZero):
        nnar.verify(bytes(blob))


@pytest.mark.parametrize("raw_descriptor", [b"\x90", b"\xc1", b"\x81\xa1a\x01\x00", b"\x81\x01\x01",
                                            b"\x81\xa1a\xd6\x05\x00\x00\x00\x00", b"", b"\xdf\xff\xff\xff\xff"],
                         ids=["array", "never-used", "trailing", "int-key", "ext-5", "empty", "huge-map"])
def test_descriptors_that_are_not_one_plain_map_are_bad_descriptor(raw_descriptor):
    blob = Builder().add(b"XTRA", raw_descriptor=raw_descriptor).build()
    with pytest.raises(nnar.BadDescriptor):
        nnar.verify(blob)


@pytest.mark.parametrize("depth", [33, 1025, 100_000])
def test_descriptors_nested_too_deep_are_limit_exceeded(depth):
    """max_descriptor_depth (§4.2, §9; issue 15): beyond msgpack-python's own 1024 levels too."""
    blob = Builder().add(b"XTRA", raw_descriptor=b"\x81\xa1a" + b"\x91" * (depth - 1) + b"\x00").build()
    with pytest.raises(nnar.LimitExceeded, match="max_descriptor_depth"):
        nnar.verify(blob)


def test_the_timestamp_extension_type_is_bad_descriptor():
    blob = Builder().add(b"XTRA", raw_descriptor=b"\x81\xa1a\xd6\xff\x00\x00\x00\x00").build()
    with pytest.raises(nnar.BadDescriptor):
        nnar.verify(blob)


# -- compressed descriptors (§4.2) ----------------------------------------------------------------


def test_a_compressed_descriptor_reads_like_a_plain_one():
    blob = bad(compress=True)
    assert nnar.unpack(blob)["x"].tolist() == [0, 1, 2]
    with nnar.open(io.BytesIO(blob)) as a:
        assert a.read("x", verify=True).tolist() == [0, 1, 2]
    both = Builder().add(b"XTRA", {"a": 1}, compress=True).raw_tensor("y", I32, compress=True).build()
    assert nnar.unpack(both)["y"].tolist() == [0, 1, 2]


def _compressed(raw: bytes, **kw) -> bytes:
    return Builder().add(b"XTRA", raw_descriptor=raw, flags=AB.DESCRIPTOR_ZSTD, **kw).build()


@pytest.mark.parametrize("stored", [
    b"\x80",  # a plain msgpack map, but the flag says compressed
    AB.compress_descriptor(b"\x80") + b"\0",  # bytes after the frame
    AB.compress_descriptor(b"\x80", write_content_size=False),  # no content size
    AB.compress_descriptor(b"\x80")[:-1],  # cut
    AB.compress_descriptor(b"\x80") * 2,  # two frames
    AB.compress_descriptor(b"\x90"),  # a compressed array, not a map
    b"",
], ids=["plain", "trailing", "no-size", "cut", "two-frames", "array", "empty"])
def test_bad_compressed_descriptors_are_bad_descriptor(stored):
    with pytest.raises(nnar.BadDescriptor):
        nnar.verify(_compressed(stored))
    with pytest.raises(nnar.BadDescriptor):
        nnar.open(io.BytesIO(_compressed(stored)))


def test_a_compressed_descriptor_is_bounded_by_max_descriptor_bytes_before_decompressing():
    big = {"pad": "x" * 10_000}
    blob = Builder().add(b"XTRA", big, compress=True).build()
    assert len(blob) < 2000  # it compresses well...
    nnar.verify(blob)
    with pytest.raises((nnar.BadDescriptor, nnar.LimitExceeded)):  # ...but declares 10 KB
        nnar.verify(blob, nnar.DEFAULT_LIMITS.replace(max_descriptor_bytes=5000))
