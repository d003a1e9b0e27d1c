"""Coupled channel groups of a PyTorch model in PyTorch terms, and zeroing whole groups in place:
structured pruning that respects residual, concat, depthwise and grouped-conv couplings, so
that channelcut's zero-only cut removes every zeroed group (what a "prune for me" will use).

The coupling analysis is channelcut's own, run on the model exported with the torch.export
exporter, which keeps parameter names (`layer1.0.conv1.weight`) even where it folds a
BatchNorm into the conv before it. Each group's producing ONNX layers are mapped back to the
torch layers (Conv, ConvTranspose, Linear) whose weight rows make the channels, plus the
BatchNorms on those channels: zeroing the rows alone would leave a BatchNorm's shift.

    groups = module_channel_groups(model, (1, 3, 224, 224))
    zero_module_groups(model, pick_groups(groups, fraction=0.4, seed=0))

torch is imported only here; `import channelcut` does not need it.
"""

from __future__ import annotations

import ast
import io as bytes_io
import logging
import random
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from channelcut.groups import ChannelGroup, channel_groups
from channelcut.pytorch import eval_mode
from channelcut.pytorch import OPSET

log = logging.getLogger(__name__)

PRODUCER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d, nn.Linear)
CONV_TRANSPOSE_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # the exporter's module path of each ONNX node

Row = tuple[str, int]  # (qualified module name or ONNX node name, channel)


@dataclass(frozen=True)
class ModuleGroup:
    """One coupled channel group in PyTorch terms: zero all of it or none of it.

    `rows` are the output channels of the Conv, ConvTranspose and Linear layers that produce
    the group; `norms` the channels of the BatchNorms on it. `channels` are its
    (tensor name, channel) positions in the exported graph and `parts` how many of
    channelcut's coupled groups it joins (what a cut's `removed_groups` counts). `pinned`: a
    graph input or output, or an op channelcut keeps whole, holds it. `unmapped` lists the
    producing ONNX layers (node, row) without a torch parameter behind them (attention's
    fused input projection, a matmul of two activations): such a group cannot be zeroed.
    """

    rows: tuple[Row, ...]
    norms: tuple[Row, ...]
    channels: tuple[Row, ...]
    parts: int
    pinned: bool
    unmapped: tuple[Row, ...] = ()

    @property
    def prunable(self) -> bool:
        """Zeroing it in torch is possible and the zero-only cut may then remove it."""
        return not self.pinned and not self.unmapped


def module_channel_groups(module: nn.Module, input_shape: Sequence[int]) -> list[ModuleGroup]:
    """Every coupled channel group of `module`, run in eval mode on one input of `input_shape`.

    Groups that channelcut's analysis sees apart but that one torch parameter row joins (a
    layer called twice), or that a grouped conv needs removed together (all input and output
    channels of one conv group: the cut keeps every remaining group the same size), are one
    ModuleGroup. The module's training flags are left as they were.
    """
    proto = export_named(module, input_shape)
    parts = channel_groups(proto)
    names = _parameter_owners(module)
    producers = _producer_modules(proto, module, names)
    follower_norms = _norms_after_producers(module, input_shape)
    norm_nodes = _norm_nodes(proto, names)
    merged, pinned = _merge(parts, proto, producers)
    return [_module_group([parts[i] for i in members], producers, follower_norms, norm_nodes,
                          pinned=any(i in pinned for i in members))
            for members in merged]


def zero_module_groups(module: nn.Module, groups: Iterable[ModuleGroup]) -> None:
    """Zero these groups in place: their producing rows and biases, and their BatchNorm
    channels, so that every channel of the groups is exactly zero in eval mode.

    Raises ValueError for a group that is not `prunable` because a layer has no parameter.
    """
    with torch.no_grad():
        for group in groups:
            if group.unmapped:
                raise ValueError(f"group produced by {group.unmapped[0][0]!r}, which has no "
                                 "torch parameter, cannot be zeroed")
            for name, row in group.rows:
                _zero_output_channel(module.get_submodule(name), row)
            for name, channel in group.norms:
                _zero_norm_channel(module.get_submodule(name), channel)


def pick_groups(groups: Sequence[ModuleGroup], fraction: float, seed: int = 0) -> list[ModuleGroup]:
    """A seeded `fraction` of the prunable groups, never all the groups of one tensor.

    channelcut keeps one channel of a tensor that would lose all of them, so a pick that
    empties a tensor would not be removed whole; such picks are skipped.
    """
    candidates = [g for g in groups if g.prunable]
    wanted = round(fraction * len(candidates))
    groups_per_tensor = Counter(t for g in groups for t in _tensors(g))
    picked_per_tensor: Counter[str] = Counter()
    picked: list[ModuleGroup] = []
    for group in random.Random(seed).sample(candidates, len(candidates)):
        if len(picked) == wanted:
            break
        tensors = _tensors(group)
        if any(picked_per_tensor[t] + 1 >= groups_per_tensor[t] for t in tensors):
            continue
        picked.append(group)
        picked_per_tensor.update(tensors)
    return picked


def export_named(module: nn.Module, input_shape: Sequence[int]) -> onnx.ModelProto:
    """The eval-mode module exported by the torch.export exporter (BatchNorm folded, names kept)."""
    example = (torch.zeros(tuple(input_shape)),)
    # The exporter prints progress lines and warns about its own choices: not our user's business.
    with eval_mode(module), tempfile.TemporaryDirectory(prefix="channelcut-export-") as \
            artifacts, warnings.catch_warnings(), redirect_stdout(bytes_io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, example, dynamo=True, opset_version=OPSET,
                                    verbose=False, artifacts_dir=artifacts)
    return program.model_proto


def _parameter_owners(module: nn.Module) -> dict[str, tuple[str, str]]:
    """Parameter and buffer name -> (owning module name, attribute), shared ones under all names."""
    owners = {}
    for name, _ in [*module.named_parameters(remove_duplicate=False),
                    *module.named_buffers(remove_duplicate=False)]:
        owner, _, attribute = name.rpartition(".")
        owners[name] = (owner, attribute)
    return owners


def _producer_modules(proto: onnx.ModelProto, module: nn.Module,
                      names: dict[str, tuple[str, str]]) -> dict[str, str]:
    """ONNX node name -> qualified name of the torch layer whose weight rows it computes."""
    inits = {t.name: t for t in proto.graph.initializer}
    modules = dict(module.named_modules())
    found = {}
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        owner, attribute = names.get(node.input[1], ("", ""))
        if attribute == "weight" and isinstance(modules.get(owner), PRODUCER_TYPES):
            found[node.name] = owner
        elif node.input[1] in inits:
            # A Linear on 3-D input becomes MatMul with its weight transposed into a new,
            # unnamed constant; the node's module path names the Linear.
            owner = _linear_in_scope(node, modules, numpy_helper.to_array(inits[node.input[1]]))
            if owner is not None:
                found[node.name] = owner
    return found


def _linear_in_scope(node: onnx.NodeProto, modules: dict[str, nn.Module],
                     weight: np.ndarray) -> str | None:
    """The Linear named by the node's deepest module scope, if its weight is this constant."""
    scopes = next((ast.literal_eval(p.value) for p in node.metadata_props
                   if p.key == SCOPES_KEY), [])
    for scope in reversed(scopes):
        layer = modules.get(scope)
        if isinstance(layer, nn.Linear):
            expected = layer.weight.detach().numpy()
            same = weight.shape == expected.T.shape and np.array_equal(weight, expected.T)
            return scope if same else None
    return None


def _norms_after_producers(module: nn.Module, input_shape: Sequence[int]) -> dict[str, str]:
    """Producer layer name -> the BatchNorm that reads its output directly (which the export
    folds into it), found by running the module once and matching tensors by identity."""
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    followers: dict[str, str] = {}

    def producer_hook(name: str):
        def hook(_module, _inputs, output):
            outputs[id(output)] = (name, output)  # holding the tensor keeps its id unique
        return hook

    def norm_hook(name: str):
        def hook(_module, inputs):
            source = outputs.get(id(inputs[0]))
            if source is not None and source[1] is inputs[0]:
                followers[source[0]] = name
        return hook

    handles = []
    for name, layer in module.named_modules():
        if isinstance(layer, PRODUCER_TYPES):
            handles.append(layer.register_forward_hook(producer_hook(name)))
        elif isinstance(layer, NORM_TYPES):
            handles.append(layer.register_forward_pre_hook(norm_hook(name)))
    try:
        with eval_mode(module), torch.no_grad():
            module(torch.zeros(tuple(input_shape)))
    finally:
        for handle in handles:
            handle.remove()
    return followers


def _norm_nodes(proto: onnx.ModelProto, names: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Output tensor of each BatchNormalization node the export kept -> its torch BatchNorm
    (one that reads a Concat, as in DenseNet, cannot be folded into a conv)."""
    found = {}
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization":
            owner, attribute = names.get(node.input[1], ("", ""))
            if attribute == "weight":
                found[node.output[0]] = owner
    return found


def _merge(parts: list[ChannelGroup], proto: onnx.ModelProto,
           producers: dict[str, str]) -> tuple[list[list[int]], set[int]]:
    """Indices of `parts` that must go together (they share a torch row, or a conv group),
    and the parts a conv group pins because some of its channels can never go."""
    parent = list(range(len(parts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(members: Iterable[int]) -> None:
        roots = sorted({find(i) for i in members})
        for root in roots[1:]:
            parent[root] = roots[0]

    first_with_row: dict[Row, int] = {}
    for i, part in enumerate(parts):
        for node, row in part.rows:
            if node in producers:
                union([first_with_row.setdefault((producers[node], row), i), i])
    pinned: set[int] = set()
    for members, complete in _conv_group_members(parts, proto):
        union(members)
        if not complete:
            pinned.update(members)
    merged: dict[int, list[int]] = {}
    for i in range(len(parts)):
        merged.setdefault(find(i), []).append(i)
    return list(merged.values()), pinned


def _conv_group_members(parts: list[ChannelGroup],
                        proto: onnx.ModelProto) -> list[tuple[list[int], bool]]:
    """For every group of every grouped Conv: the parts holding its input and output channels,
    and whether every one of those channels is in some part (else the conv group stays)."""
    part_of = {channel: i for i, part in enumerate(parts) for channel in part.channels}
    dims = {t.name: t.dims for t in proto.graph.initializer}
    members = []
    for node in proto.graph.node:
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type != "Conv" or groups == 1 or node.input[1] not in dims:
            continue
        cout, cin_g = dims[node.input[1]][:2]
        cout_g = cout // groups
        for k in range(groups):
            channels = [(node.input[0], c) for c in range(k * cin_g, (k + 1) * cin_g)]
            channels += [(node.output[0], o) for o in range(k * cout_g, (k + 1) * cout_g)]
            found = [part_of[c] for c in channels if c in part_of]
            members.append((found, len(found) == len(channels)))
    return members


def _module_group(parts: list[ChannelGroup], producers: dict[str, str],
                  follower_norms: dict[str, str], norm_nodes: dict[str, str],
                  pinned: bool) -> ModuleGroup:
    rows = sorted({(producers[node], row) for part in parts for node, row in part.rows
                   if node in producers})
    unmapped = sorted({(node, row) for part in parts for node, row in part.rows
                       if node not in producers})
    norms = {(follower_norms[name], row) for name, row in rows if name in follower_norms}
    channels = sorted({c for part in parts for c in part.channels})
    norms |= {(norm_nodes[tensor], k) for tensor, k in channels if tensor in norm_nodes}
    return ModuleGroup(rows=tuple(rows), norms=tuple(sorted(norms)), channels=tuple(channels),
                       parts=len(parts), pinned=pinned or any(p.pinned for p in parts),
                       unmapped=tuple(unmapped))


def _tensors(group: ModuleGroup) -> set[str]:
    return {tensor for tensor, _ in group.channels}


def _zero_output_channel(layer: nn.Module, row: int) -> None:
    """Zero what makes output channel `row` of a Conv, ConvTranspose or Linear: weights, bias."""
    weight = layer.weight
    if isinstance(layer, CONV_TRANSPOSE_TYPES):  # [in, out / groups, *kernel]
        per_group = weight.shape[1]
        weight.view(layer.groups, -1, *weight.shape[1:])[row // per_group, :, row % per_group] = 0
    else:
        weight[row] = 0
    if layer.bias is not None:
        layer.bias[row] = 0


def _zero_norm_channel(norm: nn.Module, channel: int) -> None:
    """Make a BatchNorm map a zero channel to exactly zero in eval mode."""
    if norm.affine:
        norm.weight[channel] = 0
        norm.bias[channel] = 0
    elif norm.running_mean is not None:
        norm.running_mean[channel] = 0
