"""The fidelity report: what a lossy pack changed, per tensor, and what it costs in bits.

Bits per weight are split as Deep Compression reports them (values, sparse indices, codebook);
SQNR and relative L2 error come from the archive's ``fidelity`` maps, measured at pack time
against the input (FORMAT.md §5.2.5). The same rows feed ``nnar pack`` and ``nnar ls``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from .archive import TensorInfo


def human_bytes(n: float) -> str:
    """``1.5 MiB``: sizes for people (listings, patch reports)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _fmt_db(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return "exact" if math.isinf(v) and v > 0 else f"{v:.1f}"


def rows(infos: Iterable[TensorInfo]) -> list[tuple[str, ...]]:
    out = []
    for i in infos:
        if not i.lossy or i.alias_of is not None:  # an alias is its target's tensor, counted once
            continue
        b = i.bits_by_role()
        f = i.fidelity
        sp = f.get("sparsity")
        out.append((i.name, f"{i.size:,}", f"{sp:.1%}" if isinstance(sp, (int, float)) else "-",
                    f"{b['values']:.2f}", f"{b['indices']:.2f}", f"{b['codebook']:.2f}",
                    f"{sum(b.values()):.2f}", _fmt_db(f.get("sqnr_db")),
                    f"{f['rel_l2']:.2e}" if isinstance(f.get("rel_l2"), (int, float)) else "-",
                    f"{f['output_error']:.3g}" if isinstance(f.get("output_error"), (int, float)) else "-",
                    str(f.get("method", ""))))
    return out


HEAD = ("tensor", "params", "sparsity", "values", "indices", "codebook", "bits/w", "SQNR dB", "rel L2", "out err",
        "method")
#: said under every fidelity table of an archive packed without an evaluation (issue 12)
WEIGHTS_ONLY = ("only the weights were measured: SQNR and rel L2 say how far they moved, not what the model "
                "outputs; to bound the outputs, pack with an evaluation (--calibrate/--max-output-error, or "
                "evaluate= from Python)")


def totals(infos: list[TensorInfo]) -> dict[str, Any]:
    """Whole-model figures: bits per weight over every tensor, and over the lossy ones by role.
    Aliases (tied tensors) are their targets' tensors: counted once."""
    infos = [i for i in infos if i.alias_of is None]
    lossy = [i for i in infos if i.lossy]
    params = sum(i.size for i in infos)
    lparams = sum(i.size for i in lossy)
    by_role = {"values": 0.0, "indices": 0.0, "codebook": 0.0}
    for i in lossy:
        for k, v in i.bits_by_role().items():
            by_role[k] += v * i.size
    sqnrs = [i.fidelity["sqnr_db"] for i in lossy if isinstance(i.fidelity.get("sqnr_db"), (int, float))]
    zeros = sum(i.fidelity.get("sparsity", 0.0) * i.size for i in lossy)
    stored = sum(i.stored_bytes for i in infos)
    return {
        "tensors": len(infos), "lossy_tensors": len(lossy), "params": params, "lossy_params": lparams,
        "bits_per_weight": 8.0 * stored / params if params else 0.0,
        "lossy_bits_per_weight": {k: v / lparams for k, v in by_role.items()} if lparams else by_role,
        "lossy_sparsity": zeros / lparams if lparams else 0.0,
        "worst_sqnr_db": min(sqnrs) if sqnrs else None,
        "ratio_vs_fp32": 32.0 * params / (8.0 * stored) if stored else None,
    }


def table(infos: list[TensorInfo]) -> str:
    """The per-tensor table and a totals line, as text; empty when nothing is lossy."""
    body = rows(infos)
    if not body:
        return ""
    t = totals(infos)
    lb = t["lossy_bits_per_weight"]
    total_row = ("total (lossy tensors)", f"{t['lossy_params']:,}", f"{t['lossy_sparsity']:.1%}",
                 f"{lb['values']:.2f}", f"{lb['indices']:.2f}", f"{lb['codebook']:.2f}", f"{sum(lb.values()):.2f}",
                 _fmt_db(t["worst_sqnr_db"]) + " min", "", "", "")
    all_rows = [HEAD, *body, total_row]
    searched = any(r[9] != "-" for r in body)
    if not searched:  # no evaluation: the column would be all dashes
        all_rows = [r[:9] + r[10:] for r in all_rows]
    last = len(all_rows[0]) - 1
    widths = [max(len(r[k]) for r in all_rows) for k in range(len(all_rows[0]))]
    lines = ["  ".join(c.ljust(w) if k in (0, last) else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in all_rows]
    lossless = t["tensors"] - t["lossy_tensors"]
    lines.append(f"{t['lossy_tensors']} lossy and {lossless} lossless tensors; whole model "
                 f"{t['bits_per_weight']:.2f} bits per weight ({t['ratio_vs_fp32']:.2f}x smaller than float32)")
    lines.append("out err: the model's output error with only that tensor changed (the search's measurement)"
                 if searched else WEIGHTS_ONLY)
    return "\n".join(lines)
