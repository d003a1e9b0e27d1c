"""Refuse, at load, a model that is not valid ONNX: one ChannelcutError line that says where the
problem is and what to do, instead of a traceback or a "bug in channelcut" later on.

The structure is checked by ONNX's own checker (SSA form, topological order, unique
initializer names, IR version and opset, node specs), run on a copy without the large tensor
data so it costs no second copy of the weights; the checks it leaves out (text that is not
UTF-8, negative dims, tensor data shorter than its shape) are made here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import onnx

from channelcut.errors import ChannelcutError

# Tensors with at least this many bytes of raw data go to the checker as empty placeholders;
# their size is checked here instead.
PLACEHOLDER_MIN_BYTES = 1024
FIX = "fix or re-export the model (onnx.checker.check_model(model) shows the same)"


def check_model(model: onnx.ModelProto, where: str) -> None:
    """Raise ChannelcutError when `model` (read from `where`) is not a valid ONNX model."""
    if not model.HasField("graph") or not model.opset_import or model.ir_version <= 0:
        raise ChannelcutError(
            f"{where}: not a complete ONNX model (no graph, IR version or opset); re-export it "
            "from your framework, or check that the download finished")
    _check_text(model.graph, where)
    _check_dims(model.graph, where)
    _check_producers(model.graph, where)
    light = _without_large_data(model, where)
    try:
        onnx.checker.check_model(light)
    except (onnx.checker.ValidationError, UnicodeError) as exc:
        raise ChannelcutError(f"{where}: not a valid ONNX model ({_one_line(exc)}); {FIX}") \
            from None


def _check_text(graph: onnx.GraphProto, where: str) -> None:
    """Names and op types are UTF-8 text; protobuf hands back bytes when they are not."""
    for index, node in enumerate(_nodes(graph)):
        for field, text in (("name", node.name), ("op_type", node.op_type),
                            ("domain", node.domain), *(("input", t) for t in node.input),
                            *(("output", t) for t in node.output)):
            if isinstance(text, bytes):
                raise ChannelcutError(
                    f"{where}: the {field} of node {index} is not UTF-8 text ({text!r}); "
                    "rename it, or re-export the model")
    for kind, values in (("graph input", graph.input), ("graph output", graph.output),
                         ("value_info", graph.value_info), ("initializer", graph.initializer)):
        for value in values:
            if isinstance(value.name, bytes):
                raise ChannelcutError(f"{where}: a {kind} name is not UTF-8 text "
                                      f"({value.name!r}); rename it, or re-export the model")


def _check_dims(graph: onnx.GraphProto, where: str) -> None:
    """Declared dims are sizes (>= 0) or names; ONNX's checker lets a negative one through."""
    for kind, values in (("input", graph.input), ("output", graph.output),
                         ("value_info", graph.value_info)):
        for value in values:
            if not value.type.HasField("tensor_type"):
                continue
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if dim.HasField("dim_value") and dim.dim_value < 0:
                    raise ChannelcutError(
                        f"{where}: {kind} {value.name!r} declares dim {axis} as "
                        f"{dim.dim_value}; a dim is a size or a name (dynamic): fix the "
                        "declared shape")
    for tensor in graph.initializer:
        if any(d < 0 for d in tensor.dims):
            raise ChannelcutError(f"{where}: initializer {tensor.name!r} has shape "
                                  f"{list(tensor.dims)}; fix or re-export the model")


def _check_producers(graph: onnx.GraphProto, where: str) -> None:
    """Every tensor has one producer: a node or a graph input (for both, ONNX's checker says
    "used as output names multiple times"; this line names the two)."""
    producer = {v.name: "the name of a graph input" for v in graph.input}
    for index, node in enumerate(graph.node):
        label = f"node {node.name!r}" if node.name else f"node {index} ({node.op_type})"
        for name in node.output:
            if name in producer:
                raise ChannelcutError(
                    f"{where}: {label} writes {name!r}, {producer[name]}; each tensor must "
                    "have one producer: rename this output")
            if name:
                producer[name] = f"which {label} writes too"


def _without_large_data(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """A copy of `model` for the checker: large raw tensors become empty placeholders of the
    same name and type, once their data is checked to fill their shape; graph inputs and
    outputs of unknown rank get an empty shape."""
    graph = model.graph
    light = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import,
                            functions=model.functions)
    light.graph.CopyFrom(onnx.GraphProto(
        name=graph.name, node=graph.node, input=graph.input, output=graph.output,
        value_info=graph.value_info, sparse_initializer=graph.sparse_initializer))
    for value in [*light.graph.input, *light.graph.output]:
        # The checker wants a shape on every graph input and output; ONNX Runtime and the
        # exporters do without (rank unknown), so the copy says nothing about it.
        if not value.HasField("type"):
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        if value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape"):
            value.type.tensor_type.shape.SetInParent()
    for tensor in graph.initializer:
        if _on_disk(tensor):  # a lazy load checked it (channelcut.io); the checker would not
            light.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=[0])
            continue
        size = len(tensor.raw_data) if tensor.HasField("raw_data") else 0
        needed = _raw_bytes(tensor)
        if size < PLACEHOLDER_MIN_BYTES or needed is None:
            light.graph.initializer.append(tensor)  # small, or not raw: the checker reads it
            continue
        if size != needed:
            raise ChannelcutError(
                f"{where}: initializer {tensor.name!r} holds {size} bytes, its shape "
                f"{list(tensor.dims)} needs {needed}; {FIX}")
        light.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=[0])
    return light


def _on_disk(tensor: onnx.TensorProto) -> bool:
    """Whether the tensor refers to its data by absolute path, as a lazy load leaves it."""
    return tensor.data_location == onnx.TensorProto.EXTERNAL and any(
        e.key == "location" and os.path.isabs(e.value) for e in tensor.external_data)


def _raw_bytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes of raw data the tensor's shape and type call for; None for strings and types
    packed below a byte, which the checker sizes itself."""
    if tensor.data_type == onnx.TensorProto.STRING or tensor.data_type in _SUB_BYTE_TYPES:
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    return math.prod(tensor.dims) * itemsize


_SUB_BYTE_TYPES = {getattr(onnx.TensorProto, name) for name in
                   ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
                   if hasattr(onnx.TensorProto, name)}


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """The graph's nodes, and those of its subgraphs (If, Loop, Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def _one_line(exc: BaseException) -> str:
    """The checker's message on one line (it spreads one over several, with a context)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.replace(" ==> Context: ", "; ")
