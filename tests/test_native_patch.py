"""The patcher of libnnar (native/src/patch*.c, ``nnar-native patch``) against spec/patch.md and
against the Python package (``nnar diff`` / ``nnar patch``), on the builds of test_native.py.

- every patch vector of spec/vectors/patch: a valid one gives its result (the same content
  digest; a byte patch, the exact bytes), an invalid one its code, and no output file;
- patches that the Python package makes between archives it writes (lossless, lossy presets,
  groups, Huffman pipelines, renamed, added and removed tensors, aliases, MODL, model folders
  with FILE records), applied by the C tool: the content of the new archive, verified by both
  readers; a chain v1 -> v2 -> v3 applied in C;
- mutated patches (bit flips, byte changes, truncations): the same code as Python, the output
  never created, the base unchanged (ASan + UBSan build);
- output handling: an existing output refused without --force, the patch read from a pipe;
- every allocation failure while patching is out-of-memory and frees everything.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnar
import nnar.config
from nnar import pipeline as P
from nnar.codecs.byteplanes import BytePlanes
from nnar.codecs.chunked import Chunked
from nnar.codecs.huffman import Huffman
from nnar.codecs.raw import Raw
from nnar.codecs.zstd import Zstd
from test_native import (NATIVE, VECTORS, _array, _write, builds, code_of, mutate, mutations, run,  # noqa: F401
                         san, tool)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_vectors import _rewrite  # noqa: E402  the patch written again, edited (as the invalid vectors are made)

PATCHES = VECTORS / "patch"
PATCH_MANIFEST = json.loads((PATCHES / "manifest.json").read_text())
def SLOW(n: int):
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def content_of(data: bytes) -> bytes:
    with nnar.open(data) as a:
        return a.content_digest()


def c_patch(exe, base, patch, out, *extra, stdin=None):
    return run(exe, "patch", base, patch, "-o", out, *extra, stdin=stdin)


def apply_in_c(exe, base: bytes, patch: bytes, work: Path) -> tuple[Path, Path, str | None]:
    """``patch`` applied to ``base`` by the C tool in a fresh folder ``work``: (the folder, the
    output's path, the error code or None)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "base.nnar").write_bytes(base)
    (work / "p.nnarpatch").write_bytes(patch)
    out = work / "out.nnar"
    return work, out, code_of(c_patch(exe, work / "base.nnar", work / "p.nnarpatch", out))


def python_code(base: bytes, patch: bytes, tmp_path) -> str | None:
    out = tmp_path / "py-result.nnar"
    out.unlink(missing_ok=True)
    try:
        nnar.patch(base, patch, str(out))
    except nnar.NnarError as e:
        return e.code
    return None


def _assert_good_result(exe, out, want: bytes) -> None:
    """The C result has NEW's content and verifies in both readers."""
    got = out.read_bytes()
    assert content_of(got) == content_of(want)
    nnar.verify(got)
    r = run(exe, "verify", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split()[-1] == content_of(want).hex()


@pytest.fixture(params=["release", "sanitized"])
def either(request, builds):
    """Each build in turn: the release build (gcc) and the ASan + UBSan one (clang)."""
    return builds[request.param]


# -- the frozen vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PATCH_MANIFEST["valid"]))
def test_valid_patch_vector(san, tmp_path, name):
    v = PATCH_MANIFEST["valid"][name]
    out = tmp_path / "result.nnar"
    base = PATCHES / v["base"]
    before = base.read_bytes()
    r = c_patch(san, base, PATCHES / v["patch"], out)
    assert r.returncode == 0, r.stderr
    want = (PATCHES / v["result"]).read_bytes()
    if v.get("kind") == "content":
        _assert_good_result(san, out, want)
        # format_minor: the greater of result_minor and 4 (§6 step 3), not the applier's own minor
        assert out.read_bytes()[10:12] == want[10:12]
    else:   # a byte patch binds the exact bytes
        assert out.read_bytes() == want
    assert base.read_bytes() == before


@pytest.mark.parametrize("name", sorted(PATCH_MANIFEST["invalid"]))
def test_invalid_patch_vector(san, tmp_path, name):
    v = PATCH_MANIFEST["invalid"][name]
    out = tmp_path / "result.nnar"
    assert code_of(c_patch(san, PATCHES / v["base"], PATCHES / v["patch"], out)) == v["error"], v["why"]
    assert not out.exists() and not list(tmp_path.iterdir())


# -- output handling ---------------------------------------------------------------------------------


def test_output_refused_unless_forced_and_patch_from_a_pipe(tool, tmp_path):
    v = PATCH_MANIFEST["valid"]["content-fine-tune-rename-add-remove"]
    base, patch = PATCHES / v["base"], PATCHES / v["patch"]
    out = tmp_path / "out.nnar"
    out.write_bytes(b"keep me")
    assert code_of(c_patch(tool, base, patch, out)) == "output-exists"
    assert out.read_bytes() == b"keep me"
    assert c_patch(tool, base, patch, out, "--force").returncode == 0
    _assert_good_result(tool, out, (PATCHES / v["result"]).read_bytes())
    piped = tmp_path / "piped.nnar"
    assert c_patch(tool, base, "-", piped, stdin=patch.read_bytes()).returncode == 0
    assert piped.read_bytes() == out.read_bytes()
    assert code_of(c_patch(tool, base, patch, base)) == "invalid-argument"
    assert run(tool, "patch", base, patch).returncode == 2   # no -o: usage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nnar", "piped.nnar"]


# -- against the Python package -----------------------------------------------------------------------

PRESETS = [None, "fp16", "int8", {"quant": "kmeans", "bits": 4}, "tiny", {"prune": 0.7}]
HUFFMAN = [P.Pipeline((), Raw(), ((Huffman(),),)), P.Pipeline((), BytePlanes(), ((Huffman(),),)),
           P.Pipeline((), BytePlanes(), ((Zstd(1), Huffman()),)), P.Pipeline((), Raw(), ((Chunked(4096, Huffman()),),))]


@st.composite
def versions(draw):
    """A model and its next version: tensors fine-tuned (every weight moved a little), one
    renamed, one added, one removed; written with a preset or explicit Huffman pipelines."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    old = []
    for i in range(draw(st.integers(2, 5))):
        dtype = draw(st.sampled_from(["float32", "float16", "int8", "float32"]))
        big = draw(st.booleans())
        shape = (draw(st.integers(16, 40)), draw(st.integers(32, 64))) if big else (draw(st.integers(0, 12)),)
        old.append((f"t{i}.{'weight' if big else 'bias'}", dtype, _array(rng, dtype, shape, False)))
    new = []
    for name, dtype, a in old:
        if dtype.startswith("float") and draw(st.booleans()):
            a = (a + (rng.normal(size=a.shape) * 0.001).astype(dtype)).astype(dtype)
        new.append((name, dtype, a))
    if len(new) > 2 and draw(st.booleans()):
        new.pop(draw(st.integers(0, len(new) - 1)))
    if draw(st.booleans()):
        name, dtype, a = new[0]
        new[0] = (name + ".renamed", dtype, a)
    if draw(st.booleans()):
        new.append(("added.weight", "float32", _array(rng, "float32", (24, 40), False)))
    huffman = draw(st.booleans())
    config = None if huffman else draw(st.sampled_from(PRESETS))
    alias = draw(st.booleans())
    structure = ("onnx", bytes(rng.integers(0, 4, 300, dtype=np.uint8))) if draw(st.booleans()) else None
    return old, new, config, huffman, alias, structure


def _version(tensors, config, huffman, alias, structure) -> bytes:
    pipes = None
    if huffman:
        pipes = [HUFFMAN[i % len(HUFFMAN)] if t[1] == "float32" else None for i, t in enumerate(tensors)]
        if None in pipes:   # the planner for the others
            buf = io.BytesIO()
            with nnar.ArchiveWriter(buf, metadata={"k": "v"}, structure=structure) as w:
                for (name, dtype, a), p in zip(tensors, pipes):
                    w.write(name, a, **({"pipeline": p} if p is not None else {}))
            return buf.getvalue()
    return _write(tensors, config, alias, pipes, structure)


def _diff(old: bytes, new: bytes, tmp_path) -> bytes:
    path = tmp_path / "p.nnarpatch"
    path.unlink(missing_ok=True)
    nnar.diff(old, new, str(path))
    return path.read_bytes()


@SLOW(10)
@given(case=versions())
def test_python_patches_apply_in_c(either, tmp_path, case):
    old_t, new_t, config, huffman, alias, structure = case
    old = _version(old_t, config, huffman, alias, structure)
    new = _version(new_t, config, huffman, alias, structure)
    patch = _diff(old, new, tmp_path)
    (tmp_path / "old.nnar").write_bytes(old)
    (tmp_path / "p.nnarpatch").write_bytes(patch)
    out = tmp_path / "c.nnar"
    out.unlink(missing_ok=True)
    r = c_patch(either, tmp_path / "old.nnar", tmp_path / "p.nnarpatch", out)
    assert r.returncode == 0, r.stderr
    _assert_good_result(either, out, new)


def test_python_patches_of_chunked_archives_apply_in_c(either, tmp_path):
    """Archives as nnar.pack writes them since 1.5 (2^22 float32 and 5 MiB of int32: streams of 4
    MiB or more chunked by 1 MiB), a fine-tune and an edit apart: Python's patch applies in C, the
    chunked streams encoded again by the C encoder (the nested zstd per chunk), and the result
    verifies in both readers with v2's content, format_minor 5 (result_minor)."""
    rng = np.random.default_rng(17)
    w = (rng.normal(size=1 << 22) * 0.05).astype(np.float32)
    ids = rng.integers(-50, 50, size=(5 << 20) // 4).astype(np.int32)
    v1 = nnar.pack({"w": w, "ids": ids, "b": np.ones(9, np.float32)})
    w2 = w.copy()
    w2[::5] += np.float32(1e-3)
    v2 = nnar.pack({"w": w2, "ids": ids + 1, "b": np.ones(9, np.float32)})
    with nnar.open(v2) as a:
        assert any(g["codecs"] and g["codecs"][0]["codec"] == "nnar.chunked" for i in a.infos() for g in i.segments)
    work, out, got = apply_in_c(either, v1, _diff(v1, v2, tmp_path), tmp_path / "w")
    assert got is None
    _assert_good_result(either, out, v2)
    assert out.read_bytes()[10:12] == (5).to_bytes(2, "little")


def test_chunked_huffman_streams_rebuilt_byte_for_byte(tool, tmp_path):
    """Chunked streams whose chunks are Huffman (deterministic in both encoders): every record
    body of the C result of Python's patch is Python's result's, byte for byte, tables and chunks
    (its length and body_crc; the descriptors, zstd-compressed, follow libzstd's version)."""
    rng = np.random.default_rng(19)
    pipe = P.Pipeline((), BytePlanes(), ((Chunked(4096, Huffman()),),))
    old = [("w", "float32", (rng.normal(size=(70, 300)) * 0.05).astype(np.float32)),
           ("q", "float32", (rng.integers(0, 7, size=(50, 99)) * 0.5).astype(np.float32))]
    new = [(n, d, (a + np.float32(1e-3)).astype(np.float32)) for n, d, a in old]
    v1, v2 = _write(old, pipelines=[pipe, pipe]), _write(new, pipelines=[pipe, pipe])
    patch = _diff(v1, v2, tmp_path)
    work, out, got = apply_in_c(tool, v1, patch, tmp_path / "w")
    assert got is None
    _assert_good_result(tool, out, v2)
    bodies = _bodies(out.read_bytes())
    assert [b[0] for b in bodies] == [b"META", b"TENS", b"TENS"]
    assert bodies == _bodies(nnar_result(v1, patch, tmp_path))


def _bodies(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, body_length, body_crc) of each record (FORMAT.md §4), up to the index."""
    out, at = [], 16
    while data[at:at + 4] != b"INDX":
        length, desc, crc = struct.unpack_from("<QII", data, at + 8)
        out.append((data[at:at + 4], length, crc))
        at += 32 + desc + length
    return out


def _folder(root, config: bytes, weights: dict, extra: dict) -> bytes:
    from safetensors.numpy import save_file
    root.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(root / "model.safetensors"))
    (root / "config.json").write_bytes(config)
    for name, data in extra.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return nnar.pack(str(root))


def test_chain_of_folders_applied_in_c(either, tmp_path):
    """v1 -> v2 -> v3 of a model folder (FILE records, a MODL layout): each patch made by Python
    from the server's archives, applied in C to the device's own copy."""
    rng = np.random.default_rng(5)
    w = {"enc.weight": (rng.normal(size=(64, 48)) * 0.05).astype(np.float32),
         "enc.bias": np.zeros(48, np.float32), "head.weight": (rng.normal(size=(48, 10)) * 0.05).astype(np.float32)}
    v1 = _folder(tmp_path / "v1", b'{"rev": 1}', w, {"tokenizer.json": b'{"vocab": [1, 2, 3]}'})
    w2 = dict(w, **{"head.weight": (w["head.weight"] + 1e-3).astype(np.float32)})
    v2 = _folder(tmp_path / "v2", b'{"rev": 2}', w2, {"tokenizer.json": b'{"vocab": [1, 2, 3]}', "sub/notes.txt": b"hi"})
    w3 = {k: (v * 1.01).astype(np.float32) for k, v in w2.items()}
    v3 = _folder(tmp_path / "v3", b'{"rev": 3}', w3, {"tokenizer.json": b'{"vocab": [1, 2, 3, 4]}'})
    with nnar.open(v1) as a:
        assert "config.json" in a.files() and a.structure[0] == "folder"
    paths = {}
    for name, data in (("v1", v1), ("p12", _diff(v1, v2, tmp_path)), ("p23", _diff(v2, v3, tmp_path))):
        paths[name] = tmp_path / f"{name}.bin"
        paths[name].write_bytes(data)
    c2, c3 = tmp_path / "c2.nnar", tmp_path / "c3.nnar"
    assert c_patch(either, paths["v1"], paths["p12"], c2).returncode == 0
    _assert_good_result(either, c2, v2)
    r = c_patch(either, c2, paths["p23"], c3)
    assert r.returncode == 0, r.stderr
    _assert_good_result(either, c3, v3)
    # the device's v2 is not the server's byte for byte in general, but the patch applies to either
    assert code_of(c_patch(either, paths["v1"], paths["p23"], tmp_path / "x.nnar")) == "wrong-base"


# -- mutated patches -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def patch_pairs(tmp_path_factory) -> list[tuple[bytes, bytes]]:
    """(base, patch) pairs: Python's patches between versions of several kinds, and the vectors'."""
    tmp = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(3)
    model = [("emb.weight", "float32", (rng.normal(size=(40, 64)) * 0.05).astype(np.float32)),
             ("emb.bias", "float32", rng.normal(size=16).astype(np.float32)),
             ("ids", "int64", np.arange(-20, 20, dtype=np.int64)),
             ("half", "float16", rng.normal(size=(24, 24)).astype(np.float16))]
    moved = [(n, d, (a + (rng.normal(size=a.shape) * 1e-3).astype(d)).astype(d) if d.startswith("float") else a)
             for n, d, a in model]
    moved[1] = ("emb.bias.renamed", moved[1][1], moved[1][2])
    pairs = []
    for config, huffman in ((None, False), ({"quant": "kmeans", "bits": 4}, False), (None, True)):
        old = _version(model, config, huffman, True, ("onnx", b"graph" * 40))
        new = _version(moved + [("added", "float32", np.ones((8, 40), np.float32))], config, huffman, True,
                       ("onnx", b"graph" * 41))
        pairs.append((old, _diff(old, new, tmp)))
    for name in ("content-folder", "content-group-ranges", "raw-width-4", "group-ranges"):
        v = PATCH_MANIFEST["valid"][name]
        pairs.append(((PATCHES / v["base"]).read_bytes(), (PATCHES / v["patch"]).read_bytes()))
    return pairs


@SLOW(120)
@given(m=mutations(7))
def test_mutated_patches_give_the_same_code(san, patch_pairs, tmp_path, m):
    which, kind, where, count = m
    base, patch = patch_pairs[which]
    data = mutate(patch, kind, where, count)
    work, out, got = apply_in_c(san, base, data, tmp_path / "m")
    want = python_code(base, data, tmp_path)
    assert got == want
    assert (work / "base.nnar").read_bytes() == base
    if got is None:
        assert content_of(out.read_bytes()) == content_of(nnar_result(base, data, tmp_path))
    else:
        assert sorted(p.name for p in work.iterdir()) == ["base.nnar", "p.nnarpatch"]


def nnar_result(base: bytes, patch: bytes, tmp_path) -> bytes:
    out = tmp_path / "py-ok.nnar"
    out.unlink(missing_ok=True)
    nnar.patch(base, patch, str(out))
    return out.read_bytes()


VALUES = [None, 0, 1, 2, 3, 7, 999, -1, 2**40, 1.0, 2.0, 4.0, True, "", "TENS", "META", "ALIS", "MODL", "FILE", "XXXX",
          b"", b"\x80", b"\x81\xa1a\x01", "xor", "add", "base", "patch", "delta", [], [[0, 4]], [[None, 8]],
          [[0, 2**40]], [[1, 2, 3]], {}, {"from": "base"}, {"from": "patch"}, {"from": "delta", "op": "xor", "width": 1}]


@st.composite
def edits(draw, n: int):
    """One edit of a patch's PTCH map or payload: a field of a record op or segment op set to a
    value of any type, a key deleted, ops swapped, a payload tensor dropped or added."""
    which = draw(st.integers(0, n - 1))
    kind = draw(st.sampled_from(["record", "segment", "delete", "swap", "drop", "extra", "top", "desc", "desc"]))
    key = draw(st.sampled_from(["base", "type", "descriptor", "segments", "from", "op", "width", "ranges", "flags",
                                "body_crc", "result_minor", "base_content", "result_content", "records", "encoder"]))
    return which, kind, draw(st.integers(0, 2**31)), key, draw(st.sampled_from(VALUES))


def _edit(kind, where, key, value):
    def edit(m):
        ops = m["records"]
        op = ops[where % len(ops)]
        segs = [s for o in ops for s in o.get("segments", [])]
        if kind == "record":
            op[key] = value
        elif kind == "segment" and segs:
            segs[where % len(segs)][key] = value
        elif kind == "delete":
            target = segs[where % len(segs)] if segs and where % 2 else op
            target.pop(key, None)
        elif kind == "swap" and len(ops) > 2:
            i = 1 + where % (len(ops) - 1)
            j = 1 + (where // 7) % (len(ops) - 1)
            ops[i], ops[j] = ops[j], ops[i]
        elif kind == "top":
            m[key] = value
        elif kind == "desc":   # inside a descriptor an op gives: a key of it or of a segment map
            import msgpack
            given = [o for o in ops if isinstance(o.get("descriptor"), bytes)]
            if not given:
                return
            o = given[where % len(given)]
            d = msgpack.unpackb(o["descriptor"], raw=False, strict_map_key=False)
            segs = d.get("segments") if isinstance(d.get("segments"), list) else []
            target = segs[(where // 3) % len(segs)] if segs and where % 3 else d
            name = DESC_KEYS[(where // 11) % len(DESC_KEYS)]
            if isinstance(target, dict):
                if value is None and where % 2:
                    target.pop(name, None)
                else:
                    target[name] = value
            o["descriptor"] = msgpack.packb(d, use_bin_type=True)
    return edit


DESC_KEYS = ["length", "raw_length", "codecs", "name", "tensors", "dtype", "digest", "pipeline", "segments", "path",
             "format", "aliases", "fidelity", "extra"]


@SLOW(100)
@given(e=edits(7))
def test_edited_patches_give_the_same_code(san, patch_pairs, tmp_path, e):
    which, kind, where, key, value = e
    base, patch = patch_pairs[which]
    try:
        if kind == "drop":
            data = _rewrite(patch, drop=where % 3)
        elif kind == "extra":
            data = _rewrite(patch, extra=np.zeros(where % 9, np.uint8))
        else:
            data = _rewrite(patch, _edit(kind, where, key, value))
    except (nnar.NnarError, TypeError, ValueError, OverflowError):   # the writer refuses it
        return
    work, out, got = apply_in_c(san, base, data, tmp_path / "e")
    assert got == python_code(base, data, tmp_path)
    assert out.exists() == (got is None)


@pytest.fixture(scope="session")
def huffman_encode(builds, tmp_path_factory):
    """native/tests/huffman_encode.c: the library's Huffman encoder on a file's bytes."""
    cc = shutil.which("gcc") or shutil.which("cc") or "clang"
    exe = tmp_path_factory.mktemp("huffman") / "huffman_encode"
    done = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", f"-I{NATIVE / 'include'}",
                           f"-I{NATIVE / 'src'}", str(NATIVE / "tests" / "huffman_encode.c"),
                           str(builds["release"].parent / "libnnar.a"), "-lzstd", "-o", str(exe)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return exe


@st.composite
def histograms(draw):
    """Byte strings of every shape a code can take: empty, one symbol, uniform, skewed, and
    Fibonacci-like counts whose Huffman code is deeper than 15 bits (package-merge)."""
    kind = draw(st.sampled_from(["random", "skewed", "fibonacci", "few"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "random":
        return rng.integers(0, 256, draw(st.integers(0, 3000)), dtype=np.uint8).tobytes()
    if kind == "skewed":
        return rng.geometric(draw(st.floats(0.05, 0.95)), draw(st.integers(1, 5000))).clip(0, 255).astype(np.uint8).tobytes()
    if kind == "few":
        return bytes(rng.choice(draw(st.lists(st.integers(0, 255), min_size=1, max_size=4)), draw(st.integers(1, 500))))
    counts, a, b = [], 1, draw(st.integers(1, 3))
    for _ in range(draw(st.integers(16, 26))):
        counts.append(a)
        a, b = b, a + b
    symbols = rng.permutation(256)[:len(counts)]
    return b"".join(bytes([int(s)]) * c for s, c in zip(symbols, counts))


@SLOW(40)
@given(data=histograms())
def test_huffman_encoder_writes_pythons_bytes(huffman_encode, tmp_path, data):
    """A byte patch rebuilds Huffman segments exactly only if the encoders agree byte for byte
    (huffman.md, Encoding: nnar's lengths, package-merge above 15 bits)."""
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    r = run(huffman_encode, path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == bytes(Huffman().encode(data)[0])


# -- allocation failures ---------------------------------------------------------------------------------


def test_every_allocation_failure_while_patching(builds, tmp_path):
    """native/tests/alloc_failures.c with a base and a patch: every allocation failed in turn is
    out-of-memory, nothing leaks, nothing is written."""
    cc = shutil.which("clang") or shutil.which("gcc") or "cc"
    exe = tmp_path / "alloc_failures"
    done = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-g",
                           "-fsanitize=address,undefined", f"-I{NATIVE / 'include'}",
                           str(NATIVE / "tests" / "alloc_failures.c"), str(builds["sanitized"].parent / "libnnar.a"),
                           "-lzstd", "-o", str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    pairs = [(PATCHES / PATCH_MANIFEST["valid"][name]["base"], PATCHES / PATCH_MANIFEST["valid"][name]["patch"])
             for name in ("content-fine-tune-rename-add-remove", "content-folder", "content-structure", "group-ranges")]
    # chunked streams rebuilt (nested zstd and Huffman, chunks of 4096)
    rng = np.random.default_rng(23)
    pipes = [P.Pipeline((), Raw(), ((Chunked(4096, Zstd(3)),),)), P.Pipeline((), Raw(), ((Chunked(4096, Huffman()),),))]
    old = [("z", "uint8", (np.arange(9000) % 7).astype(np.uint8)), ("h", "uint8", rng.integers(0, 4, 5000).astype(np.uint8))]
    new = [(n, d, (a + 1).astype(np.uint8)) for n, d, a in old]
    v1 = _write(old, pipelines=pipes)
    (tmp_path / "chunked.nnar").write_bytes(v1)
    (tmp_path / "chunked.nnarpatch").write_bytes(_diff(v1, _write(new, pipelines=pipes), tmp_path))
    pairs.append((tmp_path / "chunked.nnar", tmp_path / "chunked.nnarpatch"))
    for base, patch in pairs:
        r = run(exe, base, patch)
        assert r.returncode == 0 and r.stdout.startswith(b"ok "), (patch, r.stdout, r.stderr)


def test_patching_holds_a_few_records(builds, tmp_path):
    """native/tests/peak_memory.c with a base and a patch: the library's peak through the
    caller's allocator, for 8 and for 64 records of 1 MiB each moved by a fine-tune, stays a few
    records' worth (the base's record, its streams, the payload, the rebuilt record and its check,
    and the blocks each context keeps for reuse), not the archive."""
    cc = shutil.which("gcc") or shutil.which("cc") or "clang"
    exe = tmp_path / "peak_memory"
    done = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", f"-I{NATIVE / 'include'}",
                           str(NATIVE / "tests" / "peak_memory.c"), str(builds["release"].parent / "libnnar.a"),
                           "-lzstd", "-o", str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rng = np.random.default_rng(0)
    peaks = {}
    for n in (8, 64):
        old = {f"w{i}": (rng.normal(size=(256, 1024)) * 0.02).astype(np.float32) for i in range(n)}
        new = {k: (v + (rng.normal(size=v.shape) * 1e-4).astype(np.float32)) for k, v in old.items()}
        base, patch = tmp_path / f"a{n}.nnar", tmp_path / f"p{n}.nnarpatch"
        base.write_bytes(nnar.pack(old))
        patch.write_bytes(_diff(base.read_bytes(), nnar.pack(new), tmp_path))
        r = run(exe, base, patch)
        peak, live = map(int, r.stdout.split())
        assert r.returncode == 0 and live == 0
        peaks[n] = peak
    assert peaks[64] < 2 * peaks[8] and peaks[64] < 16 << 20, peaks


# -- the fuzzing corpora ---------------------------------------------------------------------------

SAN_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-g", "-fsanitize=address,undefined"]


@pytest.fixture(scope="session")
def no_crc_lib(tmp_path_factory) -> Path:
    """libnnar as the fuzzers ran it (NNAR_FUZZ_NO_CRC: any CRC accepted), ASan + UBSan."""
    out = tmp_path_factory.mktemp("no-crc")
    cc = shutil.which("clang") or shutil.which("gcc") or "cc"
    sources = sorted((NATIVE / "src").glob("*.c")) + sorted((NATIVE / "src" / "codecs").glob("*.c"))
    done = subprocess.run([cc, *SAN_FLAGS, "-O1", "-DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION", f"-I{NATIVE / 'include'}",
                           "-c", *map(str, sources)], capture_output=True, text=True, cwd=out)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(["ar", "rcs", "libnnar_no_crc.a", *sorted(p.name for p in out.glob("*.o"))],
                          capture_output=True, text=True, cwd=out)
    assert done.returncode == 0, done.stderr
    return out / "libnnar_no_crc.a"


@pytest.mark.parametrize("harness,corpus,least", [("fuzz_patch", "corpus_patch", 100), ("fuzz_open", "corpus", 100)])
def test_fuzz_corpora_replay_clean(builds, no_crc_lib, tmp_path, harness, corpus, least):
    """Each harness on every file of its corpus, replayed without libFuzzer under ASan and UBSan,
    on the library as built and on one built as the fuzzers ran (any CRC accepted, so the inputs
    reach descriptors, codecs and the patcher rather than stop at a checksum). fuzz_patch: a
    fixed base, the fuzzed bytes as the patch (native/fuzz/fuzz_patch.c)."""
    files = sorted((NATIVE / "fuzz" / corpus).glob("*"))
    assert len(files) >= least, f"native/fuzz/{corpus} is missing files"
    cc = shutil.which("clang") or shutil.which("gcc") or "cc"
    sources = [str(NATIVE / "fuzz" / f"{harness}.c"), str(NATIVE / "fuzz" / "replay.c")]
    for name, lib in (("checked", builds["sanitized"].parent / "libnnar.a"), ("no_crc", no_crc_lib)):
        exe = tmp_path / f"replay_{name}"
        done = subprocess.run([cc, *SAN_FLAGS, f"-I{NATIVE / 'include'}", f"-I{NATIVE / 'fuzz'}", *sources, str(lib),
                               "-lzstd", "-o", str(exe)], capture_output=True, text=True)
        assert done.returncode == 0, (name, done.stderr)
        r = run(exe, *files)
        assert r.returncode == 0, (name, r.stderr[-2000:])
