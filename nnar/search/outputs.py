"""Output metrics: how far a candidate model's outputs are from the original's, as one number.

Pure numpy; the runner that produces the outputs lives elsewhere (``onnx_runner``).

**Outputs** are given as a list of batches, each batch a list of arrays, one per model output
(``[[y0, y1], [y0, y1], ...]``), samples along axis 0 of every array. A single batch may be
given bare, as a list of arrays (``[y0, y1]``). Batches need not agree in their non-sample
dimensions (OCR crops of different widths give sequences of different lengths), which is why
they are not concatenated; every metric is per sample, so the score does not depend on how the
samples are split into batches.

**Scores** are errors: 0 for identical outputs, larger is worse, ``inf`` when the candidate is
broken (a NaN the reference does not have, a changed integer or boolean output, a different
shape, dtype or number of outputs). A :class:`Bound` turns the user's ``METRIC=VALUE`` into a
threshold on the score, so a search only ever checks ``score <= bound.threshold``.

The ``argmax`` score is continuous (a search can rank settings by it) yet exactly equivalent to
the promise "at most ``floor(allowed · N)`` of the N argmaxes change": see :func:`argmax_consumption`.
The ``ctc`` score is its analogue for the text a CTC model's outputs decode to (module ``ctc``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from ..errors import InvalidInput

METRICS = ("cos", "rel-l2", "max-abs", "argmax", "ctc")

#: the metrics whose VALUE is a fraction of things allowed to change, and whose threshold is just below 1
COUNTED = ("argmax", "ctc")

#: the largest float below 1: the argmax threshold, so that ``score <= threshold`` ⇔ ``score < 1``
BELOW_ONE = math.nextafter(1.0, 0.0)

_EXAMPLES = "cos=0.99, rel-l2=0.01, max-abs=0.05, argmax=0, ctc=0"

Outputs = Sequence  # list of per-batch lists of arrays, or one batch's list of arrays


@dataclasses.dataclass(frozen=True)
class Bound:
    """A promise about the outputs: ``metric`` (one of :data:`METRICS`), ``value`` as the user
    wrote it, and ``threshold``, the largest :func:`score` that keeps the promise."""

    metric: str
    value: float
    threshold: float

    @property
    def allowed(self) -> float:
        """The fraction of argmaxes (``argmax``) or texts (``ctc``) allowed to change (0 for the
        other metrics)."""
        return self.value if self.metric in COUNTED else 0.0

    def score(self, reference: Outputs, candidate: Outputs) -> float:
        return score(self.metric, reference, candidate, self.allowed)

    def holds(self, score: float) -> bool:
        return score <= self.threshold

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}"


def parse_bound(text: str) -> Bound:
    """``METRIC=VALUE`` → :class:`Bound`.

    - ``cos=V``: every per-sample, per-output cosine ≥ V, V in (-1, 1]; score ``1 - min cos``,
      threshold ``1 - V``.
    - ``rel-l2=V``, ``max-abs=V``: the metric ≤ V, V ≥ 0; score and threshold are the metric.
    - ``argmax=V``: at most a fraction V of the (sample, position) argmaxes change, V in [0, 1)
      (0: every one identical); threshold :data:`BELOW_ONE`.
    - ``ctc=V``: at most a fraction V of the sequences' greedy CTC texts change, V in [0, 1);
      threshold :data:`BELOW_ONE`.
    """
    metric, sep, raw = str(text).partition("=")
    metric = metric.strip().lower()
    try:
        value = float(raw) if sep else math.nan
    except ValueError:
        value = math.nan
    if metric not in METRICS or not math.isfinite(value):
        raise InvalidInput(f"output error bound: expected METRIC=VALUE with METRIC one of {', '.join(METRICS)} "
                           f"(e.g. {_EXAMPLES}), found {text!r}")
    ranges = {"cos": (-1 < value <= 1, "in (-1, 1]: the lowest cosine allowed"),
              "rel-l2": (value >= 0, ">= 0"), "max-abs": (value >= 0, ">= 0"),
              "argmax": (0 <= value < 1, "in [0, 1): the fraction of argmaxes allowed to change"),
              "ctc": (0 <= value < 1, "in [0, 1): the fraction of sequences whose text may change")}
    ok, expected = ranges[metric]
    if not ok:
        raise InvalidInput(f"output error bound {text!r}: expected a {metric} value {expected}, found {value:g}")
    threshold = {"cos": 1.0 - value, "argmax": BELOW_ONE, "ctc": BELOW_ONE}.get(metric, value)
    return Bound(metric, value, threshold)


# -- scores ---------------------------------------------------------------------------------------

def score(metric: str, reference: Outputs, candidate: Outputs, allowed: float = 0.0) -> float:
    """The candidate's output error against the reference under ``metric`` (module docstring for
    the layout of the outputs). ``allowed`` is used by ``argmax`` and ``ctc`` only: the
    fraction of argmaxes, or of texts, that may change.

    - ``cos``: 1 − the lowest cosine between flattened reference and candidate, over every
      sample of every output (both zero: cosine 1; one zero: 0).
    - ``rel-l2``: the largest ‖y − ŷ‖ / ‖y‖ over every sample of every output (‖y‖ = 0: 0 if ŷ
      is zero too, else inf).
    - ``max-abs``: the largest |y − ŷ|.
    - ``argmax``: the (k+1)-th largest :func:`argmax_consumption` over all N positions of all
      outputs, k = :func:`allowed_changes` (floor(allowed · N)); < 1 exactly when at most k
      argmaxes changed.
    - ``ctc``: per sequence (every float output of shape (samples, ..., time, classes)), the
      value of :func:`ctc.sequence_scores`; the (k+1)-th largest over all S sequences, k =
      floor(allowed · S); < 1 exactly when at most k decoded texts changed.

    Values equal in both (infinities, NaNs at the same places) count as equal; any other
    non-finite value makes the score inf (for ``argmax``: a NaN or infinity in the candidate
    where the reference is finite). Outputs that are not floats must be identical (else inf).
    """
    if metric not in METRICS:
        raise InvalidInput(f"output metric: expected one of {', '.join(METRICS)}, found {metric!r}")
    pairs = _pairs(reference, candidate)
    if pairs is None:
        return math.inf
    if metric in COUNTED:
        return _counted_score(pairs, allowed, metric)
    worst = 0.0
    for y, c in pairs:
        if not _comparable(y, c):
            return math.inf
        if y.dtype.kind != "f":
            continue  # identical (checked by _comparable)
        worst = max(worst, {"cos": _cos_error, "rel-l2": _rel_l2, "max-abs": _max_abs}[metric](y, c))
        if worst == math.inf:
            break
    return worst


def changed(reference: Outputs, candidate: Outputs) -> tuple[int, int]:
    """(positions whose argmax along the last axis changed, positions in all), over every output;
    an output whose shape changed counts as changed everywhere."""
    pairs = _pairs(reference, candidate, lenient=True)
    count = total = 0
    for y, c in pairs:
        ry = _rows(y)
        total += ry.shape[0]
        if y.shape != c.shape:
            count += ry.shape[0]
        elif ry.shape[0] and ry.shape[1]:
            count += int(np.count_nonzero(np.argmax(ry, axis=1) != np.argmax(_rows(c), axis=1)))
    return count, total


def argmax_consumption(y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per row (last axis) of reference ``y`` and candidate ``c`` (same shape, 2-D): how much of
    the reference's margin the candidate used up.

    With r = ``np.argmax(y)`` (the first of tied maxima), m_ref = y[r] − max_{j≠r} y[j] and
    m_cand = c[r] − max_{j≠r} c[j], the consumption is (m_ref − m_cand) / m_ref, clipped below
    at 0. It is < 1 exactly when ``np.argmax(c) == r``: rounding, and the ties numpy breaks
    toward the first index (m_cand = 0 keeps r only if every tie is after r), are settled by
    clamping to just below 1 when the argmax is kept and to at least 1 when it moved. m_ref = 0
    (a tie in the reference): 0 if the argmax is kept, else inf; likewise when the margins are
    not finite. A row with a NaN in the reference: 0 if the candidate has NaN at the same places
    and the same argmax, else inf. Rows of one element never change: 0.
    """
    n, width = y.shape
    if width <= 1 or n == 0:
        return np.zeros(n)
    # whole rows are read in their own dtype (the outputs can be large); only the few values per
    # row that the margins need go to float64, where differences of float32/float16 are exact
    r = np.argmax(y, axis=1)
    kept = np.argmax(c, axis=1) == r
    rows = np.arange(n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # infinities: settled below
        m_ref = y[rows, r].astype(np.float64) - _max_others(y, r)
        m_cand = c[rows, r].astype(np.float64) - _max_others(c, r)
        used = np.maximum((m_ref - m_cand) / m_ref, 0.0)
    odd = ~np.isfinite(used) | (m_ref == 0)  # a tied reference, infinities: only kept/moved counts
    used[odd] = 0.0
    used = np.where(kept, np.minimum(used, BELOW_ONE), np.maximum(used, 1.0))
    used[odd & ~kept] = math.inf
    nan_rows = np.isnan(y).any(axis=1)
    if nan_rows.any():
        same = (np.isnan(y[nan_rows]) == np.isnan(c[nan_rows])).all(axis=1) & kept[nan_rows]
        used[nan_rows] = np.where(same, 0.0, math.inf)
    return used


def allowed_changes(allowed: float, n: int) -> int:
    """k = floor(allowed · n), with a relative slack of 1e-12: the floats of 0.29 · 100 make
    28.999..., and the user meant 29 (the slack is far above float error, far below any
    fraction a user means). At most n − 1: a fraction below 1 never allows every change."""
    return max(0, min(math.floor(float(allowed) * n * (1 + 1e-12)), n - 1))


def _max_others(a: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Per row, the largest element other than the one at index r (NaN-propagating, as max is),
    in float64."""
    masked = np.array(a, dtype=a.dtype if a.dtype.kind == "f" else np.float64)
    masked[np.arange(a.shape[0]), r] = -np.inf
    return masked.max(axis=1).astype(np.float64)


def _counted_score(pairs, allowed: float, metric: str) -> float:
    """The (k+1)-th largest of the per-item values (argmax: per position; ctc: per sequence)."""
    parts = []
    for y, c in pairs:
        if y.shape != c.shape or y.dtype != c.dtype:
            return math.inf
        if y.dtype.kind != "f":
            if not np.array_equal(y, c):
                return math.inf
            continue
        if not np.isfinite(c).all() and np.any(~np.isfinite(c) & np.isfinite(y)):  # broken: a NaN or
            return math.inf  # an infinity the reference lacks
        if metric == "ctc":
            from . import ctc  # imports this module: loaded on first use
            parts.append(ctc.sequence_scores(y, c))
        else:
            parts.append(argmax_consumption(_rows(y), _rows(c)))
    used = np.concatenate(parts) if parts else np.zeros(0)
    n = used.size
    if n == 0:
        return 0.0
    k = allowed_changes(allowed, n)
    return float(np.partition(used, n - 1 - k)[n - 1 - k])


# -- per-output helpers ---------------------------------------------------------------------------

def _pairs(reference: Outputs, candidate: Outputs, lenient: bool = False):
    """[(y, ŷ)] over every batch and output, or None if the two differ in structure."""
    ref, cand = _batches(reference), _batches(candidate)
    if len(ref) != len(cand) or any(len(a) != len(b) for a, b in zip(ref, cand)):
        if not lenient:
            return None
        cand = [list(b) + [np.zeros(0)] * (len(a) - len(b)) for a, b in zip(ref, cand)]
    return [(np.asarray(y), np.asarray(c)) for a, b in zip(ref, cand) for y, c in zip(a, b)]


def _batches(outputs: Outputs) -> list[Sequence[np.ndarray]]:
    outputs = list(outputs)
    if outputs and all(isinstance(o, np.ndarray) for o in outputs):
        return [outputs]  # one batch, given bare
    return outputs


def _rows(a: np.ndarray) -> np.ndarray:
    """The array as (positions, last axis): 0-d is one position of one element."""
    return a.reshape(1, 1) if a.ndim == 0 else a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def _samples(a: np.ndarray) -> np.ndarray:
    """The array as (samples, flattened sample), in its own dtype; 0-d is one sample."""
    return a.reshape(1, 1) if a.ndim == 0 else a.reshape(a.shape[0], math.prod(a.shape[1:]))


def _comparable(y: np.ndarray, c: np.ndarray) -> bool:
    """Same shape and dtype; non-float outputs identical; no NaN the reference lacks."""
    if y.shape != c.shape or y.dtype != c.dtype:
        return False
    if y.dtype.kind != "f":
        return bool(np.array_equal(y, c))
    return not _new_nan(y, c)


def _new_nan(y: np.ndarray, c: np.ndarray) -> bool:
    return bool(np.any(np.isnan(c) & ~np.isnan(y)))


def _finite_pair(y: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(y, ŷ) as (samples, values), finite: the values equal in both (infinities, NaNs at the
    same places) zeroed so that they do not count; None if a non-finite value differs."""
    y, c = _samples(y), _samples(c)
    if np.isfinite(y).all() and np.isfinite(c).all():  # the usual case: no copies
        return y, c
    same = (y == c) | (np.isnan(y) & np.isnan(c))
    if not (np.isfinite(y) | same).all() or not (np.isfinite(c) | same).all():
        return None
    return np.where(same, 0, y), np.where(same, 0, c)


def _sumsq(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Per row, sum of a·b (b = a by default), accumulated in float64 (einsum casts in chunks:
    no float64 copy of a large output)."""
    return np.einsum("ij,ij->i", a, a if b is None else b, dtype=np.float64)


def _difference(y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """y − ŷ, in float32 for float16/float32 outputs (exact for float16; for float32 rounded to
    2⁻²⁴ relative, far below any bound, at half the memory of float64), else float64."""
    if y.dtype.itemsize <= 4:
        with np.errstate(over="ignore"):
            d = np.subtract(y, c, dtype=np.float32)
        if np.isfinite(d).all():
            return d
    return np.subtract(y, c, dtype=np.float64)


def _cos_error(y: np.ndarray, c: np.ndarray) -> float:
    pair = _finite_pair(y, c)
    if pair is None:
        return math.inf
    y, c = pair
    if y.shape[0] == 0:
        return 0.0
    if y.dtype.itemsize > 4:  # float64 squares of values beyond 1e154 overflow: scale each sample first
        s = np.maximum(np.abs(y).max(axis=1, initial=0.0), np.abs(c).max(axis=1, initial=0.0))
        s[s == 0] = 1.0
        y, c = y / s[:, None], c / s[:, None]
    ny, nc = np.sqrt(_sumsq(y)), np.sqrt(_sumsq(c))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.clip(_sumsq(y, c) / (ny * nc), -1.0, 1.0)
    cos = np.where((ny == 0) | (nc == 0), np.where((ny == 0) & (nc == 0), 1.0, 0.0), cos)
    near = np.flatnonzero((cos < 1) & (cos > 1 - 1e-9))
    if near.size:  # identical samples: exactly 1, not 1 - rounding
        cos[near[(y[near] == c[near]).all(axis=1)]] = 1.0
    return float(1.0 - cos.min())


def _rel_l2(y: np.ndarray, c: np.ndarray) -> float:
    pair = _finite_pair(y, c)
    if pair is None:
        return math.inf
    y, c = pair
    if y.shape[0] == 0:
        return 0.0
    d = _difference(y, c)
    if y.dtype.itemsize > 4:  # as in _cos_error
        s = np.abs(y).max(axis=1, initial=0.0)
        s[s == 0] = 1.0
        y, d = y / s[:, None], d / s[:, None]
    num, den = np.sqrt(_sumsq(d)), np.sqrt(_sumsq(y))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(den == 0, np.where(num == 0, 0.0, math.inf), num / den)
    return float(rel.max())


def _max_abs(y: np.ndarray, c: np.ndarray) -> float:
    pair = _finite_pair(y, c)
    if pair is None:
        return math.inf
    y, c = pair
    if y.size == 0:
        return 0.0
    d = np.abs(_difference(y, c))
    top = d.max()
    # exact: rounding is monotone, so the largest true difference is among those rounded to the top
    at = np.flatnonzero(d.reshape(-1) == top)
    return float(np.abs(y.reshape(-1)[at].astype(np.float64) - c.reshape(-1)[at]).max())


# -- reports --------------------------------------------------------------------------------------

def describe(bound: Bound, score: float, changes: tuple[int, int] | None = None) -> str:
    """The score in the user's terms, e.g. ``min cos 0.9934``, ``rel-l2 0.0041``,
    ``argmax unchanged (62% of the thinnest margin used)``, ``text unchanged (...)``.
    ``changes`` (from :func:`changed`, or :func:`ctc.changed` for ``ctc``) adds the count of
    changed argmaxes or texts."""
    if math.isnan(score) or score == math.inf:
        return f"{bound.metric}: outputs broken (NaN, a changed integer output or shape)"
    if bound.metric == "cos":
        return f"min cos {1.0 - score:.4f}"
    if bound.metric in ("rel-l2", "max-abs"):
        return f"{bound.metric} {score:.4g}"
    used = f"{min(math.floor(score * 100), 99)}%"
    counted = f"{changes[0]} of {changes[1]} changed" if changes else None
    what, margin = ("text", "thinnest relevant margin") if bound.metric == "ctc" else ("argmax", "thinnest margin")
    if bound.value == 0:
        if score < 1:
            return f"{what} unchanged ({used} of the {margin} used)"
        return f"{what} changed" + (f" ({counted})" if counted else "")
    within = f"within {bound.value:g} changed" if score < 1 else f"more than {bound.value:g} changed"
    return f"{what} {within}" + (f" ({counted})" if counted else "")


__all__ = ["METRICS", "COUNTED", "BELOW_ONE", "Bound", "parse_bound", "score", "changed", "argmax_consumption",
           "allowed_changes", "describe"]
