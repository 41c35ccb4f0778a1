#!/usr/bin/env python3
"""Fuzz harness: a PyTorch checkpoint (``torch.save``), as ``nnar pack`` reads it.

Entry point :func:`test_one_input`: the bytes are a checkpoint, read by nnar's torch reader
(``torch.load(weights_only=True)``) and packed with ``nnar.pack`` (laws in input_formats.py).
A result or an ``nnar.NnarError``. Without torch installed every input is a ``missing-extra``
error, which the contract allows.

    python fuzz/fuzz_torch.py /tmp/fz/torch fuzz/corpus/torch -max_total_time=600 -max_len=16384
"""

from __future__ import annotations

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import fuzz_main  # noqa: E402
from input_formats import check, from_bytes  # noqa: E402

NAME = "torch"


def test_one_input(data: bytes) -> None:
    with warnings.catch_warnings():  # "left out 'epoch'": a checkpoint's other entries, not a failure
        warnings.simplefilter("ignore")
        check("torch", from_bytes(bytes(data)))


if __name__ == "__main__":
    fuzz_main(test_one_input)
