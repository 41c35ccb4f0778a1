"""Magnitude pruning (Han et al. 2015): zero the weights of smallest magnitude.

Pruning only chooses which values become zero; ``nnar.sparse`` then stores the survivors and
their positions. Ties are broken by position (the earlier of two equal magnitudes is pruned
first), so the survivors are exactly determined by the input.
"""

from __future__ import annotations

import numpy as np


def survivors_for_sparsity(x: np.ndarray, sparsity: float) -> np.ndarray:
    """Boolean mask keeping the ``n - round(sparsity * n)`` largest-magnitude elements (so
    exactly ``round(sparsity * n)`` are pruned)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity: expected a fraction in [0, 1], found {sparsity}")
    flat = np.abs(x.reshape(-1).astype(np.float64))
    n = flat.size
    keep = n - int(round(sparsity * n))
    mask = np.zeros(n, bool)
    if keep >= n:
        mask[:] = True
    elif keep > 0:
        # stable order by magnitude: the last `keep` are the survivors, earlier index first on ties
        order = np.argsort(flat, kind="stable")
        mask[order[n - keep:]] = True
    return mask.reshape(x.shape)


def survivors_for_threshold(x: np.ndarray, threshold: float) -> np.ndarray:
    """Keep the elements with |x| > ``threshold`` (compared exactly, not in x's dtype)."""
    return np.abs(x.astype(np.float64)) > threshold


def global_threshold(magnitudes: list[np.ndarray], sparsity: float) -> float:
    """The magnitude below which ``sparsity`` of all given elements fall (one threshold for
    the whole model, as in the paper's global pruning)."""
    allm = np.concatenate([np.abs(m.reshape(-1).astype(np.float64)) for m in magnitudes]) if magnitudes \
        else np.zeros(0)
    count = int(round(sparsity * allm.size))
    if count <= 0:
        return -1.0  # nothing to prune: every magnitude is above it
    k = min(allm.size, count) - 1
    return float(np.partition(allm, k)[k])


def apply(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.where(mask, x, np.zeros((), x.dtype))
    return out.astype(x.dtype, copy=False)
