"""The allocation (nnar.search.allocate): hulls, budgets and the frontier, as laws."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, strategies as st

from nnar.search.allocate import Point, allocate, frontier, hull

# errors on a grid of 1/1000: measured errors are never so far apart in scale that adding one to a
# sum of others is lost to float rounding (5e-324 added to 4e-308 is), which the laws assume
points_st = st.lists(st.builds(Point, st.integers(1, 10_000), st.integers(0, 1000).map(lambda k: k / 1000)),
                     min_size=1, max_size=8)
# index 0 of each tensor is lossless: the most bytes, no error
tensors_st = st.dictionaries(st.sampled_from("abcdef"), points_st, min_size=1, max_size=5).map(
    lambda d: {n: [Point(max(p.cost for p in ps) + 1, 0.0)] + ps for n, ps in d.items()})


def _eff(ps, a, b):
    de = ps[b].error - ps[a].error
    return math.inf if de <= 0 else (ps[a].cost - ps[b].cost) / de


@given(points_st)
def test_hull_is_pareto_and_convex(ps):
    h = hull(ps)
    assert h, "a hull holds at least the least-error point"
    assert ps[h[0]].error == min(p.error for p in ps)
    for a, b in zip(h, h[1:]):
        assert ps[b].error > ps[a].error and ps[b].cost < ps[a].cost
    effs = [_eff(ps, a, b) for a, b in zip(h, h[1:])]
    assert all(x > y for x, y in zip(effs, effs[1:])), effs
    # nothing lies below the hull: every point costs at least the hull's line at its error
    for p in ps:
        for a, b in zip(h, h[1:]):
            if ps[a].error <= p.error <= ps[b].error:
                t = (p.error - ps[a].error) / (ps[b].error - ps[a].error)
                assert p.cost >= ps[a].cost + t * (ps[b].cost - ps[a].cost) - 1e-6


@given(tensors_st, st.floats(0, 3, allow_nan=False))
def test_allocation_fits_its_budget(tensors, budget):
    a = allocate(tensors, budget)
    assert set(a.choice) == set(tensors)
    assert a.error <= budget + 1e-12
    assert math.isclose(a.error, sum(tensors[n][i].error for n, i in a.choice.items()), abs_tol=1e-9)
    assert a.cost == sum(tensors[n][i].cost for n, i in a.choice.items())


@given(tensors_st)
def test_unbounded_allocation_takes_each_tensors_smallest_option(tensors):
    a = allocate(tensors, math.inf)
    assert a.cost == sum(min(p.cost for p in ps) for ps in tensors.values())


@given(tensors_st)
def test_zero_budget_allows_only_exact_options(tensors):
    a = allocate(tensors, 0.0)
    assert a.error == 0
    assert a.cost == sum(min(p.cost for p in ps if p.error == 0) for ps in tensors.values())


@given(tensors_st)
def test_frontier_trades_bytes_for_error(tensors):
    f = frontier(tensors)
    assert f[0].error == 0
    for a, b in zip(f, f[1:]):
        assert b.cost < a.cost and b.error > a.error


@given(tensors_st, st.floats(0, 2, allow_nan=False))
def test_allocation_is_near_the_exact_optimum(tensors, budget):
    """Against brute force on small cases: never over budget, and never worse than the best
    choice restricted to hull points by more than one tensor's largest step (the greedy's
    knapsack gap)."""
    names = sorted(tensors)
    hulls = {n: hull(tensors[n]) for n in names}
    if math.prod(len(h) for h in hulls.values()) > 4000:
        return
    best = math.inf
    for combo in itertools.product(*(hulls[n] for n in names)):
        err = sum(tensors[n][i].error for n, i in zip(names, combo))
        if err <= budget:
            best = min(best, sum(tensors[n][i].cost for n, i in zip(names, combo)))
    got = allocate(tensors, budget)
    gap = max(tensors[n][h[0]].cost - tensors[n][h[-1]].cost for n, h in hulls.items())
    assert best <= got.cost <= best + gap


# -- predicting the options a thinned scan did not measure ------------------------------------------

from hypothesis import assume  # noqa: E402

from nnar.search.engine import predict  # noqa: E402
from nnar.search.menu import Encoded, Option  # noqa: E402


def _enc(sqnr: float, error: float | None) -> Encoded:
    return Encoded(Option(f"{sqnr} dB", None), None, 0, sqnr, error)


@given(st.lists(st.floats(5, 80), min_size=2, max_size=10, unique=True),
       st.lists(st.integers(0, 9), min_size=1, max_size=4, unique=True), st.floats(0.5, 2.0))
def test_predictions_follow_the_measured_power_law(sqnrs, measured_at, slope):
    """On errors that follow a power law of the weight noise exactly, predictions reproduce it
    between measured points, and grow as SQNR falls everywhere."""
    sqnrs = sorted(sqnrs, reverse=True)
    measured_at = sorted({i % len(sqnrs) for i in measured_at})
    assume(len(measured_at) >= 2)
    law = lambda db: 1e-3 * (10 ** (-db / 10) / 1e-3) ** slope  # noqa: E731
    opts = [_enc(db, law(db) if i in measured_at else None) for i, db in enumerate(sqnrs)]
    predict(opts, budget=1e-6)  # every error here is above the floor (1e-9 of the budget)
    assert all(o.error is not None for o in opts)
    assert all(o.predicted == (i not in measured_at) for i, o in enumerate(opts))
    lo, hi = measured_at[0], measured_at[-1]
    for i in range(lo, hi + 1):
        assert math.isclose(opts[i].error, law(sqnrs[i]), rel_tol=1e-6)
    errs = [o.error for o in opts]
    assert all(a <= b * (1 + 1e-9) for a, b in zip(errs, errs[1:]))


def test_nothing_measured_predicts_nothing():
    opts = [_enc(30, None), _enc(20, None)]
    predict(opts, budget=1.0)
    assert all(o.error is None for o in opts)
