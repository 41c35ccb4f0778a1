"""Do new post-training quantizers earn a place in the format? Emulated before they are built.

    python tools/bench_quantizers.py            # MiniLM and the PP-OCRv4 recogniser, ~6 minutes

Issue 12 proposed stored forms beyond nnar's codebook and affine codecs. Before one becomes a
codec (a spec page, vectors, a decoder in every reader), this measures what it would buy, on the
models and task metrics of ``tools/bench_search.py``, by emulating the decode in numpy and
counting the bytes the new streams would cost:

* **outliers apart** (dense-and-sparse, SqueezeLLM): the largest 0.2-2% of weights by magnitude
  kept as float16 at their positions (16 bits + ~10-12 bits of entropy-coded gap each), the rest
  k-means-EC coded at the same SQNR target.
* **per-channel scale**: each output channel divided by its largest |w| before k-means-EC and
  multiplied back (32 bits a channel): per-channel codebooks of one shape.
* the baseline: k-means-EC per tensor at 35 / 30 / 26 dB (``--max-error``), and uniform int8-int4
  per channel (nnar.affine).

Every eligible weight (2+ dims, >= 1024 elements) gets the same treatment; the columns are bits
per eligible weight and the task result: MiniLM's lowest cosine to fp32 over the held-out
sentences, the recogniser's changed argmaxes (CTC positions) over crops from two calibration
pages. Compare rows at equal bits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nnar import lossy  # noqa: E402
from nnar.codecs.abc import TensorSpec  # noqa: E402
from nnar.config import TensorSettings  # noqa: E402

import search_models as SM  # noqa: E402


def _plan(name, a, settings):
    c = lossy.plan(name, a, TensorSpec("float32", a.shape), settings, 3)
    return c.decoded, 8 * c.encoded.stored_bytes


def ec(db):
    return TensorSettings(quant="kmeans", bits=8, max_error=float(db))


def plain(name, a, db):
    return _plan(name, a, ec(db))


def outliers(name, a, db, frac):
    flat = a.reshape(-1)
    k = max(1, int(frac * flat.size))
    idx = np.argpartition(np.abs(flat), -k)[-k:]
    rest = flat.copy()
    rest[idx] = 0
    dec, bits = _plan(name, rest.reshape(a.shape), ec(db))
    out = dec.reshape(-1).copy()
    out[idx] = flat[idx].astype(np.float16).astype(np.float32)
    gap_bits = max(1.0, np.log2(flat.size / k) + 1.5)  # entropy-coded gaps between kept positions
    return out.reshape(a.shape), bits + k * (16 + gap_bits)


def channel(name, a, db):
    rows = a.reshape(a.shape[0], -1)
    s = np.abs(rows).max(1).astype(np.float32)
    s[s == 0] = 1
    dec, bits = _plan(name, (rows / s[:, None]).reshape(a.shape).astype(np.float32), ec(db))
    return (dec.reshape(a.shape[0], -1) * s[:, None]).reshape(a.shape).astype(np.float32), bits + 32 * a.shape[0]


def uniform(name, a, bits):
    return _plan(name, a, TensorSettings(quant="uniform", bits=bits, granularity="channel"))


TRIALS = [(f"kmeans-ec {db} dB", plain, (db,)) for db in (35, 30, 26)] + \
    [(f"kmeans-ec {db} dB + {f:.1%} outliers", outliers, (db, f)) for db in (30, 26) for f in (0.002, 0.02)] + \
    [(f"kmeans-ec {db} dB per-channel scale", channel, (db,)) for db in (35, 30, 26)] + \
    [(f"uniform {b}-bit per channel", uniform, (b,)) for b in (8, 6, 4)]


def run(weights: dict, judge, label: str) -> None:
    elig = [n for n, a in weights.items() if a.ndim >= 2 and a.size >= 1024 and a.dtype == np.float32]
    params = sum(weights[n].size for n in elig)
    print(f"\n{label}: {len(elig)} weight tensors, {params:,} parameters")
    print(f"{'treatment':40s} {'bits/w':>7s}  result")
    for title, fn, args in TRIALS:
        t, bits = dict(weights), 0.0
        for n in elig:
            t[n], b = fn(n, weights[n], *args)
            bits += b
        print(f"{title:40s} {bits / params:7.2f}  {judge(t)}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("minilm", "rec"))
    args = ap.parse_args(argv)
    if args.only in (None, "minilm"):
        m = SM.MiniLM()
        run(m.original, lambda t: f"min cos {m.cosines(t, SM.HELDOUT_SENTENCES).min():.4f}", "MiniLM-L6")
    if args.only in (None, "rec"):
        import onnx

        from nnar.formats import onnx as F
        from nnar.search import onnx_runner, outputs
        paths = SM.ocr_model_paths()
        batches = SM.OCR(paths).capture([p for _, p in SM.calibration_pages(2)])["rec"]
        model = F.from_proto(onnx.load(str(paths["rec"])))
        items = list(model.tensors())
        ev = onnx_runner.OnnxEvaluator(model.structure, batches, outputs.parse_bound("argmax=0"),
                                       dtypes={n: dt for n, _, dt in items})
        base = {n: a for n, a, _ in items}
        ev.reference(base)

        def judge(t):
            ev(t)
            k, n = outputs.changed(ev.reference_outputs, ev.last_outputs)
            return f"{k} of {n} argmaxes changed"
        run(base, judge, "PP-OCRv4 rec")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
