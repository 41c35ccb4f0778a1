"""Rebuild examples/mlp.safetensors: a small MLP trained with numpy for a few hundred steps on
a synthetic task, so its weights have the statistics of trained weights. Deterministic."""

import json
import struct
from pathlib import Path

import numpy as np

rng = np.random.default_rng(7)
x = rng.normal(size=(2048, 64)).astype(np.float32)
teacher = rng.normal(size=(64, 10)).astype(np.float32)
y = np.argmax(np.tanh(x @ teacher) + 0.1 * rng.normal(size=(2048, 10)), axis=1)
w1 = (rng.normal(size=(64, 256)) * np.sqrt(2 / 64)).astype(np.float32)
b1 = np.zeros(256, np.float32)
w2 = (rng.normal(size=(256, 10)) * np.sqrt(2 / 256)).astype(np.float32)
b2 = np.zeros(10, np.float32)
for step in range(300):
    idx = rng.integers(0, len(x), 128)
    h = np.maximum(x[idx] @ w1 + b1, 0)
    logits = h @ w2 + b2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(128), y[idx]] -= 1
    g2, gb2 = h.T @ p / 128, p.mean(0)
    gh = (p @ w2.T) * (h > 0)
    g1, gb1 = x[idx].T @ gh / 128, gh.mean(0)
    for param, grad in ((w1, g1), (b1, gb1), (w2, g2), (b2, gb2)):
        param -= 0.1 * grad.astype(np.float32)

bits = w1.view(np.uint32)
w1_bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
tensors = {"fc1.weight": ("F32", w1.T.copy()), "fc1.bias": ("F32", b1), "fc1.weight_bf16": ("BF16", w1_bf16.T.copy()),
           "fc2.weight": ("F32", w2.T.copy()), "fc2.bias": ("F32", b2),
           "steps": ("I64", np.array(300, np.int64))}
header, pos, blobs = {"__metadata__": {"format": "pt", "example": "nnar"}}, 0, []
for name, (dt, arr) in tensors.items():
    raw = arr.tobytes()
    header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [pos, pos + len(raw)]}
    pos += len(raw)
    blobs.append(raw)
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
Path(__file__).with_name("mlp.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
