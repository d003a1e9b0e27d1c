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
import math

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from channelcut.graph import const_array, opset_version, static_shape

log = logging.getLogger(__name__)

NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform",
                              "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"})
# Only values an op with a channel rule reads are stored in the model, and only small integers
# (size arithmetic, index lists: what Slice, Reshape and Pad read) or results no larger than
# the constants they come from (a transposed weight). A float mask built from a shape stays
# computed, and so does all that only feeds it; the Shape nodes it reads become constants.
SMALL_RESULT = 1024
# ONNX Runtime's inference build does not compute these as the ONNX spec (and so the reference
# evaluator) does: a training-mode BatchNormalization there neither uses the batch statistics
# nor agrees with ORT's own constant folding. Folded, the cut model would compute something
# else than the original does in the runtime; kept computed, their readers keep their channels.
def _runtime_differs(node: ir.Node) -> bool:
    return node.op_type == "BatchNormalization" and bool(
        (attr := node.attributes.get("training_mode")) is not None and attr.value)


# Ops that read a tensor's shape: exporters compute sizes with them at run time.
SHAPE_OPS = ("Shape", "Size")


def has_foldable(graph: ir.Graph) -> bool:
    """Is there anything to fold: a node that reads a shape, or one that computes only from
    constants (pads built by ConstantOfShape -> Concat -> Reshape -> Cast, or a conv's weights
    standardised at run time)?"""
    return any(node.op_type in SHAPE_OPS or (
        node.inputs and node.domain in ("", "ai.onnx") and
        node.op_type not in NONDETERMINISTIC and
        all(value is None or _is_constant(value) for value in node.inputs))
        for node in graph)


def _is_constant(value: ir.Value) -> bool:
    """`const_array(value) is not None` without converting the tensor (weights are large)."""
    return value.const_value is not None and not value.is_graph_input()


def fold_constants(model: ir.Model) -> int:
    """Replace the values computable from constants and static shapes that a channel rule
    reads by initializers, and delete the nodes that computed only them.

    One sweep in topological order computes every such value (a computed value makes its
    readers computable, and a node whose output shapes only a computed value could tell, a
    Pad with computed amounts, has them inferred there, so the Shape nodes after it fold in
    the same sweep). Returns how many nodes were folded.
    """
    graph = model.graph
    opset = opset_version(model)
    computed: dict[ir.Value, np.ndarray] = {}
    for node in graph:
        results = _evaluate(node, opset, computed)
        if results is None:
            _infer_shapes(node, opset, computed)
        else:
            computed.update(zip(node.outputs, results))
    constants: dict[tuple, ir.Value] = {}  # equal values share one initializer
    for value, array in computed.items():
        if _store(value, array, computed):
            _replace(graph, value, array, constants)
    folded = _remove_unread(graph, computed)
    # A Shape node still there (its result feeds a mask) would read its tensor: a barrier to
    # the tensor's channels. Its result is a few integers; store it.
    for node in list(graph):
        if node.op_type in SHAPE_OPS and node.outputs[0] in computed:
            _replace(graph, node.outputs[0], computed[node.outputs[0]], constants)
    folded += _remove_unread(graph, computed)
    if folded:
        log.info("folded %d nodes that compute constants", folded)
    return folded


def _replace(graph: ir.Graph, value: ir.Value, array: np.ndarray,
             constants: dict[tuple, ir.Value]) -> None:
    """Every reader of `value` reads an initializer holding `array` (shared when equal)."""
    key = (array.dtype.str, array.shape, array.tobytes())
    if key not in constants:
        name = value.name or f"{value.producer().name}_folded"
        constants[key] = ir.Value(name=name, shape=ir.Shape(array.shape),
                                  type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                                  const_value=ir.Tensor(array, name=name))
        graph.register_initializer(constants[key])
    value.replace_all_uses_with(constants[key])
    value.name = None


def _remove_unread(graph: ir.Graph, computed: dict[ir.Value, np.ndarray]) -> int:
    """Delete the computing nodes whose results nothing reads any more."""
    removed = 0
    for node in reversed(list(graph)):  # readers first: a chain goes in one pass
        if node.outputs and all(v in computed and not v.uses() for v in node.outputs):
            graph.remove(node, safe=True)
            removed += 1
    return removed


def _store(value: ir.Value, array: np.ndarray, computed: dict[ir.Value, np.ndarray]) -> bool:
    """Worth an initializer: a node that is not folded, and has a channel rule, reads it; and
    it is a small integer array or no larger than the constants it is computed from."""
    from channelcut.ops import RULES  # the rule modules import the analysis, which needs us

    readers = [use.node for use in value.uses() if not all(v in computed for v in use.node.outputs)]
    if not any(node.op_type in RULES for node in readers):
        return False
    if array.dtype.kind in "iub" and array.size <= SMALL_RESULT:
        return True
    return array.nbytes <= _source_bytes(value, computed, array.dtype.kind)


def _source_bytes(value: ir.Value, computed: dict[ir.Value, np.ndarray], kind: str) -> int:
    """Bytes of the initializers of this dtype kind ("f": floats) that `value` is computed
    from and that go with the fold, each counted once: a float table gathered by integer
    indices pays only with floats, and a weight another node reads as it is stays (a conv's
    weights also read through a Mul)."""
    seen: set[ir.Value] = set()
    stack, total = [value], 0
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        producer = current.producer()
        if producer is None or current not in computed:
            constant = current.const_value
            if constant is not None and constant.dtype.numpy().kind == kind and \
                    all(all(v in computed for v in use.node.outputs) for use in current.uses()):
                total += constant.nbytes
            continue
        stack.extend(v for v in producer.inputs if v is not None)
    return total


def _evaluate(node: ir.Node, opset: int, computed: dict[ir.Value, np.ndarray]
              ) -> list[np.ndarray] | None:
    """The node's output values when the constants and shapes it reads determine them."""
    if node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC or \
            any(attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
                for attr in node.attributes.values()) or \
            any(value.is_graph_output() for value in node.outputs) or _runtime_differs(node):
        return None
    if node.op_type in SHAPE_OPS:
        shape = _shape(node.inputs[0], computed)
        return None if shape is None else [_shape_result(node, shape)]
    if any(value is not None and value not in computed and not _is_constant(value)
           for value in node.inputs):
        return None  # before converting the constants it reads: a conv's weights are large
    inputs = [None if value is None else _value(value, computed) for value in node.inputs]
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
    # a large result only when its inputs were as large (a transposed weight): a mask built
    # from a shape stays computed at run time, and so does all that reads it
    source_bytes = sum(a.nbytes for a in inputs if a is not None)
    if any(r.size > SMALL_RESULT and r.nbytes > source_bytes for r in results):
        return None
    return results


def _value(value: ir.Value, computed: dict[ir.Value, np.ndarray]) -> np.ndarray | None:
    return computed[value] if value in computed else const_array(value)


def _shape(value: ir.Value, computed: dict[ir.Value, np.ndarray]) -> tuple[int, ...] | None:
    return computed[value].shape if value in computed else static_shape(value)


def _shape_result(node: ir.Node, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(math.prod(shape), np.int64)
    start = node.attributes.get("start")
    end = node.attributes.get("end")
    dims = np.array(shape, np.int64)
    return dims[slice(None if start is None else start.as_int(),
                      None if end is None else end.as_int())]



def _infer_shapes(node: ir.Node, opset: int, computed: dict[ir.Value, np.ndarray]) -> None:
    """Give the node's outputs the static shapes its inputs now determine, where missing."""
    if all(static_shape(value) is not None for value in node.outputs) or \
            node.domain not in ("", "ai.onnx") or \
            any(value is not None and _shape(value, computed) is None for value in node.inputs):
        return
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        proto = ir.serde.serialize_node(node)
        types = {value.name: onnx.helper.make_tensor_type_proto(value.dtype.value,
                                                                _shape(value, computed))
                 for value in node.inputs if value is not None}
        data = {value.name: onnx.numpy_helper.from_array(array, value.name)
                for value in node.inputs
                if value is not None and (array := _value(value, computed)) is not None
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
