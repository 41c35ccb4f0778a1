"""Patches across zstd versions (issue 14 item 2): a patch made where zstandard is the current one
(zstd 1.5.7) is applied on a "device" whose Python has zstandard 0.21 (zstd 1.5.5), along a chain
of three versions of a model, for lossless, int8 and k-means archives; and the other way round.

The device is a virtual environment that shares this environment's packages (nnar from this
checkout, numpy, msgpack, bitarray) and differs only in zstandard. What the device builds must
decode to the server's tensors exactly; its stored bytes may differ from the server's (a device
need not encode zstd as the server's library does), so tensors are compared, never files.

The model is built here: weight matrices whose output units come in blocks of very different
scale (as heads and channel groups train to) and with dead units, so that their streams change
statistics inside a zstd block, which is where zstd 1.5.7's block splitter makes it encode
differently from 1.5.5. test_the_zstd_versions_disagree_on_this_model checks that they do: without
that, every other test here would pass whatever the patch code did.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnar

REPO = Path(__file__).resolve().parents[1]
OLD_ZSTANDARD = "zstandard==0.21.0"
OLD_ZSTD_VERSION = (1, 5, 5)

KINDS = {
    "lossless": [],
    "int8": ["--preset", "int8"],
    "kmeans": ["--quant", "kmeans", "--bits", "4"],
}

#: what each version changed from the one before (v1: everything is new)
CHANGED = {
    2: ("layer.weight", "layer.bias", "head.weight", "head.bias"),  # a fine-tune; the embedding frozen
    3: ("head.weight", "head.bias"),  # the last layer alone
}

pytestmark = pytest.mark.filterwarnings("ignore::nnar.lossy.LossyWarning")


def _env() -> dict[str, str]:
    """Both environments import nnar from this checkout, whatever is installed (an editable install
    may point at another copy), and run one thread each: the machine has two cores."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def run(python, *args, what: str) -> str:
    """Run ``python args...``; on failure, fail the test with the command and its stderr."""
    cmd = [str(python), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO)
    if p.returncode != 0:
        pytest.fail(f"{what} failed (exit status {p.returncode}):\n  {' '.join(cmd)}\n"
                    f"stderr:\n{p.stderr.strip()}\nstdout:\n{p.stdout.strip()[-2000:]}", pytrace=False)
    return p.stdout


# -- the device: a virtual environment with the older zstandard ----------------------------------


@pytest.fixture(scope="module")
def old_python(tmp_path_factory) -> Path:
    """The device's Python: this environment's packages, zstandard 0.21 (zstd 1.5.5). A pip that
    fails is a failure, not a skip: CI has the registry, and a skip would hide a broken set-up."""
    venv = tmp_path_factory.mktemp("old-zstd") / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", venv, what="creating the virtual environment")
    python = venv / "bin" / "python"
    if sys.prefix != sys.base_prefix:
        # this Python is itself a virtual environment: --system-site-packages reaches the base
        # interpreter's packages, not this one's, so add this one's after the venv's own (its
        # zstandard still comes first)
        purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                      what="finding the venv's site-packages").strip()
        ours = site.getsitepackages() + [site.getusersitepackages()]
        Path(purelib, "_nnar_outer_env.pth").write_text("".join(p + "\n" for p in ours))
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", OLD_ZSTANDARD,
        what=f"pip install {OLD_ZSTANDARD} into the device's environment (needs the package registry)")
    found = run(python, "-c", "import zstandard; print(tuple(zstandard.ZSTD_VERSION))", what="importing zstandard")
    assert found.strip() == str(OLD_ZSTD_VERSION), f"the device's zstd is {found.strip()}, expected {OLD_ZSTD_VERSION}"
    found = run(python, "-c", "import nnar, numpy, msgpack, bitarray; print(nnar.__file__)", what="importing nnar")
    assert Path(found.strip()).resolve() == REPO / "nnar" / "__init__.py", \
        f"the device imports nnar from {found.strip()}, not from this checkout ({REPO})"
    here = run(sys.executable, "-c", "import zstandard; print(tuple(zstandard.ZSTD_VERSION))", what="zstandard here")
    assert here.strip() != str(OLD_ZSTD_VERSION), "this environment's zstd is the device's: nothing is tested"
    return python


# -- the model: three versions ---------------------------------------------------------------------


def _matrix(rng, rows: int, cols: int, scale: float) -> np.ndarray:
    """Output units in blocks of 256 rows whose scales differ by orders of magnitude, a fifth of
    the units dead (all zero), a third heavy-tailed (an outlier sets their int8 range)."""
    block = np.exp(rng.normal(0.0, 2.0, size=-(-rows // 256)))
    a = rng.standard_normal((rows, cols))
    heavy = rng.random(rows) < 0.3
    a[heavy] = rng.standard_t(3, size=(int(heavy.sum()), cols))
    a[rng.random(rows) < 0.2] = 0.0
    return (a * np.repeat(block, 256)[:rows, None] * scale).astype(np.float32)


def _fine_tune(rng, model: dict, names) -> dict:
    """Every weight of the named tensors moved by a relative 1e-3; a dead unit stays dead."""
    out = dict(model)
    for n in names:
        out[n] = (model[n] * (1 + 1e-3 * rng.standard_normal(model[n].shape))).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict[int, Path]:
    """v1, v2, v3 as .npz files: three 2048x256 float32 matrices and two biases (6 MB)."""
    rng = np.random.default_rng(3)  # a seed where every changed matrix tells the versions apart
    bias = lambda: (rng.standard_normal(2048) * 0.01).astype(np.float32)  # noqa: E731
    v1 = {"embed.weight": _matrix(rng, 2048, 256, 0.05),
          "layer.weight": _matrix(rng, 2048, 256, 0.03), "layer.bias": bias(),
          "head.weight": _matrix(rng, 2048, 256, 0.04), "head.bias": bias()}
    v2 = _fine_tune(rng, v1, CHANGED[2])
    v3 = _fine_tune(rng, v2, CHANGED[3])
    d = tmp_path_factory.mktemp("versions")
    paths = {}
    for k, m in ((1, v1), (2, v2), (3, v3)):
        paths[k] = d / f"v{k}.npz"
        np.savez(paths[k], **m)
    for k in (2, 3):  # the model is what the docstrings say
        a, b = np.load(paths[k - 1]), np.load(paths[k])
        assert {n for n in a.files if not np.array_equal(a[n], b[n])} == set(CHANGED[k])
    return paths


def _pack_all(python, versions: dict[int, Path], kind: str, d: Path) -> dict[int, Path]:
    out = {}
    for k, src in versions.items():
        out[k] = d / f"{kind}-v{k}.nnar"
        run(python, "-m", "nnar", "pack", src, "-o", out[k], "-q", *KINDS[kind], what=f"packing {kind} v{k}")
    return out


@pytest.fixture(scope="module", params=list(KINDS))
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(kind, versions, tmp_path_factory) -> dict[int, Path]:
    """v1..v3 packed with the current zstandard."""
    return _pack_all(sys.executable, versions, kind, tmp_path_factory.mktemp(f"server-{kind}"))


@pytest.fixture(scope="module")
def old_server(kind, versions, old_python, tmp_path_factory) -> dict[int, Path]:
    """v1..v3 packed with zstandard 0.21: a server that has the older library."""
    return _pack_all(old_python, versions, kind, tmp_path_factory.mktemp(f"old-server-{kind}"))


# -- checks ----------------------------------------------------------------------------------------


def tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of an archive, decoded here (current zstandard), each digest checked."""
    with nnar.open(path) as a:
        return {name: np.array(t) for name, t in a.items(verify=True)}


def assert_same_tensors(found: Path, expected: Path) -> None:
    """``found`` decodes to exactly ``expected``'s tensors: names and order, dtypes, shapes, bits."""
    got, want = tensors(found), tensors(expected)
    assert list(got) == list(want), f"{found.name}: tensor names"
    for name in want:
        g, w = got[name], want[name]
        assert (g.dtype, g.shape) == (w.dtype, w.shape), f"{found.name}: {name}"
        if g.tobytes() != w.tobytes():
            bits = lambda a: a.view(f"u{a.dtype.itemsize}")  # noqa: E731  (NaN-safe, -0.0 distinct)
            n = int(np.count_nonzero(bits(g) != bits(w)))
            pytest.fail(f"{found.name}: {name}: {n} of {w.size} values differ from {expected.name}'s", pytrace=False)


def stored_bytes(python, path: Path) -> dict[str, int]:
    listing = json.loads(run(python, "-m", "nnar", "ls", path, "--json", what=f"nnar ls {path.name}"))
    return {t["name"]: t["stored_bytes"] for t in listing["tensors"]}


def chain(maker, applier, archives: dict[int, Path], d: Path) -> dict[int, Path]:
    """Patches v1->v2 and v2->v3 made by ``maker`` from its own archives; ``applier`` applies the
    first to v1, then the second to what it built. Returns the device's v2 and v3."""
    device = {1: archives[1]}
    for k in (2, 3):
        patch = d / f"v{k - 1}-v{k}.nnarpatch"
        run(maker, "-m", "nnar", "diff", archives[k - 1], archives[k], "-o", patch, "-q",
            what=f"nnar diff v{k - 1} v{k} (maker {maker})")
        device[k] = d / f"device-v{k}.nnar"
        run(applier, "-m", "nnar", "patch", device[k - 1], patch, "-o", device[k], "-q",
            what=f"nnar patch device-v{k - 1} v{k - 1}-v{k}.nnarpatch (applier {applier})")
    return device


# -- tests -----------------------------------------------------------------------------------------


def test_the_zstd_versions_disagree_on_this_model(kind, server, old_server, old_python):
    """The point of the model: at each step, every weight matrix that changed is stored differently
    by the two zstd versions, so a patch that needs the applier to encode as its maker did cannot
    pass the tests below. (Sizes are compared: a different size is surely different bytes.)"""
    for k in (2, 3):
        new, old = stored_bytes(sys.executable, server[k]), stored_bytes(old_python, old_server[k])
        assert list(new) == list(old)
        matrices = [n for n in CHANGED[k] if n.endswith(".weight")]
        same = {n: new[n] for n in matrices if new[n] == old[n]}
        assert not same, (f"{kind} v{k}: zstd {OLD_ZSTD_VERSION} and this environment's store {same} in the same "
                          f"number of bytes: the model no longer tells the zstd versions apart")


def test_patch_from_current_zstd_applies_with_old_zstd(kind, server, versions, old_python, tmp_path):
    """The update path: the server (current zstandard) makes the patches from its own archives; the
    device (zstandard 0.21) applies them one after the other to what it holds."""
    device = chain(sys.executable, old_python, server, tmp_path)
    assert_same_tensors(device[2], server[2])
    assert_same_tensors(device[3], server[3])
    if kind == "lossless":  # then v3 is the source model itself, bit for bit
        src, got = np.load(versions[3]), tensors(device[3])
        assert sorted(got) == sorted(src.files)
        for name in src.files:
            assert (got[name].dtype, got[name].tobytes()) == (src[name].dtype, src[name].tobytes()), name
    run(old_python, "-m", "nnar", "verify", device[3], what="nnar verify device-v3 on the device")


def test_patch_from_old_zstd_applies_with_current_zstd(kind, old_server, old_python, tmp_path):
    """The other way round: a server with zstandard 0.21, a device with the current one."""
    device = chain(old_python, sys.executable, old_server, tmp_path)
    assert_same_tensors(device[2], old_server[2])
    assert_same_tensors(device[3], old_server[3])
    run(sys.executable, "-m", "nnar", "verify", device[3], what="nnar verify device-v3")
