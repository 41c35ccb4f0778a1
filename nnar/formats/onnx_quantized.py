"""``--keep-quantized`` ONNX output: quantized weights stay small in the model file and are
expanded at run time by standard ONNX operators (spec/onnx.md says which runtimes and opsets).

Each weight W held as a :class:`nnar.quantized.Quantized` form becomes initializers named
``W.nnar_*`` and the nodes below, whose last output is named W, so the rest of the graph is
untouched. ``v`` is the model's ai.onnx opset.

- affine, one group per output channel (axis 0), v ≥ 13: ``DequantizeLinear(axis=0)``; one
  group for the whole tensor is written the same way, its scale repeated per channel
  (onnxruntime rewrites a per-tensor DequantizeLinear → MatMul into MatMulNBits, which by
  default quantizes the activations as well: no longer what nnar decodes);
- affine, one group, 1-D, v ≥ 10: ``DequantizeLinear(codes, scale, zero_point)``;
- affine, blocks of G, v ≥ 21: codes as [n/G, G], ``DequantizeLinear(axis=1, block_size=G)``,
  ``Reshape``;
- with 1–4 bit codes and v ≥ 21, codes and zero points are ``UINT4`` (two per byte);
- affine otherwise (older opsets): ``Cast`` to float, ``Sub`` the zero points, ``Mul`` the
  scales (broadcast per group), ``Reshape`` when grouped by blocks;
- codebook: uint8 indices, ``Cast`` to int32, ``Gather`` from the table;
- cast: the float16 (bfloat16: v ≥ 13) initializer, ``Cast`` back to the weight's dtype.

Every recipe computes exactly what nnar's decoder computes: (code − zero point) is exact in
float32 and the product with the scale is rounded once, as in ``nnar.affine``. A weight that
fits none (blocks that do not divide the tensor, a weight inside a model-local function) is
written expanded, with a warning.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from ..dtypes import dtype_name_of
from .onnx import _FROM_NNAR, _graphs, _onnx

UINT4 = 21


def opset(model) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 1


class _Builder:
    def __init__(self, onnx, name: str, used: set[str]):
        self.onnx, self.name, self.used = onnx, name, used
        self.inits, self.nodes = [], []

    def fresh(self, suffix: str) -> str:
        out, k = f"{self.name}.nnar_{suffix}", 1
        while out in self.used:
            k += 1
            out = f"{self.name}.nnar_{suffix}{k}"
        self.used.add(out)
        return out

    def init(self, suffix: str, arr: np.ndarray, data_type: int | None = None) -> str:
        name = self.fresh(suffix)
        t = self.onnx.TensorProto()
        t.name = name
        t.dims.extend(arr.shape)
        if data_type == UINT4:
            t.data_type = UINT4
            flat = arr.reshape(-1).astype(np.uint8)
            if flat.size % 2:
                flat = np.concatenate([flat, np.zeros(1, np.uint8)])
            t.raw_data = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()
        else:  # bfloat16 arrives as its uint16 bit patterns: its data_type is given
            t.data_type = data_type or _FROM_NNAR[dtype_name_of(arr)]
            t.raw_data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        self.inits.append(t)
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        out = output or self.fresh(op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=self.fresh(f"{op}_node"), **attrs))
        return out


def _affine(b: _Builder, q, v: int, out: str) -> bool:
    n, G, shape = q.values.size, q.group_size, q.shape
    groups = q.scale.size
    four = q.bits <= 4 and v >= 21
    ctype = UINT4 if four else None
    if groups == 1 and len(shape) >= 2 and shape[0] > 0 and v >= 13:
        # one scale, written per output channel (repeated): onnxruntime fuses a per-tensor
        # DequantizeLinear -> MatMul into MatMulNBits, which by default quantizes the activations
        # too, so the model would no longer compute what nnar decodes; the per-channel form it runs as is
        q = dataclasses.replace(q, scale=np.repeat(q.scale, shape[0]), zero_point=np.repeat(q.zero_point, shape[0]),
                                group_size=n // shape[0])
        groups, G = shape[0], n // shape[0]
    if groups == 1 and len(shape) < 2 and v >= 10:  # 1-D: nothing to fuse with
        x = b.init("codes", q.values, ctype)
        b.node("DequantizeLinear", [x, b.init("scale", q.scale.reshape(())), b.init("zero_point", q.zero_point.reshape(()),
                                                                                       ctype)], out)
        return True
    channel = len(shape) >= 2 and G == math.prod(shape[1:]) and groups == shape[0]
    if channel and v >= 13:
        x = b.init("codes", q.values, ctype)
        b.node("DequantizeLinear", [x, b.init("scale", q.scale), b.init("zero_point", q.zero_point, ctype)], out,
               axis=0)
        return True
    if n % G or groups * G != n:
        return False
    blocked = groups > 1 and not channel
    if blocked and v >= 21:
        x = b.init("codes", q.values.reshape(groups, G), ctype)
        y = b.node("DequantizeLinear", [x, b.init("scale", q.scale.reshape(groups, 1)),
                                        b.init("zero_point", q.zero_point.reshape(groups, 1), ctype)],
                   axis=1, block_size=G)
        b.node("Reshape", [y, b.init("shape", np.array(shape, np.int64))], out)
        return True
    # any opset: (float(code) - zero_point) * scale, broadcast over each group's elements
    x = b.init("codes", q.values.reshape(groups, G))
    f = b.node("Cast", [x], to=1)
    d = b.node("Sub", [f, b.init("zero_point", q.zero_point.astype(np.float32).reshape(groups, 1))])
    y = b.node("Mul", [d, b.init("scale", q.scale.reshape(groups, 1))])
    b.node("Reshape", [y, b.init("shape", np.array(shape, np.int64))], out)
    return True


def _codebook(b: _Builder, q, v: int, out: str) -> bool:
    if q.dtype == "bfloat16" and v < 13:
        return False
    t = b.init("codebook", q.table, _FROM_NNAR[q.dtype])
    idx = b.node("Cast", [b.init("indices", q.values)], to=6)  # Gather takes int32/int64 indices only
    b.node("Gather", [t, idx], out, axis=0)
    return True


def _cast(b: _Builder, q, v: int, out: str) -> bool:
    if q.cast_from == "bfloat16" and v < 13 or q.cast_from.startswith("float8") and v < 19:
        return False  # Cast from bfloat16 is opset 13, from float8 opset 19
    src = b.init("half", q.values, _FROM_NNAR[q.cast_from])
    b.node("Cast", [src], out, to=_FROM_NNAR[q.dtype])
    return True


_RECIPES = {"affine": _affine, "codebook": _codebook, "cast": _cast}


def apply(model, expanded: list) -> None:
    """Replace each (onnx.Ref, name, Quantized) of ``expanded`` by its small form."""
    onnx = _onnx()
    from .onnx import fill
    v = opset(model)
    used = set()
    for g in _graphs(model):
        used.update(t.name for t in getattr(g, "initializer", ()))
        for node in g.node:
            used.update(node.output)
            used.update(node.input)
    fallbacks = []
    for ref, name, q in expanded:
        graph, const, t = ref.graph, ref.node, ref.tensor
        out = const.output[0] if const is not None else t.name
        b = _Builder(onnx, out, used)
        if ref.in_function or not _RECIPES[q.kind](b, q, v, out):
            fill(t, name, q.expand(), q.dtype)
            fallbacks.append(name)
            continue
        if const is not None:
            at = _index(graph.node, const)
            del graph.node[at]
        else:
            at = 0
            # deleted by index: rebuilding the list would copy the other weights' TensorProtos
            # and detach the references still to be filled
            del graph.initializer[_index(graph.initializer, t)]
            inputs = [i for i, x in enumerate(graph.input) if x.name == t.name]  # IR < 4 lists initializers as inputs
            for i in reversed(inputs):
                del graph.input[i]
        graph.initializer.extend(b.inits)
        for k, node in enumerate(b.nodes):
            graph.node.insert(at + k, node)
    if fallbacks:
        warnings.warn(f"--keep-quantized: {len(fallbacks)} quantized weights have no small ONNX form at opset {v} "
                      f"and were written expanded: {', '.join(fallbacks[:5])}", stacklevel=4)


def _index(items, item) -> int:
    for i, x in enumerate(items):
        if x is item:
            return i
    raise ValueError("not in the graph")  # cannot happen: the reference came from this graph
