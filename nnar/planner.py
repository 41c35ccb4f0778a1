"""Which pipeline a tensor gets. Lossless for now: the smallest of a few candidates.

Candidates are cheap to list and the encoder keeps the smallest result, so a new idea is one
more candidate, never a new rule. Per stream, ``Pipeline.stream_chains`` already keeps zstd only
where it shrinks the stream, so incompressible mantissa planes are stored verbatim and cost
nothing to decode.
"""

from __future__ import annotations

import numpy as np

from . import pipeline as P
from .codecs.abc import TensorSpec
from .codecs.byteplanes import BytePlanes
from .codecs.raw import Raw
from .codecs.zstd import Zstd

DEFAULT_LEVEL = 3
#: below this many bytes a tensor is stored raw: compression cannot pay for its own framing
SMALL_TENSOR_BYTES = 64


def lossless_candidates(spec: TensorSpec, level: int = DEFAULT_LEVEL) -> list[P.Pipeline]:
    if spec.nbytes < SMALL_TENSOR_BYTES:
        return [P.Pipeline()]
    chains = ((), (Zstd(level),))
    out = [P.Pipeline(array_bytes=Raw(), stream_chains=chains)]
    if spec.storage_dtype.itemsize > 1:
        out.append(P.Pipeline(array_bytes=BytePlanes(), stream_chains=chains))
    return out


def encode(array: np.ndarray, spec: TensorSpec, candidates: list[P.Pipeline]) -> P.EncodedTensor:
    best = None
    for pipe in candidates:
        enc = P.encode(array, spec, pipe)
        if best is None or enc.stored_bytes < best.stored_bytes:
            best = enc
    return best
