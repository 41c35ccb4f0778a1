"""Write the test vectors of spec/vectors/ that do not exist yet. Never rewrites one.

A vector, once committed, is frozen: old archives must keep decoding forever, and the vectors
are how the test suite holds every future nnar to that. To add a vector, add an entry below and
run ``python tools/make_vectors.py``; the existing files and their manifest entries are kept as
they are.

Valid vectors come with their expected tensors (``.npz``; bfloat16 as uint16 bit patterns, the
manifest names the dtypes) and metadata. Invalid vectors come with the error code that a full
check (``nnar verify``, reading in order) must raise, and, where a random-access reader cannot
see the same fault first, the code it raises instead.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

import msgpack
import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnar import constants as C  # noqa: E402
from nnar import pipeline as P  # noqa: E402
from nnar.archive import digest_of  # noqa: E402
from nnar.codecs.affine import Affine  # noqa: E402
from nnar.codecs.byteplanes import BytePlanes  # noqa: E402
from nnar.codecs.cast import Cast  # noqa: E402
from nnar.codecs.chunked import Chunked  # noqa: E402
from nnar.codecs.codebook import Codebook  # noqa: E402
from nnar.codecs.huffman import Huffman  # noqa: E402
from nnar.codecs.sparse import Sparse  # noqa: E402
from nnar.limits import DEFAULT_LIMITS  # noqa: E402
from nnar.codecs.raw import Raw  # noqa: E402
from nnar.codecs.zstd import Zstd  # noqa: E402
from nnar.container import framing as F  # noqa: E402
from nnar.container import schema as S  # noqa: E402
from nnar.dtypes import to_storage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "spec" / "vectors"
VERSION = "0.1.0"  # what the META record of every vector says, whatever nnar generates it


# -- a record-level builder that can also write what a correct writer never would ----------------


class Builder:
    # minor 0: the 1.0 vectors below must come out byte for byte as they were frozen; the 1.1
    # vectors ask for minor 1 themselves
    def __init__(self, *, magic=C.MAGIC, major=C.FORMAT_MAJOR, minor=0, flags=0):
        self.buf = bytearray(struct.pack("<8sHHI", magic, major, minor, flags))
        self.entries: list[list] = []
        self.meta_end = None

    def record(self, rtype: bytes, desc, segments=(), *, flags=C.RECORD_FLAG_MUST_UNDERSTAND, names=(),
               index=True, reserved=0, body_suffix=b"", compress=False):
        """Append a record. ``desc`` is a dict (packed here, zstd-compressed with ``compress``) or raw
        descriptor bytes."""
        if isinstance(desc, (bytes, bytearray)):
            raw_desc = desc
        elif compress:
            raw_desc = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(F.pack_descriptor(desc))
            flags |= C.RECORD_FLAG_DESCRIPTOR_ZSTD
        else:
            raw_desc = F.pack_descriptor(desc)
        start = len(self.buf)
        pos = start + C.FRAME_SIZE + len(raw_desc)
        body = bytearray()
        for (codecs, data), seg_start in zip(segments, S.layout_segments(pos, [(len(d), not c) for c, d in segments])):
            body += bytes(seg_start - pos) + data
            pos = seg_start + len(data)
        body += body_suffix
        head = struct.pack("<4sIQIII", rtype, flags, len(body), len(raw_desc), F.crc32(body), reserved)
        prefix = bytes(self.buf[: C.PREAMBLE_SIZE]) if start == C.PREAMBLE_SIZE else b""  # first record
        self.buf += head + struct.pack("<I", F.crc32(raw_desc, F.crc32(head, F.crc32(prefix)))) + raw_desc + body
        if rtype == C.RECORD_META:
            self.meta_end = len(self.buf)
        elif index:
            self.entries.append([rtype.decode("latin-1"), start, len(self.buf) - start, list(names)])
        return start

    def meta(self, metadata=None, source_format="python", extra=None):
        d = {"nnar_version": VERSION, "source_format": source_format, "metadata": metadata or {}}
        d.update(extra or {})
        return self.record(C.RECORD_META, d)

    def tensor(self, name, array, pipeline=P.Pipeline(), *, dtype=None, edit=None, segment_edit=None, **kw):
        """Encode ``array`` with ``pipeline`` and append its TENS record; ``edit(desc)`` may change
        the descriptor and ``segment_edit(list)`` the (codecs, bytes) pairs before writing."""
        return self.group([(name, array)], pipeline, dtype=dtype, edit=edit, segment_edit=segment_edit, **kw)

    def group(self, members, pipeline=P.Pipeline(), *, dtype=None, edit=None, segment_edit=None, **kw):
        """A TENS record of several (name, array) tensors of one dtype."""
        from nnar.dtypes import dtype_name_of
        dt = dtype or dtype_name_of(np.asarray(members[0][1]))
        arrays = [to_storage(np.asarray(a), dt) for _, a in members]
        spec = S.record_spec(dt, [a.shape for a in arrays])
        data = arrays[0] if len(arrays) == 1 else np.concatenate([a.reshape(-1) for a in arrays])
        enc = P.encode(data, spec, pipeline)
        # the digest is of what readers get: the input itself unless a stage is lossy
        decoded = P.decode_encoded(enc, DEFAULT_LIMITS, name_of(members))
        self.last_decoded = decoded
        desc = S.tensor_descriptor([(n, a.shape) for (n, _), a in zip(members, arrays)], dt, digest_of(decoded),
                                   enc.pipeline, enc.segments, kw.pop("fidelity", None))
        segs = [(s.codecs, bytes(memoryview(s.data).cast("B"))) for s in enc.segments]
        if segment_edit:
            segs = segment_edit(segs, desc)
            for d, (_, b) in zip(desc["segments"], segs):
                d["length"] = len(b)
        if edit:
            edit(desc)
        kw.setdefault("names", [n for n, _ in members])
        return self.record(C.RECORD_TENSOR, desc, segs, **kw)

    def finish(self, *, entries=None, trailer=None, index_flags=C.RECORD_FLAG_MUST_UNDERSTAND,
               compress=False) -> bytes:
        index_offset = len(self.buf)
        self.record(C.RECORD_INDEX, {"records": self.entries if entries is None else entries}, index=False,
                    flags=index_flags, compress=compress)
        self.buf += F.pack_trailer(index_offset, len(self.buf) + C.TRAILER_SIZE) if trailer is None else trailer
        return bytes(self.buf)


def name_of(members) -> str:
    return str(members[0][0])


ZSTD = P.Pipeline(array_bytes=Raw(), stream_chains=((Zstd(3),),))
PLANES = P.Pipeline(array_bytes=BytePlanes(), stream_chains=((), (Zstd(3),)))


def base(**kw) -> Builder:
    b = Builder(**kw)
    b.meta()
    return b


def small() -> Builder:
    """The archive most invalid vectors start from: META, one raw tensor, one zstd tensor."""
    b = base()
    b.tensor("w", np.arange(12, dtype=np.float32).reshape(3, 4))
    b.tensor("z", np.zeros(256, np.int32), ZSTD)
    return b


def patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


def fix_header_crc(data: bytes, frame_offset: int) -> bytes:
    dlen = struct.unpack_from("<I", data, frame_offset + 16)[0]
    crc = F.crc32(data[frame_offset + C.FRAME_SIZE: frame_offset + C.FRAME_SIZE + dlen],
                  F.crc32(data[frame_offset: frame_offset + 28]))
    return patch(data, frame_offset + 28, struct.pack("<I", crc))


# -- the valid vectors --------------------------------------------------------------------------


def _edge_floats():
    f32 = np.array([0.0, -0.0, np.inf, -np.inf, 1.5, -2.25, 1e-45, -1e-40, 3.4028235e38], np.float32)
    nan_bits = np.array([0x7FC00000, 0xFFC00001, 0x7F800001, 0x7FBFFFFF], np.uint32).view(np.float32)
    return np.concatenate([f32, nan_bits])


def valid_vectors():
    """name → (bytes, {tensor name: (array, dtype)}, metadata)."""
    out = {}

    b = base()
    out["empty"] = (b.finish(), {}, {})

    b = base()
    rng = np.random.default_rng(1)
    tensors = {
        "bool": (np.array([True, False, True]), "bool"),
        "int8": (np.array([-128, 0, 127], np.int8), "int8"),
        "int16": (np.array([-32768, 1, 32767], np.int16), "int16"),
        "int32": (np.array([[-(2 ** 31), 2], [3, 2 ** 31 - 1]], np.int32), "int32"),
        "int64": (np.array([-(2 ** 63), 2 ** 63 - 1], np.int64), "int64"),
        "uint8": (np.arange(5, dtype=np.uint8), "uint8"),
        "uint16": (np.array([0, 65535], np.uint16), "uint16"),
        "uint32": (np.array([0, 2 ** 32 - 1], np.uint32), "uint32"),
        "uint64": (np.array([0, 2 ** 64 - 1], np.uint64), "uint64"),
        "float16": (np.array([0.0, -0.0, np.inf, np.nan, 6e-8, 65504], np.float16), "float16"),
        "bfloat16": (np.array([0x0000, 0x8000, 0x3FC0, 0x7F80, 0x7FC1, 0x0001], np.uint16), "bfloat16"),
        "float32": (_edge_floats(), "float32"),
        "float64": (np.array([0.0, -0.0, 5e-324, np.inf, np.nan, -1.0 / 3], np.float64), "float64"),
        "scalar": (np.array(2.5, np.float64), "float64"),
        "empty_2d": (np.zeros((0, 7), np.float32), "float32"),
        "rank5": (rng.integers(-9, 9, size=(1, 2, 1, 3, 2)).astype(np.int16), "int16"),
    }
    for name, (arr, dt) in tensors.items():
        b.tensor(name, arr, dtype=dt)
    out["dtypes-raw"] = (b.finish(), tensors, {})

    b = base()
    t = {"zeros": (np.zeros((64, 64), np.float32), "float32"),
         "ramp": (np.arange(4096, dtype=np.int64), "int64"),
         "bytes": (np.tile(np.arange(16, dtype=np.uint8), 100), "uint8")}
    for name, (arr, dt) in t.items():
        b.tensor(name, arr, ZSTD, dtype=dt)
    out["zstd"] = (b.finish(), t, {})

    b = base()
    rng = np.random.default_rng(2)
    w32 = (rng.normal(size=(64, 48)) * 0.05).astype(np.float32)
    bits = w32.view(np.uint32)
    t = {"w32": (w32, "float32"),
         "w16": (w32.astype(np.float16), "float16"),
         "wbf16": (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16), "bfloat16"),
         "w64": (w32.astype(np.float64), "float64"),
         "i32": (rng.integers(-100, 100, size=300).astype(np.int32), "int32"),
         "edges": (_edge_floats(), "float32")}
    for name, (arr, dt) in t.items():
        b.tensor(name, arr, PLANES, dtype=dt)
    out["byteplanes"] = (b.finish(), t, {})

    b = Builder()
    md = {"format": "pt", "ünïcødé": "✓ value", "empty": ""}
    b.meta(md, source_format="safetensors")
    t = {"encoder.layer.0/attn.q": (np.ones(3, np.float32), "float32"),
         "名前": (np.array([1, 2], np.int8), "int8"),
         "emoji 🧠": (np.array([7], np.uint8), "uint8")}
    for name, (arr, dt) in t.items():
        b.tensor(name, arr, dtype=dt)
    out["names-metadata"] = (b.finish(), t, md)

    # An unknown record without must_understand is checked and skipped by readers.
    b = base()
    t = {"a": (np.arange(3, dtype=np.int32), "int32"), "b": (np.arange(4, dtype=np.float32), "float32")}
    b.tensor("a", t["a"][0])
    b.record(b"XTRA", {"anything": [1, 2, 3]}, [([], b"opaque extension data")], flags=0)
    b.tensor("b", t["b"][0])
    out["unknown-skippable-record"] = (b.finish(), t, {})

    # Small tensors of one dtype stored together as one array; large ones alone.
    b = base()
    rng = np.random.default_rng(3)
    t = {"conv.weight": (rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "float32"),
         "conv.bias": (np.arange(8, dtype=np.float32) / 8, "float32"),
         "bn.weight": (np.ones(8, np.float32), "float32"),
         "bn.running_var": (np.full(8, 1e8, np.float32), "float32"),
         "bn.num_batches_tracked": (np.array(42, np.int64), "int64"),
         "empty": (np.zeros((0, 4), np.int64), "int64"),
         "fc.weight": (rng.normal(size=(4, 8)).astype(np.float32), "float32")}
    b.tensor("conv.weight", t["conv.weight"][0], PLANES)
    b.group([(n, t[n][0]) for n in ("conv.bias", "bn.weight", "bn.running_var")], ZSTD)
    b.group([(n, t[n][0]) for n in ("bn.num_batches_tracked", "empty")])
    b.tensor("fc.weight", t["fc.weight"][0])
    out["groups"] = (b.finish(), t, {})

    # Descriptors stored zstd-compressed (record_flags bit 1): META, a group, and the index.
    b = Builder()
    b.record(C.RECORD_META, {"nnar_version": VERSION, "source_format": "python",
                             "metadata": {"note": "compressed descriptors " * 8}}, compress=True)
    t = {f"block.{i}.norm.weight": (np.full(4, i, np.float32), "float32") for i in range(12)}
    b.group([(n, a) for n, (a, _) in t.items()], compress=True)
    out["compressed-descriptors"] = (b.finish(compress=True), t, {"note": "compressed descriptors " * 8})

    # A newer minor version may add descriptor keys; this reader ignores them.
    b = Builder(minor=7)
    b.meta(extra={"future_key": "ignored"})
    t = {"a": (np.arange(6, dtype=np.float32).reshape(2, 3), "float32")}
    b.tensor("a", t["a"][0], edit=lambda d: d.update(future={"x": 1}))
    out["newer-minor"] = (b.finish(), t, {})
    out.update(valid_vectors_1_1())
    out.update(valid_vectors_1_2())
    out.update(valid_vectors_1_4())
    out.update(valid_vectors_1_5())
    import vectors_fp8  # float8_e4m3fn and float8_e5m2 (FORMAT.md §5.2.2, since 1.4), and casts to them
    out.update(vectors_fp8.valid_vectors_fp8(sys.modules[__name__]))

    b = base()
    t = {"pad": (np.arange(3, dtype=np.uint8), "uint8"), "aligned": (np.arange(20, dtype=np.float64), "float64")}
    b.tensor("pad", t["pad"][0])
    b.tensor("aligned", t["aligned"][0])
    out["aligned-raw"] = (b.finish(), t, {})
    return out


def fixed(table):
    """A quantizer that always answers ``table`` (vectors must not depend on k-means' details)."""
    return lambda values, k: np.asarray(table, values.dtype)


def lossy(b: Builder, t: dict, name: str, array, pipeline, dtype=None, **kw) -> None:
    """Append a lossy tensor; its expected value in ``t`` is what a decoder must produce."""
    b.tensor(name, array, pipeline, dtype=dtype, **kw)
    t[name] = (b.last_decoded, dtype or np.asarray(array).dtype.name)


HUFF = ((Huffman(),),)
V11 = {"minor": 1}


def valid_vectors_1_1():
    """Format 1.1: Deep Compression codecs and the fidelity map."""
    out = {}
    rng = np.random.default_rng(11)
    w = (rng.laplace(size=(6, 7)) * 0.1).astype(np.float32)

    b, t = base(**V11), {}
    edges = _edge_floats()
    lossy(b, t, "fp16", np.concatenate([edges, np.array([65519, 65520, 1e-8, 2.98e-8], np.float32)]),
          P.Pipeline((Cast("float16"),), BytePlanes()))
    lossy(b, t, "bf16", edges, P.Pipeline((Cast("bfloat16"),), Raw()))
    lossy(b, t, "f16-widened", np.array([1.5, -0.0, np.inf, 6e-8], np.float16), P.Pipeline((Cast("float32"),), Raw()),
          dtype="float16")
    out["cast"] = (b.finish(), t, {})

    b, t = base(**V11), {}
    cb4 = np.linspace(-0.3, 0.3, 16).astype(np.float32)
    lossy(b, t, "k4", w, P.Pipeline((), Codebook(4).using(fixed(cb4))),
          fidelity={"method": "kmeans 4-bit", "sqnr_db": 20.5, "rel_l2": 0.094, "max_abs_error": 0.02,
                    "sparsity": 0.0})
    lossy(b, t, "k3", w[:5, :5], P.Pipeline((), Codebook(3).using(fixed(cb4[::2])), HUFF))
    lossy(b, t, "k1", w.T.copy(), P.Pipeline((), Codebook(1).using(fixed([-0.1, 0.1])), ((Zstd(3),),)))
    lossy(b, t, "k8-f64", w.astype(np.float64), P.Pipeline((), Codebook(8).using(fixed(np.linspace(-1, 1, 200)))))
    lossy(b, t, "exact-bf16", np.array([0x3F80, 0x8000, 0x0000, 0xBF80, 0x3F80, 0x0000, 0x8000], np.uint16),
          P.Pipeline((), Codebook(2)), dtype="bfloat16")  # no quantizer: the distinct bit patterns, -0.0 kept
    out["codebook"] = (b.finish(), t, {})

    b, t = base(**V11), {}
    lossy(b, t, "per-row-8bit", w, P.Pipeline((), Affine(8, 7)))
    lossy(b, t, "block5-4bit", w, P.Pipeline((), Affine(4, 5), ((Zstd(3),),)))
    lossy(b, t, "tensor-2bit", np.array([-1.0, 0.0, 0.25, 3.0], np.float32), P.Pipeline((), Affine(2, 1 << 40)))
    lossy(b, t, "zeros", np.zeros(9, np.float32), P.Pipeline((), Affine(3, 4)))
    out["affine"] = (b.finish(), t, {})

    b, t = base(**V11), {}
    sp = np.zeros(600, np.float32)
    sp[[0, 1, 7, 300, 301, 599]] = [1.5, -0.0, 2.0, -3.0, 0.5, 4.0]
    lossy(b, t, "bitmask-raw", sp, P.Pipeline((), Sparse("bitmask", Raw())))
    lossy(b, t, "gaps8-fillers", sp, P.Pipeline((), Sparse("gaps", Raw(), 8), ((Zstd(3),),)))
    lossy(b, t, "gaps3", sp[:40], P.Pipeline((), Sparse("gaps", BytePlanes(), 3)))
    dense = np.arange(1, 41, dtype=np.int16)
    dense[[3, 17, 18, 39]] = 0
    lossy(b, t, "gaps5-invert-int16", dense, P.Pipeline((), Sparse("gaps", BytePlanes(), 5)))
    pr = w.copy()
    pr[np.abs(pr) < 0.08] = 0
    lossy(b, t, "gaps8-codebook", pr, P.Pipeline((), Sparse("gaps", Codebook(2).using(fixed([-0.3, -0.1, 0.1, 0.3])), 8),
                                                 ((), HUFF[0])))
    lossy(b, t, "bitmask-affine-f16", pr.astype(np.float16),
          P.Pipeline((Cast("float32"),), Sparse("bitmask", Affine(4, 1 << 40))), dtype="float16")
    lossy(b, t, "empty", np.zeros(0, np.float32), P.Pipeline((), Sparse("gaps", Raw(), 8)))
    lossy(b, t, "all-zero", np.zeros(10, np.float32), P.Pipeline((), Sparse("bitmask", Raw())))
    out["sparse"] = (b.finish(), t, {})

    b, t = base(**V11), {}
    text = np.frombuffer(b"abracadabra, said the weights " * 9, np.uint8)
    lossy(b, t, "text", text, P.Pipeline((), Raw(), HUFF))
    lossy(b, t, "one-symbol", np.full(50, 7, np.uint8), P.Pipeline((), Raw(), HUFF))
    lossy(b, t, "empty", np.zeros(0, np.uint8), P.Pipeline((), Raw(), HUFF))
    out["huffman"] = (b.finish(), t, {})
    return out


# -- the invalid vectors ------------------------------------------------------------------------


def invalid_vectors():
    """name → (bytes, error code for a full in-order check, code for random access or None, why)."""
    out = {}
    good = small().finish()
    meta_end = small().meta_end
    w_off = meta_end  # the first TENS record
    z_off = small().entries[1][1]

    def add(name, data, code, why, random_code=None):
        out[name] = (data, code, random_code, why)

    add("bad-magic", patch(good, 0, b"\x89NNAX"), "bad-magic", "first bytes are not the magic")
    add("not-nnar-zip", b"PK\x03\x04" + bytes(60), "bad-magic", "a ZIP file")
    add("empty-file", b"", "truncated", "zero bytes")
    add("major-2", patch(good, 8, struct.pack("<H", 2)), "unsupported-version", "format_major 2")
    add("archive-flags", patch(good, 12, struct.pack("<I", 1)), "reserved-nonzero", "archive_flags bit 0 set")
    add("minor-flipped", patch(good, 10, struct.pack("<H", 1)), "checksum",
        "format_minor changed: META's header CRC covers the preamble")
    add("record-flags-reserved", fix_header_crc(patch(good, w_off + 4, struct.pack("<I", 5)), w_off),
        "reserved-nonzero", "record_flags bit 2 set (header CRC fixed)")
    add("frame-reserved", fix_header_crc(patch(good, w_off + 24, struct.pack("<I", 9)), w_off),
        "reserved-nonzero", "frame reserved field non-zero (header CRC fixed)")
    add("header-crc", patch(good, w_off + 33, bytes([good[w_off + 33] ^ 0x01])), "checksum",
        "one descriptor bit flipped")
    body_w = w_off + C.FRAME_SIZE + struct.unpack_from("<I", good, w_off + 16)[0]
    w_last = z_off - 1  # the last byte of the first tensor's body
    add("body-crc", patch(good, w_last, bytes([good[w_last] ^ 0x40])), "checksum", "one body bit flipped")
    add("trailer-crc", patch(good, len(good) - 32, bytes([good[-32] ^ 1])), "checksum",
        "index_offset changed without its CRC")
    add("truncated-body", good[: body_w + 10], "truncated", "archive cut inside a body")
    add("truncated-trailer", good[:-5], "truncated", "last 5 bytes missing")
    add("no-trailer", good[:-32], "truncated", "writer never finished: no trailer")
    add("trailing-garbage", good + b"\x00garbage", "bad-layout", "bytes after the trailer", random_code="truncated")
    add("appended-archive", good + good, "bad-layout", "two archives concatenated", random_code="bad-layout")

    b = base()
    b.record(C.RECORD_TENSOR, b"\x93\x01\x02\x03", names=["x"])
    add("descriptor-not-map", b.finish(), "bad-descriptor", "TENS descriptor is a msgpack array")

    b = base()
    b.record(C.RECORD_TENSOR, msgpack.packb({"tensors": [["x", []]]}) + b"\xc0", names=["x"])
    add("descriptor-trailing-bytes", b.finish(), "bad-descriptor", "bytes after the descriptor map")

    b = base()
    b.record(C.RECORD_TENSOR, msgpack.packb({"tensors": msgpack.ExtType(5, b"zz")}), names=["x"])
    add("descriptor-ext-type", b.finish(), "bad-descriptor", "msgpack ext type in a descriptor")

    b = base()
    b.tensor("x", np.arange(3, dtype=np.int8), edit=lambda d: d.update(extra=1))
    add("unknown-key-minor-0", b.finish(), "bad-descriptor", "unknown TENS key in a 1.0 archive")

    b = base()
    b.tensor("bad\nname", np.arange(3, dtype=np.int8))
    add("name-control-char", b.finish(), "bad-descriptor", "a tensor name with a newline")

    b = base()
    b.tensor("x", np.arange(3, dtype=np.int8), edit=lambda d: d["tensors"][0].__setitem__(1, "3"))
    add("shape-not-list", b.finish(), "bad-descriptor", "shape is a string")

    b = base()
    b.tensor("x", np.arange(3, dtype=np.int8), edit=lambda d: d.update(digest=b"\0" * 31))
    add("digest-short", b.finish(), "bad-descriptor", "31-byte digest")

    b = base()
    b.tensor("x", np.arange(3, dtype=np.int8))
    b.tensor("x", np.arange(3, dtype=np.int8))
    add("duplicate-name", b.finish(), "bad-layout", "two tensors named x")

    b = Builder()
    b.tensor("x", np.arange(3, dtype=np.int8))
    add("meta-missing", b.finish(), "bad-layout", "first record is TENS, not META")

    b = base()
    b.tensor("x", np.arange(3, dtype=np.int8))
    b.meta()
    add("second-meta", b.finish(), "bad-layout", "a second META record")

    b = small()
    e = [list(x) for x in b.entries]
    e[1][3] = ["renamed"]
    add("index-wrong-name", b.finish(entries=e), "bad-layout", "index names a tensor differently")

    b = small()
    e = [list(x) for x in b.entries]
    e[1][2] += 1
    add("index-hole", b.finish(entries=e), "bad-layout", "index lengths leave a hole before INDX")

    b = small()
    add("index-missing-entry", b.finish(entries=b.entries[:1]), "bad-layout", "index omits a record")

    b = small()
    raw = b.finish()
    tr = len(raw) - 32
    index_offset = struct.unpack_from("<Q", raw, tr)[0]
    add("trailer-index-offset", raw[:tr] + F.pack_trailer(z_off, len(raw)), "bad-layout",
        "trailer points at a TENS record")
    add("trailer-archive-length", raw[:tr] + F.pack_trailer(index_offset, len(raw) + 8), "bad-layout",
        "archive_length disagrees with the file")

    b = base()
    b.tensor("a", np.arange(3, dtype=np.int8))
    b.record(b"XTRA", {}, [([], b"must understand me")], flags=C.RECORD_FLAG_MUST_UNDERSTAND)
    add("unknown-must-understand", b.finish(), "unsupported-record", "unknown record type with must_understand")

    b = base()
    b.tensor("x", np.arange(3, dtype=np.int8),
             edit=lambda d: d["pipeline"][0].update(codec="acme.magic"))
    add("unknown-codec", b.finish(), "unsupported-codec", "codec id acme.magic")

    b = base()
    b.tensor("x", np.arange(3, dtype=np.int8), edit=lambda d: d.update(dtype="float8_e4m3"))
    add("unknown-dtype", b.finish(), "unsupported-dtype", "dtype float8_e4m3")

    b = base()
    b.tensor("x", np.arange(3, dtype=np.int8), edit=lambda d: d["tensors"][0].__setitem__(1, [1 << 40, 1 << 40]))
    add("huge-shape", b.finish(), "limit-exceeded", "a 2^80-element tensor in a tiny file")

    b = base()
    b.tensor("x", np.arange(3, dtype=np.int8), edit=lambda d: d["tensors"][0].__setitem__(1, [1] * 40))
    add("rank-40", b.finish(), "limit-exceeded", "rank 40 > max_rank")

    b = base()
    b.buf += struct.pack("<4sIQIII", b"TENS", 1, 1 << 40, 16, 0, 0) + bytes(4)
    add("huge-body-length", bytes(b.buf), "limit-exceeded", "51-byte kind: a 1 TiB body declared, nothing there",
        random_code="truncated")
    b = base()
    b.buf += struct.pack("<4sIQIII", b"TENS", 1, 0, 0xFFFFFFF0, 0, 0) + bytes(4)
    add("huge-descriptor-length", bytes(b.buf), "limit-exceeded", "a 4 GiB descriptor declared",
        random_code="truncated")

    def bomb(segs, desc):
        import zstandard
        return [(c, zstandard.ZstdCompressor(level=3).compress(bytes(1 << 20))) for c, _ in segs]
    b = base()
    b.tensor("x", np.zeros(256, np.int32), ZSTD, segment_edit=bomb)
    add("zstd-bomb", b.finish(), "codec-data", "zstd frame declares 1 MiB for a 1 KiB stream")

    b = base()
    b.tensor("x", np.zeros(256, np.int32), ZSTD, segment_edit=lambda s, d: [(c, x + b"\0\0\0") for c, x in s])
    add("zstd-trailing-bytes", b.finish(), "codec-data", "bytes after the zstd frame")

    b = base()
    b.tensor("x", np.arange(4, dtype=np.int32), segment_edit=lambda s, d: [(c, x[:-4]) for c, x in s],
             edit=lambda d: d["segments"][0].update(raw_length=12))
    add("raw-short-stream", b.finish(), "codec-data", "raw stream 12 bytes for a 16-byte tensor")

    b = base()
    b.tensor("x", np.arange(4, dtype=np.int32), edit=lambda d: d["segments"][0].update(raw_length=99))
    add("verbatim-length-mismatch", b.finish(), "bad-descriptor", "verbatim segment with raw_length != length")

    b = base()
    b.tensor("x", np.arange(4, dtype=np.int32), edit=lambda d: d["segments"][0].update(name="other"))
    add("segment-name-wrong", b.finish(), "bad-descriptor", "raw codec needs stream data, found other")

    b = base()
    b.tensor("x", np.arange(4, dtype=np.int32), edit=lambda d: d["pipeline"].insert(0, dict(d["pipeline"][0])))
    add("pipeline-grammar", b.finish(), "bad-descriptor", "two array-bytes stages")

    b = base()
    b.tensor("x", np.arange(4, dtype=np.int32), ZSTD,
             edit=lambda d: d["segments"][0]["codecs"][0]["config"].update(level="high"))
    add("zstd-bad-config", b.finish(), "codec-data", "zstd level is a string")

    b = base()
    off = b.tensor("x", np.arange(4, dtype=np.int32))
    raw = bytearray(b.finish())
    dlen = struct.unpack_from("<I", raw, off + 16)[0]
    body = off + C.FRAME_SIZE + dlen
    if F.align_up(body) > body:
        raw[body] = 1
        blen = struct.unpack_from("<Q", raw, off + 8)[0]
        raw[off + 20: off + 24] = struct.pack("<I", F.crc32(raw[body: body + blen]))
        raw = bytearray(fix_header_crc(bytes(raw), off))
        add("padding-nonzero", bytes(raw), "reserved-nonzero", "non-zero padding before an aligned segment (CRCs fixed)")

    b = base()
    bomb = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(bytes(100 << 20))
    b.record(C.RECORD_TENSOR, bomb, flags=C.RECORD_FLAG_MUST_UNDERSTAND | C.RECORD_FLAG_DESCRIPTOR_ZSTD, names=["x"])
    add("descriptor-zstd-bomb", b.finish(), "limit-exceeded", "compressed descriptor declares 100 MiB")

    b = base()
    b.record(C.RECORD_TENSOR, msgpack.packb({"tensors": [["x", [1]]]}),
             flags=C.RECORD_FLAG_MUST_UNDERSTAND | C.RECORD_FLAG_DESCRIPTOR_ZSTD, names=["x"])
    add("descriptor-zstd-flag-on-plain", b.finish(), "bad-descriptor", "flag says zstd, descriptor is plain msgpack")

    b = base()
    b.group([("a", np.arange(3, dtype=np.int8)), ("a", np.arange(2, dtype=np.int8))])
    add("group-duplicate-name", b.finish(), "bad-layout", "two tensors named a in one record")

    b = base()
    b.record(C.RECORD_TENSOR, {"tensors": [], "dtype": "int8", "digest": bytes(32), "pipeline": [], "segments": []},
             names=[])
    add("tensors-empty", b.finish(), "bad-descriptor", "a TENS record with no tensors", random_code="bad-layout")

    b = base()
    b.group([("a", np.arange(3, dtype=np.int8)), ("b", np.arange(2, dtype=np.int8))], names=["b", "a"])
    add("index-names-order", b.finish(), "bad-layout", "index lists a group's names in another order")

    b = base()
    b.group([("a", np.arange(3, dtype=np.int8)), ("b", np.arange(2, dtype=np.int8))],
            edit=lambda d: d["tensors"][1].__setitem__(1, [3]))
    add("group-size-mismatch", b.finish(), "codec-data", "member shapes need 6 elements, 5 are stored")

    b = base()
    b.tensor("x", np.arange(4, dtype=np.int32), edit=lambda d: d.update(digest=bytes(32)))
    add("digest-mismatch", b.finish(), "digest", "all CRCs fine, digest of other data")

    b = base()
    b.tensor("x", np.arange(4, dtype=np.int32), body_suffix=b"extra!")
    add("body-longer-than-segments", b.finish(), "bad-layout", "body has bytes after the last segment")
    invalid_vectors_1_1(add)
    invalid_vectors_1_2(add)
    invalid_vectors_bounds(add)
    invalid_vectors_1_4(add)
    invalid_vectors_1_5(add)
    import vectors_rules  # FORMAT.md §11.1's check order and §4.2's msgpack rules, each with a vector
    vectors_rules.invalid_vectors_rules(add, sys.modules[__name__])
    return out


def stream_edit(name, fn):
    """A segment_edit replacing the bytes of stream ``name`` by ``fn(bytes)``."""
    def edit(segs, desc):
        names = [d["name"] for d in desc["segments"]]
        out = list(segs)
        i = names.index(name)
        out[i] = (segs[i][0], fn(segs[i][1]))
        desc["segments"][i]["raw_length"] = len(out[i][1]) if not segs[i][0] else desc["segments"][i]["raw_length"]
        return out
    return edit


def set_byte(i, value):
    return lambda data: data[:i] + bytes([value]) + data[i + 1:]


def invalid_vectors_1_1(add):
    """Format 1.1: what the Deep Compression codecs must reject (CRCs all valid)."""
    w = np.linspace(-1, 1, 10, dtype=np.float32)
    cb = P.Pipeline((), Codebook(2).using(fixed([-1.0, 0.0, 1.0])))

    def one(name, array, pipeline, code, why, **kw):
        b = base(**V11)
        b.tensor("x", array, pipeline, **kw)
        add(name, b.finish(), code, why)

    one("codebook-index-past-table", w, cb, "codec-data", "index 3 in a 3-entry codebook",
        segment_edit=stream_edit("indices", set_byte(0, 0xFF)))
    one("codebook-size-too-big", w, cb, "codec-data", "size 5 for 2-bit indices",
        edit=lambda d: d["pipeline"][0]["params"].update(size=5))
    one("codebook-padding-nonzero", w, cb, "codec-data", "unused slots of the last index byte not zero",
        segment_edit=stream_edit("indices", lambda x: x[:-1] + bytes([x[-1] | 0xF0])))
    one("codebook-bits-9", w, cb, "codec-data", "bits 9", edit=lambda d: d["pipeline"][0]["config"].update(bits=9))
    aff = P.Pipeline((), Affine(8, 5))
    one("affine-nan-scale", w, aff, "codec-data", "a NaN scale",
        segment_edit=stream_edit("scales", lambda x: np.float32(np.nan).tobytes() + x[4:]))
    one("affine-zero-point-too-big", w, P.Pipeline((), Affine(2, 5)), "codec-data", "zero point 9 for 2-bit indices",
        segment_edit=stream_edit("zero_points", set_byte(0, 9)))
    one("affine-on-int32", np.arange(4, dtype=np.float32), aff, "codec-data", "affine stage on an int32 tensor",
        edit=lambda d: d.update(dtype="int32"))
    one("cast-to-int8", w, P.Pipeline((Cast("float16"),)), "codec-data", "cast to int8",
        edit=lambda d: d["pipeline"][0]["config"].update(dtype="int8"))
    sp = np.zeros(40, np.float32)
    sp[[2, 30]] = [1.0, 2.0]
    gaps = P.Pipeline((), Sparse("gaps", Raw(), 8))
    one("sparse-count-mismatch", sp, gaps, "codec-data", "count 3, the gaps list 2 positions",
        edit=lambda d: (d["pipeline"][0]["params"].update(count=3), d["segments"][1].update(raw_length=12, length=12)),
        segment_edit=stream_edit("values.data", lambda x: x + bytes(4)))
    one("sparse-gap-past-end", sp, gaps, "codec-data", "the second gap reaches position 41 of 40",
        segment_edit=stream_edit("positions", set_byte(1, 38)))
    one("sparse-positions-over-bound", sp, gaps, "codec-data", "gap stream longer than any 40-element tensor needs",
        segment_edit=stream_edit("positions", lambda x: x + bytes([255]) * 60))
    sp41 = np.zeros(41, np.float32)
    sp41[[2, 30]] = [1.0, 2.0]
    one("sparse-bitmask-padding-41", sp41, P.Pipeline((), Sparse("bitmask", Raw())), "codec-data",
        "a bitmask bit set past the last of 41 elements",
        segment_edit=stream_edit("positions", lambda x: x[:-1] + bytes([x[-1] | 0x80])))

    def nest(d):
        inner = d["pipeline"][0]["config"]["values"]
        d["pipeline"][0]["config"]["values"] = {"codec": "nnar.sparse",
                                                "config": {"positions": "bitmask", "values": inner}}
    one("sparse-nested-sparse", sp, gaps, "codec-data", "a sparse stage nested in a sparse stage", edit=nest)
    one("sparse-nested-unknown", sp, gaps, "unsupported-codec", "nested codec id acme.magic",
        edit=lambda d: d["pipeline"][0]["config"]["values"].update(codec="acme.magic"))
    text = np.frombuffer(b"abracadabra" * 5, np.uint8)
    huff = P.Pipeline((), Raw(), HUFF)

    def lengths(fn):
        return lambda segs, desc: [(c, fn(x)) for c, x in segs]
    one("huffman-incomplete-code", text, huff, "codec-data", "code lengths that do not fill the code space",
        segment_edit=lengths(lambda x: x[:8] + bytes([x[8] + 1]) + x[9:] if x[8] & 0x0F < 15 else x))
    one("huffman-count-over-raw-length", text, huff, "codec-data", "count 2^40 for a 55-byte stream",
        segment_edit=lengths(lambda x: struct.pack("<Q", 1 << 40) + x[8:]))
    one("fidelity-not-map", w, cb, "bad-descriptor", "fidelity is a list", fidelity=None,
        edit=lambda d: d.update(fidelity=[1, 2]))


# -- format 1.2: aliases and model structure -----------------------------------------------------

V12 = {"minor": 2}


def aliases(b: Builder, pairs, **kw) -> int:
    return b.record(C.RECORD_ALIAS, {"aliases": [list(p) for p in pairs]}, **kw)


def structure(b: Builder, fmt: str, data: bytes, pipeline=ZSTD, *, edit=None, **kw) -> int:
    arr = np.frombuffer(data, np.uint8)
    enc = P.encode(arr, S.record_spec("uint8", [arr.shape]), pipeline)
    desc = S.model_descriptor(fmt, arr.size, enc.pipeline, enc.segments)
    if edit:
        edit(desc)
    segs = [(g.codecs, bytes(memoryview(g.data).cast("B"))) for g in enc.segments]
    return b.record(C.RECORD_MODEL, desc, segs, flags=kw.pop("flags", 0), **kw)


def onnx_structure() -> bytes:
    """A tiny ONNX model, y = x + W, whose W (float32[2, 3]) is the archive tensor "W"."""
    import onnx
    from onnx import helper
    w = onnx.TensorProto()
    w.name, w.data_type, w.data_location = "W", onnx.TensorProto.FLOAT, 1
    w.dims.extend([2, 3])
    e = w.external_data.add()
    e.key, e.value = "nnar", "W"
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "add",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="nnar vectors")
    model.ir_version = 8
    return model.SerializeToString()


def valid_vectors_1_2():
    """Format 1.2: ALIS (tied tensors) and MODL (the source model's structure)."""
    out = {}
    b, t = base(**V12), {}
    emb = np.arange(12, dtype=np.float32).reshape(3, 4) / 8
    b.tensor("emb.weight", emb)
    t["emb.weight"] = (emb, "float32")
    aliases(b, [("head.weight", "emb.weight")])
    t["head.weight"] = (emb, "float32")
    small_a, small_b = np.array([1, 2, 3], np.int64), np.array([-4, 5], np.int64)
    b.group([("bias.a", small_a), ("bias.b", small_b)])
    t["bias.a"], t["bias.b"] = (small_a, "int64"), (small_b, "int64")
    aliases(b, [("tied.b", "bias.b"), ("tied.a", "bias.a"), ("tied.a2", "bias.a")])
    t["tied.b"], t["tied.a"], t["tied.a2"] = (small_b, "int64"), (small_a, "int64"), (small_a, "int64")
    out["aliases"] = (b.finish(), t, {})

    b, t = base(**V12), {}
    data = onnx_structure()
    structure(b, "onnx", data)
    w = np.array([[0.5, -1.0, 2.0], [0.0, 3.25, -0.125]], np.float32)
    b.tensor("W", w)
    t["W"] = (w, "float32")
    out["structure-onnx"] = (b.finish(), t, {}, ("onnx", data))

    b, t = base(**V12), {}
    data = msgpack.packb({"keys": ["fc.weight", "fc.bias"], "versions": {"": {"version": 1}}})
    structure(b, "torch", data, P.Pipeline())
    fw, fb = np.ones((2, 2), np.float32), np.zeros(2, np.float32)
    b.group([("fc.bias", fb), ("fc.weight", fw)])
    t["fc.bias"], t["fc.weight"] = (fb, "float32"), (fw, "float32")
    out["structure-torch"] = (b.finish(), t, {}, ("torch", data))
    return out


def invalid_vectors_1_2(add):
    """Format 1.2: misplaced or inconsistent ALIS and MODL records (CRCs all valid)."""
    x = np.arange(6, dtype=np.float32)

    b = base(**V12)
    aliases(b, [("y", "x")])
    b.tensor("x", x)
    add("alias-before-any-tensor", b.finish(), "bad-layout", "an ALIS record right after META")

    b = base(**V12)
    b.tensor("x", x)
    b.tensor("z", x + 1)
    aliases(b, [("y", "x")])
    add("alias-target-not-previous", b.finish(), "bad-layout", "the alias's target is in an earlier TENS record")

    b = base(**V12)
    b.tensor("x", x)
    b.tensor("z", x + 1)
    aliases(b, [("x", "z")])
    add("alias-name-taken", b.finish(), "bad-layout", "an alias named like a tensor")

    b = base(**V12)
    b.tensor("x", x)
    aliases(b, [("y", "x"), ("y", "x")])
    add("alias-twice", b.finish(), "bad-layout", "the same alias twice")

    b = base(**V12)
    b.tensor("x", x)
    aliases(b, [])
    add("alias-empty", b.finish(), "bad-descriptor", "an ALIS record with no aliases")

    b = base(**V12)
    b.tensor("x", x)
    aliases(b, [("y", "x")], body_suffix=b"\0" * 4)
    add("alias-with-body", b.finish(), "bad-layout", "an ALIS record with a body")

    b = base(**V12)
    b.tensor("x", x)
    structure(b, "test", b"structure")
    add("model-not-first", b.finish(), "bad-layout", "a MODL record after a TENS record")

    b = base(**V12)
    structure(b, "test", b"structure", P.Pipeline(), edit=lambda d: d.update(length=8))
    b.tensor("x", x)
    add("model-length-mismatch", b.finish(), "codec-data", "length 8, a 9-byte stream")

    b = base(**V12)
    structure(b, "test", b"structure", edit=lambda d: d.update(extra=1))
    b.tensor("x", x)
    add("model-unknown-key", b.finish(), "bad-descriptor", "an unknown MODL key in a 1.2 archive")


def invalid_vectors_bounds(add):
    """Reader rules of nnar after 0.4.0 (issue 15; FORMAT.md §4.2, §6.1 step 4): descriptors bounded
    in objects and nesting, every step of a bytes->bytes chain bounded. Written with minor 3."""
    x = np.arange(6, dtype=np.float32)

    b = base(minor=3)
    b.tensor("x", x)
    b.record(b"XTRA", b"\x81\xa1a" + b"\x91" * 32 + b"\xc0", flags=0)
    add("descriptor-too-deep", b.finish(), "limit-exceeded",
        "an unknown record (not must-understand) whose descriptor nests 33 deep (max_descriptor_depth 32)")

    b = base(minor=3)
    b.tensor("x", x)
    k = DEFAULT_LIMITS.max_descriptor_objects  # {"a": [nil × k]}: k + 3 objects
    raw = b"\x81\xa1a\xdd" + struct.pack(">I", k) + b"\xc0" * k
    stored = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(raw)
    b.record(b"XTRA", stored, flags=C.RECORD_FLAG_DESCRIPTOR_ZSTD)
    add("descriptor-too-many-objects", b.finish(), "limit-exceeded",
        f"a compressed descriptor of {k + 3} msgpack objects (max_descriptor_objects {k}) in a few hundred bytes")

    # [nnar.zstd, nnar.zstd] on a 4-byte tensor whose inner frame is valid zstd but 103 bytes
    # (30 empty raw blocks), more than zstd's bound of 4 bytes (67)
    inner = b"\x28\xb5\x2f\xfd\x20\x04" + bytes(3) * 30 + (1 | 4 << 3).to_bytes(3, "little") + b"abcd"
    outer = Zstd(3).encode(inner)[0]
    b = base(minor=3)
    b.tensor("x", np.frombuffer(b"abcd", np.uint8), P.Pipeline(array_bytes=Raw(), stream_chains=((Zstd(3), Zstd(3)),)),
             segment_edit=lambda segs, desc: [(segs[0][0], bytes(outer))])
    add("chain-step-beyond-bound", b.finish(), "codec-data",
        "[nnar.zstd, nnar.zstd] on 4 bytes: the outer frame decodes to a 103-byte inner frame, beyond bound(4) = 67")


# -- format 1.4: the content digest -------------------------------------------------------------


def _content_model() -> tuple[bytes, dict, dict, tuple[str, bytes]]:
    """An archive as nnar 0.5 writes it, with a record of every kind the content digest covers:
    META with metadata, MODL, a tensor of its own (byte planes), a group, an alias."""
    emb = (np.arange(64 * 16, dtype=np.float32).reshape(64, 16) - 500) / 64
    bias, scale = np.linspace(-1, 1, 16).astype(np.float32), np.full(4, 0.5, np.float32)
    data = msgpack.packb({"keys": ["emb", "head", "bias", "scale"]})
    arc = _archive({"emb": emb, "bias": bias, "scale": scale}, metadata={"release": "1"},
                   structure=("torch", data), aliases={"head": "emb"})
    arrays = {"emb": emb, "head": emb, "bias": bias, "scale": scale}
    import nnar
    with nnar.open(arc) as a:  # in archive order: the writer groups small tensors, aliases follow
        t = {n: (arrays[n], "float32") for n in a.names()}
    return arc, t, {"release": "1"}, ("torch", data)


def valid_vectors_1_4():
    data, t, md, model = _content_model()
    return {"content-digest": (data, t, md, model), "folder": _folder_archive()}


FOLDER_FILES = {"config.json": b'{"model_type": "bert", "hidden_size": 4}\n',
                "tokenizer/vocab.txt": b"[PAD]\n[UNK]\nhello\nworld\n" * 8}


def _folder_archive(config: bytes | None = None, extra: dict | None = None, nudge: bool = False):
    """An archive packed from a model folder (spec/folder.md): two safetensors shards, a config
    and a file in a sub-folder, as FILE records (FORMAT.md §5.7). The arguments make a next
    version of it, for a patch vector."""
    import io
    from nnar.archive import ArchiveWriter
    a, b = np.arange(8, dtype=np.float32).reshape(2, 4), np.linspace(0, 1, 4).astype(np.float32)
    if nudge:
        b = (b + np.float32(1e-3)).astype(np.float32)
    files = dict(FOLDER_FILES)
    if config is not None:
        files["config.json"] = config
    files.update(extra or {})
    layout = {"weights": [
        {"path": "model-00001-of-00002.safetensors", "format": "safetensors", "tensors": ["a"],
         "metadata": {"format": "pt"}},
        {"path": "model-00002-of-00002.safetensors", "format": "safetensors", "tensors": ["b"],
         "metadata": {"format": "pt"}}]}
    structure = msgpack.packb(layout, use_bin_type=True)
    buf = io.BytesIO()
    with ArchiveWriter(buf, source_format="folder", structure=("folder", structure)) as w:
        for path, data in files.items():
            w.write_file(path, data)
        w.write("a", a)
        w.write("b", b)
    return buf.getvalue(), {"a": (a, "float32"), "b": (b, "float32")}, {}, ("folder", structure)


def file_record(b: Builder, path, data: bytes, *, digest=None, **kw) -> int:
    """A FILE record (§5.7) of ``data`` stored verbatim."""
    desc = {"path": path, "length": len(data), "digest": digest if digest is not None else hashlib.sha256(data).digest(),
            "pipeline": [{"codec": "nnar.raw", "config": {}, "params": {}}],
            "segments": [{"name": "data", "length": len(data), "raw_length": len(data), "codecs": []}]}
    return b.record(C.RECORD_FILE, desc, [([], data)], flags=kw.pop("flags", 0), **kw)


def _index_edit(data: bytes, fn) -> bytes:
    """``data`` with its INDX descriptor replaced by ``fn(descriptor)`` (stored uncompressed), and
    the frame, index offset and trailer made consistent again: only the content is wrong."""
    import nnar
    with nnar.open(data) as a:
        index_offset = a._reader.index_record.frame.offset
        desc = dict(a._reader.index_record.desc)
    new = F.pack_descriptor(fn(desc))
    frame = F.pack_frame(C.RECORD_INDEX, new, 0, 0, C.RECORD_FLAG_MUST_UNDERSTAND)
    body = data[:index_offset] + frame + new
    return body + F.pack_trailer(index_offset, len(body) + C.TRAILER_SIZE)


def invalid_vectors_1_4(add):
    """Format 1.4: an index whose content digest the records do not give (CRCs all valid)."""
    good = valid_vectors_1_4()["content-digest"][0]
    add("content-mismatch", _index_edit(good, lambda d: {**d, "content": bytes(32)}), "digest",
        "the index's content digest is not the records' (FORMAT.md §5.3.1)")
    add("content-not-bin", _index_edit(good, lambda d: {**d, "content": "0" * 32}), "bad-descriptor",
        "the index's content is a str, not 32 bytes of bin")
    # two releases whose records have equal lengths, spliced at a record boundary: every record
    # and the index are valid on their own (issue 15 item 10)
    w1, w2 = np.arange(256, dtype=np.float32), np.arange(256, dtype=np.float32)[::-1].copy()
    b = np.ones(16, np.float32)

    def verbatim(w):
        import io
        from nnar.archive import ArchiveWriter
        buf = io.BytesIO()
        with ArchiveWriter(buf) as wr:
            wr.write("w", w, pipeline=P.Pipeline())
            wr.write("b", b, pipeline=P.Pipeline())
        return buf.getvalue()
    v1, v2 = verbatim(w1), verbatim(w2)
    import nnar
    with nnar.open(v1) as a:
        e = a._reader.index()[0]
    assert len(v1) == len(v2) and v1[:e.offset] == v2[:e.offset]
    spliced = v1[:e.offset] + v2[e.offset:e.offset + e.length] + v1[e.offset + e.length:]
    add("content-spliced", spliced, "digest",
        "the TENS record of another release of equal length, spliced in: each record and the index check")

    x = np.arange(4, dtype=np.float32)
    b = base(minor=4)
    file_record(b, "../config.json", b"{}")
    b.tensor("x", x)
    add("file-path-climbs", b.finish(), "bad-descriptor", "a FILE path with a '..' component (FORMAT.md §5.7)")
    b = base(minor=4)
    b.tensor("x", x)
    file_record(b, "config.json", b"{}")
    add("file-after-tensor", b.finish(), "bad-layout", "a FILE record after a TENS record (FORMAT.md §5.7)")
    b = base(minor=4)
    file_record(b, "config.json", b"{}", digest=bytes(32))
    b.tensor("x", x)
    add("file-digest", b.finish(), "digest", "a FILE record whose bytes are not its digest")
    b = base(minor=4)
    file_record(b, "config.json", b"{}")
    file_record(b, "config.json", b"[]")
    b.tensor("x", x)
    add("file-duplicate-path", b.finish(), "bad-layout", "two FILE records of one path")


# -- format 1.5: nnar.chunked (spec/codecs/chunked.md) -------------------------------------------

#: chunks of the smallest size allowed, so that small vectors have several
CHUNKED_ZSTD = P.Pipeline(array_bytes=BytePlanes(), stream_chains=((Chunked(4096, Zstd(3)),),), chunk_bytes=None)
CHUNKED_RAW = P.Pipeline(array_bytes=Raw(), stream_chains=((Chunked(4096, Zstd(3)),),), chunk_bytes=None)
CHUNKED_HUFF = P.Pipeline(array_bytes=Raw(), stream_chains=((Chunked(4096, Huffman()),),), chunk_bytes=None)


def valid_vectors_1_5():
    """Streams in chunks: byte planes of 5000 elements (chunks of 4096 and 904 bytes), a Huffman
    stream of 3 chunks, a stream of exactly 2 full chunks, and an empty stream (no chunks)."""
    rng = np.random.default_rng(15)
    t = {"planes": ((rng.standard_normal(5000) * 0.05).astype(np.float32).reshape(50, 100), "float32"),
         "huffman": (rng.integers(0, 16, 10000).astype(np.uint8) * 3, "uint8"),
         "exact": (np.arange(4096, dtype=np.int16), "int16"),
         "empty": (np.zeros((0, 4), np.float32), "float32")}
    b = base(minor=5)
    b.tensor("planes", t["planes"][0], CHUNKED_ZSTD)
    b.tensor("huffman", t["huffman"][0], CHUNKED_HUFF)
    b.tensor("exact", t["exact"][0], CHUNKED_RAW)
    b.tensor("empty", t["empty"][0], CHUNKED_RAW)
    return {"chunked": (b.finish(), t, {})}


def _chunk_table(stream: bytes) -> tuple[int, list[int], bytes]:
    """(length, sizes, chunks) of a chunked stream's stored bytes."""
    n = struct.unpack_from("<Q", stream)[0]
    k = -(-n // 4096)
    sizes = list(struct.unpack_from(f"<{k}Q", stream, 8))
    return n, sizes, stream[8 + 8 * k:]


def _chunked_stream(n: int, sizes: list[int], chunks: bytes) -> bytes:
    return struct.pack(f"<Q{len(sizes)}Q", n, *sizes) + chunks


def invalid_vectors_1_5(add):
    """Format 1.5: chunked streams whose table, chunks or config are wrong (CRCs all valid)."""
    x = (np.random.default_rng(16).standard_normal(2500) * 0.05).astype(np.float32)  # 10,000 bytes: 3 chunks

    def stream(fn):
        return lambda segs, desc: [(c, fn(d)) for c, d in segs]

    def table(fn):
        return stream(lambda d: _chunked_stream(*fn(*_chunk_table(d))))

    def config(fn):
        def edit(desc):
            fn(desc["segments"][0]["codecs"][0]["config"])
        return edit

    def chunked(name, why, code="codec-data", minor=5, **kw):
        b = base(minor=minor)
        b.tensor("x", x, CHUNKED_RAW, **kw)
        add(name, b.finish(), code, why)

    chunked("chunked-length-over-raw", "a chunked stream's length is above the segment's raw_length",
            segment_edit=table(lambda n, s, c: (n + 1, s, c)))
    chunked("chunked-short", "7 stored bytes: no room for the length",
            segment_edit=stream(lambda d: d[:7]))
    chunked("chunked-table-truncated", "the table of sizes ends inside the stored bytes",
            segment_edit=stream(lambda d: d[:8 + 8 * 2]))
    chunked("chunked-sizes-short", "one byte after the last chunk: the sizes add up to one less",
            segment_edit=stream(lambda d: d + b"\0"))
    chunked("chunked-sizes-wrap", "sizes of 2^64 - 1 and more that wrap to the right sum in 64 bits",
            segment_edit=table(lambda n, s, c: (n, [(1 << 64) - 1, s[0] + s[1] + 1, s[2]], c)))
    chunked("chunked-sizes-shifted", "sizes that add up but cut the chunks in the wrong places",
            segment_edit=table(lambda n, s, c: (n, [s[0] - 1, s[1] + 1, s[2]], c)))

    def short_chunk(n, sizes, chunks):
        first = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(x.tobytes()[:4000])
        return n, [len(first), *sizes[1:]], first + chunks[sizes[0]:]
    chunked("chunked-chunk-short", "the first chunk decodes to 4000 bytes, not chunk_bytes (4096)",
            segment_edit=table(short_chunk))

    def long_chunk(n, sizes, chunks):
        last = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(x.tobytes()[8192:] + b"\0")
        return n, [*sizes[:2], len(last)], chunks[:sizes[0] + sizes[1]] + last
    chunked("chunked-chunk-long", "the last chunk's frame declares one byte more than the stream has left",
            segment_edit=table(long_chunk))
    chunked("chunked-nested-chunked", "a chunked stage nested in a chunked stage",
            edit=config(lambda c: c.update(chunk={"codec": "nnar.chunked", "config": dict(c)})))
    chunked("chunked-nested-unknown", "a nested codec this reader does not know", code="unsupported-codec",
            edit=config(lambda c: c.update(chunk={"codec": "nnar.lz4", "config": {}})))
    chunked("chunked-nested-array-codec", "nnar.raw (array-bytes) as the nested stage",
            edit=config(lambda c: c.update(chunk={"codec": "nnar.raw", "config": {}})))
    chunked("chunked-nested-params", "the nested stage map has a params key",
            edit=config(lambda c: c["chunk"].update(params={})))
    chunked("chunked-chunk-bytes-4095", "chunk_bytes below 4096",
            edit=config(lambda c: c.update(chunk_bytes=4095)))
    chunked("chunked-chunk-bytes-float", "chunk_bytes 4096.0, a float",
            edit=config(lambda c: c.update(chunk_bytes=4096.0)))
    chunked("chunked-config-unknown-key-newer-minor", "a config key chunked.md does not define, minor 7: "
            "configs are closed", minor=7, edit=config(lambda c: c.update(level=3)))
    b = base(minor=5)
    b.tensor("x", np.zeros(0, np.float32), CHUNKED_RAW, segment_edit=stream(lambda d: d + b"\0"))
    add("chunked-empty-with-bytes", b.finish(), "codec-data", "an empty chunked stream with a byte after its length")


# -- writing ------------------------------------------------------------------------------------


# -- patches (spec/patch.md, since 1.3) ----------------------------------------------------------

PATCHES = ROOT / "patch"


def _archive(tensors: dict, *, metadata=None, structure=None, raw=(), config=None, aliases=None) -> bytes:
    """An archive as nnar writes it; tensors named in ``raw`` are stored nnar.raw (deltas of width 4);
    ``aliases`` maps an alias to its tensor."""
    import io
    from nnar.archive import ArchiveWriter
    from nnar.config import from_mapping
    buf = io.BytesIO()
    with ArchiveWriter(buf, metadata=metadata, structure=structure,
                       config=from_mapping(config) if config else None) as w:
        for name, a in tensors.items():
            tied = tuple(k for k, v in (aliases or {}).items() if v == name)
            w.write(name, a, pipeline=P.Pipeline(array_bytes=Raw(), stream_chains=((), (Zstd(1),))) if name in raw else None,
                    aliases=tied)
    return buf.getvalue()


def _diff(old: bytes, new: bytes) -> bytes:
    import io
    import nnar
    out = io.BytesIO()
    nnar.diff(old, new, out)
    return out.getvalue()


def _weights(seed: int, shape=(160, 160), scale=0.05) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _nudged(a: np.ndarray, seed: int, rel=1e-3) -> np.ndarray:
    """A fine-tune's step: every weight moves a little."""
    return (a + np.random.default_rng(seed).standard_normal(a.shape).astype(np.float32) * rel * float(np.std(a))
            ).astype(np.float32)


def valid_patches() -> dict[str, tuple[bytes, bytes]]:
    """name → (base, result) archives; the patch is made by nnar diff when the vector is frozen."""
    out = {}
    a, b, c = _weights(1), _weights(2), _weights(3, (128, 160))
    bias = _weights(4, (96,), 0.01)
    old = _archive({"fc1.weight": a, "fc1.bias": bias, "fc2.weight": b, "old.weight": c}, metadata={"v": "1"})
    # fc1 unchanged, fc1.bias nudged (a group of its own), fc2 fine-tuned, old.weight renamed,
    # an added tensor, and new metadata
    new = _archive({"fc1.weight": a, "fc1.bias": _nudged(bias, 5), "fc2.weight": _nudged(b, 6),
                    "renamed.weight": c, "added.weight": _weights(7, (32, 32))}, metadata={"v": "2"})
    out["fine-tune-rename-add-remove"] = (old, new)
    out["identical"] = (old, old)
    w = _weights(8, (128, 64))
    out["raw-width-4"] = (_archive({"w": w}, raw=("w",)), _archive({"w": _nudged(w, 9)}, raw=("w",)))
    k = _weights(10, (128, 128))
    cfg = {"quant": "kmeans", "bits": 4}
    out["kmeans-requantized"] = (_archive({"k": k}, config=cfg), _archive({"k": _nudged(k, 11, 1e-2)}, config=cfg))
    s1, s2 = b"graph v1 " * 40, b"graph v1 " * 39 + b"graph v2 "
    out["structure"] = (_archive({"w": w}, structure=("example", s1)), _archive({"w": w}, structure=("example", s2)))
    # small tensors share a group record; one is added, one removed, one nudged: a delta with ranges
    small = {f"b{i}": _weights(20 + i, (40,), 0.01) for i in range(6)}
    grown = {**{k: v for k, v in small.items() if k != "b2"}, "b9": _weights(30, (24,), 0.01)}
    grown["b4"] = _nudged(small["b4"], 31)
    out["group-ranges"] = (_archive(small), _archive(grown))
    return out


def _rewrite(patch: bytes, edit=None, *, drop: int | None = None, extra=None) -> bytes:
    """The patch written again with its PTCH map edited (``edit(map)``), payload tensor ``drop``
    left out, or ``extra`` (an array) appended: patches no correct nnar writes."""
    import io
    from nnar.archive import ArchiveWriter
    from nnar.container.records import RecordReader
    from nnar.patching.apply import _payloads, read_header
    r = RecordReader(io.BytesIO(patch), patch=True)
    header, records = read_header(r)
    tensors = list(_payloads(r, records))
    m = header.to_map()
    if edit:
        edit(m)
    buf = io.BytesIO()
    with ArchiveWriter(buf, source_format="nnar-patch", patch=m) as w:
        for i, t in enumerate(tensors):
            if i != drop:
                w.write(f"t{i}", t, pipeline=P.Pipeline())
        if extra is not None:
            w.write("extra", extra, pipeline=P.Pipeline())
    return buf.getvalue()


# The byte patches of format 1.3 (spec/patch.md §9) are all frozen: nnar 0.4.0 wrote them, and
# the generator of their invalid ones (commit 6b5df90 and b6d8774) edited fields that content
# patches no longer have. nnar diff now writes content patches, generated below.


def _another_zstd():
    """A context in which nnar's zstd writes other valid frames (another level, a checksum), as a
    device's zstd of another version does: the base of a content patch need not be byte-identical."""
    import contextlib
    from nnar.codecs import zstd as Z

    @contextlib.contextmanager
    def swapped():
        encode = Z.Zstd.encode

        def other(self, data):
            level = 1 if self.level >= 19 else self.level + 2
            return zstandard.ZstdCompressor(level=level, write_content_size=True,
                                            write_checksum=True).compress(data), {}
        Z.Zstd.encode = other
        try:
            yield
        finally:
            Z.Zstd.encode = encode
    return swapped()


def valid_content_patches(valid: dict) -> dict[str, tuple[bytes, bytes, bytes]]:
    """name → (base, patch, result): content patches (spec/patch.md §3–§6, since 1.4), made by nnar
    diff from the pairs of :func:`valid_patches`, and one applied to a base that another zstd
    stored (same content, other bytes)."""
    out = {f"content-{name}": (old, _diff(old, new), new) for name, (old, new) in valid.items()}
    old, patch, new = out["content-fine-tune-rename-add-remove"]
    # the device's copy of OLD: rebuilt from NEW by a patch, its deltas encoded by another zstd
    import io
    import nnar
    back, device = _diff(new, old), io.BytesIO()
    with _another_zstd():
        nnar.patch(new, back, device)
    with nnar.open(device.getvalue()) as a, nnar.open(old) as b:
        assert device.getvalue() != old and a.content_digest() == b.content_digest()
    out["content-base-by-another-zstd"] = (device.getvalue(), patch, new)
    # a model folder (FORMAT.md §5.7): its config changed, one tensor fine-tuned, a file added
    old = _folder_archive()[0]
    new = _folder_archive(config=b'{"model_type": "bert", "hidden_size": 4, "revision": 2}\n',
                          extra={"generation_config.json": b"{}\n"}, nudge=True)[0]
    out["content-folder"] = (old, _diff(old, new), new)
    return out


def invalid_content_patches(valid: dict) -> dict[str, tuple[bytes, bytes, str, str]]:
    """name → (base, patch, error code, why), each a content patch made invalid."""
    base, good, new = valid["content-fine-tune-rename-add-remove"]
    out = {}

    def add(name, patch, code, why, on=base):
        out[f"content-{name}"] = (on, patch, code, why)

    def first_delta(m):
        return next((i, j) for i, r in enumerate(m["records"]) for j, s in enumerate(r.get("segments", ()))
                    if s["from"] == "delta")

    add("wrong-base", good, "wrong-base", "the content patch is applied to another archive (its own result)", on=new)

    def result_content(m):
        m["result_content"] = bytes(32)
    add("result-content", _rewrite(good, result_content), "digest",
        "the result's content digest is not the one the patch promises")

    def base_content(m):
        m["base_content"] = bytes(32)
    add("base-content", _rewrite(good, base_content), "wrong-base", "the patch names another base's content")

    def both(m):
        m["base_digest"] = bytes(32)
    add("both-kinds", _rewrite(good, both), "bad-descriptor",
        "a PTCH descriptor with both base_content (content patch) and base_digest (byte patch)")

    def byte_key(m):
        i, _ = first_delta(m)
        m["records"][i]["body_crc"] = 0
    add("byte-patch-key", _rewrite(good, byte_key), "bad-descriptor",
        "a byte patch's record key (body_crc) in a content patch of a known minor")

    def op_kind(m):
        i, j = first_delta(m)
        m["records"][i]["segments"][j]["op"] = "xor" if m["records"][i]["segments"][j]["op"] == "add" else "add"
    add("delta-op-swapped", _rewrite(good, op_kind), "digest",
        "xor and add swapped: the rebuilt record's array is not its digest")

    def renamed(m):  # the op of the renamed tensor: a descriptor given, every segment copied
        i = next(i for i, r in enumerate(m["records"]) if "descriptor" in r and "segments" not in r and i)
        desc = msgpack.unpackb(m["records"][i]["descriptor"])
        desc["segments"][0]["codecs"] = [{"codec": "nnar.zstd", "config": {"level": 7}, "params": {}}]
        m["records"][i]["descriptor"] = msgpack.packb(desc)
    add("base-other-codecs", _rewrite(good, renamed), "bad-descriptor",
        "a segment copied from the base under other codecs than the partner's")

    # a content patch in a file of format 1.3: the preamble's minor changed, META's header CRC
    # (which covers the preamble) made right again
    old_minor = bytearray(good)
    struct.pack_into("<H", old_minor, 10, 3)
    dlen = struct.unpack_from("<I", old_minor, C.PREAMBLE_SIZE + 16)[0]
    end = C.PREAMBLE_SIZE + C.FRAME_SIZE
    crc = F.crc32(old_minor[end: end + dlen],
                  F.crc32(old_minor[C.PREAMBLE_SIZE: C.PREAMBLE_SIZE + 28], F.crc32(old_minor[:C.PREAMBLE_SIZE])))
    struct.pack_into("<I", old_minor, C.PREAMBLE_SIZE + 28, crc)
    add("format-1-3", bytes(old_minor), "bad-descriptor", "a content patch in a file whose format_minor is 3")
    add("payload-left-over", _rewrite(good, extra=np.zeros(4, np.uint8)), "bad-layout",
        "a payload tensor that no op uses")
    return out


def write_patches() -> list[str]:
    PATCHES.mkdir(parents=True, exist_ok=True)
    manifest_path = PATCHES / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"valid": {}, "invalid": {}}
    written = []
    pairs = valid_patches()
    assert all(name in manifest["valid"] for name in pairs), "the 1.3 byte patch vectors are frozen"
    valid = valid_content_patches(pairs)
    for name, (old, patch, new) in valid.items():
        if name in manifest["valid"]:
            continue
        (PATCHES / f"{name}.base.nnar").write_bytes(old)
        (PATCHES / f"{name}.result.nnar").write_bytes(new)
        (PATCHES / f"{name}.nnarpatch").write_bytes(patch)
        manifest["valid"][name] = {"base": f"{name}.base.nnar", "patch": f"{name}.nnarpatch",
                                   "result": f"{name}.result.nnar", "kind": "content"}
        written.append(f"patch/{name}")
    for name, (base, patch, code, why) in invalid_content_patches(valid).items():
        if name in manifest["invalid"]:
            continue
        # an invalid patch's base is one of the frozen valid archives, found by its bytes
        base_name = next(f"{v}.{part}.nnar" for v in manifest["valid"] for part in ("base", "result")
                         if (PATCHES / f"{v}.{part}.nnar").read_bytes() == base)
        (PATCHES / f"invalid-{name}.nnarpatch").write_bytes(patch)
        manifest["invalid"][name] = {"base": base_name, "patch": f"invalid-{name}.nnarpatch", "error": code,
                                     "why": why}
        written.append(f"patch/invalid-{name}")
    manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return written


def main() -> None:
    (ROOT / "valid").mkdir(parents=True, exist_ok=True)
    (ROOT / "invalid").mkdir(parents=True, exist_ok=True)
    manifest_path = ROOT / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"valid": {}, "invalid": {}}
    written = []
    for name, (data, tensors, md, *model) in valid_vectors().items():
        if name in manifest["valid"]:
            continue
        (ROOT / "valid" / f"{name}.nnar").write_bytes(data)
        np.savez(ROOT / "valid" / f"{name}.npz", **{k: to_storage(np.asarray(a), dt) for k, (a, dt) in tensors.items()})
        manifest["valid"][name] = {"dtypes": {k: dt for k, (_, dt) in tensors.items()}, "metadata": md}
        if model:  # the MODL record's format and decoded bytes
            (ROOT / "valid" / f"{name}.structure").write_bytes(model[0][1])
            manifest["valid"][name]["structure"] = model[0][0]
        import nnar
        with nnar.open(data) as a:  # since 1.4: the content digest a reader must compute (FORMAT.md §5.3.1)
            if a.stored_content is not None:
                manifest["valid"][name]["content"] = a.content_digest().hex()
            if a.files():  # and the FILE records' paths with the SHA-256 of their bytes (§5.7)
                manifest["valid"][name]["files"] = {p: hashlib.sha256(a.read_file(p)).hexdigest() for p in a.files()}
        written.append(name)
    for name, (data, code, random_code, why) in invalid_vectors().items():
        if name in manifest["invalid"]:
            continue
        (ROOT / "invalid" / f"{name}.nnar").write_bytes(data)
        entry = {"error": code, "why": why}
        if random_code:
            entry["error_random_access"] = random_code
        manifest["invalid"][name] = entry
        written.append(name)
    manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    written += write_patches()
    print(f"wrote {len(written)} new vectors: {', '.join(written) or 'none'}")


if __name__ == "__main__":
    main()
