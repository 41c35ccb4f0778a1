"""Entropy-constrained scalar quantization (Chou, Lookabaugh and Gray 1989): the codebook that
is smallest *after entropy coding* for a given error, where k-means is the most accurate for a
given number of entries.

Every stream nnar stores is entropy coded, so what a weight costs is -log2 of its entry's
probability, not log2 k. Lloyd's algorithm with that cost in the assignment
(``(x - c)^2 + lambda * -log2 p``) moves entries apart where weights are dense and merges rare
ones, trading a little distortion for a lot of rate. On MiniLM at the rate of the paper's 8-bit
k-means with Huffman (5.4 bits per weight) it is about 3 dB more accurate (tools/bench_lossy.py).

:func:`fit_for_error` finds, by a search on lambda, the smallest-rate codebook of at most k
entries whose squared error stays within a budget: the per-tensor "saturation point". The
search starts at the high-rate theory's lambda from a uniform grid (with a few entries on the
tails the grid cannot reach), and ends as soon as a codebook uses nearly all the budget.

Runs on a fine histogram (count, sum and, but for one constant, sum of squares per bin), so
each Lloyd step costs O(k log bins), independent of the number of weights. The histogram is
one pass over the values, a chunk at a time; it keeps each value's bin, and the final
assignment is a table on bins: a cluster is a run of whole bins, so the distortion Lloyd's
algorithm measured on the histogram is the distortion of the output.
"""

from __future__ import annotations

import math

import numpy as np

BINS = 1 << 15
CHUNK = 1 << 16  #: values binned (and assigned) per step
MAX_ITER = 25
BISECTIONS = 12
#: a codebook that uses this much of the budget ends the search: what is left would buy
#: almost no rate (dR/dD = -1 / (2 ln2 D): 0.5% of D is 0.004 bits per value)
CLOSE = 0.995
TAILS = 16  #: a grid that cannot cover the data leaves 1/TAILS of the entries to its tails
RETRY_STEP = 0.95  #: a second grid, when the first misses the budget at every lambda


class _Hist:
    """The fine histogram of the values (count, sum and, but for a constant, sum of squares
    per bin), and each value's bin (``key``) for the final assignment. Bins are of equal width
    in the values' own precision: float arithmetic is monotone, so bins are ordered and
    disjoint in value."""

    def __init__(self, x: np.ndarray):
        x = x.reshape(-1)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        lo, hi = x.min(), x.max()
        self.n = x.size
        self.key = None
        if hi == lo:
            count = np.array([x.size], float)
            total = np.array([float(x.sum(dtype=np.float64))])
            self.within = 0.0
        else:
            self.key, count, total, sq = _bin(x, lo, hi)
            keep = count > 0
            self.slot = np.cumsum(keep) - 1  # a bin's position among the kept ones
            count, total = count[keep].astype(np.float64), total[keep]
        self.count, self.total = count, total
        self.mean = total / count  # increasing: bins are ordered and disjoint
        between = total * self.mean  # a bin's sum of squares less the spread inside it
        if self.key is not None:
            # the spread inside bins: a constant, as every cluster is a run of whole bins
            self.within = max(sq - float(between.sum()), 0.0)
        # prefix sums: a cluster is a run of bins, its count, sum and sum of squares O(1) each
        self.P = np.zeros((3, count.size + 1))
        np.cumsum(count, out=self.P[0, 1:])
        np.cumsum(total, out=self.P[1, 1:])
        np.cumsum(between, out=self.P[2, 1:])

    def runs(self, brk: np.ndarray, squares: bool = True):
        """Count, sum and (unless not ``squares``) sum of squares of each cluster cut at the
        breakpoints (a bin whose mean equals a breakpoint goes to the lower cluster), and the
        cuts."""
        cuts = np.empty(brk.size + 2, np.intp)
        cuts[0], cuts[-1] = 0, self.mean.size
        cuts[1:-1] = np.searchsorted(self.mean, brk, side="right")
        g = (self.P if squares else self.P[:2])[:, cuts]
        d = g[:, 1:] - g[:, :-1]
        return (*d, cuts)


def _bin(x: np.ndarray, lo, hi, chunk: int = CHUNK):
    """Each value's bin, floor((x - lo) * BINS / (hi - lo)) (uint16; the top value's rounding
    may reach bin BINS, which is then one more bin), per bin the count and the sum, and Σx².
    A chunk at a time, so the temporaries stay in cache (and are not fresh pages from the
    system for every tensor). float32 values are binned in float32 when their range fits it;
    sums and squares are float64 (pairwise sums, not BLAS, whose rounding depends on its
    thread count)."""
    span = float(hi) - float(lo)
    scale = BINS / span
    if x.dtype == np.float32 and span < 1e38 and scale < 1e38:
        ft, lo_, scale_ = np.float32, np.float32(lo), np.float32(scale)
    else:
        ft, lo_, scale_ = np.float64, np.float64(lo), np.float64(scale)
    key = np.empty(x.size, np.uint16)
    count = np.zeros(BINS + 1, np.int64)
    total = np.zeros(BINS + 1)
    sq = 0.0
    t = np.empty(min(chunk, x.size), ft)
    k = np.empty(t.size, np.intp)
    w = np.empty(t.size)
    for a in range(0, x.size, chunk):
        xs = x[a:a + chunk]
        m = xs.size
        ts, ks, ws = t[:m], k[:m], w[:m]
        np.subtract(xs, lo_, out=ts)
        ts *= scale_
        np.copyto(ks, ts, casting="unsafe")  # truncation: floor, as ts >= 0
        key[a:a + m] = ks
        count += np.bincount(ks, minlength=BINS + 1)
        np.copyto(ws, xs)  # bincount's weights are float64: converted here, not in a fresh array
        total += np.bincount(ks, weights=ws, minlength=BINS + 1)
        sq += float(np.square(ws, out=ws).sum())
    return key, count, total, sq


def _envelope(c: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which entries win somewhere, and the breakpoints between consecutive winners, for
    ``argmin_j (x - c_j)^2 + cost_j`` (a lower envelope of equal parabolas: the convex hull
    trick on lines ``-2 c_j x + c_j^2 + cost_j``)."""
    if c.size > 1:  # usually every entry wins somewhere: breakpoints of neighbours increase
        brk = (c[:-1] + c[1:]) / 2 + (cost[1:] - cost[:-1]) / (2 * (c[1:] - c[:-1]))
        if (brk[1:] > brk[:-1]).all():
            return np.arange(c.size), brk
    keep: list[int] = []
    brks: list[float] = []
    for j in range(c.size):
        while keep:
            i = keep[-1]
            x = (c[i] + c[j]) / 2 + (cost[j] - cost[i]) / (2 * (c[j] - c[i]))
            if brks and x <= brks[-1]:
                keep.pop()
                brks.pop()
                continue
            keep.append(j)
            brks.append(x)
            break
        else:
            keep.append(j)
    return np.array(keep, np.int64), np.array(brks, np.float64)


def _lloyd(h: _Hist, c: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Entropy-constrained Lloyd from centroids ``c``: (centroids, breakpoints, distortion sum,
    rate in bits per value)."""
    p = np.full(c.size, 1.0 / c.size)
    prev = None
    for _ in range(MAX_ITER):
        keep, brk = _envelope(c, lam * -np.log2(p))
        cnt, s, cuts = h.runs(brk, squares=False)
        if prev is not None and cuts.size == prev.size and (cuts == prev).all():
            break
        prev = cuts
        if not cnt.all():  # an entry that won no bin is dropped
            used = cnt > 0
            cnt, s = cnt[used], s[used]
        c, p = s / cnt, cnt / h.n
    keep, brk = _envelope(c, lam * -np.log2(p))
    c = c[keep]
    cnt, s, q, _ = h.runs(brk)
    dist = float(np.sum(q - 2 * c * s + c * c * cnt)) + h.within
    pr = cnt[cnt > 0] / h.n
    return c, brk, max(dist, 0.0), float(-(pr * np.log2(pr)).sum())


def _grid(h: _Hist, k: int, step: float) -> np.ndarray:
    """A uniform grid of at most ``k`` entries with ``step``, centred on the data's median; when
    it cannot cover the data, a grid of ``k - k // TAILS`` entries and the rest on the values
    beyond it, shared between the two tails by count (the means of equal-count groups): the
    grid alone would leave them to its end entries, at a distortion Lloyd's algorithm cannot
    undo in its few steps."""
    lo, hi = float(h.mean[0]), float(h.mean[-1])
    cdf = h.P[0, 1:]
    med = float(h.mean[np.searchsorted(cdf, h.n / 2)])

    def uniform(k):
        m_lo = max(math.floor((lo - med) / step), -(k // 2))
        m_hi = min(math.ceil((hi - med) / step), m_lo + k - 1)
        return med + step * np.arange(m_lo, m_hi + 1, dtype=np.float64)

    g = uniform(k)
    m = k // TAILS
    if m == 0 or (g[0] - step / 2 <= lo and g[-1] + step / 2 >= hi):
        return g
    g = uniform(k - m)
    sides = [h.mean < g[0] - step / 2, h.mean > g[-1] + step / 2]
    n = [float(h.count[side].sum()) for side in sides]
    share = [round(m * n[0] / (n[0] + n[1]))]
    share.append(m - share[0])
    if m > 1:  # a side with values gets at least one entry
        share = [max(a, 1) if b else a for a, b in zip(share, n)]
        share[share.index(max(share))] -= sum(share) - m
    tails = [g]
    for side, j in zip(sides, share):
        if j:
            cnt, tot = h.count[side], h.total[side]
            cum = np.cumsum(cnt)
            cuts = np.searchsorted(cum, np.linspace(0, cum[-1], j + 1)[1:-1], side="right")
            first = np.unique(np.concatenate([[0], cuts[cuts < cnt.size]]))
            tails.append(np.add.reduceat(tot, first) / np.add.reduceat(cnt, first))
    return np.unique(np.concatenate(tails))


def fit_for_error(values: np.ndarray, k: int, mse: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The lowest-rate codebook of at most ``k`` entries whose mean squared error is at most
    ``mse``, as (sorted float32 codebook, uint8 index per value); None if even the most
    accurate one (the optimal k-means) misses it."""
    x = values.reshape(-1)
    h = _Hist(x)
    budget = mse * h.n
    if h.count.size <= k:  # few distinct bins: the distinct values themselves, if few enough
        table = np.unique(x).astype(np.float32)
        if table.size <= k:
            return table, np.searchsorted(table, x.astype(np.float32)).astype(np.uint8)
    if mse <= 0:
        return None
    # high-rate theory: a uniform quantizer of step sqrt(12 D), and dD/dR = -2 ln2 D
    lam0 = 2 * math.log(2) * mse
    for shrink in (1.0, RETRY_STEP):
        best = _bisect(h, _grid(h, k, shrink * math.sqrt(12 * mse)), lam0, budget)
        if best is not None:
            break
    else:
        # the grid cannot cover the data within k entries at this step (heavy tails): start
        # from the most accurate codebook instead, if even it meets the budget
        from .kmeans import fit_bins
        c0, brk0, d0, _ = _lloyd(h, fit_bins(h.count, h.total, k).astype(np.float64), 0.0)
        if d0 > budget:
            return None
        best = _bisect(h, c0, lam0, budget) or (c0, brk0)
    c, brk = best
    return _finish(h, c, brk)


def _bisect(h: _Hist, start: np.ndarray, lam0: float, budget: float):
    """The largest lambda (lowest rate) whose codebook, grown from ``start``, meets ``budget``:
    from ``lam0`` in steps of 4 until the budget is bracketed, then by bisection."""
    best = None
    lo, hi = 0.0, math.inf
    lam, c_prev = lam0, start
    for _ in range(BISECTIONS):
        c, brk, d, _ = _lloyd(h, c_prev if lo else start, lam)
        if d <= budget:
            best, lo, c_prev = (c, brk), lam, c
            if d >= CLOSE * budget:
                break
        else:
            hi = lam
            if not lo and lam < lam0 / 32:  # as good as plain Lloyd (lambda 0) from ``start``
                break
        if hi < math.inf and hi - lo <= 0.005 * hi:
            break
        lam = lam * 4 if hi == math.inf else (lo + hi) / 2 if lo else lam / 4
    return best


def _finish(h: _Hist, c: np.ndarray, brk: np.ndarray):
    """float32 codebook and each value's index: a bin's values go to the entry whose run of
    bins holds it (the histogram's own assignment, whose distortion ``_lloyd`` measured),
    through a table on bins; entries made distinct after rounding to float32."""
    cuts = h.runs(brk, squares=False)[-1]
    entry = np.repeat(np.arange(c.size, dtype=np.uint8), np.diff(cuts))  # per kept bin
    table = c.astype(np.float32)
    uniq, inv = np.unique(table, return_inverse=True)
    if uniq.size != table.size:  # two entries rounded to one float32: merge them
        entry = inv.astype(np.uint8)[entry]
        table = uniq
    lut = entry[h.slot]
    idx = np.empty(h.key.size, np.uint8)
    for a in range(0, idx.size, CHUNK):  # a chunk at a time: the index's intp copy stays in cache
        np.take(lut, h.key[a:a + CHUNK], out=idx[a:a + CHUNK])
    return table, idx
