"""The rewrite: delete the channels the analysis marked removable, slicing every constant and
attribute that indexes them. It consumes the analysis' facts and never re-derives them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from channelcut.solve import Analysis
from channelcut.channels import ChannelInfo
from channelcut.graph import (attr_int, cached_const, cast_source, input_at, release_pages,
                             static_shape, tensor_bytes)

log = logging.getLogger(__name__)


@dataclass
class SizeChange:
    """Bytes of one constant before and after (a copy made for one node starts at its source)."""

    src_size: int
    pruned_size: int
    node: str = ""  # the node the constant belongs to (its reader, or the one it was added for)
    role: str = ""  # what it is to that node (see ROLES)


# What each constant the rewrite adds is for, by the suffix of its name (README explains them).
ROLES = {
    "_ones_shape": "ones shape",  # shape of the plane of ones a border fold convolves
    "_plane": "plane",  # the input's own constant map, when it is not all ones
    "_border": "border",  # W[:, folded channels] * their values, as a conv kernel
    "_folded": "folded",  # a MatMul's folded constant channels, added after it
    "_pads": "pads",  # Pad widths that make room for the channels put back
    "_order": "order",  # Gather indices that move every channel back into place
    "_constants": "values",  # the values of the channels put back
    "_shape": "shape",  # the shape an Expand gives them (ort-cpu: a block after the kept ones)
}


def role_of(name: str) -> str:
    """The role of an added constant, from its name; "" for any other."""
    stem = name.rstrip("0123456789").rstrip("_") if name[-1:].isdigit() else name
    return next((role for suffix, role in ROLES.items() if stem.endswith(suffix)), "")


@dataclass
class Rewritten:
    """What `apply_cut` did: the size change of each constant, and the readers of constants
    that the cut made larger in total (a constant read by several nodes that each cut it
    differently needs one copy per reader), by position in the graph, with why."""

    changes: dict[str, SizeChange]
    grown_readers: dict[int, str]


class Rewrite:
    """What op rules use to slice their node's constants and attributes.

    Shapes read through `shape()` are those the analysis saw: value shapes are only updated
    after every rule has run.
    """

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.model = analysis.model
        self.graph = analysis.model.graph
        self.changes: dict[str, SizeChange] = {}
        self._consts = analysis.consts  # shared: large weights are converted only once
        # tensor and node names alike: a node added here must not take the name of one a
        # previous cut added (ONNX Runtime refuses two nodes of one name)
        self._names = {v.name for v in self.graph.initializers.values()}
        for node in self.graph:
            self._names.update(v.name for v in node.outputs if v.name)
            if node.name:
                self._names.add(node.name)
        self._names.update(v.name for v in self.graph.inputs if v.name)
        self._suffixes: dict[str, int] = {}
        # shared constant -> its bytes and the (node, input index) slots that read it
        self.shared: dict[ir.Value, tuple[int, list[tuple[ir.Node, int]]]] = {}
        self.created: set[str] = set()  # names of the constants the cut made
        self.node: ir.Node | None = None  # the node whose rule is running

    def _owner(self, node: ir.Node | None) -> str:
        node = node or self.node
        return "" if node is None else node.name or node.op_type

    def info(self, value: ir.Value | None) -> ChannelInfo | None:
        return None if value is None else self.analysis.infos.get(value)

    def deleted(self, value: ir.Value | None) -> np.ndarray:
        """Sorted positions along `value`'s channel axis that go."""
        return self.analysis.deleted_positions(value)

    def shape(self, value: ir.Value | None) -> tuple[int, ...] | None:
        return static_shape(value)

    def const(self, value: ir.Value | None) -> np.ndarray | None:
        return cached_const(self._consts, value)

    def set_const(self, node: ir.Node, index: int, array: np.ndarray) -> None:
        """Give input `index` of `node` this constant value.

        A constant only this node reads is replaced in place (keeping its name); a shared one
        gets a copy for this node, so other readers see the original.
        """
        value = input_at(node, index)
        source = cast_source(value)
        if source is not None:
            self._set_cast_const(node, index, value, source, array)
            return
        if value is not None and value.const_value is not None:
            array = np.ascontiguousarray(array, dtype=value.const_value.dtype.numpy())
        else:
            array = np.ascontiguousarray(array)
        if value is None:
            new = self._new_initializer(f"{node.name or node.op_type}_input{index}", array)
            if index >= len(node.inputs):
                node.resize_inputs(index + 1)
            node.replace_input_with(index, new)
            self.changes[new.name] = SizeChange(0, array.nbytes, self._owner(node),
                                                input_role(node, index))
            return
        before = tensor_bytes(value)
        if len(value.uses()) > 1 or value.is_graph_output():
            self.shared.setdefault(value, (before, [(u.node, u.idx) for u in value.uses()]))
            new = self._new_initializer(f"{value.name}_cut", array)
            node.replace_input_with(index, new)
            self._consts[new] = array
            self.changes[new.name] = SizeChange(before, array.nbytes, self._owner(node),
                                                input_role(node, index))
            return
        value.const_value = ir.Tensor(array, name=value.name)
        value.shape = ir.Shape(array.shape)
        self._consts[value] = array
        previous = self.changes.get(value.name)
        self.changes[value.name] = SizeChange(previous.src_size if previous else before,
                                              array.nbytes, self._owner(node),
                                              input_role(node, index))

    def _set_cast_const(self, node: ir.Node, index: int, value: ir.Value, source: ir.Value,
                        array: np.ndarray) -> None:
        """`set_const` for a weight stored in another type and Cast at run time: the stored
        one is sliced and keeps its type (a Cast other nodes read too gets a copy for this
        node). Values its type cannot hold exactly (a bias with constants folded in) are
        given to the node in its own type instead."""
        role = input_role(node, index)
        stored = array.astype(source.const_value.dtype.numpy())
        if not np.array_equal(stored.astype(array.dtype), array, equal_nan=True):
            new = self._new_initializer(f"{source.name}_cut", np.ascontiguousarray(array))
            node.replace_input_with(index, new)
            self._consts[new] = array
            self.changes[new.name] = SizeChange(0, array.nbytes, self._owner(node), role)
            return
        cast = value.producer()
        if len(value.uses()) > 1 or value.is_graph_output():
            copy = self.add_node(node, "Cast", [source], {"to": attr_int(cast, "to", 0)})
            copy.type = value.type
            node.replace_input_with(index, copy)
            cast, value = copy.producer(), copy
        self.set_const(cast, 0, stored)
        value.shape = ir.Shape(array.shape)
        self._consts[value] = array
        change = self.changes[cast.inputs[0].name]  # the stored weight belongs to the reader
        change.node, change.role = self._owner(node), role

    def new_const(self, stem: str, array: np.ndarray) -> ir.Value:
        """A new constant; counted in the report as a constant that grew from nothing."""
        value = self._new_initializer(stem, np.ascontiguousarray(array))
        self._consts[value] = array
        self.changes[value.name] = SizeChange(0, array.nbytes, self._owner(None),
                                              role_of(value.name))
        return value

    def add_node(self, before: ir.Node, op_type: str, inputs: list[ir.Value],
                 attributes: dict[str, object] | None = None) -> ir.Value:
        """A new node placed before `before`; returns its output."""
        name = self._unique(f"{before.name or before.op_type}_{op_type.lower()}")
        node = ir.Node("", op_type, inputs, attributes=_attrs(attributes or {}), name=name)
        node.outputs[0].name = self._unique(name)
        self.graph.insert_before(before, node)
        return node.outputs[0]

    def append_after(self, value: ir.Value, op_type: str, inputs: list[ir.Value],
                     attributes: dict[str, object] | None = None) -> ir.Value:
        """Make `value` become op(value, *inputs) for every reader (graph output included).

        The new output takes over `value`'s name and channel facts, so later rules and the
        channel map see it as the same tensor; the old one is renamed.
        """
        producer = value.producer()
        uses = list(value.uses())
        name = value.name
        value.name = self._unique(f"{name}_raw")
        node = ir.Node("", op_type, [value, *inputs], attributes=_attrs(attributes or {}),
                       name=self._unique(f"{name}_{op_type}"))
        self.graph.insert_after(producer, node)
        new = node.outputs[0]
        for use in uses:
            use.node.replace_input_with(use.idx, new)
        new.shape, new.type = value.shape, value.type  # rules read analysis-time shapes
        outputs = self.graph.outputs
        for i, out in enumerate(outputs):
            if out is value:
                outputs[i] = new
                new.meta.update(value.meta)
        new.name = name
        if value in self.analysis.infos:
            self.analysis.infos[new] = self.analysis.infos[value]
        return new

    def _unique(self, stem: str) -> str:
        """`stem`, or `stem_<k>` with the first k not taken (counting on from the last)."""
        name, k = stem, self._suffixes.get(stem, 1)
        while name in self._names:
            name, k = f"{stem}_{k}", k + 1
        self._suffixes[stem] = k
        self._names.add(name)
        return name

    def set_attr_int(self, node: ir.Node, name: str, value: int) -> None:
        node.attributes[name] = ir.AttrInt64(name, int(value))

    def set_attr_ints(self, node: ir.Node, name: str, values: list[int]) -> None:
        node.attributes[name] = ir.AttrInt64s(name, [int(v) for v in values])

    def _new_initializer(self, stem: str, array: np.ndarray) -> ir.Value:
        name = self._unique(stem)
        self.created.add(name)
        value = ir.Value(name=name, shape=ir.Shape(array.shape),
                         type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         const_value=ir.Tensor(array, name=name))
        self.graph.register_initializer(value)
        return value


def _attrs(attributes: dict[str, object]) -> list[ir.Attr]:
    """onnx-ir attributes from plain Python values (ints, floats, int lists, tensors)."""
    made: list[ir.Attr] = []
    for name, value in attributes.items():
        if isinstance(value, ir.Attr):
            made.append(ir.Attr(name, value.type, value.value))
        elif isinstance(value, bool | int | np.integer):
            made.append(ir.AttrInt64(name, int(value)))
        elif isinstance(value, float):
            made.append(ir.AttrFloat32(name, value))
        elif isinstance(value, str):
            made.append(ir.AttrString(name, value))
        elif isinstance(value, np.ndarray):
            made.append(ir.AttrTensor(name, ir.tensor(value)))
        else:
            made.append(ir.AttrInt64s(name, [int(v) for v in value]))
    return made


# Names of the constant inputs of common ops, by position; others are "input <k>".
_INPUT_ROLES = {
    "Conv": ("data", "weight", "bias"), "ConvTranspose": ("data", "weight", "bias"),
    "Gemm": ("A", "B (weight)", "C (bias)"), "MatMul": ("A", "B (weight)"),
    "BatchNormalization": ("data", "scale", "B (shift)", "mean", "var"),
    "InstanceNormalization": ("data", "scale", "B (shift)"),
    "PRelu": ("data", "slope"),
}


def input_role(node: ir.Node, index: int) -> str:
    """What input `index` is to `node` ("weight", "bias", "Reshape input 1", ...)."""
    names = _INPUT_ROLES.get(node.op_type, ())
    return names[index] if index < len(names) else f"{node.op_type} input {index}"


def kept_mask(size: int, deleted: np.ndarray) -> np.ndarray:
    """Per position 0..size-1: is it kept (not among `deleted`)?"""
    keep = np.ones(size, dtype=bool)
    keep[deleted] = False
    return keep


def delete_positions(array: np.ndarray, deletions: dict[int, np.ndarray]) -> np.ndarray:
    """`array` without the given indices along each axis (one `take` per axis that loses some)."""
    for axis, deleted in deletions.items():
        if deleted.size:
            array = np.compress(kept_mask(array.shape[axis], deleted), array, axis=axis)
    return array


def _touches_cut(node: ir.Node, analysis: Analysis) -> bool:
    """Does the cut delete channels the node reads or writes, or rows it no longer computes
    (put back as constants: a conv's output may keep every channel and still change)?"""
    return any(v is not None and analysis.deleted_positions(v).size
               for v in [*node.inputs, *node.outputs]) or \
        any(v is not None and analysis.computed_without(v).size for v in node.outputs)


def apply_cut(analysis: Analysis) -> Rewritten:
    """Delete every removable channel in place, then share equal constants and drop unused
    ones; returns the size change of each constant and the readers of those that grew."""
    from channelcut.ops import RULES

    rw = Rewrite(analysis)
    graph = analysis.model.graph
    position = {node: index for index, node in enumerate(graph)}
    for node, op_type in [(node, node.op_type) for node in graph]:
        if node.op_type != op_type:
            continue  # rewritten by another node's rule (a shuffle's last Reshape: a Gather)
        rule = RULES.get(op_type) if node.domain in ("", "ai.onnx") else None
        if rule is not None and rule.rewrite is not None and _touches_cut(node, analysis):
            rw.node = node
            read = list(node.inputs)
            rule.rewrite(node, rw)
            release_pages(read)  # what it sliced is copied; the rest stays on disk
    share_equal_constants(graph, rw.changes, rw.created)
    remove_unused_constants(graph, rw.changes, rw.created)
    return Rewritten(rw.changes, _grown_readers(rw.shared, position))


def share_equal_constants(graph: ir.Graph, changes: dict[str, SizeChange],
                          created: set[str]) -> None:
    """Readers of constants with equal type, shape and bytes read the first of them (the
    copies one shared constant got for readers cut alike, the equal biases an exporter had
    shared); the others go. Graph inputs and outputs stay as they are."""
    # Candidates by type, shape and a sample of their elements, so that a weight no other
    # resembles is neither copied nor read whole (a multi-GB model's weights stay on disk).
    first: dict[tuple[object, tuple[int, ...], bytes], list[ir.Value]] = {}
    for value in list(graph.initializers.values()):
        tensor = value.const_value
        if tensor is None or tensor.dtype == ir.DataType.STRING or value.is_graph_input() or \
                value.is_graph_output():
            continue
        array = tensor.numpy()  # (not ascontiguousarray: it makes a scalar 1-d)
        flat = array.reshape(-1)
        sample = flat[::max(1, flat.size // SAMPLED_ELEMENTS)][:SAMPLED_ELEMENTS].tobytes()
        candidates = first.setdefault((tensor.dtype, tuple(array.shape), sample), [])
        kept = next((c for c in candidates if _same_bytes(c.const_value.numpy(), array)), None)
        if kept is None:
            candidates.append(value)
            continue
        value.replace_all_uses_with(kept)
        _forget(graph, value, changes, created)


# Elements of a constant that `share_equal_constants` compares before comparing it whole.
SAMPLED_ELEMENTS = 64


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shape and equal bytes (so 0.0 and -0.0 differ) and equal as numbers (so NaN
    never equals NaN: a constant holding one is not shared)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    bytes_a = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    bytes_b = np.ascontiguousarray(b).reshape(-1).view(np.uint8)
    return bool(np.array_equal(bytes_a, bytes_b)) and bool(np.array_equal(a, b))


def remove_unused_constants(graph: ir.Graph, changes: dict[str, SizeChange],
                            created: set[str]) -> None:
    """Drop the constants nothing reads any more (every reader got its own sliced copy), and
    the Casts of stored weights nothing reads (their reader got the values in its own type)."""
    for node in list(graph):
        out = node.outputs[0] if node.outputs else None
        if out is not None and cast_source(out) is not None and not out.uses() and \
                not out.is_graph_output():
            graph.remove(node, safe=True)
    for value in list(graph.initializers.values()):
        if value.const_value is not None and not value.uses() and \
                not value.is_graph_input() and not value.is_graph_output():
            _forget(graph, value, changes, created)


def _forget(graph: ir.Graph, value: ir.Value, changes: dict[str, SizeChange],
            created: set[str]) -> None:
    """Remove an unread constant: the report shows one of the original's going to nothing,
    and no longer lists one the cut had made."""
    name = value.name or ""
    previous = changes.pop(name, None)
    if name not in created:
        changes[name] = SizeChange(previous.src_size if previous else tensor_bytes(value), 0,
                                   previous.node if previous else "",
                                   previous.role if previous else "")
    graph.initializers.pop(name)


def _grown_readers(shared: dict[ir.Value, tuple[int, list[tuple[ir.Node, int]]]],
                   position: dict[ir.Node, int]) -> dict[int, str]:
    """The readers of each shared constant whose copies now take more bytes than it did."""
    grown: dict[int, str] = {}
    for value, (before, slots) in shared.items():
        now = {id(node.inputs[i]): node.inputs[i] for node, i in slots
               if i < len(node.inputs) and node.inputs[i] is not None}
        after = sum(tensor_bytes(v) for v in now.values() if v.const_value is not None)
        if after > before:
            reason = (f"reads constant {value.name!r} with other nodes that cut it differently "
                      f"(a copy each would grow the weights)")
            grown.update({position[node]: reason for node, _ in slots if node in position})
    return grown
