"""Laws of the index packing shared by ``nnar.codebook`` and ``nnar.affine`` (nnar/codecs/packing.py):
``bits``-bit indices in slots of 1, 2, 4 or 8 bits, ``8 // slot_bits`` slots per byte, the first
index in the lowest bits; the checker accepts exactly the streams the packer writes for indices
below the limit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import nnar
from nnar.codecs import packing

BITS = st.integers(1, 8)


def slot(bits: int) -> int:
    return next(s for s in (1, 2, 4, 8) if s >= bits)


@st.composite
def indices(draw, bits=BITS, max_count: int = 300):
    """(bits, uint8 indices each < 2**bits); counts incl. 0 and every remainder mod slots/byte."""
    b = draw(bits)
    count = draw(st.one_of(st.integers(0, 17), st.integers(0, max_count)))
    values = draw(st.lists(st.integers(0, (1 << b) - 1), min_size=count, max_size=count))
    return b, np.array(values, np.uint8)


def reference_pack(idx: np.ndarray, bits: int) -> bytes:
    """Bit by bit: index i occupies bits [s*(i % per), s*(i % per + 1)) of byte i // per."""
    s = slot(bits)
    per = 8 // s
    out = bytearray(-(-idx.size // per))
    for i, v in enumerate(idx.tolist()):
        out[i // per] |= v << (s * (i % per))
    return bytes(out)


@given(BITS)
def test_slot_bits_is_the_smallest_of_1_2_4_8_that_holds_the_index(bits):
    assert packing.slot_bits(bits) == slot(bits)


@given(indices())
def test_pack_writes_the_documented_layout_and_length(pair):
    bits, idx = pair
    data = packing.pack(idx, bits)
    assert data == reference_pack(idx, bits)
    assert len(data) == packing.packed_length(idx.size, bits) == -(-idx.size // (8 // slot(bits)))


@given(indices(), st.sampled_from([np.uint8, np.uint16, np.float16, np.float32, np.float64]))
def test_pack_check_expand_round_trip(pair, dtype):
    """Any value dtype (rows of 1 to 64 bytes: the void-row gather too) gives the indices back."""
    bits, idx = pair
    data = packing.pack(idx, bits)
    packed = packing.check_packed(data, idx.size, bits, 1 << bits, "test", "indices")
    values = np.arange(1 << packing.slot_bits(bits)).astype(dtype)
    out = packing.expand(packed, values, idx.size, bits)
    assert out.dtype == np.dtype(dtype) and out.shape == (idx.size,)
    assert np.array_equal(out, values[idx])


@given(indices(), st.data())
def test_indices_below_any_limit_above_them_are_accepted(pair, data):
    bits, idx = pair
    limit = data.draw(st.integers(int(idx.max()) + 1 if idx.size else 1, 1 << bits))
    packing.check_packed(packing.pack(idx, bits), idx.size, bits, limit, "test", "indices")


@given(indices(), st.data())
def test_an_index_at_or_above_the_limit_is_codec_data_error(pair, data):
    bits, idx = pair
    if idx.size == 0:
        idx = np.zeros(1, np.uint8)
    s = slot(bits)
    limit = data.draw(st.integers(1, 1 << bits))
    # any slot value the slot can hold that is >= limit: up to 2**slot_bits - 1, beyond 2**bits
    bad = data.draw(st.integers(limit, (1 << s) - 1)) if limit < (1 << s) else None
    if bad is None:  # limit 256 with 8-bit slots: no byte can exceed it
        return
    idx = np.minimum(idx, limit - 1).astype(np.uint8)
    at = data.draw(st.integers(0, idx.size - 1))
    packed = bytearray(packing.pack(idx, s))  # pack with the slot width so `bad` fits its slot
    per = 8 // s
    packed[at // per] |= bad << (s * (at % per))
    with pytest.raises(nnar.CodecDataError):
        packing.check_packed(bytes(packed), idx.size, bits, limit, "test", "indices")


@given(indices(bits=st.integers(1, 4)), st.data())
def test_nonzero_unused_slots_of_the_last_byte_are_codec_data_error(pair, data):
    bits, idx = pair
    s = slot(bits)
    per = 8 // s
    if idx.size % per == 0:
        idx = np.concatenate([idx, np.zeros(1 + data.draw(st.integers(0, per - 2)), np.uint8)])
    used = idx.size % per
    packed = bytearray(packing.pack(idx, bits))
    junk = data.draw(st.integers(1, (1 << (8 - s * used)) - 1))
    packed[-1] |= junk << (s * used)
    with pytest.raises(nnar.CodecDataError):
        packing.check_packed(bytes(packed), idx.size, bits, 1 << s, "test", "indices")


@given(indices(), st.data())
def test_wrong_length_is_codec_data_error(pair, data):
    bits, idx = pair
    packed = packing.pack(idx, bits)
    n = data.draw(st.integers(0, len(packed) + 4).filter(lambda k: k != len(packed)))
    wrong = (packed + bytes(n))[:n]
    with pytest.raises(nnar.CodecDataError, match="expected"):
        packing.check_packed(wrong, idx.size, bits, 1 << bits, "test", "indices")


@pytest.mark.parametrize("bits, idx, byte", [
    (1, [1, 0, 1, 1], 0b1101),
    (2, [3, 0, 1], 0b01_00_11),
    (3, [5, 7], 0x75),  # 3-bit indices use 4-bit slots
    (4, [0xA, 0x5], 0x5A),
])
def test_known_bytes(bits, idx, byte):
    assert packing.pack(np.array(idx, np.uint8), bits) == bytes([byte])


def test_error_names_codec_and_stream():
    with pytest.raises(nnar.CodecDataError, match="nnar.x: stream 'indices'"):
        packing.check_packed(b"\x0f", 2, 2, 2, "nnar.x", "indices")
