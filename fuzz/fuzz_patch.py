#!/usr/bin/env python3
"""Fuzz harness: a patch (spec/patch.md), applied to its base.

Entry point :func:`test_one_input`: the bytes are a patch. It is applied with ``nnar.patch``
to the base it names, when that is one of the frozen patch vectors' bases (otherwise to the
first of them, which must end in ``wrong-base``), from memory and from a pipe; and it is read
as a model archive, which must stop (a patch is not a model). Each may return or raise an
``nnar.NnarError`` (common.py). Inputs are also tried with their CRCs recomputed, so mutations
reach the checks behind the checksums.

Laws: the two applications agree, and a result that applies is the one its header promises.

    python fuzz/fuzz_patch.py fuzz/corpus/patch -max_total_time=1800
"""

from __future__ import annotations

import hashlib
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import LIMITS, ROOT, ContractViolation, NonSeekable, call, fuzz_main, with_crcs_fixed  # noqa: E402

import nnar  # noqa: E402
from nnar.container.records import RecordReader  # noqa: E402
from nnar.patching.apply import read_header  # noqa: E402

NAME = "patch"
_VECTORS = ROOT / "spec" / "vectors" / "patch"
BASES = {}
for _p in sorted(_VECTORS.glob("*.base.nnar")):
    _data = _p.read_bytes()
    BASES.setdefault(hashlib.sha256(_data).digest(), _data)
_FIRST = next(iter(BASES.values()))


def _base_for(data: bytes) -> bytes:
    try:
        header = read_header(RecordReader(io.BytesIO(data), LIMITS, patch=True))[0]
    except nnar.NnarError:
        return _FIRST
    return BASES.get(header.base_digest, _FIRST)


def _apply(base: bytes, patch) -> bytes:
    out = io.BytesIO()
    header = nnar.patch(base, patch, out, limits=LIMITS)
    if hashlib.sha256(out.getvalue()).digest() != header.result_digest:
        raise ContractViolation("nnar.patch returned a result other than its header promises")
    return out.getvalue()


def check_patch(data: bytes) -> None:
    base = _base_for(data)
    mem = call(_apply, base, data)
    piped = call(_apply, base, NonSeekable(data, 1000))
    if (mem is None) != (piped is None) or mem != piped:
        raise ContractViolation("applying from memory and from a pipe disagree")
    if mem is not None and call(nnar.unpack, data, limits=LIMITS) is not None:
        raise ContractViolation("a patch that applies was also read as a model archive")


test_one_input = with_crcs_fixed(check_patch)


if __name__ == "__main__":
    fuzz_main(test_one_input)
