"""An archive of exactly what was trained: shared weights as their codebook and indices, pruned
weights as their survivors and positions, with no second quantization.

A weight trained by :class:`nnar.torch.Compression` holds at most 2**bits distinct values (plus
zeros). ``nnar.codebook`` with no quantizer stores a tensor's own distinct bit patterns as its
table, and ``nnar.sparse`` stores exactly the nonzero elements, so both are lossless here: the
archive's digests are those of the trained tensors, and unpacking gives them back bit for bit.
Which layout (dense codebook, survivors by gaps of 4, 5 or 8 bits or by bitmask, each stream
raw, zstd or Huffman) is simply the smallest; every other tensor is packed losslessly as usual.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping

import numpy as np

from .. import api, dtypes, planner
from .. import pipeline as P
from ..archive import ArchiveWriter, TensorInfo
from ..codecs.abc import TensorSpec
from ..codecs.codebook import Codebook
from ..codecs.raw import Raw
from ..codecs.byteplanes import BytePlanes
from ..codecs.sparse import Sparse
from ..formats import torch as torch_format
from ..lossy import chains

#: gap widths tried for positions: Han et al. use 5 bits for fully connected layers, 8 for
#: convolutions; 4 suits the densest survivors
GAP_BITS = (4, 5, 8)
MAX_SHARED = 256  # the largest codebook nnar.codebook holds (8-bit indices)
MIN_SPARSITY = 0.25


def _index_bits(distinct: int) -> int:
    return max(1, math.ceil(math.log2(distinct))) if distinct > 1 else 1


def exact_candidates(array: np.ndarray, spec: TensorSpec, level: int) -> list[P.Pipeline] | None:
    """Lossless layouts for a trained float tensor that has few distinct values or zeros (None:
    neither, so the usual lossless packing suits it)."""
    bits = dtypes.bit_patterns(array.reshape(-1))
    live = bits != 0
    n_live = int(np.count_nonzero(live))
    distinct_all = np.unique(bits)
    distinct_live = distinct_all[distinct_all != 0]
    shared = distinct_all.size <= MAX_SHARED
    if not shared and n_live > bits.size * (1 - MIN_SPARSITY):
        return None  # a few stray zeros: positions would cost more than they save
    plain = [Raw(), BytePlanes()] if spec.storage_dtype.itemsize > 1 else [Raw()]
    ch = chains(level)
    out = [P.Pipeline((), v, ch) for v in plain]
    if shared:
        out.append(P.Pipeline((), Codebook(_index_bits(distinct_all.size)), ch))
    if n_live < bits.size:
        inner = [Codebook(_index_bits(distinct_live.size))] if distinct_live.size <= MAX_SHARED else plain
        for v in inner:
            out += [P.Pipeline((), Sparse("gaps", v, g), ch) for g in GAP_BITS]
            out.append(P.Pipeline((), Sparse("bitmask", v), ch))
    return out


def pack(model: Any, dst: api.PathOrFile | None = None, *, level: int = planner.DEFAULT_LEVEL,
         metadata: Mapping[str, str] | None = None, force: bool = False) -> list[TensorInfo] | bytes:
    """Pack a model (or its state dict) trained with :class:`nnar.torch.Compression` into an
    archive at ``dst`` (a path, ``"-"`` or a binary file; none: return the bytes), storing each
    tensor exactly: pruned weights sparse, shared weights as codebook + indices, the rest (biases,
    buffers) losslessly. Unpacking (:func:`nnar.torch.load`, ``nnar unpack``) gives back the very
    tensors trained, bit for bit, with the state dict's keys, order and ties."""
    torch_format._torch()
    state = model.state_dict() if hasattr(model, "state_dict") else model
    if dst is None:
        buf = io.BytesIO()
        pack(state, buf, level=level, metadata=metadata)
        return buf.getvalue()
    m = torch_format.model_from_state_dict(state)
    aliases: dict[str, list[str]] = {}
    for alias, target in m.aliases.items():
        aliases.setdefault(target, []).append(alias)
    with api._output(dst, force, ()) as out:
        with ArchiveWriter(out, metadata={**m.metadata, **(metadata or {})}, source_format=m.source_format,
                           level=level,
                           structure=(m.source_format, m.structure) if m.structure is not None else None) as w:
            for name, arr, dt in m.tensors():
                cands = None
                if dt in dtypes.FLOAT_DTYPES and arr.size:
                    cands = exact_candidates(arr, TensorSpec(dt, arr.shape), level)
                w.write(name, arr, dtype=dt, aliases=aliases.pop(name, ()), pipeline=cands)
    return w.infos
