"""``nnar`` command line: a thin shell over :mod:`nnar.api`.

Data goes to stdout, diagnostics and progress to stderr. Exit status: 0 ok, 1 an nnar error
(one line: ``nnar: error[code]: message``), 2 a usage error. ``verify`` exits 1 when the archive
is damaged.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import re
import signal
import sys
import threading
import warnings

from . import __version__, api, config, dtypes, formats, fsutil, planner, remote, report
from .archive import Archive, StreamReader, TensorInfo
from .errors import InvalidInput, MissingExtra, NnarError
from .limits import DEFAULT_LIMITS, Limits

EPILOG = """\
examples:
  nnar pack model.safetensors -o model.nnar       lossless archive of a model
  nnar pack model.safetensors -o m.nnar --preset balanced    8-bit k-means (Deep Compression)
  nnar pack m.safetensors -o m.nnar --prune 0.9 --quant kmeans --bits 4 --layer 'fc.*:bits=8'
  nnar pack m.safetensors -o m.nnar --quant kmeans --max-error 30   smallest setting with SQNR >= 30 dB
  nnar pack weights.npz -o - | ssh dev 'cat > w.nnar'   write to a pipe
  nnar ls model.nnar                               what is inside, and how small
  nnar verify model.nnar                           check every checksum and digest
  nnar unpack model.nnar -o model.safetensors      back to a model file, bit-exact
  nnar pack model.onnx -o m.nnar --preset int8     ONNX: weights compressed, the graph kept
  nnar pack model.onnx -o m.nnar --calibrate inputs.npz --max-output-error cos=0.99
                                                   the smallest archive whose outputs stay within the bound
  nnar unpack m.nnar -o model.onnx --keep-quantized   an ONNX model that stays int8 on disk
  nnar pack model.pt -o m.nnar && nnar unpack m.nnar -o out.pt   PyTorch state dicts
  curl -s https://host/m.nnar | nnar unpack - -o m.npz   unpack while downloading
  nnar diff v1.nnar v2.nnar -o v2.nnarpatch --stat   an over-the-air update, and what it costs
  nnar patch v1.nnar v2.nnarpatch -o v2.nnar       rebuild v2 on the device (verified by content)
"""


class Progress:
    """One self-rewriting line on stderr, only when stderr is a terminal."""

    def __init__(self, verb: str, enabled: bool | None = None):
        self.verb = verb
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.used = False

    def __call__(self, name: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        self.used = True
        if total:
            width = 24
            fill = width * done // total
            bar = f"[{'#' * fill}{'.' * (width - fill)}] {done}/{total}"
        else:
            bar = f"{done} tensors"
        sys.stderr.write(f"\r\x1b[K{self.verb} {bar} {name[:40]}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.used:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


_human = report.human_bytes


def _limits(args) -> Limits:
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(Limits) if getattr(args, f.name) is not None}
    return DEFAULT_LIMITS.replace(**changes) if changes else DEFAULT_LIMITS


def _parse_meta(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise InvalidInput(f"--meta {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _pack_config(args) -> config.PackConfig:
    if args.json and args.output == "-":
        raise InvalidInput("--json prints the report on stdout, which -o - uses for the archive; write the "
                           "archive to a file")
    return config.build(preset=args.preset, rules=args.layer, min_params=args.min_params,
                        prune_global=args.prune_global, quant=args.quant, bits=args.bits,
                        granularity=args.granularity, block=args.block, prune=args.prune,
                        threshold=args.prune_threshold, init=args.init, seed=args.seed, max_error=args.max_error)


class _Usage(Exception):
    """A command line that asks for something contradictory or without effect (exit status 2)."""


#: lossy flags, by the quantizers they apply to (None: any lossy setting)
_FLAG_QUANTS = {"bits": ("kmeans", "uniform"), "granularity": ("uniform",), "block": ("uniform",),
                "init": ("kmeans",)}
_LOSSY_FLAGS = ("quant", "bits", "granularity", "block", "prune", "prune_threshold", "prune_global", "init",
                "max_error")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_pack_flags(args) -> None:
    """Refuse flags that would silently do nothing, or contradict the preset."""
    given = [f for f in _LOSSY_FLAGS if getattr(args, f, None) is not None]
    if args.preset == "lossless" and given:
        raise _Usage(f"--preset lossless contradicts {', '.join(_flag(f) for f in given)}: drop the preset, or the "
                     "lossy flags")
    quant = args.quant or config.PRESETS.get(args.preset or "", {}).get("quant")
    if quant is None and args.max_error is not None:
        quant = "kmeans"  # --max-error alone walks the k-means ladder
    rule_quants = any("quant=" in r for r in args.layer)  # a --layer rule may give the quantizer
    for flag, quants in _FLAG_QUANTS.items():
        value = getattr(args, flag, None)
        if value is not None and quant not in quants and not rule_quants:
            raise _Usage(f"{_flag(flag)} {value} has no effect without {' or '.join('--quant ' + q for q in quants)} "
                         f"({'the preset ' + repr(args.preset) + ' uses ' + str(quant) if args.preset else 'no quantizer given'})")


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _binary_out(args) -> None:
    """Like zstd: no binary on a terminal unless forced."""
    if args.output == "-" and sys.stdout.isatty() and not args.force:
        raise InvalidInput("refusing to write binary data to a terminal: redirect stdout, or -o FILE (--force to "
                           "write it anyway)")


def _default_pack_output(args) -> str:
    if args.input == "-":
        return "-"
    path = args.input.rstrip("/" + os.sep) or args.input
    if os.path.isdir(path):  # a model folder: DIR -> DIR.nnar beside it
        return path + ".nnar"
    return os.path.splitext(path)[0] + ".nnar"


def cmd_pack(args) -> int:
    if args.output is None:
        args.output = _default_pack_output(args)
    _binary_out(args)
    _check_pack_flags(args)
    cfg = _pack_config(args)
    prog = Progress("packing")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            searching = _search_args(args)
            if searching and args.dask:
                raise _Usage("--dask runs the encoders of a plain pack; the output-aware search runs here")
            parallel = {"dask": args.dask} if args.dask else {} if searching else \
                {"threads": args.threads or os.cpu_count() or 1}
            infos = api.pack(args.input, args.output, fmt=args.from_, level=args.level,
                             metadata=_parse_meta(args.meta), force=args.force, progress=prog, config=cfg,
                             **searching, **parallel)
    finally:
        prog.done()
    for w in caught:
        print(f"nnar: warning: {_one_line(str(w.message))}", file=sys.stderr)
    raw = sum(i.nbytes for i in infos if i.alias_of is None)  # a tied tensor is stored, and counted, once
    stored = sum(i.stored_bytes for i in infos)
    found = getattr(infos, "search", None)
    if args.json:
        out = {"tensors": [i.to_json() for i in infos], "totals": report.totals(infos)}
        if found is not None:
            out["search"] = found.to_json()
        json.dump(out, sys.stdout, indent=1)
        print()
    elif not args.quiet and found is not None:
        from .search import outputs, report as search_report
        bound = outputs.parse_bound(args.max_output_error)
        fp32 = sum(4 * i.size for i in infos if i.alias_of is None)
        print(search_report.text(found, lambda v: outputs.describe(bound, v), fp32), file=sys.stderr)
    elif not args.quiet and any(i.lossy for i in infos):
        print(report.table(infos), file=sys.stderr)
    if args.plot and found is not None:
        from .search import report as search_report
        search_report.plot(found, args.plot, title=os.path.basename(args.input))
    if not args.quiet:
        size = "" if args.output == "-" else f"; archive {_human(os.path.getsize(args.output))}"
        print(f"packed {len(infos)} tensors: {_human(raw)} -> {_human(stored)} of tensor data "
              f"({raw / stored if stored else 1:.3f}x){size}", file=sys.stderr)
    return 0


def _search_args(args) -> dict:
    """The output-aware search's arguments (ONNX, run by onnxruntime on --calibrate inputs)."""
    if args.calibrate is None and args.max_output_error is None:
        if args.plot or args.max_evals is not None:
            raise InvalidInput("--plot and --max-evals belong to the output-aware search: expected --calibrate "
                               "INPUTS and --max-output-error METRIC=VALUE")
        return {}
    if args.calibrate is None or args.max_output_error is None:
        raise InvalidInput("the output-aware search needs both --calibrate INPUTS (.npz or a directory of them) and "
                           "--max-output-error METRIC=VALUE")
    if args.plot:
        if not args.plot.lower().endswith(".png"):
            raise InvalidInput(f"--plot {args.plot!r}: expected a .png file name")
        if os.path.exists(args.plot) and not args.force:
            raise InvalidInput(f"--plot {args.plot!r} exists: expected a new file name, or --force to replace it")
        try:  # before the search, not after minutes of it
            import matplotlib  # noqa: F401
        except ImportError:
            raise MissingExtra("--plot needs matplotlib: pip install matplotlib") from None
    return {"calibrate": args.calibrate, "max_output_error": args.max_output_error, "max_evals": args.max_evals}


#: the extension an unpacked model gets, by the format the archive was packed from
_EXTENSION_OF = {"safetensors": ".safetensors", "npz": ".npz", "torch": ".pt", "onnx": ".onnx",
                 "python": ".safetensors"}


def _default_unpack_output(args) -> str:
    """The archive's name, in the format it was packed from (``model.nnar`` from a .pt → ``model.pt``)."""
    if args.input == "-":
        return "-"
    name = args.input
    if remote.is_url(name):  # written here, under the archive's own name
        name = os.path.basename(name.split("?", 1)[0].rstrip("/")) or "model"
    stem = name[:-5] if name.lower().endswith(".nnar") else name
    if args.tensor is not None:
        return stem + "." + re.sub(r"[^\w.-]", "_", args.tensor) + ".npy"
    if args.to is not None:
        return stem + (".npy" if args.to == "npy" else _EXTENSION_OF[args.to])
    with Archive(args.input, _limits(args)) as a:
        if a.source_format == "folder":  # packed from a model folder: unpacked to one
            return stem
        return stem + _EXTENSION_OF.get(a.source_format, ".safetensors")


def _unpack_one(args) -> int:
    """``--tensor NAME`` to .npy: one tensor, read at random (from a file) or in passing (a stream)."""
    import numpy as np
    if args.input == "-":
        value = None
        for info, arr in StreamReader(sys.stdin.buffer, _limits(args), verify=args.verify):
            if info.name == args.tensor:
                value, dtype = arr, info.dtype
                break
    else:
        with Archive(args.input, _limits(args)) as a:
            value = a.read(args.tensor, verify=args.verify) if args.tensor in a else None
            dtype = a.info(args.tensor).dtype if value is not None else None
    if value is None:
        raise InvalidInput(f"--tensor {args.tensor!r}: no such tensor in the archive (nnar ls lists them)")
    if dtype in dtypes.FLOAT8_DTYPES:  # numpy has no float8: its bits, the dtype named by the field (as in .npz)
        from .formats.npz import float8_field
        value = float8_field(value, dtype)
    with api._output(args.output, args.force, (args.input,)) as out:
        np.save(out, value, allow_pickle=False)
    if not args.quiet:
        print(f"unpacked {args.tensor} to {args.output}", file=sys.stderr)
    return 0


def cmd_unpack(args) -> int:
    if args.output is None:
        args.output = _default_unpack_output(args)
    _binary_out(args)
    npy = args.to == "npy" or (args.to is None and args.output.lower().endswith(".npy"))
    if npy:
        if args.tensor is None:
            raise InvalidInput(".npy holds one array: expected --tensor NAME with it")
        return _unpack_one(args)
    patterns = [*args.include, *([args.tensor] if args.tensor is not None else [])]
    select = (lambda name: _matches(name, patterns)) if patterns else None
    prog = Progress("unpacking")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            infos = api.unpack(args.input, args.output, to=args.to, force=args.force, limits=_limits(args),
                               verify=args.verify, progress=prog, keep_quantized=args.keep_quantized,
                               select=select, max_shard_size=args.max_shard_size)
    finally:
        prog.done()
    for w in caught:
        print(f"nnar: warning: {w.message}", file=sys.stderr)
    if not args.quiet:
        print(f"unpacked {len(infos)} tensors to {args.output}", file=sys.stderr)
    return 0


def _infos(path: str, limits: Limits) -> tuple[list[TensorInfo], dict]:
    if path == "-":
        r = StreamReader(sys.stdin.buffer, limits)
        infos = list(r.infos())
        return infos, {"metadata": r.metadata, "source_format": r.source_format, "nnar_version": r.nnar_version,
                       "content": _hex(r.content)}
    with Archive(path, limits) as a:
        # the content digest the index carries (format 1.4); `nnar verify --json` computes it
        return a.infos(), {"metadata": a.metadata, "source_format": a.source_format, "nnar_version": a.nnar_version,
                           "content": _hex(a.stored_content), "files": a.files()}


def _archive_size(path: str) -> int:
    if remote.is_url(path):
        with remote.open_url(path) as f:
            return f.size
    return os.path.getsize(path)


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def _own_digests(path: str, infos: list[TensorInfo], limits: Limits) -> dict[str, str]:
    """Each grouped tensor's own SHA-256 (its record's digest covers the whole group): decoded
    and computed here, groups being small (at most 1 MiB), and checked against the record's."""
    from .archive import digest_of
    grouped = [i.name for i in infos if i.group > 1 and i.alias_of is None]
    out: dict[str, str] = {}
    if not grouped:
        return out
    if path == "-":  # read once already: a stream has no second pass
        return out
    with Archive(path, limits) as a:
        for name in grouped:
            out[name] = digest_of(a.read(name, verify=True)).hex()
    return out


def cmd_ls(args) -> int:
    infos, meta = _infos(args.input, _limits(args))
    if args.names:
        infos = [i for i in infos if _matches(i.name, args.names)]
        if not infos:
            raise InvalidInput(f"no tensor matches {' '.join(args.names)!r}")
    raw = sum(i.nbytes for i in infos if i.alias_of is None)  # a tied tensor is stored, and counted, once
    stored = sum(i.stored_bytes for i in infos)
    if args.json:
        totals = {"tensors": len(infos), "nbytes": raw, "stored_bytes": stored,
                  "ratio": round(raw / stored, 4) if stored else None}
        if args.input != "-":
            totals["archive_bytes"] = _archive_size(args.input)
        if any(i.lossy for i in infos):
            totals["fidelity"] = report.totals(infos)
        own = _own_digests(args.input, infos, _limits(args))
        rows = []
        for i in infos:
            row = i.to_json()
            # "digest" is the record's (FORMAT.md §5.2.4); "sha256" the tensor's own, whatever its record
            target = i.alias_of or i.name
            row["sha256"] = own.get(target, row["digest"] if i.group == 1 else None)
            row["sha256_from"] = "computed" if target in own else "record" if i.group == 1 else "not computed (stdin)"
            rows.append(row)
        json.dump({**meta, "tensors": rows, "totals": totals}, sys.stdout, indent=1)
        print()
        return 0
    rows = [(i.name, i.dtype, "x".join(map(str, i.shape)) or "scalar", str(i.stored_bytes), f"{i.ratio:.3f}",
             i.describe_pipeline()) for i in infos]
    head = ("name", "dtype", "shape", "stored", "ratio", "pipeline")
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(5)]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) if k in (0, 1, 2) else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths)))
              + "  " + r[5])
    fidelity = report.table(infos)
    if fidelity:
        print("\nfidelity (what the lossy pack changed):\n" + fidelity)
    md = meta["metadata"]
    if "nnar.output_bound" in md:  # written by an output-aware pack (spec/search.md)
        print(f"outputs: packed against {md['nnar.output_bound']!s:.80}, measured "
              f"{md.get('nnar.output_error', '?')!s:.40} on these weights")
    if meta.get("files"):  # a model folder's other files (FORMAT.md §5.7)
        shown = ", ".join(meta["files"][:8]) + (f" and {len(meta['files']) - 8} more" if len(meta["files"]) > 8 else "")
        print(f"files: {shown}")
    size = "" if args.input == "-" else f", archive {_human(_archive_size(args.input))}"
    print(f"{len(infos)} tensors, {_human(raw)} -> {_human(stored)} ({raw / stored if stored else 1:.3f}x){size}; "
          f"source {meta['source_format']}, written by nnar {meta['nnar_version']}")
    return 0


def cmd_verify(args) -> int:
    try:
        infos, content = api.verify_content(args.input, _limits(args))
    except NnarError as e:
        if not args.json:
            if args.quiet:
                return 1
            raise
        json.dump({"ok": False, "input": args.input, "error": {"code": e.code, "message": str(e)}}, sys.stdout)
        print()
        return 1
    if args.json:
        # the content digest (FORMAT.md §5.3.1): what a device compares after applying a patch
        json.dump({"ok": True, "input": args.input, "tensors": len(infos), "content": _hex(content)}, sys.stdout)
        print()
    elif not args.quiet:
        print(f"ok: {len(infos)} tensors, every checksum and digest matches")
    return 0


def cmd_diff(args) -> int:
    from .patching import stat_lines
    _binary_out(args)
    if args.output is None and not args.stat and not args.json:
        raise InvalidInput("nothing to do: expected -o PATCH, or --stat / --json to only report")
    prog = Progress("diffing")
    try:
        stat = api.diff(args.old, args.new, args.output, force=args.force, level=args.level, limits=_limits(args),
                        progress=prog)
    finally:
        prog.done()
    if args.json:
        json.dump(stat.to_json(), sys.stdout, indent=1)
        print()
    elif args.stat:
        print("\n".join(stat_lines(stat)))
    if stat.patch_length >= stat.result_length:
        print(f"nnar: warning: the patch ({_human(stat.patch_length)}) is not smaller than NEW "
              f"({_human(stat.result_length)}): send NEW whole", file=sys.stderr)
    if not args.quiet and args.output is not None:
        print(f"wrote {args.output}: {_human(stat.patch_length)} to turn {_human(stat.base_length)} into "
              f"{_human(stat.result_length)} ({stat.patch_length / max(stat.result_length, 1):.1%} of sending it "
              "whole)", file=sys.stderr)
    return 0


def cmd_patch(args) -> int:
    header = api.patch(args.base, args.patch, args.output, force=args.force, limits=_limits(args))
    if not args.quiet:
        size = os.path.getsize(args.output) if args.output != "-" else None
        said = f"{_human(size)}, " if size is not None else ""
        if header.kind == "content":  # the bytes are this machine's; the content is the server's
            said += f"content digest {header.result_content.hex()}"
        else:
            said += f"SHA-256 {header.result_digest.hex()}"
        print(f"wrote {args.output}: {said} (verified)", file=sys.stderr)
    return 0


_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def _size(text: str) -> int:
    """``500MB``, ``2GB``, ``1.5GiB`` or bytes (decimal units, as transformers' max_shard_size)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS or float(m.group(1)) * _UNITS[m.group(2).upper()] < 1:
        raise argparse.ArgumentTypeError(f"expected a size such as 500MB, 2GB or a number of bytes, found {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _checked(parse, ok, expected: str):
    """An argparse type: ``parse`` the text, then require ``ok(value)``; both failures say what
    was expected and what was found."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {value}")
        return value
    return convert


_positive = _checked(int, lambda v: v >= 1, "a positive integer")
_fraction = _checked(float, lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")
_level = _checked(int, lambda v: 1 <= v <= 22, "an integer from 1 to 22")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors: one line, exit 2
        self.print_usage(sys.stderr)
        print(f"nnar: usage error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nnar", description="Pack neural-network weights into small, verifiable .nnar archives.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"nnar {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def limits_args(sp):
        g = sp.add_argument_group("limits for untrusted archives (spec/FORMAT.md §9); raise them for huge models")
        for f in dataclasses.fields(Limits):  # one flag per limit, so the two never drift apart
            g.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=_positive, metavar="N",
                           help=f"default {getattr(DEFAULT_LIMITS, f.name)}")

    sp = sub.add_parser("pack", help="model file -> .nnar archive",
                        description="Pack a model (.safetensors, .npz, a PyTorch state dict .pt/.pth/.bin/.ckpt, or .onnx) into an .nnar archive: lossless by default; "
                                    "with --preset, --quant, --prune or --max-error, Deep Compression per tensor, "
                                    "with a report of what it changed.",
                        epilog="Weight matrices and kernels (2+ dimensions, --min-params elements or more) get the "
                               "lossy settings; biases, norms and small tensors stay lossless unless a --layer rule "
                               "names them. Presets: " + "; ".join(
                                   f"{k}: {', '.join(f'{a}={b}' for a, b in v.items()) or 'bit-exact'}"
                                   for k, v in config.PRESETS.items()))
    sp.add_argument("input", help="model file or folder, or - for stdin")
    sp.add_argument("-o", "--output", help=".nnar file to write, or - for stdout (default: the input's name with "
                    ".nnar; stdin: stdout)")
    sp.add_argument("--threads", type=_checked(int, lambda n: n >= 1, "an integer >= 1"), default=None,
                    help="encode tensors on N threads (default: every core); the archive is the same for any N")
    sp.add_argument("--dask", metavar="SCHEDULER",
                    help="encode tensors on a Dask cluster (e.g. tcp://10.0.0.5:8786; needs dask.distributed); the "
                         "archive is written here, the same as a local pack")
    sp.add_argument("--from", dest="from_", choices=list(formats.FORMATS),
                    help="input format (default: by extension: .safetensors .npz .pt .pth .bin .ckpt .onnx)")
    sp.add_argument("--level", type=_level, default=planner.DEFAULT_LEVEL,
                    help=f"zstd effort, 1-22 (default {planner.DEFAULT_LEVEL}); higher is smaller and slower")
    sp.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="add archive metadata")
    sp.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.add_argument("--json", action="store_true", help="print the per-tensor report as JSON on stdout")
    g = sp.add_argument_group("compression (lossy; default lossless)")
    g.add_argument("--preset", choices=list(config.PRESETS), help="a ready-made setting (see below)")
    g.add_argument("--quant", choices=config.QUANTS, help="quantizer for weight tensors")
    g.add_argument("--bits", type=_positive, help="index width for kmeans (1-8) and uniform (2-8); default 8")
    g.add_argument("--granularity", choices=config.GRANULARITIES, help="uniform: one scale per tensor, output "
                   "channel (first axis) or block of --block elements (default tensor)")
    g.add_argument("--block", type=_positive, help="uniform block size (default 64)")
    g.add_argument("--prune", type=_fraction, metavar="SPARSITY", help="magnitude-prune each weight tensor to this "
                   "fraction of zeros, e.g. 0.9")
    g.add_argument("--prune-threshold", type=float, metavar="T", help="prune weights with |w| <= T")
    g.add_argument("--prune-global", type=_fraction, metavar="SPARSITY",
                   help="one magnitude threshold across all weight tensors, pruning this fraction overall")
    g.add_argument("--init", choices=config.INITS, help="k-means seeding (default optimal; linear is the paper's)")
    g.add_argument("--seed", type=int, help="seed for anything random (default 0)")
    g.add_argument("--max-error", type=float, metavar="DB", help="lowest SQNR in dB a tensor may have: pick, per "
                   "tensor, the smallest setting that meets it (fp16 or lossless when none does)")
    g.add_argument("--layer", action="append", default=[], metavar="GLOB:KEY=VALUE[,...]",
                   help="per-tensor override, e.g. 'classifier.*:bits=8' or 'embed*:lossless'; later ones win")
    g.add_argument("--min-params", type=int, default=config.DEFAULT_MIN_PARAMS, metavar="N",
                   help=f"smaller tensors stay lossless (default {config.DEFAULT_MIN_PARAMS})")
    g = sp.add_argument_group("output-aware search (ONNX models, run by onnxruntime; spec/search.md)")
    g.add_argument("--calibrate", metavar="INPUTS", help="an .npz with one array per model input (samples along "
                   "the first axis), or a directory of such files")
    g.add_argument("--max-output-error", metavar="METRIC=VALUE", help="the bound on what the model outputs: "
                   "cos=0.99 (lowest cosine per sample), rel-l2=0.01, max-abs=0.05, argmax=0 (fraction of "
                   "argmaxes along the last axis allowed to change), ctc=0 (fraction of sequences whose greedy "
                   "CTC text, blank 0, may change); nnar finds the smallest archive within it")
    g.add_argument("--max-evals", type=_positive, metavar="N", help=f"most model evaluations the search may run "
                   f"(default {api.DEFAULT_MAX_EVALS})")
    g.add_argument("--plot", metavar="FILE.png", help="draw the saturation curve: output error against archive "
                   "size over the allocations tried (needs matplotlib)")
    sp.set_defaults(func=cmd_pack)

    sp = sub.add_parser("unpack", help=".nnar archive -> model file",
                        description="Unpack an archive to a model file, bit-exact for lossless archives.")
    sp.add_argument("input", help=".nnar file, or - for stdin")
    sp.add_argument("--threads", type=_checked(int, lambda n: n >= 1, "an integer >= 1"), default=None,
                    help="decode a large record's streams on N threads (default: every core, or NNAR_THREADS)")
    sp.add_argument("-o", "--output", help="model file to write, or - for stdout (default: the archive's name in "
                    "the format it was packed from; stdin: stdout)")
    sp.add_argument("--to", choices=[*formats.FORMATS, "npy", "folder"],
                    help="output format (default: by extension; an archive packed from a model folder unpacks to a "
                         "folder)")
    sp.add_argument("--max-shard-size", type=_size, metavar="SIZE",
                    help="a folder output: reshard its safetensors weights into shards of at most SIZE "
                         "(500MB, 2GB, as transformers counts; or bytes), with a new index")
    sp.add_argument("--tensor", metavar="NAME", help="only this tensor; with -o NAME.npy (or -o - --to npy) as "
                    "one .npy array, read at random from the archive")
    sp.add_argument("--include", action="append", default=[], metavar="GLOB",
                    help="only tensors whose names match (repeatable)")
    sp.add_argument("--keep-quantized", action="store_true",
                    help="ONNX output: keep quantized weights small in the model file (int8/uint8/int4 with "
                         "DequantizeLinear, k-means indices with their codebook through Gather, fp16 with Cast); "
                         "see spec/onnx.md for the runtimes and opsets that run it")
    sp.add_argument("--verify", action="store_true", help="also check each tensor's SHA-256 digest")
    sp.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    sp.add_argument("-q", "--quiet", action="store_true")
    limits_args(sp)
    sp.set_defaults(func=cmd_unpack)

    sp = sub.add_parser("ls", help="list the tensors of an archive",
                        description="List tensors: name, dtype, shape, stored bytes, ratio, pipeline; totals.")
    sp.add_argument("input", help=".nnar file, or - for stdin")
    sp.add_argument("names", nargs="*", metavar="GLOB", help="only tensors whose names match")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    limits_args(sp)
    sp.set_defaults(func=cmd_ls)

    sp = sub.add_parser("diff", help="make an update patch from OLD.nnar to NEW.nnar",
                        description="Write a patch that turns OLD into NEW's content (spec/patch.md): per "
                                    "tensor the cheapest of a reference, a delta of its bit patterns, or the "
                                    "tensor whole. The patch is checked against NEW before it is written.")
    sp.add_argument("old", help="the archive the device has")
    sp.add_argument("new", help="the archive it should have")
    sp.add_argument("-o", "--output", help="patch file to write (.nnarpatch), or - for stdout")
    sp.add_argument("--stat", action="store_true", help="print, per tensor, what the patch does and what it costs")
    sp.add_argument("--json", action="store_true", help="print the same as JSON on stdout")
    sp.add_argument("--level", type=_level, default=planner.DEFAULT_LEVEL, help="zstd level for the patch's streams")
    sp.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    sp.add_argument("-q", "--quiet", action="store_true")
    limits_args(sp)
    sp.set_defaults(func=cmd_diff)

    sp = sub.add_parser("patch", help="apply an update patch: BASE.nnar + PATCH -> NEW.nnar",
                        description="Rebuild NEW from the archive the patch was made from. The base must have "
                                    "that archive's content digest (its bytes may differ: a device's own zstd may "
                                    "have stored it); the output is stored by this machine's zstd and replaces "
                                    "nothing unless its content digest is NEW's (`nnar verify --json` prints it).")
    sp.add_argument("base", help="the archive the patch was made from (a file: it is read at random)")
    sp.add_argument("patch", help="the patch, or - for stdin")
    sp.add_argument("-o", "--output", required=True, help="archive to write (never the base itself)")
    sp.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    sp.add_argument("-q", "--quiet", action="store_true")
    limits_args(sp)
    sp.set_defaults(func=cmd_patch)

    sp = sub.add_parser("verify", help="check every checksum and digest",
                        description="Decode every tensor and check every CRC and SHA-256 digest. Exit 0 if intact.")
    sp.add_argument("input", help=".nnar file, or - for stdin")
    sp.add_argument("--threads", type=_checked(int, lambda n: n >= 1, "an integer >= 1"), default=None,
                    help="decode a large record's streams on N threads (default: every core, or NNAR_THREADS)")
    sp.add_argument("--json", action="store_true", help="the result as JSON on stdout (also when damaged)")
    sp.add_argument("-q", "--quiet", action="store_true", help="print nothing; the exit status says")
    limits_args(sp)
    sp.set_defaults(func=cmd_verify)
    return p


class _Terminated(BaseException):
    """SIGTERM, raised where the program is, so that every temporary output is removed on the
    way out (a BaseException: no ``except Exception`` swallows it)."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    try:
        if getattr(args, "threads", None) is not None:
            from . import threads
            threads.set_threads(args.threads)
        return args.func(args)
    except _Terminated:
        fsutil.remove_pending()  # a signal inside a temporary's creation: the file is still listed
        print("nnar: terminated (SIGTERM); no output was written", file=sys.stderr)
        return 128 + signal.SIGTERM
    except _Usage as e:
        print(f"nnar: usage error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except NnarError as e:
        if isinstance(e.__cause__, BrokenPipeError):  # whoever read our stdout went away: not ours to report
            return _broken_pipe()
        print(f"nnar: error[{e.code}]: {_one_line(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        fsutil.remove_pending()
        print("nnar: interrupted; no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _broken_pipe()


def _one_line(text: str) -> str:
    """Control characters escaped: whatever an archive put in a message, it stays one line."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def _broken_pipe() -> int:
    # stdout's reader is gone (``nnar ... -o - | head``): say nothing, and keep Python from
    # complaining when it flushes stdout at exit
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1
