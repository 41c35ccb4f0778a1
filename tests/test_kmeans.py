"""nnar.quant.kmeans: the weight-sharing quantizer (encode side, not part of the format).

Laws: the codebook is sorted, unique float32, at most k long, exactly the distinct values when
there are at most k of them, bit-identical run to run; ``init="optimal"`` is within 0.5% of the
exact 1-D optimum (checked against an independent exact DP below); ``assign`` is the exact
nearest entry, ties to the lower index.
"""

from __future__ import annotations

import functools
import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from nnar.quant import kmeans

# -- an independent exact reference ---------------------------------------------------------------


def optimal_sse(x: np.ndarray, k: int) -> float:
    """Exact 1-D k-means sum of squares: Wu's (1991) DP over the sorted distinct values with the
    divide-and-conquer speed-up (the best split point is monotone in the prefix length), each
    row's recursion levels vectorised. O(k n log n)."""
    v, w = np.unique(np.asarray(x, np.float64), return_counts=True)
    return weighted_optimal_sse(v, w.astype(np.float64), k)


def weighted_optimal_sse(v: np.ndarray, w: np.ndarray, k: int) -> float:
    """The same for increasing points ``v`` with weights ``w`` (tools/kmeans_check.py uses it
    on fine histograms)."""
    m = v.size
    k = min(k, m)
    vc = v - (v * w).sum() / w.sum()
    P0, P1, P2 = (np.concatenate([[0.0], np.cumsum(a)]) for a in (w, w * vc, w * vc * vc))

    def cost(i, j):  # sum of squares of values i..j-1 about their mean
        s = P1[j] - P1[i]
        return np.maximum(P2[j] - P2[i] - s * s / (P0[j] - P0[i]), 0.0)

    D = np.full(m + 1, np.inf)
    D[1:] = cost(np.zeros(m, np.int64), np.arange(1, m + 1))
    for r in range(2, k + 1):
        new = np.full(m + 1, np.inf)
        jlo, jhi, olo, ohi = (np.array([a]) for a in (r, m, r - 1, m - 1))
        while jlo.size:  # every segment [jlo, jhi] with split points known to lie in [olo, ohi]
            mid = (jlo + jhi) // 2
            lens = np.minimum(ohi, mid - 1) - olo + 1
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            seg = np.repeat(np.arange(mid.size), lens)
            i = np.arange(lens.sum()) - starts[seg] + olo[seg]
            vals = D[i] + cost(i, mid[seg])
            mins = np.minimum.reduceat(vals, starts)
            hit = np.flatnonzero(vals == mins[seg])
            best = i[hit[np.concatenate([[True], seg[hit][1:] != seg[hit][:-1]])]]
            new[mid] = mins
            left, right = mid - 1 >= jlo, mid + 1 <= jhi
            jlo, jhi, olo, ohi = (np.concatenate([jlo[left], mid[right] + 1]), np.concatenate([mid[left] - 1, jhi[right]]),
                                  np.concatenate([olo[left], best[right]]), np.concatenate([best[left], ohi[right]]))
        D = new
    return float(D[m])


def brute_sse(x: np.ndarray, k: int) -> float:
    """Every partition of the sorted distinct values into at most k runs."""
    xs = np.asarray(x, np.float64)
    u = np.unique(xs)
    best = np.inf
    for cuts in itertools.combinations(range(1, u.size), min(k, u.size) - 1):
        total = 0.0
        for run in np.split(u, cuts):
            sel = xs[(xs >= run[0]) & (xs <= run[-1])]
            total += float(((sel - sel.mean()) ** 2).sum())
        best = min(best, total)
    return best


def exact_nearest(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Nearest entry in exact rational arithmetic, ties to the lower index (small inputs)."""
    c = [Fraction(float(v)) for v in codebook]
    out = []
    for v in np.asarray(x).reshape(-1):
        f = Fraction(float(v))
        d = [abs(f - e) for e in c]
        out.append(d.index(min(d)))
    return np.array(out, np.uint8).reshape(np.shape(x))


def test_reference_dp_agrees_with_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(60):
        x = rng.integers(-6, 7, rng.integers(1, 10)) * rng.choice([1.0, 0.25, 1e-3])
        k = int(rng.integers(1, 5))
        assert optimal_sse(x, k) == pytest.approx(brute_sse(x, k), rel=1e-9, abs=1e-12)


# -- trained-weight-like data ---------------------------------------------------------------------


def weights(kind: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = rng.normal(0.0, 0.02, n)
    elif kind == "laplace":
        x = rng.laplace(0.0, 0.01, n)
    elif kind == "student-t3":
        x = rng.standard_t(3, n) * 0.01
    elif kind == "student-t2":
        x = rng.standard_t(2, n) * 0.01
    elif kind == "bimodal":
        x = np.concatenate([rng.normal(-0.05, 0.01, n // 2), rng.normal(0.03, 0.02, n - n // 2)])
    elif kind == "sparse":  # pruned: 70% exact zeros
        x = np.where(rng.random(n) < 0.7, 0.0, rng.normal(0.0, 0.03, n))
    else:
        raise ValueError(kind)
    return x.astype(np.float32)


KINDS = ["normal", "laplace", "student-t3", "student-t2", "bimodal", "sparse"]
N = 3000


@functools.lru_cache(maxsize=None)
def optimum(kind: str, k: int) -> float:
    return optimal_sse(weights(kind, N), k) / N


@pytest.mark.parametrize("k", [2, 3, 4, 16, 64, 256])
@pytest.mark.parametrize("kind", KINDS)
def test_optimal_init_is_within_half_a_percent_of_the_optimum(kind, k):
    x = weights(kind, N)
    cb = kmeans.fit(x, k)
    assert cb.dtype == np.float32 and cb.size == k
    assert kmeans.mse(x, cb) <= 1.005 * optimum(kind, k)


@pytest.mark.parametrize("k", [4, 16, 256])
@pytest.mark.parametrize("kind", KINDS)
def test_histogram_path_is_within_half_a_percent_of_the_optimum(kind, k, monkeypatch):
    # the path large inputs take (fine float-bit bins), forced on a size the reference can solve
    monkeypatch.setattr(kmeans, "EXACT_MAX", 0)
    x = weights(kind, N)
    assert kmeans.mse(x, kmeans.fit(x, k)) <= 1.005 * optimum(kind, k)


def test_linear_init_gives_a_valid_codebook_no_worse_than_its_start():
    for kind, k in itertools.product(KINDS, [2, 16, 256]):
        x = weights(kind, N, seed=1)
        cb = kmeans.fit(x, k, init="linear")
        assert_valid(cb, k)
        start = np.unique(np.linspace(x.min(), x.max(), k).astype(np.float32))
        assert kmeans.mse(x, cb) <= kmeans.mse(x, start)


def test_linear_init_is_not_better_than_optimal():
    x = weights("laplace", N)
    assert kmeans.mse(x, kmeans.fit(x, 64)) <= kmeans.mse(x, kmeans.fit(x, 64, init="linear"))


# -- laws on any input ----------------------------------------------------------------------------


def assert_valid(cb: np.ndarray, k: int) -> None:
    assert cb.dtype == np.float32 and cb.ndim == 1 and 1 <= cb.size <= k
    assert np.isfinite(cb).all() and (np.diff(cb) > 0).all()


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
few_values = st.sampled_from([0.0, -0.0, 1.0, -1.5, 0.1, 3e-5, 1e-30, -1e30, 2.5e12])
huge_range = st.builds(lambda m, e, s: s * m * 10.0 ** e, st.floats(1, 9.9), st.integers(-30, 29), st.sampled_from([1, -1]))


@st.composite
def inputs(draw):
    elements = draw(st.sampled_from(["any", "few", "huge", "normal"]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 120))
    if elements == "normal":
        x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).normal(0, 0.05, n)
    else:
        strategy = {"any": finite32, "few": few_values, "huge": huge_range}[elements]
        x = np.array(draw(st.lists(strategy, min_size=n, max_size=n)), np.float64)
    return x.astype(dtype), draw(st.integers(1, 256)), draw(st.sampled_from(["optimal", "linear"]))


@given(inputs())
def test_codebook_laws(case):
    x, k, init = case
    cb = kmeans.fit(x, k, init=init)
    assert_valid(cb, k)
    distinct = np.unique(x.astype(np.float32))
    if distinct.size <= k:
        assert np.array_equal(cb, distinct)
        if x.dtype == np.float32:
            assert kmeans.mse(x, cb) == 0.0
    again = kmeans.fit(x.copy(), k, init=init, seed=0)
    assert again.tobytes() == cb.tobytes()
    idx = kmeans.assign(x, cb)
    assert idx.dtype == np.uint8 and idx.shape == x.shape
    assert np.array_equal(idx, exact_nearest(x, cb))


@given(hnp.arrays(np.float32, st.integers(1, 60), elements=finite32),
       hnp.arrays(np.float32, st.integers(1, 20), elements=finite32, unique=True))
def test_assign_is_the_exact_nearest_entry(x, codebook):
    cb = np.sort(codebook)
    assert np.array_equal(kmeans.assign(x, cb), exact_nearest(x, cb))


def test_assign_ties_go_to_the_lower_index_and_shape_is_kept():
    cb = np.array([-1.0, 0.0, 1.0, 3.0], np.float32)
    x = np.array([[-0.5, 0.5], [2.0, 2.0000002], [-7.0, 9.0]], np.float32)
    assert kmeans.assign(x, cb).tolist() == [[0, 1], [2, 3], [0, 3]]
    assert kmeans.assign(np.float32(0.4), cb).shape == ()
    assert kmeans.assign(np.zeros((0, 3), np.float32), cb).shape == (0, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_assign_on_large_arrays_matches_brute_force(dtype):
    # the table path (arrays of at least _SMALL values), with values exactly on every midpoint
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_t(3, 40_000) * 0.02, [-5.0, 5.0]]).astype(dtype)
    for k in (2, 16, 256):
        cb = kmeans.fit(x, k)
        mids = (cb[1:].astype(np.float64) + cb[:-1]) / 2
        y = np.concatenate([x, mids.astype(dtype), cb.astype(dtype)])
        d = np.abs(y.astype(np.float64)[:, None] - cb.astype(np.float64)[None, :])
        assert np.array_equal(kmeans.assign(y, cb), d.argmin(1))


def test_assign_with_entries_far_from_zero_and_close_together():
    # all thresholds in a handful of fine bins: the exact fallback does the work
    rng = np.random.default_rng(4)
    x = (1000 + rng.normal(0, 1e-3, 40_000)).astype(np.float32)
    cb = kmeans.fit(x, 64)
    d = np.abs(x.astype(np.float64)[:, None] - cb.astype(np.float64)[None, :])
    assert np.array_equal(kmeans.assign(x, cb), d.argmin(1))


# -- edge cases ----------------------------------------------------------------------------------


def test_constant_input_single_value_and_k_one():
    assert kmeans.fit(np.full(1000, 0.25, np.float32), 16).tolist() == [0.25]
    assert kmeans.fit(np.array([-3.5]), 256).tolist() == [-3.5]
    x = np.array([1.0, 2.0, 4.0], np.float32)
    assert kmeans.fit(x, 1).tolist() == [np.float32(7 / 3)]
    assert kmeans.assign(x, kmeans.fit(x, 1)).tolist() == [0, 0, 0]


def test_huge_dynamic_range():
    rng = np.random.default_rng(5)
    x = (rng.choice([-1, 1], 5000) * 10.0 ** rng.uniform(-30, 30, 5000)).astype(np.float32)
    for k in (2, 16, 256):
        cb = kmeans.fit(x, k)
        assert_valid(cb, k)
        assert kmeans.mse(x, cb) <= 1.005 * optimal_sse(x, k) / x.size
    x64 = np.array([1e-300, 1e-30, 1.0, 1e30, 1e300])
    assert_valid(kmeans.fit(x64, 3), 3)


def test_float64_input():
    x = weights("normal", N).astype(np.float64) + 1e-9  # not float32-representable
    cb = kmeans.fit(x, 16)
    assert_valid(cb, 16)
    assert kmeans.mse(x, cb) <= 1.005 * optimal_sse(x, 16) / N


def test_large_inputs_are_deterministic():
    x = weights("student-t3", 200_000, seed=9)
    for k, init in ((16, "optimal"), (256, "optimal"), (64, "linear")):
        a, b = kmeans.fit(x, k, init=init), kmeans.fit(x.copy(), k, init=init, seed=12345)
        assert_valid(a, k)
        assert a.tobytes() == b.tobytes()


def test_large_quantized_input_gives_exactly_its_levels():
    # more than EXACT_MAX values but only 200 distinct: the fine bins each hold one value
    rng = np.random.default_rng(6)
    levels = np.sort(rng.normal(0, 0.05, 200)).astype(np.float32)
    x = levels[rng.integers(0, 200, 300_000)]
    assert np.array_equal(kmeans.fit(x, 256), np.unique(x))
    cb = kmeans.fit(x, 16)
    assert_valid(cb, 16)
    assert kmeans.mse(x, cb) <= 1.005 * optimal_sse(x, 16) / x.size


def test_input_the_fine_bins_cannot_resolve(monkeypatch):
    # two tight clusters far from zero: each falls in one or two fine bins, so the bins fall
    # back to a sort (forced on a size the reference can solve)
    monkeypatch.setattr(kmeans, "EXACT_MAX", 0)
    rng = np.random.default_rng(8)
    x = np.concatenate([1 + 1e-5 * rng.normal(size=10_000), -1 + 1e-5 * rng.normal(size=10_000)])
    cb = kmeans.fit(x, 8)
    assert_valid(cb, 8)
    assert (cb < 0).sum() == 4 and kmeans.mse(x, cb) <= 1.005 * optimal_sse(x, 8) / x.size


@pytest.mark.parametrize("bad", [np.zeros(0), np.zeros((2, 2)), np.array([1.0, np.nan]), np.array([np.inf, 1.0]),
                                 np.array(["a", "b"])])
def test_bad_values_are_rejected(bad):
    with pytest.raises(ValueError):
        kmeans.fit(bad, 4)


@pytest.mark.parametrize("kwargs", [dict(k=0), dict(k=257), dict(k=2.0), dict(k=True), dict(k=4, init="kmeans++"),
                                    dict(k=4, seed=None)])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        kmeans.fit(np.arange(10.0), **kwargs)


@pytest.mark.parametrize("cb", [[], [2.0, 1.0], [1.0, 1.0], [0.0, np.inf], np.zeros(257), [[1.0]]])
def test_bad_codebooks_are_rejected(cb):
    with pytest.raises(ValueError):
        kmeans.assign(np.zeros(3), np.array(cb))
