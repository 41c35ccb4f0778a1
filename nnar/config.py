"""What the user asks for, per tensor: lossless or which quantization, pruning, an error bound.

A :class:`PackConfig` is a default :class:`TensorSettings`, overridden by ``--layer`` rules
(``GLOB:key=value,...``, matched against tensor names with fnmatch, later rules winning), and
built from a preset, CLI flags or a Python mapping. Which codecs implement the settings is the
planner's business (nnar.planner); this module only parses and checks.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Any, Mapping

from .errors import InvalidInput

QUANTS = ("kmeans", "uniform", "fp16", "bf16", "ternary", "binary")
GRANULARITIES = ("tensor", "channel", "block")
INITS = ("optimal", "linear")


@dataclasses.dataclass(frozen=True)
class TensorSettings:
    """One tensor's settings. ``quant=None`` is lossless (after any pruning)."""

    quant: str | None = None
    bits: int | None = None  # kmeans and uniform; None: 8 for uniform and k-means
    granularity: str = "tensor"  # uniform: one scale per tensor, per output channel or per block
    block: int = 64
    prune: float | None = None  # target sparsity: the fraction of weights set to zero
    threshold: float | None = None  # prune |w| <= threshold
    init: str = "optimal"  # k-means seeding: the exact 1-D optimum on a histogram, or the paper's linear
    seed: int = 0
    max_error: float | None = None  # the lowest SQNR in dB a tensor may have: nnar picks the smallest setting
    lossless: bool = False  # force lossless storage (overrides everything else)

    @property
    def lossy(self) -> bool:
        return not self.lossless and (self.quant is not None or self.prune is not None
                                      or self.threshold is not None or self.max_error is not None)

    def replace(self, **changes: Any) -> "TensorSettings":
        return check(dataclasses.replace(self, **changes))


def check(s: TensorSettings) -> TensorSettings:
    def bad(what: str, expected: str, found: Any):
        raise InvalidInput(f"{what}: expected {expected}, found {found!r}")
    if s.quant is not None and s.quant not in QUANTS:
        bad("quant", "one of " + ", ".join(QUANTS), s.quant)
    if s.bits is not None:
        lo = 1 if s.quant in (None, "kmeans") else 2
        if not isinstance(s.bits, int) or isinstance(s.bits, bool) or not lo <= s.bits <= 8:
            bad("bits", f"an integer in [{lo}, 8]", s.bits)
        if s.quant in ("fp16", "bf16", "ternary", "binary"):
            bad("bits", f"none with quant={s.quant} (its width is fixed)", s.bits)
    if s.granularity not in GRANULARITIES:
        bad("granularity", "one of " + ", ".join(GRANULARITIES), s.granularity)
    if not isinstance(s.block, int) or isinstance(s.block, bool) or s.block < 1:
        bad("block", "a positive integer", s.block)
    if s.prune is not None and not (isinstance(s.prune, (int, float)) and 0.0 <= s.prune < 1.0):
        bad("prune", "a sparsity in [0, 1)", s.prune)
    if s.threshold is not None and not (isinstance(s.threshold, (int, float)) and s.threshold >= 0):
        bad("threshold", "a magnitude >= 0", s.threshold)
    if s.prune is not None and s.threshold is not None:
        bad("prune", "either a sparsity or a threshold, not both", (s.prune, s.threshold))
    if s.init not in INITS:
        bad("init", "one of " + ", ".join(INITS), s.init)
    if not isinstance(s.seed, int) or isinstance(s.seed, bool):
        bad("seed", "an integer", s.seed)
    if s.max_error is not None and not isinstance(s.max_error, (int, float)):
        bad("max_error", "a minimum SQNR in dB", s.max_error)
    return s


#: preset → settings. Small tensors, biases and norms stay lossless under every preset.
PRESETS: dict[str, dict[str, Any]] = {
    "lossless": {},
    "fp16": {"quant": "fp16"},
    "bf16": {"quant": "bf16"},
    "int8": {"quant": "uniform", "bits": 8, "granularity": "channel"},
    # k-means with at most 256 entries, entropy-constrained to just meet a per-tensor SQNR. The
    # paper's 8-bit k-means (linear init) with Huffman codes MiniLM at about 5.6x and 30.2 dB;
    # 31 dB (relative L2 error 2.8%) is more accurate than that and still smaller (5.8x)
    "balanced": {"quant": "kmeans", "bits": 8, "max_error": 31.0},
    "small": {"quant": "kmeans", "bits": 8, "max_error": 24.0},  # about the paper's 5-bit fc setting
    "tiny": {"quant": "kmeans", "bits": 4, "prune": 0.5},  # needs retraining to keep accuracy (nnar.torch.Compression)
}

#: tensors with fewer elements, or fewer than 2 dimensions, stay lossless unless a rule names them
DEFAULT_MIN_PARAMS = 1024


@dataclasses.dataclass(frozen=True)
class PackConfig:
    default: TensorSettings = TensorSettings()
    rules: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    min_params: int = DEFAULT_MIN_PARAMS
    prune_global: float | None = None  # one magnitude threshold across all eligible tensors

    def eligible(self, shape: tuple[int, ...]) -> bool:
        """Whether a tensor of this shape gets the default (lossy) settings: weight matrices and
        kernels, not biases, norms or small tensors, whose bytes are few and errors costly."""
        return len(shape) >= 2 and math.prod(shape) >= self.min_params

    def settings_for(self, name: str, shape: tuple[int, ...], is_float: bool) -> TensorSettings:
        """The settings of one tensor: the default, narrowed by size and type, then the rules."""
        s = self.default
        matched = [changes for glob, changes in self.rules if fnmatch.fnmatchcase(name, glob)]
        if not is_float or not matched and not self.eligible(shape):
            s = TensorSettings(lossless=not is_float or s.lossless)
        for changes in matched:
            s = s.replace(**changes)
        return s

    @property
    def lossy(self) -> bool:
        return self.default.lossy or self.prune_global is not None or any(
            TensorSettings().replace(**c).lossy for _, c in self.rules)


_FIELDS = {f.name: f for f in dataclasses.fields(TensorSettings)}


def parse_value(key: str, text: str) -> Any:
    """A ``--layer`` value from text, typed by its field."""
    if key not in _FIELDS:
        raise InvalidInput(f"--layer key {key!r}: expected one of {', '.join(_FIELDS)}")
    if text.lower() in ("none", "null", ""):
        return None
    if key in ("bits", "block", "seed"):
        try:
            return int(text)
        except ValueError:
            raise InvalidInput(f"--layer {key}={text!r}: expected an integer") from None
    if key in ("prune", "threshold", "max_error"):
        try:
            return float(text)
        except ValueError:
            raise InvalidInput(f"--layer {key}={text!r}: expected a number") from None
    if key == "lossless":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise InvalidInput(f"--layer lossless={text!r}: expected true or false")
        return text.lower() in ("true", "1", "yes")
    return text


def parse_rule(text: str) -> tuple[str, dict[str, Any]]:
    """``'classifier.*:bits=8,quant=kmeans'`` → ('classifier.*', {'bits': 8, 'quant': 'kmeans'});
    ``'GLOB:lossless'`` is short for ``lossless=true``."""
    glob, sep, body = text.rpartition(":")
    if not sep or not glob:
        raise InvalidInput(f"--layer {text!r}: expected GLOB:key=value[,key=value...]")
    changes: dict[str, Any] = {}
    for item in body.split(","):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq:
            if key == "lossless":
                key, value = "lossless", "true"
            elif key in QUANTS:
                key, value = "quant", key
            elif key in PRESETS:
                changes.update(PRESETS[key])
                continue
            else:
                key, value = key, "true"
        changes[key] = parse_value(key, value.strip())
    TensorSettings().replace(**changes)  # check now, with a clear message
    return glob, changes


def build(preset: str | None = None, rules: list[str] | tuple = (), min_params: int = DEFAULT_MIN_PARAMS,
          prune_global: float | None = None, **settings: Any) -> PackConfig:
    """A PackConfig from a preset, explicit settings (None: keep the preset's) and rules."""
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise InvalidInput(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
        base.update(PRESETS[preset])
    unknown = set(settings) - set(_FIELDS)
    if unknown:
        raise InvalidInput(f"settings {sorted(unknown)}: expected keys among {', '.join(_FIELDS)}")
    given = sorted(k for k, v in settings.items() if v is not None)
    if preset == "lossless" and (given or prune_global is not None):
        raise InvalidInput(f"preset 'lossless' contradicts {', '.join(given or ['prune_global'])}: expected one or "
                           "the other")
    if settings.get("quant") is not None and settings["quant"] != base.get("quant"):
        base.pop("bits", None)  # a preset's bits belong to its own quantizer
    base.update({k: v for k, v in settings.items() if v is not None})
    parsed = tuple(parse_rule(r) if isinstance(r, str) else (r[0], dict(r[1])) for r in rules)
    for _, changes in parsed:
        TensorSettings().replace(**changes)
    if prune_global is not None and not 0.0 <= prune_global < 1.0:
        raise InvalidInput(f"prune_global: expected a sparsity in [0, 1), found {prune_global!r}")
    if not isinstance(min_params, int) or min_params < 0:
        raise InvalidInput(f"min_params: expected an integer >= 0, found {min_params!r}")
    quants = {base.get("quant") or ("kmeans" if base.get("max_error") is not None else None)}
    quants |= {c.get("quant") for _, c in parsed}
    if base.get("bits") is not None and not quants & {"kmeans", "uniform"}:
        raise InvalidInput(f"bits={base['bits']} has no effect: expected quant='kmeans' or 'uniform' with it")
    return PackConfig(check(TensorSettings(**base)), parsed, min_params, prune_global)


def from_mapping(config: Mapping[str, Any] | PackConfig | str | None) -> PackConfig:
    """``nnar.pack(..., config=...)``: a PackConfig, a preset name, or a mapping with keys
    ``preset``, ``layers`` (rules), ``min_params``, ``prune_global`` and any TensorSettings field."""
    if config is None:
        return PackConfig()
    if isinstance(config, PackConfig):
        return config
    if isinstance(config, str):
        return build(preset=config)
    if not isinstance(config, Mapping):
        raise InvalidInput(f"config: expected a preset name, a mapping or a PackConfig, found {type(config).__name__}")
    c = dict(config)
    rules = c.pop("layers", ())
    if isinstance(rules, Mapping):
        rules = list(rules.items())
    return build(preset=c.pop("preset", None), rules=list(rules), min_params=c.pop("min_params", DEFAULT_MIN_PARAMS),
                 prune_global=c.pop("prune_global", None), **c)
