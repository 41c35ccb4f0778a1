"""The Python API: ``pack``, ``unpack``, ``open``, ``verify``. The CLI is a thin shell over it."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import sys
from typing import Any, BinaryIO, Callable, Iterable, Mapping

import numpy as np

from . import dtypes, formats, planner, remote
from .archive import Archive, ArchiveWriter, StreamReader, TensorInfo
from .config import PackConfig, from_mapping as config_from
from .quant import prune
from .errors import InvalidInput, MissingExtra, NnarError, NnarIOError
from .fsutil import atomic_output
from .limits import DEFAULT_LIMITS, Limits

PathOrFile = str | os.PathLike | BinaryIO
Progress = Callable[[str, int, int | None], None]  # (tensor name, done, total)


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


@contextlib.contextmanager
def _input(src: PathOrFile):
    if isinstance(src, (bytes, bytearray, memoryview)):
        yield src  # read in place, no copy
    elif _is_path(src):
        if os.fspath(src) == "-":
            yield sys.stdin.buffer
            return
        if remote.is_url(src):  # read in order, in large ranges
            with remote.open_url(src, block_size=4 << 20) as f:
                yield f
            return
        try:
            f = builtins.open(src, "rb")  # this module defines its own open()
        except OSError as e:
            raise NnarIOError(f"cannot open input {os.fspath(src)!r}: {e.strerror}") from e
        with f:
            yield f
    else:
        yield src


@contextlib.contextmanager
def _output(dst: PathOrFile, force: bool, inputs: tuple):
    if remote.is_url(dst):
        raise InvalidInput(f"output {dst!r}: nnar writes local files (atomically); write one and upload it")
    if _is_path(dst):
        with atomic_output(dst, force=force, inputs=inputs) as f:
            yield f
    else:
        yield dst


def _model_from_mapping(tensors: Mapping[str, Any]) -> formats.Model:
    if any(type(v).__module__.startswith("torch") for v in tensors.values()):
        from .formats import torch as torch_format  # a state dict: ties, bfloat16 and key order as torch has them
        return torch_format.model_from_state_dict(tensors)

    def items():
        for name, value in tensors.items():
            arr = np.asarray(value)
            yield name, arr, dtypes.dtype_name_of(arr)
    return formats.Model("python", {}, items, len(tensors))


def _framework_object(src: Any) -> bool:
    return type(src).__module__.split(".")[0] in ("onnx", "torch") and not _is_path(src)


def _model_from_object(src: Any) -> formats.Model:
    """An ``onnx.ModelProto`` (copied: packing takes the weights out) or a ``torch.nn.Module``
    (its state dict)."""
    if hasattr(src, "state_dict"):
        return _model_from_mapping(src.state_dict())
    if type(src).__name__ == "ModelProto":
        from .formats import onnx as onnx_format
        copy = type(src)()
        copy.CopyFrom(src)
        return onnx_format.from_proto(copy)
    raise InvalidInput(f"cannot pack a {type(src).__module__}.{type(src).__name__}: expected a path, a file, a mapping "
                       "of names to arrays or tensors, an onnx.ModelProto or a torch.nn.Module")


def pack(src: PathOrFile | Mapping[str, Any], dst: PathOrFile | None = None, *, fmt: str | None = None,
         level: int = planner.DEFAULT_LEVEL, metadata: Mapping[str, str] | None = None, force: bool = False,
         progress: Progress | None = None, config: PackConfig | Mapping[str, Any] | str | None = None,
         evaluate: Callable[[dict[str, np.ndarray]], float] | None = None,
         max_output_error: float | str | None = None, calibrate: Any = None, max_evals: int | None = None,
         menu: list[Any] | None = None, executor: Any = None, threads: int | None = None,
         dask: str | None = None) -> list[TensorInfo] | bytes:
    """Pack a model into an nnar archive: a path (.safetensors .npz .pt/.pth/.bin/.ckpt .onnx), a
    binary file, a mapping name → array (or a torch state dict), an ``onnx.ModelProto`` or a
    ``torch.nn.Module``. Write it at ``dst`` (a path, ``"-"`` for stdout, or a binary file). With no ``dst``, return
    the archive's bytes.

    Lossless unless ``config`` says otherwise: a preset name (``"int8"``, ``"balanced"``, ...), a
    mapping (``{"quant": "kmeans", "bits": 4, "prune": 0.5, "layers": {"fc.*": {"bits": 8}}}``),
    or a :class:`nnar.config.PackConfig`. Lossy tensors' infos carry a ``fidelity`` report.

    **In parallel**: tensors are encoded on ``executor`` (any ``concurrent.futures``-style
    executor: threads, processes, ``distributed.Client(...).get_executor()``), or on ``threads``
    threads, or on the Dask cluster whose scheduler is at ``dask`` (``"tcp://host:8786"``;
    dask.distributed is an optional extra); the archive is written here, in order, byte for byte
    the one a single thread writes.

    **Output-aware** (spec/search.md): with ``evaluate`` and ``max_output_error`` (a float), nnar
    searches each weight tensor's setting for the smallest archive whose weights give
    ``evaluate(tensors) <= max_output_error``; ``evaluate`` gets a dict {name: array} of a full
    set of candidate weights (read-only; bfloat16 as uint16 bit patterns; aliases included) and
    returns the model's output error against the original (0 for the original weights). For an
    ONNX model, ``calibrate`` (an .npz path, a directory of them, or a list of {input: array}
    batches) with ``max_output_error="METRIC=VALUE"`` (``cos``, ``rel-l2``, ``max-abs``,
    ``argmax``, ``ctc``) runs the model in onnxruntime instead. At most ``max_evals`` evaluations
    (default 1000); ``menu`` replaces the options tried per tensor (a list of TensorSettings
    mappings). The archive is evaluated once more from its own decoded bytes and written only if
    that holds (:class:`nnar.OutputBoundNotMet` otherwise). The result's ``.search`` is the
    report."""
    cfg = config_from(config)
    searching = evaluate is not None or calibrate is not None or max_output_error is not None
    if dst is None:
        buf = io.BytesIO()
        result = pack(src, buf, fmt=fmt, level=level, metadata=metadata, progress=progress, config=cfg,
                      evaluate=evaluate, max_output_error=max_output_error, calibrate=calibrate,
                      max_evals=max_evals, menu=menu, executor=executor, threads=threads, dask=dask)
        if not searching:
            return buf.getvalue()
        data = _SearchedBytes(buf.getvalue())
        data.search = result.search
        return data
    with contextlib.ExitStack() as stack:
        executor = _executor(executor, threads, dask, stack)
        if isinstance(src, Mapping):
            model = _model_from_mapping(src)
        elif _framework_object(src):
            model = _model_from_object(src)
        elif _is_path(src) and os.path.isdir(src):  # a model folder (spec/folder.md)
            if fmt not in (None, "folder"):
                raise InvalidInput(f"input {os.fspath(src)!r} is a folder: --from {fmt} names a file format")
            _check_archive_name(dst, force)
            from .formats import folder
            model = folder.read(os.fspath(src))
        else:
            f = stack.enter_context(_input(src))
            head = _head(src, f)
            shown = os.fspath(src) if _is_path(src) else getattr(src, "name", "-")
            if head is not None and formats.sniff(head) == "nnar":
                raise InvalidInput(f"input {shown!r} is already an nnar archive: expected a model to pack "
                                   f"(to get the model back: nnar unpack {shown} -o model.safetensors)")
            name = formats.detect(src if _is_path(src) else getattr(src, "name", None), fmt, role="input", head=head)
            _check_archive_name(dst, force)
            model = formats.module(name).read(f)
            if model.close:
                stack.callback(model.close)
        md = dict(model.metadata)
        md.update(metadata or {})
        if searching:
            return _pack_searched(model, lambda: _output(dst, force, (src,) if _is_path(src) else ()), cfg=cfg,
                                  evaluate=evaluate, bound=max_output_error, calibrate=calibrate,
                                  max_evals=max_evals, menu=menu, level=level, metadata=md, progress=progress)
        threshold = _global_threshold(model, cfg) if cfg.prune_global is not None else None
        out = stack.enter_context(_output(dst, force, (src,) if _is_path(src) else ()))
        structure = (model.source_format, model.structure) if model.structure is not None else None
        aliases: dict[str, list[str]] = {}
        for alias, target in model.aliases.items():
            aliases.setdefault(target, []).append(alias)
        with ArchiveWriter(out, metadata=md, source_format=model.source_format, level=level, config=cfg,
                           global_threshold=threshold, structure=structure, executor=executor) as w:
            for rel, load in model.files:  # a model folder's other files (FORMAT.md §5.7), before the tensors
                w.write_file(rel, load())
            i = 0  # no enumerate(): its cached tuple would keep the previous tensor alive
            for name, arr, dt in model.tensors():
                w.write(name, arr, dtype=dt, aliases=aliases.pop(name, ()))
                del arr
                i += 1
                if progress:
                    progress(name, i, model.count)
            if aliases:
                raise InvalidInput(f"aliases of tensors that are not in the model: {sorted(aliases)[:5]}")
        return w.infos


def _executor(executor: Any, threads: int | None, dask: str | None, stack: contextlib.ExitStack) -> Any:
    """The executor records are encoded on: the caller's, a pool of ``threads``, or a Dask
    cluster's (closed with the pack); None: in this thread."""
    given = [name for name, v in (("executor", executor), ("threads", threads), ("dask", dask)) if v is not None]
    if len(given) > 1:
        raise InvalidInput(f"{' and '.join(given)}: expected one way to run the encoders, found {len(given)}")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InvalidInput(f"threads: expected an integer >= 1, found {threads!r}")
        if threads == 1:
            return None
        from concurrent.futures import ThreadPoolExecutor
        return stack.enter_context(ThreadPoolExecutor(threads, thread_name_prefix="nnar-encode"))
    if dask is not None:
        try:
            from distributed import Client
        except ImportError:
            raise MissingExtra("--dask needs dask.distributed: pip install \"dask[distributed]\"") from None
        try:
            client = stack.enter_context(Client(dask, timeout=30, set_as_default=False))
        except (OSError, TimeoutError) as e:
            raise NnarIOError(f"cannot reach the Dask scheduler at {dask!r}: {e}") from e
        return client.get_executor(pure=False)
    return executor


DEFAULT_MAX_EVALS = 1000


class _SearchedBytes(bytes):
    """An archive's bytes, with the search's report as ``.search``."""

    search = None


def _pack_searched(model: formats.Model, out_factory, *, cfg, evaluate, bound, calibrate, max_evals, menu, level,
                   metadata, progress):
    from .search.pack import pack_searched
    max_evals = DEFAULT_MAX_EVALS if max_evals is None else max_evals
    if calibrate is not None:
        if evaluate is not None:
            raise InvalidInput("evaluate and calibrate: expected one way to measure the model, found both")
        from .search import onnx_runner, outputs, calibration
        if model.source_format != "onnx" or model.structure is None:
            raise InvalidInput(f"--calibrate runs the model in onnxruntime: expected an ONNX model, found "
                               f"{model.source_format} (from Python, pass evaluate=fn instead)")
        if not isinstance(bound, str):
            raise InvalidInput(f"max_output_error with calibration data: expected 'METRIC=VALUE' (metrics: "
                               f"{', '.join(outputs.METRICS)}), found {bound!r}")
        b = outputs.parse_bound(bound)
        batches = calibration.load(calibrate) if not isinstance(calibrate, list) else calibrate
        weights = {n: a for n, a, _ in model.tensors()}
        runner = onnx_runner.OnnxEvaluator(model.structure, batches, b,
                                           dtypes={n: dt for n, _, dt in model.tensors()})
        runner.reference(weights)
        del weights
        return pack_searched(model, out_factory, cfg=cfg, evaluate=runner, bound=b.threshold, max_evals=max_evals,
                             menu=menu, level=level, metadata=metadata, progress=progress, metric=b.metric,
                             describe=lambda v: outputs.describe(b, v))
    if evaluate is None or bound is None:
        raise InvalidInput("output-aware packing: expected evaluate= and max_output_error= together (or, for ONNX, "
                           "calibrate= and max_output_error='METRIC=VALUE')")
    if not callable(evaluate):
        raise InvalidInput(f"evaluate: expected a callable (tensors -> error), found {type(evaluate).__name__}")
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound >= 0:
        raise InvalidInput(f"max_output_error: expected a number >= 0 (the bound on evaluate's result), found {bound!r}")
    return pack_searched(model, out_factory, cfg=cfg, evaluate=evaluate, bound=float(bound), max_evals=max_evals,
                         menu=menu, level=level, metadata=metadata, progress=progress, metric="evaluate")


def _global_threshold(model: formats.Model, cfg: PackConfig) -> float:
    """One magnitude threshold over every tensor that pruning applies to (a first pass)."""
    mags = []
    for name, arr, dt in model.tensors():
        if dt in dtypes.FLOAT_DTYPES:
            s = cfg.settings_for(name, arr.shape, True)
            if not s.lossless and cfg.eligible(arr.shape) and s.prune is None and s.threshold is None:
                x = dtypes.bfloat16_to_float32(arr) if dt == "bfloat16" else arr
                mags.append(np.abs(x).reshape(-1))
    return prune.global_threshold(mags, cfg.prune_global)


def _head(src: Any, f: Any) -> bytes | None:
    """The first bytes of an input, without consuming them (None if they can't be had so)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(memoryview(src)[:formats.SNIFF_BYTES])
    if _is_path(src) and os.fspath(src) != "-":
        return formats.head_of(src)
    try:
        if hasattr(f, "peek"):  # a pipe: what is buffered already, no more
            return f.peek(formats.SNIFF_BYTES)[:formats.SNIFF_BYTES] or None
        if f.seekable():
            pos = f.tell()
            data = f.read(formats.SNIFF_BYTES)
            f.seek(pos)
            return data
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _check_archive_name(dst: Any, force: bool) -> None:
    """An archive written under a model format's name is a mistake waiting for its reader."""
    if _is_path(dst) and os.fspath(dst) != "-" and not force:
        ext = os.path.splitext(os.fspath(dst))[1].lower()
        if ext in formats.EXTENSIONS:
            raise InvalidInput(f"output {os.fspath(dst)!r}: pack writes an nnar archive, but the extension {ext!r} says "
                               f"{formats.EXTENSIONS[ext]}; name it .nnar (or --force to write it anyway)")


def unpack(src: PathOrFile | bytes, dst: PathOrFile | None = None, *, to: str | None = None, force: bool = False,
           limits: Limits = DEFAULT_LIMITS, verify: bool = False,
           progress: Progress | None = None, keep_quantized: bool = False,
           select: Callable[[str], bool] | None = None,
           max_shard_size: int | None = None) -> dict[str, np.ndarray] | list[TensorInfo]:
    """Unpack an archive. With no ``dst``, return {name: array} (bfloat16 as uint16 bit patterns;
    an alias is the same array object as its target); otherwise write a model file (format by
    extension of ``dst`` or ``to``: .safetensors .npz .pt .onnx ...) and return the infos.

    ``max_shard_size`` (bytes; a folder output only) reshards safetensors weights as transformers
    does. ``keep_quantized`` (ONNX output only): quantized weights stay quantized in the model file,
    expanded at run time by DequantizeLinear, Gather or Cast nodes (spec/onnx.md). ``select``
    (name → bool) keeps only some tensors: a bag of tensors then, without the model's structure
    (so not ONNX)."""
    if dst is not None and _is_path(dst) and _is_path(src) and os.fspath(src) != "-" and \
            (to == "folder" or (to is None and _folder_output(dst, src, limits))):
        from .formats import folder  # the model folder the archive was packed from (spec/folder.md)
        with Archive(src, limits) as a:
            if select is not None or keep_quantized:
                raise InvalidInput("a model folder is written whole: --tensor, --include and --keep-quantized write "
                                   "model files")
            return folder.write(os.fspath(dst), a, force=force, verify=verify, progress=progress,
                                max_shard_size=max_shard_size)
    if max_shard_size is not None:
        raise InvalidInput("max_shard_size reshards a model folder: expected an archive packed from a folder, "
                           "unpacked to a folder")
    with _input(src) as f:
        head = _head(src, f)
        found = formats.sniff(head) if head else None
        if found in formats.FORMATS:
            shown = os.fspath(src) if _is_path(src) else "-"
            raise InvalidInput(f"input {shown!r} is a {found} model, not an nnar archive: to compress it, "
                               f"nnar pack {shown} -o {os.path.splitext(os.path.basename(shown))[0] or 'model'}.nnar")
        if dst is not None and to is None and _is_path(dst) and os.path.splitext(os.fspath(dst))[1].lower() == ".nnar":
            raise InvalidInput(f"output {os.fspath(dst)!r}: unpack writes a model file, and .nnar names an archive; "
                               "expected .safetensors .npz .pt or .onnx (did you mean nnar pack?)")
        if dst is not None and select is None and not keep_quantized and _is_path(src) and os.fspath(src) != "-" \
                and _is_path(dst) and os.fspath(dst) != "-" \
                and formats.detect(os.fspath(dst), to, role="output") == "safetensors":
            # the header from the index, then each record written at its place as it decodes
            with Archive(src, limits) as a, _output(dst, force, (src,)) as out:
                return formats.module("safetensors").write_archive(out, a, a.metadata, verify=verify,
                                                                   progress=progress)
        reader = StreamReader(f, limits, verify=verify)
        if dst is None:
            out = {}
            for i, (info, arr) in enumerate(reader):
                if select is not None and not select(info.name):
                    continue
                out[info.name] = arr
                if progress:
                    progress(info.name, i + 1, None)
            return out
        fmt = formats.detect(dst if _is_path(dst) else getattr(dst, "name", None), to, role="output")
        if keep_quantized and fmt != "onnx":
            raise InvalidInput(f"--keep-quantized writes ONNX models; the output format is {fmt}")
        if select is not None and fmt == "onnx":
            raise InvalidInput("some tensors of a model are not an ONNX model: expected .safetensors, .npz or .pt "
                               "output with --tensor/--include")
        if keep_quantized:
            from . import quantized  # only ONNX output uses it
            source = quantized.forms(reader)
        else:
            source = iter(reader)
        infos: list[TensorInfo] = []

        def tensors() -> Iterable[tuple[str, Any, str]]:
            # no enumerate(): it keeps its last result tuple, and with it the previous array,
            # alive while the next record decodes (one tensor of memory too many)
            i = 0
            for info, value in source:
                i += 1
                if select is not None and not select(info.name):
                    continue
                infos.append(info)
                if progress:
                    progress(info.name, i, None)
                yield info.name, value, info.dtype
                del value  # not kept while the next record decodes

        structure = reader.structure
        structure = structure[1] if structure is not None and structure[0] == fmt and select is None else None
        options = {"path": os.fspath(dst) if _is_path(dst) else None, "quantized": keep_quantized, "force": force} \
            if fmt == "onnx" else {}
        if fmt == "safetensors" and _is_path(src) and os.fspath(src) != "-":
            with Archive(src, limits) as a:
                # the header first, from the index: the data then streams to the output once, not
                # through a temporary copy (unpack at the speed of decoding, not of writing twice)
                options["layout"] = [(i.name, i.dtype, i.shape) for i in a.infos()
                                     if select is None or select(i.name)]
        with _output(dst, force, (src,) if _is_path(src) else ()) as out:
            formats.module(fmt).write(out, tensors(), reader.metadata, structure=structure, **options)
        return infos


def _folder_output(dst: PathOrFile, src: PathOrFile, limits: Limits) -> bool:
    """Whether ``dst`` names a folder to write: an existing directory, or a name without a model
    file's extension for an archive packed from a folder."""
    if os.path.isdir(dst):
        return True
    if os.path.splitext(os.fspath(dst))[1].lower() in formats.EXTENSIONS or not os.path.isfile(src):
        return False
    from .formats import folder
    try:
        with Archive(src, limits) as a:
            found = a.structure
    except NnarError:
        return False  # the unpack below reports it
    return found is not None and found[0] == folder.FORMAT


def open(src: PathOrFile, limits: Limits = DEFAULT_LIMITS) -> Archive:  # noqa: A001
    """Open an archive for random access (a seekable file)."""
    return Archive(src, limits)


def verify(src: PathOrFile | bytes, limits: Limits = DEFAULT_LIMITS) -> list[TensorInfo]:
    """Check every CRC, the layout, the index, and every tensor's digest; return the infos.

    Reads in one pass, so a pipe works too. Raises the first problem found."""
    return verify_content(src, limits)[0]


def verify_content(src: PathOrFile | bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[list[TensorInfo], bytes | None]:
    """:func:`verify`, and the archive's content digest computed from its records (FORMAT.md
    §5.3.1; checked against the index's where it carries one, since format 1.4)."""
    with _input(src) as f:
        reader = StreamReader(f, limits, verify=True)
        infos = list(reader.check())  # nothing kept: a record at a time, a large one a piece at a time
        return infos, reader.content


def _seekable_input(src: PathOrFile | bytes, what: str):
    if _is_path(src) and os.fspath(src) == "-":
        raise InvalidInput(f"{what}: expected a file (it is read at random), found - (standard input)")
    return _input(src)


def diff(old: PathOrFile | bytes, new: PathOrFile | bytes, dst: PathOrFile | None = None, *, force: bool = False,
         level: int = planner.DEFAULT_LEVEL, limits: Limits = DEFAULT_LIMITS, progress: Progress | None = None):
    """Make the patch that turns archive ``old`` into archive ``new`` (spec/patch.md) and write it
    to ``dst`` (a path, written atomically, or a binary file; None: only measure). Returns a
    :class:`nnar.patching.PatchStat`: per record of ``new``, what the patch does and costs."""
    from .patching.diff import diff as make_patch
    with _seekable_input(old, "OLD") as o, _seekable_input(new, "NEW") as n, \
            (contextlib.nullcontext() if dst is None else _output(dst, force, (old, new))) as out:
        return make_patch(o, n, out, level=level, limits=limits, progress=progress)


def patch(base: PathOrFile | bytes, patch_src: PathOrFile | bytes, dst: PathOrFile, *, force: bool = False,
          limits: Limits = DEFAULT_LIMITS, progress: Callable[[int, int], None] | None = None):
    """Apply a patch to its base archive and write the result to ``dst``, which replaces nothing
    unless the result is the one the patch promises: its content digest (a content patch, what
    nnar writes since 0.5: the rebuilt streams are stored by this machine's zstd, whatever its
    version), or its SHA-256 (a byte patch of nnar 0.4). The base is read at random, the patch in
    order (``"-"``: standard input). Returns the patch's header."""
    from .patching.apply import apply
    with _seekable_input(base, "BASE") as b, _input(patch_src) as p, _output(dst, force, (base, patch_src)) as out:
        return apply(b, p, out, limits, progress)
