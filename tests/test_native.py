"""libnnar, the C reader in native/ (issue 18), against the spec and against the Python package.

One session builds the library and its tool twice with CMake into a temporary directory: a
release build (-O2, warnings as errors, the system's ``cc``) and an AddressSanitizer +
UndefinedBehaviorSanitizer build (clang when installed, so both compilers must stay warning-free),
which runs the frozen vectors and the mutated archives. A machine without cmake, a C compiler
or libzstd fails these tests, loudly: they are never skipped (tools/test.sh installs them).

- every valid vector of spec/vectors/manifest.json decodes bit for bit, at random and in order,
  with the manifest's dtypes, metadata, structure, files and content digest;
- every invalid vector is rejected with the manifest's code, in order (``error``) and at random
  (``error_random_access``);
- archives that the Python package writes (hypothesis: lossless and lossy configs, explicit
  pipelines of every codec) decode identically in C and Python, and mutated archives (flipped
  bytes, truncations) give the same error code in both, in order and at random;
- every allocation failure is reported as out-of-memory and frees everything (a failing
  allocator, native/tests/alloc_failures.c);
- the libFuzzer corpus in native/fuzz/corpus replays without a sanitizer finding.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnar
import nnar.config
from nnar import pipeline as P
from nnar.codecs.affine import Affine
from nnar.codecs.byteplanes import BytePlanes
from nnar.codecs.cast import Cast
from nnar.codecs.chunked import Chunked
from nnar.codecs.codebook import Codebook
from nnar.codecs.huffman import Huffman
from nnar.codecs.raw import Raw
from nnar.codecs.sparse import Sparse
from nnar.codecs.zstd import Zstd

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "native"
VECTORS = ROOT / "spec" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
SAN_ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:exitcode=99",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=98"}


# -- builds ----------------------------------------------------------------------------------------


def _toolchain_or_fail() -> None:
    missing = [t for t in ("cmake",) if shutil.which(t) is None]
    if shutil.which("cc") is None and shutil.which("gcc") is None and shutil.which("clang") is None:
        missing.append("a C compiler (cc, gcc or clang)")
    if missing:
        pytest.fail(f"the native reader needs {', '.join(missing)} and libzstd-dev: run tools/test.sh, which "
                    "installs them (apt-get install cmake gcc libzstd-dev)", pytrace=False)


def _configure_and_build(src: Path, build: Path, compiler: str | None, *options: str) -> subprocess.Popen:
    env = dict(os.environ)
    if compiler:
        env["CC"] = compiler
    cmd = (f"cmake -S '{src}' -B '{build}' -DCMAKE_BUILD_TYPE=Release -DNNAR_WERROR=ON {' '.join(options)} "
           f"&& cmake --build '{build}' -j 2")
    return subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


#: the builds of this session, shared with the modules that import the fixture (test_native_patch)
_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def builds(tmp_path_factory) -> dict[str, Path]:
    """Both builds, made in parallel once per session: {"release": tool, "sanitized": tool}."""
    if _BUILT:
        return _BUILT
    _toolchain_or_fail()
    root = tmp_path_factory.mktemp("native-build")
    clang = shutil.which("clang")
    jobs = {
        "release": _configure_and_build(NATIVE, root / "release", shutil.which("gcc") or None),
        "sanitized": _configure_and_build(NATIVE, root / "sanitized", clang, "-DNNAR_SANITIZE=ON"),
    }
    out = {}
    for name, job in jobs.items():
        log = job.communicate()[0].decode(errors="replace")
        if job.returncode != 0:
            pytest.fail(f"native {name} build failed (warnings are errors; libzstd-dev installed?):\n{log[-4000:]}",
                        pytrace=False)
        assert "warning:" not in log, log
        out[name] = root / name / "nnar-native"
    _BUILT.update(out)
    return out


@pytest.fixture(scope="session")
def tool(builds) -> Path:
    return builds["release"]


@pytest.fixture(scope="session")
def san(builds) -> Path:
    return builds["sanitized"]


def run(exe: Path, *args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([str(exe), *map(str, args)], input=stdin, capture_output=True, env=SAN_ENV, timeout=120)
    err = r.stderr.decode(errors="replace")
    assert r.returncode not in (98, 99) and "Sanitizer" not in err and "runtime error" not in err, err
    return r


def code_of(r: subprocess.CompletedProcess) -> str | None:
    """None for success, else the error code of the one stderr line (exit status 1)."""
    if r.returncode == 0:
        return None
    line = r.stderr.decode(errors="replace").splitlines()[0]
    assert r.returncode == 1 and line.startswith("nnar-native: "), line
    return line.split(":")[1].strip()


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.itemsize in (1, 2, 4, 8) and a.dtype != bool else a


def unpacked(directory: Path) -> dict[str, np.ndarray]:
    return {urllib.parse.unquote(p.name[:-4]): np.load(p) for p in directory.glob("*.npy")}


def test_builds_with_both_compilers_and_no_warnings(builds):
    for exe in builds.values():
        assert exe.exists()
        r = run(exe, "--help")
        assert r.returncode == 0 and b"verify" in r.stdout


def test_readme_example_compiles_and_runs(builds, tmp_path):
    """The README's C example, as written: warning-free against the built library."""
    import re
    example = re.search(r"```c\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (tmp_path / "example.c").write_text(example)
    lib = builds["release"].parent / "libnnar.a"
    cc = shutil.which("gcc") or shutil.which("cc") or "clang"
    done = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", f"-I{NATIVE / 'include'}",
                           str(tmp_path / "example.c"), str(lib), "-lzstd", "-o", str(tmp_path / "example")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    r = subprocess.run([str(tmp_path / "example"), str(VECTORS / "valid" / "dtypes-raw.nnar"), "bfloat16"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "bfloat16: bfloat16, 1 dims, 12 bytes (widened to float32)" in r.stdout, r


def test_usage_errors_exit_2(tool):
    assert subprocess.run([str(tool), "frobnicate"], capture_output=True).returncode == 2
    assert subprocess.run([str(tool)], capture_output=True).returncode == 2


# -- the frozen vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MANIFEST["valid"]))
def test_valid_vector(san, tmp_path, name):
    entry = MANIFEST["valid"][name]
    path = VECTORS / "valid" / f"{name}.nnar"
    expected = dict(np.load(VECTORS / "valid" / f"{name}.npz"))
    for mode in ((), ("--stream",)):
        r = run(san, "verify", path, *mode)
        assert r.returncode == 0, r.stderr
        if "content" in entry:
            assert r.stdout.decode().split()[-1] == entry["content"]
    listing = json.loads(run(san, "ls", path, "--json").stdout)
    assert [t["name"] for t in listing["tensors"]] == list(entry["dtypes"])
    assert {t["name"]: t["dtype"] for t in listing["tensors"]} == entry["dtypes"]
    assert listing["metadata"] == entry["metadata"]
    assert [f["path"] for f in listing["files"]] == list(entry.get("files", {}))
    for mode in ((), ("--stream",)):
        out = tmp_path / ("stream" if mode else "random")
        out.mkdir()
        assert run(san, "unpack", path, out, *mode).returncode == 0
        got = unpacked(out)
        assert set(got) == set(expected)
        for tname, want in expected.items():
            assert got[tname].shape == want.shape and got[tname].dtype.itemsize == want.dtype.itemsize, tname
            np.testing.assert_array_equal(_bits(got[tname]), _bits(want))
        if "structure" in entry:
            assert (out / "%MODL.bin").read_bytes() == (VECTORS / "valid" / f"{name}.structure").read_bytes()
        files = {urllib.parse.unquote(p.name): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in (out / "%FILE").glob("*")} if (out / "%FILE").exists() else {}
        assert files == entry.get("files", {})


@pytest.mark.parametrize("name", sorted(MANIFEST["invalid"]))
def test_invalid_vector(san, name):
    entry = MANIFEST["invalid"][name]
    path = VECTORS / "invalid" / f"{name}.nnar"
    assert code_of(run(san, "verify", path, "--stream")) == entry["error"]
    assert code_of(run(san, "verify", path)) == entry.get("error_random_access", entry["error"])
    assert code_of(run(san, "verify", path, "--map")) == entry.get("error_random_access", entry["error"])


def test_stream_from_a_pipe(tool):
    """In order from stdin: a pipe gives no size, so nothing is sized from the file."""
    data = (VECTORS / "valid" / "dtypes-raw.nnar").read_bytes()
    assert run(tool, "verify", "-", "--stream", stdin=data).returncode == 0
    assert code_of(run(tool, "verify", "-", "--stream", stdin=data[:-5])) == "truncated"


# -- against the Python package ----------------------------------------------------------------------

CONFIGS = [None, "fp16", "bf16", "int8", {"quant": "kmeans", "bits": 4}, "tiny", {"quant": "ternary"},
           {"quant": "binary"}, {"quant": "uniform", "bits": 4, "granularity": "block", "block": 32},
           {"prune": 0.7}, {"quant": "kmeans", "bits": 3, "prune": 0.9}]
DTYPES = ["float32", "float16", "bfloat16", "float64", "int8", "uint8", "int32", "int64", "uint16", "bool"]


def _array(rng: np.random.Generator, dtype: str, shape: tuple[int, ...], special: bool) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "bfloat16":
        return (rng.normal(size=shape).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True).astype(dtype)
    a = (rng.normal(size=shape) * 0.05).astype(dtype)
    if special and a.size > 3:
        flat = a.reshape(-1)
        flat[:3] = [np.nan, -0.0, np.inf]
    return a


@st.composite
def models(draw):
    """A few tensors: small ones (grouped), weight-sized ones (lossy configs apply), an alias."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from(DTYPES))
        big = draw(st.booleans())
        shape = (draw(st.integers(16, 48)), draw(st.integers(32, 80))) if big else \
            tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        out.append((f"t{i}.{'weight' if big else 'bias'}", dtype, _array(rng, dtype, shape, draw(st.booleans()))))
    return out


def _write(tensors, config=None, alias=False, pipelines=None, structure=None) -> bytes:
    buf = io.BytesIO()
    cfg = nnar.config.from_mapping(config)
    with nnar.ArchiveWriter(buf, metadata={"k": "v ü"}, config=cfg, structure=structure) as w:
        for i, (name, dtype, array) in enumerate(tensors):
            kw = {"dtype": dtype} if dtype == "bfloat16" else {}
            if pipelines is not None:
                kw["pipeline"] = pipelines[i]
            w.write(name, array, aliases=(f"{name}.tied",) if alias and i == 0 else (), **kw)
    return buf.getvalue()


def _python_arrays(data: bytes) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in nnar.unpack(data).items()}


def _assert_same_decode(tool: Path, tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "a.nnar"
    path.write_bytes(data)
    want = _python_arrays(data)
    for mode in ((), ("--stream",)):
        out = tmp_path / ("s" if mode else "r")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        r = run(tool, "unpack", path, out, *mode)
        assert r.returncode == 0, r.stderr
        got = unpacked(out)
        assert set(got) == set(want)
        for k, v in want.items():
            assert got[k].shape == v.shape and got[k].dtype.itemsize == v.dtype.itemsize, k
            np.testing.assert_array_equal(_bits(got[k]), _bits(v), err_msg=k)
    r = run(tool, "verify", path)
    assert r.returncode == 0, r.stderr
    with nnar.open(data) as a:
        assert r.stdout.decode().split()[-1] == a.content_digest().hex()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tensors=models(), config=st.sampled_from(CONFIGS), alias=st.booleans())
def test_python_archives_decode_the_same(tool, tmp_path, tensors, config, alias):
    _assert_same_decode(tool, tmp_path, _write(tensors, config, alias))


def _pipelines():
    """Explicit pipelines, one codec path each, so every codec and position layout is exercised
    (the planner alone seldom picks Huffman or narrow gaps)."""
    huff, zstd = ((Huffman(),),), ((Zstd(3),),)
    return st.sampled_from([
        P.Pipeline((), Raw(), huff),
        P.Pipeline((), BytePlanes(), huff),
        P.Pipeline((), BytePlanes(), ((Zstd(1), Huffman()),)),
        *[P.Pipeline((), Sparse("gaps", Raw(), gap_bits=g), huff) for g in (1, 2, 3, 5, 8)],
        P.Pipeline((), Sparse("bitmask", BytePlanes()), zstd),
        P.Pipeline((), Sparse("gaps", Codebook(8), gap_bits=4), huff),
        P.Pipeline((), Codebook(8), huff),
        P.Pipeline((Cast("float64"),), BytePlanes(), zstd),
        P.Pipeline((), Raw(), ((Chunked(4096, Huffman()),),)),
        P.Pipeline((), BytePlanes(), ((Chunked(4096, Zstd(3)),),)),
        P.Pipeline((), Raw(), ((Chunked(4096, Zstd(1)), Huffman()),)),
    ])


@st.composite
def explicit(draw):
    """float32 tensors with few distinct values (codebooks take them exactly) and many zeros."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    out, pipes = [], []
    for i in range(draw(st.integers(1, 3))):
        shape = tuple(draw(st.lists(st.integers(0, 40), min_size=1, max_size=2)))
        levels = rng.normal(size=draw(st.integers(1, 200))).astype(np.float32)
        a = rng.choice(levels, size=shape) * (rng.random(shape) < draw(st.floats(0.0, 1.0)))
        out.append((f"x{i}", "float32", a.astype(np.float32)))
        pipes.append(draw(_pipelines()))
    return out, pipes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=explicit())
def test_explicit_pipelines_decode_the_same(tool, tmp_path, case):
    tensors, pipes = case
    try:
        data = _write(tensors, pipelines=pipes)
    except nnar.NnarError:  # a codebook of 8 bits given more than 256 distinct values, say
        return
    _assert_same_decode(tool, tmp_path, data)


def _write_lossy(tensors, pipelines) -> bytes:
    """Lossy explicit pipelines through write_encoded, with the digest of what decodes
    (ArchiveWriter.write(pipeline=...) records the input's digest, which a lossy pipeline
    does not give back)."""
    from nnar.codecs.abc import TensorSpec
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        for (name, dtype, array), pipe in zip(tensors, pipelines):
            spec = TensorSpec(dtype, array.shape)
            enc = P.encode(np.ascontiguousarray(array), spec, pipe)
            decoded = P.decode_encoded(enc, nnar.DEFAULT_LIMITS, name)
            w.write_encoded(name, enc, hashlib.sha256(np.ascontiguousarray(decoded).tobytes()).digest())
    return buf.getvalue()


def test_float8_narrowing_casts_and_affine_decode_the_same(tool, tmp_path):
    rng = np.random.default_rng(5)
    tensors = [(f"c{i}", "float32", (rng.normal(size=(17, 9)) * 3).astype(np.float32)) for i in range(6)]
    tensors[0][2].reshape(-1)[:4] = [np.nan, -0.0, 1e-30, -np.inf]
    pipes = [P.Pipeline((Cast(d),), Raw(), ((),)) for d in ("float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")]
    pipes[0] = P.Pipeline((Cast("float16"),), BytePlanes(), ((Huffman(),),))
    pipes += [P.Pipeline((), Affine(3, 7), ((Huffman(),),)), P.Pipeline((), Affine(8, 1000), ((),))]
    _assert_same_decode(tool, tmp_path, _write_lossy(tensors[1:] + tensors[:1], pipes[1:] + pipes[:1]))
    # float64 narrowed to float16 and float32 (rounded once, from the float64 value)
    wide = [("d0", "float64", rng.normal(size=300) * 100), ("d1", "float64", rng.normal(size=(3, 5)))]
    _assert_same_decode(tool, tmp_path, _write_lossy(wide, [P.Pipeline((Cast("float16"),), Raw(), ((),)),
                                                            P.Pipeline((Cast("float32"),), Raw(), ((Zstd(3),),))]))
    # float8 tensors themselves (bit patterns), every byte value
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        for d in ("float8_e4m3fn", "float8_e5m2"):
            w.write(d, np.arange(256, dtype=np.uint8).reshape(16, 16), dtype=d,
                    pipeline=P.Pipeline((), BytePlanes(), ((Zstd(3),),)))
    _assert_same_decode(tool, tmp_path, buf.getvalue())


# -- mutated archives: the same error code in C and Python ---------------------------------------------


@pytest.fixture(scope="session")
def bases() -> list[bytes]:
    rng = np.random.default_rng(11)
    model = [("emb.weight", "float32", (rng.normal(size=(40, 64)) * 0.05).astype(np.float32)),
             ("emb.bias", "float32", rng.normal(size=16).astype(np.float32)),
             ("ids", "int64", np.arange(-20, 20, dtype=np.int64)),
             ("half", "float16", rng.normal(size=(8, 8)).astype(np.float16))]
    frozen = [(VECTORS / "valid" / f"{v}.nnar").read_bytes() for v in ("folder", "compressed-descriptors", "huffman")]
    return [_write(model), _write(model, "tiny", alias=True), _write(model, "int8", structure=("onnx", b"graph" * 40)),
            _write(model, {"quant": "kmeans", "bits": 4}), _write(model, "fp16", alias=True), *frozen]


def _python_code(data: bytes, random: bool) -> str | None:
    try:
        if random:
            with nnar.open(data) as a:
                a.verify()
        else:
            nnar.verify(data)
    except nnar.NnarError as e:
        return e.code
    return None


@st.composite
def mutations(draw, n: int):
    which = draw(st.integers(0, n - 1))
    kind = draw(st.sampled_from(["flip", "flips", "truncate", "byte"]))
    return which, kind, draw(st.integers(0, 2**31)), draw(st.integers(1, 8))


def mutate(data: bytes, kind: str, where: int, count: int) -> bytes:
    """``data`` with one mutation of :func:`mutations`: a bit flipped, ``count`` bytes inverted
    977 apart, cut at ``where``, or a byte changed."""
    data = bytearray(data)
    pos = where % len(data)
    if kind == "flip":
        data[pos] ^= 1 << (where % 8)
    elif kind == "flips":
        for k in range(count):
            data[(pos + 977 * k) % len(data)] ^= 0xFF
    elif kind == "truncate":
        data = data[:pos]
    else:
        data[pos] = (data[pos] + count) % 256
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(m=mutations(8))
def test_mutated_archives_give_the_same_code(san, bases, tmp_path, m):
    which, kind, where, count = m
    data = mutate(bases[which], kind, where, count)
    path = tmp_path / "m.nnar"
    path.write_bytes(data)
    assert code_of(run(san, "verify", path, "--stream")) == _python_code(data, random=False)
    assert code_of(run(san, "verify", path)) == _python_code(data, random=True)
    assert code_of(run(san, "verify", path, "--map")) == _python_code(data, random=True)


# -- nnar.chunked (format 1.5): Python's chunked streams read in C, and hostile tables -----------------


def _chunked_archive() -> bytes:
    """What nnar.pack writes since 1.5 for large tensors: every stream of 4 MiB or more under a
    one-stage chain in chunks of 1 MiB (nnar.chunked): the planes of 2^22 float32 (the exponent
    plane under chunked zstd), int32 under chunked zstd, random bytes stored raw; a small tensor."""
    rng = np.random.default_rng(15)
    return nnar.pack({"w": (rng.normal(size=1 << 22) * 0.05).astype(np.float32),
                      "ids": rng.integers(-50, 50, size=(5 << 20) // 4 + 3).astype(np.int32),
                      "noise": rng.integers(0, 256, size=(4 << 20) + 4099, dtype=np.uint8),
                      "bias": np.linspace(-1, 1, 77, dtype=np.float32)})


def _chunked_codecs(data: bytes) -> list[dict]:
    """The nested stages of the archive's chunked segments."""
    with nnar.open(data) as a:
        return [g["codecs"][0]["config"]["chunk"] for i in a.infos() for g in i.segments
                if g["codecs"] and g["codecs"][0]["codec"] == "nnar.chunked"]


def test_python_chunked_archives_read_in_c(builds, tmp_path):
    """Python's default packing chunks the large streams; both builds read them bit for bit at
    random and in order, and verify them to Python's content digest."""
    data = _chunked_archive()
    assert len(_chunked_codecs(data)) >= 2 and nnar.open(data).format_version == (1, 5)
    for exe in builds.values():
        _assert_same_decode(exe, tmp_path, data)


#: tensors small enough to attack quickly, with chunked streams of several 4096-byte chunks
#: (the last one shorter): nested zstd, nested Huffman, byte planes of three chunks each
_CHUNKED_SMALL = [
    (np.random.default_rng(1).normal(size=2500).astype(np.float32), P.Pipeline((), Raw(), ((Chunked(4096, Zstd(3)),),))),
    ((np.random.default_rng(2).integers(0, 16, 10000) * 3).astype(np.uint8),
     P.Pipeline((), Raw(), ((Chunked(4096, Huffman()),),))),
    ((np.random.default_rng(3).normal(size=9000) * 0.05).astype(np.float32),
     P.Pipeline((), BytePlanes(), ((Chunked(4096, Zstd(1)),),))),
]


def _with_stream(array: np.ndarray, pipe: P.Pipeline, edit, segment: int = 0, spec=None) -> bytes:
    """An archive of one tensor whose ``segment``'s stored bytes are ``edit(bytes)`` (CRCs
    right, the digest of ``array``): a chunked stream no correct nnar writes."""
    import dataclasses
    from nnar.codecs.abc import TensorSpec
    enc = P.encode(np.ascontiguousarray(array), TensorSpec(str(array.dtype), array.shape), pipe)
    segs = list(enc.segments)
    segs[segment] = dataclasses.replace(segs[segment], data=edit(bytes(segs[segment].data)))
    if spec is not None:   # another tensor's shape, its stream's raw_length with it
        segs[segment] = dataclasses.replace(segs[segment], raw_length=spec.nbytes)
        enc = dataclasses.replace(enc, spec=spec)
    enc = dataclasses.replace(enc, segments=segs)
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        w.write_encoded("x", enc, hashlib.sha256(np.ascontiguousarray(array).tobytes()).digest())
    return buf.getvalue()


def _assert_same_code(exe: Path, tmp_path: Path, data: bytes) -> str | None:
    path = tmp_path / "c.nnar"
    path.write_bytes(data)
    want = _python_code(data, random=False)
    assert code_of(run(exe, "verify", path, "--stream")) == want
    assert code_of(run(exe, "verify", path)) == _python_code(data, random=True)
    assert code_of(run(exe, "verify", path, "--map")) == _python_code(data, random=True)
    return want


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(m=mutations(len(_CHUNKED_SMALL)))
def test_mutated_chunked_streams_give_the_same_code(san, tmp_path, m):
    """A chunked stream mutated (half the time in its table of length and sizes) behind right
    CRCs: the same code as Python, in order, at random and mapped."""
    which, kind, where, count = m
    array, pipe = _CHUNKED_SMALL[which]

    def edit(stream: bytes) -> bytes:
        table = 8 + 8 * -(-int.from_bytes(stream[:8], "little") // 4096)
        if where & 1:
            return mutate(stream[:table], kind, where >> 1, count) + stream[table:]
        return mutate(stream, kind, where >> 1, count)
    segment = count % (4 if isinstance(pipe.array_bytes, BytePlanes) else 1)
    _assert_same_code(san, tmp_path, _with_stream(array, pipe, edit, segment))


def _table_edit(fn):
    """An edit of a chunked stream (chunks of 4096) through ``fn(length, sizes, chunks)``."""
    def edit(stream: bytes) -> bytes:
        n = int.from_bytes(stream[:8], "little")
        k = -(-n // 4096)
        sizes = list(np.frombuffer(stream[8:8 + 8 * k], "<u8").tolist())
        n, sizes, chunks = fn(n, sizes, stream[8 + 8 * k:])
        return n.to_bytes(8, "little") + np.array(sizes, "<u8").tobytes() + chunks
    return edit


HOSTILE_TABLES = {
    "length-2^64-1": lambda n, s, c: ((1 << 64) - 1, s, c),
    "size-2^64-1": lambda n, s, c: (n, [(1 << 64) - 1, *s[1:]], c),
    "sizes-wrap": lambda n, s, c: (n, [(1 << 64) - 1, s[0] + s[1] + 1, *s[2:]], c),
    "sizes-wrap-last": lambda n, s, c: (n, [*s[:-1], s[-1] + (1 << 63), ], c),
    "sizes-swapped": lambda n, s, c: (n, s[::-1], c),
    "length-one-less": lambda n, s, c: (n - 1, s, c),
    "length-a-chunk-less": lambda n, s, c: (n - 4096, s[1:], c[s[0]:]),
    "length-0": lambda n, s, c: (0, [], c),
    "length-0-empty": lambda n, s, c: (0, [], b""),
    "no-table": lambda n, s, c: (n, [], b""),
    "chunk-empty": lambda n, s, c: (n, [0, s[0] + s[1], *s[2:]], c),
}


@pytest.mark.parametrize("which", range(len(_CHUNKED_SMALL)))
@pytest.mark.parametrize("name", sorted(HOSTILE_TABLES))
def test_hostile_chunked_tables_give_the_same_code(san, tmp_path, name, which):
    array, pipe = _CHUNKED_SMALL[which]
    got = _assert_same_code(san, tmp_path, _with_stream(array, pipe, _table_edit(HOSTILE_TABLES[name])))
    assert got == "codec-data", got


@pytest.mark.parametrize("nested", [Zstd(3), Huffman()], ids=["zstd", "huffman"])
def test_chunked_bound_bounds_the_step_before_it(san, tmp_path, nested):
    """A chain of nnar.chunked then Huffman: the Huffman step may give at most chunked.md's
    encoded bound of the segment's raw_length (FORMAT.md §6.1 step 4): one byte more is the
    Huffman count's codec-data, naming the bound; exactly the bound passes that step (and fails
    in the chunked table). Python agrees on the code both times."""
    chunked = Chunked(4096, nested)
    bound = chunked.encoded_bound(10000)
    if isinstance(nested, Zstd):
        assert bound == 10258   # chunked.md's example
    pipe = P.Pipeline((), Raw(), ((chunked, Huffman()),))
    array = (np.arange(10000) % 5).astype(np.uint8)
    for length, over in ((bound + 1, True), (bound, False)):
        data = _with_stream(array, pipe, lambda _: bytes(Huffman().encode(bytes(length))[0]))
        assert _assert_same_code(san, tmp_path, data) == "codec-data"
        r = run(san, "verify", tmp_path / "c.nnar")
        assert (f"count {length}, expected at most {bound}" in r.stderr.decode()) == over, r.stderr


def test_a_million_chunks_cost_their_table(builds, tmp_path):
    """A table of 2^20 empty chunks (an 8 MiB table for a 4 GiB uint8 tensor): every check
    passes up to the first chunk, which is codec-data in both readers, in order and at random.
    Through a counting allocator (native/tests/peak_memory.c, in order), the library holds the
    tensor's output and the stream's (4 GiB each, allocated and never touched) and the body read
    in growing blocks: a few times the table, nothing per chunk."""
    from nnar.codecs.abc import TensorSpec
    k = 1 << 20
    data = _with_stream(np.zeros(4096, np.uint8), _CHUNKED_SMALL[0][1],
                        lambda _: (k * 4096).to_bytes(8, "little") + bytes(8 * k), spec=TensorSpec("uint8", (k * 4096,)))
    path = tmp_path / "million.nnar"
    path.write_bytes(data)
    assert _python_code(data, random=True) == _python_code(data, random=False) == "codec-data"
    for exe in builds.values():
        for mode in ((), ("--stream",)):
            assert code_of(run(exe, "verify", path, *mode)) == "codec-data"
    cc = shutil.which("gcc") or shutil.which("cc") or "clang"
    exe = tmp_path / "peak_memory"
    done = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", f"-I{NATIVE / 'include'}",
                           str(NATIVE / "tests" / "peak_memory.c"), str(builds["release"].parent / "libnnar.a"),
                           "-lzstd", "-o", str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    r = run(exe, path)
    assert r.returncode == 1 and r.stdout.startswith(b"codec-data: "), r.stdout
    peak = int(r.stdout.split()[-1])
    assert peak - 2 * k * 4096 < 4 * 8 * k, peak


def test_every_allocation_failure_is_a_status_and_frees_all(builds, tmp_path):
    """native/tests/alloc_failures.c: the caller's allocator fails at the k-th call for every k,
    at random and in order; each run is out-of-memory (or ok once nothing fails), nothing leaks."""
    cc = shutil.which("clang") or shutil.which("gcc") or "cc"
    exe = tmp_path / "alloc_failures"
    done = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-g",
                           "-fsanitize=address,undefined", f"-I{NATIVE / 'include'}",
                           str(NATIVE / "tests" / "alloc_failures.c"), str(builds["sanitized"].parent / "libnnar.a"),
                           "-lzstd", "-o", str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name in ("groups", "sparse", "folder", "aliases", "structure-onnx", "compressed-descriptors", "huffman", "chunked"):
        r = run(exe, VECTORS / "valid" / f"{name}.nnar")
        assert r.returncode == 0 and r.stdout.startswith(b"ok "), (name, r.stdout, r.stderr)


def test_reading_in_order_holds_one_record(builds, tmp_path):
    """native/tests/peak_memory.c counts the bytes the library holds through the caller's
    allocator: reading 32 records of 1 MiB in order peaks as reading 8 does, a few records' worth."""
    cc = shutil.which("gcc") or shutil.which("cc") or "clang"
    exe = tmp_path / "peak_memory"
    done = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", f"-I{NATIVE / 'include'}",
                           str(NATIVE / "tests" / "peak_memory.c"), str(builds["release"].parent / "libnnar.a"),
                           "-lzstd", "-o", str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rng = np.random.default_rng(0)
    peaks = {}
    for n in (8, 32):
        path = tmp_path / f"m{n}.nnar"
        path.write_bytes(nnar.pack({f"w{i}": (rng.normal(size=(256, 1024)) * 0.02).astype(np.float32)
                                    for i in range(n)}))
        r = run(exe, path)
        peak, live = map(int, r.stdout.split())
        assert r.returncode == 0 and live == 0
        peaks[n] = peak
    assert peaks[32] < 1.15 * peaks[8] and peaks[32] < 5 << 20, peaks


# -- the fuzzing corpus ------------------------------------------------------------------------------


def test_fuzz_corpus_replays_clean(builds, tmp_path):
    """native/fuzz/fuzz_open.c run on every corpus file (native/fuzz/replay.c, no libFuzzer
    needed) under ASan and UBSan: a status for each, never a finding."""
    corpus = sorted((NATIVE / "fuzz" / "corpus").glob("*"))
    assert len(corpus) > 50, "native/fuzz/corpus is missing files"
    cc = shutil.which("clang") or shutil.which("gcc") or "cc"
    exe = tmp_path / "replay"
    done = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-g",
                           "-fsanitize=address,undefined", f"-I{NATIVE / 'include'}", str(NATIVE / "fuzz" / "fuzz_open.c"),
                           str(NATIVE / "fuzz" / "replay.c"), str(builds["sanitized"].parent / "libnnar.a"), "-lzstd",
                           "-o", str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    r = run(exe, *corpus)
    assert r.returncode == 0 and r.stdout.decode().strip() == f"replayed {len(corpus)} inputs", r.stderr


# -- the CPU-specific paths against the portable code ----------------------------------------------------


def test_fast_paths_equal_the_portable_code(builds, tmp_path):
    """native/tests/fast_paths.c: the carry-less-multiply CRC-32 (alone and fused with a copy),
    SHA-NI, the AVX2 byte-plane interleave and the 4-bit codebook gather give the portable
    code's results at every length and alignment tried (gcc on the release library, clang with
    ASan and UBSan on the sanitized one); with NNAR_PORTABLE set, the CPU's features are none."""
    for name, cc, flags in (("release", shutil.which("gcc") or "cc", ["-O2"]),
                            ("sanitized", shutil.which("clang") or shutil.which("gcc") or "cc",
                             ["-g", "-fsanitize=address,undefined"])):
        exe = tmp_path / f"fast_paths_{name}"
        done = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", *flags,
                               f"-I{NATIVE / 'include'}", str(NATIVE / "tests" / "fast_paths.c"),
                               str(builds[name].parent / "libnnar.a"), "-lzstd", "-o", str(exe)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        r = run(exe)
        assert r.returncode == 0 and r.stdout.startswith(b"ok "), (r.stdout, r.stderr)
        r = subprocess.run([str(exe)], capture_output=True, env={**SAN_ENV, "NNAR_PORTABLE": "1"})
        assert r.returncode == 0 and r.stdout.strip() == b"ok pclmul=0 sha=0 avx2=0", (r.stdout, r.stderr)


def _large_archives() -> dict[str, bytes]:
    """Archives whose records are large enough for every fast path: byte planes of float32,
    float16, bfloat16, int32 (lossless), 4-bit k-means, raw tensors, odd element counts, and
    Python's default packing of large tensors (chunked streams, format 1.5)."""
    rng = np.random.default_rng(18)
    f32 = {f"w{i}": (rng.normal(size=(97 + i, 331)) * 0.05).astype(np.float32) for i in range(3)}
    f32["ints"] = rng.integers(-5000, 5000, size=(70001,)).astype(np.int32)
    f16 = {"h": (rng.normal(size=(129, 257)) * 0.05).astype(np.float16)}
    bf = {"b": (rng.normal(size=(65, 1001)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)}
    raw = io.BytesIO()
    with nnar.ArchiveWriter(raw, group_small=False) as w:
        for k, v in f32.items():
            w.write(k, v, pipeline=P.Pipeline((), Raw(), ((),)))
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        for k, v in {**f32, **f16}.items():
            w.write(k, v)
        for k, v in bf.items():
            w.write(k, v, dtype="bfloat16")
    return {"lossless": buf.getvalue(), "kmeans": nnar.pack(f32, config={"quant": "kmeans", "bits": 4}),
            "raw": raw.getvalue(), "chunked": _chunked_archive()}


def test_portable_path_decodes_the_same(builds, tmp_path):
    """NNAR_PORTABLE=1 makes every handle take the portable code: every valid vector and the
    large archives above unpack to the same bytes with it and without it, at random (the file
    read, or mapped: nnar_open_mapped) and in order, and verify gives the same content digest
    (release and sanitized builds)."""
    paths = [VECTORS / "valid" / f"{name}.nnar" for name in sorted(MANIFEST["valid"])]
    for name, data in _large_archives().items():
        paths.append(tmp_path / f"{name}.nnar")
        paths[-1].write_bytes(data)
    for exe in builds.values():
        for path in paths:
            outs = {}
            for portable in ("0", "1"):
                env = {**SAN_ENV, "NNAR_PORTABLE": portable}
                for mode in ((), ("--stream",), ("--map",)):
                    out = tmp_path / f"{path.stem}-{portable}-{'-'.join(mode)}"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    r = subprocess.run([str(exe), "unpack", str(path), str(out), *mode], capture_output=True, env=env)
                    assert r.returncode == 0, (path, r.stderr)
                    outs[portable, mode] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
                    r = subprocess.run([str(exe), "verify", str(path), *mode], capture_output=True, env=env)
                    assert r.returncode == 0, (path, r.stderr)
                    outs[portable, mode, "digest"] = r.stdout.split()[-1]
            assert all(v == outs["0", ()] for k, v in outs.items() if len(k) == 2), path
            assert len({v for k, v in outs.items() if len(k) == 3}) == 1, path
