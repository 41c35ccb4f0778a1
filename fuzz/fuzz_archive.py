#!/usr/bin/env python3
"""Fuzz harness: a whole archive, read every way a user can.

Entry point :func:`test_one_input`: the bytes are an archive. They are read (1) in order from
memory with ``nnar.unpack``, (2) in order from a pipe-like stream with ``nnar.StreamReader``
checking every digest, and (3) at random from a seekable file with ``nnar.open``: list, info,
read every tensor, ``verify``. Each may return or raise an ``nnar.NnarError`` (common.py).

Every input is read twice: as it is, and with its CRCs recomputed (common.fix_crcs), so that
mutations reach the checks behind the checksums.

One more law, since it costs nothing: when the full in-order check (2) passes, the archive is
valid, so (1) and (3) must succeed too and give the same tensors, bit for bit.

    python fuzz/fuzz_archive.py fuzz/corpus/archive -max_total_time=1800
"""

from __future__ import annotations

import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import LIMITS, ContractViolation, NonSeekable, call, fuzz_main, with_crcs_fixed  # noqa: E402

import nnar  # noqa: E402

NAME = "archive"


def _stream(data: bytes):
    return [(info.name, arr) for info, arr in nnar.StreamReader(NonSeekable(data, 1000), LIMITS, verify=True)]


def _random(data: bytes):
    # a BufferedReader is not a BytesIO: this takes the seekable-file path, as a real file does
    with nnar.open(io.BufferedReader(io.BytesIO(data)), LIMITS) as a:
        names = a.names()
        infos = a.infos()
        if [i.name for i in infos] != names or len(a) != len(names):
            raise ContractViolation(f"names() {names!r:.200} disagree with infos() {[i.name for i in infos]!r:.200}")
        out = []
        for name in names:
            arr = call(a.read, name)
            if arr is None:
                return None
            out.append((name, arr))
        return out if call(a.verify) is not None else None


def _same(a: list, b: list) -> bool:
    return [n for n, _ in a] == [n for n, _ in b] and all(
        x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes() for (_, x), (_, y) in zip(a, b))


def _check_arrays(result, how: str) -> None:
    for name, arr in result:
        if not isinstance(name, str) or type(arr).__name__ != "ndarray":
            raise ContractViolation(f"{how}: expected (str, ndarray), found ({type(name)}, {type(arr)})")


def check_archive(data: bytes) -> None:
    mem = call(nnar.unpack, data, limits=LIMITS)
    mem = list(mem.items()) if mem is not None else None
    stream = call(_stream, data)
    rand = call(_random, data)
    for result, how in ((mem, "unpack"), (stream, "StreamReader"), (rand, "open")):
        if result is not None:
            _check_arrays(result, how)
    if stream is not None:  # a valid archive: every reader must read it, and read the same
        if mem is None or not _same(stream, mem):
            raise ContractViolation("StreamReader(verify=True) read the archive, nnar.unpack "
                                    + ("failed" if mem is None else "gave different tensors"))
        if rand is None or not _same(stream, rand):
            raise ContractViolation("StreamReader(verify=True) read the archive, nnar.open "
                                    + ("failed" if rand is None else "gave different tensors"))


test_one_input = with_crcs_fixed(check_archive)


if __name__ == "__main__":
    fuzz_main(test_one_input)
