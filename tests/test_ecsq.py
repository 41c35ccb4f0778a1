"""nnar.quant.ecsq: the entropy-constrained quantizer behind ``max_error`` k-means (encode side).

Laws: the histogram's bins are ordered and disjoint in value and hold exactly the values'
counts and sums, a chunk at a time or all at once; the table on bins assigns every value as the
histogram's own rule does (a binary search of its bin's mean among the breakpoints); the
distortion Lloyd's algorithm reports on the histogram is the real squared error of that
assignment; ``fit_for_error`` meets its budget, and gives the same bytes run to run.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from nnar.quant import ecsq, kmeans

finite32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)
values = hnp.arrays(np.float32, st.integers(2, 3000), elements=finite32)


def weights(n: int, seed: int, tail: float = 0.0) -> np.ndarray:
    """Weight-like values: Gaussian, with a few outliers ``tail`` standard deviations out."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32) * np.float32(0.05)
    if tail:
        x[rng.choice(n, 5, replace=False)] = np.float32(0.05 * tail) * rng.choice([-1, 1], 5)
    return x


def by_bin_mean(h: ecsq._Hist, brk: np.ndarray) -> np.ndarray:
    """The reference assignment: each value to the cluster of its bin's mean."""
    return np.searchsorted(brk, h.mean[h.slot[h.key]], side="left")


@given(values)
def test_bins_are_ordered_and_hold_the_values_counts_and_sums(x):
    if x.min() == x.max():
        return
    h = ecsq._Hist(x)
    order = np.argsort(x, kind="stable")
    assert (np.diff(h.key[order].astype(np.int64)) >= 0).all()  # monotone: bins disjoint in value
    assert h.key.min() == 0 and h.key.max() in (ecsq.BINS - 1, ecsq.BINS)  # the top may round up
    assert (np.diff(h.mean) > 0).all()
    b = h.slot[h.key]
    np.testing.assert_array_equal(h.count, np.bincount(b, minlength=h.count.size))
    np.testing.assert_allclose(h.total, np.bincount(b, weights=x.astype(np.float64), minlength=h.count.size),
                               rtol=1e-12, atol=1e-9 * float(np.abs(x).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_binning_equals_one_pass(dtype):
    x = weights(5000, 1, tail=30).astype(dtype)
    whole = ecsq._bin(x, x.min(), x.max(), chunk=1 << 20)
    parts = ecsq._bin(x, x.min(), x.max(), chunk=777)
    np.testing.assert_array_equal(whole[0], parts[0])
    np.testing.assert_array_equal(whole[1], parts[1])
    np.testing.assert_allclose(whole[2], parts[2], rtol=1e-12, atol=1e-15)
    assert parts[3] == pytest.approx(float(np.square(x.astype(np.float64)).sum()), rel=1e-12)


def test_float32_beyond_float32_arithmetic_is_binned_in_float64():
    x = np.array([-3e38, -1.0, 0.0, 2.0, 3e38], np.float32)  # x - min overflows float32
    h = ecsq._Hist(x)
    assert (np.diff(h.key.astype(np.int64)) >= 0).all()
    assert h.key[0] == 0 and h.key[-1] in (ecsq.BINS - 1, ecsq.BINS)


@given(values, st.integers(1, 40), st.data())
def test_table_assignment_equals_the_search_by_bin_mean(x, k, data):
    if x.min() == x.max():
        return
    h = ecsq._Hist(x)
    lo, hi = float(h.mean[0]), float(h.mean[-1])
    brk = np.unique(np.array(data.draw(st.lists(st.floats(lo, hi), min_size=k - 1, max_size=k - 1)), np.float64))
    c = np.concatenate([[lo], (brk[1:] + brk[:-1]) / 2, [hi]]) if brk.size else np.array([(lo + hi) / 2])
    c = np.unique(c.astype(np.float32)).astype(np.float64)
    if c.size != brk.size + 1:  # entries that round to one float32 are merged: checked below
        return
    table, idx = ecsq._finish(h, c, brk)
    np.testing.assert_array_equal(table, c.astype(np.float32))
    np.testing.assert_array_equal(idx, by_bin_mean(h, brk))


def test_entries_that_round_to_one_float32_are_merged():
    x = weights(4000, 2)
    h = ecsq._Hist(x)
    one = np.float32(0.01)
    c = np.array([-0.05, float(one), float(one) + 1e-12, 0.05])  # the middle two: one float32
    brk = np.array([-0.02, 0.01 + 5e-13, 0.03])
    table, idx = ecsq._finish(h, c, brk)
    np.testing.assert_array_equal(table, np.unique(c.astype(np.float32)))
    ref = by_bin_mean(h, brk)
    np.testing.assert_array_equal(idx, np.where(ref >= 2, ref - 1, ref))


@pytest.mark.parametrize("tail", [0, 40, 500])
@pytest.mark.parametrize("lam", [0.0, 1e-4])
def test_lloyd_distortion_is_the_real_squared_error_of_the_assignment(tail, lam):
    x = weights(20_000, 3, tail)
    h = ecsq._Hist(x)
    c, brk, d, rate = ecsq._lloyd(h, ecsq._grid(h, 64, 0.01), lam)
    idx = by_bin_mean(h, brk)
    real = float(np.square(x.astype(np.float64) - c[idx]).sum())
    assert d == pytest.approx(real, rel=1e-9)
    p = np.bincount(idx) / idx.size
    p = p[p > 0]
    assert rate == pytest.approx(float(-(p * np.log2(p)).sum()), rel=1e-9)


@pytest.mark.parametrize("tail", [0, 40, 500, 5000])
@pytest.mark.parametrize("db", [20.0, 31.0, 40.0])
def test_fit_for_error_meets_its_budget_and_is_deterministic(tail, db):
    x = weights(50_000, 4, tail)
    mse = float(np.square(x.astype(np.float64)).mean()) * 10 ** (-db / 10)
    got = ecsq.fit_for_error(x, 256, mse)
    assert got is not None
    table, idx = got
    assert table.dtype == np.float32 and idx.dtype == np.uint8
    assert table.size <= 256 and (np.diff(table) > 0).all()
    err = float(np.square(x.astype(np.float64) - table[idx].astype(np.float64)).mean())
    assert err <= mse * (1 + 1e-6)  # float32 rounding of the table: a hair
    again = ecsq.fit_for_error(x.copy(), 256, mse)
    np.testing.assert_array_equal(again[0], table)
    np.testing.assert_array_equal(again[1], idx)


def test_fit_for_error_uses_most_of_its_budget():
    """The search ends near the budget, where the rate is lowest, not far inside it."""
    x = weights(100_000, 5, 40)
    mse = float(np.square(x.astype(np.float64)).mean()) * 10 ** -3.1
    table, idx = ecsq.fit_for_error(x, 256, mse)
    err = float(np.square(x.astype(np.float64) - table[idx].astype(np.float64)).mean())
    assert err >= 0.95 * mse


@pytest.mark.parametrize("db", [20.0, 24.0])
def test_a_search_whose_first_lambda_is_well_inside_the_budget_goes_on(db):
    """Pruned weights (a hole around zero): the theory's lambda leaves ~15% of the budget
    unused, and the search must raise lambda rather than stop there (it once stopped: an
    unbracketed search compared inf - lo <= 0.005 * inf)."""
    x = weights(100_000, 0)
    x = x[np.abs(x) > np.quantile(np.abs(x), 0.1)]
    mse = float(np.square(x.astype(np.float64)).mean()) * 10 ** (-db / 10)
    table, idx = ecsq.fit_for_error(x, 255, mse)
    err = float(np.square(x.astype(np.float64) - table[idx].astype(np.float64)).mean())
    assert 0.95 * mse <= err <= mse * (1 + 1e-6)


def test_few_distinct_values_are_kept_exactly():
    x = np.repeat(np.array([-1.5, 0.0, 0.25, 3.0], np.float32), 100)
    table, idx = ecsq.fit_for_error(x, 8, 1e-3)
    np.testing.assert_array_equal(table[idx], x)


def test_unreachable_budget_gives_none():
    x = weights(10_000, 6)
    assert ecsq.fit_for_error(x, 2, 1e-12) is None


def test_kmeans_on_bins_equals_kmeans_on_the_values_they_hold():
    """fit_bins on the distinct values with their counts is the exact problem fit solves for a
    small input."""
    x = np.round(weights(3000, 7) * 400) / 400
    v, n = np.unique(x.astype(np.float64), return_counts=True)
    np.testing.assert_array_equal(kmeans.fit_bins(n, v * n, 8), kmeans.fit(x, 8))
    np.testing.assert_array_equal(kmeans.fit_bins(n[:5], (v * n)[:5], 8), np.unique(v[:5].astype(np.float32)))


@given(st.integers(1, 256), st.floats(1e-4, 1.0), st.sampled_from([0, 40, 500, 5000]), st.integers(0, 9))
def test_grid_has_at_most_k_entries_and_reaches_tails_it_cannot_cover(k, step_sd, tail, seed):
    x = weights(5000, seed, tail)
    h = ecsq._Hist(x)
    step = step_sd * 0.05
    g = ecsq._grid(h, k, step)
    assert 1 <= g.size <= k and (np.diff(g) > 0).all()
    if k >= ecsq.TAILS and h.mean[-1] - h.mean[0] > (k + 1) * step:  # a grid cannot cover it
        inner = k - k // ecsq.TAILS
        assert g[-1] - g[0] > (inner - 1) * step * (1 + 1e-9)  # entries beyond the grid, in the tails


def test_both_tails_get_entries():
    x = weights(100_000, 8)
    x[:3], x[3:6] = -5.0, 5.0  # 100 standard deviations out on both sides
    g = ecsq._grid(ecsq._Hist(x), 256, 0.005)
    assert g[0] == -5.0 and g[-1] == 5.0
