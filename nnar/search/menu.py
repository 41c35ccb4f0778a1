"""The settings a search may give one tensor, each encoded once and described by its cost.

A menu is a list of :class:`Option`: a label for people and the :class:`~nnar.config.TensorSettings`
that :func:`nnar.lossy.plan` turns into a pipeline. The default menu covers every post-training
form nnar stores: entropy-constrained k-means at a ladder of weight SQNRs (the densest family: at
a given squared error it is the smallest), the paper's linear-start k-means (it keeps large
weights, which outputs can care about more than the squared error says), uniform int8/int4 per
output channel, pruning with k-means, and the fp16/bf16 casts. Which of these a model's outputs
tolerate is what the search measures; the menu only says what can be tried.

An :class:`Encoded` option keeps its encoded bytes, not its decoded array: decoding is fast, and
a menu of a dozen options over a large model would otherwise hold a dozen copies of it.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping

import numpy as np

from .. import lossy, planner
from .. import pipeline as P
from ..codecs.abc import TensorSpec
from ..config import TensorSettings, check
from ..limits import DEFAULT_LIMITS

#: the weight SQNRs (dB) of the entropy-constrained k-means ladder: 3 dB apart, about half a bit
EC_LADDER_DB = (44.0, 41.0, 38.0, 35.0, 32.0, 29.0, 26.0, 23.0, 20.0, 17.0, 14.0, 11.0, 8.0)


@dataclasses.dataclass(frozen=True)
class Option:
    label: str
    settings: TensorSettings


def default_menu() -> list[Option]:
    ec = [Option(f"kmeans-ec {db:g} dB", TensorSettings(quant="kmeans", bits=8, max_error=db)) for db in EC_LADDER_DB]
    return [
        Option("fp16", TensorSettings(quant="fp16")),
        Option("uniform 8-bit per channel", TensorSettings(quant="uniform", bits=8, granularity="channel")),
        # uniform per channel at fewer bits: on the OCR recogniser, 6-bit keeps more argmaxes than
        # k-means-EC at the same size (tools/bench_quantizers.py)
        Option("uniform 6-bit per channel", TensorSettings(quant="uniform", bits=6, granularity="channel")),
        Option("uniform 5-bit per channel", TensorSettings(quant="uniform", bits=5, granularity="channel")),
        Option("kmeans 8-bit linear", TensorSettings(quant="kmeans", bits=8, init="linear")),
        Option("kmeans 6-bit linear", TensorSettings(quant="kmeans", bits=6, init="linear")),
        *ec,
        Option("kmeans 4-bit linear", TensorSettings(quant="kmeans", bits=4, init="linear")),
        Option("uniform 4-bit per block of 32", TensorSettings(quant="uniform", bits=4, granularity="block", block=32)),
        Option("prune 50%, kmeans-ec 26 dB", TensorSettings(quant="kmeans", bits=8, prune=0.5, max_error=26.0)),
        # for weights the outputs barely see (a pooler nobody reads, a redundant head)
        Option("ternary", TensorSettings(quant="ternary")),
        Option("prune 90%, kmeans 2-bit", TensorSettings(quant="kmeans", bits=2, prune=0.9)),
    ]


def menu_from(items: list[Any] | None) -> list[Option]:
    """``None``: the default menu; else each item an Option, a TensorSettings, or a mapping of
    TensorSettings fields (``{"quant": "kmeans", "bits": 4}``), labelled by what it does."""
    if items is None:
        return default_menu()
    out = []
    for item in items:
        if isinstance(item, Option):
            out.append(item)
            continue
        s = item if isinstance(item, TensorSettings) else check(TensorSettings(**dict(item))) \
            if isinstance(item, Mapping) else None
        if s is None or not s.lossy:
            from ..errors import InvalidInput
            raise InvalidInput(f"search menu item {item!r}: expected lossy TensorSettings or a mapping of them")
        out.append(Option(_label(s), s))
    return out


def _label(s: TensorSettings) -> str:
    text = lossy.describe(s, s.bits or lossy.DEFAULT_BITS if s.quant in ("kmeans", "uniform") else None, s.prune)
    return text + (f" >= {s.max_error:g} dB" if s.max_error is not None else "")


@dataclasses.dataclass
class Encoded:
    """One option of one tensor, encoded: what it costs and what it does to the weights."""

    option: Option
    choice: lossy.Choice  # its ``decoded`` is dropped once measured (see :meth:`decoded`)
    cost: int  # bytes it adds to the archive (segments and their description)
    sqnr_db: float
    error: float | None = None  # the model's output error with this tensor alone changed
    predicted: bool = False  # ``error`` was predicted from other options' (engine.predict), not measured

    def decoded(self) -> np.ndarray:
        if self.choice.decoded is None:
            self.choice.decoded = P.decode_encoded(self.choice.encoded, DEFAULT_LIMITS, "search")
        return self.choice.decoded

    def release(self) -> None:
        self.choice.decoded = None


def encode_options(name: str, array: np.ndarray, dtype: str, menu: list[Option], level: int) -> list[Encoded]:
    """Every option of ``menu`` that stores this tensor lossily, highest weight SQNR first (the
    order the scan measures them in). Options that fall back to lossless are left out; the rest
    are all kept, even one larger and worse in SQNR than another: the outputs decide."""
    spec = TensorSpec(dtype, array.shape)
    out: list[Encoded] = []
    for opt in menu:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lossy.LossyWarning)  # an option that does not apply is skipped
            choice = lossy.plan(name, array, spec, opt.settings, level)
        if choice is None:
            continue
        sqnr = float(choice.fidelity.get("sqnr_db", float("inf")))
        out.append(Encoded(opt, choice, planner.cost(choice.encoded), sqnr))
        out[-1].release()
    out.sort(key=lambda e: (-e.sqnr_db, e.cost))
    return out


def lossless_cost(array: np.ndarray, dtype: str, level: int) -> int:
    spec = TensorSpec(dtype, array.shape)
    return planner.cost(planner.encode(array, spec, planner.lossless_candidates(spec, level)))
