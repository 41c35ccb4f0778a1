"""nnar.pieces: large lossless records decoded a piece at a time give what a whole decode gives,
bytes and errors alike. Small thresholds make small tensors take the path."""

import io
import os
import tempfile

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings, strategies as st

import nnar
from nnar import pieces

from archive_builder import BYTEPLANES, RAW, Builder, zstd_stage


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(pieces, "MIN_BYTES", 1)
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 1000)
    monkeypatch.setattr(pieces, "CRC_CHUNK", 777)


def _whole(monkeypatch):
    monkeypatch.setattr(pieces, "MIN_BYTES", 1 << 62)


def _outcome(fn):
    try:
        return "ok", fn()
    except nnar.NnarError as e:
        return e.code, None


def _reads(data: bytes):
    """What each read path gives, or the error code it raises."""
    out = {}
    archive = nnar.open(data)
    for name in archive.names():
        out[("read", name)] = _outcome(lambda: archive.read(name, verify=True).tobytes())
    out["items"] = _outcome(lambda: [(k, v.tobytes()) for k, v in nnar.open(data).items(verify=True)])
    out["verify"] = _outcome(lambda: [i.name for i in nnar.open(data).verify()])
    # in order (nnar verify, unpack): large bodies left on disk and read in pieces
    out["stream"] = _outcome(lambda: [(i.name, a.tobytes()) for i, a in nnar.StreamReader(io.BytesIO(data), verify=True)])
    with tempfile.TemporaryDirectory() as d:  # a file on disk, as `nnar verify FILE` reads it
        path = os.path.join(d, "a.nnar")
        with open(path, "wb") as f:
            f.write(data)
        out["api.verify"] = _outcome(lambda: [i.name for i in nnar.verify(path)])
        out["file"] = _outcome(lambda: [(k, v.tobytes()) for k, v in nnar.open(path).items(verify=True)])
    return out


def _model(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"w": (rng.standard_normal(n) * 0.05).astype(np.float32),
            "h": rng.standard_normal(n // 3 + 1).astype(np.float16),
            "i": rng.integers(-1000, 1000, n // 2 + 7).astype(np.int32),
            "z": np.zeros(n, np.float32)}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32 - 1), st.integers(1, 5000))
def test_pieces_give_the_whole_decode(monkeypatch, seed, n):
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 1000)
    monkeypatch.setattr(pieces, "CRC_CHUNK", 777)
    data = nnar.pack(_model(seed, n))
    monkeypatch.setattr(pieces, "MIN_BYTES", 1)
    assert any(pieces.eligible(nnar.open(data)._reader.read_descriptor(e)) for e in nnar.open(data)._reader.tensor_entries())
    got = _reads(data)
    _whole(monkeypatch)
    assert got == _reads(data)
    assert got["items"][1] == [(k, v.tobytes()) for k, v in _model(seed, n).items()]


@pytest.mark.parametrize("threads", [1, 2])
def test_raw_records_and_unpack_to_a_file(tmp_path, monkeypatch, small_pieces, threads):
    nnar.set_threads(threads)
    try:
        x = np.arange(12_345, dtype=np.float64)
        data = Builder().raw_tensor("x", x).build(content=True)
        assert pieces.eligible(nnar.open(data)._reader.read_descriptor(nnar.open(data)._reader.tensor_entries()[0]))
        (tmp_path / "a.nnar").write_bytes(data)
        assert nnar.open(data).read("x", verify=True).tobytes() == x.tobytes()
        nnar.unpack(tmp_path / "a.nnar", tmp_path / "x.safetensors", verify=True)
        from safetensors.numpy import load_file
        assert load_file(str(tmp_path / "x.safetensors"))["x"].tobytes() == x.tobytes()
        out = np.empty_like(x)
        nnar.open(data).read_into("x", out, verify=True)
        assert out.tobytes() == x.tobytes()
    finally:
        nnar.set_threads(None)


def _planes_archive(w: np.ndarray, edit) -> bytes:
    """One float32 tensor as four zstd'd byte planes, ``edit(name, stored) -> stored`` applied
    to each plane's stored bytes, the CRCs right for what is stored."""
    from nnar.codecs.byteplanes import BytePlanes
    from nnar.codecs.abc import TensorSpec
    streams, _ = BytePlanes().encode(w, TensorSpec("float32", w.shape))
    segs = []
    for name, plane in streams.items():
        raw = bytes(plane)
        stored = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(raw)
        segs.append((name, [zstd_stage()], len(raw), edit(name, stored)))
    return Builder().tensor([("w", w.shape)], "float32", segs, pipeline=[BYTEPLANES], decoded=w.tobytes()).build(
        content=True)


EDITS = {
    "truncated frame": lambda name, b: b[:-5] if name == "p2" else b,
    "bytes after the frame": lambda name, b: b + b"\0\0" if name == "p1" else b,
    "corrupt block": lambda name, b: b[:20] + bytes([b[20] ^ 0xFF]) + b[21:] if name == "p3" else b,
    "no content size": lambda name, b: zstandard.ZstdCompressor(write_content_size=False).compress(
        zstandard.ZstdDecompressor().decompress(b)) if name == "p0" else b,
    "shorter content": lambda name, b: zstandard.ZstdCompressor().compress(
        zstandard.ZstdDecompressor().decompress(b)[:-3]) if name == "p0" else b,
    "not zstd": lambda name, b: b"\1\2\3\4" + b[4:] if name == "p2" else b,
    "two planes broken": lambda name, b: b[:-3] if name in ("p1", "p3") else b,
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_broken_stream_is_the_same_error(monkeypatch, edit):
    w = (np.random.default_rng(3).standard_normal(5000) * 0.1).astype(np.float32)
    data = _planes_archive(w, EDITS[edit])
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 1000)
    monkeypatch.setattr(pieces, "MIN_BYTES", 1)
    got = _reads(data)
    _whole(monkeypatch)
    whole = _reads(data)
    assert got == whole
    assert got["verify"][0] != "ok"


def test_a_damaged_body_is_a_checksum_error_first(monkeypatch, small_pieces):
    w = (np.random.default_rng(4).standard_normal(5000)).astype(np.float32)
    data = bytearray(nnar.pack({"w": w}))
    entry = nnar.open(bytes(data))._reader.tensor_entries()[0]
    data[entry.offset + 3000] ^= 0x01
    assert _reads(bytes(data))["verify"] == ("checksum", None)
    _whole(monkeypatch)
    assert _reads(bytes(data))["verify"] == ("checksum", None)


def test_a_wrong_digest_is_found(monkeypatch, small_pieces):
    w = np.arange(3000, dtype=np.float32)
    from nnar.codecs.byteplanes import BytePlanes
    from nnar.codecs.abc import TensorSpec
    streams, _ = BytePlanes().encode(w, TensorSpec("float32", w.shape))
    segs = [(n, [], len(bytes(p)), bytes(p)) for n, p in streams.items()]
    data = Builder().tensor([("w", w.shape)], "float32", segs, pipeline=[BYTEPLANES], decoded=b"other").build()
    assert _reads(data)["verify"] == ("digest", None)
    assert nnar.open(data).read("w").tobytes() == w.tobytes()  # read without verify does not hash


def test_verify_holds_a_few_pieces_not_the_tensor(monkeypatch, tmp_path):
    """tracemalloc: verifying a 64 MiB lossless tensor in pieces of 1 Mi elements holds a few
    MB, where a whole decode holds its body, its streams and its array."""
    import tracemalloc
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 1 << 20)
    w = (np.random.default_rng(5).standard_normal(16 << 20) * 0.02).astype(np.float32)
    path = tmp_path / "w.nnar"
    nnar.pack({"w": w}, path)
    del w
    peaks = {}
    for name, min_bytes in (("pieces", 1), ("whole", 1 << 62)):
        monkeypatch.setattr(pieces, "MIN_BYTES", min_bytes)
        for how in ("random", "in order"):
            archive = nnar.open(path)
            tracemalloc.start()
            if how == "random":
                archive.verify()
            else:
                nnar.verify(path)  # as `nnar verify` does
            peaks[name, how] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            archive.close()
    for how in ("random", "in order"):
        assert peaks["pieces", how] < 24 << 20, peaks
        assert peaks["whole", how] > 64 << 20, peaks
