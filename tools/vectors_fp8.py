"""Valid vectors for the float8 dtypes of format 1.4 (spec/FORMAT.md §5.2.2) and for
``nnar.cast`` narrowing to them (spec/codecs/cast.md, "float8").

``tools/make_vectors.py`` calls :func:`valid_vectors_fp8` from ``valid_vectors()``; the vectors
are then frozen like every other. Expected tensors of a float8 dtype are its bit patterns
(``uint8``), as bfloat16's are ``uint16`` ones. Everything is written with ``format_minor`` 4.
"""

from __future__ import annotations

import numpy as np

MINOR = 4  # float8 dtypes are known from 1.4 on

#: the 256 bit patterns of a float8 dtype: every NaN (e4m3fn: 0x7F, 0xFF; e5m2: 0x7D-0x7F,
#: 0xFD-0xFF), both zeros, both infinities of e5m2, every subnormal
ALL_BYTES = np.arange(256, dtype=np.uint8)


def cast_inputs() -> dict:
    """name → (input array, its dtype, the float8 dtype it is stored in, zstd or not) of the
    cast vector: edge values (ties, the largest values rounding reaches, subnormals, signed
    zeros, NaNs with payloads) and normal samples."""
    rng = np.random.default_rng(8)
    edges = np.array([0.0, -0.0, 1.0, 0.3, -0.3, 464.0, -448.0, 2.0 ** -10, 2.0 ** -10 + 2.0 ** -20, 2.0 ** -9,
                      1e-30, -1e-30, 100.0, 0.1], np.float32)
    nans = np.array([0x7FC12345, 0xFFC00000, 0x7F800001], np.uint32).view(np.float32)
    f32 = np.concatenate([edges, nans, (rng.standard_normal(64) * 40).astype(np.float32)])
    e5 = np.concatenate([f32, np.array([np.inf, -np.inf, 57344.0, 61439.0, 2.0 ** -17, 2.0 ** -16], np.float32)])
    all_f16 = np.arange(0, 65536, 97, dtype=np.uint16).view(np.float16)
    f16 = all_f16[np.isnan(all_f16) | (np.abs(all_f16.astype(np.float64)) < 61440)]  # what e5m2 takes
    bf16 = np.array([0x3F80, 0x3E9A, 0xBE9A, 0x43E8, 0x8000, 0x7FC1, 0xFF81, 0x0001, 0x3A80, 0x3A81], np.uint16)
    return {"f32.e4m3fn": (f32, "float32", "float8_e4m3fn", False),
            "f32.e5m2": (e5, "float32", "float8_e5m2", True),
            "f16.e5m2": (f16, "float16", "float8_e5m2", False),
            "bf16.e4m3fn": (bf16, "bfloat16", "float8_e4m3fn", False)}


def valid_vectors_fp8(mv) -> dict:
    """name → (archive bytes, {tensor name: (array, dtype)}, metadata), in the shape of
    ``make_vectors.valid_vectors()``; ``mv`` is the make_vectors module (its Builder, base()
    and pipelines)."""
    from nnar import pipeline as P
    from nnar.codecs.cast import Cast
    from nnar.codecs.raw import Raw
    from nnar.codecs.zstd import Zstd

    out = {}

    # Every byte of each dtype, stored verbatim, through zstd, as a group of small tensors, and
    # 0-d and empty tensors: a reader keeps each byte as it is, NaNs and -0 included.
    b = mv.base(minor=MINOR)
    rng = np.random.default_rng(8)
    t = {
        "e4m3fn.all": (ALL_BYTES.reshape(16, 16), "float8_e4m3fn"),
        "e5m2.all": (ALL_BYTES.copy(), "float8_e5m2"),
        "e4m3fn.zstd": (np.repeat(ALL_BYTES, 4).reshape(32, 32), "float8_e4m3fn"),
        "e5m2.zstd": (np.tile(ALL_BYTES[::-1], 4).reshape(4, 256), "float8_e5m2"),
        "e5m2.scalar": (np.array(0x7D, np.uint8), "float8_e5m2"),
        "e5m2.nan": (np.array([0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF], np.uint8), "float8_e5m2"),
        "e5m2.empty": (np.zeros((0, 3), np.uint8), "float8_e5m2"),
        "e4m3fn.weights": (rng.integers(0, 256, size=(8, 24)).astype(np.uint8), "float8_e4m3fn"),
    }
    for name in ("e4m3fn.all", "e5m2.all"):
        b.tensor(name, t[name][0], dtype=t[name][1])
    for name in ("e4m3fn.zstd", "e5m2.zstd"):
        b.tensor(name, t[name][0], mv.ZSTD, dtype=t[name][1])
    b.group([(n, t[n][0]) for n in ("e5m2.scalar", "e5m2.nan", "e5m2.empty")], dtype="float8_e5m2")
    b.tensor("e4m3fn.weights", t["e4m3fn.weights"][0], P.Pipeline(array_bytes=Raw(), stream_chains=((Zstd(3),),)),
             dtype="float8_e4m3fn")
    out["dtypes-float8"] = (b.finish(), t, {})

    # nnar.cast narrowing float32, float16 and bfloat16 to float8: the expected tensors are what
    # a decoder must give back (each float8 byte widened exactly; NaNs by step 3).
    b = mv.base(minor=MINOR)
    t = {}
    for name, (array, src, dst, chain) in cast_inputs().items():
        pipeline = P.Pipeline((Cast(dst),), Raw(), ((Zstd(3),),) if chain else ((),))
        mv.lossy(b, t, name, array, pipeline, src, **({"fidelity": {"method": dst}} if name == "f32.e4m3fn" else {}))
    out["cast-float8"] = (b.finish(), t, {})
    return out
