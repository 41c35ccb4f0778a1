"""The search's report for people: per tensor the setting chosen, its bytes, and the output
error it causes alone; the end-to-end trials; the archive's proved error. ``nnar pack`` prints
it; :func:`plot` draws the saturation curve (output error against archive size)."""

from __future__ import annotations

import math
from typing import Callable

from ..errors import InvalidInput, MissingExtra
from ..report import human_bytes
from .engine import SearchReport


def text(r: SearchReport, describe: Callable[[float], str] | None = None, fp32_bytes: int | None = None) -> str:
    show = describe or (lambda v: f"{v:.4g}")
    head = ("tensor", "params", "setting", "bytes", "lossless", "error alone", "SQNR dB", "tried")
    rows = [(t.name, f"{t.params:,}", t.setting, human_bytes(t.bytes), human_bytes(t.lossless_bytes),
             ("~" if t.predicted else "") + f"{t.error_alone:.3g}", "exact" if math.isinf(t.sqnr_db) else f"{t.sqnr_db:.1f}", str(t.options_measured))
            for t in r.tensors]
    widths = [max(len(x[k]) for x in [head, *rows]) for k in range(len(head))]
    lines = ["  ".join(c.ljust(w) if k in (0, 2) else c.rjust(w) for k, (c, w) in enumerate(zip(x, widths))).rstrip()
             for x in [head, *rows]]
    if any(t.predicted for t in r.tensors):
        lines.append("~: predicted from the options measured (the evaluation budget thinned the scan)")
    held = sum(t.held for t in r.trials)
    lines.append(f"{len(r.trials)} allocations verified end to end ({held} within the bound); "
                 f"{r.evaluations} of {r.max_evals} evaluations; {r.seconds:.1f} s")
    size = f"archive {human_bytes(r.archive_bytes)}" if r.archive_bytes is not None else ""
    if fp32_bytes and r.archive_bytes:
        size += f" ({fp32_bytes / r.archive_bytes:.2f}x smaller than float32)"
    if r.final_error is not None:
        lines.append(f"{size}; output error measured on the archive's own weights: {show(r.final_error)} "
                     f"(bound {show(r.bound)}; original weights {show(r.baseline_error)})")
    return "\n".join(lines)


def plot(r: SearchReport, path: str, title: str | None = None) -> None:
    """The saturation curve as a PNG: output error against archive size, predicted along the
    allocation frontier, measured for each allocation verified, the bound, and the choice."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra("--plot needs matplotlib: pip install matplotlib") from None
    if not str(path).lower().endswith(".png"):
        raise InvalidInput(f"--plot {path!r}: expected a .png file name")
    mb = 1 / 1e6
    fixed = r.fixed_bytes
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if r.frontier:
        xs = [(c + fixed) * mb for c, _ in r.frontier]
        ys = [e + r.baseline_error for _, e in r.frontier]
        ax.plot(xs, ys, "-", color="0.6", lw=1, label="predicted (errors of tensors alone, summed)")
    for held in (True, False):
        pts = [t for t in r.trials if t.held == held]
        if pts:
            ax.scatter([(t.tensor_bytes + fixed) * mb for t in pts], [t.measured for t in pts],
                       color="tab:green" if held else "tab:red", zorder=3,
                       label="measured: within the bound" if held else "measured: over the bound")
    ax.axhline(r.bound, color="tab:orange", ls="--", lw=1, label=f"bound {r.bound:.4g}")
    if r.archive_bytes is not None and r.final_error is not None:
        ax.scatter([r.archive_bytes * mb], [r.final_error], marker="*", s=180, color="tab:blue", zorder=4,
                   label=f"archive written: {human_bytes(r.archive_bytes)}")
    ax.set_xlabel("archive size (MB)")
    ax.set_ylabel(f"output error ({r.metric})")
    positive = [y for y in [*(e for _, e in r.frontier), *(t.measured for t in r.trials)] if y > 0]
    if positive and max(positive) / min(positive) > 100:
        ax.set_yscale("log")
    ax.set_title(title or "output error against archive size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from ..fsutil import atomic_output
    try:
        with atomic_output(path, force=True) as f:  # the CLI refused an existing file without --force
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
