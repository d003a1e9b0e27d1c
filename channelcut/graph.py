"""Bring an ONNX model into onnx-ir with concrete shapes, and read constants and shapes from it."""

from __future__ import annotations

import logging
import math
import mmap
from collections.abc import Callable, Iterable

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from channelcut.shapes import (apply_types, clear_intermediate_shapes, infer_shapes,
                               inferred_types, ranks_from_weights)
from channelcut.symbolic_dims import record_symbolic_dims

log = logging.getLogger(__name__)


def _detach_constant_node_tensors(graph: ir.Graph) -> None:
    """Give each Constant node's tensor a proto of its own. onnx-ir reads a proto's tensors in
    place and writes a name given to one through to the proto; lifting a Constant to an
    initializer names its tensor, which would name the tensor in the caller's model (the
    input is never modified). Constant nodes hold small tensors: copying them costs little."""
    for node in graph:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        attr = node.attributes.get("value")
        if attr is not None and isinstance(attr.value, ir.serde.TensorProtoTensor):
            own = onnx.TensorProto()
            own.CopyFrom(attr.value.raw)
            node.attributes["value"] = ir.AttrTensor("value", ir.serde.TensorProtoTensor(own))


def to_ir(proto: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> ir.Model:
    """An onnx-ir copy of `proto` with every input at its concrete shape and shapes inferred.

    Constant nodes become initializers so that every constant is read the same way, and size
    arithmetic on static shapes is folded (channelcut.constfold); `meta["declared_weight_bytes"]`
    keeps the constants' size from before that fold. The declared shapes of graph inputs and
    outputs are kept in `meta["declared_shape"]` for the analysis and shape inference; the cut
    proto gets the original's declarations back (shapes.restore_boundary_types).
    """
    model = ir.from_proto(proto)
    graph = model.graph
    _detach_constant_node_tensors(graph)
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    _bypass_constant_identities(graph)
    model.meta["declared_weight_bytes"] = weight_bytes(model)  # before any fold adds some
    for value in graph.outputs:
        value.meta["declared_shape"] = value.shape
    # An input that is also an output is one onnx-ir value: it gets the input's declaration
    # (onnx-ir gives it the output's), which the analysis and the check go by.
    declared_inputs = {v.name: v.type for v in proto.graph.input}
    for value in graph.inputs:
        if value.name in declared_inputs:
            value.shape = ir.serde.deserialize_type_proto_for_shape(declared_inputs[value.name])
        value.meta["declared_shape"] = value.shape
    from channelcut.constfold import fold_constants, has_foldable  # it imports this module

    folds = has_foldable(graph)
    if folds:
        # shapes from the declared inputs: only what no dynamic dimension reaches is folded
        infer_shapes(model)
        fold_constants(model)
    if not declared_sizes_fixed(graph):  # what holds at every size (Walk.symbolic_dims)
        record_symbolic_dims(model)
    for value in graph.inputs:
        if value.name in input_shapes:
            value.shape = ir.Shape(input_shapes[value.name])
    clear_intermediate_shapes(model)
    if folds:  # the graph changed: infer on it
        infer_shapes(model)
    else:  # the same graph as the proto's: infer on the proto, faster
        apply_types(model, inferred_types(proto, input_shapes))
    if ranks_from_weights(model):  # past a custom op: ranks, and channel counts from weights
        infer_shapes(model)
    return model


def _bypass_constant_identities(graph: ir.Graph) -> None:
    """Readers of Identity(constant) read the constant itself.

    The TorchScript exporter routes weights through Identity nodes (with dynamic axes); seen
    through an Identity, a weight would look computed and its layer would become a barrier.
    """
    for node in list(graph):
        if node.op_type != "Identity" or node.domain not in ("", "ai.onnx"):
            continue
        source, out = node.inputs[0], node.outputs[0]
        if const_array(source) is None or out.is_graph_output():
            continue
        out.replace_all_uses_with(source)
        graph.remove(node, safe=True)


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The value of a constant tensor (an initializer the user cannot override), else None;
    a constant cast at run time (`cast_source`) is the cast values."""
    if value is None or value.is_graph_input():
        return None
    if value.const_value is None:
        source = cast_source(value)
        if source is None:
            return None
        to = ir.DataType(attr_int(value.producer(), "to", 0)).numpy()
        return source.const_value.numpy().astype(to)
    return value.const_value.numpy()


def cast_source(value: ir.Value | None) -> ir.Value | None:
    """The constant that `value` is a float Cast of, else None.

    Exports store weights in bfloat16 (or float16) and Cast them to the compute type where
    the runtime cannot compute in it; such a weight is a constant to its readers, and a cut
    slices the stored one (`Rewrite.set_const`), which keeps its type."""
    node = value.producer() if value is not None else None
    if node is None or node.op_type != "Cast" or node.domain not in ("", "ai.onnx"):
        return None
    source = node.inputs[0]
    if source is None or source.const_value is None or source.is_graph_input():
        return None
    to = ir.DataType(attr_int(node, "to", 0))
    return source if source.const_value.dtype.is_floating_point() and \
        to.is_floating_point() else None


def is_constant(value: ir.Value | None) -> bool:
    """`const_array(value) is not None` without converting the tensor (weights are large)."""
    return value is not None and not value.is_graph_input() and (
        value.const_value is not None or cast_source(value) is not None)


def cached_const(cache: dict[ir.Value, np.ndarray | None], value: ir.Value | None
                 ) -> np.ndarray | None:
    """`const_array(value)`, converted once per value (large weights are read several times)."""
    if value is None:
        return None
    if value not in cache:
        cache[value] = const_array(value)
    return cache[value]


def release_pages(values: Iterable[ir.Value | None]) -> None:
    """Hand the pages of these constants' memory-mapped data back to the page cache.

    A weight left on disk (channelcut.io's lazy load) is a read-only map of its file; each
    page read stays in this process until unmapped, so reading every weight once would hold
    the whole model. Arrays over the map stay valid: a page read again comes from the cache.
    """
    for value in values:
        tensor = None if value is None else value.const_value
        if isinstance(tensor, ir.ExternalTensor) and tensor.raw is not None:
            tensor.raw.madvise(mmap.MADV_DONTNEED)


# In-memory weights of at least this many bytes are moved into the proto one at a time.
MOVED_TENSOR_BYTES = 2**20


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """`ir.to_proto(model)`, with each large weight the cut made (a numpy array) copied into
    the proto on its own and then read from there, so that its array can go: the sliced
    weights of a multi-GB model are never held twice."""
    moved: dict[str, tuple[ir.Value, ir.Tensor]] = {}
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if isinstance(tensor, ir.Tensor) and tensor.nbytes >= MOVED_TENSOR_BYTES:
            moved[name] = (value, tensor)
            # a stand-in of the same type and shape, serialized as a reference to nothing
            value.const_value = ir.ExternalTensor(
                "", 0, 0, tensor.dtype, shape=tensor.shape, name=tensor.name or name,
                doc_string=tensor.doc_string, metadata_props=dict(tensor.metadata_props))
    try:
        proto = ir.to_proto(model)
    finally:
        for value, tensor in moved.values():
            value.const_value = tensor
    for initializer in proto.graph.initializer:
        if initializer.name not in moved:
            continue
        value, tensor = moved.pop(initializer.name)
        del initializer.external_data[:]
        initializer.ClearField("data_location")
        initializer.raw_data = tensor.tobytes()
        value.const_value = ir.serde.TensorProtoTensor(initializer)
        del tensor
    return proto


def static_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The shape as ints when every dimension is known, else None."""
    if value is None or value.shape is None:
        return None
    dims = value.shape.dims
    if not all(isinstance(d, int) for d in dims):
        return None
    return tuple(int(d) for d in dims)


def declared_sizes_fixed(graph: ir.Graph, first_axis: int = 0) -> bool:
    """Does every graph input declare a fixed size on each axis from `first_axis` on? (An
    input without a declared shape counts as fixed.)"""
    return all(all(isinstance(d, int) for d in list(shape.dims)[first_axis:])
               for v in graph.inputs if (shape := v.meta.get("declared_shape")) is not None)


def partial_shape(value: ir.Value | None) -> tuple[int | None, ...] | None:
    """The shape with each unknown dimension None; None when even the rank is unknown."""
    if value is None or value.shape is None:
        return None
    return tuple(int(d) if isinstance(d, int) else None for d in value.shape.dims)


def weight_bytes(model: ir.Model) -> int:
    """Bytes of every constant tensor of the graph."""
    return sum(tensor_bytes(v) for v in model.graph.initializers.values()
               if v.const_value is not None)


def tensor_bytes(value: ir.Value) -> int:
    """Size in bytes of a constant tensor's data."""
    tensor = value.const_value
    assert tensor is not None
    return math.ceil(math.prod(tensor.shape.numpy()) * tensor.dtype.itemsize)  # 4-bit: 0.5


def attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.as_int())


def attr_ints(node: ir.Node, name: str, default: list[int] | None = None) -> list[int] | None:
    attr = node.attributes.get(name)
    return default if attr is None else [int(i) for i in attr.as_ints()]


def reduction_axes(node: ir.Node, const: Callable[[ir.Value], np.ndarray | None], rank: int
                   ) -> list[int] | None:
    """The axes a Reduce* node reduces, each in [0, rank): its axes input (opset 18) or
    attribute; every axis when none are given, none ([]) with noop_with_empty_axes. None when
    the axes input is computed (`const` cannot tell it)."""
    value = input_at(node, 1)
    if value is None:
        axes = attr_ints(node, "axes")
    else:
        array = const(value)
        if array is None:
            return None
        axes = [int(a) for a in array.reshape(-1)]
    if not axes:
        return [] if attr_int(node, "noop_with_empty_axes", 0) else list(range(rank))
    return [a % rank for a in axes]


def attr_float(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return default if attr is None else float(attr.as_float())


def attr_string(node: ir.Node, name: str, default: str) -> str:
    attr = node.attributes.get(name)
    return default if attr is None else str(attr.as_string())


def padding_reaches_output(node: ir.Node, kernel: Iterable[int] | None = None) -> bool:
    """Can a Conv's or a pool's padding reach an output position? It can with non-zero
    `pads`, or SAME auto-padding over a kernel wider than 1 (`kernel`; None: any kernel)."""
    if attr_string(node, "auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        return kernel is None or any(k > 1 for k in kernel)
    return any(p != 0 for p in attr_ints(node, "pads", []) or [])


def input_at(node: ir.Node, index: int) -> ir.Value | None:
    """The node's input at `index`, or None when it is absent or omitted."""
    return node.inputs[index] if index < len(node.inputs) else None


def opset_version(model: ir.Model, domain: str = "") -> int:
    return int(model.opset_imports.get(domain, model.opset_imports.get("ai.onnx", 0)))


INT64_MAX = 2 ** 63 - 1


def slice_range(start: int, end: int, step: int, length: int) -> range:
    """The indices a Slice takes of an axis of `length`, as ONNX Runtime runs it: negative
    start and end count from the end; with a positive step both clamp to [0, length], with a
    negative one start clamps to [0, length - 1] and end to [-1, length - 1]; and an end of
    INT64_MAX with a negative step runs to the first index (the spec's end is the last one,
    which takes less: ONNX Runtime's reading, the one both models meet). `step` is not 0."""
    if step < 0 and end == INT64_MAX:
        end = -length - 1
    start, end = (v + length if v < 0 else v for v in (start, end))
    if step > 0:
        return range(min(max(start, 0), length), min(max(end, 0), length), step)
    return range(min(max(start, 0), length - 1), min(max(end, -1), length - 1), step)
