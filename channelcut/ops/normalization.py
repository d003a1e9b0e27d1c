"""Normalizations: per-channel ones (BatchNorm, InstanceNorm) map out[c] <- in[c]; ones that mix
channels (LayerNorm or Softmax over the channel axis) read every channel and are barriers there.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.channels import HUGE, ChannelInfo, per_channel_constant
from channelcut.rewrite import Rewrite, delete_positions
from channelcut.graph import attr_float, attr_int, input_at, opset_version
from channelcut.ops import rule
from channelcut.ops.elementwise import transparent


def _per_channel_params(node: ir.Node, walk: Walk, indices: range) -> list[np.ndarray] | None:
    params = [walk.const(input_at(node, i)) for i in indices]
    return None if any(p is None for p in params) else [p.reshape(-1) for p in params]


def _unbounded_positions(*params: np.ndarray) -> np.ndarray:
    """Per position: does one of its parameters hold a NaN, an Inf or a value beyond HUGE
    (which an ordinary input turns into Inf)? Only that position's channel may then carry
    NaN or Inf, not every channel of the output."""
    with np.errstate(invalid="ignore"):
        return ~np.logical_and.reduce([np.abs(p) <= HUGE for p in params])


def _channels_and_params(node: ir.Node, walk: Walk, inputs: range,
                         whole_channels: bool = False
                         ) -> tuple[ChannelInfo, list[np.ndarray]] | None:
    """The input's channels and the per-channel parameters at `inputs`, or None when there is
    nothing to follow: parameters that are not constants make the node a barrier, channels
    off axis 1 (or, `whole_channels`, in blocks) stay."""
    params = _per_channel_params(node, walk, inputs)
    source = walk.info(node.inputs[0])
    if params is None:
        walk.barrier(node, f"{node.op_type} parameters are not constants")
        return None
    if source is None:
        return None
    if source.axis != 1 or (whole_channels and source.block != 1):
        walk.pin(source, node, "channels are not on axis 1")
        return None
    return source, params


def analyse_batch_norm(node: ir.Node, walk: Walk) -> None:
    """out[c] <- (in[c] - mean[c]) / sqrt(var[c] + eps) * scale[c] + B[c]; B[c] when scale[c] is 0.

    A zero scale (network slimming zeroes them) makes the channel the constant B[c] whatever
    its input, as a zero weight row makes a conv's: where mean, B and sqrt(var + eps) are
    finite and the latter non-zero. (For an input that may be NaN or Inf, 0 * inf is NaN: as
    for a zero weight, that is for the analysis of non-finite values to rule out.)
    """
    found = _channels_and_params(node, walk, range(1, 5))
    if found is None:
        return
    source, params = found
    scale, bias, mean, var = (p.astype(np.float32) for p in params)  # one entry per position
    eps = np.float32(attr_float(node, "epsilon", 1e-5))
    const_pos = source.by_position(source.const)
    with np.errstate(all="ignore"):
        std = np.sqrt(var + eps)
        y = ((const_pos - mean) / std * scale + bias).astype(np.float32)
        ignores_input = (scale == 0) & np.isfinite(mean) & np.isfinite(bias) & \
            np.isfinite(std) & (std > 0)
    y = np.where(ignores_input, bias, y)
    uniform, value = per_channel_constant(y, 0, source.positions)
    out = walk.like(node.outputs[0], source)
    out.set_values((source.known | ignores_input[source.positions].all(axis=1)) & uniform, value)
    # a division by a zero or non-finite sqrt(var + eps) is Inf or NaN in that channel only
    unbounded = _unbounded_positions(scale, bias, mean, var) | ~np.isfinite(std) | (std == 0)
    out.mark_nonfinite(unbounded[source.positions].any(axis=1))
    walk.charge(out.ids, weight_bytes=4 * source.block * 4)  # scale, B, mean, var


def rewrite_per_channel_params(node: ir.Node, rw: Rewrite) -> None:
    """Slice every constant input after the first along its only axis."""
    deleted = rw.deleted(node.inputs[0])
    if deleted.size == 0:
        return
    for index in range(1, len(node.inputs)):
        array = rw.const(node.inputs[index])
        if array is not None and array.ndim == 1 and array.shape[0] > 1:
            rw.set_const(node, index, delete_positions(array, {0: deleted}))


# its rule marks the channels its constants may make NaN or Inf in (channelcut.finite)
rule("BatchNormalization", rewrite=rewrite_per_channel_params, own_constants=True)(
    analyse_batch_norm)


def analyse_instance_norm(node: ir.Node, walk: Walk) -> None:
    """out[c] <- (in[c] - mean_c) / sqrt(var_c + eps) * scale[c] + B[c]; a zero channel gives B[c]."""
    found = _channels_and_params(node, walk, range(1, 3), whole_channels=True)
    if found is None:
        return
    source, params = found
    out = walk.like(node.outputs[0], source)
    bias = params[1][source.positions[:, 0]].astype(np.float32)
    out.set_values(source.zero, bias)
    out.mark_nonfinite(_unbounded_positions(*params)[source.positions].any(axis=1))


rule("InstanceNormalization", rewrite=rewrite_per_channel_params, own_constants=True)(
    analyse_instance_norm)


def _normalized_axes(node: ir.Node, walk: Walk, rank: int) -> set[int]:
    """Axes whose elements a Softmax-like or LayerNorm-like op mixes together."""
    axis = attr_int(node, "axis", -1)
    if node.op_type in ("Softmax", "LogSoftmax", "Hardmax"):
        if opset_version(walk.model) < 13:  # old semantics: flatten to 2-D at `axis`
            axis = attr_int(node, "axis", 1)
            return set(range(axis % rank, rank))
        return {axis % rank}
    return set(range(axis % rank, rank))  # LayerNormalization: axes [axis, rank)


@rule("LayerNormalization", "Softmax", "LogSoftmax", "Hardmax", "LpNormalization")
def analyse_channel_mixing(node: ir.Node, walk: Walk) -> None:
    """out[c] <- g(in[c]) when the op normalizes over other axes; a barrier over the channel axis.

    Values are not carried (the normalization of a constant depends on more than the channel).
    """
    source = walk.info(node.inputs[0])
    shape = walk.shape(node.inputs[0])
    if source is None:
        return
    if shape is None or source.axis in _normalized_axes(node, walk, len(shape)):
        walk.barrier(node, f"{node.op_type} mixes values across the channel axis")
        return
    transparent(node, walk, None)  # statistics outputs, if read, make it a barrier (walk)


@rule("Dropout")
def analyse_dropout(node: ir.Node, walk: Walk) -> None:
    """out[c] <- in[c] at inference (a mask output, if read, makes it a barrier: see walk)."""
    transparent(node, walk, lambda x: x)

