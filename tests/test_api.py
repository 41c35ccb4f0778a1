"""The Python API (nnar.pack / unpack / open / verify): the kinds of source and destination it
takes, atomic outputs, --force semantics, progress, metadata, determinism."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest

import nnar

import helpers as H
from archive_builder import Builder
from helpers import EXAMPLE, parse_safetensors


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.safetensors"
    shutil.copy(EXAMPLE, path)
    return path


def test_pack_returns_bytes_or_infos_and_is_deterministic(tmp_path, small_model):
    blob = nnar.pack(small_model)
    assert isinstance(blob, bytes) and blob == nnar.pack(small_model)  # same input, same bytes
    infos = nnar.pack(small_model, tmp_path / "m.nnar")
    assert [i.name for i in infos] == list(small_model)
    assert (tmp_path / "m.nnar").read_bytes() == blob
    buf = io.BytesIO()
    nnar.pack(small_model, buf)
    assert buf.getvalue() == blob


def test_unpack_and_verify_take_paths_bytes_and_files(tmp_path, small_model):
    path = tmp_path / "m.nnar"
    nnar.pack(small_model, path)
    blob = path.read_bytes()
    with open(path, "rb") as f:
        from_file = nnar.unpack(f)
    for out in (nnar.unpack(path), nnar.unpack(str(path)), nnar.unpack(blob), nnar.unpack(bytearray(blob)),
                nnar.unpack(memoryview(blob)), from_file):
        assert list(out) == list(small_model)
        for name, arr in small_model.items():
            H.assert_same_tensor(out[name], arr)
    assert nnar.verify(path) == nnar.verify(blob) == nnar.verify(io.BytesIO(blob))


def test_unpack_to_a_file_returns_infos(tmp_path, model):
    arc = tmp_path / "m.nnar"
    nnar.pack(model, arc)
    infos = nnar.unpack(arc, tmp_path / "o.safetensors")
    assert [i.name for i in infos] == list(parse_safetensors(model)[1])
    assert parse_safetensors(tmp_path / "o.safetensors") == parse_safetensors(model)


def test_existing_outputs_need_force(tmp_path, small_model, model):
    out = tmp_path / "m.nnar"
    nnar.pack(small_model, out)
    before = out.read_bytes()
    with pytest.raises(nnar.OutputExists):
        nnar.pack({"other": np.ones(1)}, out)
    assert out.read_bytes() == before
    nnar.pack({"other": np.ones(1)}, out, force=True)
    assert list(nnar.unpack(out)) == ["other"]
    st = tmp_path / "o.safetensors"
    st.write_bytes(b"x")
    with pytest.raises(nnar.OutputExists):
        nnar.unpack(out, st)
    assert st.read_bytes() == b"x"
    nnar.unpack(out, st, force=True)
    assert list(parse_safetensors(st)[1]) == ["other"]


def test_the_input_is_never_the_output(model):
    before = model.read_bytes()
    for force in (False, True):
        with pytest.raises(nnar.InvalidInput):
            nnar.pack(model, model, force=force)
    assert model.read_bytes() == before


def test_a_failed_pack_leaves_nothing_behind(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    tensors = {"a": np.ones(100_000, np.float32), "b": np.zeros(2, np.complex64)}  # b fails after a is written
    with pytest.raises(nnar.NnarError):
        nnar.pack(tensors, out_dir / "m.nnar")
    assert list(out_dir.iterdir()) == []


def test_a_failed_pack_keeps_the_old_output_even_with_force(tmp_path, small_model):
    out = tmp_path / "m.nnar"
    nnar.pack(small_model, out)
    before = out.read_bytes()
    with pytest.raises(nnar.NnarError):
        nnar.pack({"a": np.ones(3), "bad\x00": np.ones(3)}, out, force=True)
    assert out.read_bytes() == before
    assert {p.name for p in tmp_path.iterdir()} == {"m.nnar"}


def test_outputs_get_the_usual_permissions(tmp_path, small_model):
    umask = os.umask(0o022)
    try:
        nnar.pack(small_model, tmp_path / "m.nnar")
    finally:
        os.umask(umask)
    assert (tmp_path / "m.nnar").stat().st_mode & 0o777 == 0o644


def test_progress_is_reported_per_tensor(tmp_path, small_model):
    seen = []
    nnar.pack(small_model, tmp_path / "m.nnar", progress=lambda *a: seen.append(a))
    assert seen == [(name, i + 1, len(small_model)) for i, name in enumerate(small_model)]
    seen.clear()
    nnar.unpack(tmp_path / "m.nnar", progress=lambda *a: seen.append(a))
    assert seen == [(name, i + 1, None) for i, name in enumerate(small_model)]


def test_metadata_from_the_file_and_from_the_caller_are_merged(tmp_path, model):
    arc = tmp_path / "m.nnar"
    nnar.pack(model, arc, metadata={"extra": "1", "format": "np"})
    with nnar.open(arc) as a:
        assert a.metadata == {"format": "np", "example": "nnar", "extra": "1"}  # the caller wins


def test_verify_checks_digests_that_plain_reading_does_not():
    data = np.arange(4, dtype=np.int32)
    blob = Builder().raw_tensor("x", data, digest=bytes(32)).build()
    assert nnar.unpack(blob)["x"].tolist() == [0, 1, 2, 3]  # CRCs fine; the digest is not read
    with pytest.raises(nnar.DigestMismatch):
        nnar.unpack(blob, verify=True)
    with pytest.raises(nnar.DigestMismatch):
        nnar.verify(blob)
    with nnar.open(io.BytesIO(blob)) as a:
        assert a.read("x").tolist() == [0, 1, 2, 3]
        with pytest.raises(nnar.DigestMismatch):
            a.read("x", verify=True)
        with pytest.raises(nnar.DigestMismatch):
            a.verify()


def test_a_file_object_without_a_name_is_told_by_its_content(model):
    expected = nnar.pack(model)
    assert nnar.pack(io.BytesIO(model.read_bytes())) == expected
    assert nnar.pack(io.BytesIO(model.read_bytes()), fmt="safetensors") == expected
    with pytest.raises(nnar.InvalidInput, match="cannot tell the format"):
        nnar.pack(io.BytesIO(b"no model format starts like this"))
    with pytest.raises(nnar.InvalidInput, match="--from npz says npz, but its content is safetensors"):
        nnar.pack(io.BytesIO(model.read_bytes()), fmt="npz")
    with pytest.raises(nnar.InvalidInput):  # an output with no name: the format must be named
        nnar.unpack(nnar.pack({"x": np.ones(1)}), io.BytesIO())


def test_a_file_opened_from_a_descriptor_is_told_by_its_content(model):
    with open(os.open(model, os.O_RDONLY), "rb") as f:
        assert nnar.pack(f) == nnar.pack(model)


def test_a_bad_level_is_invalid_input(small_model):
    for level in (99, -(1 << 20), "3", 2.5):
        with pytest.raises(nnar.InvalidInput):
            nnar.pack(small_model, level=level)
