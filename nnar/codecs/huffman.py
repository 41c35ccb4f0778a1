"""``nnar.huffman``: order-0 canonical Huffman coding of bytes (spec/codecs/huffman.md).

The stream is the decoded length, 256 four-bit code lengths and the codes, most significant bit
first. On a stream with no repeats to find (a float's exponent plane, packed 4-bit indices) it is
as small as ``nnar.zstd``'s entropy profile or a little smaller, but far slower to decode
(tens of MB/s against zstd's GB/s). :func:`encoded_size` gives its exact size from a histogram,
so a planner can compare without encoding.

Speed comes from two places: the encoder joins the codes of four symbols into one 64-bit word
with numpy and adds the words into place (their bits never overlap, so adding is or-ing); the
decoder is bitarray's decode tree, which walks the code in C.
"""

from __future__ import annotations

from itertools import islice

import numpy as np
from bitarray import bitarray, decodetree
from bitarray.util import int2ba

from . import register
from .abc import BytesBytesCodec
from ..errors import CodecDataError

COUNT_SIZE = 8  # u64 little-endian: the number of decoded bytes
LENGTHS_SIZE = 128  # 256 four-bit code lengths, symbol 2i in the low nibble of byte i
HEADER_SIZE = COUNT_SIZE + LENGTHS_SIZE
MAX_CODE_LENGTH = 15
#: symbols the encoder turns into words at a time (a multiple of 4; bounds its temporaries)
_CHUNK = 1 << 16


def _histogram(hist) -> list[int]:
    h = np.asarray(hist)
    if h.shape != (256,) or h.dtype.kind not in "iu":
        raise ValueError(f"expected 256 integer counts, found {h.dtype}{list(h.shape)}")
    if (h < 0).any():
        raise ValueError(f"expected counts ≥ 0, found {h.min()} for byte {int(h.argmin())}")
    return [int(x) for x in h.tolist()]


def _huffman_depths(w: list[int]) -> list[int]:
    """Huffman code lengths of ascending weights (two-queue method; a leaf wins ties)."""
    n = len(w)
    weight, parent = w + [0] * (n - 1), [0] * (2 * n - 1)
    leaf, node = 0, n  # fronts of the leaf queue and of the queue of merged nodes
    for new in range(n, 2 * n - 1):
        pair = []
        for _ in range(2):
            if leaf < n and (node == new or weight[leaf] <= weight[node]):
                pair.append(leaf)
                leaf += 1
            else:
                pair.append(node)
                node += 1
        weight[new] = weight[pair[0]] + weight[pair[1]]
        parent[pair[0]] = parent[pair[1]] = new
    depth = [0] * (2 * n - 1)
    for i in range(2 * n - 3, -1, -1):  # a parent is always created after its children
        depth[i] = depth[parent[i]] + 1
    return depth[:n]


def _package_merge(w: list[int], limit: int) -> list[int]:
    """Optimal code lengths of at most ``limit`` bits for ascending weights (Larmore and
    Hirschberg's package-merge: ``2n − 2`` cheapest items of the top level; each item taken at
    a level adds one bit to every leaf under it)."""
    n = len(w)
    leaves = [(x, 0) for x in w]
    levels = [leaves]  # deepest first
    for _ in range(limit - 1):
        below = levels[-1]
        packages = [(below[i][0] + below[i + 1][0], 1) for i in range(0, len(below) - 1, 2)]
        levels.append(sorted(leaves + packages))  # a leaf before a package of the same weight
    depth = [0] * n
    take = 2 * n - 2
    for items in reversed(levels):
        taken = sum(1 for item in items[:take] if item[1] == 0)  # the `taken` lightest leaves
        for i in range(taken):
            depth[i] += 1
        take = 2 * (take - taken)
    return depth


def code_lengths(hist, limit: int = MAX_CODE_LENGTH) -> np.ndarray:
    """The code length of each byte value (0: absent) for a histogram of 256 counts.

    Optimal Huffman lengths, or, if one would exceed ``limit`` bits, optimal lengths of at most
    ``limit`` bits (package-merge). Equal counts are ordered by symbol (the lower one is merged
    first, so it never gets the shorter code): the result depends on the histogram only. One
    distinct symbol gets length 1; otherwise the code is complete."""
    h = _histogram(hist)
    used = [s for s in range(256) if h[s]]
    lengths = np.zeros(256, np.uint8)
    if len(used) <= 1:
        lengths[used] = 1
        return lengths
    if not isinstance(limit, int) or not 1 <= limit <= 255 or len(used) > 1 << limit:
        raise ValueError(f"{len(used)} symbols need codes of more than limit={limit!r} bits")
    order = sorted(used, key=lambda s: (h[s], s))
    weights = [h[s] for s in order]
    depth = _huffman_depths(weights)
    if max(depth) > limit:
        depth = _package_merge(weights, limit)
    lengths[order] = depth
    return lengths


def encoded_size(hist) -> int:
    """The exact length of :meth:`Huffman.encode`'s output for data with this byte histogram."""
    h = _histogram(hist)
    total_bits = sum(n * int(length) for n, length in zip(h, code_lengths(h)))
    return HEADER_SIZE + -(-total_bits // 8)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Each symbol's code (RFC 1951 §3.2.2): by increasing length, then increasing symbol."""
    bl_count = np.bincount(lengths, minlength=MAX_CODE_LENGTH + 1).tolist()
    bl_count[0] = 0
    next_code, code = [0] * len(bl_count), 0
    for bits in range(1, len(bl_count)):
        code = (code + bl_count[bits - 1]) << 1
        next_code[bits] = code
    codes = np.zeros(256, np.uint64)
    for s in np.flatnonzero(lengths).tolist():
        codes[s] = next_code[lengths[s]]
        next_code[lengths[s]] += 1
    return codes


def _write_codes(symbols: np.ndarray, codes: np.ndarray, lengths: np.ndarray, words: np.ndarray) -> None:
    """Add the codes of ``symbols``, MSB first, into ``words`` (native uint64, bit 63 first)."""
    lengths = lengths.astype(np.uint64)
    pos = 0
    for start in range(0, len(symbols), _CHUNK):
        s = symbols[start:start + _CHUNK]
        c, ln = codes[s], lengths[s]
        if len(s) % 4:  # empty codes after the last symbol
            pad = 4 - len(s) % 4
            c, ln = np.concatenate([c, np.zeros(pad, np.uint64)]), np.concatenate([ln, np.zeros(pad, np.uint64)])
        # four codes of at most 15 bits make one group of at most 60 bits
        c = (c[0::2] << ln[1::2]) | c[1::2]
        ln = ln[0::2] + ln[1::2]
        group = (c[0::2] << ln[1::2]) | c[1::2]
        glen = ln[0::2] + ln[1::2]
        end = np.cumsum(glen)
        end += np.uint64(pos)
        begin = end - glen
        pos = int(end[-1])
        word = begin >> np.uint64(6)
        stop = (begin & np.uint64(63)) + glen  # where the group ends in its first word: up to 123
        spill = stop > 64
        part = np.where(spill, group >> (stop - np.uint64(64)), group << (np.uint64(64) - stop))
        first = np.flatnonzero(word[1:] != word[:-1]) + 1
        first = np.concatenate([[0], first])
        words[word[first]] += np.add.reduceat(part, first)
        sp = np.flatnonzero(spill)
        words[word[sp] + np.uint64(1)] += group[sp] << (np.uint64(128) - stop[sp])


def _histogram_of(data) -> np.ndarray:
    """Byte counts of ``data``, in chunks: np.bincount widens its input to int64, 8 bytes per
    byte, so one call over the whole output would cost 8 times the output."""
    symbols = np.frombuffer(data, np.uint8)
    hist = np.zeros(256, np.int64)
    for start in range(0, symbols.size, _CHUNK):
        hist += np.bincount(symbols[start:start + _CHUNK], minlength=256)
    return hist


def _fail(message: str) -> CodecDataError:
    return CodecDataError(f"nnar.huffman: {message}")


def _read_lengths(view: memoryview) -> np.ndarray:
    packed = np.frombuffer(view, np.uint8, LENGTHS_SIZE, COUNT_SIZE)
    lengths = np.empty(256, np.uint8)
    lengths[0::2] = packed & 15
    lengths[1::2] = packed >> 4
    return lengths


def _check_lengths(lengths: np.ndarray, used: np.ndarray, count: int) -> None:
    if count == 0:
        if used.size:
            raise _fail(f"count is 0, expected every code length 0, found {lengths[used[0]]} for symbol {used[0]}")
        return
    if used.size == 0:
        raise _fail(f"count is {count}, expected at least one code length, found all 0")
    if used.size == 1:
        if lengths[used[0]] != 1:
            raise _fail(f"one symbol ({used[0]}) has a code: expected its length 1, found {lengths[used[0]]}")
        return
    kraft = int(np.sum(np.left_shift(1, MAX_CODE_LENGTH - lengths[used].astype(np.int64))))
    if kraft != 1 << MAX_CODE_LENGTH:
        kind = "over-subscribed" if kraft > 1 << MAX_CODE_LENGTH else "incomplete"
        raise _fail(f"code lengths are {kind}: expected a Kraft sum of 1, found {kraft}/{1 << MAX_CODE_LENGTH}")


@register
class Huffman(BytesBytesCodec):
    codec_id = "nnar.huffman"
    #: decodes at tens of M symbols/s, where zstd's literal coder runs at GB/s
    slow_decode = True

    def __init__(self):
        pass

    def encode(self, data):
        symbols = np.frombuffer(memoryview(data).cast("B"), np.uint8)
        hist = np.bincount(symbols, minlength=256)
        lengths = code_lengths(hist)
        total_bits = int(hist @ lengths.astype(np.int64))
        nwords = -(-total_bits // 64)
        out = bytearray(HEADER_SIZE + 8 * nwords)
        out[:COUNT_SIZE] = len(symbols).to_bytes(COUNT_SIZE, "little")
        out[COUNT_SIZE:HEADER_SIZE] = (lengths[0::2] | lengths[1::2] << 4).tobytes()
        if np.count_nonzero(lengths) > 1:  # one symbol: every code is a 0 bit, nothing to write
            words = np.zeros(nwords + 1, np.uint64)  # + 1: empty codes after the end point there
            _write_codes(symbols, canonical_codes(lengths), lengths, words)
            dst = np.frombuffer(out, ">u8", nwords, HEADER_SIZE)
            dst[...] = words[:nwords]
            del dst  # the bytearray cannot shrink while a view holds it
        del out[HEADER_SIZE + -(-total_bits // 8):]
        return out, {}

    def encoded_bound(self, n: int) -> int:
        return HEADER_SIZE + -(-n * MAX_CODE_LENGTH // 8)

    def decode(self, data, params, max_length):
        view = memoryview(data).cast("B")
        if len(view) < HEADER_SIZE:
            raise _fail(f"expected at least {HEADER_SIZE} bytes (count and code lengths), found {len(view)}")
        count = int.from_bytes(view[:COUNT_SIZE], "little")
        if count > max_length:
            raise _fail(f"count declares {count} bytes, expected at most {max_length}")
        lengths = _read_lengths(view)
        used = np.flatnonzero(lengths)
        _check_lengths(lengths, used, count)
        bits = view[HEADER_SIZE:]
        if count == 0:
            if len(bits):
                raise _fail(f"count is 0, expected no code bytes, found {len(bits)}")
            return b""
        lo, hi = int(lengths[used].min()), int(lengths[used].max())
        least, most = -(-count * lo // 8), -(-count * hi // 8)
        if not least <= len(bits) <= most:
            raise _fail(f"{count} codes of {lo} to {hi} bits need {least} to {most} code bytes, found {len(bits)}")
        if used.size == 1:
            return self._decode_one(int(used[0]), count, bits)

        codes = canonical_codes(lengths)
        tree = decodetree({s: int2ba(int(codes[s]), int(lengths[s]), "big") for s in used.tolist()})
        try:
            # bitarray walks the code tree in C; the output grows in place (about 1.1 bytes per
            # symbol at the peak, nothing per symbol beyond it)
            out = bytearray(islice(bitarray(buffer=bits, endian="big").decode(tree), count))
        except ValueError:  # a complete code has no invalid bit string: the bits ran out
            raise _fail(f"the code bytes end inside a code, before all {count} symbols were read") from None
        if len(out) < count:
            raise _fail(f"the code bytes hold {len(out)} symbols, expected {count}")
        total_bits = int(_histogram_of(out) @ lengths.astype(np.int64))
        if len(bits) != -(-total_bits // 8):
            raise _fail(f"the {count} codes take {-(-total_bits // 8)} bytes, found {len(bits)} "
                        f"({len(bits) - -(-total_bits // 8)} bytes after them)")
        if total_bits % 8 and bits[-1] & (0xFF >> total_bits % 8):
            raise _fail(f"expected zero padding bits after the last code, found {bits[-1]:08b} in the last byte")
        return out

    @staticmethod
    def _decode_one(symbol: int, count: int, bits: memoryview) -> bytes:
        """One symbol, whose code is a single 0 bit: every bit, padding too, must be 0."""
        nonzero = np.flatnonzero(np.frombuffer(bits, np.uint8))
        if nonzero.size:
            i = int(nonzero[0])
            bit = 8 * i + 8 - int(bits[i]).bit_length()
            if bit < count:
                raise _fail(f"invalid code 1 at bit {bit} (symbol {bit} of {count}): the only code is 0")
            raise _fail(f"expected zero padding bits after the last code, found a 1 at bit {bit}")
        return bytes([symbol]) * count
