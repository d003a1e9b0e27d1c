"""Shape of a tensor with channels: it reads no value, only the dims, and a cut changes the
entries at the channel axes alone.

`x.view(x.size(0), -1)` exports as `Reshape(x, Concat(Gather(Shape(x), 0), [-1]))`: the
batch is read, the channel count is not, so the channels stay free (the Reshape's own rule
decides whether its computed target keeps the layout, `heads.computed_target_fixed`). The
channel count itself may go into the `sizes` of a Resize of a tensor with the same channel
dim (`F.interpolate(x, size=...)`), which then gets the cut count its input has. Where a
reader may see a channel axis's entry otherwise (the whole shape, a graph output, an index
computed at run time), the channel count is read and every channel is kept.
"""

from __future__ import annotations

import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.graph import attr_int, opset_version, slice_range
from channelcut.ops import rule
from channelcut.ops.heads import entry_dims, same_dim


@rule("Shape", spans=True)
def analyse_shape(node: ir.Node, walk: Walk) -> None:
    """Entry k of out <- dim start + k of x: no channel flows; the channels are kept only
    where a reader may see the entries of x's channel axes."""
    source = walk.info(node.inputs[0])
    if source is None:
        return
    dims = walk.dims(node.inputs[0])
    if dims is None:
        walk.barrier(node, "Shape of a tensor of unknown rank")
        return
    rank = len(dims)
    start, end = (min(max(x + rank if x < 0 else x, 0), rank)
                  for x in (attr_int(node, "start", 0), attr_int(node, "end", rank)))
    channel_entries = {k - start for k in range(source.axis, source.axis + source.span)
                       if start <= k < end}
    out = node.outputs[0]
    if not channel_entries:
        return
    length = max(end - start, 0)
    channel_axes = {start + k for k in channel_entries}
    if out.is_graph_output() or not all(
            _picks_outside(use.node, use.idx, length, channel_entries, walk) or
            _sizes_of_own_resizes(use.node, node.inputs[0], channel_axes, walk)
            for use in out.uses()):
        walk.barrier(node, "Shape reads the channel count")


def _picks_outside(reader: ir.Node, index: int, length: int, avoided: set[int],
                   walk: Walk) -> bool:
    """Does `reader` take from the 1-D size tensor (its input `index`, `length` entries) only
    entries outside `avoided`: a Gather on axis 0 of constant indices, or a Slice of a
    constant range?"""
    if reader.domain not in ("", "ai.onnx") or index != 0:
        return False
    if reader.op_type == "Gather" and attr_int(reader, "axis", 0) == 0:
        indices = walk.const(reader.inputs[1]) if len(reader.inputs) > 1 else None
        if indices is None or indices.size == 0:
            return False
        picked = {int(i) + length if i < 0 else int(i) for i in indices.reshape(-1)}
        return not picked & avoided
    if reader.op_type == "Slice":
        picked = _sliced(reader, length, walk)
        return picked is not None and not picked & avoided
    return False


def _sizes_of_own_resizes(reader: ir.Node, x: ir.Value, channel_axes: set[int],
                          walk: Walk) -> bool:
    """Do the entries `reader` takes from Shape(x) (a Gather or Slice of them, or a Concat of
    them all) go only into Concats that are the `sizes` of Resizes which get, on each axis
    where the sizes hold a channel count of x, their own input's dim there?
    `interpolate(x, size=...)` writes `Resize(x, sizes=Concat(Shape(x)[:2], size))`
    (TorchScript: a Slice of the Shape; the dynamo exporter: a Shape with `end=2`): after the
    cut the count read is the cut one, which the Resize's input has (the Resize rule checks
    its side, `spatial`)."""
    if reader.domain not in ("", "ai.onnx") or opset_version(walk.model) < 11:
        return False
    if reader.op_type == "Concat":
        return _own_resizes_sizes(reader, x, channel_axes, walk)
    if reader.op_type not in ("Gather", "Slice") or not reader.outputs or \
            reader.outputs[0].is_graph_output() or not reader.outputs[0].uses():
        return False
    return all(use.node.op_type == "Concat" and use.node.domain in ("", "ai.onnx") and
               _own_resizes_sizes(use.node, x, channel_axes, walk)
               for use in reader.outputs[0].uses())


def _own_resizes_sizes(concat: ir.Node, x: ir.Value, channel_axes: set[int], walk: Walk
                       ) -> bool:
    """Is the Concat's output read only as the `sizes` of Resizes, each getting its own
    input's dim wherever the sizes hold one of x's channel axes (`_sizes_of_own_resizes`)?"""
    sizes = concat.outputs[0] if concat.outputs else None
    if sizes is None or sizes.is_graph_output() or not sizes.uses():
        return False
    dims = entry_dims(sizes, walk)
    if dims is None:
        return False
    for use in sizes.uses():
        resize = use.node
        if resize.op_type != "Resize" or resize.domain not in ("", "ai.onnx") or \
                use.idx != 3 or "axes" in resize.attributes:
            return False
        for q, dim in enumerate(dims):
            if dim is not None and dim[0] is x and dim[1] in channel_axes and \
                    not same_dim((resize.inputs[0], q), dim, walk):
                return False
    return True


def _sliced(reader: ir.Node, length: int, walk: Walk) -> set[int] | None:
    """The entries a Slice of a 1-D tensor of `length` entries takes; None unless its
    starts, ends, axes and steps are constants."""
    arrays = [walk.const(reader.inputs[i]) if i < len(reader.inputs) and
              reader.inputs[i] is not None else None for i in range(1, 5)]
    starts, ends, axes, steps = arrays
    if starts is None or ends is None or starts.size != 1 or ends.size != 1:
        return None
    if axes is not None and (axes.size != 1 or int(axes.reshape(-1)[0]) not in (0, -1)):
        return None
    step = 1 if steps is None else int(steps.reshape(-1)[0]) if steps.size == 1 else 0
    if step == 0:
        return None
    first, last = (int(v.reshape(-1)[0]) for v in (starts, ends))
    return set(slice_range(first, last, step, length))
