"""How far a decoded tensor is from the original: the numbers of the fidelity report."""

from __future__ import annotations

import math

import numpy as np


def error_stats(original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """SQNR in dB (signal power over error power; inf when exact), relative L2 error, the
    largest absolute error and the fraction of exact zeros after decoding."""
    x = original.reshape(-1).astype(np.float64)
    y = decoded.reshape(-1).astype(np.float64)
    err = float(np.dot(x - y, x - y)) if x.size else 0.0
    sig = float(np.dot(x, x)) if x.size else 0.0
    if err == 0.0:
        sqnr = math.inf
    elif sig == 0.0:
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(sig / err)
    return {
        "sqnr_db": sqnr,
        "rel_l2": math.sqrt(err / sig) if sig else (0.0 if err == 0 else math.inf),
        "max_abs_error": float(np.abs(x - y).max()) if x.size else 0.0,
        "sparsity": float(np.count_nonzero(y == 0) / y.size) if y.size else 0.0,
    }
