"""Output-aware packing: run the search on a model, write the archive from the chosen
encodings, and prove it: the model evaluated on the weights decoded from the written bytes must
be within the bound, or nothing is written.

The archive goes to a spooled temporary file first, so the proof reads exactly what will ship
and a failed proof leaves no output (and standard output untouched).
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any, Callable, Mapping

import numpy as np

from .. import dtypes as D
from ..archive import ArchiveWriter, StreamReader
from ..codecs.abc import TensorSpec
from ..config import PackConfig, TensorSettings
from ..errors import InvalidInput, OutputBoundNotMet
from ..limits import DEFAULT_LIMITS
from . import engine
from .menu import menu_from


class PackResult(list):
    """What ``nnar.pack`` returns: the written tensors' infos (a list, as always), and, when the
    pack searched, ``search``: the :class:`~nnar.search.engine.SearchReport`."""

    search: engine.SearchReport | None = None


def searchable_names(items, cfg: PackConfig) -> tuple[list[str], dict[str, TensorSettings]]:
    """(tensors the search chooses for, tensors a rule fixes to lossy settings). The rest is
    lossless: non-float, small and 1-D tensors (``cfg.min_params``), and ``lossless`` rules."""
    search, fixed = [], {}
    for name, arr, dt in items:
        is_float = dt in D.FLOAT_DTYPES
        s = cfg.settings_for(name, arr.shape, is_float)
        if not is_float or s.lossless:
            continue
        if s.lossy:
            fixed[name] = s
        elif cfg.eligible(arr.shape):
            search.append(name)
    return search, fixed


def pack_searched(model, out_factory: Callable[[], Any], *, cfg: PackConfig, evaluate, bound: float,
                  max_evals: int, menu: list[Any] | None, level: int, metadata: Mapping[str, str],
                  progress, metric: str, describe: Callable[[float], str] | None = None) -> PackResult:
    """Search, write to a spool, prove on the spool, then copy to ``out_factory()``'s file."""
    from .. import lossy

    if cfg.default.lossy or cfg.prune_global is not None:
        raise InvalidInput("with an output-error bound the search chooses every tensor's setting: expected no preset, "
                           "--quant, --bits, --prune or --max-error defaults (use --layer GLOB:lossless to keep "
                           "tensors exact, or a --layer rule to fix one)")
    if not isinstance(max_evals, int) or isinstance(max_evals, bool) or max_evals < 3:
        raise InvalidInput(f"max_evals: expected an integer >= 3, found {max_evals!r}")
    items = [(n, np.ascontiguousarray(a), dt) for n, a, dt in model.tensors()]
    base = {n: a for n, a, _ in items}
    dtypes = {n: dt for n, _, dt in items}
    searchable, fixed = searchable_names(items, cfg)
    options = menu_from(menu)
    fixed_choices = {}
    for name, s in fixed.items():  # a rule's lossy settings: planned once, and what every evaluation sees
        c = lossy.plan(name, base[name], TensorSpec(dtypes[name], base[name].shape), s, level)
        if c is not None:
            fixed_choices[name] = c
            base[name] = c.decoded
    counter = engine.Counter(evaluate, max_evals, model.aliases, progress)
    chosen, report = engine.run(base, dtypes, searchable, counter, bound, menu=options, level=level, metric=metric)
    by_name = {t.name: t for t in report.tensors}
    aliases: dict[str, list[str]] = {}
    for alias, target in model.aliases.items():
        aliases.setdefault(target, []).append(alias)
    held = [t for t in report.trials if t.held]
    searched_error = min(held, key=lambda t: t.tensor_bytes).measured if held else report.baseline_error
    md = dict(metadata)  # informative (FORMAT.md §5.1): what the archive was proved against
    md["nnar.output_bound"] = f"{metric} <= {bound:.6g}"
    md["nnar.output_error"] = f"{searched_error:.6g}"
    with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
        structure = (model.source_format, model.structure) if model.structure is not None else None
        with ArchiveWriter(spool, metadata=md, source_format=model.source_format, level=level, config=cfg,
                           structure=structure) as w:
            for rel, load in model.files:  # a model folder's other files (FORMAT.md §5.7)
                w.write_file(rel, load())
            for name, arr, dt in items:
                al = aliases.pop(name, ())
                if name in chosen:
                    enc = chosen[name]
                    enc.decoded()  # the writer digests choice.decoded
                    if not enc.predicted:  # only what was measured goes into the archive
                        enc.choice.fidelity.update(output_error=float(by_name[name].error_alone), output_metric=metric)
                    w.write(name, arr, dtype=dt, aliases=al, choice=enc.choice)
                    enc.release()
                elif name in fixed_choices:
                    w.write(name, arr, dtype=dt, aliases=al, choice=fixed_choices[name])
                else:
                    w.write(name, arr, dtype=dt, aliases=al, settings=TensorSettings(lossless=True))
        infos = PackResult(w.infos)
        report.archive_bytes = spool.tell()
        report.fixed_bytes = report.archive_bytes - sum(t.bytes for t in report.tensors)
        # the proof: the archive's own bytes, decoded as any reader would, through the real runtime
        spool.seek(0)
        decoded = {info.name: arr for info, arr in StreamReader(spool, DEFAULT_LIMITS, verify=True)}
        final = getattr(evaluate, "final", None)
        if final is not None:
            value = float(final(decoded))
            counter.count += 1
        else:
            value = counter(decoded, "proof on the written archive")
        report.final_error = value
        report.evaluations = counter.count
        if not value <= bound:
            shown = describe(value) if describe else f"{value:.6g}"
            raise OutputBoundNotMet(
                f"the model on the weights decoded from the archive gives {metric} error {shown}, above the bound "
                f"{bound:.6g} (the search measured {searched_error:.6g} for these weights: is the evaluation "
                "deterministic?); nothing was written")
        spool.seek(0)
        with out_factory() as out:
            shutil.copyfileobj(spool, out, 1 << 20)
    infos.search = report
    return infos

