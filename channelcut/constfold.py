"""Fold the parts of a graph that only compute constants, such as size arithmetic on static
shapes.

Exporters compute sizes at run time: `torch.chunk` becomes Shape -> Gather -> Div -> Slice,
windowed attention computes its padding and masks from Shape. Where the declared input shapes
make those values static they are constants; folded, the ops that read them (Slice, Reshape,
Pad, Split) get constant arguments and their channel rules apply instead of a barrier. Only
what cannot depend on a dynamic input dimension is folded (shapes are inferred from the
declared input shapes), so the model accepts every input shape it accepted before.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from channelcut.graph import const_array, opset_version, static_shape

log = logging.getLogger(__name__)

NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform",
                              "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"})
# A folded result is stored in the model: fold small results (size arithmetic, index lists),
# or results no larger than the constants they are computed from (a transposed weight).
SMALL_RESULT = 1024


def fold_constants(model: ir.Model) -> int:
    """Replace every node computable from constants and static shapes by initializers.

    One sweep in topological order: a folded result makes its readers foldable, and a node
    whose output shapes only a folded constant could tell (a Pad with computed amounts) has
    them inferred there, so the Shape nodes after it fold in the same sweep. Returns how many
    nodes were folded.
    """
    graph = model.graph
    opset = opset_version(model)
    folded = 0
    for node in list(graph):
        results = _evaluate(node, opset)
        if results is None:
            _infer_shapes(node, opset)
            continue
        for value, array in zip(node.outputs, results):
            name = value.name or f"{node.name}_folded"
            constant = ir.Value(name=name, shape=ir.Shape(array.shape),
                                type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                                const_value=ir.tensor(array, name=name))
            value.replace_all_uses_with(constant)
            value.name = None
            graph.register_initializer(constant)
        graph.remove(node, safe=True)
        folded += 1
    if folded:
        log.info("folded %d nodes that compute constants", folded)
    return folded


def _evaluate(node: ir.Node, opset: int) -> list[np.ndarray] | None:
    """The node's output values when they are constants worth storing, else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC or \
            any(attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
                for attr in node.attributes.values()) or \
            any(value.is_graph_output() for value in node.outputs):
        return None
    if node.op_type in ("Shape", "Size"):
        shape = static_shape(node.inputs[0])
        return None if shape is None else [_shape_result(node, shape)]
    inputs = [None if value is None else const_array(value) for value in node.inputs]
    if any(array is None for value, array in zip(node.inputs, inputs) if value is not None):
        return None
    try:
        proto = ir.serde.serialize_node(node)
        results = ReferenceEvaluator(proto, opsets={"": opset}).run(
            None, {value.name: array for value, array in zip(node.inputs, inputs)
                   if value is not None})
    except Exception as exc:  # noqa: BLE001 - an op the evaluator cannot run stays as it is
        log.debug("not folding %s node %r: %s", node.op_type, node.name, exc)
        return None
    results = [np.asarray(r) for r in results]
    source_bytes = sum(a.nbytes for a in inputs if a is not None)
    if any(r.size > SMALL_RESULT and r.nbytes > source_bytes for r in results):
        return None
    return results


def _shape_result(node: ir.Node, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), np.int64)
    start = node.attributes.get("start")
    end = node.attributes.get("end")
    dims = np.array(shape, np.int64)
    return dims[slice(None if start is None else start.as_int(),
                      None if end is None else end.as_int())]



def _infer_shapes(node: ir.Node, opset: int) -> None:
    """Give the node's outputs the static shapes its inputs now determine, where missing."""
    if all(static_shape(value) is not None for value in node.outputs) or \
            node.domain not in ("", "ai.onnx") or \
            any(value is not None and static_shape(value) is None for value in node.inputs):
        return
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        proto = ir.serde.serialize_node(node)
        types = {value.name: onnx.helper.make_tensor_type_proto(
                     value.dtype.value, static_shape(value))
                 for value in node.inputs if value is not None}
        data = {value.name: onnx.numpy_helper.from_array(array, value.name)
                for value in node.inputs
                if value is not None and (array := const_array(value)) is not None
                and array.size <= SMALL_RESULT}
        inferred = onnx.shape_inference.infer_node_outputs(
            schema, proto, types, data, opset_imports=[onnx.helper.make_opsetid("", opset)])
    except Exception as exc:  # noqa: BLE001 - then the shapes stay unknown, as before
        log.debug("no shapes for %s node %r: %s", node.op_type, node.name, exc)
        return
    for value in node.outputs:
        found = inferred.get(value.name)
        if found is None or not found.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in found.tensor_type.shape.dim]
        if all(d is not None for d in dims):
            value.shape = ir.Shape(dims)
