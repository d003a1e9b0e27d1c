"""RKNN-style input preprocessing (mean, std, channel reorder) as nodes in front of the inputs.

config's mean_values, std_values and reorder_channel become Gather, Sub and Div nodes that
read each graph input, so the model takes raw pixels as an RKNN model does. Order: the
channels are first reordered (out[c] = in[order[c]]), then the mean is subtracted and the
result divided by std; mean and std are given in the order of the model's channels, i.e.
after the reorder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import onnx

from channelcut.errors import ChannelcutError
from channelcut.verify import graph_inputs

# Names of the nodes and constants we add start with this, so a model read back with
# load_rknn can tell whether its inputs are preprocessed.
PREPROCESS_PREFIX = "rknn_preprocess_"
CONFIG_KEYS = ("mean_values", "std_values", "reorder_channel")


@dataclass(frozen=True)
class Preprocess:
    """What happens to one raw input before the model sees it; each step is optional."""

    mean: list[float] | None = None
    std: list[float] | None = None
    order: list[int] | None = None


# --- config's arguments --------------------------------------------------------------------

def preprocess_config(mean_values: Any, std_values: Any,
                      reorder_channel: str | Sequence[str] | None) -> dict[str, Any]:
    """config's preprocessing arguments, checked, as per-input lists (None when not given)."""
    config = {
        "mean_values": _per_input_numbers(mean_values, "mean_values"),
        "std_values": _per_input_numbers(std_values, "std_values"),
        "reorder_channel": _per_input_orders(reorder_channel),
    }
    if any(0 in values for values in config["std_values"] or []):
        raise ChannelcutError("std_values must not contain 0; the input is divided by them")
    return config


def _per_input_numbers(values: Any, what: str) -> list[list[float]] | None:
    """[[m0, m1, m2], ...] per input; a flat list of numbers applies to every input."""
    if values is None:
        return None
    if isinstance(values, Sequence) and values and all(isinstance(v, Real) for v in values):
        values = [values]
    if isinstance(values, str) or not isinstance(values, Sequence) or not all(
            isinstance(v, Sequence) and v and all(isinstance(x, Real) for x in v)
            for v in values):
        raise ChannelcutError(f"{what} must be one list of numbers per input, for example "
                              "[[123.675, 116.28, 103.53]]")
    return [[float(x) for x in v] for v in values]


def _per_input_orders(value: str | Sequence[str] | None) -> list[list[int]] | None:
    """reorder_channel: '2 1 0' for every input, or one such string per input."""
    if value is None:
        return None
    texts = [value] if isinstance(value, str) else value
    try:
        return [[int(c) for c in text.split()] for text in texts]
    except (AttributeError, ValueError):
        raise ChannelcutError(f"reorder_channel {value!r} must be a string of channel numbers "
                              "such as '2 1 0' (RGB <-> BGR), or one per input") from None


def preprocess_steps(model: onnx.ModelProto, config: dict[str, Any]) -> dict[str, Preprocess]:
    """One preprocessing per model input from config's per-input lists (one list fits all)."""
    names = [v.name for v in graph_inputs(model)]
    steps = {}
    for key in CONFIG_KEYS:
        given = config.get(key)
        if given is not None and len(given) not in (1, len(names)):
            raise ChannelcutError(f"{key} has {len(given)} entries, the model has {len(names)} "
                                  f"inputs ({', '.join(names)}); give one per input")
    for index, name in enumerate(names):
        pick = {key: (None if config.get(key) is None else
                      config[key][index if len(config[key]) > 1 else 0])
                for key in CONFIG_KEYS}
        steps[name] = Preprocess(mean=pick["mean_values"], std=pick["std_values"],
                                 order=pick["reorder_channel"])
    return steps


# Raw pixels are uint8: every value the model sees after mean/std lies in this range's image.
PIXEL_RANGE = (0.0, 255.0)


def normalised_input_ranges(model: onnx.ModelProto, steps: dict[str, Preprocess]
                            ) -> dict[str, list[tuple[float, float]]]:
    """Per model input with a mean or std: the interval of each channel the model itself (after
    the preprocessing) sees, [(0 - mean) / std, (255 - mean) / std], widened by the float32
    rounding of the Sub and the Div. Reordering moves raw channels that share one range."""
    ranges = {}
    for value in graph_inputs(model):
        step = steps.get(value.name, Preprocess())
        if step.mean is None and step.std is None:
            continue
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        channels = dims[1] if len(dims) > 1 and dims[1] > 0 else max(
            len(step.mean or []), len(step.std or []), 1)
        mean = np.broadcast_to(np.asarray(step.mean or [0.0], np.float64), (channels,))
        std = np.broadcast_to(np.asarray(step.std or [1.0], np.float64), (channels,))
        ends = (np.asarray(PIXEL_RANGE)[:, None] - mean) / std
        lo, hi = ends.min(axis=0), ends.max(axis=0)
        margin = 4 * 2.0 ** -24 * (np.abs(lo) + np.abs(hi) + np.abs(mean / std)) + 1e-30
        ranges[value.name] = [(float(a), float(b)) for a, b in zip(lo - margin, hi + margin)]
    return ranges


# --- the nodes -----------------------------------------------------------------------------

def with_preprocessing(model: onnx.ModelProto, steps: dict[str, Preprocess]) -> onnx.ModelProto:
    """A copy of `model` whose inputs pass through Gather (reorder), Sub (mean), Div (std).

    The graph input keeps its name, shape and type; only what reads it changes. Steps that
    change nothing (mean 0, std 1, order 0 1 2) add no node.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    new_nodes = []
    for value in graph_inputs(result):
        ops = _preprocess_ops(value, steps.get(value.name, Preprocess()))
        if not ops:
            continue
        current = value.name
        for op_type, constant, attributes in ops:
            stem = f"{PREPROCESS_PREFIX}{value.name}_{op_type.lower()}"
            graph.initializer.append(onnx.numpy_helper.from_array(constant, f"{stem}_constant"))
            new_nodes.append(onnx.helper.make_node(op_type, [current, f"{stem}_constant"],
                                                   [f"{stem}_output"], name=stem, **attributes))
            current = f"{stem}_output"
        _rename_uses(graph, value.name, current)
    # Preprocessing first keeps the node list in topological order.
    nodes = new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return result


def _preprocess_ops(value: onnx.ValueInfoProto,
                    step: Preprocess) -> list[tuple[str, np.ndarray, dict[str, int]]]:
    """(op type, constant, attributes) for each step that changes the input, in order."""
    if step == Preprocess():
        return []
    dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    if len(dims) < 2 or not np.issubdtype(dtype, np.floating):
        raise ChannelcutError(f"mean_values, std_values and reorder_channel need a float input "
                              f"with a channel axis; input {value.name!r} is {dtype} {dims}")
    channels, ops = dims[1], []
    if step.order is not None:
        if sorted(step.order) != list(range(channels)):
            raise ChannelcutError(f"reorder_channel {' '.join(map(str, step.order))} is not an "
                                  f"order of the {channels} channels of input {value.name!r}")
        if step.order != list(range(channels)):
            ops.append(("Gather", np.array(step.order, np.int64), {"axis": 1}))
    broadcast_shape = (channels,) + (1,) * (len(dims) - 2)
    for op_type, values, neutral, what in (("Sub", step.mean, 0.0, "mean_values"),
                                           ("Div", step.std, 1.0, "std_values")):
        if values is None:
            continue
        if len(values) not in (1, channels):
            raise ChannelcutError(f"{what} has {len(values)} values for input {value.name!r}, "
                                  f"which has {channels} channels; give one per channel")
        constant = np.broadcast_to(np.asarray(values, dtype), (channels,)).reshape(broadcast_shape)
        if np.any(constant != neutral):
            ops.append((op_type, np.ascontiguousarray(constant), {}))
    return ops


def preprocessed(model: onnx.ModelProto, steps: dict[str, Preprocess],
                 feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feeds as the model's own inputs see them: each raw input through the same reorder,
    mean and std that `with_preprocessing` puts in front of it, computed in numpy."""
    values = {v.name: v for v in graph_inputs(model)}
    result = {}
    for name, array in feeds.items():
        step = steps.get(name)
        ops = _preprocess_ops(values[name], step) if step is not None else []
        for op_type, constant, attributes in ops:
            if op_type == "Gather":
                array = np.take(array, constant, axis=attributes["axis"])
            elif op_type == "Sub":
                array = array - constant
            else:
                array = array / constant
        result[name] = np.ascontiguousarray(array, dtype=feeds[name].dtype)
    return result


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every node that reads `old` (subgraphs included) read `new`."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                _rename_uses(subgraph, old, new)


def has_preprocessing(model: onnx.ModelProto) -> bool:
    """Whether the model's inputs pass through nodes `with_preprocessing` added."""
    return any(node.name.startswith(PREPROCESS_PREFIX) for node in model.graph.node)
