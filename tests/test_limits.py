"""nnar.Limits (spec §9): every declared size is compared with its limit before anything is
allocated; exceeding one is LimitExceeded, reaching it exactly is fine."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

import nnar
from nnar import pipeline as P
from nnar.codecs.byteplanes import BytePlanes

import strategies as S
from archive_builder import Builder
from helpers import write_archive

L = nnar.DEFAULT_LIMITS


def both_ways(blob: bytes, limits: nnar.Limits) -> None:
    """Read everything in order and at random under ``limits``."""
    nnar.verify(blob, limits)
    with nnar.open(io.BytesIO(blob), limits) as a:
        a.verify()


def test_defaults_are_the_spec_table():
    assert (L.max_descriptor_bytes, L.max_descriptor_objects, L.max_descriptor_depth, L.max_tensors, L.max_rank,
            L.max_tensor_bytes, L.max_total_bytes, L.max_stages, L.max_segments) == \
        (64 << 20, 1 << 22, 32, 1_000_000, 32, 16 << 30, 256 << 30, 16, 256)


def test_limits_are_immutable_and_replace_makes_a_copy():
    tight = L.replace(max_rank=2)
    assert tight.max_rank == 2 and L.max_rank == 32
    with pytest.raises(Exception):
        tight.max_rank = 3  # type: ignore[misc]


def test_check_says_what_and_which_limit():
    with pytest.raises(nnar.LimitExceeded) as e:
        L.replace(max_rank=2).check("tensor rank", 3, "max_rank", where="tensor 'x'")
    msg = str(e.value)
    assert "max_rank" in msg and "3" in msg and "tensor 'x'" in msg and isinstance(e.value, ValueError)


@given(S.tensor_dicts(max_size=6), st.integers(0, 6))
def test_max_tensors(tensors, limit):
    blob = write_archive(tensors)
    limits = L.replace(max_tensors=limit)
    if len(tensors) <= limit:
        both_ways(blob, limits)
    else:
        with pytest.raises(nnar.LimitExceeded):
            nnar.verify(blob, limits)
        with pytest.raises(nnar.LimitExceeded):
            nnar.open(io.BytesIO(blob), limits)


@given(S.tensor_dicts(max_size=4), st.integers(0, 4))
def test_max_rank(tensors, limit):
    blob = write_archive(tensors)
    limits = L.replace(max_rank=limit)
    if all(len(t.shape) <= limit for t in tensors.values()):
        both_ways(blob, limits)
    else:
        with pytest.raises(nnar.LimitExceeded):
            nnar.verify(blob, limits)
        with pytest.raises(nnar.LimitExceeded):
            both_ways(blob, limits)


def test_max_tensor_bytes_of_a_tensor_and_of_a_group():
    alone = Builder().raw_tensor("x", np.zeros(250, np.float32)).build()  # 1000 bytes
    both_ways(alone, L.replace(max_tensor_bytes=1000))
    with pytest.raises(nnar.LimitExceeded):
        nnar.verify(alone, L.replace(max_tensor_bytes=999))
    with pytest.raises(nnar.LimitExceeded):
        both_ways(alone, L.replace(max_tensor_bytes=999))
    group = Builder().raw_group({"a": np.zeros(100, np.uint8), "b": np.zeros(100, np.uint8)}).build()
    both_ways(group, L.replace(max_tensor_bytes=200))
    with pytest.raises(nnar.LimitExceeded):  # each member fits, their record's array does not
        nnar.verify(group, L.replace(max_tensor_bytes=150))


def test_max_total_bytes_in_one_pass():
    blob = Builder().raw_tensor("a", np.zeros(600, np.uint8)).raw_tensor("b", np.zeros(600, np.uint8)).build()
    nnar.verify(blob, L.replace(max_total_bytes=1200))
    with pytest.raises(nnar.LimitExceeded):
        nnar.verify(blob, L.replace(max_total_bytes=1199))
    with pytest.raises(nnar.LimitExceeded):
        nnar.unpack(blob, limits=L.replace(max_total_bytes=1000))


def test_max_segments():
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        w.write("w", np.arange(30, dtype=np.float64), pipeline=P.Pipeline(array_bytes=BytePlanes()))  # 8 planes
    blob = buf.getvalue()
    both_ways(blob, L.replace(max_segments=8))
    with pytest.raises(nnar.LimitExceeded):
        both_ways(blob, L.replace(max_segments=7))


def test_max_stages():
    stages = [{"codec": "nnar.zstd", "config": {"level": 1}, "params": {}}] * 3
    data = b"\1\2\3\4" * 3
    import zstandard
    enc = data
    for _ in range(3):
        enc = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(enc)
    blob = Builder().tensor([("x", (3,))], "int32", [("data", stages, 12, enc)], decoded=data).build()
    assert nnar.unpack(blob, limits=L.replace(max_stages=3))["x"].tolist() == [0x04030201] * 3
    with pytest.raises(nnar.LimitExceeded):
        nnar.unpack(blob, limits=L.replace(max_stages=2))


def test_max_descriptor_bytes():
    plain = Builder().raw_tensor("a" * 300, np.zeros(2)).build()  # a 300-byte name, descriptor stored as is
    both_ways(plain, L.replace(max_descriptor_bytes=1000))
    with pytest.raises(nnar.LimitExceeded):
        nnar.verify(plain, L.replace(max_descriptor_bytes=300))
    with pytest.raises(nnar.LimitExceeded):
        nnar.open(io.BytesIO(plain), L.replace(max_descriptor_bytes=300))
    # nnar's writer may store it compressed: then the size its frame declares is what counts (§4.2)
    written = write_archive({"a" * 300: S.Tensor(np.zeros(2), "float64")})
    both_ways(written, L.replace(max_descriptor_bytes=1000))
    with pytest.raises((nnar.LimitExceeded, nnar.BadDescriptor)):
        nnar.verify(written, L.replace(max_descriptor_bytes=300))


def _with_frame_field(blob: bytes, field_offset: int, fmt: str, value: int) -> bytes:
    """Set a field of the first record after META (the TENS frame) and fix its header CRC."""
    out = bytearray(blob)
    at = out.index(b"TENS")
    struct.pack_into(fmt, out, at + field_offset, value)
    desc_len = struct.unpack_from("<I", out, at + 16)[0]
    crc = zlib.crc32(bytes(out[at + 32:at + 32 + desc_len]), zlib.crc32(bytes(out[at:at + 28])))
    struct.pack_into("<I", out, at + 28, crc)
    return bytes(out)


def test_huge_declared_lengths_fail_before_allocation():
    blob = Builder().raw_tensor("x", np.zeros(4, np.uint8)).build()
    huge_desc = _with_frame_field(blob, 16, "<I", 0xFFFF_FFFF)
    with pytest.raises(nnar.LimitExceeded):
        nnar.verify(huge_desc)
    huge_body = _with_frame_field(blob, 8, "<Q", 1 << 62)
    with pytest.raises(nnar.LimitExceeded):
        nnar.verify(huge_body)
    with pytest.raises(nnar.NnarError):
        with nnar.open(io.BytesIO(huge_body)) as a:
            a.read("x")
    # within the limits but beyond the file: the layout no longer adds up, or the file ends first
    long_body = _with_frame_field(blob, 8, "<Q", 1 << 30)
    with pytest.raises(nnar.NnarError):
        nnar.verify(long_body)


def test_limit_exceeded_is_not_corruption():
    assert issubclass(nnar.LimitExceeded, ValueError)
    assert not issubclass(nnar.LimitExceeded, nnar.CorruptArchive)
