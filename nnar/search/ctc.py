"""The ``ctc`` output metric: the text a CTC model's outputs decode to, per sequence, unchanged.

A CTC output is (samples, ..., time, classes); every index before the last two axes is one
sequence. Its greedy decoding takes the argmax at each time step, merges repeats and drops the
blank, class 0 (PaddleOCR, most CTC heads). Per-position ``argmax`` is stricter than the text
needs: on PP-OCRv4's recogniser even an fp16 cast moves a few argmaxes between the blank and a
repeated letter, which changes no text.

The score is continuous, so a search can rank settings, yet exactly equivalent to the promise
(see :func:`sequence_scores`). Within nnar only :mod:`.outputs` imports this module, on first use.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidInput
from .outputs import BELOW_ONE

BLANK = 0
_NONE, _ABSENT = -2, -1  # no token emitted; no neighbour (the sequence's ends)


def decode(path: np.ndarray) -> tuple[int, ...]:
    """The labels a greedy CTC decoding of one argmax path emits: a position emits its class
    when that is not the blank and differs from the class before it."""
    path = np.asarray(path)
    emit = (path != BLANK) & np.r_[True, path[1:] != path[:-1]]
    return tuple(int(x) for x in path[emit])


def neighbours(paths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right): per position of ``paths`` (sequences, time), the class of the neighbouring
    position, or -1 at the ends."""
    left = np.full_like(paths, _ABSENT)
    right = np.full_like(paths, _ABSENT)
    left[:, 1:], right[:, :-1] = paths[:, :-1], paths[:, 1:]
    return left, right


def _emitted(x: np.ndarray, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What positions p and p + 1 emit together when position p holds class ``x``: as a pair of
    labels, left-aligned, -2 for none. Position p + 1's emission is the only other one that
    depends on position p, so two classes at p give the same text exactly when the pairs agree."""
    first = np.where((x != BLANK) & (x != left), x, _NONE)
    second = np.where((right != _ABSENT) & (right != BLANK) & (right != x), right, _NONE)
    return np.where(first == _NONE, second, first), np.where(first == _NONE, _NONE, second)


def neutral(paths: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Per position, whether putting class ``j`` there instead of the path's own class leaves the
    decoded text as it is (the path's own class counts as neutral)."""
    left, right = neighbours(paths)
    a = _emitted(paths, left, right)
    b = _emitted(j, left, right)
    return (a[0] == b[0]) & (a[1] == b[1])


def relevant_margins(y: np.ndarray, paths: np.ndarray | None = None) -> np.ndarray:
    """Per position of ``y`` (sequences, time, classes): the value of the path's class minus the
    largest value of any class that would change the decoded text if it took that position
    alone, in float64 (+inf when no such class exists). ``paths`` (sequences, time) defaults to
    ``y``'s own argmax path; a candidate is measured along the reference's path. How close the
    text is to changing: PP-OCRv4's recogniser has a few positions (spaces) below 0.01."""
    n, steps, classes = y.shape
    if paths is None:
        paths = np.argmax(y, axis=2)
    left, right = neighbours(paths)
    rows = y.reshape(n * steps, classes)
    masked = np.array(rows, dtype=rows.dtype if rows.dtype.kind == "f" else np.float64)
    at = np.arange(n * steps)
    r = paths.reshape(-1)
    masked[at, r] = -np.inf
    for j in (np.full_like(paths, BLANK), left, right):  # the only classes that can be neutral
        leave = (neutral(paths, j) & (j >= 0) & (j != paths)).reshape(-1)
        masked[at[leave], j.reshape(-1)[leave]] = -np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        return (rows[at, r].astype(np.float64) - masked.max(axis=1).astype(np.float64)).reshape(n, steps)


def sequence_scores(y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per sequence of reference ``y`` and candidate ``c`` (same shape, at least 3-D, float): a
    value below 1 exactly when the candidate's text is the reference's.

    A sequence whose text changed scores at least 1. One whose text is unchanged scores how
    much of its thinnest *relevant* margin the candidate used up, clamped just below 1: at each
    position, with r the reference's argmax, m = y[r] − the largest y[j] over the classes j
    that would change the text if they took position p alone (not the blank or a neighbour's
    class when merging or dropping them leaves the text as it is), the same m̂ for the
    candidate, and the consumption (m − m̂) / m, clipped below at 0 (0 where m is 0 or not
    finite: there only the text itself can tell). So a blank ↔ repeated letter swap costs
    nothing, while a space that would appear costs as it nears.
    """
    if y.ndim < 3:
        raise InvalidInput(f"ctc: expected outputs of shape (samples, time, classes), found an output of shape "
                           f"{list(y.shape)}")
    steps, classes = y.shape[-2], y.shape[-1]
    n = math.prod(y.shape[:-2])
    if n == 0:
        return np.zeros(0)
    if steps == 0 or classes == 0:
        return np.zeros(n)
    ys, cs = y.reshape(n, steps, classes), c.reshape(n, steps, classes)
    ref, cand = np.argmax(ys, axis=2), np.argmax(cs, axis=2)
    same = np.array([decode(a) == decode(b) for a, b in zip(ref, cand)])
    m_ref, m_cand = relevant_margins(ys, ref), relevant_margins(cs, ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        used = np.maximum((m_ref - m_cand) / m_ref, 0.0)
    used[~np.isfinite(used) | (m_ref == 0)] = 0.0
    worst = used.max(axis=1)
    return np.where(same, np.minimum(worst, BELOW_ONE), np.maximum(worst, 1.0))


def changed(y: np.ndarray, c: np.ndarray) -> tuple[int, int]:
    """(sequences whose decoded text changed, sequences) of one output pair."""
    if y.ndim < 3 or y.shape != c.shape:
        n = math.prod(y.shape[:-2]) if y.ndim >= 3 else 1
        return n, n
    n, steps = math.prod(y.shape[:-2]), y.shape[-2]
    if n == 0 or steps == 0 or y.shape[-1] == 0:
        return 0, n
    ref = np.argmax(y.reshape(n, steps, -1), axis=2)
    cand = np.argmax(c.reshape(n, steps, -1), axis=2)
    return sum(decode(a) != decode(b) for a, b in zip(ref, cand)), n


__all__ = ["BLANK", "decode", "neighbours", "neutral", "relevant_margins", "sequence_scores", "changed"]
