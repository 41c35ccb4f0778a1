"""Seed the fuzz corpora from spec/vectors (and from each registered codec's own encoder).

    python fuzz/seed_corpus.py

writes ``fuzz/corpus/<harness>/seed-*`` files; files that fuzzing added are left alone. Run it
again after adding a vector or a codec. Seeds are named by their content, so rerunning changes
nothing unless the seeds did.

* archive, cli_verify: every valid and invalid vector, as it is.
* patch: every patch vector, valid and invalid.
* npz, safetensors, torch, onnx: small valid files of each input format and the hostile ones of
  issue 15 (input_seeds.py); torch and onnx seeds only where those libraries are installed.
* codecs: for each record of each valid vector, its array→bytes stage with the decoded streams
  and each segment's bytes→bytes stages with the stored bytes (as fuzz_codecs.py reads them);
  and, for every registered codec, what its encoder makes of a few small arrays.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import CORPUS_DIR, ROOT  # noqa: E402

import numpy as np  # noqa: E402

import fuzz_codecs  # noqa: E402
from nnar.codecs import registered  # noqa: E402
from nnar.codecs.abc import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec, TensorSpec, as_bytes  # noqa: E402
from nnar.container.records import RecordReader  # noqa: E402
from nnar.errors import NnarError  # noqa: E402

VECTORS = ROOT / "spec" / "vectors"
HARNESSES = ("archive", "codecs", "cli_verify", "patch", "npz", "safetensors", "torch", "onnx")


def _write(harness: str, label: str, data: bytes) -> bool:
    d = CORPUS_DIR / harness
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"seed-{label}-{hashlib.sha1(data).hexdigest()[:12]}"
    if path.exists():
        return False
    path.write_bytes(data)
    return True


def _fits(spec: TensorSpec) -> bool:
    return len(spec.shape) < 4 and all(d < 256 for d in spec.shape)


def codec_seeds_from_vector(path: Path):
    """(label, input) pairs for fuzz_codecs from the records of one valid archive."""
    reader = RecordReader(path.read_bytes())
    for rec, segments in reader.iter_tensors():
        stage = rec.pipeline[-1]
        streams = {}
        for name, (chain, raw_length, stored) in segments.items():
            data = bytes(stored)
            for c in chain:  # seeds for each bytes→bytes stage, outermost first
                yield c["codec"], fuzz_codecs.make_input(c["codec"], rec.spec, c["config"], c["params"], data,
                                                          raw_length)
            for c in reversed(chain):
                data = bytes(registered()[c["codec"]].from_config(c["config"]).decode(data, c["params"], raw_length))
            streams[name] = data
        if len(rec.pipeline) == 1 and _fits(rec.spec):
            cls = registered()[stage["codec"]]
            order = cls.from_config(stage["config"]).stream_names(rec.spec, stage["params"])
            yield stage["codec"], fuzz_codecs.make_input(stage["codec"], rec.spec, stage["config"], stage["params"],
                                                         {n: streams[n] for n in order})


def codec_seeds_from_encoders():
    """(label, input) pairs from every registered codec's default encoder on small arrays."""
    rng = np.random.default_rng(0)
    arrays = [(np.arange(12, dtype="<i2").reshape(3, 4), "int16"),
              ((rng.normal(size=40) * 0.02).astype("<f4"), "float32"),
              (np.array(1.5, "<f8"), "float64"),
              (rng.integers(0, 4, 100).astype("u1"), "uint8"),
              (np.zeros((0, 5), "<u2"), "bfloat16")]
    for cid, cls in sorted(registered().items()):
        try:
            codec = cls()
        except TypeError:  # a codec without a default config: its hook or the vectors seed it
            continue
        for array, dtype in arrays:
            spec = TensorSpec(dtype, array.shape)
            if isinstance(codec, BytesBytesCodec):
                raw = bytes(as_bytes(array))
                stored, params = codec.encode(raw)
                yield cid, fuzz_codecs.make_input(cid, spec, codec.get_config(), params, bytes(stored), len(raw))
            elif isinstance(codec, ArrayBytesCodec):
                streams, params = codec.encode(array, spec)
                order = codec.stream_names(spec, params)
                yield cid, fuzz_codecs.make_input(cid, spec, codec.get_config(), params,
                                                  {n: bytes(streams[n]) for n in order})
            elif isinstance(codec, ArrayArrayCodec):
                out, params = codec.encode(array, spec)
                yield cid, fuzz_codecs.make_input(cid, spec, codec.get_config(), params, bytes(as_bytes(out)))


def input_format_seeds():
    """(harness, label, input) for the input-format harnesses."""
    import input_seeds
    for label, data in input_seeds.npz_seeds().items():
        yield "npz", label, data
    for label, data in input_seeds.safetensors_seeds().items():
        yield "safetensors", label, data
    try:
        seeds = input_seeds.torch_seeds()
    except ImportError as e:
        print(f"torch seeds skipped: {e}", file=sys.stderr)
        seeds = {}
    for label, data in seeds.items():
        yield "torch", label, data
    try:
        import fuzz_onnx
        seeds = input_seeds.onnx_seeds()
    except ImportError as e:
        print(f"onnx seeds skipped: {e}", file=sys.stderr)
        seeds = {}
    for label, (model, data) in seeds.items():
        yield "onnx", label, fuzz_onnx.make_input(model, data)


def main() -> None:
    added = 0
    for harness, label, data in input_format_seeds():
        added += _write(harness, label, data)
    for kind in ("valid", "invalid"):
        for path in sorted((VECTORS / kind).glob("*.nnar")):
            data = path.read_bytes()
            for harness in ("archive", "cli_verify"):
                added += _write(harness, f"{kind}-{path.stem}", data)
            if kind == "valid":
                try:
                    for label, inp in codec_seeds_from_vector(path):
                        added += _write("codecs", f"{path.stem}-{label}", inp)
                except NnarError as e:  # a vector using a codec this nnar lacks: seed the rest
                    print(f"{path.name}: {e}", file=sys.stderr)
    for path in sorted((VECTORS / "patch").glob("*.nnarpatch")):
        added += _write("patch", path.stem, path.read_bytes())
    for label, inp in codec_seeds_from_encoders():
        added += _write("codecs", f"encoder-{label}", inp)
    total = {h: len(list((CORPUS_DIR / h).iterdir())) for h in HARNESSES if (CORPUS_DIR / h).is_dir()}
    print(f"added {added} seeds; corpus files now {total}")


if __name__ == "__main__":
    main()
