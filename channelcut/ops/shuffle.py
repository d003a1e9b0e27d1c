"""Channel shuffles: a Reshape -> Transpose -> Reshape chain whose net effect is a fixed
permutation of the channel axis, out[c] <- in[perm[c]], every other axis unchanged.

ShuffleNet writes `x.view(N, g, C/g, H, W).transpose(1, 2).reshape(N, C, H, W)`. Followed op by
op, the channels lie on the two split axes between the Reshapes (ChannelInfo.span), and when
the kept channels still form a grid (each column of the (g, C/g) split kept or cut whole) the
shuffle stays, with smaller Reshape targets. When the chain is proven a pure permutation (this
module), channels are not coupled by column: each goes on its own, and a cut that leaves the
groups unequal replaces the three ops by one `Gather(axis, kept permutation)`, which adds no op
in any target (three ops become one, so even a target that allows no added op writes it).
Anything not provably a permutation (computed or inferred sizes that may change at run time,
other axes moved, another reader of the intermediate tensors) keeps the column coupling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.graph import attr_ints
from channelcut.rewrite import Rewrite, kept_mask


@dataclass(frozen=True)
class Shuffle:
    """A proven channel shuffle: `reshape` (the first node), `transpose`, `merge` (the last
    Reshape); `perm[c]` is the input channel-axis position that output position c holds."""

    reshape: ir.Node
    transpose: ir.Node
    merge: ir.Node
    axis: int
    perm: np.ndarray


def _only_reader(value: ir.Value, op_type: str) -> ir.Node | None:
    """The single node reading `value` (as its data input), if it is an `op_type` and nothing
    else (no graph output either) sees `value`."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output() or uses[0].idx != 0:
        return None
    reader = uses[0].node
    return reader if reader.op_type == op_type and reader.domain in ("", "ai.onnx") else None


def shuffle_chain(node: ir.Node, walk: Walk | Rewrite, axis: int) -> Shuffle | None:
    """The shuffle that Reshape `node` starts by splitting channel axis `axis`, or None when
    the chain is not provably a permutation of that axis alone.

    Proven from static shapes and constant targets: the first Reshape splits only `axis`
    (its dims before and after are the input's, one for one), the Transpose moves only the
    split axes (among themselves), and the last Reshape gives back the input's shape. Then
    every (batch, spatial) slab is permuted alike along `axis`, at the analysed shape
    (`proven_shuffle` says when that holds at every run-time size).
    """
    if node.op_type != "Reshape" or walk.const(node.inputs[1]) is None:
        return None
    transpose = _only_reader(node.outputs[0], "Transpose")
    merge = None if transpose is None else _only_reader(transpose.outputs[0], "Reshape")
    if merge is None or walk.const(merge.inputs[1]) is None:
        return None
    shape, split = walk.shape(node.inputs[0]), walk.shape(node.outputs[0])
    if shape is None or split is None or walk.shape(merge.outputs[0]) != shape:
        return None
    m = len(split) - len(shape) + 1  # axes `axis` is split into
    if m < 2 or not 0 <= axis < len(shape) or split[:axis] != shape[:axis] or \
            split[axis + m:] != shape[axis + 1:] or int(np.prod(split[axis:axis + m])) != \
            shape[axis]:
        return None
    perm = attr_ints(transpose, "perm") or list(reversed(range(len(split))))
    inside = list(range(axis, axis + m))
    if any(perm[k] != k for k in range(len(split)) if k not in inside) or \
            sorted(perm[k] for k in inside) != inside:
        return None
    # output position c of the merged axis holds input position order[c]
    grid = np.arange(shape[axis]).reshape(split[axis:axis + m])
    order = grid.transpose([perm[k] - axis for k in inside]).reshape(-1)
    return Shuffle(node, transpose, merge, axis, order)


def proven_shuffle(node: ir.Node, walk: Walk, axis: int) -> Shuffle | None:
    """`shuffle_chain`, when it also permutes the channels alone at every size the model runs
    at: the graph inputs' dims after the batch are fixed (Walk.spatial_fixed), and the targets
    name every dim from `axis` on (the last Reshape may infer the channel count, -1), the dims
    before it copied (0) or literal. A -1 elsewhere, or a 0 after `axis`, could take up a
    run-time size into another axis than the analysed one."""
    shuffle = shuffle_chain(node, walk, axis)
    if shuffle is None or not walk.spatial_fixed:
        return None
    for reshape, inferred in ((shuffle.reshape, None), (shuffle.merge, axis)):
        target = [int(x) for x in walk.const(reshape.inputs[1]).reshape(-1)]
        if any(e < 0 for e in target[:axis]) or \
                any(e <= 0 and not (k == inferred and e == -1)
                    for k, e in enumerate(target[axis:], axis)):
            return None
    return shuffle


def is_grid(deleted: np.ndarray, dims: tuple[int, ...]) -> bool:
    """Do the `deleted` flat positions over `dims` (the split axes) take whole columns (the
    same last index in every row), so that what is kept is still a grid?"""
    cut = ~kept_mask(int(np.prod(dims)), deleted)
    rows = cut.reshape(-1, dims[-1])
    return bool(np.all(rows == rows[:1]))


def rewrite_as_gather(shuffle: Shuffle, rw: Rewrite) -> None:
    """Replace the chain by Gather(input, indices, axis): the kept output positions, in
    order, each read from where its input position lies in the cut input. The last Reshape
    becomes the Gather (its output, and the channel facts on it, stay); the other two go."""
    first, merge = shuffle.reshape, shuffle.merge
    source = first.inputs[0]
    kept_in = kept_mask(shuffle.perm.size, rw.deleted(source))
    kept_out = kept_mask(shuffle.perm.size, rw.deleted(merge.outputs[0]))
    picked = shuffle.perm[kept_out]
    if not kept_in[picked].all():  # the analysis carries each channel through: never
        raise ValueError("channel shuffle keeps a channel its input lost")
    renumbered = np.cumsum(kept_in) - 1  # input position -> position in the cut input
    indices = rw.new_const(f"{merge.name or 'shuffle'}_order", renumbered[picked].astype(np.int64))
    merge.op_type = "Gather"
    merge.attributes.clear()
    merge.attributes["axis"] = ir.AttrInt64("axis", shuffle.axis)
    merge.replace_input_with(0, source)
    merge.replace_input_with(1, indices)
    rw.graph.remove([shuffle.transpose, first], safe=True)
