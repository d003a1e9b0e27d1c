"""ONNX shape inference for the analysis and for the cut model, without copying weights.

onnx's inference runs in C++ on a ModelProto. The model is handed over without its large
constants (they become typed graph inputs; small ones, such as Reshape shapes, stay for data
propagation), and only the inferred types are read back, by value name. `inferred_types` does
this for a proto (the user's model, or the cut model once serialized), `infer_shapes` for an
onnx-ir model. A failure of ONNX's inference is one warning line: what ONNX found wrong, and
that the channels around shapes it could not infer are kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from functools import partial

import onnx
import onnx_ir as ir
# onnx-ir's own helper for calling onnx's C API without the large constants
from onnx_ir.passes.common._c_api_utils import call_onnx_api

from channelcut.io import error_line

log = logging.getLogger(__name__)

Types = dict[str, onnx.TypeProto]
SMALL_CONSTANT_BYTES = 1024  # constants up to this size stay: inference reads their values

_infer = partial(onnx.shape_inference.infer_shapes, check_type=True, strict_mode=False,
                 data_prop=True)


def inferred_types(proto: onnx.ModelProto,
                   input_shapes: Mapping[str, Sequence[int]] | None = None) -> Types:
    """The type and shape ONNX infers for every value of `proto`, by name; `input_shapes`
    replaces the shapes of those graph inputs. The proto is not modified."""
    light = onnx.ModelProto(ir_version=proto.ir_version, opset_import=proto.opset_import,
                            functions=proto.functions)
    graph = light.graph
    graph.node.extend(proto.graph.node)
    for value in proto.graph.input:
        typed = graph.input.add()
        typed.CopyFrom(value)
        if input_shapes and value.name in input_shapes:
            typed.type.tensor_type.ClearField("shape")
            for dim in input_shapes[value.name]:
                typed.type.tensor_type.shape.dim.add().dim_value = int(dim)
    # An output that is an input is declared as the input: ONNX would merge the output's
    # declaration (a dynamic batch, say) into the input's type and infer everything from it.
    typed_inputs = {value.name: value for value in graph.input}
    graph.output.extend(typed_inputs.get(value.name, value) for value in proto.graph.output)
    listed = {value.name for value in proto.graph.input}
    for tensor in proto.graph.initializer:
        if _tensor_bytes(tensor) <= SMALL_CONSTANT_BYTES:
            graph.initializer.append(tensor)
        elif tensor.name not in listed:
            graph.input.append(onnx.helper.make_tensor_value_info(
                tensor.name, tensor.data_type, list(tensor.dims)))
    try:
        inferred = _infer(light)
    except Exception as error:  # noqa: BLE001 - onnx raises several types; the run goes on
        _warn(error)
        return {}
    return _types_of(inferred)


def infer_shapes(model: ir.Model) -> None:
    """ONNX shape inference over an onnx-ir model, in place (large constants left out of the
    call by onnx-ir's helper)."""
    try:
        inferred = call_onnx_api(_infer, model)
    except Exception as error:  # noqa: BLE001
        _warn(error)
        return
    apply_types(model, _types_of(inferred))


def ranks_from_weights(model: ir.Model) -> bool:
    """Give each Conv or ConvTranspose input that ONNX left without a shape (it comes from a
    custom op) the rank and type of the weights, as ONNX requires of it, with every dim
    unknown: inference then goes on past the op it could not infer, and the channel axis of
    what follows is known. Returns whether any input got one."""
    seeded = False
    for node in model.graph:
        if node.op_type not in ("Conv", "ConvTranspose") or node.domain not in ("", "ai.onnx") \
                or len(node.inputs) < 2:
            continue
        x, w = node.inputs[0], node.inputs[1]
        if x is not None and x.shape is None and x.producer() is not None and \
                w is not None and w.shape is not None and w.type is not None:
            x.shape = ir.Shape([None] * len(w.shape))
            x.type = x.type or w.type
            seeded = True
    return seeded


def _types_of(inferred: onnx.ModelProto) -> Types:
    """The tensor types ONNX's inference wrote into a model, by value name."""
    return {info.name: info.type for info in [*inferred.graph.value_info, *inferred.graph.output]
            if info.type.HasField("tensor_type")}


def apply_types(model: ir.Model, types: Types) -> None:
    """Give the model's values these inferred types and shapes, by name; graph inputs keep
    theirs (they are given, not inferred: an input that is also an output would otherwise take
    the output's declaration)."""
    values = ir.convenience.create_value_mapping(model.graph)
    for name, type_proto in types.items():
        value = values.get(name)
        if value is None or value.is_graph_input():
            continue
        shape = ir.serde.deserialize_type_proto_for_shape(type_proto)
        if shape is not None:
            value.shape = shape
        value.type = ir.serde.deserialize_type_proto_for_type(type_proto)


def set_value_info(proto: onnx.ModelProto, types: Types) -> None:
    """The proto's value_info: one entry per intermediate value with an inferred shape (an
    entry with a type but no shape fails `onnx.checker` with full_check)."""
    boundary = {v.name for v in [*proto.graph.input, *proto.graph.output,
                                 *proto.graph.initializer]}
    del proto.graph.value_info[:]
    for node in proto.graph.node:
        for name in node.output:
            type_proto = types.get(name)
            if name and name not in boundary and type_proto is not None and \
                    type_proto.tensor_type.HasField("shape"):
                proto.graph.value_info.add(name=name).type.CopyFrom(type_proto)


def clear_intermediate_shapes(model: ir.Model) -> None:
    """Forget the shapes inside the graph (they changed); inputs and outputs keep theirs."""
    boundary = set(model.graph.inputs) | set(model.graph.outputs)
    for node in model.graph:
        for value in node.outputs:
            if value not in boundary:
                value.shape = None


def inputs_as_declared(model: ir.Model) -> bool:
    """Does every graph input have the shape the user's model declared (no dynamic dimension
    made concrete)?"""
    return all(value.shape is not None and "declared_shape" in value.meta and
               value.meta["declared_shape"] is not None and
               tuple(value.shape.dims) == tuple(value.meta["declared_shape"].dims)
               for value in model.graph.inputs)


def restore_boundary_shapes(model: ir.Model) -> None:
    """Put back the input and output shapes the user's model declared (symbolic dims included)."""
    for value in [*model.graph.inputs, *model.graph.outputs]:
        if "declared_shape" in value.meta:
            value.shape = value.meta["declared_shape"]


def restore_boundary_types(proto: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Give every graph input and output of `proto` the declaration (type, dims, dim_params)
    the original gives it, by name: a tensor that is both input and output may be declared
    differently in each list, which one onnx-ir value cannot carry."""
    for now, declared in ((proto.graph.input, original.graph.input),
                          (proto.graph.output, original.graph.output)):
        names = [v.name for v in now]
        if names == [v.name for v in declared]:
            pairs = zip(now, declared)  # by position: a name may be listed twice
        else:
            by_name = {v.name: v for v in declared}
            pairs = ((v, by_name[v.name]) for v in now if v.name in by_name)
        for value, original_value in pairs:
            value.CopyFrom(original_value)


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    """From the dims (reading raw_data would copy it)."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 8
    return math.prod(tensor.dims) * itemsize


def _warn(error: BaseException) -> None:
    log.warning("ONNX shape inference failed (%s); shapes it could not infer stay unknown "
                "and the channels around them are kept", error_line(error))
