"""Hook for fuzz_codecs.py: nnar.zstd inputs built from real frames, then damaged.

Random bytes rarely get past a zstd frame header; a real frame of fuzzed content, cut,
extended or with one byte changed, reaches the block walk and the declared-size checks.
"""

import zstandard

CODEC_ID = "nnar.zstd"


def inputs(take, spec):
    content = take.sized(2)
    level = take.byte() % 5 + 1
    frame = bytearray(zstandard.ZstdCompressor(level=level, write_content_size=take.byte() % 8 != 0,
                                               write_checksum=take.byte() % 4 == 0).compress(content))
    op = take.byte() % 4
    if op == 1:  # cut
        del frame[take.uint(2) % (len(frame) + 1):]
    elif op == 2:  # bytes after the frame
        frame += take.sized(1)
    elif op == 3:  # one byte changed (a header field, a block header, a literal)
        frame[take.uint(2) % len(frame)] ^= take.byte() or 1
    return {"level": level}, {}, bytes(frame)
