"""FLOPs of a model at concrete shapes: 2 per multiply-add in Conv, ConvTranspose, Gemm and
MatMul; one per output element for other arithmetic; nothing for ops that only move data, or
for constant subgraphs (runtimes evaluate them once, at load)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx_ir as ir

from channelcut.graph import attr_ints, static_shape

MOVES_DATA = frozenset({
    "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice",
    "Gather", "Identity", "Dropout", "Shape", "Size", "Constant", "Cast", "Pad", "Expand",
    "Tile", "ConstantOfShape", "Range", "GatherElements", "GatherND", "ScatterND",
})


def _elements(value: ir.Value | None) -> int | None:
    shape = static_shape(value)
    return None if shape is None else math.prod(shape)


def _weight_shape(node: ir.Node) -> tuple[int, ...] | None:
    return static_shape(node.inputs[1]) if len(node.inputs) > 1 else None


def node_flops(node: ir.Node) -> int:
    """FLOPs of one node; 0 where shapes are unknown (`counted_flops` says None there)."""
    flops = counted_flops(node)
    return 0 if flops is None else flops


def counted_flops(node: ir.Node) -> int | None:
    """FLOPs of one node, or None when the shapes they depend on are unknown."""
    op = node.op_type
    out = node.outputs[0] if node.outputs else None
    if op in MOVES_DATA:
        return 0
    if op in ("Conv", "ConvTranspose"):
        # Conv: each output element sums cin/g * kernel products; ConvTranspose: each input
        # element is spread over cout/g * kernel outputs.
        w, anchor = _weight_shape(node), _elements(out if op == "Conv" else node.inputs[0])
        return None if w is None or anchor is None else 2 * anchor * math.prod(w[1:])
    if op in ("Gemm", "MatMul"):
        a, elements = static_shape(node.inputs[0]), _elements(out)
        if a is None or elements is None:
            return None
        k = a[0] if op == "Gemm" and node.attributes.get("transA") and \
            node.attributes["transA"].as_int() else a[-1]
        return 2 * elements * k
    if op in ("MaxPool", "AveragePool", "LpPool"):
        elements = _elements(out)
        kernel = math.prod(attr_ints(node, "kernel_shape", [1]) or [1])
        return None if elements is None else elements * kernel
    if op.startswith("Global") or op.startswith("Reduce"):
        return _elements(node.inputs[0])
    return _elements(out)


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one inference over the nodes whose shapes are known; `unknown_nodes` more
    compute something we cannot count (their shapes are unknown): then `flops` is a lower
    bound."""

    flops: int
    unknown_nodes: int = 0


def model_flops(model: ir.Model) -> int:
    """FLOPs of one inference, counted where shapes are known (see `count_flops`)."""
    return count_flops(model).flops


def count_flops(model: ir.Model) -> FlopCount:
    """FLOPs of one inference: nodes that compute only from constants (a border fold's
    Conv over a plane of ones) are evaluated once when a runtime loads the model, and count 0;
    nodes of unknown shape are counted apart."""
    constant: set[ir.Value] = set()
    total = unknown = 0
    for node in model.graph:
        inputs = [v for v in node.inputs if v is not None]
        if inputs and all(v in constant or (v.const_value is not None and not v.is_graph_input())
                          for v in inputs):
            constant.update(node.outputs)
            continue
        flops = counted_flops(node)
        if flops is None:
            unknown += 1
        else:
            total += flops
    return FlopCount(total, unknown)
