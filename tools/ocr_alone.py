"""One PP-OCRv4 model at a time, on the held-out pages: how near a compressed model comes to
changing the text, with the other two models fp32 (the figures behind the OCR part of
tools/README.md, "Output-aware search").

    python tools/ocr_alone.py rec A.nnar [B.nnar ...]     # or .onnx files
    python tools/ocr_alone.py det A.nnar [...]

``rec``: the held-out and calibration lines, cropped and batched as the fp32 pipeline feeds them
(``search_models.OCR.capture``), read by each recogniser: lines whose greedy CTC text changed
(of 108 each) and the ``ctc`` score against fp32 (below 1: every text kept; the fraction of the
thinnest relevant margin used). The first line gives the fp32 recogniser's thinnest relevant
margins (``nnar.search.ctc.relevant_margins``): how close to a tie the reference reading is.

``det``: each held-out page's probability map against fp32: pixels whose ``p > 0.3`` decision
(RapidOCR's binarisation) flips, pages whose boxes change after RapidOCR's post-processing,
the map's rel-l2, and held-out pages whose text changes with this detector in the pipeline.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nnar  # noqa: E402
import search_models as S  # noqa: E402
from nnar.search import ctc, outputs  # noqa: E402


def as_onnx(path: str, work: Path) -> Path:
    p = Path(path)
    if p.suffix != ".nnar":
        return p
    out = work / (p.stem + ".onnx")
    nnar.unpack(str(p), str(out), force=True)
    return out


def session(model: Path):
    import onnxruntime as ort
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def run(model: Path, batches) -> list[list[np.ndarray]]:
    s = session(model)
    return [s.run(None, b) for b in batches]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("rec", "det"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    kind, files = argv[0], argv[1:]
    import tempfile
    paths = S.ocr_model_paths()
    held = [p for _, p in S.heldout_pages(12)]
    calib = [p for _, p in S.calibration_pages(12)]
    ocr = S.OCR(paths)
    fed = {"held-out": ocr.capture(held), "calibration": ocr.capture(calib)}
    with tempfile.TemporaryDirectory() as tmp:
        models = [(f, as_onnx(f, Path(tmp))) for f in files]
        if kind == "rec":
            ref = {split: run(paths["rec"], f["rec"]) for split, f in fed.items()}
            for split, r in ref.items():
                m = np.sort(np.concatenate([ctc.relevant_margins(y).ravel() for (y,) in r]))
                print(f"fp32 {split}: {m.size} positions, thinnest relevant margins {m[:4].round(4).tolist()}, "
                      f"{int((m < 0.05).sum())} below 0.05")
            for name, model in models:
                cells = []
                for split, r in ref.items():
                    c = run(model, fed[split]["rec"])
                    n = sum(ctc.changed(a[0], b[0])[0] for a, b in zip(r, c))
                    total = sum(a[0].shape[0] for a in r)
                    cells.append(f"{split}: {n}/{total} lines changed, ctc {outputs.score('ctc', r, c):.3g}")
                print(f"{name}: {Path(name).stat().st_size / 1e6:.2f} MB; " + "; ".join(cells))
        else:
            post = ocr.engine.text_det.postprocess_op
            ref = run(paths["det"], fed["held-out"]["det"])
            texts = [ocr.lines(p) for p in held]
            for name, model in models:
                cand = run(model, fed["held-out"]["det"])
                flips = [int(((a[0] > 0.3) != (b[0] > 0.3)).sum()) for a, b in zip(ref, cand)]
                moved = 0
                for a, b, page in zip(ref, cand, held):
                    ba, bb = (np.array(post(x[0], page.shape[:2])[0]) for x in (a, b))
                    moved += ba.shape != bb.shape or not np.array_equal(ba, bb)
                swapped = S.OCR({**paths, "det": model})
                same = sum(swapped.lines(p) == t for p, t in zip(held, texts))
                print(f"{name}: {Path(name).stat().st_size / 1e6:.2f} MB; flipped pixels per page "
                      f"{min(flips)}-{max(flips)} (of {ref[0][0].size}); pages with boxes moved {moved}/{len(held)}; "
                      f"rel-l2 {outputs.score('rel-l2', ref, cand):.4f}; pages identical {same}/{len(held)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
