"""Dims as they hold at every input size, for rules whose mapping must not bake in the sizes
the analysis assumed for dynamic input dims.

ONNX's shape inference from the declared inputs gives each dim an int where it is the same for
every input, else a name: the input's dim_param, carried through, or a fresh `unk__k` where ONNX
cannot tell (a Reshape's -1 of a dynamic input). `record_symbolic_dims` keeps those dims in
`value.meta["symbolic_dims"]`, after solving each Reshape's inferred entry as the input's
size over the other entries, so that `x.view(-1, C * H * W)` of a batch N is known to give
(N, C * H * W).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_ir as ir

from channelcut.shapes import infer_shapes

Dim = int | str | None
Dims = tuple[Dim, ...]
FRESH = "unk__"  # how ONNX names a dim it cannot tell
MAX_PASSES = 4  # inferences after the first, each with the Reshapes' dims solved so far


def record_symbolic_dims(model: ir.Model) -> None:
    """Keep in each value's `meta["symbolic_dims"]` its dims at every input size: ints, and
    names of dims that vary (two dims of one name are equal at every size; None: unknown).

    ONNX infers from the inputs alone: each input dim_param gets a name of the project's own
    (`in:N`; two inputs' `N` stay one dim, an unnamed dim is one dim for all its readers) so
    that no declared name can meet one ONNX makes up (`unk__0`), and the shapes inside the
    graph and those declared for its outputs are left out. After each inference, a Reshape's
    inferred entry that is solved keeps its size and every other inside shape is inferred
    again from it. Afterwards the inputs and outputs have their declared shapes back and the
    shapes inside are the inferred ones (the caller clears them)."""
    graph = model.graph
    inputs = [v for v in graph.inputs if v.shape is not None]
    declared = {v: v.shape for v in [*graph.inputs, *graph.outputs]}
    for k, value in enumerate(inputs):
        value.shape = ir.Shape([d if isinstance(d, int) else
                                f"in:{d.value}" if d.value is not None else
                                f"in:{value.name or k}:{axis}"
                                for axis, d in enumerate(value.shape.dims)])
    _clear_inside(model, keep=set())
    infer_shapes(model)
    solved: set[ir.Value] = set()  # every pass keeps the dims solved in the passes before
    for _ in range(MAX_PASSES):  # ONNX keeps a given dim and carries it on when it infers
        now = {node.outputs[0] for node in graph
               if node.op_type == "Reshape" and node.domain in ("", "ai.onnx")
               and _solve_inferred_entry(node)}
        if not now:
            break
        solved |= now
        _clear_inside(model, keep=solved)
        infer_shapes(model)
    for value in [*inputs, *(out for node in graph for out in node.outputs)]:
        if value.shape is not None:
            value.meta["symbolic_dims"] = _dims(value)
    for value, shape in declared.items():
        value.shape = shape


def _clear_inside(model: ir.Model, keep: set[ir.Value]) -> None:
    """Forget every node output's shape (graph outputs' declarations too) but `keep`'s."""
    for node in model.graph:
        for value in node.outputs:
            if value not in keep and not value.is_graph_input():
                value.shape = None


def _dims(value: ir.Value) -> Dims:
    assert value.shape is not None
    return tuple(d if isinstance(d, int) else d.value for d in value.shape.dims)


def _solve_inferred_entry(node: ir.Node) -> bool:
    """Give a Reshape's output dim that only it names (ONNX's fresh name for an inferred -1)
    its size: the input's size over the output's other dims, when that is an int or one of
    the input's names. Whether it did."""
    source, out = node.inputs[0], node.outputs[0]
    if source is None or source.shape is None or out.shape is None:
        return False
    in_dims, out_dims = _dims(source), _dims(out)
    fresh = [k for k, d in enumerate(out_dims)
             if isinstance(d, str) and d.startswith(FRESH) and d not in in_dims]
    if len(fresh) != 1 or None in in_dims or None in out_dims:
        return False
    value = _quotient(in_dims, [d for k, d in enumerate(out_dims) if k != fresh[0]])
    if value is None:
        return False
    out.shape = ir.Shape([value if k == fresh[0] else d for k, d in enumerate(out_dims)])
    return True


def _quotient(numerator: Dims, denominator: list[Dim]) -> Dim:
    """prod(numerator) / prod(denominator) when it is an int or a single name, else None."""
    top = Counter(d for d in numerator if isinstance(d, str))
    bottom = Counter(d for d in denominator if isinstance(d, str))
    if bottom - top:
        return None
    names = top - bottom
    number = int(np.prod([d for d in numerator if isinstance(d, int)], dtype=np.int64))
    divisor = int(np.prod([d for d in denominator if isinstance(d, int)], dtype=np.int64))
    if divisor == 0 or number % divisor:
        return None
    if not names:
        return number // divisor
    if number == divisor and sum(names.values()) == 1:
        return next(iter(names))
    return None
