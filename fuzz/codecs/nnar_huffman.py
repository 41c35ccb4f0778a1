"""Hook for fuzz_codecs.py: nnar.huffman inputs built from real streams, then damaged.

Random bytes almost never hold a valid code-length table (256 random nibbles rarely have a
Kraft sum of exactly 1), so the bit walk would never run. A real stream of fuzzed content
(skewed, so codes get long), cut, extended, or with its count, one code length, one code byte or
the padding changed, reaches the walk and every check after it.
"""

from nnar.codecs.huffman import COUNT_SIZE, HEADER_SIZE, Huffman

CODEC_ID = "nnar.huffman"


def _skew(content: bytes, how: int) -> bytes:
    if how == 1:  # trailing zeros: value k with probability 2^-(k+1), codes up to 9 bits
        return bytes(((b ^ (b - 1)).bit_length() - 1) if b else 8 for b in content)
    if how == 2:  # two to seven distinct values
        return bytes(b % (2 + content[0] % 6) for b in content) if content else content
    if how == 3:  # one symbol: the single-symbol code
        return content[:1] * len(content)
    return content


def inputs(take, spec):
    content = _skew(take.sized(2), take.byte() % 4)
    stream = bytearray(Huffman().encode(content)[0])
    op = take.byte() % 7
    if op == 1:  # cut
        del stream[take.uint(2) % (len(stream) + 1):]
    elif op == 2:  # bytes after the codes
        stream += take.sized(1) or b"\0"
    elif op == 3:  # one byte changed anywhere
        stream[take.uint(2) % len(stream)] ^= take.byte() or 1
    elif op == 4:  # one code-length byte changed
        stream[COUNT_SIZE + take.byte() % (HEADER_SIZE - COUNT_SIZE)] ^= take.byte() or 1
    elif op == 5:  # count moved by up to ±32768, or replaced
        count = int.from_bytes(stream[:COUNT_SIZE], "little")
        count = take.uint(8) if take.byte() % 4 == 0 else max(0, count + take.uint(2) - 32768)
        stream[:COUNT_SIZE] = (count % (1 << 64)).to_bytes(COUNT_SIZE, "little")
    elif op == 6 and len(stream) > HEADER_SIZE:  # padding bits set
        stream[-1] |= take.byte() or 1
    return {}, {}, bytes(stream)
