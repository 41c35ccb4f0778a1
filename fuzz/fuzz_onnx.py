#!/usr/bin/env python3
"""Fuzz harness: an ONNX model and its external data, as ``nnar pack`` reads them.

Entry point :func:`test_one_input`: the bytes are ``u16 n`` (little-endian), ``n`` bytes of
model (a ModelProto), and the rest: the contents of ``w.data``. Both are written to a directory
that also holds a FIFO (``w.fifo``), a directory (``sub``), and symbolic links pointing outside
it (``out`` → /etc/hostname, ``zero`` → /dev/zero), so that external data locations can name
each. The model is read by nnar's ONNX reader and packed with ``nnar.pack`` (laws in
input_formats.py): a result or an ``nnar.NnarError``, and never a read that blocks.

    python fuzz/fuzz_onnx.py /tmp/fz/onnx fuzz/corpus/onnx -max_total_time=600 -max_len=16384
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Take, fuzz_main, put_sized  # noqa: E402
from input_formats import check  # noqa: E402

try:  # imported now, not inside the first input (whose time it would be, under instrumentation)
    import onnx  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    pass

NAME = "onnx"
DATA_FILE = "w.data"

_DIR = tempfile.mkdtemp(prefix="nnar-fuzz-onnx-")
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
os.mkfifo(os.path.join(_DIR, "w.fifo"))
os.mkdir(os.path.join(_DIR, "sub"))
for _name, _target in (("out", "/etc/hostname"), ("zero", "/dev/zero")):
    os.symlink(_target, os.path.join(_DIR, _name))
MODEL = os.path.join(_DIR, "model.onnx")


def make_input(model: bytes, data: bytes = b"") -> bytes:
    """The input :func:`test_one_input` reads as this model and this ``w.data`` (seed corpora)."""
    return put_sized(model, 2) + data


def test_one_input(data: bytes) -> None:
    take = Take(bytes(data))
    model, ext = take.sized(2), take.rest()
    with open(MODEL, "wb") as f:
        f.write(model)
    with open(os.path.join(_DIR, DATA_FILE), "wb") as f:
        f.write(ext)
    check("onnx", lambda: open(MODEL, "rb"))


if __name__ == "__main__":
    fuzz_main(test_one_input)
