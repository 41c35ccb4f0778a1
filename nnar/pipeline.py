"""Run a tensor through its pipeline of codecs (spec/FORMAT.md §6).

Encoding: array →(array→array stages)→ array →(one array→bytes stage)→ named streams →(per
stream, the smallest of the candidate bytes→bytes chains)→ segments.

Decoding runs the stored stages backwards. Before any codec runs, the stored pipeline is checked
as a whole: stage kinds in grammar order, every intermediate size within :class:`Limits`, the
segments exactly the streams the array→bytes stage needs. The container layer hands this module
segment bytes and never looks inside them; this module never sees a file offset.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from . import chunkwise, threads
from .codecs import get_codec_class
from .codecs.abc import ArrayArrayCodec, ArrayBytesCodec, Buffer, BytesBytesCodec, Codec, TensorSpec
from .codecs.chunked import CHUNK_BYTES, Chunked
from .codecs.raw import Raw
from .errors import BadDescriptor, CodecDataError, InvalidInput, NnarError, UnsupportedCodec
from .limits import Limits

STAGE_KEYS = frozenset({"codec", "config", "params"})


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """An encoding recipe: what the user (or the planner) chose for one tensor."""

    array_codecs: tuple[ArrayArrayCodec, ...] = ()
    array_bytes: ArrayBytesCodec = Raw()
    #: candidate bytes→bytes chains, fastest to decode and encode first (``()`` stores the stream
    #: as it is); each stream keeps the smallest, or, judged on a sample, the first within
    #: ``CHAIN_TOLERANCE`` of the smallest
    stream_chains: tuple[tuple[BytesBytesCodec, ...], ...] = ((),)
    #: a stream of at least ``CHUNK_STREAMS_FROM`` bytes under a one-stage chain is stored in
    #: chunks of this many bytes (``nnar.chunked``), so its parts decode on every core; None:
    #: never
    chunk_bytes: int | None = CHUNK_BYTES

    def describe(self) -> str:
        return " | ".join(c.codec_id for c in (*self.array_codecs, self.array_bytes))


@dataclasses.dataclass
class EncodedSegment:
    name: str
    codecs: list[dict[str, Any]]  # stage records, in encode order
    raw_length: int  # the stream's length before its bytes→bytes codecs
    data: Buffer


@dataclasses.dataclass
class EncodedTensor:
    spec: TensorSpec
    pipeline: list[dict[str, Any]]  # stage records, in encode order
    segments: list[EncodedSegment]

    @property
    def stored_bytes(self) -> int:
        return sum(len(s.data) for s in self.segments)


def stage_record(codec: Codec, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"codec": codec.codec_id, "config": codec.get_config(), "params": dict(params)}


def _nbytes(buf: Buffer) -> int:
    return memoryview(buf).nbytes


def encode(array: np.ndarray, spec: TensorSpec, pipeline: Pipeline) -> EncodedTensor:
    """Encode a C-contiguous array of ``spec`` (storage dtype) with ``pipeline``."""
    records, current, cur_spec = [], array, spec
    for codec in pipeline.array_codecs:
        current, params = codec.encode(current, cur_spec)
        records.append(stage_record(codec, params))
        cur_spec = codec.encoded_spec(cur_spec, params)
    streams, params = pipeline.array_bytes.encode(current, cur_spec)
    records.append(stage_record(pipeline.array_bytes, params))
    segments = []
    for name, stream in streams.items():
        chains = pipeline.stream_chains
        if len(chains) > 1 and _nbytes(stream) > SAMPLE_STREAM_ABOVE:
            # judge the chains on a sample, then encode the whole stream once, or store it as it
            # is when no chain saves even 1% on the sample (mantissa planes: near-random bytes)
            view = memoryview(stream).cast("B")
            probe = b"".join(view[a:b] for a, b in sample_runs(len(view)))
            sizes = {c: _nbytes(_run_chain(probe, c)[0]) if c else len(probe) for c in chains}
            best_chain = _pick(chains, sizes)
            chains = ((), best_chain) if best_chain else ((),)
        if pipeline.chunk_bytes is not None and _nbytes(stream) >= CHUNK_STREAMS_FROM:
            chains = tuple(_chunked(c, pipeline.chunk_bytes) for c in chains)
        results = {chain: _run_chain(stream, chain) for chain in chains}
        chain = _pick(chains, {c: _nbytes(d) for c, (d, _) in results.items()}, exact=True)
        data, stage_records = results[chain]
        segments.append(EncodedSegment(name, stage_records, _nbytes(stream), data))
    return EncodedTensor(spec, records, segments)


SAMPLE_STREAM_ABOVE = 256 << 10
#: streams this long or longer are chunked: four chunks or more, work for every core
CHUNK_STREAMS_FROM = 4 * CHUNK_BYTES


def _chunked(chain: tuple, chunk_bytes: int) -> tuple:
    """A one-stage chain as chunks of that stage; others as they are (a chain of two stages
    would chunk its first stage's output, whose chunks then no longer match the stream's)."""
    if len(chain) != 1 or isinstance(chain[0], Chunked):
        return chain
    return (Chunked(chunk_bytes, chain[0]),)

#: a slower chain must store a sample this much smaller than every faster one to be chosen
CHAIN_TOLERANCE = 0.005
#: ... and a chain with a slow decoder (Huffman: ~40 M symbols/s against zstd's GB/s) this much
SLOW_CHAIN_TOLERANCE = 0.02


def _slow(chain) -> bool:
    return any(c.slow_decode for c in chain)


def _pick(chains, sizes, exact: bool = False):
    """The chain to keep: the smallest fast chain (on a sample: the fastest within
    ``CHAIN_TOLERANCE`` of it), unless a slow-decoding chain beats it by ``SLOW_CHAIN_TOLERANCE``."""
    fast = [c for c in chains if not _slow(c)]
    slow = [c for c in chains if _slow(c)]
    best = None
    if fast:
        smallest = min(sizes[c] for c in fast)
        best = min(fast, key=lambda c: sizes[c]) if exact else \
            next(c for c in fast if sizes[c] <= smallest * (1 + CHAIN_TOLERANCE))
    for c in slow:
        if best is None or sizes[c] * (1 + SLOW_CHAIN_TOLERANCE) < sizes[best]:
            best = c if best is None or sizes[c] < sizes[best] else best
    return best


def sample_runs(n: int, runs: int = 4, share: int = 16, cap: int = 256 << 10) -> list[tuple[int, int]]:
    """``runs`` non-overlapping, evenly spread [start, end) runs covering about 1/``share`` of
    ``n`` items (at most ``cap`` in all). Contiguous runs keep the local repeats an LZ coder
    would find; never overlapping, so a sample cannot repeat itself and flatter LZ."""
    run = max(1, min(n // (runs * share), cap // runs))
    step = n // runs
    return [(i * step, i * step + run) for i in range(runs)]


def _run_chain(stream: Buffer, chain) -> tuple[Buffer, list[dict[str, Any]]]:
    data, stage_records = stream, []
    for codec in chain:
        data, p = codec.encode(data)
        stage_records.append(stage_record(codec, p))
    return data, stage_records


# -- decoding ------------------------------------------------------------------------------------


def _build_stage(record: object, where: str, strict: bool) -> tuple[Codec, Mapping[str, Any]]:
    if not isinstance(record, dict) or not {"codec", "config", "params"} <= record.keys():
        raise BadDescriptor(f"stage: expected a map with keys codec, config, params, found {record!r:.200}", where=where)
    if strict and record.keys() != STAGE_KEYS:
        raise BadDescriptor(f"stage: unexpected keys {sorted(record.keys() - STAGE_KEYS)}", where=where)
    # FORMAT.md §6.1 step 1: the stage map's own schema (bad-descriptor), then the codec id
    # (unsupported-codec, whatever its msgpack type: it names no codec this reader knows), then
    # the config, which only the codec's page defines (codec-data, a non-map config included)
    if not isinstance(record["params"], dict):
        raise BadDescriptor(f"stage params: expected a map, found {type(record['params']).__name__}", where=where)
    try:
        cls = get_codec_class(record["codec"])
    except UnsupportedCodec as e:
        raise UnsupportedCodec(e.message, where=where) from None
    try:
        codec = cls.from_config(record["config"])
    except CodecDataError as e:
        raise CodecDataError(e.message, where=where) from None
    params = record["params"]
    unknown = _run(codec.unknown_params, where, params)
    if unknown and strict:
        raise CodecDataError(f"{cls.codec_id}: params it does not define: {['.'.join(k) for k in unknown]}",
                             where=where)
    # a newer minor's params keys are ignored (FORMAT.md §10), nested ones too: the codec sees
    # only what it defines
    return codec, _without(params, unknown) if unknown else params


def _without(params: dict, paths: list[tuple[str, ...]]) -> dict:
    """``params`` less the keys at ``paths`` (``("values", "size")``: key size of the map
    params["values"]); copies, never edits, the descriptor's maps."""
    out = dict(params)
    for *parents, key in paths:
        node = out
        for p in parents:
            node[p] = dict(node[p])
            node = node[p]
        node.pop(key, None)
    return out


def check_pipeline(spec: TensorSpec, stages: Sequence[object], limits: Limits, where: str, strict: bool = True):
    """Resolve stored stage records into codecs and the spec each array→array stage outputs.

    Returns ``(array_stages, (array_bytes_codec, params), spec_at_array_bytes)``; raises before
    any data is decoded if the grammar or a size limit is broken.
    """
    if not isinstance(stages, list) or not stages:
        raise BadDescriptor(f"pipeline: expected a non-empty list of stages, found {stages!r:.200}", where=where)
    limits.check("pipeline stages", len(stages), "max_stages", where)
    built = [_build_stage(s, where, strict) for s in stages]
    *aa, (ab, ab_params) = built
    if not isinstance(ab, ArrayBytesCodec) or not all(isinstance(c, ArrayArrayCodec) for c, _ in aa):
        kinds = [c.kind for c, _ in built]
        raise BadDescriptor(f"pipeline: expected array-array stages then one array-bytes stage, found {kinds}", where=where)
    cur = spec
    aa_specs = []
    for codec, params in aa:
        aa_specs.append(cur)
        try:
            cur = codec.encoded_spec(cur, params)
        except CodecDataError as e:
            raise CodecDataError(e.message, where=where) from None
        limits.check("intermediate array bytes", cur.nbytes, "max_tensor_bytes", where)
    return [(c, p, s) for (c, p), s in zip(aa, aa_specs)], (ab, ab_params), cur


def decode_streams(spec: TensorSpec, stages: Sequence[object], segments: Mapping[str, tuple[Sequence[object], int, Buffer]],
                   limits: Limits, where: str, strict: bool = True):
    """Check the pipeline and undo every segment's bytes→bytes codecs: returns
    ``(array_stages, (array_bytes_codec, params), spec_at_array_bytes, streams)``, what the
    array→bytes stage decodes from. :func:`decode` goes on from there; so does
    :mod:`nnar.quantized`, which reads quantized forms without expanding them."""
    aa, (ab, ab_params), ab_spec, chains = check_streams(spec, stages, segments, limits, where, strict)
    return aa, (ab, ab_params), ab_spec, _decode_chains(chains, segments, where)


def _decode_chains(chains, segments, where: str) -> dict:
    """Every segment's stream, its chain undone, the streams of a large record on the pool."""
    jobs = [(name, *chains[name], raw_length, data, where) for name, (_, raw_length, data) in segments.items()]
    ex = threads.pool() if len(jobs) > 1 and sum(j[3] for j in jobs) >= threads.PARALLEL_MIN_BYTES else None
    if ex is None or threads.in_pool():
        streams = {job[0]: _decode_chain(*job) for job in jobs}
    else:  # one stream per thread; map yields in record order, so the first failure in order is raised
        streams = dict(zip([j[0] for j in jobs], ex.map(lambda job: _decode_chain(*job), jobs)))
    return streams


def check_streams(spec: TensorSpec, stages: Sequence[object], segments: Mapping[str, tuple[Sequence[object], int, Any]],
                  limits: Limits, where: str, strict: bool = True):
    """Every check of :func:`decode_streams` before it decodes anything: the pipeline, the
    streams it needs and their raw lengths, every segment's chain. Returns
    ``(array_stages, (array_bytes_codec, params), spec_at_array_bytes, chains)``, ``chains``
    mapping each segment to :func:`check_chain`'s ``(codecs, bounds)``."""
    aa, (ab, ab_params), ab_spec = check_pipeline(spec, stages, limits, where, strict)
    needed = _run(ab.stream_names, where, ab_spec, ab_params)
    if set(segments) != set(needed):
        raise BadDescriptor(f"segments: expected streams {list(needed)} for {ab.codec_id}, found {list(segments)}", where=where)
    # before any decompression: a stream may not claim more than its tensor needs
    for name, length in _run(ab.stream_lengths, where, ab_spec, ab_params).items():
        if segments[name][1] != length:
            raise CodecDataError(f"segment {name!r}: raw_length {segments[name][1]}, expected {length} for "
                                 f"{ab.codec_id} of {ab_spec.dtype}{list(ab_spec.shape)}", where=where)
    for name, bound in _run(ab.stream_bounds, where, ab_spec, ab_params).items():
        if segments[name][1] > bound:
            raise CodecDataError(f"segment {name!r}: raw_length {segments[name][1]}, expected at most {bound} for "
                                 f"{ab.codec_id} of {ab_spec.dtype}{list(ab_spec.shape)}", where=where)
    # every segment's chain is checked before any segment is decoded (FORMAT.md §6.1 step 4), so
    # which fault is reported does not depend on the order segments are decoded in
    chains = {name: check_chain(name, chain, raw_length, limits, where, strict)
              for name, (chain, raw_length, _) in segments.items()}
    return aa, (ab, ab_params), ab_spec, chains


def check_chain(name: str, chain: object, raw_length: int, limits: Limits, where: str, strict: bool = True):
    """Resolve one segment's bytes→bytes stages and the most each decode step may output
    (FORMAT.md §6.1 step 4), before anything is decoded: ``(codecs, bounds)``."""
    if not isinstance(chain, list):
        raise BadDescriptor(f"segment {name!r} codecs: expected a list, found {chain!r:.100}", where=where)
    limits.check(f"codecs of segment {name!r}", len(chain), "max_stages", where)
    codecs = [_build_stage(s, where, strict) for s in chain]
    for codec, _ in codecs:
        if not isinstance(codec, BytesBytesCodec):
            raise BadDescriptor(f"segment {name!r}: expected bytes-bytes codecs, found {codec.codec_id} ({codec.kind})",
                                where=where)
    # codecs[i] decodes to its own input, which codecs[i - 1] encoded from at most bounds[i - 1]
    # bytes
    bounds = [raw_length]
    for codec, _ in codecs[:-1]:
        bounds.append(min(codec.encoded_bound(bounds[-1]), limits.max_tensor_bytes))
    return codecs, bounds


def decode_segment(name: str, chain: object, raw_length: int, data: Buffer, limits: Limits, where: str,
                   strict: bool = True) -> Buffer:
    """Undo one segment's bytes→bytes codecs (FORMAT.md §6.1 step 4): its stream of exactly
    ``raw_length`` bytes."""
    codecs, bounds = check_chain(name, chain, raw_length, limits, where, strict)
    return _decode_chain(name, codecs, bounds, raw_length, data, where)


def _decode_chain(name: str, codecs: list, bounds: list[int], raw_length: int, data: Buffer, where: str) -> Buffer:
    for i in range(len(codecs) - 1, -1, -1):
        codec, params = codecs[i]
        data = _run(codec.decode, where, data, params, bounds[i])
    if _nbytes(data) != raw_length:
        raise CodecDataError(f"segment {name!r}: expected {raw_length} decoded bytes, found {_nbytes(data)}", where=where)
    return data


def reencode_segment(name: str, chain: list, stream: Buffer, where: str, strict: bool = True) -> Buffer:
    """Encode ``stream`` again with the bytes→bytes stages a segment records (their configs), and
    check each stage gives back the params it recorded. Encoders are deterministic, so this
    reproduces the stored bytes (spec/patch.md: the applier of a patch does this)."""
    data = stream
    for record in chain:
        codec, params = _build_stage(record, where, strict)
        if not isinstance(codec, BytesBytesCodec):
            raise BadDescriptor(f"segment {name!r}: expected bytes-bytes codecs, found {codec.codec_id} ({codec.kind})",
                                where=where)
        data, found = _run(codec.encode, where, data)
        if dict(found) != dict(params):
            raise CodecDataError(f"segment {name!r}: encoding again with {codec.codec_id} gave params {found!r:.100}, "
                                 f"the record says {params!r:.100}", where=where)
    return data


def decode(
    spec: TensorSpec,
    stages: Sequence[object],
    segments: Mapping[str, tuple[Sequence[object], int, Buffer]],
    limits: Limits,
    where: str,
    strict: bool = True,
    consume: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode one tensor. ``segments`` maps stream name → (codec records, raw_length, bytes).
    With ``consume`` (a dict), it is emptied once the streams are decoded: the stored bytes can
    then be freed before the array is built, so a record costs its streams and its array at
    once, not its body too. With ``out`` (a C-contiguous array of the spec's storage dtype and
    shape), the tensor is decoded into it and ``out`` returned."""
    if out is not None:
        check_out(spec, out)
    aa, (ab, ab_params), ab_spec, chains = check_streams(spec, stages, segments, limits, where, strict)
    size = None if aa else chunkwise.chunk_bytes(ab, ab_spec, chains)
    if size is not None:  # chunked streams: decoded and assembled a chunk at a time, on every core
        target = out if out is not None else np.empty(spec.shape, spec.storage_dtype)
        chunkwise.decode(ab, ab_params, ab_spec, chains, segments, size, target,
                         lambda fn, *args: _run(fn, where, *args))
        if consume and isinstance(segments, dict):
            segments.clear()
        return target
    streams = _decode_chains(chains, segments, where)
    if consume and isinstance(segments, dict):
        segments.clear()
    if out is not None and not aa:  # straight into the caller's buffer
        _run(ab.decode_into, where, streams, ab_spec, ab_params, out)
        return out
    array = _run(ab.decode, where, streams, ab_spec, ab_params)
    del streams
    array = decode_array_stages(spec, aa, array, where)
    if out is None:
        return array
    np.copyto(out, array, casting="no")
    return out


def check_out(spec: TensorSpec, out: np.ndarray) -> None:
    """``out`` must be a writable C-contiguous array of the spec's storage dtype and shape."""
    if not isinstance(out, np.ndarray) or out.dtype != spec.storage_dtype or out.shape != spec.shape \
            or not out.flags.c_contiguous or not out.flags.writeable:
        found = f"{out.dtype}{list(out.shape)}" if isinstance(out, np.ndarray) else type(out).__name__
        raise InvalidInput(f"out: expected a writable C-contiguous {spec.storage_dtype}{list(spec.shape)} array, "
                           f"found {found}")


def decode_array_stages(spec: TensorSpec, aa, array: np.ndarray, where: str) -> np.ndarray:
    """Run the array→array stages backwards from the array→bytes stage's output."""
    for codec, params, in_spec in reversed(aa):
        array = _run(codec.decode, where, array, in_spec, params)
    if array.dtype != spec.storage_dtype or array.shape != spec.shape:
        raise CodecDataError(f"pipeline output: expected {spec.dtype}{list(spec.shape)}, found {array.dtype}{list(array.shape)}", where=where)
    return array


def decode_encoded(enc: EncodedTensor, limits: Limits, where: str) -> np.ndarray:
    """Decode what :func:`encode` just produced, as a reader will (lossy encoders measure it)."""
    segs = {s.name: (s.codecs, s.raw_length, s.data) for s in enc.segments}
    return decode(enc.spec, enc.pipeline, segs, limits, where)


def _run(fn, where, *args):
    """Call a codec; give its errors the tensor's name, and turn a stray numpy/Python error from
    hostile params into a CodecDataError rather than letting it escape the family."""
    try:
        return fn(*args)
    except NnarError as e:
        if e.where is None:
            raise type(e)(e.message, where=where) from None
        raise
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError) as e:
        raise CodecDataError(f"codec failed on stored data: {type(e).__name__}: {e}", where=where) from e


__all__ = ["Pipeline", "EncodedSegment", "EncodedTensor", "encode", "decode", "decode_encoded", "decode_streams",
           "decode_array_stages", "check_pipeline", "check_chain", "decode_segment", "reencode_segment"]
