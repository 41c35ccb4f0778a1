#!/usr/bin/env python3
"""Fuzz harness: each registered codec's decoder, fed hostile config, params and streams.

Entry point :func:`test_one_input`. The first byte picks the codec among
``nnar.codecs.registered()`` (sorted by id), so a codec registered tomorrow is fuzzed with no
change here. The rest of the input is read by :class:`common.Take`:

    byte 0          codec: sorted ids[b % n]; with a hook (below), (b // n) odd uses the hook
    byte 1          dtype: DTYPE_NAMES[b % 13]
    byte 2, dims    rank = b % 4, then one byte per dimension
    u16 + bytes     config, msgpack (anything; invalid msgpack is {})
    u16 + bytes     params, msgpack (a map, else {})
    then, by the codec's kind:
      bytes→bytes   u32 max_length (mod max_tensor_bytes + 1), the rest is the stored stream
      array→bytes   for each stream the codec names but the last, u32 + bytes; the last is the rest
      array→array   the rest, cut or zero-padded to the encoded spec's bytes, is the input array

The contract (common.py): the codec returns, or raises an ``nnar.NnarError``; and what it
returns has the promised form (bytes→bytes: at most ``max_length`` bytes; the others: an array
of the spec's storage dtype and shape). A codec's decoder is called directly, as
nnar.pipeline calls it, with sizes already checked against the limits.

Hooks: a codec whose params are structured (a Huffman table, a codebook, sparse positions)
gets more out of fuzzing when its inputs are built, not guessed. Adding one is one small file
``fuzz/codecs/<any>.py`` defining ``CODEC_ID`` and ``inputs(take, spec) -> (config, params,
payload)`` (payload as above: the stored bytes, a {stream: bytes} map, or the array's bytes);
see fuzz/codecs/nnar_zstd.py.

    python fuzz/fuzz_codecs.py fuzz/corpus/codecs -max_total_time=1800
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import LIMITS, ContractViolation, Take, call, fuzz_main, put_sized  # noqa: E402

import msgpack  # noqa: E402
import numpy as np  # noqa: E402

from nnar import dtypes  # noqa: E402
from nnar.codecs import registered  # noqa: E402
from nnar.codecs.abc import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec, TensorSpec  # noqa: E402

NAME = "codecs"
#: bytes of an array the harness builds (dims are one byte each, so shapes stay small anyway)
MAX_ARRAY_BYTES = 1 << 22


def _load_hooks() -> dict:
    hooks = {}
    for path in sorted((Path(__file__).resolve().parent / "codecs").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"nnar_fuzz_hook_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        hooks[mod.CODEC_ID] = mod
    return hooks


HOOKS = _load_hooks()


def codec_ids() -> list[str]:
    return sorted(registered())


def _msgpack(raw: bytes):
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001  (any junk: the generic path just gets no config)
        return {}


def _spec(take: Take) -> TensorSpec:
    dtype = dtypes.DTYPE_NAMES[take.byte() % len(dtypes.DTYPE_NAMES)]
    return TensorSpec(dtype, tuple(take.byte() for _ in range(take.byte() % 4)))


def test_one_input(data: bytes) -> None:
    ids = codec_ids()
    take = Take(bytes(data))
    b0 = take.byte()
    cid = ids[b0 % len(ids)]
    cls = registered()[cid]
    spec = _spec(take)
    if spec.nbytes > MAX_ARRAY_BYTES:
        return
    hook = HOOKS.get(cid)
    if hook is not None and (b0 // len(ids)) % 2:
        config, params, payload = hook.inputs(take, spec)
        max_length = take.uint(4) % (LIMITS.max_tensor_bytes + 1)
    else:
        config, params = _msgpack(take.sized()), _msgpack(take.sized())
        if not isinstance(params, dict):
            params = {}
        payload = None
        max_length = None
    codec = call(cls.from_config, config)
    if codec is None:
        return

    if isinstance(codec, BytesBytesCodec):
        if max_length is None:
            max_length = take.uint(4) % (LIMITS.max_tensor_bytes + 1)
        stored = take.rest() if payload is None else payload
        out = call(codec.decode, stored, params, max_length)
        if out is not None and memoryview(out).nbytes > max_length:
            raise ContractViolation(f"{cid}: decoded {memoryview(out).nbytes} bytes, max_length {max_length}")
        return

    if isinstance(codec, ArrayBytesCodec):
        names = call(codec.stream_names, spec, params)
        if names is None:
            return
        if payload is None:
            payload = {}
            for k, name in enumerate(names):
                payload[name] = take.rest() if k == len(names) - 1 else take.sized(4)
        out = call(codec.decode, payload, spec, params)
    elif isinstance(codec, ArrayArrayCodec):
        in_spec = call(codec.encoded_spec, spec, params)
        if in_spec is None:
            return
        if not isinstance(in_spec, TensorSpec):
            raise ContractViolation(f"{cid}: encoded_spec returned {type(in_spec).__name__}")
        n = call(lambda: in_spec.nbytes)
        if n is None or n > MAX_ARRAY_BYTES:
            return
        raw = (take.rest() if payload is None else payload)[:n].ljust(n, b"\0")
        array = np.frombuffer(raw, in_spec.storage_dtype).reshape(in_spec.shape)
        out = call(codec.decode, array, spec, params)
    else:
        raise ContractViolation(f"{cid}: unknown codec kind {cls.kind!r}")
    if out is not None and not (isinstance(out, np.ndarray) and out.dtype == spec.storage_dtype
                                and out.shape == spec.shape):
        found = f"{out.dtype}{list(out.shape)}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ContractViolation(f"{cid}: decode returned {found}, expected {spec.storage_dtype}{list(spec.shape)}")


def make_input(codec_id: str, spec: TensorSpec, config, params, payload, max_length: int = 0) -> bytes:
    """The input that :func:`test_one_input` reads as this call (generic path; for seeds).

    ``payload``: the stored bytes (bytes→bytes), a {stream: bytes} map in the codec's stream
    order (array→bytes), or the input array's bytes (array→array). Shapes must have dims < 256.
    """
    ids = codec_ids()
    cls = registered()[codec_id]
    if issubclass(cls, BytesBytesCodec):  # the spec plays no part: keep it small
        spec = TensorSpec(spec.dtype, ())
    out = bytearray([ids.index(codec_id), dtypes.DTYPE_NAMES.index(spec.dtype), len(spec.shape), *spec.shape])
    out += put_sized(msgpack.packb(config, use_bin_type=True)) + put_sized(msgpack.packb(params, use_bin_type=True))
    if issubclass(cls, BytesBytesCodec):
        out += max_length.to_bytes(4, "little") + payload
    elif issubclass(cls, ArrayBytesCodec):
        streams = list(payload.values())
        for s in streams[:-1]:
            out += put_sized(bytes(s), 4)
        out += bytes(streams[-1]) if streams else b""
    else:
        out += payload
    return bytes(out)


if __name__ == "__main__":
    fuzz_main(test_one_input)
