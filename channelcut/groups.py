"""Coupled channel groups of a model, and zeroing whole groups: what structured pruning that
respects residual, concat and depthwise couplings needs (and what a "prune for me" will use).

A group is every (tensor, channel) that must be cut together: the channels an elementwise op
adds up, a depthwise conv's input and output, Concat parts and their slots in the output, and
so on. Zeroing the weight rows (and biases) of every layer that produces a member makes the
whole group zero, so the cut can remove it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from channelcut import io, verify
from channelcut.analysis import walk_graph
from channelcut.graph import to_ir
from channelcut.solve import Options, solve

PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class ChannelGroup:
    """One coupled group: its channels, the weighted layers that produce them, and whether a
    graph boundary or an op without a rule forces it to stay (then zeroing it gains nothing)."""

    channels: tuple[tuple[str, int], ...]  # (tensor name, channel index)
    rows: tuple[tuple[str, int], ...]  # (weighted node name, output channel it produces)
    pinned: bool


def channel_groups(model: onnx.ModelProto | str | Path,
                   input_shapes: dict[str, Sequence[int]] | None = None) -> list[ChannelGroup]:
    """Every coupled channel group that has at least one producing weighted layer."""
    proto = io.load_model(model)
    graph_model = to_ir(proto, verify.resolve_input_shapes(proto, input_shapes))
    walk = walk_graph(graph_model)
    analysis = solve(walk, Options(fold=False))
    pinned = np.zeros(analysis.removable.size, dtype=bool)
    for pin in walk.pins:
        pinned[analysis.group_of[pin.ids]] = True
    channels: dict[int, list[tuple[str, int]]] = {}
    rows: dict[int, list[tuple[str, int]]] = {}
    for value, info in analysis.infos.items():
        groups = analysis.group_of[info.ids]
        producer = value.producer()
        produced = producer is not None and producer.op_type in PRODUCERS and \
            producer.outputs[0] is value
        for k, group in enumerate(groups.tolist()):
            channels.setdefault(group, []).append((value.name or "", k))
            if produced:
                rows.setdefault(group, []).append((producer.name or "", k))
    return [ChannelGroup(tuple(channels[g]), tuple(rows[g]), bool(pinned[g]))
            for g in sorted(rows)]


def zero_groups(model: onnx.ModelProto, groups: Iterable[ChannelGroup]) -> onnx.ModelProto:
    """A copy of `model` whose layers producing these groups have those rows and biases at 0.

    The producers must read their weights (and bias) straight from initializers, as exported
    models do; depthwise producers are zeroed per output channel like any Conv.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    nodes = {n.name: n for n in result.graph.node}
    inits = {t.name: t for t in result.graph.initializer}
    arrays: dict[str, np.ndarray] = {}

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name]).copy()
        return arrays[name]

    for group in groups:
        for node_name, row in group.rows:
            node = nodes[node_name]
            weight_axis = _weight_row_axis(node)
            np.moveaxis(array(node.input[1]), weight_axis, 0)[row] = 0
            if len(node.input) > 2 and node.input[2] in inits:
                bias = array(node.input[2])
                if bias.ndim and bias.shape[-1] > 1:
                    bias[..., row] = 0
    for name, values in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(values, name))
    return result


def _weight_row_axis(node: onnx.NodeProto) -> int:
    """Axis of the weight that indexes the node's output channels."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return -1  # MatMul: [K, N]

