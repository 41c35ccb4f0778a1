"""Damaged archives: truncated at every offset, every byte flipped, bytes inserted, deleted or
appended. The contract: an ``nnar.NnarError``, or (where a reader does not look at the damaged
byte) exactly the right data; never wrong data, never another exception."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import nnar
from nnar import pipeline as P
from nnar.codecs.byteplanes import BytePlanes
from nnar.codecs.zstd import Zstd

import helpers as H


def _small_archive() -> tuple[bytes, dict[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    w = (rng.normal(size=96) * 0.05).astype(np.float32)
    tensors = {
        "raw": (np.arange(24, dtype=np.int16).reshape(4, 6), P.Pipeline()),
        "zstd": (np.repeat(np.arange(8, dtype=np.uint8), 20), P.Pipeline(stream_chains=((Zstd(3),),))),
        "planes": (w, P.Pipeline(array_bytes=BytePlanes(), stream_chains=((), (Zstd(3),)))),
        "bias": (np.array([0.5, -0.0, np.nan], np.float32), None),  # these two share a record
        "scale": (np.array(2.0, np.float32), None),
    }
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf, metadata={"k": "v"}) as wr:
        for name, (arr, pipe) in tensors.items():
            wr.write(name, arr, pipeline=pipe)
    pipelines = {i.name: i.describe_pipeline() for i in wr.infos}
    assert pipelines["zstd"].startswith("nnar.raw[data:nnar.zstd]")
    assert pipelines["planes"].startswith("nnar.byteplanes[") and ":nnar.zstd" in pipelines["planes"]
    assert wr.infos[-1].group == 2
    return buf.getvalue(), {k: v[0] for k, v in tensors.items()}


BLOB, TENSORS = _small_archive()
#: format_minor (spec §3): any value is accepted, so only the first record's CRC (which covers
#: the preamble, §4.1) can tell that it changed
MINOR = (10, 11)


def same_data(out: dict[str, np.ndarray]) -> bool:
    return list(out) == list(TENSORS) and all(
        out[n].shape == a.shape and H.canonical_bytes(out[n]) == H.canonical_bytes(a) for n, a in TENSORS.items())


def read_at_random(blob: bytes) -> dict[str, np.ndarray]:
    with nnar.open(io.BytesIO(blob)) as a:
        return {name: a.read(name) for name in a.names()}


def test_the_archive_is_small_and_valid():
    assert len(BLOB) < 2500
    assert same_data(nnar.unpack(BLOB)) and same_data(read_at_random(BLOB))
    assert len(nnar.verify(BLOB)) == len(TENSORS)


def test_truncated_at_every_offset_is_an_error_in_order():
    for k in range(len(BLOB)):
        with pytest.raises(nnar.NnarError):
            nnar.unpack(BLOB[:k])


def test_truncated_at_every_offset_is_an_error_at_random():
    for k in range(len(BLOB)):
        with pytest.raises(nnar.NnarError):
            read_at_random(BLOB[:k])


def test_truncation_is_reported_as_truncated_when_the_end_is_missing():
    for k in (0, 8, 16, 100, len(BLOB) // 2, len(BLOB) - 1):
        with pytest.raises(nnar.Truncated):
            nnar.verify(BLOB[:k])


@pytest.mark.parametrize("xor", [0xFF, 0x01])
def test_every_flipped_byte_is_caught_by_verify(xor):
    missed = []
    for i in range(len(BLOB)):
        bad = bytearray(BLOB)
        bad[i] ^= xor
        try:
            nnar.verify(bytes(bad))
        except nnar.NnarError:
            continue
        missed.append(i)
    assert missed == []


@pytest.mark.parametrize("xor", [0xFF, 0x01])
def test_a_flipped_byte_never_gives_different_data(xor):
    """Readers that skip the digest (unpack, random access) still never return wrong data."""
    for i in range(len(BLOB)):
        bad = bytearray(BLOB)
        bad[i] ^= xor
        for read in (nnar.unpack, read_at_random):
            try:
                out = read(bytes(bad))
            except nnar.NnarError:
                continue
            assert same_data(out), (i, read.__name__)


def test_a_flipped_format_minor_is_caught_by_verify():
    for i in MINOR:
        for xor in (0xFF, 0x01):
            bad = bytearray(BLOB)
            bad[i] ^= xor
            with pytest.raises(nnar.NnarError):
                nnar.verify(bytes(bad))


def test_every_flipped_byte_is_caught_by_random_access_reading_everything():
    """``Archive.verify`` reads every record through the index: the same coverage as in order."""
    for i in range(len(BLOB)):
        bad = bytearray(BLOB)
        bad[i] ^= 0x10
        with pytest.raises(nnar.NnarError):
            with nnar.open(io.BytesIO(bytes(bad))) as a:
                a.verify()


@given(st.integers(0, len(BLOB)), st.binary(min_size=1, max_size=40))
def test_inserted_bytes_are_an_error(at, extra):
    bad = BLOB[:at] + extra + BLOB[at:]
    with pytest.raises(nnar.NnarError):
        nnar.verify(bad)
    try:
        out = read_at_random(bad)
    except nnar.NnarError:
        return
    assert same_data(out)  # only possible if the insertion is somewhere random access never looks


@given(st.integers(0, len(BLOB) - 1), st.integers(1, 64))
def test_deleted_bytes_are_an_error(at, n):
    bad = BLOB[:at] + BLOB[at + n:]
    with pytest.raises(nnar.NnarError):
        nnar.verify(bad)
    with pytest.raises(nnar.NnarError):
        read_at_random(bad)


@given(st.binary(min_size=1, max_size=200))
def test_trailing_garbage_is_an_error(extra):
    bad = BLOB + extra
    with pytest.raises(nnar.NnarError):
        nnar.verify(bad)
    with pytest.raises(nnar.NnarError):
        nnar.unpack(bad)
    with pytest.raises(nnar.NnarError):
        read_at_random(bad)


def test_an_archive_appended_to_itself_is_an_error():
    with pytest.raises(nnar.BadLayout):
        nnar.verify(BLOB + BLOB)
    with pytest.raises(nnar.NnarError):
        read_at_random(BLOB + BLOB)


@given(st.integers(16, len(BLOB) - 1), st.binary(min_size=1, max_size=32))
def test_overwritten_ranges_are_an_error(at, junk):
    bad = bytearray(BLOB)
    bad[at:at + len(junk)] = junk
    bad = bytes(bad[:len(BLOB)])
    assume(bad != BLOB)
    with pytest.raises(nnar.NnarError):
        nnar.verify(bad)


@given(st.binary(max_size=300))
def test_random_bytes_are_an_error(junk):
    for data in (junk, b"\x89NNAR\r\n\x1a" + junk, BLOB[:16] + junk):
        with pytest.raises(nnar.NnarError):
            nnar.verify(data)
        with pytest.raises(nnar.NnarError):
            read_at_random(data)
