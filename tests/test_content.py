"""The content digest (spec/FORMAT.md §5.3.1): its canonical msgpack encoding agrees with one
written from the spec alone, and the digest tells apart what an archive decodes to, not how its
streams were compressed."""

import io
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nnar
from archive_builder import canonical as spec_canonical
from nnar.container.content import canonical, content_form, record_digest

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=8), inner, max_size=20),
    max_leaves=60)


@given(values)
def test_canonical_encoding_is_the_specs_and_round_trips(v):
    data = canonical(v)
    assert data == spec_canonical(v)
    assert msgpack.unpackb(data, raw=False, strict_map_key=False) == v


@pytest.mark.parametrize("stored, value", [
    (b"\xce\x00\x00\x00\x05", 5),  # uint 32 where a fixint does
    (b"\xd1\xff\xfe", -2),  # int 16 where a negative fixint does
    (b"\xca\x3f\xc0\x00\x00", 1.5),  # float 32
    (b"\xda\x00\x01a", "a"),  # str 16
    (b"\xdc\x00\x01\x01", [1]),  # array 16
])
def test_non_shortest_encodings_are_read_and_hashed_as_the_shortest(stored, value):
    decoded = msgpack.unpackb(stored, raw=False)
    assert decoded == value
    assert canonical(decoded) == spec_canonical(value) != stored


def _pack(tensors, **kw) -> bytes:
    out = io.BytesIO()
    nnar.pack(tensors, out, **kw)
    return out.getvalue()


def _content(data: bytes) -> bytes:
    with nnar.open(data) as a:
        return a.content_digest()


W = {"w": (np.arange(4096, dtype=np.float32) / 7).reshape(64, 64), "b": np.ones(8, np.float32)}


def test_the_same_content_whatever_zstd_stored_it(monkeypatch):
    import zstandard
    from nnar.codecs import zstd as Z
    plain = _pack(W, config={"quant": "kmeans", "bits": 4, "min_params": 16})

    def encode(self, data):  # another zstd: other valid frames of the same streams
        return zstandard.ZstdCompressor(level=self.level + 5, write_content_size=True,
                                        write_checksum=True).compress(data), {}
    monkeypatch.setattr(Z.Zstd, "encode", encode)
    other = _pack(W, config={"quant": "kmeans", "bits": 4, "min_params": 16})
    assert other != plain and _content(other) == _content(plain)
    nnar.verify(other)


@pytest.mark.parametrize("change", ["value", "name", "dtype", "metadata", "pipeline"])
def test_what_an_archive_decodes_to_changes_its_content(change):
    base = _pack(W, metadata={"v": "1"})
    w = dict(W)
    kw = {"metadata": {"v": "1"}}
    if change == "value":
        w["w"] = w["w"].copy()
        w["w"][3, 3] = np.nextafter(w["w"][3, 3], 1)
    elif change == "name":
        w["w2"] = w.pop("w")
    elif change == "dtype":
        w["b"] = w["b"].astype(np.float64)
    elif change == "metadata":
        kw["metadata"] = {"v": "2"}
    else:
        kw["config"] = "fp16"
    assert _content(_pack(w, **kw)) != _content(base)


def test_stored_lengths_and_descriptor_compression_are_not_content():
    desc = {"tensors": [["x", [4]]], "dtype": "uint8", "digest": bytes(32), "pipeline": [],
            "segments": [{"name": "data", "length": 17, "raw_length": 4, "codecs": []}]}
    other = {**desc, "segments": [{**desc["segments"][0], "length": 9}]}
    assert record_digest("TENS", desc) == record_digest("TENS", other)
    assert content_form("TENS", desc)["segments"][0]["length"] == 0 and desc["segments"][0]["length"] == 17
    assert record_digest("TENS", desc) != record_digest("MODL", desc)
    # a META record has no segments: a key of that name is content there
    assert record_digest("META", {"segments": [{"length": 1}]}) != record_digest("META", {"segments": [{"length": 2}]})


def test_a_stream_read_checks_the_content_and_reports_it():
    data = _pack(W)
    r = nnar.StreamReader(io.BytesIO(data))
    list(r)
    assert r.content == _content(data)
    # the index's content of another archive: found by every in-order read, not only verify
    with nnar.open(data) as a:
        index_offset = a._reader.index_record.frame.offset
    other = _pack({**W, "b": np.zeros(8, np.float32)})
    with nnar.open(other) as a:
        assert a._reader.index_record.frame.offset == index_offset  # same layout: the index fits
    spliced = data[:index_offset] + other[index_offset:]
    with pytest.raises(nnar.DigestMismatch, match="archive content"):
        list(nnar.StreamReader(io.BytesIO(spliced)))
    with pytest.raises(nnar.DigestMismatch, match="archive content"):
        nnar.open(spliced).verify()
    assert struct.unpack_from("<Q", spliced, len(spliced) - 32)[0] == index_offset
