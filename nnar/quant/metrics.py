"""How far a decoded tensor is from the original: the numbers of the fidelity report."""

from __future__ import annotations

import math

import numpy as np

#: elements per step: float64 copies of a chunk stay in cache, so the sums cost ~one pass
CHUNK = 1 << 18


def _sums(original: np.ndarray, decoded: np.ndarray | None,
          signal: float | None = None) -> tuple[float, float, float, int]:
    """(Σx², Σ(x − y)², max |x − y|, how many y are 0) in float64, a chunk at a time; no
    ``decoded``: y = x; ``signal``: Σx² known already (as this computes it), not summed again."""
    x = original.reshape(-1)
    y = decoded.reshape(-1) if decoded is not None else None
    sig = err = worst = 0.0
    zeros = 0
    buf = np.empty(min(CHUNK, x.size))
    # np.square then a pairwise sum, not a BLAS dot: BLAS splits a long dot across its threads,
    # so its rounding (and the fidelity an archive records) would depend on the machine's
    # thread count, and a pack on a Dask worker would not be byte for byte a local one
    for a in range(0, x.size, CHUNK):
        xs = x[a:a + CHUNK]
        b = buf[:xs.size]
        if signal is None:
            sig += float(np.square(xs, out=b, dtype=np.float64).sum())
        if y is not None:
            ys = y[a:a + CHUNK]
            zeros += int(np.count_nonzero(ys == 0))  # several times faster than counting nonzero floats
            d = np.subtract(xs, ys, out=b, dtype=np.float64)
            worst = max(worst, float(d.max()), -float(d.min()))
            err += float(np.square(d, out=d).sum())
    return (sig if signal is None else signal), err, worst, zeros


def error_stats(original: np.ndarray, decoded: np.ndarray, signal: float | None = None) -> dict[str, float]:
    """SQNR in dB (signal power over error power; inf when exact), relative L2 error, the
    largest absolute error and the fraction of exact zeros after decoding. Sums in float64;
    ``signal``: Σx² of ``original`` when the caller has it from :func:`powers`."""
    sig, err, worst, zeros = _sums(original, decoded, signal)
    n = decoded.size
    if err == 0.0:
        sqnr = math.inf
    elif sig == 0.0:
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(sig / err)
    return {
        "sqnr_db": sqnr,
        "rel_l2": math.sqrt(err / sig) if sig else (0.0 if err == 0 else math.inf),
        "max_abs_error": worst,
        "sparsity": float(zeros) / n if n else 0.0,
    }


def powers(original: np.ndarray, decoded: np.ndarray | None = None) -> tuple[float, float]:
    """(Σx², Σ(x − y)²) in float64; without ``decoded`` the error power is 0."""
    sig, err, _, _ = _sums(original, decoded)
    return sig, err
