"""Archives as Python objects: :class:`ArchiveWriter` writes one, :class:`Archive` reads one at
random (seekable files), :func:`iter_archive` reads one in order from any stream.

These join the two rooms: :mod:`nnar.pipeline` turns arrays into segments and back, and
:mod:`nnar.container` turns records into bytes and back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, BinaryIO, Iterator, Mapping

import numpy as np

from . import __version__, dtypes, planner
from . import pipeline as P
from .codecs.abc import TensorSpec, as_bytes
from .container import schema as S
from .container.records import RecordReader, RecordWriter
from .errors import DigestMismatch, InvalidInput, NnarError, NnarIOError
from .limits import DEFAULT_LIMITS, Limits


def digest_of(array: np.ndarray) -> bytes:
    """SHA-256 of the tensor's little-endian, C-order bytes (spec/FORMAT.md §5.2)."""
    return hashlib.sha256(as_bytes(array)).digest()


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """What an archive says about one tensor, without decoding it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int  # decoded
    stored_bytes: int
    digest: bytes
    pipeline: tuple[dict, ...]
    segments: tuple[dict, ...]

    @property
    def ratio(self) -> float:
        return self.nbytes / self.stored_bytes if self.stored_bytes else float("inf") if self.nbytes else 1.0

    def describe_pipeline(self) -> str:
        """e.g. ``nnar.byteplanes[p0,p1,p2 | p3:nnar.zstd]``."""
        stages = " | ".join(str(s.get("codec")) for s in self.pipeline)
        segs = ",".join(s["name"] + "".join(f":{c.get('codec')}" for c in s["codecs"]) for s in self.segments)
        return f"{stages}[{segs}]"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "nbytes": self.nbytes,
                "stored_bytes": self.stored_bytes, "ratio": round(self.ratio, 4), "digest": self.digest.hex(),
                "pipeline": self.describe_pipeline()}


def _info(rec: S.TensorRecord) -> TensorInfo:
    return TensorInfo(rec.name, rec.spec.dtype, rec.spec.shape, rec.spec.nbytes, rec.stored_bytes, rec.digest,
                      tuple(rec.pipeline),
                      tuple({"name": s.name, "length": s.length, "raw_length": s.raw_length, "codecs": s.codecs}
                            for s in rec.segments))


class ArchiveWriter:
    """Writes an archive tensor by tensor, in one forward pass, to a path or binary file object.

    Memory is about one tensor. Use as a context manager: the index and trailer are written
    when the block ends normally; if it raises, nothing more is written (a reader will then
    report the archive as truncated, never read it as complete).
    """

    def __init__(self, f: BinaryIO, *, metadata: Mapping[str, str] | None = None, source_format: str = "python",
                 level: int = planner.DEFAULT_LEVEL):
        md = dict(metadata or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in md.items()):
            raise InvalidInput("metadata: expected a map of strings to strings")
        self.level = level
        self._rw = RecordWriter(f, S.Meta(__version__, source_format, md))
        self.infos: list[TensorInfo] = []

    def write(self, name: str, array: Any, *, dtype: str | None = None,
              pipeline: P.Pipeline | list[P.Pipeline] | None = None) -> TensorInfo:
        """Encode and write one tensor. ``dtype="bfloat16"`` marks a uint16 array as bf16 bits."""
        S.check_name(name, where="write()", error=InvalidInput)
        array = np.asarray(array)
        try:
            name_dt = dtype or dtypes.dtype_name_of(array)
            if dtype == "bfloat16" and array.dtype not in (np.uint16, np.int16) and array.dtype.name != "bfloat16":
                raise InvalidInput(f"tensor {name!r}: dtype='bfloat16' expects uint16 bit patterns, found {array.dtype}")
            data = dtypes.to_storage(array, name_dt)
        except NnarError as e:
            raise InvalidInput(f"tensor {name!r}: {e.message}") from None
        spec = TensorSpec(name_dt, tuple(int(d) for d in data.shape))
        if pipeline is None:
            candidates = planner.lossless_candidates(spec, self.level)
        else:
            candidates = pipeline if isinstance(pipeline, list) else [pipeline]
        enc = planner.encode(data, spec, candidates)
        digest = digest_of(data)
        self._rw.write_tensor(name, S.tensor_descriptor(name, spec, digest, enc.pipeline, enc.segments), enc.segments)
        info = TensorInfo(name, spec.dtype, spec.shape, spec.nbytes, enc.stored_bytes, digest, tuple(enc.pipeline),
                          tuple({"name": s.name, "length": memoryview(s.data).nbytes, "raw_length": s.raw_length,
                                 "codecs": s.codecs} for s in enc.segments))
        self.infos.append(info)
        return info

    def close(self) -> None:
        self._rw.close()

    def abort(self) -> None:
        self._rw.abort()

    @property
    def state(self) -> str:
        return self._rw.state

    def __enter__(self) -> "ArchiveWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _decode(reader: RecordReader, rec: S.TensorRecord, segments: dict, verify: bool) -> np.ndarray:
    where = f"tensor {rec.name!r}"
    array = P.decode(rec.spec, rec.pipeline, segments, reader.limits, where, reader.strict)
    if verify:
        found = digest_of(array)
        if found != rec.digest:
            raise DigestMismatch(f"decoded tensor: expected SHA-256 {rec.digest.hex()}, computed {found.hex()}",
                                 where=where)
    return array


class Archive:
    """Random access to an archive on a seekable file: read one tensor without touching the rest.

    ``read()`` checks the CRCs of every stored byte it uses; ``verify()`` also decodes every
    tensor and checks its SHA-256 digest.
    """

    def __init__(self, source: str | os.PathLike | BinaryIO, limits: Limits = DEFAULT_LIMITS):
        if isinstance(source, (str, os.PathLike)):
            try:
                self._f = open(source, "rb")
            except OSError as e:
                raise NnarIOError(f"cannot open {os.fspath(source)!r}: {e.strerror}") from e
            self._owns = True
            self.path = os.fspath(source)
        else:
            self._f, self._owns, self.path = source, False, getattr(source, "name", None)
        try:
            self._reader = RecordReader(self._f, limits)
            self._entries = {e.name: e for e in self._reader.tensor_entries()}
        except BaseException:
            self.close()
            raise

    # metadata ---------------------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._reader.meta.metadata)

    @property
    def source_format(self) -> str:
        return self._reader.meta.source_format

    @property
    def nnar_version(self) -> str:
        return self._reader.meta.nnar_version

    @property
    def format_version(self) -> tuple[int, int]:
        from .constants import FORMAT_MAJOR
        return FORMAT_MAJOR, self._reader.minor

    # tensors ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def info(self, name: str) -> TensorInfo:
        return _info(self._reader.read_descriptor(self._entry(name)))

    def infos(self) -> list[TensorInfo]:
        return [self.info(n) for n in self._entries]

    def read(self, name: str, *, verify: bool = False) -> np.ndarray:
        rec, segments = self._reader.read_tensor(self._entry(name))
        return _decode(self._reader, rec, segments, verify)

    def items(self, *, verify: bool = False) -> Iterator[tuple[str, np.ndarray]]:
        for name in self._entries:
            yield name, self.read(name, verify=verify)

    def mmap(self, name: str) -> np.ndarray:
        """A read-only view of a tensor stored raw, mapped from the file (no copy, no CRC check)."""
        rec = self._reader.read_descriptor(self._entry(name))
        seg = rec.segments[0] if len(rec.segments) == 1 else None
        if self.path is None or seg is None or not seg.verbatim or [s.get("codec") for s in rec.pipeline] != ["nnar.raw"]:
            raise InvalidInput(f"tensor {name!r}: only a tensor stored raw in a file on disk can be mapped "
                               f"(found {_info(rec).describe_pipeline()})")
        if rec.spec.size == 0:
            return np.empty(rec.spec.shape, rec.spec.storage_dtype)
        return np.memmap(self.path, dtype=rec.spec.storage_dtype, mode="r", offset=self._reader.src.base + seg.offset,
                         shape=rec.spec.shape)

    def verify(self) -> list[TensorInfo]:
        """Check every CRC and decode every tensor against its digest; return the infos."""
        out = []
        for name in self._entries:
            rec, segments = self._reader.read_tensor(self._entry(name))
            _decode(self._reader, rec, segments, verify=True)
            out.append(_info(rec))
        return out

    def _entry(self, name: str):
        return self._entries[name] if name in self._entries else self._reader.find(name)

    def close(self) -> None:
        if self._owns and self._f is not None:
            self._f.close()
        self._f = None

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StreamReader:
    """Reads an archive in order from any binary stream (a pipe, a download in progress).

    Memory is bounded by one tensor. Iterate to get ``(TensorInfo, array)``; the index and
    trailer are checked when the iteration reaches them.
    """

    def __init__(self, f: BinaryIO, limits: Limits = DEFAULT_LIMITS, *, verify: bool = False):
        self._reader = RecordReader(f, limits)
        self.verify = verify
        self.metadata = dict(self._reader.meta.metadata)
        self.source_format = self._reader.meta.source_format
        self.nnar_version = self._reader.meta.nnar_version

    def __iter__(self) -> Iterator[tuple[TensorInfo, np.ndarray]]:
        for rec, segments in self._reader.iter_tensors():
            yield _info(rec), _decode(self._reader, rec, segments, self.verify)

    def infos(self) -> Iterator[TensorInfo]:
        """Walk the records checking CRCs, without decoding."""
        for rec, _ in self._reader.iter_tensors():
            yield _info(rec)
