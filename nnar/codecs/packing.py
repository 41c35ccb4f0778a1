"""Index packing shared by the codebook and affine codecs (spec/codecs/packing.md).

``bits``-bit indices go into slots of ``slot_bits`` = the smallest of 1, 2, 4, 8 that holds them,
``8 // slot_bits`` slots per byte, the first index in the lowest bits. Byte-aligned slots keep
the patterns an entropy coder sees aligned (two 4-bit indices form one byte symbol, whose
Huffman code approaches the pair's entropy), and let the decoder expand one byte into all its
slots with a single table lookup: the fast path of every quantized tensor.
"""

from __future__ import annotations

import numpy as np

from .. import threads
from ..errors import CodecDataError

_GATHER_CHUNK = 1 << 14  # packed bytes per np.take
_PARALLEL_MIN_BYTES = 1 << 20  # per thread: below this, handing work over costs more than it saves


def slot_bits(bits: int) -> int:
    return 1 if bits <= 1 else 2 if bits <= 2 else 4 if bits <= 4 else 8


def packed_length(count: int, bits: int) -> int:
    per = 8 // slot_bits(bits)
    return -(-count // per)


def pack(indices: np.ndarray, bits: int) -> bytes:
    """Pack uint8 indices (each < 2**bits) into bytes."""
    s = slot_bits(bits)
    flat = np.ascontiguousarray(indices, dtype=np.uint8).reshape(-1)
    if s == 8:
        return flat.tobytes()
    per = 8 // s
    padded = np.zeros(packed_length(flat.size, bits) * per, np.uint8)
    padded[: flat.size] = flat
    slots = padded.reshape(-1, per)
    out = slots[:, 0].copy()
    for i in range(1, per):
        out |= slots[:, i] << np.uint8(s * i)
    return out.tobytes()


def byte_table(values: np.ndarray, bits: int) -> np.ndarray:
    """For each byte value 0..255, the ``8 // slot_bits`` values its slots select, as one row
    (``values`` has one entry per slot value, ``2 ** slot_bits`` in all)."""
    s = slot_bits(bits)
    per = 8 // s
    b = np.arange(256, dtype=np.uint16)
    slot = np.stack([(b >> (s * i)) & ((1 << s) - 1) for i in range(per)], axis=1)
    return values[slot]


def check_packed(data, count: int, bits: int, limit: int, codec_id: str, stream: str) -> np.ndarray:
    """The packed stream as uint8, checked: exact length, every index < ``limit``, unused slots
    of the last byte zero."""
    packed = np.frombuffer(data, np.uint8)
    expected = packed_length(count, bits)
    if packed.size != expected:
        raise CodecDataError(f"{codec_id}: stream {stream!r}: expected {expected} bytes, found {packed.size}")
    s = slot_bits(bits)
    per = 8 // s
    if limit < (1 << s) and packed.size:
        slot_vals = byte_table(np.arange(1 << s), bits)
        bad = (slot_vals >= limit).any(axis=1)
        if np.take(bad, packed).any():
            at = int(np.flatnonzero(np.take(bad, packed))[0])
            raise CodecDataError(f"{codec_id}: stream {stream!r}: byte {at} holds an index >= {limit} "
                                 f"(the table has {limit} entries)")
    used = count % per
    if used and packed[-1] >> (s * used):
        raise CodecDataError(f"{codec_id}: stream {stream!r}: expected zero bits in the {per - used} unused "
                             f"slots of the last byte, found {packed[-1]:#04x}")
    return packed


def expand(packed: np.ndarray, values: np.ndarray, count: int, bits: int) -> np.ndarray:
    """``values[index]`` for each of the ``count`` packed indices: one gather per byte."""
    s = slot_bits(bits)
    if s == 8:
        table = np.ascontiguousarray(values)
    else:
        per = 8 // s
        table = np.ascontiguousarray(byte_table(values, bits))  # (256, per)
        row = table.dtype.itemsize * per
        # a row as one scalar, so the gather moves whole rows (8 bytes: two float32, ...)
        row_dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(row, np.dtype((np.void, row)))
        table = table.view(row_dtype).reshape(256)
    rows = np.empty(packed.size, table.dtype)

    def gather(start: int, stop: int) -> None:
        # in chunks: np.take widens its indices to intp first, 8 bytes each, best done in cache
        for i in range(start, stop, _GATHER_CHUNK):
            j = min(i + _GATHER_CHUNK, stop)
            # mode="clip": no bounds check per index (25% faster); every index was checked
            # against the table by check_packed, and a byte indexes all 256 rows of a slot table
            np.take(table, packed[i:j], out=rows[i:j], mode="clip")

    # large streams in parts, one per decoding thread (np.take releases the GIL)
    threads.run_parts(gather, threads.split(packed.size, _PARALLEL_MIN_BYTES))
    return rows.view(values.dtype).reshape(-1)[:count]
