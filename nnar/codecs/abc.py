"""The codec interface: what a pipeline stage is.

A tensor is encoded by a *pipeline*: zero or more array→array stages, then exactly one
array→bytes stage that turns the array into named *streams*, then, per stream, zero or more
bytes→bytes stages. Each stored stream is a *segment* of the tensor record. (Zarr v3's codec
chain, with the one difference that an array→bytes stage may emit several streams, because
pruning, codebooks and byte planes each produce more than one.)

Every stage has two dictionaries, both stored in the archive:

* ``config`` -- what the user chose (``level=19``, ``bits=4``). :meth:`Codec.get_config` and
  :meth:`Codec.from_config` round-trip it; codec instances are immutable.
* ``params`` -- what the encoder learned from the data (a codebook, a scale, a count).
  ``encode`` returns them; ``decode`` receives them back.

Encoders are deterministic for a given config and input, so test vectors re-encode byte for byte.

Decoders treat config and params as hostile: anything out of range or inconsistent with the
tensor raises :class:`nnar.errors.CodecDataError`, and nothing is allocated beyond the sizes
the caller has already checked against :class:`nnar.Limits`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar, Mapping

import numpy as np

from .. import dtypes
from ..errors import CodecDataError

Buffer = bytes | bytearray | memoryview


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """dtype (spec name) and shape of an array flowing through a pipeline."""

    dtype: str
    shape: tuple[int, ...]

    # properties, not cached: functools.cached_property takes a lock on every access (Python
    # 3.11), which made listing an archive of 10^5 tensors spend seconds here
    @property
    def size(self) -> int:
        return math.prod(self.shape)  # Python ints: never wraps, unlike np.prod

    @property
    def nbytes(self) -> int:
        return self.size * dtypes.itemsize(self.dtype)

    @property
    def storage_dtype(self) -> np.dtype:
        return dtypes.storage_dtype(self.dtype)


class Codec:
    """Base of all codecs. Subclasses set ``codec_id`` and ``kind`` and define ``__init__``
    keyword arguments that are exactly their config keys."""

    codec_id: ClassVar[str]
    kind: ClassVar[str]  # "array-array" | "array-bytes" | "bytes-bytes"
    lossless: ClassVar[bool] = True
    #: the params keys this codec's encoder writes; stored params with other keys are corrupt
    param_keys: ClassVar[frozenset[str]] = frozenset()

    def get_config(self) -> dict[str, Any]:
        return {}

    def unknown_params(self, params: Mapping[str, Any]) -> list[tuple[str, ...]]:
        """The keys of ``params`` (a map) this codec does not define, nested ones included, each
        as its path of keys: an archive of a known minor must have none (FORMAT.md §10), one of a
        newer minor may. The pipeline decides which."""
        return sorted((k,) for k in params if k not in self.param_keys)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Codec":
        """Build the codec from a stored config; unknown keys or bad values are corrupt data."""
        if not isinstance(config, Mapping):
            raise CodecDataError(f"{cls.codec_id}: expected a config map, found {type(config).__name__}")
        try:
            return cls(**config)
        except TypeError as e:
            raise CodecDataError(f"{cls.codec_id}: bad config {dict(config)!r}: {e}") from None

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((self.codec_id, tuple(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class ArrayArrayCodec(Codec):
    kind = "array-array"

    def encoded_spec(self, spec: TensorSpec, params: Mapping[str, Any]) -> TensorSpec:
        """The spec of the array this stage outputs for an input of ``spec``."""
        return spec

    def encode(self, array: np.ndarray, spec: TensorSpec) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def decode(self, array: np.ndarray, spec: TensorSpec, params: Mapping[str, Any]) -> np.ndarray:
        """Invert :meth:`encode`; ``spec`` is the spec of the array to give back."""
        raise NotImplementedError


class ArrayBytesCodec(Codec):
    kind = "array-bytes"

    def encode(self, array: np.ndarray, spec: TensorSpec) -> tuple[dict[str, Buffer], dict[str, Any]]:
        """Split a C-contiguous little-endian array into named streams."""
        raise NotImplementedError

    def decode(self, streams: Mapping[str, Buffer], spec: TensorSpec, params: Mapping[str, Any]) -> np.ndarray:
        """Rebuild the array; must check every stream's name and length against ``spec``."""
        raise NotImplementedError

    def decode_into(self, streams: Mapping[str, Buffer], spec: TensorSpec, params: Mapping[str, Any],
                    out: np.ndarray) -> None:
        """:meth:`decode` into ``out`` (an array of ``spec``'s storage dtype and shape: a caller's
        buffer, a mapped output file). A codec that builds its output anyway copies it; one that
        assembles it (byte planes) writes it there directly, saving a pass over memory."""
        np.copyto(out, self.decode(streams, spec, params), casting="no")

    def stream_names(self, spec: TensorSpec, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The streams :meth:`decode` needs, in the order :meth:`encode` emits them."""
        raise NotImplementedError

    def stream_lengths(self, spec: TensorSpec, params: Mapping[str, Any]) -> Mapping[str, int]:
        """The exact decoded length of each stream whose length ``spec`` and ``params`` fix.

        The pipeline compares stored ``raw_length`` values with these *before* decompressing
        anything, so a tiny record cannot make a reader inflate a stream far larger than its
        tensor needs. Codecs whose streams vary in length leave them out (and must then bound
        them in :meth:`stream_bounds`)."""
        return {}

    def stream_bounds(self, spec: TensorSpec, params: Mapping[str, Any]) -> Mapping[str, int]:
        """An upper bound on the decoded length of each stream :meth:`stream_lengths` leaves out
        (a gap stream's length depends on the data). Checked, like exact lengths, before any
        stream is decompressed; :meth:`decode` checks the exact length."""
        return {}


class BytesBytesCodec(Codec):
    kind = "bytes-bytes"
    #: decoding is far slower than zstd's: the planner wants a clear size gain before using it
    slow_decode: ClassVar[bool] = False

    def encode(self, data: Buffer) -> tuple[Buffer, dict[str, Any]]:
        raise NotImplementedError

    def decode(self, data: Buffer, params: Mapping[str, Any], max_length: int) -> Buffer:
        """Invert :meth:`encode`, producing at most ``max_length`` bytes (a bomb is an error)."""
        raise NotImplementedError

    def encoded_bound(self, n: int) -> int:
        """The most bytes any valid encoding of ``n`` input bytes may take (the codec's spec
        page states it). A chain of these bounds every intermediate stream of a segment before
        anything is decoded (FORMAT.md §6.1 step 4)."""
        raise NotImplementedError


def as_bytes(array: np.ndarray) -> memoryview:
    """The C-order bytes of an array as a flat byte view (a copy only if it is not contiguous);
    works for 0-d and empty arrays, where ``memoryview.cast`` refuses."""
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def expect_streams(codec: Codec, streams: Mapping[str, Buffer], lengths: Mapping[str, int]) -> None:
    """Check that ``streams`` are exactly the named streams with exactly these lengths."""
    if set(streams) != set(lengths):
        raise CodecDataError(
            f"{codec.codec_id}: expected streams {sorted(lengths)}, found {sorted(streams)}"
        )
    for name, n in lengths.items():
        found = memoryview(streams[name]).nbytes
        if found != n:
            raise CodecDataError(f"{codec.codec_id}: stream {name!r}: expected {n} bytes, found {found}")


def param(codec: Codec, params: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """One typed param, or a CodecDataError saying which is missing or of the wrong type."""
    if not isinstance(params, Mapping) or key not in params:
        raise CodecDataError(f"{codec.codec_id}: expected param {key!r}, found none")
    value = params[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise CodecDataError(f"{codec.codec_id}: param {key!r}: expected {kind}, found {type(value).__name__}")
    return value
