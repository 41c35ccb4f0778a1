"""Seed inputs for the input-format harnesses: small valid files of each format, and the hostile
ones of issue 15 (each a file that once gave a traceback, a hang or a blow-up). Used by
seed_corpus.py and by tests/test_hostile_inputs.py, which builds its cases from here.

Every function returns {label: bytes}; torch and onnx seeds need those libraries.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib

import numpy as np


# -- npz -----------------------------------------------------------------------------------------

def fixed_times(data: bytes) -> bytes:
    """A ZIP with every member's time set to 1980-01-01 (seeds named by content stay the same
    from run to run)."""
    out = bytearray(data)
    z = zipfile.ZipFile(io.BytesIO(data))
    pos = z.start_dir
    for info in z.infolist():
        struct.pack_into("<HH", out, info.header_offset + 10, 0, 0x21)
        struct.pack_into("<HH", out, pos + 12, 0, 0x21)
        n, m, k = struct.unpack_from("<HHH", out, pos + 28)
        pos += 46 + n + m + k
    return bytes(out)


def _savez(compressed: bool = False, **arrays) -> bytes:
    b = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(b, **arrays)
    return fixed_times(b.getvalue())


def npz_with_member(raw: bytes, name: str = "x.npy", method: int = zipfile.ZIP_STORED) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", compression=method) as z:
        z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), raw, compress_type=method)
    return b.getvalue()


def npy(header: bytes, data: bytes = b"", version: int = 1) -> bytes:
    """An .npy file with this header dict text (padded as numpy pads it)."""
    prefix = 10 if version == 1 else 12
    header = header + b" " * (-(prefix + len(header) + 1) % 64) + b"\n"
    size = len(header).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + size + header + data


def npz_zlib_damaged() -> bytes:
    """np.savez_compressed with two bytes of its deflate stream changed: zlib.error in np.load."""
    good = _savez(True, x=np.arange(10_000, dtype=np.float32))
    info = zipfile.ZipFile(io.BytesIO(good)).infolist()[0]
    n, m = struct.unpack_from("<HH", good, info.header_offset + 26)
    start = info.header_offset + 30 + n + m
    for at in range(start, start + info.compress_size - 1):  # the first two bytes whose change zlib notices
        data = bytearray(good)
        data[at] ^= 0xFF
        data[at + 1] ^= 0x55
        try:
            np.load(io.BytesIO(bytes(data)))["x"]
        except zlib.error:
            return bytes(data)
        except Exception:  # noqa: BLE001  another error (a CRC): try further on
            pass
    raise AssertionError("no two bytes gave a zlib.error")


def npz_header_damaged() -> bytes:
    """An .npy header numpy's fallback tokenizer chokes on: tokenize.TokenError in np.load."""
    return npz_with_member(npy(b"{'descr': '<i8', 'fortran_order': False, 'shape': (4,), '''}", bytes(32)))


def npz_version_damaged() -> bytes:
    """The central directory's 'version needed to extract' set to 9.9: NotImplementedError."""
    data = bytearray(_savez(True, x=np.arange(100)))
    data[data.index(b"PK\x01\x02") + 6] = 99
    return bytes(data)


def npz_method_damaged() -> bytes:
    """The central directory's compression method set to 99: NotImplementedError on open."""
    data = bytearray(_savez(True, x=np.arange(100)))
    data[data.index(b"PK\x01\x02") + 10] = 99
    return bytes(data)


def npz_overlapping(members: int = 50) -> bytes:
    """Many central-directory entries over one member's bytes: an overlapping-member ZIP bomb."""
    one = npz_with_member(npy(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1024,), }", bytes(4096)),
                          method=zipfile.ZIP_DEFLATED)
    z = zipfile.ZipFile(io.BytesIO(one))
    info = z.infolist()[0]
    cd_at = one.index(b"PK\x01\x02")
    cd = one[cd_at:one.index(b"PK\x05\x06")]
    entries = b"".join(cd[:46] + f"{i:06d}.npy".encode()[:len(info.filename)] + cd[46 + len(info.filename):]
                       for i in range(members))
    end = bytearray(one[one.index(b"PK\x05\x06"):])
    struct.pack_into("<HHII", end, 8, members, members, len(entries), cd_at)
    return one[:cd_at] + entries + bytes(end)


def npz_seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        "floats": _savez(w=rng.normal(size=(4, 3)).astype(np.float32), b=np.zeros(3)),
        "compressed": _savez(True, w=np.arange(64, dtype=np.int16).reshape(8, 8), m=np.array([True, False])),
        "dtypes": _savez(**{d: np.arange(3).astype(d) for d in ("u1", "i1", "u2", "i4", "u4", "i8", "u8", "f2")}),
        "big-endian": _savez(x=np.arange(5, dtype=">f4")),
        "fortran": _savez(x=np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))),
        "zero-d-and-empty": _savez(s=np.array(1.5), e=np.zeros((0, 4), np.float32)),
        "npy-v2": npz_with_member(npy(b"{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }", b"\1\0\2\0", 2)),
        "zlib-damaged": npz_zlib_damaged(),
        "header-damaged": npz_header_damaged(),
        "version-damaged": npz_version_damaged(),
        "method-damaged": npz_method_damaged(),
        "overlapping-members": npz_overlapping(),
        "shape-beyond-data": npz_with_member(npy(b"{'descr': '<f4', 'fortran_order': False, 'shape': (68719476736,), }",
                                                 bytes(16))),
        "object-dtype": npz_with_member(npy(b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\x80")),
        "structured": npz_with_member(npy(b"{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (1,), }",
                                          bytes(4))),
        "deep-header": npz_with_member(npy(b"(" * 3000 + b")" * 3000)),
        "single-npy": npy(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", bytes(4)),
        "duplicate-names": npz_duplicate_names(),
        "not-npy-member": npz_with_member(b"hello", "readme.txt"),
        "truncated": _savez(True, x=np.arange(1000))[:300],
        "empty-zip": _empty_zip(),
    }


def npz_duplicate_names() -> bytes:
    """Members "x" and "x.npy": both are array "x" to np.load."""
    raw = npy(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", bytes(4))
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for name in ("x", "x.npy"):
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), raw)
    return b.getvalue()


def _empty_zip() -> bytes:
    b = io.BytesIO()
    zipfile.ZipFile(b, "w").close()
    return b.getvalue()


# -- safetensors ---------------------------------------------------------------------------------

def st_file(header, data: bytes = b"", *, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def st_one_range(entries: int = 1000, nbytes: int = 1 << 20) -> bytes:
    """``entries`` tensors over one ``nbytes`` range: packed, it used to multiply that range."""
    header = {f"t{i}": {"dtype": "U8", "shape": [nbytes], "data_offsets": [0, nbytes]} for i in range(entries)}
    return st_file(header, bytes(nbytes))


def safetensors_seeds() -> dict[str, bytes]:
    from_library = {}
    try:
        from safetensors.numpy import save
        from_library = {
            "library": save({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.int64)},
                            metadata={"format": "np"}),
            "library-dtypes": save({d: np.arange(2).astype(d) for d in ("bool", "u1", "i1", "u2", "i2", "u4", "i4",
                                                                       "f2", "f8", "u8")}),
        }
    except ImportError:  # pragma: no cover
        pass
    dup = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    return {
        **from_library,
        "one": st_file({"a": F32x2}, np.arange(2, dtype="<f4").tobytes()),
        "bf16-metadata": st_file({"__metadata__": {"k": "v"}, "a": {"dtype": "BF16", "shape": [2, 1],
                                                                    "data_offsets": [0, 4]}}, b"\x80\x3f\x00\x40"),
        "zero-sized": st_file({"e": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "a": F32x2}, bytes(8)),
        "empty": st_file({}),
        "duplicate-name": st_file(dup, bytes(8)),
        "overlap": st_file({"a": F32x2, "b": F32x2}, bytes(8)),
        "hole": st_file({"a": {**F32x2, "data_offsets": [8, 16]}}, bytes(16)),
        "utf16-header": st_file(json.dumps({"a": F32x2}).encode("utf-16"), bytes(8)),
        "bool-shape": st_file({"a": {**F32x2, "shape": [True, 4]}, "b": {**F32x2, "data_offsets": [8, 16]}}, bytes(16)),
        "trailing-bytes": st_file({"a": F32x2}, bytes(12)),
        "nan": st_file(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"n":NaN}', bytes(8)),
        "surrogate": st_file(b'{"\\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
        "huge-length": st_file({"a": F32x2}, bytes(8), length=1 << 63),
        "huge-shape": st_file({"a": {**F32x2, "shape": [1 << 40, 1 << 40]}}, bytes(8)),
        "f8": st_file({"a": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]}}, bytes(8)),
        "deep": st_file(b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"),
        "one-range-100": st_one_range(100, 64),
        "metadata-not-strings": st_file({"__metadata__": {"k": 1}, "a": F32x2}, bytes(8)),
        "name-newline": st_file({"a\nb": F32x2}, bytes(8)),
    }


# -- torch ---------------------------------------------------------------------------------------

def torch_seeds() -> dict[str, bytes]:
    import pickle
    import torch

    def save(obj, **kw) -> bytes:
        b = io.BytesIO()
        torch.save(obj, b, **kw)
        return b.getvalue()

    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    tied = {"emb": w, "head": w, "bias": torch.zeros(3, dtype=torch.bfloat16)}
    good = save({"a": torch.ones(2), "b": torch.tensor([1, 2], dtype=torch.int8)})
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    return {
        "state-dict": good,
        "tied": save(tied),
        "views": save({"w": w, "t": w.t(), "row": w[1]}),
        "checkpoint": save({"state_dict": {"w": w}, "epoch": 3, "opt": {"lr": 0.1}}),
        "legacy": _fixed_keys(save({"w": w, "i": torch.arange(3)}, _use_new_zipfile_serialization=False)),
        "dtypes": save({str(d): torch.zeros(2, dtype=d) for d in (torch.bool, torch.uint8, torch.int16, torch.int64,
                                                                  torch.float16, torch.float64)}),
        "scalar-and-empty": save({"s": torch.tensor(2.5), "e": torch.zeros(0, 3)}),
        "not-a-dict": save([torch.ones(1)]),
        "a-tensor": save(torch.ones(2)),
        "no-tensors": save({"epoch": 1}),
        "extra-state": save({"w": w, "n": 3}),
        "complex": save({"c": torch.zeros(2, dtype=torch.complex64)}),
        "sparse": save({"s": torch.eye(2).to_sparse()}),
        "evil-pickle": pickle.dumps({"x": Evil()}),
        "evil-in-zip": save({"x": Evil()}),
        "truncated": good[: len(good) // 2],
        "damaged": bytes(damaged),
        "plain-pickle": pickle.dumps({"a": [1, 2, 3]}),
        "int-key": save({1: torch.ones(1)}),
        "two-state-dicts": save({"a": {"w": w}, "b": {"v": w}}),
        "nested-metadata": save(_with_metadata({"w": w})),
    }


def _fixed_keys(data: bytes) -> bytes:
    """A legacy (pre-zip) torch.save file with its storage keys, which are memory addresses,
    replaced by counters of the same length (so the seed is the same from run to run)."""
    import pickle

    class Reader(pickle.Unpickler):
        def persistent_load(self, pid):
            return pid

        def find_class(self, module, name):
            return lambda *a, **k: None

    f = io.BytesIO(data)
    for _ in range(4):  # magic number, protocol version, system info, the object
        Reader(f).load()
    keys = Reader(f).load()
    for i, key in enumerate(keys):
        data = data.replace(key.encode(), str(i).zfill(len(key)).encode())
    return data


def _with_metadata(sd):
    import collections
    out = collections.OrderedDict(sd)
    out._metadata = collections.OrderedDict({"": {"version": 1}})
    return out


# -- onnx ----------------------------------------------------------------------------------------

def onnx_model(initializers=(), nodes=()) -> bytes:
    """A serialized ModelProto whose graph has these initializers (and an Identity of the first)."""
    from onnx import TensorProto, helper
    inits = list(initializers)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph_nodes = list(nodes) or [helper.make_node("Identity", [inits[0].name if inits else "x"], ["y"])]
    g = helper.make_graph(graph_nodes, "g", [], [out], inits)
    return helper.make_model(g).SerializeToString()


def external_tensor(name: str, dims, location: str, offset: int | None = None, length: int | None = None,
                    data_type: int = 1):
    from onnx import TensorProto
    t = TensorProto()
    t.name, t.data_type = name, data_type
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", offset), ("length", length)):
        if v is not None:
            e = t.external_data.add()
            e.key, e.value = k, str(v)
    return t


def _negative_dims():
    from onnx import TensorProto
    t = TensorProto()
    t.name, t.data_type = "n", TensorProto.FLOAT
    t.dims.extend([-1])
    return t


def onnx_seeds() -> dict[str, tuple[bytes, bytes]]:
    """label → (model bytes, w.data bytes)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    typed = helper.make_tensor("t", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    half = helper.make_tensor("h", TensorProto.FLOAT16, [2], [15360, 16384])
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(16, np.float32), "cv"))
    sixteen = bytes(range(16))
    ext = lambda *a, **k: onnx_model([external_tensor(*a, **k)])  # noqa: E731
    return {
        "inline": (onnx_model([w]), b""),
        "typed": (onnx_model([typed, half]), b""),
        "constant": (onnx_model([], [const, helper.make_node("Identity", ["c"], ["y"])]), b""),
        "external": (ext("w", [4], "w.data"), sixteen),
        "external-offset": (ext("w", [2], "w.data", 8, 8), sixteen),
        "external-two": (onnx_model([external_tensor("a", [2], "w.data", 0, 8),
                                     external_tensor("b", [2], "w.data", 8, 8)]), sixteen),
        "external-overlap": (onnx_model([external_tensor("a", [4], "w.data", 0, 16),
                                         external_tensor("b", [4], "w.data", 0, 16)]), sixteen),
        "external-huge-dims": (ext("w", [1 << 36], "w.data"), sixteen),
        "external-nul": (ext("w", [4], "w\0.data"), sixteen),
        "external-fifo": (ext("w", [4], "w.fifo"), b""),
        "external-dir": (ext("w", [4], "sub"), b""),
        "external-escape": (ext("w", [4], "../../etc/hostname"), b""),
        "external-link-out": (ext("w", [1], "out"), b""),
        "external-dev-zero": (ext("w", [4], "zero"), b""),
        "external-absolute": (ext("w", [4], "/etc/hostname"), b""),
        "external-bad-offset": (ext("w", [4], "w.data", "zero"), sixteen),
        "external-negative": (ext("w", [2], "w.data", -8, 8), sixteen),
        "external-short": (ext("w", [8], "w.data"), sixteen),
        "external-missing": (ext("w", [4], "nothing.data"), b""),
        "negative-dims": (onnx_model([_negative_dims()]), b""),
        "same-names": (onnx_model([numpy_helper.from_array(np.zeros(2, np.float32), "a") for _ in range(5)]), b""),
        "no-graph": (b"\x08\x07", b""),
        "not-onnx": (b"not a model at all", b""),
    }
