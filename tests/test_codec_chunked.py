"""nnar.chunked (spec/codecs/chunked.md): round trips, the encoded bound, the table's checks,
hostile tables, and what the writer chunks."""

import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nnar
from nnar import pieces, threads
from nnar.codecs import get_codec_class
from nnar.codecs.chunked import Chunked, ChunkReader
from nnar.codecs.huffman import Huffman
from nnar.codecs.zstd import ENTROPY, Zstd
from nnar.errors import CodecDataError, UnsupportedCodec

INNERS = [Zstd(3), ENTROPY, Huffman()]


def _stream(draw_bytes: bytes, n: int) -> bytes:
    """``n`` bytes: the drawn bytes repeated, so streams compress as real ones do, a little."""
    return (draw_bytes * (n // max(1, len(draw_bytes)) + 1))[:n] if draw_bytes else bytes(n)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 40_000), st.integers(4096, 12_000), st.sampled_from(INNERS))
def test_round_trip_within_the_bound(seed_bytes, n, chunk_bytes, inner):
    data = _stream(seed_bytes, n)
    codec = Chunked(chunk_bytes, inner)
    stored, params = codec.encode(data)
    assert params == {}
    assert len(stored) <= codec.encoded_bound(n)
    assert bytes(codec.decode(stored, {}, n)) == data
    # the table: length, then one size per chunk, adding up to the rest
    k = -(-n // chunk_bytes)
    assert struct.unpack_from("<Q", stored)[0] == n
    assert sum(struct.unpack_from(f"<{k}Q", stored, 8)) == len(stored) - 8 - 8 * k
    # and from its stored config, as a reader builds it
    again = get_codec_class("nnar.chunked").from_config(codec.get_config())
    assert again == codec and bytes(again.decode(stored, {}, n)) == data


@pytest.mark.parametrize("threads_n", [1, 2])
def test_parallel_decode_gives_the_serial_bytes(threads_n):
    data = np.random.default_rng(1).integers(0, 7, 9 << 20).astype(np.uint8).tobytes()
    codec = Chunked(1 << 20, Zstd(1))
    stored, _ = codec.encode(data)
    threads.set_threads(threads_n)
    try:
        assert bytes(codec.decode(stored, {}, len(data))) == data
    finally:
        threads.set_threads(None)


def test_the_spec_example():
    """chunked.md's example: 10,000 bytes in chunks of 4096 under zstd, and its bound."""
    data = bytes(range(100)) * 100
    codec = Chunked(4096, Zstd(3))
    stored, _ = codec.encode(data)
    assert stored[:8] == bytes.fromhex("1027000000000000")
    sizes = struct.unpack_from("<3Q", stored, 8)
    assert len(stored) == 32 + sum(sizes)
    assert codec.encoded_bound(10_000) == 10_258
    assert Chunked(4096, Zstd(3)).encoded_bound(0) == 8


def _table(n, sizes, rest=b""):
    return struct.pack(f"<Q{len(sizes)}Q", n, *sizes) + rest


@pytest.mark.parametrize("stored, max_length, why", [
    (b"\0" * 7, 100, "at least 8"),
    (_table(101, []), 100, "at most 100"),
    (_table(5000, [1]), 5000, "table"),  # 2 chunks need 16 bytes of sizes
    (_table(5000, [1, 1], b"\0"), 5000, "add up"),
    (_table(5000, [(1 << 64) - 1, 3], b"\0\0"), 5000, "add up"),  # wraps to 2 in 64 bits
    (_table(0, [], b"\0"), 0, "add up"),
])
def test_a_bad_table_is_codec_data_before_any_chunk(stored, max_length, why):
    with pytest.raises(CodecDataError, match=why):
        Chunked(4096, Zstd(3)).decode(stored, {}, max_length)


@pytest.mark.parametrize("config, error", [
    ({"chunk_bytes": 4095, "chunk": {"codec": "nnar.zstd", "config": {"level": 3}}}, CodecDataError),
    ({"chunk_bytes": 1 << 30 | 1, "chunk": {"codec": "nnar.zstd", "config": {"level": 3}}}, CodecDataError),
    ({"chunk_bytes": True, "chunk": {"codec": "nnar.zstd", "config": {"level": 3}}}, CodecDataError),
    ({"chunk_bytes": 4096}, CodecDataError),
    ({"chunk_bytes": 4096, "chunk": {"codec": "nnar.zstd", "config": {}, "params": {}}}, CodecDataError),
    ({"chunk_bytes": 4096, "chunk": {"codec": "nnar.raw", "config": {}}}, CodecDataError),
    ({"chunk_bytes": 4096, "chunk": {"codec": "nnar.chunked", "config": {}}}, CodecDataError),
    ({"chunk_bytes": 4096, "chunk": {"codec": "nnar.lz4", "config": {}}}, UnsupportedCodec),
    ({"chunk_bytes": 4096, "chunk": {"codec": "nnar.zstd", "config": {"level": 99}}}, CodecDataError),
    ({"chunk_bytes": 4096, "chunk": {"codec": "nnar.zstd", "config": {}}, "level": 3}, CodecDataError),
])
def test_a_bad_config_is_refused(config, error):
    with pytest.raises(error):
        Chunked.from_config(config)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255), st.integers(1, 3))
def test_a_mutated_stream_is_an_nnar_error_or_the_data(pos, value, extra):
    """Any byte of a chunked stream changed, or bytes added or cut: codec-data, never a numpy or
    Python error (or, rarely, the data itself, where a changed byte is one zstd ignores)."""
    data = bytes(range(256)) * 40
    codec = Chunked(4096, Zstd(3))
    stored = bytearray(codec.encode(data)[0])
    for variant in (lambda s: s.__setitem__(pos % len(s), value), lambda s: s.extend(b"\0" * extra),
                    lambda s: s.__delitem__(slice(len(s) - extra, None))):
        s = bytearray(stored)
        variant(s)
        try:
            out = codec.decode(bytes(s), {}, len(data))
        except CodecDataError:
            continue
        assert len(out) == len(data)


def test_a_huge_hostile_table_costs_its_own_bytes():
    """Millions of chunks declared: the table is held as two arrays, not a tuple per chunk."""
    n = 4096 * (1 << 20)
    stored = _table(n, [0] * (1 << 20))
    layout = Chunked(4096, Zstd(3)).layout(lambda p, c: memoryview(stored)[p:p + c], len(stored), n)
    assert layout[0] == n and len(layout[1]) == 1 << 20
    assert layout[1].starts.nbytes + layout[1].sizes.nbytes == 16 << 20


def test_chunk_reader_reads_pieces_across_chunks():
    data = np.random.default_rng(2).integers(0, 50, 30_000).astype(np.uint8).tobytes()
    codec = Chunked(4096, ENTROPY)
    stored = codec.encode(data)[0]
    reader = ChunkReader(codec, lambda p, c: stored[p:p + c], len(stored), len(data))
    got = [reader.read(n) for n in (1, 4095, 5000, 7, 100_000)]
    assert b"".join(got) == data and got[-1] == data[9_103:]


def test_the_writer_chunks_long_streams_only():
    """Streams of 4 MiB or more under one stage are stored in 1 MiB chunks; shorter ones, and
    archives with none, are as before; reading gives the tensors back either way."""
    rng = np.random.default_rng(3)
    big = (rng.standard_normal(1 << 22) * 0.02).astype(np.float32)  # planes of 4 MiB
    small = (rng.standard_normal(1000) * 0.02).astype(np.float32).reshape(10, 100)
    data = nnar.pack({"big": big, "small": small})
    with nnar.open(data) as a:
        records = {e.names[0]: a._reader.read_descriptor(e) for e in a._reader.tensor_entries()}
        chains = {name: [s.codecs for s in rec.segments] for name, rec in records.items()}
        assert all(c == [] or c[0]["codec"] == "nnar.chunked" and c[0]["config"]["chunk_bytes"] == 1 << 20
                   for c in chains["big"]), chains["big"]
        assert any(c and c[0]["codec"] == "nnar.chunked" for c in chains["big"])
        assert not any(c and c[0]["codec"] == "nnar.chunked" for c in chains["small"])
        assert a.format_version == (1, 5)
        assert a.read("big").tobytes() == big.tobytes() and a.read("small").tobytes() == small.tobytes()
    assert [i.name for i in nnar.verify(data)] == ["big", "small"]


def test_chunked_records_decode_in_pieces(monkeypatch):
    """A chunked record takes the piece-at-a-time path and gives what a whole decode gives."""
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 300_000)
    w = (np.random.default_rng(4).standard_normal(5 << 20) * 0.02).astype(np.float32)
    data = nnar.pack({"w": w})
    monkeypatch.setattr(pieces, "MIN_BYTES", 1)
    with nnar.open(data) as a:
        rec = a._reader.read_descriptor(a._reader.tensor_entries()[0])
        assert pieces.eligible(rec) and any(s.codecs and s.codecs[0]["codec"] == "nnar.chunked" for s in rec.segments)
    assert [(i.name, x.tobytes()) for i, x in nnar.StreamReader(data, verify=True)] == [("w", w.tobytes())]
    assert nnar.open(data).read("w", verify=True).tobytes() == w.tobytes()


def test_a_patch_between_chunked_archives_rebuilds_them_byte_for_byte():
    """A content patch re-encodes changed records with their chains (spec/patch.md): chunked
    ones included, so the result is the new archive itself."""
    import io
    rng = np.random.default_rng(5)
    old_w = rng.integers(0, 16, 4 << 20).astype(np.uint8)  # one 4 MiB stream: chunked
    new_w = old_w.copy()
    new_w[1000:5000] = 3
    old, new = nnar.pack({"w": old_w}), nnar.pack({"w": new_w})
    with nnar.open(new) as a:
        rec = a._reader.read_descriptor(a._reader.tensor_entries()[0])
        assert [s.codecs[0]["codec"] for s in rec.segments] == ["nnar.chunked"]
    patch = io.BytesIO()
    nnar.diff(old, new, patch)
    out = io.BytesIO()
    nnar.patch(old, patch.getvalue(), out)
    assert out.getvalue() == new
