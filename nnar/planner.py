"""Which pipeline a tensor gets. Lossless for now: the smallest of a few candidates.

Candidates are cheap to list and the encoder keeps the smallest result, so a new idea is one
more candidate, never a new rule. Per stream, ``Pipeline.stream_chains`` already keeps zstd only
where it shrinks the stream, so incompressible mantissa planes are stored verbatim and cost
nothing to decode.
"""

from __future__ import annotations

import msgpack
import numpy as np

from . import dtypes
from . import pipeline as P
from .codecs.abc import TensorSpec
from .codecs.byteplanes import BytePlanes
from .codecs.raw import Raw
from .codecs.zstd import ENTROPY, Zstd

DEFAULT_LEVEL = 3
#: below this many bytes a tensor is stored raw: compression cannot pay for its own framing
SMALL_TENSOR_BYTES = 64


def stream_chains(level: int = DEFAULT_LEVEL) -> tuple[tuple, ...]:
    """Per stream, fastest first: stored as it is, entropy coded (few matches: exponent planes),
    LZ at level 1, LZ at the user's level (repeated values). pipeline.encode takes the first
    that is within a hair of the smallest, so slow levels run only where they pay."""
    lz = (Zstd(1),) if level == 1 else (Zstd(1), Zstd(level))
    return ((), (ENTROPY,), *((c,) for c in lz))


def lossless_candidates(spec: TensorSpec, level: int = DEFAULT_LEVEL) -> list[P.Pipeline]:
    if spec.nbytes < SMALL_TENSOR_BYTES:
        return [P.Pipeline()]
    chains = stream_chains(level)
    out = [P.Pipeline(array_bytes=Raw(), stream_chains=chains)]
    if spec.storage_dtype.itemsize > 1:
        out.append(P.Pipeline(array_bytes=BytePlanes(), stream_chains=chains))
    return out


#: tensors larger than this choose their pipeline on a sample, then encode once
SAMPLE_ABOVE_BYTES = 256 << 10


def sample(array: np.ndarray) -> np.ndarray:
    """A few contiguous runs spread over the tensor (flattened), about 1/16 of it and at most
    256 KiB: long enough for zstd to find the local repeats it would find in the whole."""
    flat = array.reshape(-1)
    cap = max(1, (256 << 10) // flat.itemsize)
    return np.concatenate([flat[a:b] for a, b in P.sample_runs(flat.size, cap=cap)])


def repetitive(array: np.ndarray, probe: int = 16384) -> bool:
    """Whether a tensor repeats its values a lot (fixed tables such as STFT bases, embeddings
    padded with copies): its repeats can sit far apart, where no sample sees them, so such a
    tensor is judged on its whole. Trained weights have nearly all values distinct."""
    flat = array.reshape(-1)
    step = max(1, flat.size // probe)
    bits = np.sort(dtypes.bit_patterns(flat[::step][:probe]))  # bit patterns: NaN-safe
    distinct = 1 + int(np.count_nonzero(bits[1:] != bits[:-1])) if bits.size else 0
    return distinct < bits.size // 2


def cost(enc: P.EncodedTensor) -> int:
    """Bytes a candidate adds to the archive: its segments and what describing them takes."""
    described = [enc.pipeline, [[s.name, s.raw_length, s.raw_length, s.codecs] for s in enc.segments]]
    return enc.stored_bytes + len(msgpack.packb(described, use_bin_type=True))


def encode(array: np.ndarray, spec: TensorSpec, candidates: list[P.Pipeline]) -> P.EncodedTensor:
    """Encode with the candidate that costs the fewest bytes (judged on a sample when large)."""
    if len(candidates) > 1 and spec.nbytes > SAMPLE_ABOVE_BYTES and not repetitive(array):
        s = sample(array)
        s_spec = TensorSpec(spec.dtype, s.shape)
        candidates = [min(candidates, key=lambda pipe: cost(P.encode(s, s_spec, pipe)))]
    return min((P.encode(array, spec, pipe) for pipe in candidates), key=cost)
