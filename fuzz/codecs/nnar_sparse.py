"""Hook for fuzz_codecs.py: nnar.sparse inputs from a real encoding, then damaged.

Random bytes almost never form a gap stream whose listed count matches ``count``; a real
encoding of a fuzzed array (bitmask or gaps of any width, a raw or byte-plane nested stage),
with one stream byte, the count or the invert flag changed, reaches the position checks.
"""

import numpy as np

from nnar.codecs.byteplanes import BytePlanes
from nnar.codecs.raw import Raw
from nnar.codecs.sparse import Sparse

CODEC_ID = "nnar.sparse"


#: larger specs get a trivial input: encoding one here would spend the harness's memory budget
MAX_ELEMENTS = 1 << 14


def inputs(take, spec):
    n = spec.size
    if n > MAX_ELEMENTS:
        return {"positions": "bitmask", "values": {"codec": "nnar.raw", "config": {}}}, {}, {}
    raw = take.sized(2)
    itemsize = spec.storage_dtype.itemsize
    data = (raw * (n * itemsize // max(len(raw), 1) + 1))[: n * itemsize] if raw else bytes(n * itemsize)
    array = np.frombuffer(data.ljust(n * itemsize, b"\0"), spec.storage_dtype).copy().reshape(spec.shape)
    flat = array.reshape(-1)
    density = take.byte()
    keep = ((np.arange(n, dtype=np.uint32) * np.uint32(2654435761)) >> np.uint32(24)) < density
    flat[~keep] = 0
    inner = BytePlanes() if take.byte() % 2 and itemsize > 1 else Raw()
    codec = Sparse("bitmask", inner) if take.byte() % 3 == 0 else Sparse("gaps", inner, take.byte() % 8 + 1)
    streams, params = codec.encode(array, spec)
    streams = {k: bytearray(v) for k, v in streams.items()}
    op = take.byte() % 5
    if op == 1:
        params["count"] = take.uint(4) % (n + 2)
    elif op == 2:
        params["invert"] = not params["invert"]
    elif op == 3:
        s = streams["positions"]
        if s:
            s[take.uint(2) % len(s)] ^= take.byte() or 1
    elif op == 4:
        s = streams["positions"]
        cut = take.uint(2) % (len(s) + 2)
        del s[cut:]
        s += take.sized(1)
    return codec.get_config(), params, {k: bytes(v) for k, v in streams.items()}
