"""Format numbers of nnar container v1, named as in spec/FORMAT.md.

This is the only place they are written down in code; ``tests/test_spec_tables.py`` checks the
spec's tables against these values so the two cannot drift apart.
"""

from __future__ import annotations

# -- preamble (spec/FORMAT.md §3) ---------------------------------------------------------------
MAGIC = b"\x89NNAR\r\n\x1a"  # PNG-style: the high byte and CR LF / ^Z catch text-mode mangling
FORMAT_MAJOR = 1
FORMAT_MINOR = 5
PREAMBLE_SIZE = 16

# -- record frame (§4) --------------------------------------------------------------------------
FRAME_SIZE = 32
RECORD_META = b"META"
RECORD_TENSOR = b"TENS"
RECORD_INDEX = b"INDX"
RECORD_MODEL = b"MODL"  # since 1.2: the source model's structure (an ONNX graph)
RECORD_ALIAS = b"ALIS"  # since 1.2: other names of a tensor (tied weights)
RECORD_PATCH = b"PTCH"  # since 1.3: the file is a patch (spec/patch.md), not a model archive
RECORD_FILE = b"FILE"  # since 1.4: a file of a model folder that is not weights (config, tokenizer)
KNOWN_RECORD_TYPES = (RECORD_META, RECORD_TENSOR, RECORD_INDEX, RECORD_MODEL, RECORD_ALIAS, RECORD_PATCH, RECORD_FILE)
MAX_PATH_BYTES = 4096  # a FILE record's path (§5.7)
RECORD_FLAG_MUST_UNDERSTAND = 0x0000_0001
RECORD_FLAG_DESCRIPTOR_ZSTD = 0x0000_0002
RECORD_FLAGS_DEFINED = RECORD_FLAG_MUST_UNDERSTAND | RECORD_FLAG_DESCRIPTOR_ZSTD
# A descriptor is stored compressed only from this size on, and only when that saves bytes.
DESCRIPTOR_ZSTD_MIN_BYTES = 128
DESCRIPTOR_ZSTD_LEVEL = 19

# Segments start at file offsets that are multiples of this, so a raw tensor can be mapped
# straight from the file with any dtype (64 covers cache lines and AVX-512 loads).
SEGMENT_ALIGNMENT = 64

# -- trailer (§7) -------------------------------------------------------------------------------
TRAILER_SIZE = 32
END_MAGIC = b"NNAREND\x1a"

# -- descriptors (§5) ---------------------------------------------------------------------------
DIGEST_ALGORITHM = "sha256"
DIGEST_SIZE = 32
MAX_NAME_BYTES = 65535
