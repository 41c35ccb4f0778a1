"""Allocation: given, per tensor, what each option costs and the output error it causes alone,
choose one option per tensor for the fewest bytes whose predicted error fits a budget.

The prediction is additive (the errors the tensors cause alone, summed): for small independent
perturbations of a network's weights, squared output changes add, and metrics such as 1 − cos
are squared changes to first order. It is only a prediction; the engine checks it end to end
and moves the budget (nnar.search.engine).

The solver is the Lagrangian one, done exactly by its greedy form: per tensor only the options
on the lower convex hull of (error, bytes) can be optimal for some price of error, and taking
hull steps across all tensors in order of bytes saved per error added traces the whole
size-against-error frontier. Under a budget, a step that does not fit closes its tensor (its
later steps need it) and the walk goes on with the others, which fills the budget the way a
knapsack would.
"""

from __future__ import annotations

import dataclasses
import heapq
import math


@dataclasses.dataclass(frozen=True)
class Point:
    cost: int
    error: float


def hull(points: list[Point]) -> list[int]:
    """Indices of ``points`` on the lower-left convex hull, from the least error to the least
    cost: each next one cheaper, and each step saving fewer bytes per error than the last."""
    order = sorted(range(len(points)), key=lambda i: (points[i].error, points[i].cost))
    pareto: list[int] = []
    for i in order:
        if not pareto or points[i].cost < points[pareto[-1]].cost:
            if pareto and points[i].error == points[pareto[-1]].error:
                pareto[-1] = i
            else:
                pareto.append(i)
    out: list[int] = []
    for i in pareto:
        while len(out) >= 2 and _efficiency(points, out[-2], out[-1]) <= _efficiency(points, out[-1], i):
            out.pop()  # out[-1] is above the segment out[-2] → i: never the best for any price
        out.append(i)
    return out


def _efficiency(points: list[Point], a: int, b: int) -> float:
    de = points[b].error - points[a].error
    saved = points[a].cost - points[b].cost
    return math.inf if de <= 0 else saved / de


@dataclasses.dataclass
class Allocation:
    choice: dict[str, int]  # tensor → index of its option
    cost: int  # predicted bytes of the tensors allocated
    error: float  # predicted error (the sum)


def allocate(points: dict[str, list[Point]], budget: float) -> Allocation:
    """The cheapest choice whose summed error is at most ``budget`` (greedy on the hulls)."""
    return _walk(points, budget)[-1]


def frontier(points: dict[str, list[Point]]) -> list[Allocation]:
    """Every allocation the walk passes through with no budget: predicted size against
    predicted error, from the most accurate to the smallest."""
    return _walk(points, math.inf)


def _walk(points: dict[str, list[Point]], budget: float) -> list[Allocation]:
    hulls = {n: hull(p) for n, p in points.items() if p}
    pos = {n: 0 for n in hulls}
    choice = {n: h[0] for n, h in hulls.items()}
    cost = sum(points[n][i].cost for n, i in choice.items())
    error = sum(points[n][i].error for n, i in choice.items())
    steps = [Allocation(dict(choice), cost, error)]
    heap: list[tuple[float, str]] = []

    def push(n: str) -> None:
        h = hulls[n]
        if pos[n] + 1 < len(h):
            heapq.heappush(heap, (-_efficiency(points[n], h[pos[n]], h[pos[n] + 1]), n))

    for n in sorted(hulls):  # sorted: ties between equal efficiencies resolve the same way every run
        push(n)
    while heap:
        _, n = heapq.heappop(heap)
        h = hulls[n]
        a, b = points[n][h[pos[n]]], points[n][h[pos[n] + 1]]
        if error + (b.error - a.error) > budget:
            continue  # this tensor is closed: its later steps need this one
        pos[n] += 1
        choice[n] = h[pos[n]]
        cost += b.cost - a.cost
        error += b.error - a.error
        steps.append(Allocation(dict(choice), cost, error))
        push(n)
    return steps
