"""Per-layer budgets chosen for the user: a sensitivity scan, then an allocation.

The scan changes one layer at a time (pruned to each sparsity, or shared at each width, the
others untouched, no retraining) and scores the model with the user's validation function; it
also encodes every (sparsity, bits) pair of every layer the way :func:`nnar.torch.pack` would,
for its real size. The allocation picks one pair per layer: the fewest bytes whose predicted
drop (pruning's drop plus sharing's drop, as measured alone) fits ``max_drop``, or the smallest
predicted drop that fits ``target_bytes``. It is Lagrangian and exact in its greedy form
(:mod:`nnar.search.allocate`, the same solver the output-aware search uses).

Drops are measured without retraining, so they over-estimate what is left after it: a budget
from ``max_drop`` is conservative, and ``target_bytes`` is the usual way to ask (retraining then
wins the accuracy back, as Han et al.'s per-layer ratios did).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import numpy as np

from .. import planner
from ..codecs.abc import TensorSpec
from ..errors import InvalidInput
from ..formats.torch import _torch
from ..quant import prune as magnitude
from ..search.allocate import Point, allocate as solve, frontier
from .compress import cluster, selected
from .pack import exact_candidates

DEFAULT_SPARSITIES = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99)
#: below 4 bits the drop a scan measures (no retraining) under-rates what training the centroids
#: cannot win back: on the digits MLP, plans with 2-bit layers lost 1-2 points after retraining
#: where 4-bit plans of the same size lost none (examples/deep_compression_digits.py)
DEFAULT_BITS = (8, 6, 5, 4)

Option = tuple[float, "int | None"]  # (sparsity, bits or None: unshared)


@dataclasses.dataclass
class Scan:
    """What each layer's pruning and sharing cost in score, alone, and what each pair stores."""

    baseline: float
    scores: dict[str, dict[Option, float]]      # layer → (sparsity, bits) → score, that layer alone changed
    sizes: dict[str, dict[Option, int]]         # layer → (sparsity, bits) → bytes stored
    other_bytes: int                            # the rest of the archive: other tensors, framing
    evaluations: int

    def drop(self, name: str, option: Option) -> float:
        """The drop of ``option`` measured, or (a pair not scored: ``pairs=False``) predicted as
        pruning's and sharing's drops alone, summed."""
        by = self.scores[name]
        if option in by or option == (0.0, None):
            return max(0.0, self.baseline - by[option]) if option in by else 0.0
        s, b = option
        return self.drop(name, (s, None)) + self.drop(name, (0.0, b))

    def table(self) -> str:
        opts = sorted({o for v in self.scores.values() for o in v if not (o[0] and o[1] is not None)},
                      key=lambda o: (o[1] is not None, o[0], -(o[1] or 0)))
        label = {o: f"p{o[0]:.0%}" if o[1] is None else f"{o[1]}-bit" for o in opts}
        head = f"{'layer':24}" + "".join(f" {label[o]:>7}" for o in opts)
        rows = [f"baseline score {self.baseline:.4g}; score drop when one layer alone is pruned / shared:", head]
        for n, by in self.scores.items():
            rows.append(f"{n:24}" + "".join(f" {self.baseline - by[o]:>7.3g}" for o in opts))
        return "\n".join(rows)


@dataclasses.dataclass
class Plan:
    """One (sparsity, bits) per layer, ready for ``Compression.prune(plan.sparsity)`` and
    ``Compression.share(plan.bits)``."""

    sparsity: dict[str, float]
    bits: dict[str, int]
    predicted_bytes: int
    predicted_drop: float

    def table(self) -> str:
        rows = [f"{'layer':24} {'zeros':>6} {'bits':>5}"]
        for n, s in self.sparsity.items():
            b = self.bits.get(n)
            rows.append(f"{n:24} {s:>6.0%} {b if b is not None else '-':>5}")
        rows.append(f"predicted: {self.predicted_bytes} bytes, drop {self.predicted_drop:.4g} (before retraining)")
        return "\n".join(rows)


def _shared(values: np.ndarray, bits: int, init: str) -> np.ndarray:
    """``values`` with its nonzero elements replaced by their k-means centroid (zeros kept)."""
    flat = values.reshape(-1)
    idx, table = cluster(flat, flat != 0, bits, init)
    out = flat.copy()
    out[idx >= 0] = table[idx[idx >= 0]]
    return out.reshape(values.shape)


def _stored(values: np.ndarray, level: int) -> int:
    spec = TensorSpec("float32", values.shape)
    cands = exact_candidates(values, spec, level) or planner.lossless_candidates(spec, level)
    return planner.cost(planner.encode(values, spec, cands))


def sensitivity(model, evaluate: Callable[[Any], float], *, include: Iterable[str] | None = None,
                sparsities: Iterable[float] = DEFAULT_SPARSITIES, bits: Iterable[int] = DEFAULT_BITS,
                pairs: bool = True, init: str = "optimal", level: int = planner.DEFAULT_LEVEL,
                progress: Callable[[str, int, int], None] | None = None) -> Scan:
    """Score ``model`` with each layer alone pruned to each of ``sparsities``, shared at each of
    ``bits``, and (``pairs``) both (``evaluate(model)``: the user's validation score, higher is
    better, e.g. accuracy or minus the loss). ``pairs=False`` scores pruning and sharing apart
    (fewer evaluations: layers × (sparsities + bits)) and predicts a pair's drop as their sum,
    which under-rates sharing a pruned layer. The model is given back exactly as it was."""
    torch = _torch()
    sparsities = tuple(float(s) for s in sparsities)
    bits = tuple(int(b) for b in bits)
    if any(not 0 < s < 1 for s in sparsities) or any(not 1 <= b <= 8 for b in bits):
        raise InvalidInput(f"sensitivity: expected sparsities in (0, 1) and bits in [1, 8], found {sparsities}, {bits}")
    params = selected(model, include, "sensitivity")
    count = 0

    def score(p, values: np.ndarray) -> float:
        nonlocal count
        with torch.no_grad():
            p.copy_(torch.from_numpy(values))
        count += 1
        v = evaluate(model)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not np.isfinite(v):
            raise InvalidInput(f"evaluate: expected a finite number (higher is better), found {v!r}")
        return float(v)

    baseline = None
    scores: dict[str, dict[Option, float]] = {}
    sizes: dict[str, dict[Option, int]] = {}
    total = len(params)
    for i, (name, p) in enumerate(params.items()):
        original = p.detach().clone()
        x = np.ascontiguousarray(original.cpu().float().numpy())
        if baseline is None:
            baseline = score(p, x)
        try:
            scores[name], sizes[name] = {}, {}
            for s in (0.0, *sparsities):
                pruned = magnitude.apply(x, magnitude.survivors_for_sparsity(x, s)) if s else x
                if s:
                    scores[name][(s, None)] = score(p, pruned)
                sizes[name][(s, None)] = _stored(pruned, level)
                for b in bits:
                    q = _shared(pruned, b, init)
                    if pairs or not s:
                        scores[name][(s, b)] = score(p, q)
                    sizes[name][(s, b)] = _stored(q, level)
        finally:
            with torch.no_grad():
                p.copy_(original)
        if progress:
            progress(name, i + 1, total)
    # the rest of the archive: the other tensors, and every record's framing (its frame, digest,
    # names, index entry), which does not depend on the option chosen: the whole model packed
    # as it is, less what its scanned layers store as they are
    from .pack import pack
    whole = len(pack(model.state_dict()))
    other_bytes = whole - sum(sizes[n][(0.0, None)] for n in params)
    return Scan(float(baseline), scores, sizes, other_bytes, count)


def _points(scan: Scan) -> tuple[dict[str, list[Point]], dict[str, list[Option]]]:
    points, options = {}, {}
    for n, by in scan.sizes.items():
        options[n] = list(by)
        points[n] = [Point(by[o], scan.drop(n, o)) for o in options[n]]
    return points, options


def allocate(scan: Scan, *, max_drop: float | None = None, target_bytes: int | None = None) -> Plan:
    """Per-layer sparsity and bits from a :class:`Scan`: the fewest bytes whose predicted drop is
    at most ``max_drop``, or the least predicted drop whose predicted size (the whole archive)
    is at most ``target_bytes``. Exactly one of the two."""
    if (max_drop is None) == (target_bytes is None):
        raise InvalidInput("allocate: expected exactly one of max_drop= and target_bytes=")
    points, options = _points(scan)
    if max_drop is not None:
        if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not max_drop >= 0:
            raise InvalidInput(f"max_drop: expected a number >= 0, found {max_drop!r}")
        a = solve(points, float(max_drop))
    else:
        if isinstance(target_bytes, bool) or not isinstance(target_bytes, int) or target_bytes <= 0:
            raise InvalidInput(f"target_bytes: expected a positive integer, found {target_bytes!r}")
        walk = frontier(points)
        fits = [a for a in walk if a.cost + scan.other_bytes <= target_bytes]
        if not fits:
            smallest = walk[-1].cost + scan.other_bytes
            raise InvalidInput(f"target_bytes: {target_bytes} is below the smallest plan the scan allows "
                               f"({smallest} bytes predicted); scan higher sparsities or fewer bits")
        a = fits[0]
    chosen = {n: options[n][i] for n, i in a.choice.items()}
    return Plan({n: o[0] for n, o in chosen.items()}, {n: o[1] for n, o in chosen.items() if o[1] is not None},
                a.cost + scan.other_bytes, a.error)


def schedule(target: dict[str, float], steps: int) -> list[dict[str, float]]:
    """Iterative pruning toward ``target`` in ``steps`` rounds: the fraction kept shrinks by the
    same factor each round (pruning 90% in 3 rounds: 53.6%, 78.5%, 90%), so each round removes
    an equal share of what is left, as iterative pruning does."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InvalidInput(f"steps: expected a positive integer, found {steps!r}")
    return [{n: 1.0 - (1.0 - s) ** ((i + 1) / steps) for n, s in target.items()} for i in range(steps)]
