"""PyTorch state dicts straight into and out of nnar archives, with no model file in between.

>>> import nnar.torch                                                       # doctest: +SKIP
>>> nnar.torch.save(model.state_dict(), "model.nnar", config="int8")        # doctest: +SKIP
>>> model.load_state_dict(nnar.torch.load("model.nnar"))                    # doctest: +SKIP

``load`` gives back what ``torch.save`` of the packed state dict would have given: the original
dtypes (bfloat16 included), the key order, tied weights as one shared tensor, and the module
versions (``_metadata``), all read from the archive (nnar.formats.torch describes how). torch is
imported only here, never by ``import nnar``.

Trained compression (Deep Compression with retraining, in the user's own loop):
:class:`Compression` (pruning and weight sharing held through training), :func:`sensitivity`,
:func:`allocate` and :func:`schedule` (per-layer budgets), :func:`pack` (what was trained,
stored exactly).
"""

from __future__ import annotations

import collections
from typing import Any, Mapping

from .. import api
from ..archive import StreamReader, TensorInfo
from ..formats import torch as torch_format
from ..limits import DEFAULT_LIMITS, Limits


def load(src: api.PathOrFile | bytes, *, limits: Limits = DEFAULT_LIMITS,
         verify: bool = False) -> "collections.OrderedDict[str, Any]":
    """Unpack an archive (a path, ``"-"``, a binary file or its bytes) to a state dict of torch
    tensors, ready for ``model.load_state_dict(..., strict=True)``. Memory is about the model.

    An archive packed from another format works too: its tensors in archive order, each alias
    sharing its target's tensor. ``verify`` checks each tensor's digest as it is read."""
    torch_format._torch()  # MissingExtra before anything is read
    with api._input(src) as f:
        reader = StreamReader(f, limits, verify=verify)
        found = reader.structure
        structure = found[1] if found is not None and found[0] == "torch" else None
        return torch_format.build_state_dict(((info.name, arr, info.dtype) for info, arr in reader), structure)


def save(state_dict: Mapping[str, Any], dst: api.PathOrFile | None = None, **pack_kwargs: Any
         ) -> list[TensorInfo] | bytes:
    """Pack a state dict of torch tensors (``model.state_dict()``) into an archive at ``dst``
    (or return its bytes): ``nnar.pack(state_dict, dst, **pack_kwargs)``, which keeps tied weights
    as aliases and the key order and module versions as the archive's structure."""
    torch_format._torch()
    return api.pack(state_dict, dst, **pack_kwargs)


from .compress import Compression  # noqa: E402  (none of these imports torch at import time)
from .pack import pack  # noqa: E402
from .budget import Plan, Scan, allocate, schedule, sensitivity  # noqa: E402

__all__ = ["load", "save", "Compression", "pack", "sensitivity", "allocate", "schedule", "Plan", "Scan"]
