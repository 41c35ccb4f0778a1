#!/usr/bin/env python3
"""Fuzz harness: a NumPy .npz file, as ``nnar pack`` reads it.

Entry point :func:`test_one_input`: the bytes are an .npz file, read by nnar's npz reader and
packed with ``nnar.pack`` (laws in input_formats.py). A result or an ``nnar.NnarError``.

    python fuzz/fuzz_npz.py /tmp/fz/npz fuzz/corpus/npz -max_total_time=600 -max_len=16384
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import fuzz_main  # noqa: E402
from input_formats import check, from_bytes  # noqa: E402

NAME = "npz"


def test_one_input(data: bytes) -> None:
    check("npz", from_bytes(bytes(data)))


if __name__ == "__main__":
    fuzz_main(test_one_input)
