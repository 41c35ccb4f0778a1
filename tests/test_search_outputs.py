"""Output metrics of the output-aware search (nnar.search.outputs): the laws each score keeps,
as properties over drawn outputs, and the exact equivalence of the argmax score with the
promise "at most floor(allowed·N) argmaxes change", and of the ctc score with "at most
floor(allowed·S) decoded texts change", ties and rounding included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp

from nnar.errors import InvalidInput
from nnar.search import ctc as C
from nnar.search import outputs as O

FLOAT_METRICS = ("cos", "rel-l2", "max-abs")
ANY_SHAPE = tuple(m for m in O.METRICS if m != "ctc")  # ctc reads (samples, time, classes) only

finite32 = st.floats(-1e4, 1e4, width=32)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6)


def arrays(shape=shapes, elements=finite32, dtype=np.float32):
    return hnp.arrays(dtype, shape, elements=elements)


@st.composite
def logits_and_candidate(draw):
    """Reference logits and a candidate, small integers so that ties (in the reference, in the
    candidate, between them) are common; or floats moved by a few ulps, where rounding bites."""
    n, w = draw(st.integers(1, 12)), draw(st.integers(1, 5))
    if draw(st.booleans()):
        y = draw(hnp.arrays(np.float32, (n, w), elements=st.integers(-2, 2).map(float)))
        step = draw(hnp.arrays(np.float32, (n, w), elements=st.integers(-1, 1).map(float)))
        return y, (y + step).astype(np.float32)
    y = draw(hnp.arrays(np.float32, (n, w), elements=st.floats(-3, 3, width=32)))
    ulps = draw(hnp.arrays(np.int32, (n, w), elements=st.integers(-3, 3)))
    c = (y.view(np.int32) + ulps).view(np.float32)  # same sign region: moves by a few ulps
    assume(np.isfinite(c).all() and not np.isnan(c).any())
    return y, c


# -- argmax: the score is the promise ---------------------------------------------------------------

@given(logits_and_candidate())
def test_consumption_below_one_exactly_when_the_argmax_is_kept(pair):
    y, c = pair
    used = O.argmax_consumption(y, c)
    kept = np.argmax(y, axis=1) == np.argmax(c, axis=1)
    assert np.array_equal(used < 1, kept)
    assert (used >= 0).all()


@given(logits_and_candidate(), st.floats(0, 1, exclude_max=True))
def test_argmax_score_below_one_exactly_when_at_most_k_changed(pair, allowed):
    y, c = pair
    count, total = O.changed([y], [c])
    assert count == int(np.count_nonzero(np.argmax(y, axis=1) != np.argmax(c, axis=1)))
    assert total == y.shape[0]
    k = O.allowed_changes(allowed, total)
    score = O.score("argmax", [y], [c], allowed)
    assert (score < 1) == (count <= k)
    bound = O.parse_bound(f"argmax={allowed!r}")
    assert bound.holds(bound.score([y], [c])) == (count <= k)


@given(logits_and_candidate())
def test_argmax_score_is_zero_for_the_original_and_convex_along_the_change(pair):
    """m_cand is concave along y + t(ŷ − y) (a minimum of linear functions), so the score is
    convex in t: halving the change at most halves it (up to the rounding of the halfway point)."""
    y, c = pair
    assert O.score("argmax", [y], [y]) == 0
    y64, c64 = y.astype(np.float64), c.astype(np.float64)
    half = y64 + (c64 - y64) / 2
    if (np.argmax(c64, axis=1) == np.argmax(y64, axis=1)).all():
        assert O.score("argmax", [y64], [half]) <= O.score("argmax", [y64], [c64]) / 2 + 1e-9


def test_argmax_consumption_values_and_ties():
    y = np.array([[0.0, 2.0, 1.0]], np.float32)  # r = 1, m_ref = 1
    for cand, expect in (([0, 2, 1], 0.0), ([0, 1.5, 1], 0.5), ([0, 3, 1], 0.0), ([0, 1, 1], 1.0),
                         ([1, 1, 0], 1.0), ([0, 1, 1.5], 1.5)):
        used = O.argmax_consumption(y, np.array([cand], np.float32))[0]
        assert used == pytest.approx(expect)
    # a tie after r keeps numpy's argmax at r: below 1; a tie before r moves it: 1 or more
    z = np.array([[0.0, 2.0, 1.0]], np.float32)
    assert O.argmax_consumption(z, np.array([[0, 2, 2]], np.float32))[0] < 1
    assert O.argmax_consumption(z, np.array([[2, 2, 0]], np.float32))[0] >= 1
    # a tied reference: 0 while numpy's argmax stays, inf once it moves
    t = np.array([[1.0, 1.0, 0.0]], np.float32)
    assert O.argmax_consumption(t, np.array([[1, 1, 0]], np.float32))[0] == 0
    assert O.argmax_consumption(t, np.array([[1, 1.5, 0]], np.float32))[0] == math.inf
    # one class: nothing can change
    assert O.argmax_consumption(np.ones((3, 1)), np.zeros((3, 1))).tolist() == [0, 0, 0]


def test_argmax_allowed_is_the_decimal_the_user_wrote():
    y = np.tile(np.array([[1.0, 0.0]], np.float32), (100, 1))
    c = y.copy()
    c[:29] = [0.0, 1.0]  # 29 of 100 changed
    assert O.changed([y], [c]) == (29, 100)
    assert O.score("argmax", [y], [c], 0.29) < 1  # 0.29·100 is 28.999... in floats
    assert O.score("argmax", [y], [c], 0.28) >= 1
    assert [O.allowed_changes(a / 14, 14) for a in range(14)] == list(range(14))  # computed fractions too
    assert O.parse_bound("argmax=0.29").holds(O.parse_bound("argmax=0.29").score([y], [c]))


def test_argmax_counts_every_position_of_every_output_and_batch():
    a = np.zeros((2, 3, 4), np.float32)
    a[..., 0] = 1  # 6 positions, argmax 0 everywhere
    b = a.copy()
    b[1, 2] = [0, 0, 5, 0]  # one position moves
    other = np.array([[3.0, 1.0]], np.float32)
    assert O.changed([[a, other], [a, other]], [[b, other], [a, other]]) == (1, 14)
    assert O.score("argmax", [[a, other], [a, other]], [[b, other], [a, other]], 1 / 14) < 1
    assert O.score("argmax", [[a, other], [a, other]], [[b, other], [a, other]], 0) >= 1


# -- every metric ----------------------------------------------------------------------------------

@given(arrays(elements=st.floats(width=32)))  # NaN and infinities included
def test_identical_outputs_score_zero(y):
    for metric in ANY_SHAPE:
        assert O.score(metric, [y], [y.copy()]) == 0, metric


@given(arrays(), st.data())
def test_a_new_nan_anywhere_is_inf(y, data):
    c = y.copy()
    c.flat[data.draw(st.integers(0, y.size - 1))] = np.nan
    for metric in ANY_SHAPE:
        assert O.score(metric, [y], [c]) == math.inf, metric


@given(arrays(), st.floats(1e-3, 1e3))
def test_cos_is_scale_invariant_and_bounded(y, scale):
    y = y.astype(np.float64)  # scaling in float64 rounds far below the tolerance
    c = np.roll(y, 1)  # some other output of the same shape
    base = O.score("cos", [y], [c])
    assert 0 <= base <= 2
    assert O.score("cos", [y], [c * scale]) == pytest.approx(base, abs=1e-9)
    assert O.score("cos", [y], [y * scale]) == pytest.approx(0, abs=1e-9)


@given(arrays(shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=2, max_side=5)), st.data())
def test_scores_do_not_depend_on_how_samples_are_batched(y, data):
    c = (y + data.draw(arrays(shape=st.just(y.shape), elements=st.floats(-1, 1, width=32)))).astype(np.float32)
    cut = data.draw(st.integers(1, y.shape[0] - 1))
    for metric in O.METRICS if y.ndim == 3 else ANY_SHAPE:
        whole = O.score(metric, [y], [c], 0.3)
        split = O.score(metric, [[y[:cut]], [y[cut:]]], [[c[:cut]], [c[cut:]]], 0.3)
        assert whole == split, metric


@given(arrays(), st.data())
def test_float_metrics_match_a_plain_float64_computation(y, data):
    c = data.draw(arrays(shape=st.just(y.shape)))
    y64, c64 = y.reshape(y.shape[0], -1).astype(np.float64), c.reshape(c.shape[0], -1).astype(np.float64)
    assert O.score("max-abs", [y], [c]) == np.abs(y64 - c64).max()  # exactly
    ny, nc, nd = (np.linalg.norm(a, axis=1) for a in (y64, c64, y64 - c64))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(ny == 0, np.where(nd == 0, 0, np.inf), nd / ny).max()
        cos = np.where((ny == 0) | (nc == 0), ((ny == 0) & (nc == 0)) * 1.0, (y64 * c64).sum(axis=1) / (ny * nc))
    assert O.score("rel-l2", [y], [c]) == pytest.approx(rel, rel=1e-6)
    assert O.score("cos", [y], [c]) == pytest.approx(1 - cos.min(), abs=1e-9)


def test_metric_values():
    y = np.array([[3.0, 4.0], [1.0, 0.0]], np.float32)
    c = np.array([[3.0, 4.5], [0.0, 1.0]], np.float32)
    assert O.score("max-abs", [y], [c]) == 1.0
    assert O.score("rel-l2", [y], [c]) == pytest.approx(math.sqrt(2))  # the second sample's
    assert O.score("cos", [y], [c]) == pytest.approx(1.0)  # orthogonal second sample
    # zero vectors: both zero is a perfect match, one zero the worst of rel-l2 / no cosine
    z = np.zeros((1, 3), np.float32)
    assert O.score("cos", [z], [z]) == 0 and O.score("rel-l2", [z], [z]) == 0
    assert O.score("cos", [z], [z + 1]) == 1.0 and O.score("rel-l2", [z], [z + 1]) == math.inf
    assert O.score("cos", [z + 1], [z]) == 1.0
    # float64 outputs far beyond float32's range: no overflow in the squares
    big = np.array([[1e200, 1e200]])
    assert O.score("cos", [big], [big * [[1, -1]]]) == 1.0 and O.score("cos", [big], [big * 3]) < 1e-15
    assert O.score("rel-l2", [big], [big * 1.5]) == pytest.approx(0.5)


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (0,), (), (2, 0, 3)])
def test_empty_and_scalar_outputs(shape):
    y = np.ones(shape, np.float32)
    for metric in ANY_SHAPE:
        assert O.score(metric, [y], [y.copy()]) == 0, metric
    assert O.changed([y], [y]) == (0, O.changed([y], [y])[1])
    assert O.score("argmax", [], []) == 0 and O.score("cos", [], []) == 0


def test_broken_candidates_are_inf():
    y = np.ones((2, 3), np.float32)
    ids = np.arange(6).reshape(2, 3)
    for metric in ANY_SHAPE:
        assert O.score(metric, [y], [np.ones((2, 4), np.float32)]) == math.inf  # shape
        assert O.score(metric, [y, ids], [y]) == math.inf  # an output missing
        assert O.score(metric, [y, ids], [y, ids + 1]) == math.inf  # an integer output changed
        assert O.score(metric, [y, ids], [y, ids.copy()]) == 0
        assert O.score(metric, [ids > 2], [ids > 3]) == math.inf  # booleans too
        assert O.score(metric, [y], [np.where(y > 0, np.inf, y)]) == math.inf  # an infinity the reference lacks


# -- bounds and reports ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, metric, value, threshold", [
    ("cos=0.99", "cos", 0.99, 1 - 0.99), ("rel-l2=0.01", "rel-l2", 0.01, 0.01), ("max-abs=0.05", "max-abs", 0.05, 0.05),
    ("argmax=0", "argmax", 0.0, math.nextafter(1.0, 0.0)), ("ARGMAX = 0.02", "argmax", 0.02, O.BELOW_ONE),
    ("cos=1", "cos", 1.0, 0.0), ("ctc=0", "ctc", 0.0, O.BELOW_ONE), ("ctc=0.05", "ctc", 0.05, O.BELOW_ONE)])
def test_parse_bound(text, metric, value, threshold):
    b = O.parse_bound(text)
    assert (b.metric, b.value, b.threshold) == (metric, value, threshold)
    assert b.holds(threshold) and not b.holds(math.nextafter(threshold, math.inf))


@pytest.mark.parametrize("text, says", [
    ("cos", "METRIC=VALUE"), ("psnr=30", "cos, rel-l2, max-abs, argmax, ctc"), ("cos=abc", "found 'cos=abc'"),
    ("cos=nan", "METRIC=VALUE"), ("cos=-1", "in (-1, 1]"), ("cos=1.5", "in (-1, 1]"), ("rel-l2=-0.1", ">= 0"),
    ("argmax=1", "in [0, 1)"), ("argmax=-0.1", "in [0, 1)"), ("ctc=1", "fraction of sequences"),
    ("ctc=-0.5", "in [0, 1)")])
def test_bad_bounds_say_what_is_expected(text, says):
    with pytest.raises(InvalidInput) as e:
        O.parse_bound(text)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_describe():
    assert O.describe(O.parse_bound("cos=0.99"), 1 - 0.99341) == "min cos 0.9934"
    assert O.describe(O.parse_bound("rel-l2=0.01"), 0.0041) == "rel-l2 0.0041"
    assert O.describe(O.parse_bound("max-abs=0.1"), 0.05) == "max-abs 0.05"
    assert O.describe(O.parse_bound("argmax=0"), 0.62) == "argmax unchanged (62% of the thinnest margin used)"
    assert O.describe(O.parse_bound("argmax=0"), O.BELOW_ONE) == "argmax unchanged (99% of the thinnest margin used)"
    assert O.describe(O.parse_bound("argmax=0"), 1.0, (3, 100)) == "argmax changed (3 of 100 changed)"
    assert O.describe(O.parse_bound("argmax=0.05"), 0.5, (3, 100)) == "argmax within 0.05 changed (3 of 100 changed)"
    assert "broken" in O.describe(O.parse_bound("cos=0.9"), math.inf)
    assert O.describe(O.parse_bound("ctc=0"), 0.5) == "text unchanged (50% of the thinnest relevant margin used)"
    assert O.describe(O.parse_bound("ctc=0"), 1.2, (2, 108)) == "text changed (2 of 108 changed)"
    assert O.describe(O.parse_bound("ctc=0.02"), 3.0) == "text more than 0.02 changed"


def test_unknown_metric_is_refused():
    with pytest.raises(InvalidInput, match="expected one of cos"):
        O.score("psnr", [np.ones(2)], [np.ones(2)])


# -- ctc: the score is the promise about the decoded text -------------------------------------------

def paths(max_class=3):
    """Argmax paths (sequences, time), few classes so that blanks, repeats and neighbours meet."""
    return hnp.arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(1, 7)), elements=st.integers(0, max_class))


def brute_decode(path) -> tuple[int, ...]:
    out, prev = [], None
    for x in path:
        if x != prev and x != 0:
            out.append(int(x))
        prev = x
    return tuple(out)


@st.composite
def ctc_outputs_and_candidate(draw):
    """(samples, time, classes) outputs: small integers (ties everywhere) moved by -1..1, or floats
    moved by a few ulps."""
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 4)))
    if draw(st.booleans()):
        y = draw(hnp.arrays(np.float32, shape, elements=st.integers(-2, 2).map(float)))
        step = draw(hnp.arrays(np.float32, shape, elements=st.integers(-1, 1).map(float)))
        return y, (y + step).astype(np.float32)
    y = draw(hnp.arrays(np.float32, shape, elements=st.floats(-3, 3, width=32)))
    ulps = draw(hnp.arrays(np.int32, shape, elements=st.integers(-3, 3)))
    c = (y.view(np.int32) + ulps).view(np.float32)
    assume(np.isfinite(c).all() and not np.isnan(c).any())
    return y, c


@given(paths())
def test_ctc_decode_merges_repeats_and_drops_the_blank(p):
    for row in p:
        assert C.decode(row) == brute_decode(row)
    assert C.decode(np.array([0, 1, 1, 0, 1, 2, 2, 0, 3])) == (1, 1, 2, 3)


@given(paths(), st.data())
def test_neutral_is_exactly_the_single_swap_that_keeps_the_text(p, data):
    j = data.draw(hnp.arrays(np.int64, st.just(p.shape), elements=st.integers(0, 3)))
    got = C.neutral(p, j)
    for s in range(p.shape[0]):
        for t in range(p.shape[1]):
            swapped = p[s].copy()
            swapped[t] = j[s, t]
            assert got[s, t] == (brute_decode(swapped) == brute_decode(p[s])), (p[s], t, j[s, t])


@given(ctc_outputs_and_candidate(), st.floats(0, 1, exclude_max=True))
def test_ctc_score_below_one_exactly_when_at_most_k_texts_changed(pair, allowed):
    y, c = pair
    texts = [(brute_decode(a), brute_decode(b)) for a, b in zip(np.argmax(y, axis=2), np.argmax(c, axis=2))]
    count = sum(a != b for a, b in texts)
    assert C.changed(y, c) == (count, y.shape[0])
    per = C.sequence_scores(y, c)
    assert np.array_equal(per < 1, np.array([a == b for a, b in texts])) and (per >= 0).all()
    k = O.allowed_changes(allowed, y.shape[0])
    assert (O.score("ctc", [y], [c], allowed) < 1) == (count <= k)
    bound = O.parse_bound(f"ctc={allowed!r}")
    assert bound.holds(bound.score([y], [c])) == (count <= k)


@given(ctc_outputs_and_candidate())
def test_ctc_is_never_stricter_than_argmax(pair):
    """A text changes only where some argmax moved: whatever keeps every argmax keeps the text."""
    y, c = pair
    if O.score("argmax", [y], [c]) < 1:
        assert O.score("ctc", [y], [c]) < 1
    assert O.score("ctc", [y], [y.copy()]) == 0


def test_ctc_ignores_swaps_that_keep_the_text_and_weighs_those_that_would_not():
    # classes: 0 blank, 1 'a', 2 ' ' ; the path a, blank, a: the blank between the two a's matters
    y = np.array([[[0, 3, 0], [2, 1.9, 0], [0, 3, 0]]], np.float32)
    # the blank's margin over 'a' is 0.1, and taking it away merges "aa" into "a": relevant
    c = y.copy()
    c[0, 1, 1] = 1.95
    assert C.sequence_scores(y, c)[0] == pytest.approx(0.5, rel=1e-5)
    c[0, 1, 1] = 2.05
    assert C.sequence_scores(y, c)[0] >= 1 and C.changed(y, c) == (1, 1)
    # the path a, a, blank: the second 'a' may turn blank (the run shortens): neutral, costs nothing
    z = np.array([[[0, 3, 0], [1.9, 2, 0], [3, 0, 0]]], np.float32)
    d = z.copy()
    d[0, 1, 0] = 2.5  # the argmax moved, the text did not
    assert O.score("argmax", [z], [d]) >= 1
    assert O.score("ctc", [z], [d]) == 0
    d[0, 1, 2] = 2.4  # but a space nearing the second 'a' is relevant: 'a a' would be read
    assert 0 < O.score("ctc", [z], [d]) < 1


def test_ctc_counts_sequences_over_every_batch_and_output():
    a = np.zeros((3, 4, 3), np.float32)
    a[..., 0] = 1  # every text empty
    b = a.copy()
    b[1, 2] = [0, 5, 0]  # one sequence reads "a"
    assert O.score("ctc", [[a], [a]], [[b], [a]], 1 / 6) < 1
    assert O.score("ctc", [[a], [a]], [[b], [a]], 0) >= 1
    assert O.score("ctc", [a], [np.zeros((3, 4, 4), np.float32)]) == math.inf  # a changed shape
    assert O.score("ctc", [a], [np.where(a > 0, np.nan, a)]) == math.inf  # a new NaN
    assert O.score("ctc", [np.zeros((0, 4, 3), np.float32)], [np.zeros((0, 4, 3), np.float32)]) == 0


def test_ctc_refuses_outputs_without_a_time_axis():
    with pytest.raises(InvalidInput) as e:
        O.score("ctc", [np.ones((2, 3), np.float32)], [np.ones((2, 3), np.float32)])
    assert "(samples, time, classes)" in str(e.value) and "[2, 3]" in str(e.value) and "\n" not in str(e.value)


def test_the_spec_names_every_metric_as_the_code_does():
    import pathlib
    import re
    spec = (pathlib.Path(__file__).resolve().parents[1] / "spec" / "search.md").read_text(encoding="utf-8")
    section = spec.split("## 2.", 1)[1].split("\n## ", 1)[0]
    assert tuple(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M)) == O.METRICS


@given(ctc_outputs_and_candidate())
def test_relevant_margin_is_the_distance_to_the_nearest_class_that_changes_the_text(pair):
    y = pair[0].astype(np.float64)
    paths = np.argmax(y, axis=2)
    got = C.relevant_margins(y)
    for s in range(y.shape[0]):
        for t in range(y.shape[1]):
            changing = []
            for j in range(y.shape[2]):
                swapped = paths[s].copy()
                swapped[t] = j
                if brute_decode(swapped) != brute_decode(paths[s]):
                    changing.append(y[s, t, j])
            expect = y[s, t, paths[s, t]] - max(changing) if changing else math.inf
            assert got[s, t] == expect
