"""The .npz and .safetensors adapters: model file → nnar.pack → nnar.unpack → model file, checked
against numpy and the real ``safetensors`` library; malformed inputs are InvalidInput or
UnsupportedDtype, never another exception."""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

import nnar

import helpers as H
import strategies as S
from helpers import EXAMPLE, ShortReads, parse_safetensors

ST_DTYPES = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "uint16": "U16", "int16": "I16", "uint32": "U32",
             "int32": "I32", "uint64": "U64", "int64": "I64", "float16": "F16", "bfloat16": "BF16", "float32": "F32",
             "float64": "F64"}


def st_names():
    return S.names().filter(lambda n: n != "__metadata__")


# -- npz -----------------------------------------------------------------------------------------


# 0-d tensors are left to test_npz_keeps_zero_d_tensors_zero_d (a known bug)
npz_tensors = st.dictionaries(
    S.names(), S.tensors(dtype=st.sampled_from([d for d in S.DTYPES if d != "bfloat16"])).filter(lambda t: t.shape != ()),
    max_size=5)


@given(npz_tensors, st.booleans())
def test_npz_round_trip_through_files(tensors, compressed):
    with tempfile.TemporaryDirectory() as d:
        src, arc, dst = (os.path.join(d, n) for n in ("in.npz", "a.nnar", "out.npz"))
        (np.savez_compressed if compressed else np.savez)(src, **{n: t.array for n, t in tensors.items()})
        infos = nnar.pack(src, arc)
        assert [i.name for i in infos] == list(tensors)
        with nnar.open(arc) as a:
            assert a.source_format == "npz" and a.metadata == {}
        nnar.unpack(arc, dst)
        with np.load(dst, allow_pickle=False) as back:
            assert back.files == list(tensors)
            for name, t in tensors.items():
                H.assert_same_tensor(back[name], t)
        for name, arr in nnar.unpack(arc).items():
            H.assert_same_tensor(arr, tensors[name])


def test_npz_keeps_zero_d_tensors_zero_d(tmp_path):
    nnar.unpack(nnar.pack({"s": np.array(2.5, np.float32)}), tmp_path / "o.npz")
    with np.load(tmp_path / "o.npz") as back:
        assert back["s"].shape == ()


def test_npz_gets_bfloat16_as_float32_with_a_warning(tmp_path):
    bits = np.array([0x3F80, 0xC020, 0x7F80, 0xFFC1, 0x0001, 0x8000], np.uint16)
    arc = nnar.pack({"b": bits.view(ml_dtypes.bfloat16), "f": np.ones(2, np.float16)})
    with pytest.warns(UserWarning, match="bfloat16") as record:
        nnar.unpack(arc, tmp_path / "o.npz")
    assert len(record) == 1
    with np.load(tmp_path / "o.npz") as back:
        assert back["b"].dtype == np.float32
        assert back["b"].view(np.uint32).tolist() == [int(b) << 16 for b in bits]  # exact, NaN payload too
        assert back["f"].dtype == np.float16


def test_npz_has_no_metadata_and_says_so(tmp_path):
    arc = nnar.pack({"x": np.ones(2)}, metadata={"k": "v"})
    with pytest.warns(UserWarning, match="metadata"):
        nnar.unpack(arc, tmp_path / "o.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnar.unpack(nnar.pack({"x": np.ones(2)}), tmp_path / "quiet.npz")  # nothing to warn about


def test_npz_through_file_objects():
    src = io.BytesIO()
    np.savez(src, a=np.arange(4), b=np.eye(2))
    src.seek(0)
    arc = io.BytesIO()
    nnar.pack(src, arc, fmt="npz")
    arc.seek(0)
    out = io.BytesIO()
    nnar.unpack(arc, out, to="npz")
    out.seek(0)
    with np.load(out) as back:
        assert back["a"].tolist() == [0, 1, 2, 3] and back["b"].tolist() == [[1, 0], [0, 1]]


@pytest.mark.parametrize("make", ["not-zip", "npy", "object", "complex", "truncated", "bad-crc", "empty"])
def test_malformed_npz_is_invalid_input(tmp_path, make):
    path = tmp_path / "in.npz"
    if make == "not-zip":
        path.write_bytes(b"this is not a zip file at all" * 10)
    elif make == "npy":
        np.save(tmp_path / "x.npy", np.ones(3))
        path.write_bytes((tmp_path / "x.npy").read_bytes())
    elif make == "object":
        np.savez(path, x=np.array([{"a": 1}], dtype=object))
    elif make == "complex":
        np.savez(path, x=np.zeros(2, np.complex64))
    elif make in ("truncated", "bad-crc"):
        np.savez_compressed(path, x=np.arange(10_000))
        data = bytearray(path.read_bytes())
        if make == "truncated":
            data = data[:len(data) // 2]
        else:
            data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"")
    with pytest.raises(nnar.InvalidInput):
        nnar.pack(path)


def test_npz_from_a_non_seekable_stream():
    src = io.BytesIO()
    np.savez(src, a=np.arange(4))

    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self._b = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self._b.readinto(b)

    out = nnar.unpack(nnar.pack(Pipe(src.getvalue()), fmt="npz"))
    assert out["a"].tolist() == [0, 1, 2, 3]


# -- safetensors ---------------------------------------------------------------------------------


st_tensors = st.dictionaries(st_names(), S.tensors(), max_size=5)


@given(st_tensors, S.metadata())
def test_safetensors_round_trip_through_files(tensors, md):
    with tempfile.TemporaryDirectory() as d:
        src, arc, dst = (os.path.join(d, n) for n in ("in.safetensors", "a.nnar", "out.safetensors"))
        # contiguous: safetensors.numpy.save_file writes garbage for negative strides (its bug, not ours)
        save_file({n: np.require(t.for_pack(), requirements="C") for n, t in tensors.items()}, src,
                  metadata=md or None)
        nnar.pack(src, arc)
        with nnar.open(arc) as a:
            assert a.source_format == "safetensors" and a.metadata == md
            assert {n: a.info(n).dtype for n in a.names()} == {n: t.dtype for n, t in tensors.items()}
        nnar.unpack(arc, dst)

        # our own reading: every dtype (bf16 included), shape and byte
        got_md, got = parse_safetensors(dst)
        assert got_md == md
        assert set(got) == set(tensors)
        for name, t in tensors.items():
            dtype, shape, data = got[name]
            assert (dtype, shape, data) == (ST_DTYPES[t.dtype], list(t.shape), t.expected)
        assert struct.unpack_from("<Q", Path(dst).read_bytes())[0] % 8 == 0

        # the real library reads what we wrote
        with safe_open(dst, framework="np") as f:
            assert (f.metadata() or {}) == md
            assert set(f.keys()) == set(tensors)
            for name, t in tensors.items():
                if t.dtype != "bfloat16":
                    H.assert_same_tensor(f.get_tensor(name), t)


def test_the_example_model_round_trips_exactly(tmp_path):
    arc, out = tmp_path / "mlp.nnar", tmp_path / "mlp.safetensors"
    infos = nnar.pack(EXAMPLE, arc)
    assert {i.name: i.dtype for i in infos}["fc1.weight_bf16"] == "bfloat16"
    nnar.unpack(arc, out)
    md_in, t_in = parse_safetensors(EXAMPLE)
    md_out, t_out = parse_safetensors(out)
    assert md_out == md_in == {"format": "pt", "example": "nnar"}
    assert t_out == t_in  # dtypes, shapes and bytes, bf16 included
    assert list(t_out) == list(t_in)  # and the order
    assert nnar.verify(arc)
    assert os.path.getsize(arc) < os.path.getsize(EXAMPLE)


def test_safetensors_through_file_objects_and_non_seekable_input():
    import gc

    with warnings.catch_warnings():  # the spool file leaks: see test_spooling_a_non_seekable_input_leaks_no_file
        warnings.simplefilter("ignore", ResourceWarning)
        arc = nnar.pack(ShortReads(EXAMPLE.read_bytes(), [100, 7, 4096]), fmt="safetensors")
        gc.collect()
    out = io.BytesIO()
    nnar.unpack(arc, out, to="safetensors")
    assert out.getvalue() and nnar.unpack(nnar.pack(io.BytesIO(out.getvalue()), fmt="safetensors")).keys() == \
        nnar.unpack(arc).keys()


def _st_file(header, data: bytes = b"", *, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
MALFORMED = {
    "empty file": b"",
    "short length": b"\x10\x00\x00",
    "length beyond the file": _st_file({"a": GOOD_ENTRY}, bytes(8), length=1000),
    "huge length": _st_file({"a": GOOD_ENTRY}, bytes(8), length=1 << 63),
    "bad json": _st_file(b'{"a": {"dtype": "F32",', bytes(8)),
    "invalid utf-8": _st_file(b'{"\xff\xfe": 1}', bytes(8)),
    "not an object": _st_file([1, 2, 3], bytes(8)),
    "entry not an object": _st_file({"a": 5}, bytes(8)),
    "missing offsets": _st_file({"a": {"dtype": "F32", "shape": [2]}}, bytes(8)),
    "offsets out of range": _st_file({"a": {**GOOD_ENTRY, "data_offsets": [0, 16]}}, bytes(8)),
    "offsets reversed": _st_file({"a": {**GOOD_ENTRY, "data_offsets": [8, 0]}}, bytes(8)),
    "offsets negative": _st_file({"a": {**GOOD_ENTRY, "data_offsets": [-8, 0]}}, bytes(8)),
    "size not shape": _st_file({"a": {**GOOD_ENTRY, "shape": [3]}}, bytes(8)),
    "three offsets": _st_file({"a": {**GOOD_ENTRY, "data_offsets": [0, 4, 8]}}, bytes(8)),
    "negative dim": _st_file({"a": {**GOOD_ENTRY, "shape": [-2]}}, bytes(8)),
    "float dim": _st_file({"a": {**GOOD_ENTRY, "shape": [2.0]}}, bytes(8)),
    "huge shape": _st_file({"a": {**GOOD_ENTRY, "shape": [1 << 62, 1 << 62]}}, bytes(8)),
    "metadata not strings": _st_file({"__metadata__": {"k": 1}, "a": GOOD_ENTRY}, bytes(8)),
    "bad tensor name": _st_file({"a\nb": GOOD_ENTRY}, bytes(8)),
    # as the safetensors library's validate: each key once, UTF-8, ranges contiguous over the data
    "duplicate name": _st_file(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                               b'"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
    "duplicate metadata key": _st_file(b'{"__metadata__":{"k":"v","k":"w"},'
                                       b'"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
    "overlap": _st_file({"a": GOOD_ENTRY, "b": GOOD_ENTRY}, bytes(8)),
    "hole": _st_file({"a": {**GOOD_ENTRY, "data_offsets": [8, 16]}}, bytes(16)),
    "bytes after the data": _st_file({"a": GOOD_ENTRY}, bytes(12)),
    "utf-16 header": _st_file(json.dumps({"a": GOOD_ENTRY}).encode("utf-16"), bytes(8)),
    "bool dim": _st_file({"a": {**GOOD_ENTRY, "shape": [True, 2]}}, bytes(8)),
    "bool offset": _st_file({"a": {**GOOD_ENTRY, "data_offsets": [False, 8]}}, bytes(8)),
    "NaN in the header": _st_file(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"x":NaN}', bytes(8)),
    "lone surrogate name": _st_file(b'{"a\\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
    "dim beyond u64": _st_file({"a": {**GOOD_ENTRY, "shape": [1 << 64]}}, bytes(8)),
    "metadata not a map": _st_file({"__metadata__": [], "a": GOOD_ENTRY}, bytes(8)),
    # bounded before parsing: more containers than keys (an object bomb), a shape of 10^5 dims
    "object bomb": _st_file(b'{"a":[' + b"{}," * 10_000 + b"[]]}"),
    "overflowing shape": _st_file({"a": {**GOOD_ENTRY, "shape": [1000] * 100_000}}, bytes(8)),
}


def test_safetensors_the_library_refuses_nnar_refuses_too():
    """Every malformed file above that the safetensors library reads, nnar may read; none that
    it refuses."""
    from safetensors.numpy import load
    for name, data in MALFORMED.items():
        try:
            load(data)
        except Exception:  # noqa: BLE001  the library's SafetensorError, or its KeyError for a dtype
            with pytest.raises(nnar.NnarError):
                nnar.pack(io.BytesIO(data), fmt="safetensors")


def test_zero_sized_tensors_share_an_offset(tmp_path):
    data = _st_file({"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [8, 8]},
                     "a": GOOD_ENTRY, "z": {"dtype": "I8", "shape": [0], "data_offsets": [8, 8]}},
                    np.arange(2, dtype="<f4").tobytes())
    out = nnar.unpack(nnar.pack(io.BytesIO(data), fmt="safetensors"))
    assert list(out) == ["e", "a", "z"] and out["a"].tolist() == [0, 1] and out["e"].shape == (0, 3)


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_safetensors_is_invalid_input(tmp_path, name):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(MALFORMED[name])
    with pytest.raises(nnar.InvalidInput):
        nnar.pack(path, tmp_path / "out.nnar")
    assert not (tmp_path / "out.nnar").exists()


@pytest.mark.parametrize("dtype", ["F8_E8M0", "F4", "C64", "F128", "str"])  # F8_E4M3, F8_E5M2: test_fp8
def test_unsupported_safetensors_dtype(tmp_path, dtype):
    path = tmp_path / "f8.safetensors"
    path.write_bytes(_st_file({"a": {"dtype": dtype, "shape": [8], "data_offsets": [0, 8]}}, bytes(8)))
    with pytest.raises(nnar.UnsupportedDtype, match=dtype):
        nnar.pack(path)


def test_unhashable_safetensors_dtype_is_invalid_input(tmp_path):
    for dtype in (["F32"], {"F32": 1}):
        path = tmp_path / "bad.safetensors"
        path.write_bytes(_st_file({"a": {**GOOD_ENTRY, "dtype": dtype}}, bytes(8)))
        with pytest.raises(nnar.InvalidInput):
            nnar.pack(path)


def test_deeply_nested_safetensors_header_is_invalid_input(tmp_path):
    path = tmp_path / "deep.safetensors"
    path.write_bytes(_st_file(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"))
    with pytest.raises(nnar.InvalidInput):
        nnar.pack(path)


def test_a_tensor_named_like_the_metadata_key_is_refused_for_safetensors(tmp_path):
    arc = nnar.pack({"__metadata__": np.zeros(2, np.float32)}, metadata={"k": "v"})
    with pytest.raises(nnar.InvalidInput):
        nnar.unpack(arc, tmp_path / "o.safetensors")


# -- choosing the format -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["model.pb", "model", "model.safetensor", "weights.npz.tmp"])
def test_an_unknown_extension_is_told_by_content_or_refused(tmp_path, path):
    p = tmp_path / path
    p.write_bytes(EXAMPLE.read_bytes())
    assert nnar.pack(p) == nnar.pack(EXAMPLE)  # the content says safetensors
    assert nnar.pack(p, fmt="safetensors")  # named explicitly, the extension does not matter
    p.write_bytes(b"\x00" * 64)  # content that says nothing
    with pytest.raises(nnar.InvalidInput, match="--from"):
        nnar.pack(p, tmp_path / "o.nnar")


def test_extension_is_case_insensitive_and_unknown_format_names_refused(tmp_path):
    p = tmp_path / "MODEL.SAFETENSORS"
    p.write_bytes(EXAMPLE.read_bytes())
    assert nnar.pack(p)
    with pytest.raises(nnar.InvalidInput):
        nnar.pack(p, fmt="tflite")
    with pytest.raises(nnar.InvalidInput):
        nnar.unpack(nnar.pack(p), tmp_path / "out.tflite")


def test_spooling_a_non_seekable_input_leaks_no_file():
    import gc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        nnar.pack(ShortReads(EXAMPLE.read_bytes(), [4096]), fmt="safetensors")
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
