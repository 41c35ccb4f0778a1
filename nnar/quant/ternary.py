"""Ternary and binary codebooks: the few-level quantizers beside k-means.

Ternary follows Trained Ternary Quantization (Zhu et al. 2017) without the training: weights
with |w| <= t * max|w| become 0, the rest one of two scales, each the mean magnitude of its
side (the least-squares choice for a fixed assignment). Binary is sign × mean |w| (XNOR-Net's
scale). Both return sorted codebooks for ``nnar.codebook``; elements go to the nearest entry.
"""

from __future__ import annotations

import numpy as np

#: TTQ's threshold factor
TTQ_THRESHOLD = 0.05


def ternary(values: np.ndarray, k: int = 4, threshold: float = TTQ_THRESHOLD) -> np.ndarray:
    x = values.astype(np.float64)
    delta = threshold * float(np.abs(x).max()) if x.size else 0.0
    pos, neg = x[x > delta], x[x < -delta]
    wp = float(pos.mean()) if pos.size else 0.0
    wn = float(-neg.mean()) if neg.size else 0.0
    return np.unique(np.array([-wn, 0.0, wp], np.float32))


def binary(values: np.ndarray, k: int = 2) -> np.ndarray:
    x = values.astype(np.float64)
    scale = float(np.abs(x).mean()) if x.size else 0.0
    return np.unique(np.array([-scale, scale], np.float32))
