"""nnar.chunkwise: records whose streams are chunked, decoded chunk by chunk into the output,
give what decoding whole streams gives, bytes and error codes alike."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import nnar
from nnar import chunkwise, pieces, threads
from nnar import pipeline as P
from nnar.codecs.byteplanes import BytePlanes
from nnar.codecs.chunked import Chunked
from nnar.codecs.huffman import Huffman
from nnar.codecs.raw import Raw
from nnar.codecs.zstd import ENTROPY, Zstd

PIPELINES = {
    "planes, zstd chunks": P.Pipeline(array_bytes=BytePlanes(), stream_chains=((), (Chunked(4096, ENTROPY),)),
                                      chunk_bytes=None),
    "planes, every plane chunked": P.Pipeline(array_bytes=BytePlanes(), stream_chains=((Chunked(8192, Zstd(3)),),),
                                              chunk_bytes=None),
    "raw, Huffman chunks": P.Pipeline(array_bytes=Raw(), stream_chains=((Chunked(4096, Huffman()),),),
                                      chunk_bytes=None),
}


def _pack(w: np.ndarray, pipeline: P.Pipeline) -> bytes:
    import io
    from nnar.archive import ArchiveWriter
    buf = io.BytesIO()
    with ArchiveWriter(buf) as writer:
        writer.write("w", w, pipeline=pipeline)
    return buf.getvalue()


def _whole(monkeypatch):
    monkeypatch.setattr(chunkwise, "chunk_bytes", lambda *a: None)


def _outcome(fn):
    try:
        return "ok", fn()
    except nnar.NnarError as e:
        return e.code, None


def _reads(data: bytes) -> dict:
    out = {}
    for t in (1, 2):
        threads.set_threads(t)
        try:
            out["read", t] = _outcome(lambda: nnar.open(data).read("w", verify=True).tobytes())
            out["verify", t] = _outcome(lambda: tuple(i.name for i in nnar.verify(data)))
        finally:
            threads.set_threads(None)
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32 - 1), st.integers(0, 40_000), st.sampled_from(sorted(PIPELINES)),
       st.sampled_from(["float32", "float16", "int64", "uint8"]))
def test_chunk_by_chunk_gives_the_whole_decode(monkeypatch, seed, n, pipeline, dtype):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(n) * 0.05).astype(dtype) if dtype.startswith("float") \
        else rng.integers(0, 100, n).astype(dtype)
    data = _pack(w, PIPELINES[pipeline])
    calls = []
    real = chunkwise.decode
    with monkeypatch.context() as m:  # the fixture lasts the whole test, not one example
        m.setattr(chunkwise, "decode", lambda *a: calls.append(1) or real(*a))
        got = _reads(data)
    with nnar.open(data) as a:
        rec = a._reader.read_descriptor(a._reader.tensor_entries()[0])
    # the path under test is taken when a stream is chunked (the writer may store them all as they are)
    assert bool(calls) == any(s.codecs for s in rec.segments)
    assert got["read", 1] == got["read", 2] == ("ok", w.tobytes())
    assert got["verify", 1] == got["verify", 2] == ("ok", ("w",))
    with monkeypatch.context() as m:
        _whole(m)
        assert got == _reads(data)


def _chunked_planes(w: np.ndarray, edit) -> bytes:
    """``w`` as byte planes in zstd chunks of 4096, ``edit(name, stored)`` applied to each
    plane's stored bytes, the CRCs right for what is stored."""
    from archive_builder import BYTEPLANES, Builder
    from nnar.codecs.abc import TensorSpec
    codec = Chunked(4096, Zstd(3))
    streams, _ = BytePlanes().encode(w, TensorSpec("float32", w.shape))
    stage = {"codec": codec.codec_id, "config": codec.get_config(), "params": {}}
    segs = [(name, [stage], len(bytes(p)), edit(name, bytes(codec.encode(bytes(p))[0]))) for name, p in streams.items()]
    return Builder().tensor([("w", w.shape)], "float32", segs, pipeline=[BYTEPLANES], decoded=w.tobytes()).build(
        content=True)


EDITS = {
    "a chunk's frame cut": lambda name, b: b[:-3] if name == "p2" else b,
    "a byte after the chunks": lambda name, b: b + b"\0" if name == "p1" else b,
    "a table size off by one": lambda name, b: b[:8] + (int.from_bytes(b[8:16], "little") + 1).to_bytes(8, "little")
    + b[16:] if name == "p3" else b,
    "a length above raw_length": lambda name, b: (int.from_bytes(b[:8], "little") + 1).to_bytes(8, "little") + b[8:]
    if name == "p0" else b,
    "a corrupt block": lambda name, b: b[:60] + bytes([b[60] ^ 0xFF]) + b[61:] if name == "p3" else b,
    "two planes broken": lambda name, b: b[:-2] if name in ("p0", "p3") else b,
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_broken_chunked_stream_is_the_same_error(monkeypatch, edit):
    w = (np.random.default_rng(6).standard_normal(20_000) * 0.1).astype(np.float32)
    data = _chunked_planes(w, EDITS[edit])
    got = _reads(data)
    assert got["verify", 1][0] == "codec-data" and len(set(got.values())) == 1, got
    _whole(monkeypatch)
    assert got == _reads(data)
    monkeypatch.setattr(pieces, "MIN_BYTES", 1)  # and the piece-at-a-time path, from a file
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 3000)
    assert got == _reads(data)


def test_chunk_sizes_that_differ_or_cut_elements_take_the_whole_path():
    from nnar.codecs.abc import TensorSpec
    a, b = Chunked(4096, Zstd(3)), Chunked(8192, Zstd(3))
    chains = {"p0": ([(a, {})], None), "p1": ([(b, {})], None)}
    assert chunkwise.chunk_bytes(BytePlanes(), TensorSpec("float16", (10,)), chains) is None
    assert chunkwise.chunk_bytes(BytePlanes(), TensorSpec("float16", (10,)), {"p0": ([(a, {})], None),
                                                                          "p1": ([], None)}) == 4096
    assert chunkwise.chunk_bytes(Raw(), TensorSpec("float32", (10,)), {"data": ([(Chunked(4098, Zstd(3)), {})], None)}) \
        is None
    assert chunkwise.chunk_bytes(Raw(), TensorSpec("float32", (10,)), {"data": ([], None)}) is None
