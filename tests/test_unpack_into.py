"""Decoding where the caller wants it: Archive.read_into, Archive.records, and unpack to
safetensors writing each record at its place in the output as it decodes (large lossless ones a
piece at a time)."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import nnar
import nnar.config
from nnar import pieces


def _model(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "big": rng.standard_normal((300, 200)).astype(np.float32),
        "small.a": rng.standard_normal(10).astype(np.float32),
        "small.b": rng.standard_normal(7).astype(np.float32),
        "bits": rng.integers(0, 1 << 16, (50, 40), dtype=np.uint16),
        "ints": rng.integers(-5, 5, 1000).astype(np.int64),
    }


def _write(path, model, *, config=None):
    with open(path, "wb") as f:
        w = nnar.ArchiveWriter(f, config=config)
        w.write("big", model["big"], aliases=["big.tied"])
        w.write("small.a", model["small.a"], aliases=["small.tied"])
        w.write("small.b", model["small.b"])
        w.write("bits", model["bits"], dtype="bfloat16")
        w.write("ints", model["ints"])
        w.close()


def _expected(model):
    out = dict(model)
    out["big.tied"], out["small.tied"] = model["big"], model["small.a"]
    return out


def _safetensors_data(path) -> dict:
    """name → raw bytes, read with the safetensors library's own parser."""
    from safetensors import safe_open
    out = {}
    with safe_open(str(path), "np") as f:
        for k in f.keys():
            sl = f.get_slice(k)
            out[k] = (sl.get_dtype(), tuple(sl.get_shape()))
    raw = path.read_bytes()
    import json
    import struct
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    return {k: (out[k], raw[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


@pytest.mark.filterwarnings("ignore:bits. has NaN")  # random bfloat16 bits: stored losslessly
@pytest.mark.parametrize("min_bytes", [1, 1 << 60])  # every lossless record in pieces / none
@pytest.mark.parametrize("config", [None, "int8"])
def test_unpack_to_safetensors_writes_each_record_in_place(tmp_path, monkeypatch, min_bytes, config):
    pytest.importorskip("safetensors")
    monkeypatch.setattr(pieces, "MIN_BYTES", min_bytes)
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 1000)
    model = _model()
    _write(tmp_path / "a.nnar", model, config=nnar.config.from_mapping(config) if config else None)
    infos = nnar.unpack(tmp_path / "a.nnar", tmp_path / "out.safetensors", verify=True)
    got = _safetensors_data(tmp_path / "out.safetensors")
    expected = {k: v for k, v in nnar.unpack(tmp_path / "a.nnar").items()}  # lossy for int8: what it decodes to
    assert [i.name for i in infos] == list(got) == list(expected)
    for name, array in expected.items():
        (dtype, shape), data = got[name]
        assert shape == array.shape and data == array.tobytes(), name
    if config is None:
        for name, array in _expected(model).items():
            assert got[name][1] == array.tobytes()
    # the streaming writer (used for a subset of the tensors) writes the same bytes
    nnar.unpack(tmp_path / "a.nnar", tmp_path / "streamed.safetensors", select=lambda name: True)
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "out.safetensors").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["a.nnar", "out.safetensors", "streamed.safetensors"]


def test_without_posix_fallocate_the_same_file(tmp_path, monkeypatch):
    model = _model()
    _write(tmp_path / "a.nnar", model)
    nnar.unpack(tmp_path / "a.nnar", tmp_path / "one.safetensors")
    monkeypatch.delattr(os, "posix_fallocate", raising=False)
    nnar.unpack(tmp_path / "a.nnar", tmp_path / "two.safetensors")
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "two.safetensors").read_bytes()


def test_a_damaged_record_leaves_no_output(tmp_path, monkeypatch):
    monkeypatch.setattr(pieces, "MIN_BYTES", 1)
    model = _model()
    _write(tmp_path / "a.nnar", model)
    data = bytearray((tmp_path / "a.nnar").read_bytes())
    entry = nnar.open(bytes(data))._reader.tensor_entries()[0]
    data[entry.offset + 5000] ^= 0x10
    (tmp_path / "bad.nnar").write_bytes(bytes(data))
    (tmp_path / "out.safetensors").write_bytes(b"the old model")
    with pytest.raises(nnar.NnarError):
        nnar.unpack(tmp_path / "bad.nnar", tmp_path / "out.safetensors", force=True)
    assert (tmp_path / "out.safetensors").read_bytes() == b"the old model"
    assert sorted(os.listdir(tmp_path)) == ["a.nnar", "bad.nnar", "out.safetensors"]


def test_spliced_records_are_found_after_decoding(tmp_path, monkeypatch):
    """The content digest is checked once every record is written, as an in-order read does."""
    monkeypatch.setattr(pieces, "MIN_BYTES", 1)
    for seed in (0, 1):  # incompressible bytes: every record the same length in both
        rng = np.random.default_rng(seed)
        with open(tmp_path / f"{seed}.nnar", "wb") as f, nnar.ArchiveWriter(f, group_small=False) as w:
            for k in ("a", "b", "c"):
                w.write(k, rng.integers(0, 256, 5000, dtype=np.uint8))
    ra, rb = (tmp_path / "0.nnar").read_bytes(), (tmp_path / "1.nnar").read_bytes()
    ea, eb = nnar.open(ra)._reader.tensor_entries(), nnar.open(rb)._reader.tensor_entries()
    assert [e.offset for e in ea] == [e.offset for e in eb]
    spliced = ra[:ea[1].offset] + rb[eb[1].offset: eb[2].offset] + ra[ea[2].offset:]  # b from the other
    (tmp_path / "s.nnar").write_bytes(spliced)
    assert nnar.open(spliced).read("b").tobytes() == nnar.open(rb).read("b").tobytes()  # each record is fine
    with pytest.raises(nnar.DigestMismatch):
        nnar.unpack(tmp_path / "s.nnar", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["float32", "float16", "int32", "uint8"]), st.integers(0, 3000),
       st.sampled_from([None, "fp16", "int8"]))
def test_read_into_gives_read(dtype, n, preset):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 10).astype(dtype)
    lossy = preset if dtype == "float32" else None
    data = nnar.pack({"x": x, "y": x[: n // 2].copy()}, config=lossy)
    archive = nnar.open(data)
    for name in ("x", "y"):
        expected = archive.read(name)
        out = np.full(expected.shape, 7, expected.dtype)
        assert archive.read_into(name, out) is out
        assert out.tobytes() == expected.tobytes()


def test_read_into_refuses_a_wrong_buffer():
    archive = nnar.open(nnar.pack({"x": np.arange(10, dtype=np.float32)}))
    for out in (np.empty(10, np.float64), np.empty(11, np.float32), np.empty(20, np.float32)[::2],
                np.empty(10, np.float32).reshape(2, 5)):
        with pytest.raises(nnar.InvalidInput, match="out"):
            archive.read_into("x", out)


def test_records_decode_where_asked():
    model = _model()
    import io
    buf = io.BytesIO()
    w = nnar.ArchiveWriter(buf)
    for k, v in model.items():
        w.write(k, v, dtype="bfloat16" if k == "bits" else None)
    w.close()
    archive = nnar.open(buf.getvalue())
    seen = []
    for names, aliases, spec, decode in archive.records(verify=True):
        out = np.empty(spec.shape, spec.storage_dtype)
        decode(out)
        flat = out.reshape(-1)
        pos = 0
        for name in names:
            size = model[name].size
            assert flat[pos: pos + size].tobytes() == model[name].tobytes()
            pos += size
        assert pos == spec.size and aliases == []
        seen += names
    assert seen == list(model)
