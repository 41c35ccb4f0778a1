"""Lossy planning: a tensor's settings → candidate pipelines → the smallest, and what it changed.

The steps are Deep Compression's: prune (choose zeros), quantize (choose values), entropy code
(every stream, by whichever chain is smallest). Pruned tensors try dense storage and the sparse
position layouts; the planner keeps the cheapest. Every lossy choice is decoded once by the real
decoder: the archive's digest is of what readers will get, and the fidelity report measures it.

With ``max_error`` (a minimum SQNR in dB) the planner walks the quantizer's ladder of settings,
smallest first, and keeps the first that meets it: the "saturation point" of Han et al., per
tensor. If nothing on the ladder meets it, fp16, then lossless.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import numpy as np

from . import dtypes, planner
from . import pipeline as P
from .codecs.abc import ArrayArrayCodec, ArrayBytesCodec, TensorSpec
from .codecs.affine import Affine
from .codecs.byteplanes import BytePlanes
from .codecs.cast import PAIRS as CAST_PAIRS, Cast
from .codecs.codebook import Codebook
from .codecs.huffman import Huffman
from .codecs.raw import Raw
from .codecs.sparse import Sparse
from .config import TensorSettings
from .limits import DEFAULT_LIMITS
from .quant import metrics, prune, ternary

FP16_MAX = 65504.0
DEFAULT_BITS = 8


@dataclasses.dataclass
class Choice:
    encoded: P.EncodedTensor
    decoded: np.ndarray  # what a reader gets back (storage dtype)
    fidelity: dict[str, Any]


class LossyWarning(UserWarning):
    """A tensor could not get the lossy treatment asked for (it was stored losslessly)."""


def chains(level: int) -> tuple[tuple, ...]:
    """The lossless chains plus Huffman: index and gap streams are where an exact order-0 coder
    can beat zstd's literal coder (its 11-bit code limit, its per-block tables)."""
    return (*planner.stream_chains(level), (Huffman(),))


# -- quantizers: values → sorted codebook (encode side only) --------------------------------------

def _ecsq(mse: float, keep_zero: bool):
    """Entropy-constrained codebook within a mean squared error per value (raises
    _Unreachable when no codebook of the size can); with ``keep_zero``, zeros (pruned
    weights) keep an exact entry and are not counted."""
    from .quant import ecsq

    def fit(values: np.ndarray, k: int):
        nz = values != 0 if keep_zero else None
        v = values[nz] if keep_zero else values
        if v.size == 0:
            return np.zeros(1, np.float32), np.zeros(values.size, np.uint8)
        got = ecsq.fit_for_error(v, k - 1 if keep_zero else k, mse)
        if got is None:
            raise _Unreachable()
        table, idx = got
        if not keep_zero:
            return table, idx
        full = np.unique(np.concatenate([table, np.zeros(1, np.float32)]))
        out = np.full(values.size, int(np.searchsorted(full, 0.0)), np.uint8)
        out[nz] = np.searchsorted(full, table)[idx]
        return full, out
    return fit


class _Unreachable(Exception):
    """No codebook of the allowed size meets the error budget."""


def _kmeans(init: str, seed: int, keep_zero: bool):
    from .quant import kmeans

    def fit(values: np.ndarray, k: int) -> np.ndarray:
        v = values[values != 0] if keep_zero else values
        if keep_zero:
            cb = kmeans.fit(v, k - 1, init=init, seed=seed) if v.size and k > 1 else np.zeros(0, np.float32)
            table = np.unique(np.concatenate([cb, np.zeros(1, np.float32)]))
        else:
            table = kmeans.fit(v, k, init=init, seed=seed)
        return table, kmeans.assign(values, table)
    return fit


def value_codec(s: TensorSettings, spec: TensorSpec, bits: int | None, keep_zero: bool,
                budget: float | None = None) -> ArrayBytesCodec:
    """The array→bytes codec that stores values of a float32 array as ``s`` asks (k-means
    within a squared-error ``budget``: entropy-constrained)."""
    q = s.quant
    if q == "kmeans":
        fit = _ecsq(budget, keep_zero) if budget is not None else _kmeans(s.init, s.seed, keep_zero)
        return Codebook(bits).using(fit)
    if q == "ternary":
        return Codebook(2).using(ternary.ternary)
    if q == "binary":
        return Codebook(1).using(ternary.binary)
    if q == "uniform":
        n = spec.size
        G = {"tensor": max(1, n), "channel": max(1, n // spec.shape[0]) if spec.shape and spec.shape[0] else max(1, n),
             "block": s.block}[s.granularity]
        return Affine(bits, G)
    raise AssertionError(q)


def _lossless_values(spec: TensorSpec) -> list[ArrayBytesCodec]:
    return [Raw(), BytePlanes()] if spec.storage_dtype.itemsize > 1 else [Raw()]


def candidates(s: TensorSettings, spec: TensorSpec, bits: int | None, pruned: bool, level: int,
               budget: float | None = None) -> list[P.Pipeline]:
    """Pipelines for a float tensor of ``spec`` (already pruned when ``pruned``)."""
    pre: list[ArrayArrayCodec] = []
    cur = spec
    if s.quant in ("fp16", "bf16"):
        target = "float16" if s.quant == "fp16" else "bfloat16"
        if spec.dtype != target:
            if (spec.dtype, target) not in CAST_PAIRS:  # e.g. bfloat16 -> float16: through float32
                pre.append(Cast("float32"))
            pre.append(Cast(target))
        cur = TensorSpec(target, spec.shape)
        values = _lossless_values(cur)
    elif s.quant is None:
        values = _lossless_values(spec)
    else:
        if spec.dtype != "float32":
            pre.append(Cast("float32"))
        cur = TensorSpec("float32", spec.shape)
        values = [value_codec(s, cur, bits, keep_zero=pruned, budget=budget)]
    ch = chains(level)
    out = []
    dense_ok = not (pruned and s.quant == "binary")  # binary has no zero: pruned weights need positions
    if dense_ok:
        out += [P.Pipeline(tuple(pre), v, ch) for v in values]
    if pruned:
        # survivors need no zero in the codebook: k-means spends every entry on them
        inner = [value_codec(s, cur, bits, keep_zero=False, budget=budget)] if s.quant == "kmeans" else values
        for v in inner:
            out.append(P.Pipeline(tuple(pre), Sparse("gaps", v, 8), ch))
            out.append(P.Pipeline(tuple(pre), Sparse("bitmask", v), ch))
    return out


# -- the plan -------------------------------------------------------------------------------------

def float8_choice(array: np.ndarray, spec: TensorSpec, target: str, level: int = planner.DEFAULT_LEVEL) -> Choice:
    """A float tensor narrowed to float8 ``target`` by ``nnar.cast`` (spec/codecs/cast.md), its
    bytes then stored losslessly: for ``ArchiveWriter.write(choice=...)``, with its fidelity
    measured as every lossy mode's. ``InvalidInput`` when a value is out of float8's range."""
    enc = planner.encode(array, spec, [P.Pipeline((Cast(target),), Raw(), chains(level))])
    dec = P.decode_encoded(enc, DEFAULT_LIMITS, "planner")
    stats = metrics.error_stats(_as_float(array, spec.dtype), _as_float(dec, spec.dtype))
    return Choice(enc, dec, _fidelity(stats, target))


def _as_float(array: np.ndarray, dtype: str) -> np.ndarray:
    return dtypes.bfloat16_to_float32(array) if dtype == "bfloat16" else array


def _try(array, spec, s, bits, pruned, level, budget=None):
    enc = planner.encode(array, spec, candidates(s, spec, bits, pruned, level, budget))
    return enc, P.decode_encoded(enc, DEFAULT_LIMITS, "planner")


def describe(s: TensorSettings, bits: int | None, sparsity: float | None) -> str:
    parts = []
    if sparsity:
        parts.append(f"prune {sparsity:.0%}")
    if s.quant in ("kmeans", "uniform"):
        parts.append(f"{s.quant} {bits}-bit" + (f" per {s.granularity}" if s.quant == "uniform" and
                                                 s.granularity != "tensor" else ""))
    elif s.quant:
        parts.append(s.quant)
    return ", ".join(parts) or "lossless"


def plan(name: str, array: np.ndarray, spec: TensorSpec, s: TensorSettings, level: int,
         global_threshold: float | None = None) -> Choice | None:
    """Encode one tensor as ``s`` asks; ``None`` means store it losslessly (with a warning when
    the settings asked for more)."""
    try:
        return _plan(name, array, spec, s, level, global_threshold)
    except ValueError as e:  # a quantizer that cannot represent this tensor (values near float32's limit)
        warnings.warn(f"{name}: {e}; stored losslessly", LossyWarning, stacklevel=2)
        return None


def _plan(name, array, spec, s, level, global_threshold):
    if not s.lossy and global_threshold is None:
        return None
    if spec.dtype not in dtypes.FLOAT_DTYPES:
        return None
    x = _as_float(array, spec.dtype)
    finite = bool(np.isfinite(x).all())
    quant = s.quant if s.quant is not None or s.max_error is None else "kmeans"
    s = dataclasses.replace(s, quant=quant)
    if not finite and (quant not in (None, "fp16", "bf16") or s.prune is not None or s.threshold is not None):
        warnings.warn(f"{name}: has NaN or infinite values; stored losslessly", LossyWarning, stacklevel=2)
        return None
    # pruning: choose the zeros
    mask = None
    if s.threshold is not None:
        mask = prune.survivors_for_threshold(x, s.threshold)
    elif s.prune:
        mask = prune.survivors_for_sparsity(x, s.prune)
    elif global_threshold is not None and global_threshold >= 0:
        mask = prune.survivors_for_threshold(x, global_threshold)
    pruned_sparsity = None
    work = array
    if mask is not None and not mask.all():
        work = np.ascontiguousarray(prune.apply(array, mask))
        pruned_sparsity = 1.0 - float(np.count_nonzero(mask)) / mask.size
    pruned = pruned_sparsity is not None

    def fp16_ok() -> bool:
        return spec.dtype == "float16" or float(np.abs(x).max(initial=0)) <= FP16_MAX

    if quant == "fp16" and not fp16_ok():
        big = float(np.abs(x).max())
        warnings.warn(f"{name}: |value| up to {big:.4g} overflows float16 (max 65504); stored "
                      + ("as bf16" if s.max_error is None else "losslessly"), LossyWarning, stacklevel=2)
        if s.max_error is not None:
            return None
        s = dataclasses.replace(s, quant="bf16")

    def attempt(settings, bits, budget=None, signal=None):
        enc, dec = _try(work, spec, settings, bits, pruned, level, budget)
        stats = metrics.error_stats(x, _as_float(dec, spec.dtype), signal)
        return enc, dec, stats

    if s.max_error is None:
        bits = (s.bits or DEFAULT_BITS) if s.quant in ("kmeans", "uniform") else None
        enc, dec, stats = attempt(s, bits)
        return Choice(enc, dec, _fidelity(stats, describe(s, bits, pruned_sparsity)))
    if s.quant == "kmeans":
        found = _entropy_constrained(s, x, work, spec, attempt, pruned_sparsity) or \
            _fallback(s, attempt, pruned_sparsity, fp16_ok)
    else:
        found = _search(s, attempt, pruned_sparsity, fp16_ok)
    if found is None:
        why = f" (pruning {pruned_sparsity:.0%} alone costs more)" if pruned_sparsity else ""
        warnings.warn(f"{name}: no setting meets SQNR >= {s.max_error:g} dB{why}; stored losslessly",
                      LossyWarning, stacklevel=3)
    return found


def _search(s: TensorSettings, attempt, pruned_sparsity, fp16_ok) -> Choice | None:
    """The smallest setting on the ladder whose SQNR is at least ``s.max_error``."""
    target = float(s.max_error)
    if s.quant in ("kmeans", "uniform"):
        lo_bits = 1 if s.quant == "kmeans" else 2
        ladder = [(s, b) for b in range(lo_bits, (s.bits or 8) + 1)]
    else:
        ladder = [(s, None)]

    @functools.lru_cache(maxsize=None)
    def probe(i):
        return attempt(*ladder[i])

    lo, hi = 0, len(ladder) - 1
    if probe(hi)[2]["sqnr_db"] < target:
        return _fallback(s, attempt, pruned_sparsity, fp16_ok)
    while lo < hi:  # SQNR grows with bits: bisect for the first setting that meets the target
        mid = (lo + hi) // 2
        if probe(mid)[2]["sqnr_db"] >= target:
            hi = mid
        else:
            lo = mid + 1
    enc, dec, stats = probe(lo)
    return Choice(enc, dec, _fidelity(stats, describe(*ladder[lo], pruned_sparsity), target))


def _entropy_constrained(s: TensorSettings, x, work, spec, attempt, pruned_sparsity) -> Choice | None:
    """k-means with a target: the entropy-constrained codebook that just meets it (the
    squared-error budget is what the target leaves after pruning's own error)."""
    w = _as_float(work, spec.dtype)
    signal, pruned_err = metrics.powers(x, w if pruned_sparsity else None)
    allowed = signal * 10 ** (-float(s.max_error) / 10)
    quantized = int(np.count_nonzero(w)) if pruned_sparsity else w.size  # what the codebook codes
    bits = s.bits or DEFAULT_BITS
    for margin in (0.98, 0.9, 0.7):  # float32 rounding of the table can cost a hair
        budget = (allowed - pruned_err) * margin / max(quantized, 1)  # per coded value
        if budget <= 0:
            return None
        try:
            enc, dec, stats = attempt(s, bits, budget, signal)
        except _Unreachable:
            return None
        if stats["sqnr_db"] >= s.max_error:
            method = describe(s, bits, pruned_sparsity).replace(f"kmeans {bits}-bit", f"kmeans-ec {bits}-bit")
            return Choice(enc, dec, _fidelity(stats, method, float(s.max_error)))
    return None


def _fallback(s: TensorSettings, attempt, pruned_sparsity, fp16_ok) -> Choice | None:
    """Nothing on the quantizer's ladder meets the target: fp16 if it does, else lossless."""
    target = float(s.max_error)
    if s.quant != "fp16" and fp16_ok():
        f16 = dataclasses.replace(s, quant="fp16", prune=None, threshold=None)
        enc, dec, stats = attempt(f16, None)
        if stats["sqnr_db"] >= target:
            return Choice(enc, dec, _fidelity(stats, describe(f16, None, pruned_sparsity), target))
    return None


def _fidelity(stats: dict[str, float], method: str, target: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"method": method, **{k: float(v) for k, v in stats.items()}}
    if target is not None:
        out["max_error"] = float(target)
    return out
