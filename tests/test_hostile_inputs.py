"""Hostile and damaged model files given to ``nnar pack`` (issue 15, items 6 and 8): each is one
``NnarError`` (one line from the CLI) that says what was expected and what was found, raised
from the library's own error where a library found the problem, in bounded time and memory and
with no output written. The files are built by fuzz/input_seeds.py, which also seeds the fuzz
corpora with them."""

from __future__ import annotations

import os
import sys
import threading
import time
import tokenize
import zlib
from pathlib import Path

import pytest

import nnar
from nnar.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import input_seeds as seeds  # noqa: E402

#: seconds any of these may take (they take well under one: nothing is decompressed or allocated)
QUICK = 5.0

# label: (file name, bytes, error class, message pattern, the library error it is raised from)
FILES = {
    "npz zlib.error": ("m.npz", seeds.npz_zlib_damaged, nnar.InvalidInput, "npz member 'x.npy': expected .*zlib.error",
                       zlib.error),
    "npz tokenize.TokenError": ("m.npz", seeds.npz_header_damaged, nnar.InvalidInput,
                                "npz member 'x.npy': expected an .npy header.*TokenError", tokenize.TokenError),
    "npz zip version": ("m.npz", seeds.npz_version_damaged, nnar.InvalidInput,
                        "expected a .npz file .*NotImplementedError: zip file version", NotImplementedError),
    "npz compression method": ("m.npz", seeds.npz_method_damaged, nnar.InvalidInput,
                               "expected a ZIP member zipfile can read.*NotImplementedError", NotImplementedError),
    "npz overlapping members": ("m.npz", seeds.npz_overlapping, nnar.InvalidInput, "overlapping members", None),
    "npz shape beyond its data": ("m.npz", lambda: seeds.npz_with_member(seeds.npy(
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (68719476736,), }", bytes(16))), nnar.InvalidInput,
        r"declares float32\[68719476736\] \(274877906944 bytes\), found 16 bytes", None),
    "npz duplicate names": ("m.npz", seeds.npz_duplicate_names, nnar.InvalidInput, "found the name 'x' twice", None),
    "safetensors shape [true, 4]": ("m.safetensors", lambda: seeds.st_file(
        {"a": {"dtype": "F32", "shape": [True, 4], "data_offsets": [0, 16]}}, bytes(16)), nnar.InvalidInput,
        r"shape: expected a list of non-negative integers, found \[True, 4\]", None),
    "safetensors duplicate names": ("m.safetensors", lambda: seeds.safetensors_seeds()["duplicate-name"],
                                    nnar.InvalidInput, "expected each key once, found 'a' twice", None),
    "safetensors overlap": ("m.safetensors", lambda: seeds.safetensors_seeds()["overlap"], nnar.InvalidInput,
                            "expected the data to begin at 8.*overlap", None),
    "safetensors hole": ("m.safetensors", lambda: seeds.safetensors_seeds()["hole"], nnar.InvalidInput,
                         "expected the data to begin at 0.*hole", None),
    "safetensors utf-16 header": ("m.safetensors", lambda: seeds.safetensors_seeds()["utf16-header"],
                                  nnar.InvalidInput, "expected UTF-8 JSON", UnicodeDecodeError),
    "safetensors 1000 entries over one 1 MiB range": ("m.safetensors", seeds.st_one_range, nnar.InvalidInput,
                                                      "overlap", None),
}


def _onnx_case(tmp_path: Path, label: str) -> Path:
    model, data = seeds.onnx_seeds()[label]
    (tmp_path / "model.onnx").write_bytes(model)
    (tmp_path / "w.data").write_bytes(data)
    (tmp_path / "sub").mkdir()
    return tmp_path / "model.onnx"


def _pack_fails(src: Path, out: Path, error: type, pattern: str) -> nnar.NnarError:
    start = time.perf_counter()
    with pytest.raises(error, match=pattern) as caught:
        nnar.pack(src, out)
    assert time.perf_counter() - start < QUICK
    assert caught.value.code == error.code
    assert "\n" not in str(caught.value)
    assert not out.exists() and [p.name for p in out.parent.iterdir() if p.name.startswith(".out")] == []
    return caught.value


@pytest.mark.parametrize("label", FILES)
def test_a_damaged_or_hostile_file_is_one_clean_error(tmp_path, label):
    name, make, error, pattern, cause = FILES[label]
    src = tmp_path / name
    src.write_bytes(make())
    e = _pack_fails(src, tmp_path / "out.nnar", error, pattern)
    if cause is not None:
        assert isinstance(e.__cause__, cause), repr(e.__cause__)


@pytest.mark.parametrize("label", ["npz zlib.error", "safetensors shape [true, 4]"])
def test_the_cli_prints_one_line(tmp_path, capsys, label):
    name, make, error, _, _ = FILES[label]
    src = tmp_path / name
    src.write_bytes(make())
    assert main(["pack", str(src), "-o", str(tmp_path / "out.nnar")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"nnar: error[{error.code}]: "), err
    assert not (tmp_path / "out.nnar").exists()


onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize("label, pattern", [
    ("external-huge-dims", r"'w.data' ends after 16 of the 274877906944 bytes at offset 0"),
    ("external-nul", r"external data location 'w\\x00.data': expected a file name, found a NUL byte"),
    ("external-dir", "expected a regular file, found a directory"),
    ("external-overlap", r"expected bytes of its own, found \[0, 16\) overlapping \[0, 16\) of tensor 'a'"),
    ("external-escape", "expected a file inside the model's directory"),
])
def test_hostile_onnx_external_data_is_one_clean_error(tmp_path, label, pattern):
    _pack_fails(_onnx_case(tmp_path, label), tmp_path / "out.nnar", nnar.InvalidInput, pattern)


def test_external_data_naming_a_fifo_does_not_block(tmp_path):
    src = _onnx_case(tmp_path, "external-fifo")
    fifo = tmp_path / "w.fifo"
    os.mkfifo(fifo)
    result = []
    worker = threading.Thread(target=lambda: result.append(_pack_error(src, tmp_path / "out.nnar")), daemon=True)
    worker.start()
    worker.join(QUICK)
    if worker.is_alive():  # unblock it, so that the test run goes on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(QUICK)
        pytest.fail("pack blocked on a FIFO named as external data")
    e = result[0]
    assert isinstance(e, nnar.InvalidInput) and e.code == "invalid-input"
    assert "'w.fifo': expected a regular file, found a FIFO" in str(e)
    assert not (tmp_path / "out.nnar").exists()


def _pack_error(src: Path, out: Path):
    try:
        nnar.pack(src, out)
    except Exception as e:  # noqa: BLE001  the test looks at what it is
        return e
    return None


CAPPED_PACK = """
import sys
sys.path.insert(0, {fuzz!r})
import torch, common, nnar
common.bound_memory(1 << 30)  # as under fuzzing: the address space capped at start + 1 GiB
try:
    nnar.pack({src!r}, {dst!r})
except nnar.NnarError as e:
    print(e.code, "|", e, "|", type(e.__cause__).__name__)
"""


def test_a_checkpoint_declaring_a_4_gb_string_is_invalid_input_under_a_memory_cap(tmp_path):
    """Found by fuzz_torch: torch's unpickler reads a string of its declared length with one
    read(n), and a buffered file reserves n bytes first: 4 GB for a 531-byte file, a
    MemoryError under a cap. nnar hands torch a file whose reads stop at its end."""
    import subprocess
    pytest.importorskip("torch")
    fuzz = Path(__file__).resolve().parents[1] / "fuzz"
    src = tmp_path / "m.pt"
    src.write_bytes((fuzz / "crashes" / "torch-crash-c27537d73f2fa7ea9cae439991c7d052b1ed5dc4").read_bytes())
    code = CAPPED_PACK.format(fuzz=str(fuzz), src=str(src), dst=str(tmp_path / "out.nnar"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("invalid-input | input: expected a PyTorch checkpoint"), \
        run.stdout + run.stderr
    assert "MemoryError" not in run.stdout + run.stderr
    assert not (tmp_path / "out.nnar").exists()


def test_an_external_data_location_that_is_not_utf8_is_invalid_input(tmp_path):
    """Found by fuzz_onnx: protobuf gives a string field that is not UTF-8 as bytes."""
    model = seeds.onnx_model([seeds.external_tensor("w", [4], "w.data")])
    model = model.replace(b"w.data", b"\xa2.data")
    (tmp_path / "model.onnx").write_bytes(model)
    _pack_fails(tmp_path / "model.onnx", tmp_path / "out.nnar", nnar.InvalidInput,
                r"external data entry 'location': b'\\xa2.data': expected UTF-8 text")


def test_a_checkpoint_whose_storage_torch_leaves_unfilled_is_invalid_input(tmp_path):
    """Found by fuzz_torch: a zip checkpoint whose record 'data/1' has a damaged local header
    loads, but that storage holds uninitialized memory, different at each load. nnar compares
    the storages with the records' bytes and refuses it rather than pack heap contents (when
    the memory happens to hold the record's bytes, the archive is right, and may be written)."""
    pytest.importorskip("torch")
    fuzz = Path(__file__).resolve().parents[1] / "fuzz"
    src = tmp_path / "m.pt"
    src.write_bytes((fuzz / "crashes" / "torch-crash-b3022e9122342994a379b0c77d12f5d8d5bc2f9b").read_bytes())
    for _ in range(5):
        out = tmp_path / "out.nnar"
        try:
            nnar.pack(src, out)
        except nnar.InvalidInput as e:
            assert "expected the checkpoint's 6 storages to hold its 6 data records, found storages whose bytes " \
                   "are not in the file" in str(e)
            assert not out.exists()
        else:
            assert {k: v.tobytes() for k, v in nnar.unpack(out).items()}["torch.uint8"] == bytes(2)
            out.unlink()


def test_a_zip_checkpoint_torch_misreads_loads_the_same_every_time():
    """The fuzzer's torch checkpoint whose damaged local headers made torch read a record from
    uninitialized memory: loads failed or succeeded at random (3 in 4 failed). nnar now hands
    torch the checkpoint as Python's zipfile reads it (CRC-checked), so every load agrees."""
    import io
    import zipfile
    path = Path(__file__).resolve().parents[1] / "fuzz" / "crashes" / \
        "torch-uninitialized-pickle-7202dc0a3e1269683bf925d36fdd2a47156ac7c8"
    data = path.read_bytes()
    results = set()
    for _ in range(12):
        got = nnar.unpack(nnar.pack(io.BytesIO(data), fmt="torch"))
        results.add(tuple((n, a.dtype.str, a.tobytes()) for n, a in got.items()))
    assert len(results) == 1
    (only,) = results
    stored = zipfile.ZipFile(io.BytesIO(data)).read("archive/data/0")
    assert dict((n, b) for n, _, b in only)["emb"] == stored


def test_a_legacy_checkpoint_with_unlisted_storages_is_refused():
    """The fuzzer's legacy (pre-zip) checkpoint whose storage list is empty: torch fills no
    storage and hands out heap memory; nnar walks the pickles (stubs, no code) and refuses."""
    path = Path(__file__).resolve().parents[1] / "fuzz" / "crashes" / \
        "torch-legacy-unlisted-storage-bea9a91d2cce20d8d7f895e3aad72d6cb7d9ed42"
    import io
    with pytest.raises(nnar.InvalidInput, match="does not store"):
        nnar.pack(io.BytesIO(path.read_bytes()), fmt="torch")


def test_a_legacy_checkpoint_naming_a_huge_memo_index_costs_nothing():
    """The second 30-minute fuzz_torch run: 161 bytes whose pickle puts a value at memo index
    2^31, for which the C unpickler grows a 16 GiB array. nnar's walk of the pickles uses the
    Python unpickler (a dict memo) and checks declared lengths against the file first."""
    import io
    path = Path(__file__).resolve().parents[1] / "fuzz" / "crashes" / \
        "torch-legacy-huge-string-9209242fc3fcee2f02abf74dfedc8661304969ea"
    import tracemalloc
    tracemalloc.start()
    try:
        with pytest.raises(nnar.NnarError):
            nnar.pack(io.BytesIO(path.read_bytes()), fmt="torch")
        assert tracemalloc.get_traced_memory()[1] < 64 << 20
    finally:
        tracemalloc.stop()
