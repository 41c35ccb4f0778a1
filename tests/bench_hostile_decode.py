"""Measure the worst cases of issue 15 (items 1-5): time and peak RSS of `nnar verify` / `nnar ls`
on each hostile file, in a fresh process each. The figures in spec/SECURITY.md ("Measured worst
cases") come from this script:

    python tests/bench_hostile_decode.py            # every row
    python tests/bench_hostile_decode.py huffman    # rows whose name contains "huffman"

A benchmark, not a test: it prints what it measures and asserts nothing.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import zstandard  # noqa: E402

import nnar  # noqa: E402
from archive_builder import Builder, zstd_stage  # noqa: E402
from test_hostile_decode import (  # noqa: E402
    huffman_tensor, object_bomb, raw_block_frame, sparse_gap_tensor,
)

MiB = 1 << 20


def chain(inner_mib: int) -> bytes:
    outer = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(raw_block_frame(inner_mib * MiB))
    return Builder().tensor([("x", (4,))], "uint8", [("data", [zstd_stage(), zstd_stage()], 4, outer)],
                            decoded=bytes(4)).build()


def aliases(n: int) -> bytes:
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        for i in range(n):
            w.write(f"t{i}", np.array([i % 256], np.uint8), aliases=[f"a{i}"])
    return buf.getvalue()


ROWS = {  # name: (make the file, CLI command)
    "1 descriptor of 67M empty maps": (lambda: object_bomb(67_000_000), "verify"),
    "2 [zstd, zstd] on 4 bytes, inner 1 GiB": (lambda: chain(1024), "verify"),
    "3 huffman 1-bit codes, 64 MiB": (lambda: huffman_tensor(64 * MiB), "verify"),
    "3 huffman 1-bit codes, 256 MiB": (lambda: huffman_tensor(256 * MiB), "verify"),
    "4 sparse gaps gap_bits=1, 64 Mi uint8": (lambda: sparse_gap_tensor(64 * MiB), "verify"),
    "5 40k tensors + 40k aliases": (lambda: aliases(40_000), "ls"),
    "5 160k tensors + 160k aliases": (lambda: aliases(160_000), "ls"),
}


def measure(path: str, command: str) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MiB, the last line of output) of `nnar COMMAND path`, through
    /usr/bin/time: a child forked from this process would report this process's peak RSS."""
    # cwd: not the checkout, which `-m` would put before PYTHONPATH on sys.path
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", sys.executable, "-m", "nnar", command, path],
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    *_, stats = proc.stderr.strip().splitlines()
    wall, user, system, rss = stats.split()
    lines = [line for line in (proc.stdout + proc.stderr).strip().splitlines()[:-1]
             if not line.startswith("Command exited")]
    return float(wall), float(user) + float(system), int(rss) / 1024, (lines[-1] if lines else "")[:90]


def main(argv: list[str]) -> None:
    print(f"nnar {nnar.__version__} from {Path(nnar.__file__).parent}")
    print(f"{'file':42} {'bytes':>9} {'wall s':>7} {'cpu s':>6} {'RSS MiB':>8}  result")
    for name, (make, command) in ROWS.items():
        if argv and not any(a in name for a in argv):
            continue
        blob = make()
        with tempfile.NamedTemporaryFile(suffix=".nnar") as f:
            f.write(blob)
            f.flush()
            wall, cpu, rss, result = measure(f.name, command)
        print(f"{name:42} {len(blob):>9} {wall:>7.2f} {cpu:>6.2f} {rss:>8.0f}  {command}: {result}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
