"""Deep Compression with retraining, end to end, on scikit-learn's handwritten digits (no download).

    pip install ".[torch]" scikit-learn matplotlib     # torch: the CPU build, e.g. torch==2.13.0
    python examples/deep_compression_digits.py --out /tmp/digits      # about 3 minutes on 2 cores

Two nets of the paper's shapes, adapted to 8×8 digits: an MLP 64-300-100-10 (LeNet-300-100)
and a CNN (conv 20@3×3 → pool → conv 50@3×3 → pool → fc 500 → fc 10, LeNet-5). For each:

1. train in fp32;
2. post-training baselines: zstd -19 of the raw float32 bytes, and nnar's presets (no training);
3. a sensitivity scan (each layer pruned / shared alone, scored by minus the training loss) and,
   per archive-size target, the per-layer sparsity and codebook width it allows
   (``nnar.torch.sensitivity`` + ``nnar.torch.allocate``);
4. for each target, the same budgets without retraining, and with it: pruning in rounds with
   retraining between them (the zeros held), then k-means sharing and training of the centroids
   alone (``nnar.torch.Compression``); then ``nnar.torch.pack``;
5. every accuracy is counted on weights decoded from the archive written, every size is the
   archive's every byte.

``--out DIR`` writes ``DIR/<net>.nnar`` (the compressed net at ``--target`` times smaller than
fp32, packed from its state dict) and ``DIR/<net>.fp32.onnx`` (the trained fp32 net, initializers
named as the state dict keys, input ``input``, output ``logits``), and the saturation curve
``DIR/deep_compression_digits.png``. ``--quick`` is the short version CI runs.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings

import numpy as np

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
except ImportError as e:  # pragma: no cover - a message, not a traceback
    sys.exit(f"this example needs torch and scikit-learn ({e.name} is missing): "
             'pip install ".[torch]" scikit-learn matplotlib')

import zstandard

import nnar
import nnar.torch

PRESETS = ("fp16", "int8", "balanced", "small", "tiny")
#: archive-size targets (times smaller than fp32) of the curves; --target picks the one written
RATIOS = {"mlp": (10, 15, 20, 25, 30, 35), "cnn": (10, 20, 30, 40, 50)}
DEFAULT_TARGET = {"mlp": 27, "cnn": 35}
#: epochs per pruning round, of settling and of centroid training: the MLP's cheap epochs bought
#: accuracy (seed 0 at 27x, 6 batch orders: 10 epochs -0.40 points on average, 20 epochs +0.03)
RETRAIN_EPOCHS = {"mlp": 20, "cnn": 10}


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 3, padding=1), nn.Conv2d(20, 50, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(50 * 2 * 2, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 8×8 → 4×4
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 4×4 → 2×2
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


NETS = {"mlp": (MLP, (-1, 64)), "cnn": (CNN, (-1, 1, 8, 8))}


def data(kind: str):
    d = load_digits()
    X = (d.data / 16).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, d.target, test_size=0.3, stratify=d.target, random_state=0)
    shape = NETS[kind][1]
    return (torch.from_numpy(Xtr).reshape(shape), torch.from_numpy(ytr),
            torch.from_numpy(Xte).reshape(shape), torch.from_numpy(yte))


class Trainer:
    """Mini-batch training on the 70% split; the order of batches is fixed by the seed."""

    def __init__(self, X, y, seed: int, batch: int = 64):
        self.X, self.y, self.batch = X, y, batch
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, model, opt, epochs: int) -> None:
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(len(self.X), generator=self.g)
            for i in range(0, len(self.X), self.batch):
                b = perm[i:i + self.batch]
                opt.zero_grad()
                F.cross_entropy(model(self.X[b]), self.y[b]).backward()
                opt.step()
        model.eval()


def accuracy(model, X, y) -> float:
    with torch.no_grad():
        return float((model(X).argmax(1) == y).float().mean()) * 100


def from_archive(kind: str, data: bytes):
    """A fresh net holding the weights decoded from an archive's bytes."""
    model = NETS[kind][0]()
    model.load_state_dict(nnar.torch.load(data), strict=True)
    return model.eval()


def compress(kind, trained, plan, train, *, retrain: bool, rounds: int, epochs: int, lr: float):
    """The Deep Compression loop on a copy of ``trained``, to ``plan``'s budgets; the archive's bytes."""
    model = copy.deepcopy(trained)
    opt = torch.optim.Adam(model.parameters(), lr)
    comp = nnar.torch.Compression(model, opt)
    steps = nnar.torch.schedule(plan.sparsity, rounds) if retrain else [plan.sparsity]
    for amounts in steps:
        comp.prune(amounts)
        if retrain:
            train(model, opt, epochs)
    if retrain:  # settle at the final sparsity with a smaller step before the weights are shared
        for group in opt.param_groups:
            group["lr"] = lr / 10
        train(model, opt, epochs)
    comp.share(plan.bits)
    if retrain:  # a fresh optimizer, gentler: only the centroids move now
        centroid_opt = torch.optim.Adam(model.parameters(), lr / 10)
        comp.attach(centroid_opt)
        train(model, centroid_opt, epochs)
    comp.remove()
    return nnar.torch.pack(model)


def run(kind: str, seed: int, quick: bool, target: int, out: str | None, log) -> dict:
    t0 = time.time()
    torch.manual_seed(seed)
    Xtr, ytr, Xte, yte = data(kind)
    train = Trainer(Xtr, ytr, seed)
    model = NETS[kind][0]()
    lr = 1e-3
    train(model, torch.optim.Adam(model.parameters(), lr), 8 if quick else 60)
    state = model.state_dict()
    fp32 = sum(v.numel() * v.element_size() for v in state.values())
    base = accuracy(model, Xte, yte)
    rows = [("fp32", "", fp32, base)]
    raw = b"".join(v.numpy().tobytes() for v in state.values())
    rows.append(("zstd -19", "", len(zstandard.ZstdCompressor(level=19).compress(raw)), base))
    for preset in PRESETS:  # post-training: nnar's presets, no retraining
        archive = nnar.pack(state, config=preset)
        rows.append((f"preset {preset}", "no", len(archive), accuracy(from_archive(kind, archive), Xte, yte)))

    def train_loss(m) -> float:
        with torch.no_grad():
            return -float(F.cross_entropy(m(Xtr), ytr))

    scan = nnar.torch.sensitivity(model, train_loss)
    log(scan.table())
    curve, chosen = [], None
    rounds, epochs = (2, 3) if quick else (5, RETRAIN_EPOCHS[kind])
    for ratio in ((target,) if quick else sorted({*RATIOS[kind], target})):
        plan = nnar.torch.allocate(scan, target_bytes=fp32 // ratio)
        for retrain in (False, True):
            # batches in the same order for every target: what is written does not depend on the curve
            archive = compress(kind, model, plan, Trainer(Xtr, ytr, seed + 1), retrain=retrain, rounds=rounds,
                               epochs=epochs, lr=lr)
            acc = accuracy(from_archive(kind, archive), Xte, yte)
            curve.append((ratio, retrain, len(archive), acc))
            label = f"Deep Compression {ratio}x target"
            rows.append((label, "yes" if retrain else "no", len(archive), acc))
            if retrain and ratio == target:
                chosen = (plan, archive)
    plan, archive = chosen
    log(f"budgets at {target}x:\n{plan.table()}")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"{kind}.nnar"), "wb") as f:
            f.write(archive)
        export_onnx(model, kind, os.path.join(out, f"{kind}.fp32.onnx"))
    return {"kind": kind, "seed": seed, "fp32_bytes": fp32, "fp32_acc": base, "rows": rows, "curve": curve,
            "archive": len(archive), "acc": accuracy(from_archive(kind, archive), Xte, yte), "seconds": time.time() - t0}


def export_onnx(model, kind: str, path: str) -> None:
    """The trained fp32 net in ONNX, its initializers named as the state dict keys."""
    x = torch.zeros((2, *NETS[kind][1][1:]))
    with warnings.catch_warnings():  # the TorchScript exporter names initializers by state dict key
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          do_constant_folding=False)


def report(r: dict) -> str:
    lines = [f"{r['kind'].upper()} (seed {r['seed']}): fp32 test accuracy {r['fp32_acc']:.2f}%, "
             f"{r['fp32_bytes']} bytes, {r['seconds']:.0f} s",
             f"  {'setting':32} {'retrained':>9} {'bytes':>8} {'x fp32':>7} {'accuracy':>9} {'vs fp32':>8}"]
    for name, retrained, size, acc in r["rows"]:
        lines.append(f"  {name:32} {retrained:>9} {size:>8} {r['fp32_bytes'] / size:>6.1f}x {acc:>8.2f}% "
                     f"{acc - r['fp32_acc']:>+7.2f}")
    lines.append(f"  written: {r['archive']} bytes ({r['fp32_bytes'] / r['archive']:.1f}x smaller than fp32), "
                 f"test accuracy {r['acc']:.2f}% ({r['acc'] - r['fp32_acc']:+.2f} points), from the archive's weights")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    """Accuracy against archive size per net: the whole range (top), and near fp32 (bottom)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(results), figsize=(6 * len(results), 8), squeeze=False)
    for col, r in enumerate(results):
        for row, ax in enumerate(axes[:, col]):
            for retrain, style, label in ((False, "o--", "pruned + shared, no retraining"),
                                          (True, "o-", "pruned + shared, retrained")):
                pts = sorted((size, acc) for _, rt, size, acc in r["curve"] if rt == retrain)
                ax.plot([p[0] / 1024 for p in pts], [p[1] for p in pts], style, label=label)
            for name, retrained, size, acc in r["rows"]:
                if name.startswith(("preset", "fp32", "zstd")):
                    ax.plot(size / 1024, acc, "s", label=name)
            ax.axhline(r["fp32_acc"] - 0.3, color="grey", linestyle=":", linewidth=1, label="fp32 - 0.3 points")
            ax.set_xscale("log")
            ax.set_xlabel("archive size (KiB, log)")
            ax.set_ylabel("test accuracy (%)")
            ax.grid(True, which="both", alpha=0.3)
            if row == 0:
                ax.set_ylim(max(0, min(a for *_, a in r["rows"]) - 2), 100)
                ax.set_title(f"digits {r['kind'].upper()}: accuracy against size (seed {r['seed']})")
                ax.legend(fontsize=7, loc="lower right")
            else:
                ax.set_ylim(r["fp32_acc"] - 3, min(100, r["fp32_acc"] + 1.5))
                ax.set_title("near fp32")
    fig.tight_layout()
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="write <net>.nnar, <net>.fp32.onnx and the PNG here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="short training, one target: the CI version")
    ap.add_argument("--nets", default="mlp,cnn", help="comma-separated: mlp, cnn")
    ap.add_argument("--target", type=int, action="append", help="archive size target, times smaller than fp32 "
                    "(per net, in --nets order; default MLP 27, CNN 35)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # nets this small: a second thread costs more than it gives
    kinds = [k.strip() for k in args.nets.split(",") if k.strip()]
    if any(k not in NETS for k in kinds):
        ap.error(f"--nets: expected mlp and/or cnn, found {args.nets!r}")
    targets = args.target or [DEFAULT_TARGET[k] for k in kinds]
    if len(targets) != len(kinds):
        ap.error("--target: give one per net")
    results = []
    for kind, target in zip(kinds, targets):
        r = run(kind, args.seed, args.quick, target, args.out, log=lambda s: print(s, flush=True))
        print(report(r), flush=True)
        results.append(r)
    if args.out:
        png = os.path.join(args.out, "deep_compression_digits.png")
        try:
            plot(results, png)
            print(f"saturation curve: {png}")
        except ImportError:
            print("(matplotlib is not installed: no plot)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
