"""Archives as Python objects: :class:`ArchiveWriter` writes one, :class:`Archive` reads one at
random (seekable files), :func:`iter_archive` reads one in order from any stream.

These join the two rooms: :mod:`nnar.pipeline` turns arrays into segments and back, and
:mod:`nnar.container` turns records into bytes and back.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import dataclasses
import hashlib
import math
import os
import warnings
from typing import Any, BinaryIO, Callable, Iterator, Mapping

import numpy as np

from . import __version__, dtypes, lossy, pieces, planner, remote, threads
from . import pipeline as P
from .codecs.abc import TensorSpec, as_bytes
from .codecs.zstd import MAX_LEVEL, MIN_LEVEL
from .config import PackConfig, TensorSettings
from .constants import FORMAT_MAJOR
from .container import schema as S
from .container.records import DeferredBody, RecordReader, RecordWriter, check_content
from .errors import (BadLayout, DigestMismatch, InvalidInput, NnarError, NnarIOError, TensorNotFound, UnsupportedDtype,
                     WriterStateError)
from .limits import DEFAULT_LIMITS, Limits


def digest_of(array: np.ndarray) -> bytes:
    """SHA-256 of the tensor's little-endian, C-order bytes (spec/FORMAT.md §5.2)."""
    return hashlib.sha256(as_bytes(array)).digest()


#: tensors up to this size are stored together with their small neighbours of the same dtype:
#: one record per bias or norm would cost more in framing than the tensor itself
GROUP_TENSOR_MAX_BYTES = 64 << 10
#: a group is closed when it reaches this size, so one tensor can still be read cheaply
GROUP_MAX_BYTES = 1 << 20
#: input bytes of the records being encoded in parallel at most (a larger record goes alone):
#: parallel packing of small and middling tensors, the memory of one thread for huge ones
WINDOW_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """What an archive says about one tensor, without decoding it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int  # decoded
    stored_bytes: int  # its record's stored bytes; for a group, this tensor's share by size
    digest: bytes  # SHA-256 of its record's decoded array (the tensor itself unless grouped)
    pipeline: tuple[dict, ...]
    segments: tuple[dict, ...]
    group: int = 1  # tensors stored in the same record
    fidelity: dict = dataclasses.field(default_factory=dict)  # what a lossy pack changed (empty: exact)
    alias_of: str | None = None  # another name of this tensor (FORMAT.md §5.5): nothing stored of its own

    def as_alias(self, name: str) -> "TensorInfo":
        # the constructor, not dataclasses.replace (which inspects the fields at every call)
        return TensorInfo(name, self.dtype, self.shape, self.nbytes, 0, self.digest, self.pipeline, self.segments,
                          self.group, self.fidelity, self.name)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def lossy(self) -> bool:
        return bool(self.fidelity)

    def bits_by_role(self) -> dict[str, float]:
        """Stored bits per element, split as Deep Compression reports them: ``values`` (the
        weights or their codebook indices), ``indices`` (sparse positions), ``codebook``
        (tables, scales, zero points)."""
        out = {"values": 0.0, "indices": 0.0, "codebook": 0.0}
        if self.group > 1 or not self.size:
            return out
        for seg in self.segments:
            out[stream_role(seg["name"])] += 8.0 * seg["length"] / self.size
        return out

    @property
    def ratio(self) -> float:
        return self.nbytes / self.stored_bytes if self.stored_bytes else float("inf") if self.nbytes else 1.0

    def describe_pipeline(self) -> str:
        """e.g. ``nnar.byteplanes[p0,p1,p2,p3:nnar.zstd]``, with ``(group of N)`` when grouped."""
        if self.alias_of is not None:
            return f"= {self.alias_of}"
        def codec(stage):  # stage records are only checked when decoded; listing must not fail
            return str(stage.get("codec")) if isinstance(stage, dict) else "?"
        stages = " | ".join(codec(s) for s in self.pipeline)
        segs = ",".join(s["name"] + "".join(f":{codec(c)}" for c in s["codecs"]) for s in self.segments)
        return f"{stages}[{segs}]" + (f" (group of {self.group})" if self.group > 1 else "")

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "nbytes": self.nbytes,
               "stored_bytes": self.stored_bytes, "ratio": round(self.ratio, 4), "digest": self.digest.hex(),
               "pipeline": self.describe_pipeline(), "group": self.group}
        if self.alias_of is not None:
            out["alias_of"] = self.alias_of
        if self.fidelity:
            out["fidelity"] = {k: _json_number(v) for k, v in self.fidelity.items()}
            out["bits_per_weight"] = {k: round(v, 4) for k, v in self.bits_by_role().items()}
        return out


def _json_number(v: Any) -> Any:
    """JSON has no infinity: an exact tensor's SQNR is reported as null."""
    return None if isinstance(v, float) and not np.isfinite(v) else v


def stream_role(name: str) -> str:
    base = name.rsplit(".", 1)[-1]
    if base == "positions":
        return "indices"
    if base in ("codebook", "scales", "zero_points"):
        return "codebook"
    return "values"


def _infos(members, spec: TensorSpec, stored: int, digest: bytes, pipeline, segs: tuple[dict, ...],
           fidelity: dict | None = None) -> list[TensorInfo]:
    """One TensorInfo per member of a record; ``members`` are (name, spec) pairs."""
    known = spec.dtype in dtypes.DTYPE_NAMES  # an unknown dtype: sizes unknown (reported as 0)
    total = spec.nbytes if known else 0
    itemsize = dtypes.itemsize(spec.dtype) if known else 0
    out = []
    for name, mspec in members:
        nbytes = math.prod(mspec.shape) * itemsize
        share = stored if len(members) == 1 else (stored * nbytes // total if total else 0)
        out.append(TensorInfo(name, mspec.dtype, mspec.shape, nbytes, share, digest, tuple(pipeline), segs,
                              len(members), dict(fidelity or {})))
    return out


def _segment_info(name: str, length: int, raw_length: int, codecs: list) -> dict:
    return {"name": name, "length": length, "raw_length": raw_length, "codecs": codecs}


def _record_infos(rec: S.TensorRecord) -> list[TensorInfo]:
    segs = tuple(_segment_info(s.name, s.length, s.raw_length, s.codecs) for s in rec.segments)
    return _infos([(m.name, m.spec) for m in rec.members], rec.spec, rec.stored_bytes, rec.digest, rec.pipeline, segs,
                  rec.fidelity)


@dataclasses.dataclass
class Encoded:
    """A record's encoding, as a worker sends it back (small: no decoded copy of the data)."""

    encoded: P.EncodedTensor
    digest: bytes  # of what readers will decode
    fidelity: dict | None = None
    warnings: tuple[str, ...] = ()  # raised in another process, to be raised again in the writer's

    def __getstate__(self) -> dict:
        # sent to another process: stored bytes that are views (of the input, of a buffer) as bytes
        segs = [dataclasses.replace(g, data=bytes(g.data)) if isinstance(g.data, memoryview) else g
                for g in self.encoded.segments]
        return {**self.__dict__, "encoded": dataclasses.replace(self.encoded, segments=segs)}


def encode_lossless(arrays: list[np.ndarray], spec: TensorSpec, candidates) -> Encoded:
    """A record of one tensor, or a group (their elements one after the other), by the cheapest
    candidate: losslessly, unless the caller gave a pipeline with a lossy stage, whose record
    then carries the digest of what it decodes to (FORMAT.md §5.2.4), not of its input."""
    data = arrays[0] if len(arrays) == 1 else np.concatenate([a.reshape(-1) for a in arrays])
    enc = planner.encode(data, spec, candidates)
    if all(getattr(c, "lossless", True) for stage in enc.pipeline for c in [_codec_of(stage)]):
        return Encoded(enc, digest_of(data))
    return Encoded(enc, digest_of(P.decode_encoded(enc, DEFAULT_LIMITS, "a lossy pipeline's output")))


def _codec_of(stage: dict):
    from .codecs import get_codec_class
    return get_codec_class(stage["codec"])


def encode_lossy(name: str, dtype: str, data: np.ndarray, settings: TensorSettings, level: int,
                 threshold: float | None, writer_pid: int) -> Encoded:
    """One tensor as its lossy settings say (:func:`nnar.lossy.plan`), or losslessly in a record
    of its own when they cannot be met. Warnings are raised as they come in the writer's own
    process (catching them there would race with its other threads), and carried back from any
    other process (``writer_pid`` is the writer's)."""
    elsewhere = os.getpid() != writer_pid
    spec = TensorSpec(dtype, data.shape)
    with warnings.catch_warnings(record=True) if elsewhere else contextlib.nullcontext() as caught:
        if elsewhere:
            warnings.simplefilter("always")
        choice = lossy.plan(name, data, spec, settings, level, threshold)
    said = tuple(str(w.message) for w in caught) if elsewhere else ()
    if choice is None:
        done = encode_lossless([data], spec, planner.lossless_candidates(spec, level))
        return Encoded(done.encoded, done.digest, None, said)
    return Encoded(choice.encoded, digest_of(choice.decoded), choice.fidelity, said)


class ArchiveWriter:
    """Writes an archive tensor by tensor, in one forward pass, to a binary file object.

    Memory is about one tensor. Small tensors are held back briefly and stored together with
    their neighbours (at most ``GROUP_MAX_BYTES``); the order of tensors is always kept. Use as
    a context manager: the index and trailer are written when the block ends normally; if it
    raises, nothing more is written (readers then report the archive as truncated, never read it
    as complete). ``infos`` lists what was written.

    ``executor`` (any ``concurrent.futures``-style executor: threads, processes, a Dask
    client's) encodes records in parallel, at most ``window`` records and ``window_bytes`` of
    their input in flight (a record larger than that is encoded alone, so memory stays about
    what one thread needs for the largest tensor); records are written in order as they
    complete, so the archive is byte for byte the one written without an executor. ``write``
    then returns None: ``infos`` is complete once the writer is closed.
    """

    def __init__(self, f: BinaryIO, *, metadata: Mapping[str, str] | None = None, source_format: str = "python",
                 level: int = planner.DEFAULT_LEVEL, group_small: bool = True,
                 config: PackConfig | None = None, global_threshold: float | None = None,
                 structure: tuple[str, bytes] | None = None, patch: dict | None = None,
                 executor: Any = None, window: int | None = None, window_bytes: int | None = None):
        md = dict(metadata or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in md.items()):
            raise InvalidInput("metadata: expected a map of strings to strings")
        for text in (*md.keys(), *md.values()):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput(f"metadata: {text!r:.60} is not valid Unicode text (lone surrogate)") from None
        if not isinstance(level, int) or isinstance(level, bool) or not MIN_LEVEL <= level <= MAX_LEVEL:
            raise InvalidInput(f"level: expected an integer in [{MIN_LEVEL}, {MAX_LEVEL}], found {level!r}")
        self.level = level
        self.group_small = group_small
        self.config = config or PackConfig()
        #: one pruning threshold for every eligible tensor (``PackConfig.prune_global``)
        self.global_threshold = global_threshold
        self._rw = RecordWriter(f, S.Meta(__version__, source_format, md))
        if patch is not None:  # the PTCH descriptor: this file is a patch (spec/patch.md)
            self._rw.write_patch(patch)
        if structure is not None:
            self._write_structure(*structure)
        self._aliases: dict[str, list[str]] = {}  # target → its aliases, until the target's record is written
        self._alias_names: set[str] = set()
        self._pending: list[tuple[str, np.ndarray]] = []
        self._pending_names: set[str] = set()
        self._pending_bytes = 0
        self.executor = executor
        #: records submitted and not written yet, in archive order: (future, names, dtype, shapes)
        self._queue: collections.deque = collections.deque()
        self.window = window if window is not None else 2 * (getattr(executor, "_max_workers", None) or 2)
        self.window_bytes = WINDOW_BYTES if window_bytes is None else window_bytes
        self._inflight_bytes = 0
        self.infos: list[TensorInfo] = []

    def _write_structure(self, fmt: str, data: bytes) -> None:
        """The MODL record (FORMAT.md §5.4): the structure as a uint8 array, compressed like one."""
        if not isinstance(fmt, str) or not 1 <= len(fmt.encode("utf-8", "surrogatepass")) <= S.MAX_FORMAT_NAME \
                or not isinstance(data, (bytes, bytearray)):  # bytes of UTF-8, as FORMAT.md §5.4 counts them
            raise InvalidInput(f"structure: expected (format name, bytes), found {type(fmt).__name__}, "
                               f"{type(data).__name__}")
        arr = np.frombuffer(bytes(data), np.uint8)
        spec = TensorSpec("uint8", arr.shape)
        enc = planner.encode(arr, spec, planner.lossless_candidates(spec, self.level))
        self._rw.write_model(S.model_descriptor(fmt, arr.size, enc.pipeline, enc.segments), enc.segments,
                             hashlib.sha256(arr).digest())

    def write_file(self, path: str, data: bytes) -> None:
        """A FILE record (FORMAT.md §5.7): a file of a model folder that is not weights (its
        config, tokenizer, README), stored losslessly under its relative ``path``. Files come
        before every tensor."""
        S.check_path(path, "file path")
        if self.infos or self._pending or self._queue:
            raise WriterStateError("cannot write a file: expected files before any tensor")
        arr = np.frombuffer(bytes(data), np.uint8)
        spec = TensorSpec("uint8", arr.shape)
        enc = planner.encode(arr, spec, planner.lossless_candidates(spec, self.level))
        self._rw.write_file(S.file_descriptor(path, arr.size, hashlib.sha256(arr).digest(), enc.pipeline,
                                              enc.segments), enc.segments)

    def write(self, name: str, array: Any, *, dtype: str | None = None,
              pipeline: P.Pipeline | list[P.Pipeline] | None = None,
              settings: TensorSettings | None = None, aliases: tuple[str, ...] | list[str] = (),
              choice: "lossy.Choice | None" = None) -> TensorInfo | None:
        """Encode and write one tensor. ``dtype="bfloat16"`` marks a uint16 array as bf16 bits,
        ``dtype="float8_e4m3fn"`` or ``"float8_e5m2"`` a uint8 array as float8 bits.

        ``settings`` (default: the writer's config for this name) may make it lossy. With
        ``pipeline`` (one or several candidates) or lossy settings the tensor gets a record of
        its own. ``aliases`` are other names of the same tensor (tied weights): stored once, in an
        ALIS record right after the tensor's. ``choice`` is a lossy encoding already made (by
        :func:`nnar.lossy.plan`, as the output-aware search does): written as it is, with its
        decoded array's digest. Returns its info, or None while it waits to be grouped with its
        neighbours."""
        self._rw.expect_open("write a tensor")
        seen: set[str] = set()
        for n in (name, *aliases):
            S.check_name(n, where="write()", error=InvalidInput)
            if n in seen or n in self._pending_names or n in self._alias_names or self._rw.has_name(n):
                raise InvalidInput(f"tensor name {n!r}: expected unique names, found it twice")
            seen.add(n)
        array = np.asarray(array)
        try:
            found = dtypes.dtype_name_of(array)
            # dtype only says how to read the bits (uint16 as bfloat16); it never converts values
            ok = dtype in (None, found) or dtype == "bfloat16" and found in ("uint16", "int16") \
                or dtype in dtypes.FLOAT8_DTYPES and found in ("uint8", "int8")
            if not ok:
                raise InvalidInput(f"dtype={dtype!r} does not match the array's {found}; convert the array first "
                                   "(only uint16 bit patterns can be marked bfloat16, uint8 ones float8)")
            name_dt = dtype or found
            if found in dtypes.BIT_PATTERN_DTYPES:  # ml_dtypes' bfloat16 or float8: native-endian bits
                array = array.view(dtypes.storage_dtype(found).newbyteorder("="))
            elif name_dt in dtypes.BIT_PATTERN_DTYPES:  # uint/int of any byte order: keep the bit pattern's value
                array = array.astype(dtypes.storage_dtype(name_dt), copy=False)
            data = dtypes.to_storage(array, name_dt)
        except NnarError as e:
            raise InvalidInput(f"tensor {name!r}: {e.message}") from None
        if aliases:
            self._aliases[name] = list(aliases)
            self._alias_names.update(aliases)
        if choice is not None:
            if choice.decoded is None or choice.decoded.shape != data.shape:
                raise InvalidInput(f"tensor {name!r}: the encoding given decodes to another shape or was released")
            self._flush()
            return self._write_choice(name, name_dt, data, choice)
        if settings is None and pipeline is None:
            settings = self.config.settings_for(name, data.shape, name_dt in dtypes.FLOAT_DTYPES)
        prunable = self.global_threshold is not None and settings is not None and not settings.lossless \
            and self.config.eligible(data.shape) and name_dt in dtypes.FLOAT_DTYPES
        if pipeline is None and settings is not None and (settings.lossy or prunable):
            # a record of its own, lossy as the settings say, or lossless when they can't be met
            self._flush()
            self._submit(encode_lossy, [(name, data)], name_dt, name, name_dt, data, settings, self.level,
                         self.global_threshold if prunable else None, os.getpid())
            return self._last_info(name)
        small = self.group_small and pipeline is None and data.nbytes <= GROUP_TENSOR_MAX_BYTES
        if self._pending and (not small or name_dt != self._pending_dtype
                              or self._pending_bytes + data.nbytes > GROUP_MAX_BYTES):
            self._flush()
        if small:
            # held until its group is written: a copy, so the caller may reuse its array meanwhile
            self._pending.append((name, data.copy()))
            self._pending_names.add(name)
            self._pending_bytes += data.nbytes
            self._pending_dtype = name_dt
            return None
        self._write_record(name_dt, [(name, data)], pipeline)
        return self._last_info(name)

    def _last_info(self, name: str) -> TensorInfo | None:
        """The info of the tensor just written, or None while its record is being encoded."""
        if self._queue:
            return None
        return next(i for i in reversed(self.infos) if i.name == name)

    def write_encoded(self, name: str, enc: P.EncodedTensor, digest: bytes) -> TensorInfo:
        """Write a tensor someone already encoded (``digest``: of its decoded bytes) in a record of
        its own, keeping the order of tensors."""
        self._rw.expect_open("write a tensor")
        S.check_name(name, where="write_encoded()", error=InvalidInput)
        if name in self._pending_names or name in self._alias_names or self._rw.has_name(name):
            raise InvalidInput(f"tensor name {name!r}: expected unique names, found it twice")
        self._flush()
        self._drain(everything=True)
        desc = S.tensor_descriptor([(name, enc.spec.shape)], enc.spec.dtype, digest, enc.pipeline, enc.segments)
        self._rw.write_tensor([name], desc, enc.segments)
        segs = tuple(_segment_info(g.name, memoryview(g.data).nbytes, g.raw_length, g.codecs) for g in enc.segments)
        self.infos += _infos([(name, enc.spec)], enc.spec, enc.stored_bytes, digest, enc.pipeline, segs)
        return self.infos[-1]

    def _write_choice(self, name: str, dtype: str, data: np.ndarray, choice: "lossy.Choice") -> TensorInfo:
        """A lossy tensor: its digest is of what readers will decode, not of the input."""
        self._drain(everything=True)
        enc = choice.encoded
        digest = digest_of(choice.decoded)
        desc = S.tensor_descriptor([(name, data.shape)], dtype, digest, enc.pipeline, enc.segments, choice.fidelity)
        self._rw.write_tensor([name], desc, enc.segments)
        segs = tuple(_segment_info(g.name, memoryview(g.data).nbytes, g.raw_length, g.codecs) for g in enc.segments)
        self.infos += _infos([(name, TensorSpec(dtype, data.shape))], enc.spec, enc.stored_bytes, digest,
                             enc.pipeline, segs, choice.fidelity)
        info = self.infos[-1]
        self._write_aliases([name])
        return info

    def _write_aliases(self, names: list[str]) -> None:
        """The ALIS record for the aliases of the tensors of the record just written."""
        by_name = {i.name: i for i in self.infos[-len(names):]}
        pairs = [(a, n) for n in names for a in self._aliases.pop(n, ())]
        if pairs:
            self._rw.write_aliases(pairs)
            self.infos += [by_name[t].as_alias(a) for a, t in pairs]

    def _flush(self) -> None:
        if self._pending:
            members, self._pending, self._pending_names, self._pending_bytes = self._pending, [], set(), 0
            self._write_record(self._pending_dtype, members, None)

    def _write_record(self, dtype: str, members: list[tuple[str, np.ndarray]], pipeline) -> None:
        spec = S.record_spec(dtype, [a.shape for _, a in members])
        candidates = planner.lossless_candidates(spec, self.level) if pipeline is None else \
            (pipeline if isinstance(pipeline, list) else [pipeline])
        self._submit(encode_lossless, members, dtype, [a for _, a in members], spec, candidates)

    def _submit(self, job: Callable, members: list[tuple[str, np.ndarray]], dtype: str, *args) -> None:
        """Encode a record by ``job(*args)`` (an :class:`Encoded`): now, or on the executor, and
        write it in its turn."""
        names, shapes = [n for n, _ in members], [a.shape for _, a in members]
        if self.executor is None:
            self._finish(job(*args), names, dtype, shapes)
            return
        nbytes = sum(a.nbytes for _, a in members)
        while self._queue and (len(self._queue) >= self.window or self._inflight_bytes + nbytes > self.window_bytes):
            self._write_head()
        self._queue.append((self.executor.submit(job, *args), names, dtype, shapes, nbytes))
        self._inflight_bytes += nbytes
        # a budget filled: wait here, before the caller reads the next tensor into memory
        while self._queue and self._inflight_bytes >= self.window_bytes:
            self._write_head()
        self._drain()

    def _drain(self, everything: bool = False) -> None:
        """Write the records at the head of the queue that are done; wait for the head while more
        than ``window`` are in flight (or for all of them)."""
        while self._queue and (everything or len(self._queue) > self.window or self._queue[0][0].done()):
            self._write_head()

    def _write_head(self) -> None:
        future, names, dtype, shapes, nbytes = self._queue.popleft()
        self._inflight_bytes -= nbytes
        self._finish(future.result(), names, dtype, shapes)

    def _finish(self, done: "Encoded", names: list[str], dtype: str, shapes: list[tuple[int, ...]]) -> None:
        for message in done.warnings:  # raised in another process: told here
            warnings.warn(message, lossy.LossyWarning, stacklevel=2)
        enc, spec = done.encoded, S.record_spec(dtype, shapes)
        desc = S.tensor_descriptor(list(zip(names, shapes)), dtype, done.digest, enc.pipeline, enc.segments,
                                   done.fidelity)
        self._rw.write_tensor(names, desc, enc.segments)
        segs = tuple(_segment_info(g.name, memoryview(g.data).nbytes, g.raw_length, g.codecs) for g in enc.segments)
        self.infos += _infos([(n, TensorSpec(dtype, shape)) for n, shape in zip(names, shapes)], spec,
                             enc.stored_bytes, done.digest, enc.pipeline, segs, done.fidelity)
        self._write_aliases(names)

    def close(self) -> None:
        self._rw.expect_open("close")
        self._flush()
        self._drain(everything=True)
        self._rw.close()

    def abort(self) -> None:
        for future, *_ in self._queue:
            future.cancel()
        self._queue.clear()
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


def _decode(reader: RecordReader, rec: S.TensorRecord, segments: dict, verify: bool,
            consume: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """The record's whole array, checked against its digest when ``verify`` (``consume`` and
    ``out``: :func:`nnar.pipeline.decode`'s)."""
    where = _where(rec)
    if rec.spec.dtype not in dtypes.DTYPE_NAMES:
        raise UnsupportedDtype(f"unsupported dtype: expected one of {', '.join(dtypes.DTYPE_NAMES)}, found "
                               f"{rec.spec.dtype!r} (a newer nnar wrote it)", where=where)
    array = P.decode(rec.spec, rec.pipeline, segments, reader.limits, where, reader.strict, consume, out)
    if out is None and reader.src.mem is not None and np.may_share_memory(array, np.frombuffer(reader.src.mem, np.uint8)):
        array = array.copy()  # a raw tensor read in place: never hand out a view of the caller's buffer
    if verify:
        found = digest_of(array)
        if found != rec.digest:
            raise DigestMismatch(f"decoded tensor: expected SHA-256 {rec.digest.hex()}, computed {found.hex()}",
                                 where=where)
    return array


def _decode_record(reader: RecordReader, rec: S.TensorRecord, segments: dict | DeferredBody, verify: bool, *,
                   out: np.ndarray | None = None, sink: Callable | None = None, keep: bool = True) -> np.ndarray | None:
    """A record's array, from its segments or, for a body left on disk (:class:`DeferredBody`), a
    piece at a time (:mod:`nnar.pieces`): returned, or decoded into ``out``, or handed to
    ``sink(start, piece)``; with ``keep`` False only checked (nothing is kept of a deferred body)."""
    if isinstance(segments, DeferredBody):
        if out is None and sink is None and keep:
            out = np.empty(rec.spec.shape, rec.spec.storage_dtype)
        pieces.decode(reader, segments.frame, rec, _where(rec), out=out, sink=sink, check_digest=verify)
        return out
    array = _decode(reader, rec, segments, verify, consume=True, out=out)
    if sink is not None:
        sink(0, array.reshape(-1))
        return None
    return array


def _pieces_save_memory(rec: S.TensorRecord) -> bool:
    """Records whose whole decode holds more than a piecewise one into a fresh array: byte planes
    (body, streams and array at once), not raw bytes (whose streams are the array)."""
    return pieces.eligible(rec) and rec.pipeline[0].get("codec") == "nnar.byteplanes"


def _where(rec: S.TensorRecord) -> str:
    return f"tensor {rec.names[0]!r}" + (f" (group of {len(rec.members)})" if len(rec.members) > 1 else "")


def _decoded_bytes(rec: S.TensorRecord) -> int:
    """What decoding a record holds, for the read-ahead's budget (0 for a dtype a newer nnar
    wrote: decoding it fails, in its turn)."""
    return rec.spec.nbytes if rec.spec.dtype in dtypes.DTYPE_NAMES else 0


def _member(rec: S.TensorRecord, array: np.ndarray, m: S.Member) -> np.ndarray:
    if len(rec.members) == 1:
        return array
    # a copy: the caller owns it, and the group's array is not kept alive by one small view
    return array.reshape(-1)[m.start: m.start + m.spec.size].reshape(m.spec.shape).copy()


class Archive:
    """Random access to an archive on a seekable file: read one tensor without touching the rest.

    ``read()`` checks the CRCs of every stored byte it uses; ``verify()`` also decodes every
    record and checks its SHA-256 digest.
    """

    def __init__(self, source: str | os.PathLike | BinaryIO | bytes, limits: Limits = DEFAULT_LIMITS):
        if remote.is_url(source):  # read with range requests (nnar.remote)
            self._f, self._owns, self.path = remote.open_url(source), True, None
        elif isinstance(source, (str, os.PathLike)):
            try:
                self._f = open(source, "rb")
            except OSError as e:
                raise NnarIOError(f"cannot open {os.fspath(source)!r}: {e.strerror}") from e
            self._owns = True
            self.path = os.fspath(source)
        else:  # a binary file, or the archive's bytes
            self._f, self._owns = source, False
            name = getattr(source, "name", None)
            self.path = name if isinstance(name, (str, os.PathLike)) else None
        try:
            self._reader = reader(self._f, limits)
            self._entries = {n: e for e in self._reader.tensor_entries() for n in e.names}
            self._alias_of: dict[str, str] = {}
            #: the (alias, target) pairs of each TENS entry's ALIS record, by the entry's offset:
            #: every step of listing is linear in tensors + aliases (a tuple of a group's names
            #: is never a key, whose hash would cost the group's size at each lookup)
            self._aliases_at: dict[int, list[tuple[str, str]]] = {}
            for a, t, entry in self._reader.aliases():
                self._alias_of[a] = t
                self._aliases_at.setdefault(entry.offset, []).append((a, t))
            self._names = self._ordered_names()
            self._files: dict[str, S.IndexEntry] = {}
            for e in self._reader.file_entries():  # paths from the descriptors; bodies read on demand
                frame, desc = self._reader._read_head_at(e)
                path = S.check_path(desc.get("path"), f"FILE record at offset {e.offset}")
                if path in self._files:
                    raise BadLayout(f"duplicate file path {path!r}", where=f"FILE record at offset {e.offset}")
                self._files[path] = e
        except BaseException:
            self.close()
            raise

    def _ordered_names(self) -> list[str]:
        """Tensor names in archive order: each record's, then those of the ALIS record after it."""
        out = []
        for e in self._reader.tensor_entries():
            out += e.names
            out += [a for a, _ in self._aliases_at.get(e.offset, ())]
        return out

    @property
    def structure(self) -> tuple[str, bytes] | None:
        """The source model's structure (FORMAT.md §5.4) as (format, bytes), or None."""
        found = self._reader.read_model()
        return None if found is None else _structure(self._reader, *found)

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
        return FORMAT_MAJOR, self._reader.minor

    # tensors ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every name, aliases included, in archive order."""
        return list(self._names)

    def aliases(self) -> dict[str, str]:
        """alias → the tensor it names (FORMAT.md §5.5)."""
        return dict(self._alias_of)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._alias_of

    def info(self, name: str) -> TensorInfo:
        target = self._alias_of.get(name, name)
        rec = self._reader.read_descriptor(self._entry(target))
        info = next(i for i in _record_infos(rec) if i.name == target)
        return info.as_alias(name) if target != name else info

    def infos(self) -> list[TensorInfo]:
        """Every tensor's info (aliases included), reading only the descriptors."""
        out = []
        for entry in self._reader.tensor_entries():
            out += _with_aliases(_record_infos(self._reader.read_descriptor(entry)), self._aliases_at.get(entry.offset, ()))
        return out

    def read(self, name: str, *, verify: bool = False) -> np.ndarray:
        target = self._alias_of.get(name, name)
        _, rec, segments = self._read_record(self._entry(target))
        member = next(m for m in rec.members if m.name == target)
        return _member(rec, _decode_record(self._reader, rec, segments, verify), member)

    def _read_record(self, entry: S.IndexEntry, into: bool = False) -> tuple:
        """``(entry, record, segments)``: a record's head, and its body unless it is one
        :mod:`nnar.pieces` decodes a piece at a time (then a :class:`DeferredBody`: read as it
        decodes).
        ``into``: the caller has a place for the array (or only checks it); otherwise pieces
        are used only where they save memory (byte planes: not the body, streams and array at
        once), not for raw bytes, whose whole decode is the array itself."""
        frame, rec = self._reader.tensor_head(entry)
        # a local file or memory only: pieces read the body twice (its CRC first), which a remote
        # archive would fetch twice
        if self._reader.src.local and (pieces.eligible(rec) if into else _pieces_save_memory(rec)):
            return entry, rec, DeferredBody(frame)
        return entry, rec, self._reader.tensor_body(frame, rec)

    def records(self, *, verify: bool = False) -> Iterator[tuple[list[str], list[tuple[str, str]], TensorSpec, Callable]]:
        """Each TENS record in archive order, to decode where the caller wants it:
        ``(names, aliases, spec, decode)``, where ``names`` are its tensors (stored one after the
        other in its array), ``aliases`` the (alias, target) pairs of the ALIS record after it,
        ``spec`` the record array's, and ``decode(out=None, sink=None)`` reads the record, checks
        its CRC (and its digest, with ``verify``) and decodes its array: returned, or into
        ``out``, or handed to ``sink(start, piece)`` (``start`` the first element of ``piece``, a
        flat view valid during the call; a large lossless record comes a piece at a time)."""
        def deferred(item) -> bool:
            return isinstance(item[2], DeferredBody)

        def work(item):  # small records decode on the pool ahead of the caller; deferred ones when asked
            return None if deferred(item) else _decode_record(self._reader, item[1], item[2], verify)

        items = (self._read_record(entry, True) for entry in self._reader.tensor_entries())
        for item, result in threads.ahead(items, work, lambda it: 0 if deferred(it) else _decoded_bytes(it[1])):
            def decode(out: np.ndarray | None = None, sink=None, item=item, result=result) -> np.ndarray | None:
                _, rec, segments = item
                array = result()
                if array is None:  # a piece at a time, where the caller wants it
                    return _decode_record(self._reader, rec, segments, verify, out=out, sink=sink)
                if out is not None:
                    P.check_out(rec.spec, out)
                    np.copyto(out, array, casting="no")
                    return out
                if sink is not None:
                    sink(0, array.reshape(-1))
                    return None
                return array
            entry = item[0]
            yield list(entry.names), list(self._aliases_at.get(entry.offset, ())), item[1].spec, decode
            item = result = None

    def check_content(self) -> None:
        """Compare the content digest computed from the records with the index's (written since
        format 1.4): records of two archives spliced together are found here."""
        if self._reader.stored_content is not None:
            check_content(self._reader.stored_content, self.content_digest(), "INDX record")

    def read_into(self, name: str, out: np.ndarray, *, verify: bool = False) -> np.ndarray:
        """Decode a tensor into ``out``, a writable C-contiguous array of its storage dtype and
        shape (bfloat16 as uint16, ...): a buffer the caller reuses, or memory mapped from an
        output file. A tensor stored alone in its record is decoded straight into it."""
        target = self._alias_of.get(name, name)
        _, rec, segments = self._read_record(self._entry(target), True)
        member = next(m for m in rec.members if m.name == target)
        P.check_out(member.spec, out)
        if len(rec.members) == 1:
            return _decode_record(self._reader, rec, segments, verify, out=out.reshape(rec.spec.shape))
        np.copyto(out, _member(rec, _decode_record(self._reader, rec, segments, verify), member), casting="no")
        return out

    def items(self, *, verify: bool = False) -> Iterator[tuple[str, np.ndarray]]:
        """Every tensor in archive order, each record decoded once; an alias is the same array
        object as its target."""
        records = (self._read_record(entry) for entry in self._reader.tensor_entries())
        # the next records are decoded on the decoding threads while this one is handed out
        for (entry, rec, _), result in threads.ahead(
                records, lambda item: _decode_record(self._reader, item[1], item[2], verify),
                lambda item: _decoded_bytes(item[1])):
            array = result()
            arrays = {m.name: _member(rec, array, m) for m in rec.members}
            array = None
            yield from arrays.items()
            for a, t in self._aliases_at.get(entry.offset, ()):
                yield a, arrays[t]

    def mmap(self, name: str) -> np.ndarray:
        """A read-only view of a tensor stored raw, mapped from the file (no copy, no CRC check)."""
        rec = self._reader.read_descriptor(self._entry(name))
        seg = rec.segments[0] if len(rec.segments) == 1 else None
        if self.path is None or seg is None or not seg.verbatim or len(rec.members) != 1 \
                or [s.get("codec") for s in rec.pipeline] != ["nnar.raw"]:
            raise InvalidInput(f"tensor {name!r}: only a tensor stored raw, alone in its record, in a file on disk can "
                               f"be mapped (found {_record_infos(rec)[0].describe_pipeline()})")
        if rec.spec.size == 0:
            return np.empty(rec.spec.shape, rec.spec.storage_dtype)
        return np.memmap(self.path, dtype=rec.spec.storage_dtype, mode="r", offset=self._reader.src.base + seg.offset,
                         shape=rec.spec.shape)

    # files of a model folder (FORMAT.md §5.7) --------------------------------------------------
    def files(self) -> list[str]:
        """The paths of the archive's FILE records, in archive order."""
        return list(self._files)

    def read_file(self, path: str) -> bytes:
        """A file's bytes, checked against its SHA-256 digest."""
        if path not in self._files:
            raise TensorNotFound(f"file {path!r}: not in this archive")
        rec, segments = self._reader.read_file(self._files[path])
        return read_file_record(self._reader, rec, segments)

    def verify(self) -> list[TensorInfo]:
        """Check every CRC and decode every record against its digest; return the infos."""
        out = []
        records = (self._read_record(entry, True) for entry in self._reader.tensor_entries())
        # a deferred body is checked a piece at a time, kept nowhere: memory of a few pieces
        for (entry, rec, _), result in threads.ahead(
                records, lambda item: _decode_record(self._reader, item[1], item[2], True, keep=False),
                lambda item: _decoded_bytes(item[1])):
            result()
            out += _with_aliases(_record_infos(rec), self._aliases_at.get(entry.offset, ()))
        self.structure  # noqa: B018  decoded, so its CRC and codecs are checked too
        for path in self._files:
            self.read_file(path)
        self.check_content()
        return out

    def content_digest(self) -> bytes:
        """The archive's content digest (FORMAT.md §5.3.1): what it decodes to and how, not how its
        streams happen to be compressed. An archive a patch rebuilt on a device with another zstd
        has the server's content digest, not its SHA-256."""
        return self._reader.content_digest()

    @property
    def stored_content(self) -> bytes | None:
        """The content digest the index carries (written since format 1.4), or None."""
        return self._reader.stored_content

    def _entry(self, name: str):
        try:
            return self._entries[self._alias_of.get(name, name)]
        except KeyError:
            raise TensorNotFound(f"tensor {name!r}: not in this archive") from None

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

    Memory is bounded by one record. Iterate to get ``(TensorInfo, array)`` per tensor (an
    alias comes right after its target's record, as the same array object); the index and
    trailer are checked when the iteration reaches them. ``structure`` is the source model's
    structure (FORMAT.md §5.4), read before the first tensor.
    """

    def __init__(self, f: BinaryIO, limits: Limits = DEFAULT_LIMITS, *, verify: bool = False):
        self._reader = reader(f, limits)
        self.verify = verify
        self.metadata = dict(self._reader.meta.metadata)
        self.source_format = self._reader.meta.source_format
        self.nnar_version = self._reader.meta.nnar_version
        self._items = self._reader.iter_records()
        self._first: tuple | None = None  # the first record, read early to look for MODL
        self._structure: tuple[str, bytes] | None = None
        self._peeked = False

    @property
    def structure(self) -> tuple[str, bytes] | None:
        if not self._peeked:
            self._peeked = True
            self._first = next(self._items, None)
            if self._first is not None and self._first[0] == "MODL":
                self._structure = _structure(self._reader, self._first[1], self._first[2])
                self._first = None
        return self._structure

    def _records(self) -> Iterator[tuple]:
        self.structure  # noqa: B018 - consumes a leading MODL record
        if self._first is not None:
            first, self._first = self._first, None
            yield first
            del first  # else this frame keeps the first record's body to the end of the archive
        yield from self._items

    def __iter__(self) -> Iterator[tuple[TensorInfo, np.ndarray]]:
        # large byte-plane records from a file: read a piece at a time, not body and streams at once
        return self.read_with(self.decode_record, ahead=True, defer=_pieces_save_memory)

    def check(self) -> Iterator[TensorInfo]:
        """Check every record (CRCs, digests, the index, the content digest) without keeping
        any tensor: large lossless records from a file are checked a piece at a time, so memory
        is a few pieces, not a tensor."""
        return (info for info, _ in self.read_with(self.check_record, ahead=True, defer=pieces.eligible))

    def read_with(self, read_record: Callable[[S.TensorRecord, dict], list],
                  ahead: bool = False, defer: Callable[[S.TensorRecord], bool] | None = None
                  ) -> Iterator[tuple[TensorInfo, Any]]:
        """``(info, value)`` per tensor in archive order, where ``read_record(record, segments)``
        gives the values of a record's tensors (:meth:`decode_record` gives their arrays;
        :mod:`nnar.quantized` gives quantized forms). An alias gets its target's very value.
        With ``ahead``, the next records are decoded on the decoding threads while this one is
        handed out (:func:`nnar.threads.ahead`). ``defer(record)``: bodies ``read_record`` will
        read itself, a piece at a time (segments a :class:`DeferredBody`; a seekable source only)."""
        self._reader.defer_body = defer
        def work(item):
            return read_record(item[1], item[2]) if item[0] == "TENS" else None

        def weight(item):
            return _decoded_bytes(item[1]) if item[0] == "TENS" else 0

        records = threads.ahead(self._records(), work, weight) if ahead else \
            ((item, functools.partial(work, item)) for item in self._records())
        last: dict[str, tuple[TensorInfo, Any]] = {}
        for item, result in records:
            if item[0] == "TENS":
                rec = item[1]
                item = None
                last = {}  # the previous record's arrays: not kept alive while this one decodes
                values = result()
                result = None
                last = {i.name: (i, v) for i, v in zip(_record_infos(rec), values)}
                del values
                yield from last.values()
            elif item[0] == "ALIS":
                for alias, target in item[1]:
                    info, value = last[target]
                    yield info.as_alias(alias), value
            elif item[0] == "FILE" and self.verify:  # a folder's file: checked, not handed out
                read_file_record(self._reader, item[1], item[2])

    @property
    def content(self) -> bytes | None:
        """The content digest computed from the records (FORMAT.md §5.3.1), once iteration ended."""
        return getattr(self._reader, "content", None)

    def decode_record(self, rec: S.TensorRecord, segments: dict | DeferredBody) -> list[np.ndarray]:
        """The arrays of a record's tensors (its digest checked when ``verify``); ``segments`` is
        emptied on the way (its stored bytes freed as soon as the streams are decoded)."""
        array = _decode_record(self._reader, rec, segments, self.verify)
        return [_member(rec, array, m) for m in rec.members]

    def check_record(self, rec: S.TensorRecord, segments: dict | DeferredBody) -> list[None]:
        """Decode a record and check its digest, keeping nothing."""
        _decode_record(self._reader, rec, segments, True, keep=False)
        return [None] * len(rec.members)

    def decode_streams(self, rec: S.TensorRecord, segments: dict):
        """:func:`nnar.pipeline.decode_streams` for a record: its streams before the array→bytes
        stage decodes them."""
        return P.decode_streams(rec.spec, rec.pipeline, segments, self._reader.limits, f"tensor {rec.names[0]!r}",
                                self._reader.strict)

    def infos(self) -> Iterator[TensorInfo]:
        """Walk the records checking CRCs, without decoding."""
        return (info for info, _ in self.read_with(lambda rec, segments: [None] * len(rec.members)))


def _with_aliases(infos: list[TensorInfo], pairs) -> list[TensorInfo]:
    """A record's infos, then those of its aliases ((alias, target) pairs of its ALIS record)."""
    by_name = {i.name: i for i in infos}
    return infos + [by_name[t].as_alias(a) for a, t in pairs]


def read_file_record(reader: RecordReader, rec: S.FileRecord, segments: dict) -> bytes:
    """A FILE record's bytes (FORMAT.md §5.7), decoded and checked against its digest."""
    where = f"file {rec.path!r}"
    data = P.decode(rec.spec, rec.pipeline, segments, reader.limits, where, reader.strict).tobytes()
    found = hashlib.sha256(data).digest()
    if found != rec.digest:
        raise DigestMismatch(f"decoded file: expected SHA-256 {rec.digest.hex()}, computed {found.hex()}", where=where)
    return data


def reader(f, limits: Limits = DEFAULT_LIMITS, **kw) -> RecordReader:
    """A record reader that can compute and check the content digest (FORMAT.md §5.3.1),
    decoding a MODL structure for it."""
    r = RecordReader(f, limits, **kw)
    r.structure_sha256 = lambda model, segments: hashlib.sha256(_structure(r, model, segments)[1]).digest()
    return r


def _structure(reader: RecordReader, model: S.ModelRecord, segments: dict) -> tuple[str, bytes]:
    where = f"MODL record ({model.format})"
    data = P.decode(model.spec, model.pipeline, segments, reader.limits, where, reader.strict)
    return model.format, data.tobytes()
