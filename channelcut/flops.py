"""FLOPs of a model at concrete shapes: 2 per multiply-add in Conv, ConvTranspose, Gemm and
MatMul; one per output element for other arithmetic; nothing for ops that only move data, or
for constant subgraphs (runtimes evaluate them once, at load)."""

from __future__ import annotations

import math
import onnx_ir as ir

from channelcut.graph import attr_ints, static_shape

MOVES_DATA = frozenset({
    "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice",
    "Gather", "Identity", "Dropout", "Shape", "Size", "Constant", "Cast", "Pad", "Expand",
    "Tile", "ConstantOfShape", "Range", "GatherElements", "GatherND", "ScatterND",
})


def _elements(value: ir.Value | None) -> int:
    shape = static_shape(value)
    return 0 if shape is None else math.prod(shape)


def _weight_shape(node: ir.Node) -> tuple[int, ...] | None:
    return static_shape(node.inputs[1]) if len(node.inputs) > 1 else None


def node_flops(node: ir.Node) -> int:
    """FLOPs of one node; 0 where shapes are unknown."""
    op = node.op_type
    out = node.outputs[0] if node.outputs else None
    if op in ("Conv", "ConvTranspose"):
        w = _weight_shape(node)
        if w is None:
            return 0
        # Conv: each output element sums cin/g * kernel products; ConvTranspose: each input
        # element is spread over cout/g * kernel outputs.
        anchor = out if op == "Conv" else node.inputs[0]
        return 2 * _elements(anchor) * math.prod(w[1:])
    if op in ("Gemm", "MatMul"):
        a = static_shape(node.inputs[0])
        if a is None:
            return 0
        k = a[0] if op == "Gemm" and node.attributes.get("transA") and \
            node.attributes["transA"].as_int() else a[-1]
        return 2 * _elements(out) * k
    if op in MOVES_DATA:
        return 0
    if op in ("MaxPool", "AveragePool", "LpPool"):
        return _elements(out) * math.prod(attr_ints(node, "kernel_shape", [1]) or [1])
    if op.startswith("Global") or op.startswith("Reduce"):
        return _elements(node.inputs[0])
    return _elements(out)


def model_flops(model: ir.Model) -> int:
    """FLOPs of one inference: nodes that compute only from constants (a border fold's
    Conv over a plane of ones) are evaluated once when a runtime loads the model, and count 0."""
    constant: set[ir.Value] = set()
    total = 0
    for node in model.graph:
        inputs = [v for v in node.inputs if v is not None]
        if inputs and all(v in constant or (v.const_value is not None and not v.is_graph_input())
                          for v in inputs):
            constant.update(node.outputs)
            continue
        total += node_flops(node)
    return total
