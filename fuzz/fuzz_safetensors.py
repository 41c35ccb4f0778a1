#!/usr/bin/env python3
"""Fuzz harness: a .safetensors file, as ``nnar pack`` reads it.

Entry point :func:`test_one_input`: the bytes are a safetensors file, read by nnar's reader and
packed with ``nnar.pack`` (laws in input_formats.py). A result or an ``nnar.NnarError``.

One more law: nnar's reader is at least as strict as the safetensors library's, so a file nnar
reads the library must read too (when it is installed).

    python fuzz/fuzz_safetensors.py /tmp/fz/safetensors fuzz/corpus/safetensors -max_total_time=600
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ContractViolation, fuzz_main  # noqa: E402
from input_formats import check, from_bytes  # noqa: E402

try:
    from safetensors import deserialize as _library_read  # the Rust reader, framework-free
except ImportError:  # pragma: no cover - depends on the environment
    _library_read = None

NAME = "safetensors"


def test_one_input(data: bytes) -> None:
    data = bytes(data)
    if check("safetensors", from_bytes(data)) and _library_read is not None:
        try:
            _library_read(data)
        except Exception as e:  # noqa: BLE001  SafetensorError
            raise ContractViolation(f"nnar read a safetensors file the library refuses ({e})") from e


if __name__ == "__main__":
    fuzz_main(test_one_input)
