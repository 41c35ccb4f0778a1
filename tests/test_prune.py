"""Laws of the encode-side choosers of nnar/quant: magnitude pruning (prune.py: which elements
become zero) and the ternary and binary codebooks (ternary.py: sorted tables of at most 3 and
2 values for ``nnar.codebook``). The file format never sees them, only their results."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp

import nnar
from nnar import pipeline as P
from nnar.codecs.abc import TensorSpec
from nnar.codecs.codebook import Codebook
from nnar.quant import prune, ternary

# -- arrays --------------------------------------------------------------------------------------

small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7)


@st.composite
def weights(draw, dtype=None, shape=None) -> np.ndarray:
    """Finite float arrays with many ties in magnitude (±v, -0.0 and 0.0) or any values."""
    dtype = draw(st.sampled_from(["float16", "float32", "float64"])) if dtype is None else dtype
    shape = draw(st.one_of(small_shapes, st.tuples(st.integers(0, 300)))) if shape is None else shape
    width = {"float16": 16, "float32": 32, "float64": 64}[dtype]
    elems = draw(st.sampled_from([
        st.floats(width=width, allow_nan=False, allow_infinity=False),
        st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0]),
        st.floats(-1, 1, width=width),
    ]))
    return draw(hnp.arrays(np.dtype(dtype), shape, elements=elems))


sparsities = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 0.99, 1.0]))


def reference_survivors(x: np.ndarray, keep: int) -> np.ndarray:
    """Sort by (magnitude, index): the first n - keep are pruned (the earlier of equal magnitudes
    first), the rest survive."""
    flat = x.reshape(-1)
    order = sorted(range(flat.size), key=lambda i: (abs(float(flat[i])), i))
    mask = np.zeros(flat.size, bool)
    mask[order[flat.size - keep:]] = True
    return mask.reshape(x.shape)


def near_a_half(v: float) -> bool:
    return abs(v - np.floor(v) - 0.5) < 1e-9


# -- survivors_for_sparsity ----------------------------------------------------------------------


@given(weights(), sparsities)
def test_survivors_are_the_largest_magnitudes_ties_by_index(x, s):
    mask = prune.survivors_for_sparsity(x, s)
    assert mask.dtype == np.bool_ and mask.shape == x.shape
    keep = int(mask.sum())
    assert np.array_equal(mask, reference_survivors(x, keep))


@given(weights(), sparsities)
def test_the_number_kept_is_round_of_one_minus_sparsity_times_n(x, s):
    """round((1 - s) * n), away from exact halves (test_exact_halves has those)."""
    n = x.size
    assume(not near_a_half((1 - s) * n) and not near_a_half(s * n))
    assert int(prune.survivors_for_sparsity(x, s).sum()) == round((1 - s) * n)


@pytest.mark.parametrize("n, s", [(1, 0.5), (3, 0.5), (5, 0.1)])
def test_exact_halves(n, s):
    """The pruned count is round(s * n) (Python's half-even), as documented."""
    x = np.arange(1, n + 1, dtype=np.float32)
    assert int(prune.survivors_for_sparsity(x, s).sum()) == n - round(s * n)


@given(weights())
def test_sparsity_zero_keeps_all_and_one_keeps_none(x):
    assert prune.survivors_for_sparsity(x, 0.0).all()
    assert not prune.survivors_for_sparsity(x, 1.0).any()


@given(weights(), sparsities, sparsities)
def test_more_sparsity_keeps_a_subset(x, a, b):
    lo, hi = min(a, b), max(a, b)
    assert not (prune.survivors_for_sparsity(x, hi) & ~prune.survivors_for_sparsity(x, lo)).any()


@pytest.mark.parametrize("s", [-0.01, 1.01, float("nan"), float("inf")])
def test_a_sparsity_outside_0_1_is_refused(s):
    with pytest.raises(ValueError):
        prune.survivors_for_sparsity(np.ones(4, np.float32), s)


def test_a_known_mask():
    x = np.array([0.1, -3.0, 0.5, -0.5, 2.0, 0.0], np.float32)
    # magnitudes 0.1, 3, 0.5, 0.5, 2, 0: prune 3 -> 0.0, 0.1, then the earlier 0.5 (index 2)
    assert prune.survivors_for_sparsity(x, 0.5).tolist() == [False, True, False, True, True, False]


# -- survivors_for_threshold ---------------------------------------------------------------------


@given(weights(), st.one_of(st.floats(-1, 4), st.sampled_from([0.0, 0.5, 1.0])))
def test_threshold_keeps_magnitudes_strictly_above_it(x, t):
    """For thresholds the tensor's dtype holds (test_threshold_is_compared_exactly has the rest)."""
    t = float(np.asarray(t, x.dtype))
    mask = prune.survivors_for_threshold(x, t)
    assert mask.shape == x.shape
    assert np.array_equal(np.reshape(mask, -1), [abs(float(v)) > t for v in x.reshape(-1)])


@pytest.mark.parametrize("value, dtype, t", [(2.0, "float16", 1.9998), (0.1, "float32", 0.1)])
def test_threshold_is_compared_exactly(value, dtype, t):
    x = np.array([value], dtype)
    assert float(x[0]) > t
    assert prune.survivors_for_threshold(x, t).tolist() == [True]


# -- global_threshold ----------------------------------------------------------------------------


@given(st.lists(st.sampled_from(["float16", "float32"]).flatmap(lambda d: weights(dtype=d)), min_size=1, max_size=4)
       .map(lambda ws: [w.astype(np.float32) for w in ws]), st.one_of(st.floats(0, 1), st.sampled_from([0.3, 0.5, 1.0])))
def test_global_threshold_is_the_m_th_smallest_magnitude(tensors, s):
    """With m = round(s * N) >= 1 over all N elements: fewer than m magnitudes lie below the
    threshold and at least m at or below it, so pruning |x| <= t removes at least m elements
    and only ties with the m-th beyond them."""
    mags = np.concatenate([np.abs(t.reshape(-1)) for t in tensors]) if tensors else np.zeros(0, np.float32)
    m = int(round(s * mags.size))
    assume(m >= 1)
    t = prune.global_threshold(tensors, s)
    assert (mags < t).sum() < m <= (mags <= t).sum()
    pruned = sum(int((~prune.survivors_for_threshold(w, t)).sum()) for w in tensors)
    assert pruned == (mags <= t).sum()


@given(st.lists(weights(), max_size=4), st.sampled_from([0.0, -0.5]))
def test_global_threshold_at_zero_sparsity_prunes_nothing(tensors, s):
    t = prune.global_threshold(tensors, s)
    assert all(prune.survivors_for_threshold(w, t).all() for w in tensors)


def test_global_threshold_of_nothing_prunes_nothing():
    assert prune.global_threshold([], 0.5) < 0
    assert prune.global_threshold([np.zeros(0, np.float32)], 0.5) < 0


def test_global_threshold_below_one_element_prunes_nothing():
    tensors = [np.arange(1, 11, dtype=np.float32)]
    t = prune.global_threshold(tensors, 0.01)  # round(0.01 * 10) = 0
    assert prune.survivors_for_threshold(tensors[0], t).all()


def test_global_threshold_of_float64_tensors():
    tensors = [np.array([1 + 1e-12, 2.0, 3.0, 4.0], np.float64)]
    t = prune.global_threshold(tensors, 0.25)  # m = 1: prune exactly the smallest
    assert int((~prune.survivors_for_threshold(tensors[0], t)).sum()) == 1


# -- apply ---------------------------------------------------------------------------------------


@given(weights(), sparsities)
def test_apply_zeroes_exactly_the_pruned(x, s):
    mask = prune.survivors_for_sparsity(x, s)
    out = prune.apply(x, mask)
    assert out.dtype == x.dtype and out.shape == x.shape
    u = f"u{x.dtype.itemsize}"
    bits, keep = out.reshape(-1).view(u), mask.reshape(-1)
    assert np.array_equal(bits[keep], x.reshape(-1).view(u)[keep])
    assert (bits[~keep] == 0).all()  # +0.0: all bits zero


# -- ternary and binary codebooks ----------------------------------------------------------------

finite32 = hnp.arrays(np.float32, st.one_of(small_shapes, st.tuples(st.integers(0, 300))),
                      elements=st.floats(width=32, allow_nan=False, allow_infinity=False))


def strictly_sorted(cb: np.ndarray) -> bool:
    return bool((cb[1:] > cb[:-1]).all())


@given(finite32, st.floats(0, 1))
def test_ternary_is_sorted_float32_of_at_most_3_values_including_zero(x, threshold):
    cb = ternary.ternary(x.reshape(-1), 4, threshold)
    assert cb.dtype == np.float32 and cb.ndim == 1 and 1 <= cb.size <= 3
    assert strictly_sorted(cb) and (cb == 0).any()


@given(finite32)
def test_ternary_scales_are_the_mean_magnitudes_of_each_side(x):
    v = x.reshape(-1).astype(np.float64)
    cb = ternary.ternary(x.reshape(-1))
    delta = ternary.TTQ_THRESHOLD * np.abs(v).max() if v.size else 0.0
    pos, neg = v[v > delta], v[v < -delta]
    if pos.size:
        assert cb.max() == np.float32(pos.mean())
    if neg.size:
        assert cb.min() == np.float32(neg.mean())


@given(finite32)
def test_binary_is_sorted_float32_of_at_most_2_values(x):
    cb = ternary.binary(x.reshape(-1), 2)
    assert cb.dtype == np.float32 and cb.ndim == 1 and 1 <= cb.size <= 2
    assert strictly_sorted(cb)
    assert np.array_equal(cb, -cb[::-1])  # ± one scale (or a single zero)
    assert cb.max() == np.float32(np.abs(x.astype(np.float64)).mean() if x.size else 0.0)


@given(finite32, st.sampled_from([
    (2, ternary.ternary), (1, ternary.binary)]))
def test_they_drive_nnar_codebook(x, case):
    """As quantizers: every decoded value is an entry of the table they return."""
    bits, quantizer = case
    spec = TensorSpec("float32", x.shape)
    enc = P.encode(x, spec, P.Pipeline(array_bytes=Codebook(bits).using(quantizer)))
    segments = {s.name: (s.codecs, s.raw_length, s.data) for s in enc.segments}
    out = P.decode(spec, enc.pipeline, segments, nnar.DEFAULT_LIMITS, "tensor 'w'")
    table = quantizer(x.reshape(-1), 1 << bits)
    assert enc.pipeline[-1]["params"] == {"size": table.size}
    assert np.isin(out.reshape(-1), table).all()
