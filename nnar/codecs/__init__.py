"""Codec registry: codec id (lowercase, dotted, never changed once released) → codec class.

One registration line per codec below. Third-party codecs may register under their own prefix
(never ``nnar.``) with :func:`register`.
"""

from __future__ import annotations

from ..errors import UnsupportedCodec
from .abc import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec, Codec, TensorSpec

_REGISTRY: dict[str, type[Codec]] = {}


def register(cls: type[Codec]) -> type[Codec]:
    cid = cls.codec_id
    if cid != cid.lower() or not cid or cid in _REGISTRY and _REGISTRY[cid] is not cls:
        raise ValueError(f"codec id {cid!r} is not lowercase or is registered already")
    _REGISTRY[cid] = cls
    return cls


def get_codec_class(codec_id: object) -> type[Codec]:
    try:
        return _REGISTRY[codec_id]  # type: ignore[index]
    except (KeyError, TypeError):
        raise UnsupportedCodec(
            f"unknown codec: expected one of {', '.join(sorted(_REGISTRY))}, found {codec_id!r}"
        ) from None


def registered() -> dict[str, type[Codec]]:
    return dict(_REGISTRY)


from . import affine, byteplanes, cast, chunked, codebook, huffman, raw, sparse, zstd  # noqa: E402  (each module registers itself)

__all__ = [
    "ArrayArrayCodec", "ArrayBytesCodec", "BytesBytesCodec", "Codec", "TensorSpec",
    "register", "get_codec_class", "registered", "affine", "byteplanes", "cast", "chunked", "codebook", "huffman", "raw", "sparse", "zstd",
]
