"""Shell habits of zstd and tar: default output names (pack: the input's name with .nnar;
unpack: the archive's name in the format it was packed from), no binary on a terminal,
``verify --json`` / ``-q``, one tensor or a glob of them out of an archive, ``ls`` filters."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import numpy as np
import pytest

import nnar
from nnar.cli import main

from safetensors.numpy import load_file, save_file


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"enc.w": rng.normal(size=(16, 8)).astype(np.float32), "enc.b": np.arange(8, dtype=np.float32),
               "dec.w": rng.normal(size=(8, 16)).astype(np.float32)}
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def test_pack_and_unpack_name_their_outputs(tmp_path, model, capsys):
    path, tensors = model
    assert main(["pack", str(path), "-q"]) == 0
    archive = tmp_path / "model.nnar"
    assert archive.exists()
    os.unlink(path)
    assert main(["unpack", str(archive), "-q"]) == 0  # back to model.safetensors: the format it came from
    back = load_file(str(path))
    assert sorted(back) == sorted(tensors) and all(np.array_equal(back[k], v) for k, v in tensors.items())
    assert main(["unpack", str(archive), "-q"]) == 1  # an existing output is kept
    assert "exists" in capsys.readouterr().err


def test_unpack_default_name_follows_the_source_format(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(3)}, tmp_path / "m.pt")
    assert main(["pack", str(tmp_path / "m.pt"), "-o", str(tmp_path / "a.nnar"), "-q"]) == 0
    assert main(["unpack", str(tmp_path / "a.nnar"), "-q"]) == 0
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["w"], torch.ones(3))


@pytest.mark.parametrize("argv", [["pack", "{model}", "-o", "-"], ["unpack", "{archive}", "-o", "-", "--to", "npz"]])
def test_binary_is_not_written_to_a_terminal(tmp_path, model, argv):
    path, _ = model
    nnar.pack(path, tmp_path / "a.nnar")
    args = [a.format(model=path, archive=tmp_path / "a.nnar") for a in argv]
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "nnar", *args], stdout=follower, stderr=subprocess.PIPE,
                              timeout=120)
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 1
    assert done.stderr.decode().startswith("nnar: error[invalid-input]: refusing to write binary data to a terminal")


def test_verify_json_and_quiet(tmp_path, model, capsys):
    path, _ = model
    archive = tmp_path / "a.nnar"
    nnar.pack(path, archive)
    assert main(["verify", str(archive), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "input": str(archive), "tensors": 3,
                                                   "content": nnar.open(archive).content_digest().hex()}
    assert main(["verify", str(archive), "-q"]) == 0
    assert capsys.readouterr() == ("", "")
    data = bytearray(archive.read_bytes())
    data[200] ^= 0xFF
    archive.write_bytes(bytes(data))
    assert main(["verify", str(archive), "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] is False and found["error"]["code"] in ("checksum", "digest", "bad-descriptor")
    assert main(["verify", str(archive), "-q"]) == 1
    assert capsys.readouterr() == ("", "")


def test_one_tensor_to_npy(tmp_path, model, capsys):
    path, tensors = model
    archive = tmp_path / "a.nnar"
    nnar.pack(path, archive)
    out = tmp_path / "w.npy"
    assert main(["unpack", str(archive), "--tensor", "dec.w", "-o", str(out), "-q"]) == 0
    assert np.array_equal(np.load(out), tensors["dec.w"])
    assert main(["unpack", str(archive), "--tensor", "dec.w", "-q"]) == 0  # default name: a.dec.w.npy
    assert np.array_equal(np.load(tmp_path / "a.dec.w.npy"), tensors["dec.w"])
    assert main(["unpack", str(archive), "--tensor", "nope", "-o", str(tmp_path / "n.npy")]) == 1
    assert "no such tensor" in capsys.readouterr().err and not (tmp_path / "n.npy").exists()
    assert main(["unpack", str(archive), "-o", str(tmp_path / "all.npy")]) == 1
    assert "expected --tensor NAME" in capsys.readouterr().err


def test_one_tensor_from_a_stream(tmp_path, model):
    path, tensors = model
    archive = tmp_path / "a.nnar"
    nnar.pack(path, archive)
    done = subprocess.run([sys.executable, "-m", "nnar", "unpack", "-", "--tensor", "enc.b", "-o", "-", "--to", "npy"],
                          stdin=archive.open("rb"), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (tmp_path / "b.npy").write_bytes(done.stdout)
    assert np.array_equal(np.load(tmp_path / "b.npy"), tensors["enc.b"])


def test_include_globs_choose_tensors(tmp_path, model):
    path, tensors = model
    archive = tmp_path / "a.nnar"
    nnar.pack(path, archive)
    out = tmp_path / "enc.safetensors"
    assert main(["unpack", str(archive), "--include", "enc.*", "-o", str(out), "-q"]) == 0
    back = load_file(str(out))
    assert sorted(back) == ["enc.b", "enc.w"] and np.array_equal(back["enc.w"], tensors["enc.w"])
    assert sorted(nnar.unpack(archive, select=lambda n: n.startswith("dec"))) == ["dec.w"]


def test_ls_filters(tmp_path, model, capsys):
    path, _ = model
    archive = tmp_path / "a.nnar"
    nnar.pack(path, archive)
    assert main(["ls", str(archive), "enc.*", "--json"]) == 0
    assert sorted(t["name"] for t in json.loads(capsys.readouterr().out)["tensors"]) == ["enc.b", "enc.w"]
    assert main(["ls", str(archive), "nothing*"]) == 1
    assert "no tensor matches" in capsys.readouterr().err


def test_ls_json_gives_every_tensor_its_own_sha256(tmp_path, capsys):
    import hashlib
    tensors = {f"b{i}": np.arange(i + 1, dtype=np.float32) for i in range(5)}  # small: stored as one group
    tensors["w"] = np.random.default_rng(0).normal(size=(256, 128)).astype(np.float32)
    archive = tmp_path / "a.nnar"
    nnar.pack(tensors, archive)
    assert main(["ls", str(archive), "--json"]) == 0
    rows = {t["name"]: t for t in json.loads(capsys.readouterr().out)["tensors"]}
    for name, arr in tensors.items():
        assert rows[name]["sha256"] == hashlib.sha256(arr.tobytes()).hexdigest(), name
    assert rows["b0"]["group"] > 1 and rows["b0"]["sha256_from"] == "computed"
    assert rows["b0"]["digest"] != rows["b0"]["sha256"]  # the record's digest covers the group
    assert rows["w"]["sha256_from"] == "record" and rows["w"]["digest"] == rows["w"]["sha256"]


def test_a_damaged_record_names_the_tensors_it_holds(tmp_path, capsys):
    tensors = {"big": np.random.default_rng(0).normal(size=(256, 64)).astype(np.float32)}
    tensors.update({f"b{i}": np.arange(10, dtype=np.float32) + i for i in range(5)})
    archive = tmp_path / "a.nnar"
    nnar.pack(tensors, archive)
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside the big tensor's body
    archive.write_bytes(bytes(data))
    assert main(["verify", str(archive)]) == 1
    err = capsys.readouterr().err
    assert "error[checksum]" in err and "holding 'big'" in err, err
    with pytest.raises(nnar.ChecksumMismatch, match="holding 'big'"):
        nnar.open(archive).read("big")
