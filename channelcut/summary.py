"""What the report says of a cut, read off the analysis and the models: per-layer channel
counts, the constants whose size changed, the blockers, the channels cut by range, and the
map of kept channel positions."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.graph import is_constant
from channelcut.report import Blocker, ConstChange, LayerChange, RangeCut
from channelcut.rewrite import SizeChange, input_role, kept_mask
from channelcut.solve import Analysis

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def range_cuts(walk: Walk, analysis: Analysis) -> list[RangeCut]:
    """The channels whose interval made them constant, where the cut removed them."""
    cuts = []
    for fact in walk.range_facts:
        removed = analysis.removable[analysis.group_of[fact.ids]]
        if not removed.any():
            continue
        bounds = [b for b, r in zip(fact.input_bounds, removed) if r]
        cuts.append(RangeCut(
            fact.tensor, fact.node, fact.op_type, int(removed.sum()),
            [int(c) for c in fact.channels[removed]], fact.value,
            (min(b[0] for b in bounds), max(b[1] for b in bounds)) if bounds else None))
    return cuts


def params(model: onnx.ModelProto) -> int:
    """Elements of every constant tensor (initializers and Constant nodes)."""
    total = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    total += int(np.prod(attr.t.dims))
    return total


def readers(model: ir.Model) -> dict[str, tuple[str, str]]:
    """Per constant, the first node that reads it and what it is to that node."""
    readers: dict[str, tuple[str, str]] = {}
    for node in model.graph:
        for index, value in enumerate(node.inputs):
            if value is not None and value.const_value is not None and value.name:
                readers.setdefault(value.name, (node.name or node.op_type,
                                                input_role(node, index)))
    return readers


def const_changes(changes: dict[str, SizeChange], readers: dict[str, tuple[str, str]]
                   ) -> list[ConstChange]:
    """Every constant whose size changed, with its layer (a shared constant sliced for one
    reader is tied to that reader; one sliced in place, to its first reader)."""
    made = []
    for name, c in changes.items():
        if c.src_size != c.pruned_size:
            node, role = readers.get(name, (c.node, c.role))
            made.append(ConstChange(name, c.src_size, c.pruned_size, c.node or node,
                                    c.role or role))
    return made


def _channel_count(analysis: Analysis, value: ir.Value | None, axis: int) -> tuple[int, int]:
    """(before, after) length of the channel axis of `value`."""
    info = analysis.infos.get(value) if value is not None else None
    if info is not None:
        return info.size, info.size - analysis.deleted_positions(value).size
    shape = value.shape if value is not None else None
    dim = shape.dims[axis] if shape is not None and len(shape.dims) > abs(axis) else -1
    dim = dim if isinstance(dim, int) else -1
    return dim, dim


def network(analysis: Analysis, flops: dict[ir.Node, int]
             ) -> list[tuple[LayerChange, ir.Node]]:
    """Channels in and out of every weighted layer, in network order, with its node (whose
    FLOPs after the cut are counted once the cut model's shapes are known)."""
    layers = []
    for node in analysis.model.graph:
        if node.op_type not in WEIGHTED_OPS:
            continue
        weights = node.inputs[1] if len(node.inputs) > 1 else None
        if node.op_type == "MatMul" and not is_constant(weights):
            continue  # two activations (attention's scores, context): no weights of its own
        in_axis = -1 if node.op_type == "MatMul" else 1
        in_channels = _channel_count(analysis, node.inputs[0], in_axis)
        out_channels = _channel_count(analysis, node.outputs[0], in_axis)
        layers.append((LayerChange(node.name or node.outputs[0].name, node.op_type,
                                   in_channels, out_channels, (flops.get(node, 0), 0)), node))
    return layers


def blockers(analysis: Analysis) -> list[Blocker]:
    """What kept channels every reader could do without, as the report lists it."""
    return [Blocker(pin.op_type, pin.node, int(pin.ids.size), pin.reason)
            for pin in analysis.blockers]


def channel_map(analysis: Analysis) -> dict[str, tuple[int, np.ndarray]]:
    """Per tensor that lost channels: its channel axis and the original positions kept."""
    mapping = {}
    for value, info in analysis.infos.items():
        deleted = analysis.deleted_positions(value)
        if deleted.size and value.name:
            mapping[value.name] = (info.axis, np.flatnonzero(kept_mask(info.size, deleted)))
    return mapping
