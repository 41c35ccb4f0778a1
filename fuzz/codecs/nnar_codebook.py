"""Hook for fuzz_codecs.py: nnar.codebook inputs from a real encoding, then damaged.

A real codebook and packed indices for a fuzzed table (any dtype, any width), with an index
byte, the size param or the table length changed, reach the index-range and padding checks.
"""

import numpy as np

from nnar.codecs.codebook import Codebook

CODEC_ID = "nnar.codebook"


MAX_ELEMENTS = 1 << 14  # larger specs get a trivial input (the harness's memory budget)


def inputs(take, spec):
    bits = take.byte() % 8 + 1
    n = spec.size
    if n > MAX_ELEMENTS:
        return {"bits": bits}, {"size": 1}, {}
    raw = take.sized(2)
    idx = np.frombuffer((raw or b"\0") * (n // max(len(raw), 1) + 1), np.uint8)[:n] & np.uint8((1 << bits) - 1)
    width = (1 << bits) * spec.storage_dtype.itemsize
    table = np.frombuffer(take.sized(2).ljust(width, b"\1")[:width], spec.storage_dtype)
    array = table[idx].reshape(spec.shape)
    codec = Codebook(bits)
    try:
        streams, params = codec.encode(array, spec)
    except ValueError:
        return {"bits": bits}, {"size": 1}, {}
    streams = {k: bytearray(v) for k, v in streams.items()}
    op = take.byte() % 4
    if op == 1 and streams["indices"]:
        streams["indices"][take.uint(2) % len(streams["indices"])] ^= take.byte() or 1
    elif op == 2:
        params["size"] = take.byte() % ((1 << bits) + 2)
    elif op == 3:
        del streams["codebook"][take.byte() % (len(streams["codebook"]) + 1):]
    return codec.get_config(), params, {k: bytes(v) for k, v in streams.items()}
