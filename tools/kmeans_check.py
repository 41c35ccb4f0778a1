"""Measure the weight-sharing quantizer (nnar.quant.kmeans): MSE against the exact optimum, and
speed.

    python tools/kmeans_check.py           # about a minute
    python tools/kmeans_check.py --quick   # fewer distributions, 4M only
    python tools/kmeans_check.py --large   # and 4M values against an exact DP on fine bins

Quality: for each distribution, 20k values; the exact optimum for every k by Wu's (1991) DP
with the divide-and-conquer speed-up (one run gives all k); ``fit`` on the same values twice:
as they are (up to ``EXACT_MAX`` values are binned by distinct value) and with the float-bit
histogram forced (the path every large tensor takes). Ratio = fit MSE / optimal MSE.

Speed: ``fit`` + ``assign`` on 4M and 16M float32 normal values, best of 3 runs, for both
inits. Everything here is single-threaded numpy, so it is one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnar.quant import kmeans  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_kmeans import weighted_optimal_sse, weights  # noqa: E402

KS = (2, 4, 16, 256)


def optimal_sse_all(x: np.ndarray, kmax: int) -> dict[int, float]:
    """Exact 1-D k-means sum of squares of ``x`` for the k this script reports."""
    v, w = np.unique(np.asarray(x, np.float64), return_counts=True)
    return weighted_optimal_sse_all(v, w.astype(np.float64), kmax)


def weighted_optimal_sse_all(v: np.ndarray, w: np.ndarray, kmax: int) -> dict[int, float]:
    """The exact optimum by the test suite's reference DP (one implementation, checked there
    against brute force)."""
    return {k: weighted_optimal_sse(v, w, k) for k in KS if k <= kmax}


def quality(kinds: list[str], n: int) -> None:
    print(f"MSE / exact optimum, {n} values (distinct-value bins | float-bit histogram forced)")
    print(f"{'':12s}" + "".join(f"{'k=' + str(k):>22s}" for k in KS))
    saved = kmeans.EXACT_MAX
    for kind in kinds:
        x = weights(kind, n, seed=2026)
        t0 = time.perf_counter()
        opt = optimal_sse_all(x, max(KS))
        cells = []
        for k in KS:
            ratios = []
            for exact_max in (saved, 0):
                kmeans.EXACT_MAX = exact_max
                ratios.append(kmeans.mse(x, kmeans.fit(x, k)) * x.size / opt[k])
            kmeans.EXACT_MAX = saved
            cells.append(f"{ratios[0]:.5f} | {ratios[1]:.5f}")
        print(f"{kind:12s}" + "".join(f"{c:>22s}" for c in cells) + f"   (exact DP {time.perf_counter() - t0:.0f} s)",
              flush=True)


def quality_large(kinds: list[str], n: int) -> None:
    """fit on n values against the exact optimum over partitions that never split a bin of
    2**-13 relative width (the float32 pattern's top 22 bits). That optimum, plus the spread
    inside the bins, bounds the true optimum from above and is within hundredths of a percent
    of it, so a ratio can come out a hair under 1."""
    print(f"\nMSE / optimum on 13-mantissa-bit bins, {n / 1e6:.0f}M values")
    print(f"{'':12s}" + "".join(f"{'k=' + str(k):>10s}" for k in KS))
    for kind in kinds:
        x = weights(kind, n, seed=2026)
        keys = (x.view(np.uint32) >> np.uint32(10)).astype(np.intp)
        cnt = np.bincount(keys)
        s1 = np.bincount(keys, weights=x)
        s2 = np.bincount(keys, weights=x.astype(np.float64) ** 2)
        nz = np.flatnonzero(cnt)
        cnt, s1, s2 = cnt[nz].astype(np.float64), s1[nz], s2[nz]
        order = np.argsort(s1 / cnt, kind="stable")  # bins are disjoint intervals: sort by mean
        within = float((s2 - s1 * s1 / cnt).sum())
        t0 = time.perf_counter()
        opt = weighted_optimal_sse_all((s1 / cnt)[order], cnt[order], max(KS))
        cells = [kmeans.mse(x, kmeans.fit(x, k)) * n / (opt[k] + within) for k in KS]
        print(f"{kind:12s}" + "".join(f"{c:10.5f}" for c in cells) + f"   ({nz.size} bins, exact DP {time.perf_counter() - t0:.0f} s)",
              flush=True)


def speed(sizes: list[int], repeat: int) -> None:
    print(f"\nfit + assign, float32 normal values, best of {repeat} (ms, M values/s)")
    rng = np.random.default_rng(0)
    for n in sizes:
        x = (rng.standard_normal(n) * 0.02).astype(np.float32)
        for init in ("optimal", "linear"):
            for k in (16, 256):
                best = {"fit": np.inf, "assign": np.inf, "both": np.inf}
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    cb = kmeans.fit(x, k, init=init)
                    t1 = time.perf_counter()
                    kmeans.assign(x, cb)
                    t2 = time.perf_counter()
                    for key, t in (("fit", t1 - t0), ("assign", t2 - t1), ("both", t2 - t0)):
                        best[key] = min(best[key], t)
                print(f"n={n / 1e6:4.0f}M {init:7s} k={k:3d}: fit {best['fit'] * 1e3:6.1f}  assign {best['assign'] * 1e3:5.1f}"
                      f"  total {best['both'] * 1e3:6.1f} ms  {n / best['both'] / 1e6:5.0f} M/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="three distributions, 4M values only")
    ap.add_argument("--n", type=int, default=20_000, help="values per distribution for the quality check")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--large", action="store_true", help="also 4M values against an exact DP on fine bins (~2 min)")
    args = ap.parse_args(argv)
    kinds = ["normal", "laplace", "student-t3", "student-t2", "bimodal", "sparse"]
    quality(kinds[::2] if args.quick else kinds, args.n)
    if args.large:
        quality_large(kinds, 4_000_000)
    speed([4_000_000] if args.quick else [4_000_000, 16_000_000], args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
