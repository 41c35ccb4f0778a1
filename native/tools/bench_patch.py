"""Applying a patch: the C tool (nnar-native patch) against the Python package (nnar patch).

    python native/tools/bench_patch.py [--repeat 3] [--tool PATH]

The model is MiniLM-L6 (tools/realweights.py) or, without it, a synthetic fp32 model of about
the same size; v1 is it packed lossless, v2 the same after a fine-tune that moved every weight
a little (each float32 weight plus 1e-4 x N(0, 1) of its scale), so every record is rebuilt from
a delta. The patch is made once by Python (nnar.diff); each applier then rebuilds v2 from v1
and the patch into a new file: best of --repeat runs, wall time (Python in this process, the C
tool as a process), then the peak RSS of one more run of each as a process of its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import nnar  # noqa: E402


def model() -> tuple[str, dict[str, np.ndarray]]:
    try:
        import realweights as R
        return "MiniLM-L6", dict(R.minilm())
    except Exception as e:  # noqa: BLE001
        print(f"MiniLM unavailable ({e}); a synthetic fp32 model instead", file=sys.stderr)
        rng = np.random.default_rng(0)
        return "synthetic", {f"layer.{i}.weight": (rng.normal(size=(384, 1536)) * 0.02).astype(np.float32)
                             for i in range(16)}


def build() -> Path:
    out = Path(tempfile.mkdtemp()) / "build"
    subprocess.run(["cmake", "-S", str(ROOT / "native"), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"], check=True,
                   capture_output=True)
    subprocess.run(["cmake", "--build", str(out), "-j", "2"], check=True, capture_output=True)
    return out / "nnar-native"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tool", type=Path)
    args = ap.parse_args()
    tool = args.tool or build()
    name, tensors = model()
    rng = np.random.default_rng(1)
    tuned = {k: (v + (rng.normal(size=v.shape) * 1e-4 * (float(np.std(v)) or 1.0)).astype(v.dtype)).astype(v.dtype)
             if v.dtype == np.float32 else v for k, v in tensors.items()}
    work = Path(tempfile.mkdtemp())
    v1, v2, patch = work / "v1.nnar", work / "v2.nnar", work / "p.nnarpatch"
    nnar.pack(tensors, str(v1))
    nnar.pack(tuned, str(v2))
    t = time.perf_counter()
    nnar.diff(str(v1), str(v2), str(patch))
    made = time.perf_counter() - t
    with nnar.open(str(v2)) as a:
        want = a.content_digest()
    print(f"{name}: v1 {v1.stat().st_size / 1e6:.1f} MB, v2 {v2.stat().st_size / 1e6:.1f} MB, patch "
          f"{patch.stat().st_size / 1e6:.1f} MB (diff {made:.1f} s)")
    best = {"python": 1e9, "c": 1e9}
    for _ in range(args.repeat):
        out = work / "py.nnar"
        out.unlink(missing_ok=True)
        t = time.perf_counter()
        nnar.patch(str(v1), str(patch), str(out))
        best["python"] = min(best["python"], time.perf_counter() - t)
        out = work / "c.nnar"
        out.unlink(missing_ok=True)
        t = time.perf_counter()
        subprocess.run([str(tool), "patch", str(v1), str(patch), "-o", str(out)], check=True, capture_output=True)
        best["c"] = min(best["c"], time.perf_counter() - t)
        with nnar.open(str(out)) as a:
            assert a.content_digest() == want
    rss = {}   # peak RSS of one more run of each, as a process of its own
    for k, cmd in (("python", [sys.executable, "-c", "import sys, nnar; nnar.patch(*sys.argv[1:])"]),
                   ("c", [str(tool), "patch"])):
        out = work / "rss.nnar"
        out.unlink(missing_ok=True)
        args = [str(v1), str(patch), str(out)] if k == "python" else [str(v1), str(patch), "-o", str(out)]
        done = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd, *args], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        rss[k] = int(done.stderr.strip().splitlines()[-1]) / 1024
    size = v2.stat().st_size / 1e6
    for k, v in best.items():
        print(f"{k:7s} {v:6.2f} s  {size / v:6.1f} MB/s of result, peak RSS {rss[k]:.0f} MB")
    print(f"C / Python: {best['python'] / best['c']:.1f}x faster "
          f"(largest tensor {max(v.nbytes for v in tensors.values()) / 1e6:.1f} MB)")
    os.system(f"rm -rf '{work}'")


if __name__ == "__main__":
    main()
