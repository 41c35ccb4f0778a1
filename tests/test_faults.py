"""Faults while writing: a process killed at any moment, a disk that fills up.

``nnar pack`` and ``nnar unpack`` write to a temporary file beside the output and rename it
into place (nnar/fsutil.py), so whatever happens the output's name holds either what it held
before (nothing, or the old file) or the complete new file; never a partial one.

What a kill leaves behind: SIGKILL gives a process no chance to clean up, so the temporary of
a killed run stays in the output's directory, named ``.OUT.<random>.tmp`` (hidden, and never
mistaken for the output). A later successful run neither uses nor leaves such a file; removing
the stale ones is the user's (or a tmp cleaner's) business. A run that fails with an error
(disk full, a file-size limit, a bad input) or is stopped by SIGTERM or SIGINT removes its
temporary itself.
"""

from __future__ import annotations

import errno
import io
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nnar
from nnar import fsutil
from nnar.cli import main

import helpers as H

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OPENBLAS_NUM_THREADS": "1"}


def _model(seed: int = 0) -> dict[str, np.ndarray]:
    """About 10 MB in 47 tensors: large compressible floats, groups of small ones, integers."""
    rng = np.random.default_rng(seed)
    d = {f"l{i}.w": (rng.normal(size=(256, 1024)) * 0.02).astype(np.float32) for i in range(6)}
    d.update({f"l{i}.b": rng.normal(size=300).astype(np.float32) for i in range(40)})
    d["ids"] = rng.integers(0, 50, size=500_000).astype(np.int64)
    return d


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    model, old = _model(0), {"old": np.arange(1000, dtype=np.int32)}
    np.savez(d / "model.npz", **model)
    nnar.pack(model, d / "model.nnar")
    nnar.pack(old, d / "old.nnar")
    np.savez(d / "old.npz", **old)
    return d, model


def temporaries(directory: Path, out_name: str) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.startswith(f".{out_name}.")}


def strays_are_named_as_documented(directory: Path, out_name: str, keep: set[str]) -> None:
    pattern = re.compile(rf"\.{re.escape(out_name)}\.[^/]+\.tmp")
    for p in directory.iterdir():
        if p.name not in keep:
            assert pattern.fullmatch(p.name), f"unexpected file {p.name!r} left in the output directory"


def same_model(found: dict, model: dict) -> bool:
    return list(found) == list(model) and all(H.canonical_bytes(found[k]) == H.canonical_bytes(v)
                                              for k, v in model.items())


def run_and_kill(args: list[str], cwd: Path, tmp_glob: str, rng: random.Random, mode: str) -> int | None:
    """Start ``python -m nnar ARGS``; SIGKILL it at a random moment: anywhere from its start
    (``mode == "any"``), or once its temporary output exists (``"writing"``), so that the kill
    lands in the middle of the write. Returns its exit status if it finished first."""
    proc = subprocess.Popen([sys.executable, "-m", "nnar", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        before = set(cwd.glob(tmp_glob))
        if mode == "writing":
            deadline = time.monotonic() + 30
            while proc.poll() is None and set(cwd.glob(tmp_glob)) == before and time.monotonic() < deadline:
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.4))
        else:
            time.sleep(rng.uniform(0, 1.2))
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait(30)
        return None if rc == -signal.SIGKILL else rc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.parametrize("seed", range(8))
def test_pack_killed_at_a_random_moment_leaves_the_old_output_or_the_new_one(tmp_path, model_files, seed):
    src_dir, model = model_files
    rng = random.Random(seed)
    shutil.copy(src_dir / "model.npz", tmp_path / "model.npz")
    had_old = seed % 2 == 0
    if had_old:
        shutil.copy(src_dir / "old.nnar", tmp_path / "out.nnar")
    old = (tmp_path / "out.nnar").read_bytes() if had_old else None
    args = ["pack", "model.npz", "-o", "out.nnar", "--level", "12"] + (["--force"] if had_old else [])
    rc = run_and_kill(args, tmp_path, ".out.nnar.*", rng, "writing" if seed % 4 < 2 else "any")
    out = tmp_path / "out.nnar"
    if rc is not None:  # it finished before the kill
        assert rc == 0
    if out.exists() and out.read_bytes() != old:
        assert same_model(nnar.unpack(out, verify=True), model)
        assert len(nnar.verify(out)) == len(model)
    elif not had_old:
        assert not out.exists() and rc is None
    strays_are_named_as_documented(tmp_path, "out.nnar", {"model.npz", "out.nnar"})

    # a later run succeeds and leaves no temporary of its own
    stale = temporaries(tmp_path, "out.nnar")
    assert main(["pack", str(tmp_path / "model.npz"), "-o", str(out), "--force", "-q"]) == 0
    assert temporaries(tmp_path, "out.nnar") == stale
    assert same_model(nnar.unpack(out), model)


@pytest.mark.parametrize("seed", range(6))
def test_unpack_killed_at_a_random_moment_leaves_the_old_output_or_the_new_one(tmp_path, model_files, seed):
    src_dir, model = model_files
    rng = random.Random(100 + seed)
    shutil.copy(src_dir / "model.nnar", tmp_path / "model.nnar")
    had_old = seed % 2 == 0
    if had_old:
        shutil.copy(src_dir / "old.npz", tmp_path / "out.npz")
    old = (tmp_path / "out.npz").read_bytes() if had_old else None
    args = ["unpack", "model.nnar", "-o", "out.npz", "-q"] + (["--force"] if had_old else [])
    rc = run_and_kill(args, tmp_path, ".out.npz.*", rng, "writing" if seed % 3 else "any")
    out = tmp_path / "out.npz"
    if rc is not None:
        assert rc == 0
    if out.exists() and out.read_bytes() != old:
        with np.load(out) as z:  # complete: every tensor there, bit for bit
            assert same_model({k: z[k] for k in z.files}, model)
    elif not had_old:
        assert not out.exists() and rc is None
    strays_are_named_as_documented(tmp_path, "out.npz", {"model.nnar", "out.npz"})
    stale = temporaries(tmp_path, "out.npz")
    assert main(["unpack", str(tmp_path / "model.nnar"), "-o", str(out), "--force", "-q"]) == 0
    assert temporaries(tmp_path, "out.npz") == stale


def test_the_kill_tests_do_land_in_the_middle_of_writing(tmp_path, model_files):
    """The harness above is not vacuous: a run killed once its temporary exists leaves that
    temporary, partial (never readable as a complete archive), and no output."""
    src_dir, _ = model_files
    shutil.copy(src_dir / "model.npz", tmp_path / "model.npz")
    for attempt in range(8):
        before = temporaries(tmp_path, "out.nnar")
        rc = run_and_kill(["pack", "model.npz", "-o", "out.nnar", "--level", "12"], tmp_path, ".out.nnar.*",
                          random.Random(attempt), "writing")
        if (tmp_path / "out.nnar").exists() and rc is None:
            # killed after the rename (the write took less than the random delay): the output is
            # complete, never partial
            assert len(nnar.verify(tmp_path / "out.nnar")) == 47
        new = temporaries(tmp_path, "out.nnar") - before
        if rc is None and new:
            (left,) = new
            assert re.fullmatch(r"\.out\.nnar\.[^/]+\.tmp", left)
            try:
                nnar.verify(tmp_path / left)
            except nnar.Truncated:
                return  # killed mid-write: a partial file, under its temporary name only
        (tmp_path / "out.nnar").unlink(missing_ok=True)
    pytest.skip("no kill landed in the middle of the write on this machine")


# -- disk full ----------------------------------------------------------------------------------


class FullDiskRaw(io.RawIOBase):
    """The raw file under nnar's buffered output, on a disk with ``room`` bytes left: writes
    succeed, then come up short, then fail with ENOSPC, as write(2) does on a full disk."""

    def __init__(self, real: io.FileIO, room: int):
        self.real, self.room, self.written = real, room, 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        n = min(memoryview(b).nbytes, self.room - self.written)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.real.write(memoryview(b)[:n])
        self.written += n
        return n

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        if not self.closed:
            self.real.close()
        super().close()


def _full_disk(monkeypatch, room: int | None):
    """nnar's temporary output gets ``room`` bytes of disk; ``None``: every write succeeds and
    ``fsync`` fails with ENOSPC (delayed allocation, NFS, quotas report it only there)."""
    if room is None:
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(fsutil.os, "fsync", fsync)
        return
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *a, **kw):
        assert mode == "wb"
        return io.BufferedWriter(FullDiskRaw(real_fdopen(fd, "wb", buffering=0), room))

    monkeypatch.setattr(fsutil.os, "fdopen", fdopen)
    if hasattr(os, "posix_fallocate"):  # the safetensors writer sizes its output first, then maps it
        real_fallocate = os.posix_fallocate

        def fallocate(fd, offset, length):
            if offset + length > room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fallocate(fd, offset, length)

        monkeypatch.setattr(os, "posix_fallocate", fallocate)


#: Regression (found by the tmpfs test below): the cleanup in nnar/fsutil.py closed the
#: temporary unguarded; BufferedWriter.close() flushed the bytes still buffered, the full disk
#: refused them again, and that OSError escaped the handler: the temporary stayed and the error
#: was a bare OSError. Every case below with bytes buffered at the failure hit it.
ROOM = [pytest.param(0, id="no-room"), pytest.param(100, id="100-bytes"), pytest.param(3 << 20, id="3MiB"),
        pytest.param(None, id="fsync")]


@pytest.mark.parametrize("room", ROOM)
@pytest.mark.parametrize("existing", [False, True])
def test_pack_on_a_full_disk_is_an_io_error_and_leaves_nothing(tmp_path, monkeypatch, model_files, room, existing):
    _, model = model_files
    out = tmp_path / "out.nnar"
    if existing:
        out.write_bytes(b"the old archive")
    _full_disk(monkeypatch, room)
    with pytest.raises(nnar.NnarIOError, match="No space left on device") as info:
        nnar.pack(model, out, force=existing)
    assert info.value.code == "io"
    assert os.listdir(tmp_path) == (["out.nnar"] if existing else [])  # the temporary is gone
    if existing:
        assert out.read_bytes() == b"the old archive"


@pytest.mark.parametrize("room", ROOM)
@pytest.mark.parametrize("fmt", ["npz", "safetensors", "pt"])
def test_unpack_on_a_full_disk_is_an_io_error_and_leaves_nothing(tmp_path, monkeypatch, model_files, room, fmt):
    """.pt too: torch.save wraps the disk's error in a RuntimeError of its own, still one io error."""
    if fmt == "pt":
        pytest.importorskip("torch")
    src_dir, _ = model_files
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(b"the old model")
    _full_disk(monkeypatch, room)
    with pytest.raises(nnar.NnarIOError, match="No space left on device"):
        nnar.unpack(src_dir / "model.nnar", out, force=True)
    assert os.listdir(tmp_path) == [out.name]
    assert out.read_bytes() == b"the old model"


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, model_files, capsys):
    src_dir, _ = model_files
    _full_disk(monkeypatch, 4096)
    assert main(["unpack", str(src_dir / "model.nnar"), "-o", str(tmp_path / "out.npz")]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"nnar: error\[io\]: [^\n]*No space left on device[^\n]*\n", err), err
    assert os.listdir(tmp_path) == []


def test_the_cli_reports_a_failed_fsync_in_one_line(tmp_path, monkeypatch, model_files, capsys):
    src_dir, _ = model_files
    _full_disk(monkeypatch, None)
    assert main(["pack", str(src_dir / "model.npz"), "-o", str(tmp_path / "out.nnar")]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"nnar: error\[io\]: [^\n]*No space left on device[^\n]*\n", err), err
    assert os.listdir(tmp_path) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs root and a system that allows mounts; skipped otherwise)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_real_full_disk(small_tmpfs, model_files, capsys):
    src_dir, model = model_files
    out = small_tmpfs / "out.nnar"
    out.write_bytes(b"old")
    with pytest.raises(nnar.NnarIOError, match="No space left on device"):
        nnar.pack(model, out, force=True)
    assert os.listdir(small_tmpfs) == ["out.nnar"] and out.read_bytes() == b"old"
    for name in ("m.npz", "m.safetensors"):  # safetensors: sized up front, then mapped
        assert main(["unpack", str(src_dir / "model.nnar"), "-o", str(small_tmpfs / name)]) == 1
        assert "error[io]" in capsys.readouterr().err
        assert os.listdir(small_tmpfs) == ["out.nnar"]
    # the space is given back: a small archive fits afterwards
    nnar.pack({"x": np.zeros(10, np.float32)}, small_tmpfs / "small.nnar")
    assert list(nnar.unpack(small_tmpfs / "small.nnar")) == ["x"]


# -- full disks through every writer, signals, long names ----------------------------------------

def _limited(nbytes: int):
    def limit():
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


@pytest.mark.parametrize("fmt", ["pt", "npz", "safetensors", "nnar"])
def test_a_file_size_limit_is_a_one_line_error_for_every_output_format(tmp_path, model_files, fmt):
    """``ulimit -f``: writes past the limit fail with EFBIG (Python ignores SIGXFSZ)."""
    if fmt == "pt":
        pytest.importorskip("torch")
    src_dir, _ = model_files
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(b"old")
    args = ["pack", str(src_dir / "model.npz")] if fmt == "nnar" else ["unpack", str(src_dir / "model.nnar")]
    done = subprocess.run([sys.executable, "-m", "nnar", *args, "-o", str(out), "--force"], env=ENV,
                          capture_output=True, text=True, timeout=120, preexec_fn=_limited(1 << 20))
    assert done.returncode == 1, done.stderr
    assert re.fullmatch(r"nnar: error\[io\]: [^\n]*File too large[^\n]*\n", done.stderr), done.stderr
    assert os.listdir(tmp_path) == [out.name] and out.read_bytes() == b"old"


def test_sigterm_removes_the_temporary_and_says_so(tmp_path, model_files):
    """SIGTERM while pack writes (its temporary exists): the temporary is removed, one line says so."""
    src_dir, _ = model_files
    proc = subprocess.Popen([sys.executable, "-m", "nnar", "pack", str(src_dir / "model.npz"), "-o", "out.nnar",
                             "--preset", "balanced"], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and not temporaries(tmp_path, "out.nnar") and time.monotonic() < deadline:
            time.sleep(0.001)
        assert temporaries(tmp_path, "out.nnar"), "the temporary output never appeared"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert rc == 128 + signal.SIGTERM, err
    assert err == "nnar: terminated (SIGTERM); no output was written\n"
    assert os.listdir(tmp_path) == []


def test_an_output_name_near_the_length_limit_is_written(tmp_path):
    out = tmp_path / ("m" * 245 + ".nnar")  # 250 bytes: the temporary could not repeat it whole
    nnar.pack({"w": np.arange(10, dtype=np.float32)}, out)
    assert nnar.open(out).read("w").tolist() == list(range(10))
    assert os.listdir(tmp_path) == [out.name]


def test_main_restores_the_sigterm_handler(model_files):
    before = signal.getsignal(signal.SIGTERM)
    src_dir, _ = model_files
    assert main(["ls", str(src_dir / "old.nnar")]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_while_the_command_line_loads_is_one_line():
    """An interrupt while numpy and the codecs load (before the command line's own handler is
    in place) ends like any other: one line, exit 130, no traceback."""
    code = (
        "import sys, importlib.abc\n"
        "class Stop(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'numpy':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Stop())\n"
        "import nnar._entry\n"
        "sys.exit(nnar._entry.main())\n")
    done = subprocess.run([sys.executable, "-c", code, "ls", "x.nnar"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (130, "nnar: interrupted; no output was written\n")
    assert "numpy" not in subprocess.run([sys.executable, "-c", "import sys, nnar; print(sorted(sys.modules))"],
                                         capture_output=True, text=True, check=True).stdout
