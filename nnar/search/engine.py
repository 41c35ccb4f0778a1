"""The search: measure, allocate, verify. The evaluation callable is the only thing that knows
the model.

1. **Baseline.** The untouched weights are evaluated once; their error (normally 0) is what
   every other measurement is relative to, and it must be within the bound.
2. **Sensitivity.** Each searchable tensor is encoded under every option of the menu
   (:mod:`nnar.search.menu`), then, one tensor changed at a time and the rest as given, the
   model's output error is measured, most accurate option first, until two options in a row
   exceed the bound (worse ones would only exceed it further). Large tensors go first: when the
   evaluation budget is short, they are where bytes are, and the options of later tensors are
   thinned evenly.
3. **Allocation** (:mod:`nnar.search.allocate`): per tensor one option, fewest bytes, the summed
   errors within a budget.
4. **Verification with back-off.** The allocation is evaluated whole. The errors of tensors do
   not add exactly, so the budget moves: up while the model stays within the bound (the sum
   over-predicts when errors partly cancel), down when it does not, then bisected between the
   last budget that held and the first that failed. The smallest allocation that held is the
   result. The all-lossless allocation always holds (it is the baseline), so the search never
   ends without an answer.

The caller (nnar.api) writes the archive from the chosen encodings and evaluates once more on
the weights decoded from the written bytes: the proof is of the archive, not of the search.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import InvalidInput
from ..report import human_bytes
from . import allocate as A
from .menu import Encoded, Option, encode_options, lossless_cost

Evaluate = Callable[[dict[str, np.ndarray]], float]
#: evaluations kept back from the sensitivity scan for verifying allocations
VERIFY_ROUNDS = 10


class BudgetSpent(Exception):
    """The evaluation budget is used up (internal: the engine stops measuring)."""


@dataclasses.dataclass
class TensorResult:
    name: str
    params: int
    setting: str  # the option chosen, or "lossless"
    bytes: int  # what it costs in the archive (the chosen option's segments and description)
    lossless_bytes: int
    error_alone: float  # the output error with only this tensor changed (0 for lossless)
    sqnr_db: float
    options_measured: int
    predicted: bool = False  # error_alone was predicted from the options measured, not measured


@dataclasses.dataclass
class Trial:
    """One end-to-end evaluation of an allocation."""

    budget: float
    predicted: float
    measured: float
    tensor_bytes: int
    held: bool


@dataclasses.dataclass
class SearchReport:
    metric: str  # what the error means, for people
    bound: float
    evaluations: int = 0
    max_evals: int = 0
    baseline_error: float = 0.0
    final_error: float | None = None  # measured on the written archive (set by the caller)
    archive_bytes: int | None = None
    fixed_bytes: int = 0  # tensors the search did not touch (lossless, or fixed by a rule)
    seconds: float = 0.0
    tensors: list[TensorResult] = dataclasses.field(default_factory=list)
    trials: list[Trial] = dataclasses.field(default_factory=list)
    frontier: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (tensor bytes, predicted error)
    scan: list[tuple[str, str, int, float]] = dataclasses.field(default_factory=list)  # (tensor, option, bytes, error)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return _finite(d)


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class Counter:
    """The evaluation callable, counted, bounded, and checked: every call gets a fresh dict of
    read-only arrays (aliases included), and must return a number."""

    def __init__(self, fn: Evaluate, max_evals: int, aliases: Mapping[str, str],
                 progress: Callable[[str, int, int | None], None] | None):
        self.fn, self.max_evals, self.aliases, self.progress = fn, max_evals, dict(aliases), progress
        self.count = 0

    @property
    def left(self) -> int:
        return self.max_evals - self.count

    def __call__(self, tensors: Mapping[str, np.ndarray], label: str) -> float:
        if self.count >= self.max_evals:
            raise BudgetSpent()
        full = {n: _read_only(a) for n, a in tensors.items()}
        for alias, target in self.aliases.items():
            full[alias] = full[target]
        self.count += 1
        if self.progress:
            self.progress(label, self.count, self.max_evals)
        value = self.fn(full)
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"evaluate returned {value!r:.80}: expected a number (the output error)") from None
        return math.inf if math.isnan(v) else v


def _read_only(a: np.ndarray) -> np.ndarray:
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def run(base: dict[str, np.ndarray], dtypes: Mapping[str, str], searchable: list[str], counter: Counter,
        bound: float, *, menu: list[Option], level: int, metric: str = "evaluate()") -> tuple[dict[str, Encoded], SearchReport]:
    """Search per-tensor options for ``searchable`` (the rest of ``base`` stays as given).
    Returns the chosen encoding of each tensor that is not lossless, and the report."""
    t0 = time.perf_counter()
    report = SearchReport(metric=metric, bound=bound, max_evals=counter.max_evals)  # max_evals >= 3: pack checks
    e0 = counter(base, "original")
    report.baseline_error = e0
    if not e0 <= bound:
        raise InvalidInput(f"evaluate gave {e0:.6g} for the original weights, above the bound {bound:.6g}: no "
                           "archive can meet it (the error must be 0 for the original weights, and grow with change)")
    budget0 = bound - e0
    lossless = {n: lossless_cost(base[n], dtypes[n], level) for n in searchable}
    options: dict[str, list[Encoded]] = {}
    reserve = min(VERIFY_ROUNDS, max(1, counter.left - 2)) + 1  # verification rounds and the final proof
    order = sorted(searchable, key=lambda n: -base[n].nbytes)
    try:
        for k, name in enumerate(order):
            opts = [o for o in encode_options(name, base[name], dtypes[name], menu, level) if o.cost < lossless[name]]
            options[name] = opts
            share = max(1, (counter.left - reserve) // (len(order) - k))
            if counter.left - reserve <= 0:
                break
            _measure(name, opts[:] if len(opts) <= share else _thin(opts, share), base, counter, bound, e0, report)
    except BudgetSpent:
        pass
    points: dict[str, list[A.Point]] = {}
    measured: dict[str, list[Encoded]] = {}
    for name in order:
        predict(options.get(name, []), budget0)
        ok = [o for o in options.get(name, []) if o.error is not None and o.error <= budget0]
        measured[name] = ok
        points[name] = [A.Point(lossless[name], 0.0)] + [A.Point(o.cost, o.error) for o in ok]
    report.frontier = [(a.cost, a.error) for a in A.frontier(points)]
    best = _verify(points, measured, base, counter, bound, budget0, report)
    chosen = {n: measured[n][i - 1] for n, i in best.choice.items() if i > 0}
    for name in order:
        enc = chosen.get(name)
        report.tensors.append(TensorResult(
            name, int(base[name].size), enc.option.label if enc else "lossless", enc.cost if enc else lossless[name],
            lossless[name], enc.error if enc else 0.0, enc.sqnr_db if enc else math.inf,
            sum(o.error is not None and not o.predicted for o in options.get(name, [])),
            bool(enc and enc.predicted)))
    report.evaluations = counter.count
    report.seconds = time.perf_counter() - t0
    return chosen, report


def predict(opts: list[Encoded], budget: float) -> None:
    """Give each option not measured (the scan was thinned to fit the evaluation budget) the
    error its weight noise predicts: interpolated between the measured options of the tensor
    on log error against log noise power (10^(-SQNR/10)), extrapolated with the slope they fit
    (clamped to [0.5, 2]: output errors grow with the noise's amplitude or its power). The
    verification measures whatever the allocation takes."""
    known = sorted((_noise(o), o.error) for o in opts if o.error is not None and not o.predicted)
    if not known:
        return
    floor = max(budget, 1e-300) * 1e-9  # a measured 0 (a weight the outputs do not see) on the log scale
    xs = np.log([k[0] for k in known])
    ys = np.log([max(k[1], floor) for k in known])
    useful = [i for i, k in enumerate(known) if k[1] > floor]
    slope = 1.0
    if len(useful) >= 2 and np.ptp(xs[useful]) > 0:
        slope = float(np.clip(np.polyfit(xs[useful], ys[useful], 1)[0], 0.5, 2.0))
    for o in opts:
        if o.error is not None:
            continue
        x = math.log(_noise(o))
        if x <= xs[0]:
            y = ys[0] + slope * (x - xs[0])
        elif x >= xs[-1]:
            y = ys[-1] + slope * (x - xs[-1])
        else:
            y = float(np.interp(x, xs, ys))
        o.error = 0.0 if y <= math.log(floor) * (1 - 1e-12) and max(k[1] for k in known) == 0 else math.exp(y)
        o.predicted = True


def _noise(o: Encoded) -> float:
    """Relative weight noise power of an option (exact options: a tiny positive number)."""
    return 10.0 ** (-min(o.sqnr_db, 300.0) / 10.0)


def _thin(opts: list[Encoded], k: int) -> list[Encoded]:
    """``k`` options spread evenly over the ladder, the most accurate (fp16, whose error is
    next to nothing) left out: :func:`predict` fills in the rest."""
    if k >= len(opts):
        return opts
    rest = opts[1:]
    if k == 1:
        return [rest[len(rest) // 2]]
    idx = sorted({round(i * (len(rest) - 1) / (k - 1)) for i in range(k)})
    return [rest[i] for i in idx]


def _measure(name: str, opts: list[Encoded], base: dict[str, np.ndarray], counter: Counter, bound: float, e0: float,
             report: SearchReport) -> None:
    over = 0
    for o in opts:
        trial = dict(base)
        trial[name] = o.decoded()
        try:
            err = counter(trial, f"{name} {o.option.label}")
        finally:
            o.release()
        o.error = max(0.0, err - e0)
        report.scan.append((name, o.option.label, o.cost, o.error))
        over = over + 1 if err > bound else 0
        if over >= 2:  # options come in falling weight SQNR: the rest would exceed it further
            return


def _verify(points, measured, base, counter: Counter, bound: float, budget0: float, report: SearchReport) -> A.Allocation:
    """Evaluate allocations end to end, moving the budget; the cheapest that held."""
    lossless = A.Allocation({n: 0 for n in points}, sum(p[0].cost for p in points.values()), 0.0)
    best = lossless
    seen: dict[tuple, float] = {}
    held_budget, failed_budget = None, None
    budget = budget0
    everything = A.frontier(points)[-1].choice  # the smallest allocation the scan allows
    for _ in range(64):  # bounded; each round either evaluates or moves the budget geometrically
        if counter.left <= 1:  # one evaluation stays for the proof of the written archive
            break
        alloc = A.allocate(points, budget)
        key = tuple(sorted(alloc.choice.items()))
        if key in seen:
            err = seen[key]
        else:
            trial = dict(base)
            for n, i in alloc.choice.items():
                if i > 0:
                    trial[n] = measured[n][i - 1].decoded()
            err = counter(trial, f"verify: {human_bytes(alloc.cost)} at predicted {alloc.error:.3g}")
            for n, i in alloc.choice.items():
                if i > 0:
                    measured[n][i - 1].release()
            seen[key] = err
            held = err <= bound
            report.trials.append(Trial(budget, alloc.error, err, alloc.cost, held))
        if err <= bound:
            if alloc.cost < best.cost:
                best = alloc
            held_budget = budget if held_budget is None else max(held_budget, budget)
        else:
            failed_budget = budget if failed_budget is None else min(failed_budget, budget)
        if err <= bound and alloc.choice == everything or budget == 0:
            break  # nothing smaller to find, or no budget to move
        if failed_budget is None:
            budget *= 2.0
        elif held_budget is None:
            budget *= max(0.05, min(0.7, 0.9 * (bound - report.baseline_error) / max(err - report.baseline_error,
                                                                                      1e-300)))
        else:
            if failed_budget / held_budget < 1.08:
                break
            budget = math.sqrt(held_budget * failed_budget)
        if len(report.trials) >= VERIFY_ROUNDS + 4:
            break
    return best

