"""Laws of ``nnar.huffman``: a canonical Huffman code of bytes with a 136-byte header, decoded to
exactly ``count`` ≤ ``max_length`` bytes; any other stream is ``CodecDataError``
(spec/codecs/huffman.md)."""

from __future__ import annotations

import importlib.util
import itertools
import math
import random
import re
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nnar
from nnar.codecs import get_codec_class
from nnar.codecs.huffman import (HEADER_SIZE, MAX_CODE_LENGTH, Huffman, _huffman_depths, _package_merge,
                                 canonical_codes, code_lengths, encoded_size)

import strategies as S

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))
from common import Take  # noqa: E402

# -- the format, straight from the spec page (bit strings, no cleverness) --------------------------


def spec_codes(lengths) -> dict[int, str]:
    """Canonical codes as bit strings: by increasing length, then symbol (spec: Canonical codes)."""
    lengths = [int(n) for n in lengths]
    out, code, prev = {}, 0, 0
    for s in sorted((s for s in range(256) if lengths[s]), key=lambda s: (lengths[s], s)):
        code <<= lengths[s] - prev
        out[s] = format(code, f"0{lengths[s]}b")
        code, prev = code + 1, lengths[s]
    return out


def spec_encode(data: bytes, lengths) -> bytes:
    codes = spec_codes(lengths)
    bits = "".join(codes[b] for b in data)
    bits += "0" * (-len(bits) % 8)
    table = bytes(int(lengths[2 * i]) | int(lengths[2 * i + 1]) << 4 for i in range(128))
    return len(data).to_bytes(8, "little") + table + int(bits or "0", 2).to_bytes(len(bits) // 8, "big")


def stream(count: int, lengths: dict[int, int] | list[int], bits: bytes = b"") -> bytes:
    """A stream with this header, whatever it means (for the corrupt cases)."""
    table = [0] * 256
    for s, n in (lengths.items() if isinstance(lengths, dict) else enumerate(lengths)):
        table[s] = n
    return spec_encode(b"", table)[8:].join([count.to_bytes(8, "little"), bits])


def entropy_bytes(hist: np.ndarray) -> float:
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum() * hist.sum() / 8)


def kraft(lengths) -> float:
    return sum(2.0 ** -int(n) for n in lengths if n)


# -- data ----------------------------------------------------------------------------------------

FIB = [1, 1]
while len(FIB) < 40:
    FIB.append(FIB[-1] + FIB[-2])


@st.composite
def skewed(draw) -> bytes:
    """Symbols with Fibonacci-like or geometric counts: Huffman codes far deeper than 15 bits."""
    k = draw(st.integers(2, 24))
    symbols = draw(st.permutations(range(256)))[:k]
    if draw(st.booleans()):
        counts = FIB[:k]
    else:
        counts = [1 << max(0, i - draw(st.integers(0, 1))) for i in range(min(k, 17))]
    data = bytearray(b"".join(bytes([s]) * n for s, n in zip(symbols, counts)))
    draw(st.randoms(use_true_random=False)).shuffle(data)
    return bytes(data)


@st.composite
def weighted(draw) -> bytes:
    """Bytes drawn from a random distribution over a random alphabet (1 to 256 symbols)."""
    k = draw(st.integers(1, 256))
    alphabet = draw(st.permutations(range(256)))[:k]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p = rng.dirichlet(np.full(k, draw(st.sampled_from([0.05, 0.3, 1.0, 10.0]))))
    n = draw(st.integers(0, 20_000))
    return np.asarray(alphabet, np.uint8)[rng.choice(k, n, p=p)].tobytes()


special = st.sampled_from([b"", b"\x00", b"\xff", b"a" * 9, b"\x07" * 64, bytes(range(256)),
                           bytes(range(256)) * 3 + b"\x00", b"ab", b"abracadabra"])
any_data = st.one_of(S.byte_strings(), special, skewed(), weighted())


def hist_of(data) -> np.ndarray:
    return np.bincount(np.frombuffer(data, np.uint8), minlength=256)


# -- round trips and the exact bytes -------------------------------------------------------------


@given(any_data)
def test_round_trip_is_exact(data):
    enc, params = Huffman().encode(data)
    assert params == {}
    assert bytes(Huffman().decode(bytes(enc), params, len(data))) == data
    assert bytes(Huffman().decode(enc, params, len(data) + 100)) == data  # a bound, not a size


@given(any_data)
def test_encoding_is_the_spec_bytes_and_deterministic(data):
    enc = bytes(Huffman().encode(data)[0])
    lengths = code_lengths(hist_of(data))
    assert enc == spec_encode(data, lengths)
    assert enc == bytes(Huffman().encode(bytearray(data))[0])


@given(any_data)
def test_encoded_size_is_exact(data):
    assert encoded_size(hist_of(data)) == len(Huffman().encode(data)[0])
    assert encoded_size(list(hist_of(data))) == len(Huffman().encode(data)[0])


def test_the_spec_example():
    enc = bytes(Huffman().encode(b"abracadabra")[0])
    table = bytearray(128)
    table[48], table[49], table[50], table[57] = 0x10, 0x33, 0x03, 0x03
    assert enc == bytes.fromhex("0B00000000000000") + table + bytes.fromhex("4EAC9C")
    assert len(enc) == 139


def test_empty_and_one_symbol_layout():
    assert bytes(Huffman().encode(b"")[0]) == bytes(HEADER_SIZE)
    enc = bytes(Huffman().encode(b"\x05" * 17)[0])
    assert enc[:8] == (17).to_bytes(8, "little") and enc[8 + 2] == 0x10 and sum(enc[8:136]) == 0x10
    assert enc[136:] == bytes(3)  # 17 zero bits, padded to 3 bytes
    enc = bytes(Huffman().encode(b"\xff")[0])
    assert enc[8 + 127] == 0x10 and enc[136:] == b"\x00"


def test_all_256_symbols_equally_often_take_8_bits():
    data = bytes(range(256)) * 10
    lengths = code_lengths(hist_of(data))
    assert (lengths == 8).all()
    enc = bytes(Huffman().encode(data)[0])
    assert enc[HEADER_SIZE:] == data  # canonical 8-bit codes are the bytes themselves


@given(st.binary(max_size=2048))
def test_decoder_accepts_memoryviews(data):
    enc = bytes(Huffman().encode(data)[0])
    padded = bytearray(b"xx" + enc + b"yy")
    assert bytes(Huffman().decode(memoryview(padded)[2:-2], {}, len(data))) == data


def test_large_input_round_trips_across_encoder_chunks():
    rng = np.random.default_rng(7)
    for n in (65536 * 3 + 1, 65536 * 2 - 3, 300_001):
        data = rng.geometric(0.1, n).clip(0, 255).astype(np.uint8).tobytes()
        enc, _ = Huffman().encode(data)
        assert len(enc) == encoded_size(hist_of(data))
        assert bytes(Huffman().decode(enc, {}, n)) == data


# -- code lengths --------------------------------------------------------------------------------


def cost(hist, lengths) -> int:
    return sum(int(h) * int(n) for h, n in zip(hist, lengths))


histograms = st.one_of(
    any_data.map(hist_of),
    st.lists(st.integers(0, 10**9), min_size=256, max_size=256).map(np.array),
    st.lists(st.sampled_from(FIB[:36] + [0] * 20), min_size=256, max_size=256).map(np.array),
)


@given(histograms)
def test_lengths_form_a_valid_code(hist):
    lengths = code_lengths(hist)
    assert lengths.dtype == np.uint8 and lengths.shape == (256,)
    assert ((lengths > 0) == (hist > 0)).all()  # a code for exactly the symbols that occur
    assert lengths.max(initial=0) <= MAX_CODE_LENGTH
    used = np.count_nonzero(lengths)
    if used == 1:
        assert lengths.max() == 1
    elif used > 1:
        assert kraft(lengths) == 1.0  # complete: exact in binary floating point for lengths ≤ 15


@given(histograms)
def test_lengths_are_optimal_huffman_when_no_code_is_too_long(hist):
    free = code_lengths(hist, limit=255)  # plain Huffman
    limited = code_lengths(hist)
    if free.max(initial=0) <= MAX_CODE_LENGTH:
        assert (free == limited).all()
    else:
        assert cost(hist, limited) > cost(hist, free)
    # a smaller weight never gets a shorter code
    used = np.flatnonzero(hist)
    for a, b in itertools.combinations(used, 2):
        if hist[a] < hist[b]:
            assert limited[a] >= limited[b]


def test_fibonacci_counts_force_the_limit():
    hist = np.zeros(256, np.int64)
    hist[:30] = FIB[:30]
    assert code_lengths(hist, limit=255).max() == 29  # the Huffman tree is a chain
    lengths = code_lengths(hist)
    assert lengths.max() == 15 and kraft(lengths) == 1.0
    data = np.repeat(np.arange(20, dtype=np.uint8), FIB[:20])
    np.random.default_rng(0).shuffle(data)
    enc, _ = Huffman().encode(data.tobytes())
    assert bytes(Huffman().decode(enc, {}, data.size)) == data.tobytes()
    assert len(enc) == encoded_size(hist_of(data.tobytes()))


def brute_force_cost(weights: list[int], limit: int) -> int:
    """Cheapest complete code of at most ``limit`` bits, by trying every length vector."""
    best = None
    for lens in itertools.product(range(1, limit + 1), repeat=len(weights)):
        if sum(2.0 ** -n for n in lens) == 1.0:
            c = sum(w * n for w, n in zip(weights, lens))
            best = c if best is None else min(best, c)
    return best


@settings(max_examples=30)
@given(st.lists(st.integers(1, 1000), min_size=2, max_size=6), st.integers(1, 5))
def test_package_merge_is_optimal(weights, limit):
    weights = sorted(weights)
    if len(weights) > 1 << limit:
        return
    depth = _package_merge(weights, limit)
    assert max(depth) <= limit and sum(2.0 ** -d for d in depth) == 1.0
    assert sum(w * d for w, d in zip(weights, depth)) == brute_force_cost(weights, limit)
    if limit >= len(weights) - 1:  # no limit in effect: the Huffman cost
        free = _huffman_depths(weights)
        assert sum(w * d for w, d in zip(weights, depth)) == sum(w * d for w, d in zip(weights, free))


def test_ties_go_to_the_lower_symbol():
    hist = np.zeros(256, np.int64)
    hist[[3, 9, 200]] = 5  # three equal weights: one gets 1 bit, the other two 2 bits
    lengths = code_lengths(hist)
    assert lengths[[3, 9, 200]].tolist() == [2, 2, 1]  # the lightest (by symbol) go deepest
    assert spec_codes(lengths) == {200: "0", 3: "10", 9: "11"}


def test_code_lengths_rejects_bad_histograms():
    for bad in ([1] * 255, np.ones(257), np.full(256, -1), np.full(256, 0.5), np.ones((2, 128))):
        with pytest.raises(ValueError):
            code_lengths(bad)
    with pytest.raises(ValueError):
        code_lengths(np.ones(256, np.int64), limit=7)  # 256 symbols need 8 bits
    assert code_lengths(np.ones(256, np.int64), limit=8).max() == 8


@given(any_data)
def test_canonical_code_property(data):
    lengths = code_lengths(hist_of(data))
    codes = canonical_codes(lengths)
    used = sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s))
    as_bits = {s: format(int(codes[s]), f"0{lengths[s]}b") for s in used}
    assert as_bits == spec_codes(lengths)
    for s in used:
        assert int(codes[s]) < 1 << int(lengths[s])
    # in canonical order the codes, left-aligned to 15 bits, increase with no gaps (complete)
    starts = [int(codes[s]) << (15 - int(lengths[s])) for s in used]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    if len(used) > 1:
        ends = [a + (1 << (15 - int(lengths[s]))) for a, s in zip(starts, used)]
        assert starts[0] == 0 and ends[-1] == 1 << 15 and starts[1:] == ends[:-1]
    # prefix-free
    for a, b in itertools.combinations(as_bits.values(), 2):
        assert not a.startswith(b) and not b.startswith(a)


# -- compression ---------------------------------------------------------------------------------

N_SYMBOLS = 1 << 20


def sources():
    rng = np.random.default_rng(2024)
    nib = lambda: np.clip(np.round(rng.normal(7.5, 2.0, N_SYMBOLS)), 0, 15).astype(np.uint8)  # noqa: E731
    return {
        "geometric": rng.geometric(0.2, N_SYMBOLS).clip(0, 255).astype(np.uint8),
        "4-bit-pairs": nib() | nib() << 4,
        "uniform": rng.integers(0, 256, N_SYMBOLS, dtype=np.uint8),
        "exponent-plane": ((rng.normal(0, 0.02, N_SYMBOLS).astype(np.float32).view(np.uint32) >> 23)
                           & 0xFF).astype(np.uint8),
    }


@pytest.mark.parametrize("name", list(sources()))
def test_compresses_within_2_percent_of_order_0_entropy(name):
    data = sources()[name].tobytes()
    enc, _ = Huffman().encode(data)
    bound = entropy_bytes(hist_of(data))
    assert len(enc) <= 1.02 * bound + HEADER_SIZE + 1, (len(enc), bound)
    assert len(enc) >= bound  # nothing beats the entropy: a sanity check of the measure
    assert bytes(Huffman().decode(enc, {}, len(data))) == data


@pytest.mark.parametrize("p", [0.5, 0.6, 0.9, 0.99])
def test_peaked_sources_stay_within_gallagers_bound(p):
    """Where one symbol has probability p ≥ 1/2, a Huffman code costs up to p + 0.086 bits per
    symbol above the entropy (Gallager, 1978): no 2% promise there, but that bound holds."""
    data = np.random.default_rng(3).geometric(p, N_SYMBOLS).clip(0, 255).astype(np.uint8).tobytes()
    hist = hist_of(data)
    enc, _ = Huffman().encode(data)
    p_max = hist.max() / hist.sum()
    assert len(enc) <= entropy_bytes(hist) + N_SYMBOLS * (p_max + 0.086) / 8 + HEADER_SIZE + 1


# -- config --------------------------------------------------------------------------------------


def test_registered_under_its_id():
    assert get_codec_class("nnar.huffman") is Huffman
    assert Huffman.kind == "bytes-bytes" and Huffman.lossless and Huffman.param_keys == frozenset()


def test_config_round_trip():
    assert Huffman().get_config() == {}
    again = Huffman.from_config({})
    assert again == Huffman() and hash(again) == hash(Huffman()) and repr(again) == "Huffman()"


@pytest.mark.parametrize("config", [{"level": 3}, {"limit": 15}, None, [], "x", 3])
def test_bad_config_is_codec_data_error(config):
    with pytest.raises(nnar.CodecDataError):
        Huffman.from_config(config)


# -- corrupt streams -----------------------------------------------------------------------------

AB = {ord("a"): 1, ord("b"): 1}  # a = 0, b = 1


def rejects(data: bytes, max_length: int = 1 << 20, match: str | None = None):
    with pytest.raises(nnar.CodecDataError, match=match) as info:
        Huffman().decode(data, {}, max_length)
    assert info.value.code == "codec-data" and str(info.value).startswith("nnar.huffman: ")
    return info.value


@pytest.mark.parametrize("data", [b"", b"abracadabra", b"\x00" * 100, bytes(range(256)) * 2])
def test_truncated_stream_is_rejected_at_every_length(data):
    enc = bytes(Huffman().encode(data)[0])
    for k in range(HEADER_SIZE):
        rejects(enc[:k], match="expected at least 136 bytes")
    for k in range(HEADER_SIZE, len(enc)):
        rejects(enc[:k])


def test_truncation_inside_the_codes_says_so():
    enc = bytes(Huffman().encode(b"abracadabra")[0])
    rejects(enc[:HEADER_SIZE + 1], match="11 codes of 1 to 3 bits need 2 to 5 code bytes, found 1")
    rejects(enc[:-1], match="the code bytes hold 8 symbols, expected 11")  # 0100111 0 | 10101100
    # a cut the size check cannot see: the codes end inside a code
    data = b"a" * 90 + b"bcdr" * 20
    enc = bytes(Huffman().encode(data)[0])
    rejects(enc[:-2], match="end inside a code|hold .* symbols")


@given(any_data, st.binary(min_size=1, max_size=40))
def test_extra_bytes_are_rejected(data, extra):
    enc = bytes(Huffman().encode(data)[0])
    rejects(enc + extra, max_length=len(data))


def test_extra_bytes_message():
    enc = bytes(Huffman().encode(b"abracadabra" * 3)[0])  # 69 bits: 9 bytes, at most 99 bits
    rejects(enc + b"\x00", match=r"take 9 bytes, found 10 \(1 bytes after them\)")
    rejects(bytes(Huffman().encode(b"")[0]) + b"\x00", match="count is 0, expected no code bytes, found 1")


@given(any_data.filter(lambda d: len(set(d)) >= 2), st.data())
def test_nonzero_padding_is_rejected(data, d):
    enc = bytearray(Huffman().encode(data)[0])
    total = cost(hist_of(data), code_lengths(hist_of(data)))
    if total % 8 == 0:
        return
    enc[-1] |= 1 << d.draw(st.integers(0, 7 - total % 8))
    rejects(bytes(enc), max_length=len(data), match="zero padding bits")


def test_nonzero_padding_with_one_symbol_is_rejected():
    enc = bytearray(Huffman().encode(b"z" * 5)[0])  # 5 zero bits + 3 padding bits
    enc[-1] = 0b00000100
    rejects(bytes(enc), match="zero padding bits after the last code, found a 1 at bit 5")


def test_invalid_code_in_the_bitstream_is_rejected():
    """The one incomplete code allowed (one symbol, code 0) leaves `1` invalid."""
    enc = bytearray(Huffman().encode(b"z" * 20)[0])
    enc[HEADER_SIZE + 1] = 0b00010000  # bit 11
    rejects(bytes(enc), match="invalid code 1 at bit 11")


def test_count_above_max_length_fails_before_allocating():
    for count in (2**64 - 1, 2**40, 101):
        data = stream(count, AB, b"\x00" * 13)
        tracemalloc.start()
        try:
            rejects(data, max_length=100, match=f"count declares {count} bytes, expected at most 100")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20


def test_count_within_limits_but_not_in_the_bits_fails_before_allocating():
    tracemalloc.start()
    try:
        rejects(stream(1 << 40, AB, b"\x00" * 13), max_length=1 << 41,
                match="1099511627776 codes of 1 to 1 bits need")
        rejects(stream(1 << 30, {0: 1}, b"\x00" * 13), max_length=1 << 41)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_bomb_within_bounds_is_the_declared_size_only():
    """The most a stream can ask for is count bytes, and count ≤ max_length."""
    enc = bytes(Huffman().encode(bytes(1000))[0])
    rejects(enc, max_length=999)
    assert len(Huffman().decode(enc, {}, 1000)) == 1000


def test_over_subscribed_lengths_are_rejected():
    rejects(stream(3, {0: 1, 1: 1, 2: 1}, b"\x00"), match="over-subscribed")
    rejects(stream(3, {0: 1, 1: 2, 2: 2, 3: 2}, b"\x00"), match="over-subscribed")
    rejects(stream(3, [15] * 256, b"\x00" * 6), match="incomplete")  # 256 / 2^15 < 1
    rejects(stream(3, {s: 8 for s in range(256)} | {0: 7}, b"\x00" * 3), match=r"over-subscribed.*32896/32768")


def test_incomplete_lengths_are_rejected():
    rejects(stream(3, {0: 1, 1: 2}, b"\x00"), match=r"incomplete: expected a Kraft sum of 1, found 24576/32768")
    rejects(stream(3, {0: 2, 1: 2}, b"\x00"), match="incomplete")
    rejects(stream(3, {s: 15 for s in range(5)}, b"\x00" * 6), match="incomplete")


def test_one_symbol_must_have_length_1():
    for n in (2, 7, 15):
        rejects(stream(8, {65: n}, bytes(n)), match=f"one symbol \\(65\\) has a code: expected its length 1, found {n}")


def test_count_and_lengths_must_agree():
    rejects(stream(0, {0: 1}), match="count is 0, expected every code length 0, found 1 for symbol 0")
    rejects(stream(5, {}, b"\x00"), match="expected at least one code length, found all 0")


def test_lengths_above_15_cannot_be_written():
    """A length is a nibble: the largest value is 15, so 'length > 15' is not a stream at all;
    the encoder's lengths never exceed 15 (test_lengths_form_a_valid_code)."""
    table = stream(0, [15] * 256)[8:HEADER_SIZE]
    assert set(table) == {0xFF}


def test_a_complete_code_with_lengths_up_to_15_decodes():
    lengths = {s: s + 1 for s in range(14)} | {14: 15, 15: 15}  # 1, 2, ..., 14, 15, 15: complete
    table = [0] * 256
    for s, n in lengths.items():
        table[s] = n
    data = bytes([15, 14, 0, 13, 1])
    enc = spec_encode(data, table)
    assert bytes(Huffman().decode(enc, {}, 5)) == data


def corrupt(enc: bytearray, d, first: int, end: int) -> None:
    for _ in range(d.draw(st.integers(1, 4))):
        enc[d.draw(st.integers(first, end - 1))] ^= d.draw(st.integers(1, 255))


@given(any_data.filter(len), st.data())
def test_corrupt_streams_are_codec_data_error_or_at_most_max_length_bytes(data, d):
    enc = bytearray(Huffman().encode(data)[0])
    region = d.draw(st.sampled_from(["count", "lengths", "bits", "anywhere"]))
    first, end = {"count": (0, 8), "lengths": (8, HEADER_SIZE), "bits": (HEADER_SIZE, len(enc)),
                  "anywhere": (0, len(enc))}[region]
    if first >= end:
        return
    corrupt(enc, d, first, end)
    max_length = d.draw(st.sampled_from([len(data), len(data) * 2, 1 << 20]))
    try:
        out = Huffman().decode(bytes(enc), {}, max_length)
    except nnar.CodecDataError:
        return
    count = int.from_bytes(enc[:8], "little")
    assert len(out) == count <= max_length
    assert spec_encode(bytes(out), list(_lengths(enc))) == bytes(enc)  # accepted means canonical


def _lengths(enc) -> list[int]:
    return [enc[8 + s // 2] >> 4 * (s % 2) & 15 for s in range(256)]


@given(st.binary(max_size=400), st.integers(0, 1 << 20))
def test_arbitrary_bytes_are_codec_data_error_or_bytes(data, max_length):
    try:
        out = Huffman().decode(data, {}, max_length)
    except nnar.CodecDataError:
        return
    assert isinstance(out, (bytes, bytearray)) and len(out) <= max_length


@given(st.integers(0, 2000), st.dictionaries(st.integers(0, 255), st.integers(0, 15), max_size=20),
       st.binary(max_size=300), st.integers(0, 4000))
def test_arbitrary_headers_are_codec_data_error_or_exact_bytes(count, lengths, bits, max_length):
    data = stream(count, lengths, bits)
    try:
        out = Huffman().decode(data, {}, max_length)
    except nnar.CodecDataError:
        return
    assert len(out) == count <= max_length
    assert spec_encode(bytes(out), list(_lengths(data))) == data


@given(st.data())
def test_valid_streams_with_unused_codes_decode(d):
    """A length MAY be given to a symbol that does not occur (spec: lengths)."""
    table = [8] * 256
    data = d.draw(st.binary(min_size=1, max_size=200))  # count 0 needs every length 0
    assert bytes(Huffman().decode(spec_encode(data, table), {}, len(data))) == data


def test_random_valid_tables_round_trip_through_the_spec_encoder():
    rng = random.Random(5)
    for _ in range(200):
        k = rng.randint(2, 256)
        weights = sorted(rng.randint(1, 10**6) for _ in range(k))
        depth = _package_merge(weights, 15) if rng.random() < 0.5 else _huffman_depths(weights)
        if max(depth) > 15:
            continue
        symbols = rng.sample(range(256), k)
        table = [0] * 256
        for s, n in zip(symbols, depth):
            table[s] = n
        data = bytes(rng.choice(symbols) for _ in range(rng.randint(1, 300)))
        assert bytes(Huffman().decode(spec_encode(data, table), {}, len(data))) == data


def test_error_budget_of_the_entropy_bound_is_met_by_spec_example():
    """The 136-byte header is the whole overhead on tiny inputs (sanity of the size formula)."""
    assert encoded_size(hist_of(b"")) == HEADER_SIZE
    assert encoded_size(hist_of(b"x" * 8)) == HEADER_SIZE + 1
    assert encoded_size(hist_of(b"x" * 9)) == HEADER_SIZE + 2
    assert math.ceil(23 / 8) + HEADER_SIZE == encoded_size(hist_of(b"abracadabra"))


# -- the fuzz hook -------------------------------------------------------------------------------

def load_hook():
    spec = importlib.util.spec_from_file_location("nnar_fuzz_hook_nnar_huffman", FUZZ / "codecs" / "nnar_huffman.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_the_fuzz_hook_reaches_every_check():
    """fuzz/codecs/nnar_huffman.py builds inputs that pass the header checks and reach the bit
    walk, and each of the decoder's refusals; all keep the contract (fuzz/common.py)."""
    hook = load_hook()
    assert hook.CODEC_ID == Huffman.codec_id
    rng = np.random.default_rng(11)
    decoded, messages = 0, set()
    for _ in range(3000):
        raw = rng.integers(0, 256, int(rng.integers(0, 600)), dtype=np.uint8).tobytes()
        size = int(rng.integers(0, 500))  # a content length that fits in what follows
        config, params, payload = hook.inputs(Take(size.to_bytes(2, "little") + raw), None)
        codec = Huffman.from_config(config)
        max_length = 1 << 20
        try:
            out = codec.decode(payload, params, max_length)
        except nnar.CodecDataError as e:
            messages.add(re.sub(r"\d+", "N", str(e)).split(":")[1].strip()[:30])
            continue
        assert len(out) <= max_length
        decoded += 1
    assert decoded > 300
    for what in ("expected at least N bytes", "N codes of N to N bits", "code lengths are over-sub",
                 "code lengths are incomplet", "the N codes take N bytes", "expected zero padding bit",
                 "the code bytes end inside", "invalid code N at bit N"):
        assert any(m.startswith(what) for m in messages), (what, sorted(messages))


def test_the_fuzz_harness_keeps_its_contract_on_hook_inputs():
    import fuzz_codecs  # noqa: PLC0415

    ids = fuzz_codecs.codec_ids()
    i = ids.index(Huffman.codec_id)
    assert "nnar.huffman" in fuzz_codecs.HOOKS and i + len(ids) < 256
    rng = np.random.default_rng(12)
    for _ in range(300):
        body = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        fuzz_codecs.test_one_input(bytes([i + len(ids), 0, 0]) + body)  # hook path, dtype 0, rank 0


def test_the_spec_layout_table_matches_the_code():
    from nnar.codecs.huffman import COUNT_SIZE, LENGTHS_SIZE  # noqa: PLC0415

    page = (FUZZ.parent / "spec" / "codecs" / "huffman.md").read_text()
    assert page.startswith("# `nnar.huffman`") and "- 1.1: first version." in page
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in page.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [(int(r[0]), r[2]) for r in rows] == [(0, "`count`"), (COUNT_SIZE, "`lengths`"), (HEADER_SIZE, "`bits`")]
    assert [r[1] for r in rows[:2]] == [str(COUNT_SIZE), str(LENGTHS_SIZE)] and HEADER_SIZE == 136
    assert f"at most {MAX_CODE_LENGTH} bits" in page
