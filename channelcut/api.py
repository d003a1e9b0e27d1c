"""The public entry point: `cut()` an ONNX model and get the smaller model and its report."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from channelcut import dynamic_dims, guard, io, summary, targets, verify as verification
from channelcut.analysis import walk_graph
from channelcut.errors import ChannelcutError
from channelcut.solve import OBJECTIVES, Options, solve
from channelcut.rewrite import SizeChange, apply_cut
from channelcut.flops import FlopCount, count_flops, node_flops
from channelcut.graph import release_pages, tensor_bytes, to_ir, to_proto, weight_bytes
from channelcut.samples import Checking
from channelcut.stages import Stages
from channelcut.shapes import (apply_types, clear_intermediate_shapes, inferred_types,
                               inputs_as_declared, restore_boundary_shapes,
                               restore_boundary_types, set_value_info)
from channelcut.ranges import (InputRange, by_value, describe_input_ranges,
                               resolve_input_ranges)
from channelcut.report import (AlignedGain, Report, SiteChange, computed_weights_line,
                               initializer_inputs_line)

log = logging.getLogger(__name__)

# Rounds of keeping the readers of grown constants before cutting without folds: one suffices
# unless keeping some channels changes how other shared constants are cut.
MAX_KEEP_ROUNDS = 3


@dataclass
class CutResult:
    """The cut model, what was cut, and (when verified) how its outputs compare."""

    model: onnx.ModelProto
    report: Report
    # tensor name -> (channel axis, original positions kept along that axis), for every
    # tensor that lost channels; lets a caller compare original and cut intermediates.
    channel_map: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)
    # the input kept its weights in an external data file: so does the output (io.save_model)
    external_data: bool = False

    def save(self, path: str | Path) -> None:
        """Write the cut model to `path` atomically, its large tensors to `<path>.data` when
        the input kept its weights apart. Use this (or channelcut.io.save_model), not
        onnx.save: the model of a cut of a file with external data refers to that file's
        weights by absolute path where it kept them whole, which neither onnx's checker nor
        ONNX Runtime accepts in a saved model; saving writes them out beside it."""
        io.save_model(self.model, path, external_data=self.external_data)


def cut(
    model: onnx.ModelProto | str | Path | Any,
    *,
    example_inputs: Any = None,
    input_shapes: dict[str, list[int] | tuple[int, ...]] | None = None,
    verify: bool = True,
    threshold: float = 0.9999,
    fold: bool = True,
    objective: str | None = None,
    align: int | str | None = None,
    target: str | None = None,
    measure: guard.Measure | None = None,
    verify_inputs: str | Path | list[dict[str, np.ndarray]] | None = None,
    verify_samples: int | None = None,
    seed: int = 0,
    stages: Stages | None = None,
    input_ranges: Mapping[str, InputRange] | None = None,
    constant_initializers: bool = False,
) -> CutResult:
    """Remove every channel that provably cannot change any output; the input is not modified.

    `model` is an ONNX model (a proto or a path) or a `torch.nn.Module`, exported to ONNX
    (channelcut.pytorch) for `example_inputs`: one float tensor or a tuple of them, one per
    module input (only their shapes are used).
    `input_shapes` fixes dynamic input dimensions for the analysis and the check; without it
    they are 1 (a warning and `report.assumed_dims` say so) and the check also runs at 3.
    `fold` (the full cut) also removes constant channels, folding them into their readers,
    and cuts one side of a residual Add, reinserting constants; without it only zero or
    unread channels go (RKNN-Toolkit's model_pruning). `objective` ("flops", "params" or
    "latency") decides which folds and reinsertions are worth it; none ever grows the weights.
    `align` > 1 keeps a multiple of that many channels in every tensor that loses some (8 or
    16 let CPU and NPU kernels use their blocked layouts). With `verify`, both models run in
    ONNX Runtime on seeded random inputs and a cosine similarity below `threshold` on any
    output raises VerificationError. `threshold` is in (0, 1]; 1 means equal up to float
    rounding (channelcut.verify.COSINE_TOLERANCE).
    `verify_inputs` gives the inputs to verify on instead:
    an .npz file or a folder of .npy files (channelcut.samples.load_inputs) or a list of
    {input name: array}; `verify_samples` caps how many of them are used, or says how many
    seeded random input sets to draw (from `seed`). `stages` times each stage (and can show
    progress); the report's `seconds` has the times either way.

    `target` (channelcut.targets.TARGETS; default "min-flops") is where the model will run: it
    decides the rewrites allowed, and `objective` and `align` when they are not given (a
    target aligns only the tensors that had its channel block). The zero-only cut (fold=False)
    stays unaligned unless `align` is given (the seed's table; "target": the target's); the
    report then says what the target's alignment would give. A target with a guard (ort-cpu)
    times the cut, the cut with fewer added ops, the cut with only folds that add no op, the
    aligned zero-only cut and the original with `measure` (default: ONNX Runtime here, channelcut.guard) and returns the
    fastest (a candidate with more rewrites only where it is measurably faster than every
    simpler one); the report gives the times.

    `input_ranges` bounds graph inputs (name -> (lo, hi), or one (lo, hi) per channel on axis
    1): channels the bounds prove constant then cut or fold (reported as cut by range), and
    the random input sets of the check are drawn inside them, edges included.

    Initializers that are also graph inputs (`io.initializer_inputs`: old exporters list every
    weight so) may be fed other values by a caller, so they are no constants and what reads
    them keeps its channels (a warning and `report.initializer_inputs` say so). With
    `constant_initializers` they are constants, and the cut model lists only the inputs a
    caller must feed.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or \
            not 0.0 < threshold <= 1.0:
        raise ChannelcutError(f"threshold {threshold!r}: give a cosine in (0, 1]")
    if example_inputs is not None or _is_torch_module(model):
        from channelcut import pytorch  # noqa: PLC0415 - needs torch, an optional extra

        model = pytorch.to_onnx(model, pytorch.example_shapes(example_inputs))
    chosen = targets.get(targets.DEFAULT if target is None else target)
    seed_mode = False
    if objective is not None and objective not in OBJECTIVES:
        raise ChannelcutError(
            f"unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    if align == "target":
        align = None  # the target's alignment, also for the zero-only cut
    elif align is None and not fold:
        align = 1  # the seed's mode keeps its table: zero-only is unaligned unless asked
        seed_mode = True
    if align is not None and (isinstance(align, bool) or not isinstance(align, int)
                              or align < 1):
        raise ChannelcutError(f"align {align!r}: give a whole number of channels, 1 or more, "
                              "or 'target'")
    options = chosen.options(fold=fold, objective=objective, align=align)
    zero_only = chosen.options(fold=False, objective=objective,
                               align=None if seed_mode else align)
    if verify_samples is not None and (isinstance(verify_samples, bool) or verify_samples < 1):
        raise ChannelcutError(f"verify_samples {verify_samples!r}: give 1 or more")
    stages = stages or Stages()
    with _collector_paused():
        with stages.stage("load"):
            original = io.load_model(model, copy=False, lazy=True)
            overridable = io.initializer_inputs(original)
            if overridable and constant_initializers:
                original = io.without_initializer_inputs(original)
        checking = Checking(verify_inputs, verify_samples, seed,
                            resolve_input_ranges(original, input_ranges))
        result = _cut(original, input_shapes, verify, threshold, options, stages, checking)
        result.report.target = chosen.name
        if seed_mode and chosen.alignment() > 1 and result.report.removed_channels:
            # what align="target" (the facade's model_pruning="aligned") would make
            aligned = _cut(original, input_shapes, False, threshold, zero_only, stages,
                           checking).report
            if (aligned.weight_bytes_after, aligned.flops_after) != (
                    result.report.weight_bytes_after, result.report.flops_after):
                result.report.aligned = AlignedGain(chosen.alignment(),
                                                    aligned.weight_bytes_after,
                                                    aligned.flops_after)
        if chosen.guard:
            result = _guarded(original, result, input_shapes, verify, threshold, options,
                              zero_only, measure or guard.ort_latencies, stages, checking)
    result.report.model_path = str(model) if isinstance(model, str | Path) else ""
    result.report.initializer_inputs = overridable
    result.report.constant_initializers = bool(overridable and constant_initializers)
    if result.report.computed_weights:
        log.warning("%s: %s", result.report.model_path or "the model",
                    computed_weights_line(result.report))
    if overridable and not constant_initializers:
        log.warning("%s: %s", result.report.model_path or "the model",
                    initializer_inputs_line(result.report))
    result.external_data = any(io.on_disk(t) is not None for t in original.graph.initializer)
    result.report.seconds = dict(stages.seconds)
    return result


def _guarded(original: onnx.ModelProto, result: CutResult,
             input_shapes: dict[str, list[int] | tuple[int, ...]] | None, verify: bool,
             threshold: float, options: Options, zero_only: Options,
             measure: guard.Measure, stages: Stages, checking: Checking) -> CutResult:
    """The fastest of the cut, the same cut with fewer added ops (under the latency objective,
    each element they move charged guard.FEWER_MOVES times as much), with only the folds that
    add no op, the aligned zero-only cut (`zero_only`) and the original, timed by `measure` (a
    candidate that comes out the same as an earlier one is timed once); the report of the one
    kept, with the times."""
    candidates = {"cut": result}
    seen = {result.model.SerializeToString()}
    fewer = replace(options, moved_element=options.moved_element * guard.FEWER_MOVES)
    no_added_ops = replace(options, added_ops=False, border_form="carrier")
    for name, variant in (("fewer added ops", fewer), ("no added ops", no_added_ops),
                          ("zero-only", zero_only)):
        if variant == options or (variant is fewer and (options.objective != "latency"
                                                        or not options.added_ops)):
            continue
        other = _cut(original, input_shapes, verify, threshold, variant, stages, checking)
        serialized = other.model.SerializeToString()
        if serialized not in seen:
            seen.add(serialized)
            other.report.target = result.report.target
            candidates[name] = other
    if not any(c.report.removed_channels or c.report.removed_nodes
               for c in candidates.values()):
        return result  # nothing cut: the model is the original
    shapes = verification.resolve_input_shapes(original, input_shapes)
    feeds = verification.random_inputs(original, shapes)
    latencies = measure({**{k: c.model for k, c in candidates.items()}, "original": original},
                        feeds)
    kept = guard.fastest(latencies)
    if kept == "original":
        before = result.report
        uncut = onnx.ModelProto()
        uncut.CopyFrom(original)
        result = CutResult(uncut, Report(
            mode=before.mode, objective=before.objective, align=before.align,
            target=before.target, computed_weights=before.computed_weights,
            weight_bytes_before=before.weight_bytes_before,
            weight_bytes_after=before.weight_bytes_before, flops_before=before.flops_before,
            flops_after=before.flops_before, input_shapes=before.input_shapes,
            params_before=before.params_before, params_after=before.params_before))
    else:
        result = candidates[kept]
    result.report.latencies, result.report.kept = latencies, kept
    log.info("guard: %s; kept the %s", latencies, kept)
    return result


def _is_torch_module(model: object) -> bool:
    """Is `model` a torch.nn.Module? (Without importing torch: a module needs it imported.)"""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cycle collector waits until the cut is done: the graph is many small objects, and a
    full collection in the middle of a cut can double its time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _cut(original: onnx.ModelProto, input_shapes: dict[str, list[int] | tuple[int, ...]] | None,
         verify: bool, threshold: float, options: Options, stages: Stages,
         checking: Checking) -> CutResult:
    """cut() on a loaded model; the model is only read (the IR copies what changes).

    The weights never grow, whatever the objective: when the cut model's constants would take
    more bytes than the original's, the cut is made again with the readers of each constant
    that grew kept whole (a constant read by several nodes that each cut differently needs one
    copy per reader), then without folds and reinsertions (whose savings may overlap), and at
    last not at all; each step is logged as a warning.
    """
    shapes = verification.resolve_input_shapes(original, input_shapes)
    assumed = verification.assumed_dims(original, input_shapes)
    assumed_line = dynamic_dims.assumed_dims_line(original, shapes, assumed, verify) \
        if assumed else ""
    if assumed_line:  # a batch of 1 is what a user expects; any other size is a guess
        guessed = any(axis > 0 for axes in assumed.values() for axis in axes)
        level = logging.WARNING if guessed else logging.INFO
        log.log(level, "%s", assumed_line)
    kept: dict[int, str] = {}
    keep_rounds = 0
    while True:  # each pass keeps more readers (a bounded number of times), or folds less
        result, grown = _cut_once(original, shapes, options, kept, assumed_line, stages,
                                  checking.ranges or {})
        report = result.report
        if report.weight_bytes_after <= report.weight_bytes_before:
            break
        growth = (f"the cut would grow the weights from {report.weight_bytes_before} to "
                  f"{report.weight_bytes_after} bytes")
        if set(grown) - set(kept) and keep_rounds < MAX_KEEP_ROUNDS:
            log.warning("%s: constants read by several nodes cut differently; keeping the "
                        "channels of %d such readers", growth, len(set(grown) - set(kept)))
            kept |= grown
            keep_rounds += 1
        elif options.fold:
            log.warning("%s: cutting again with --zero-only (no folds or reinsertions)", growth)
            options = replace(options, fold=False)
        else:
            log.warning("%s: nothing is cut", growth)
            result = _uncut(original, result.report)
            break
    if verify:
        # The cut's IR (weights it sliced included) is garbage in reference cycles, which the
        # paused collector would keep while ONNX Runtime runs both models.
        gc.collect()
        samples = checking.feeds(original, shapes)
        with stages.stage("verify", len(samples)) as advance:
            result.report.checks = dynamic_dims.compare_sizes(
                original, result.model, shapes, assumed, samples=samples, advance=advance,
                ranges=checking.ranges,
                set_dynamic=dynamic_dims.set_dynamic_dims(original, input_shapes))
        result.report.verify_inputs = checking.describe()
        verification.check(result.report.checks, threshold)
    return result


def _uncut(original: onnx.ModelProto, attempted: Report) -> CutResult:
    """The original model, reported as cut by nothing (the last step of the weight guard)."""
    model = onnx.ModelProto()
    model.CopyFrom(original)
    report = Report(blockers=attempted.blockers, unsupported_ops=attempted.unsupported_ops,
                    computed_weights=attempted.computed_weights,
                    mode=attempted.mode, objective=attempted.objective, align=attempted.align,
                    weight_bytes_before=attempted.weight_bytes_before,
                    weight_bytes_after=attempted.weight_bytes_before,
                    flops_before=attempted.flops_before, flops_after=attempted.flops_before,
                    assumed_dims=attempted.assumed_dims, input_shapes=attempted.input_shapes,
                    params_before=attempted.params_before,
                    params_after=attempted.params_before, input_ranges=attempted.input_ranges)
    return CutResult(model, report, {})


def _cut_once(original: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], options: Options,
              kept: dict[int, str], assumed_line: str, stages: Stages,
              ranges: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
              ) -> tuple[CutResult, dict[int, str]]:
    """One cut, unverified, with every channel at the nodes in `kept` (by position in the
    graph, with why) kept, assuming the input `ranges`; also returns the readers of
    constants that grew."""
    with stages.stage("fold shapes"):
        graph_model = to_ir(original, shapes)
    weights_before = graph_model.meta["declared_weight_bytes"]
    params_before = summary.params(original)
    flops_before = count_flops(graph_model)
    weighted_flops = {node: node_flops(node) for node in graph_model.graph
                      if node.op_type in summary.WEIGHTED_OPS}
    with stages.stage("analyse"):
        readers = summary.readers(graph_model)
        removed_nodes, unused = _remove_unused_nodes(graph_model, readers)
        walk = walk_graph(graph_model, by_value(graph_model, ranges or {}))
        for index, node in enumerate(graph_model.graph):
            if index in kept:
                walk.barrier(node, kept[index])
    with stages.stage("decide"):
        analysis = solve(walk, options)
        range_cuts = summary.range_cuts(walk, analysis)
        network = summary.network(analysis, weighted_flops)
        channel_map = summary.channel_map(analysis)
        removed_channels = sum(int(analysis.removed(v).sum()) for v in analysis.infos)
    with stages.stage("rewrite"):
        rewritten = apply_cut(analysis)
        # the weights read for the facts and the rewrite (the sliced ones among them) are not
        # read again: the cache would keep each sliced array beside its copy in the proto
        analysis.consts.clear()
        changes = {**unused, **rewritten.changes}
        result_proto, flops_after = _serialized(graph_model, shapes, original)
        release_pages(graph_model.graph.initializers.values())
    network = [replace(layer, flops=(layer.flops[0], node_flops(node) if node.graph else 0))
               for layer, node in network]

    report = Report(
        const_changes=summary.const_changes(changes, readers),
        layers=[layer for layer in network
                if layer.in_channels[0] != layer.in_channels[1]
                or layer.out_channels[0] != layer.out_channels[1]],
        blockers=summary.blockers(analysis),
        sites=[SiteChange(u.node, u.op_type, u.kind, u.groups, int(u.added.weight_bytes),
                          int(u.added.flops), int(u.saved.weight_bytes), int(u.saved.flops))
               for u in analysis.sites],
        unsupported_ops={op: len(nodes) for op, nodes in analysis.unsupported.items()},
        computed_weights=dict(analysis.computed_weights),
        mode="full" if options.fold else "zero",
        objective=options.objective,
        align=options.align,
        weight_bytes_before=weights_before,
        weight_bytes_after=weight_bytes(graph_model),
        flops_before=flops_before.flops,
        flops_after=flops_after.flops,
        flops_unknown_before=flops_before.unknown_nodes,
        flops_unknown_after=flops_after.unknown_nodes,
        removed_groups=analysis.removed_groups,
        removed_channels=removed_channels,
        removed_nodes=removed_nodes,
        input_shapes={name: list(dims) for name, dims in shapes.items()},
        params_before=params_before,
        params_after=summary.params(result_proto),
        network=network,
        assumed_dims=assumed_line,
        range_cuts=range_cuts,
        input_ranges=describe_input_ranges(ranges or {}),
    )
    log.info("cut %d channel groups (%d tensor channels)", report.removed_groups,
             report.removed_channels)
    return CutResult(result_proto, report, channel_map), rewritten.grown_readers




def _serialized(graph_model: ir.Model, shapes: dict[str, tuple[int, ...]],
                original: onnx.ModelProto) -> tuple[onnx.ModelProto, FlopCount]:
    """The cut model, serialized once, with its shapes inferred on the proto (the boundary's
    declarations as the original's); its FLOPs."""
    clear_intermediate_shapes(graph_model)
    as_declared = inputs_as_declared(graph_model)
    restore_boundary_shapes(graph_model)
    result_proto = to_proto(graph_model)
    restore_boundary_types(result_proto, original)
    types = inferred_types(result_proto, shapes)
    apply_types(graph_model, types)
    # FLOPs at the sizes the analysis used, as before the cut: the declared inputs (restored
    # above, a dynamic dim symbolic) would leave their readers uncounted
    for value in graph_model.graph.inputs:
        if value.name in shapes:
            value.shape = ir.Shape(shapes[value.name])
    flops_after = count_flops(graph_model)
    if not as_declared:  # from the declared inputs, so that dynamic dimensions stay dynamic
        types = inferred_types(result_proto)
    set_value_info(result_proto, types)
    return result_proto, flops_after






def _remove_unused_nodes(model: ir.Model, readers: dict[str, tuple[str, str]]
                         ) -> tuple[int, dict[str, SizeChange]]:
    """Delete the nodes no graph output depends on, and the constants only they read.

    Their tensors would otherwise each have to keep one channel that nothing reads. Returns
    how many nodes went, and the deleted constants as size changes to nothing.
    """
    nodes = len(model.graph)
    constants = dict(model.graph.initializers)
    common_passes.RemoveUnusedNodesPass()(model)
    return nodes - len(model.graph), {
        name: SizeChange(tensor_bytes(value), 0, *readers.get(name, ("", "")))
        for name, value in constants.items()
        if name not in model.graph.initializers and value.const_value is not None}
