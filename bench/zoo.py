"""channelcut against Torch-Pruning on the model zoo, for the same zeroed channels (issue 4).

Each model gets whole coupled channel groups zeroed in PyTorch (channelcut.torch_groups: conv
rows and the BatchNorm weight and bias after them, every producer of a residual or concat group
alike; "mode (b)"), so the zeroed channels are exactly removable by both tools:

  channelcut     the model's ONNX export, channelcut.cut(fold=False, verify=False): zero and
                 unread channels only, timed without the export
  Torch-Pruning  1.6.1 on the same zeroed PyTorch module: DependencyGraph.build_dependency, then
                 for each layer with zeroed output rows get_pruning_group(layer, prune_*_out_
                 channels, those rows) and group.prune(); only rows whose every producer in the
                 group (conv/linear rows, BatchNorm entries) is zero, so it removes the same
                 channels; graph building and pruning timed together

Side by side per model: parameters and FLOPs before and after (counted on ONNX exports by the
same code, bench/common.py), groups cut, time, cosine and max rel error (channelcut's cut against
the zeroed ONNX in ONNX Runtime; Torch-Pruning's module against the zeroed module in PyTorch),
and the ONNX Runtime CPU latency of the zeroed original and of the cut (median of --runs
alternated runs in one process) with the latency speed-up next to the FLOP reduction; the same
for the cut with align=--latency-align (every tensor keeps a multiple of 16 channels, so that
ONNX Runtime's blocked CPU kernels apply; misaligned channel counts fall back to slow kernels,
most visibly on depthwise nets), on which the speed-up target is judged. A second
table cuts the same architecture pruned naively (50% ln_structured(dim=0) on every conv, "mode
(a)") with channelcut's full cut (fold=True, default objective "flops"), and again with the
settings for a CPU (objective "latency", which weighs the copies a reinsertion adds, and
align=--latency-align).

Targets: on every model channelcut removes at least what Torch-Pruning removes and stays exact;
its analyse-and-cut time is under Torch-Pruning's; on the convolutional nets the cut's CPU
speed-up is at least 0.8 of its FLOP reduction.

    python bench/zoo.py                                  # the whole list
    python bench/zoo.py --models resnet18 --size 64 --runs 5
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import (FAIL, Column, Failures, Session, Table, emit, error, giga,  # noqa: E402
                    millions, millis, ok, ratio, seconds, timed)

MODELS = ("resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2",
          "mobilenet_v3_large", "efficientnet_b0", "mnasnet1_0", "densenet121", "googlenet",
          "inception_v3", "squeezenet1_1", "shufflenet_v2_x1_0", "regnet_y_400mf", "vgg16_bn",
          "convnext_tiny", "vit_b_16", "swin_t", "yolo", "unet")
# Not convolutional nets: the latency target (speed-up >= 0.8 of the FLOP reduction) skips them.
TRANSFORMERS = frozenset({"vit_b_16", "swin_t"})
AMOUNT = 0.5
SPEEDUP_SHARE = 0.8
TARGETS = ("removes at least what Torch-Pruning removes", "exact",
           "faster to analyse and cut than Torch-Pruning",
           f"CPU speed-up >= {SPEEDUP_SHARE} x FLOP reduction (conv nets)")

MAIN_COLUMNS = [
    Column("model", 18), Column("input", 5),
    Column("orig", 7, "params"), Column("TP", 7, "params"), Column("cut", 7, "params"),
    Column("orig", 7, "FLOPs"), Column("TP", 7, "FLOPs"), Column("cut", 7, "FLOPs"),
    Column("zeroed", 6, "groups"), Column("TP", 6, "groups"), Column("cut", 6, "groups"),
    Column("export", 7, "time"), Column("TP", 7, "time"), Column("cut", 7, "time"),
    Column("TP ok", 5, "TP"), Column("err", 8, "TP"),
    Column("cos", 9, "cut"), Column("err", 8, "cut"),
    Column("orig", 7, "ORT ms"), Column("cut", 7, "ORT ms"),
    Column("FLOPs", 6, "speed-up"), Column("ORT", 6, "speed-up"),
    Column("FLOPs", 7, "aligned cut"), Column("err", 8, "aligned cut"),
    Column("ORT ms", 7, "aligned cut"), Column("x FLOPs", 7, "aligned cut"),
    Column("x ORT", 6, "aligned cut"),
]
NAIVE_COLUMNS = [
    Column("model", 18), Column("input", 5),
    Column("before", 7, "params"), Column("after", 7, "params"),
    Column("before", 7, "FLOPs"), Column("after", 7, "FLOPs"),
    Column("groups", 6), Column("time", 7), Column("err", 8),
    Column("ORT ms", 7), Column("FLOPs", 6, "speed-up"), Column("ORT", 6, "speed-up"),
    Column("FLOPs", 7, "latency objective, aligned"), Column("err", 8, "latency objective, aligned"),
    Column("ORT ms", 7, "latency objective, aligned"),
    Column("x FLOPs", 7, "latency objective, aligned"),
    Column("x ORT", 6, "latency objective, aligned"),
]


@dataclass
class TorchPruning:
    """What Torch-Pruning did to one model."""

    module: Any = None
    groups: int = 0  # root rows pruned: one coupled group each
    seconds: float = 0.0


@dataclass
class Row:
    """What one model measured; FAIL where that step raised, None where it did not run."""

    name: str
    size: Any = None  # input height and width
    skipped: str = ""
    params: tuple[Any, Any, Any] = (None, None, None)  # zeroed original, Torch-Pruning, cut
    flops: tuple[Any, Any, Any] = (None, None, None)
    zeroed_groups: Any = None
    tp_groups: Any = None
    cut_groups: Any = None
    export_s: Any = None
    tp_s: Any = None
    cut_s: Any = None
    tp_error: Any = None
    cut_error: Any = None
    latency: tuple[Any, Any] = (None, None)  # original, cut
    # the same cut keeping a multiple of --latency-align channels per tensor (blocked kernels)
    aligned_flops: Any = None
    aligned_error: Any = None
    aligned_latency: Any = None
    naive: dict[str, Any] = field(default_factory=dict)

    @property
    def tp_ok(self) -> bool:
        return ok(self.tp_error) and self.tp_error.exact

    def cells(self) -> list[str]:
        if self.skipped:
            return [self.name, str(self.size or "-"), f"skipped: {self.skipped}"]
        return [self.name, str(self.size or "-"), *map(millions, self.params),
                *map(giga, self.flops), *(str(g if g is not None else "-") for g in
                  (self.zeroed_groups, self.tp_groups, self.cut_groups)),
                seconds(self.export_s), seconds(self.tp_s), seconds(self.cut_s),
                ("yes" if self.tp_ok else "no") if self.tp_s is not None else "-",
                error(self.tp_error),
                f"{self.cut_error.cosine:.7f}" if ok(self.cut_error) else str(self.cut_error),
                error(self.cut_error), *map(millis, self.latency),
                ratio(self.flops[0], self.flops[2]), ratio(*self.latency),
                giga(self.aligned_flops), error(self.aligned_error),
                millis(self.aligned_latency), ratio(self.flops[0], self.aligned_flops),
                ratio(self.latency[0], self.aligned_latency)]

    def naive_cells(self) -> list[str]:
        n = self.naive
        if not n:
            return [self.name, str(self.size or "-"), f"skipped: {self.skipped or 'not run'}"]
        return [self.name, str(self.size or "-"), millions(n.get("params_before")),
                millions(n.get("params_after")), giga(n.get("flops_before")),
                giga(n.get("flops_after")),
                str(n.get("groups", "-")), seconds(n.get("seconds")), error(n.get("error")),
                millis(n.get("latency")), ratio(n.get("flops_before"), n.get("flops_after")),
                ratio(self.latency[0], n.get("latency")),
                giga(n.get("cpu_flops")), error(n.get("cpu_error")), millis(n.get("cpu_latency")),
                ratio(n.get("flops_before"), n.get("cpu_flops")),
                ratio(self.latency[0], n.get("cpu_latency"))]

    def targets(self) -> dict[str, bool | None]:
        """Each target: held, missed, or None when it was not measured (or does not apply)."""
        if self.skipped:
            return dict.fromkeys(TARGETS)
        orig_params, tp_params, cut_params = self.params
        _, tp_flops, cut_flops = self.flops
        removes = None
        if self.tp_s is not None and not self.tp_ok:
            removes = ok(cut_params)  # Torch-Pruning failed: it removed nothing usable
        elif ok(tp_params, cut_params, tp_flops, cut_flops):
            removes = cut_params <= tp_params and cut_flops <= tp_flops
        speedup = None  # of the aligned cut where there is one: what runs fast on a CPU
        flops, latency = (self.aligned_flops, self.aligned_latency) \
            if self.aligned_latency is not None else (self.flops[2], self.latency[1])
        if self.name not in TRANSFORMERS and ok(self.flops[0], flops, self.latency[0], latency):
            flop_reduction = self.flops[0] / flops
            speedup = self.latency[0] / latency >= SPEEDUP_SHARE * flop_reduction
        faster = self.cut_s < self.tp_s if ok(self.cut_s, self.tp_s) and self.tp_ok else None
        exact = self.cut_error.exact if ok(self.cut_error) else None
        if exact and self.aligned_error is not None:
            exact = ok(self.aligned_error) and self.aligned_error.exact
        return dict(zip(TARGETS, (removes, exact, faster, speedup)))


def zero_consistent_groups(model: Any, shape: tuple[int, ...], amount: float,
                           seed: int) -> int:
    """Zero a seeded `amount` of the prunable coupled channel groups of `model` in place.

    Returns how many of channelcut's channel groups that zeroes (what a complete cut's
    removed_groups counts). ImportError when channelcut.torch_groups is not there.
    """
    from channelcut import torch_groups  # noqa: PLC0415 - optional until it lands

    groups = torch_groups.module_channel_groups(model, shape)
    picked = torch_groups.pick_groups(groups, fraction=amount, seed=seed)
    torch_groups.zero_module_groups(model, picked)
    return sum(group.parts for group in picked)


def prune_with_torch_pruning(zeroed: Any, shape: tuple[int, ...]) -> TorchPruning:
    """Torch-Pruning removes the zeroed channels of a copy of `zeroed`; graph build and prune timed.

    For each conv (plain, grouped, transposed) or Linear with all-zero output channels, in
    module order and re-read after each prune because pruning renumbers channels, it asks the
    dependency graph for the group those channels drag along and prunes the ones that are zero
    in every producer of the group: exactly the dead channels, as a user who knows them would.
    """
    import torch
    import torch_pruning as tp

    model = copy.deepcopy(zeroed)
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    result = TorchPruning(model)
    start = time.perf_counter()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    for module in list(model.modules()):
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            pruner = tp.prune_conv_out_channels
        elif isinstance(module, torch.nn.Linear):
            pruner = tp.prune_linear_out_channels
        else:
            continue
        rows = sorted(_zero_channels(module)) if module in graph.module2node else []
        if not rows:
            continue
        group = graph.get_pruning_group(module, pruner, idxs=rows)
        dead = _dead_roots(group, rows)
        if len(dead) < len(rows):
            if not dead:
                continue
            group = graph.get_pruning_group(module, pruner, idxs=dead)
        if not graph.check_pruning_group(group):  # would leave a layer with no channel
            continue
        group.prune()
        result.groups += len(dead)
    result.seconds = time.perf_counter() - start
    return result


def _zero_channels(module: Any) -> set[int]:
    """The output channels a layer makes exactly zero from a zero input, or from any input for
    a conv or Linear: all-zero weights and bias; for a BatchNorm zero scale and shift."""
    import torch

    def zero(*tensors: Any) -> set[int]:  # tensors with channels on axis 0
        flags = torch.stack([(t.detach().reshape(t.shape[0], -1) == 0).all(dim=1)
                             for t in tensors if t is not None]).all(dim=0)
        return set(flags.nonzero().flatten().tolist())

    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        if module.affine:
            return zero(module.weight, module.bias)
        running = module.running_mean
        return zero(running) if running is not None else set(range(module.num_features))
    weight = module.weight
    if getattr(module, "transposed", False):  # [in, out / groups, *kernel]
        per_group = weight.shape[1]
        weight = weight.reshape(module.groups, -1, *weight.shape[1:]).transpose(1, 2)
        weight = weight.reshape(module.groups * per_group, -1)
    return zero(weight, getattr(module, "bias", None))


def _dead_roots(group: Any, rows: list[int]) -> list[int]:
    """The root rows whose channel is zero in every producer the group would cut."""
    import torch_pruning as tp

    producers = (tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels,
                 tp.prune_linear_out_channels, tp.prune_batchnorm_out_channels)
    alive: set[int] = set()
    for item in group.items:
        if item.dep.handler in producers:
            zero = _zero_channels(item.dep.target.module)
            alive |= {root for idx, root in zip(item.idxs, item.root_idxs) if idx not in zero}
    return [r for r in rows if r not in alive]


def run_model(name: str, args: Any, failures: Failures) -> Row:
    import channelcut

    shape = common.input_shape(name, args.size)
    row = Row(name, shape[-1])
    x = common.example_input(shape, args.seed)
    try:
        model = common.build(name, shape, args.seed)
    except ValueError as reason:  # a name tests/zoo.py does not build (yet)
        row.skipped = str(reason).split(";")[0]
        return row
    naive = copy.deepcopy(model)
    try:
        row.zeroed_groups = zero_consistent_groups(model, shape, AMOUNT, args.seed)
    except ImportError as reason:
        row.skipped = f"mode (b) zeroing unavailable ({reason})"
    sessions: dict[str, Session] = {}
    if not row.skipped:
        zeroed, row.export_s = timed(common.export, model, shape)
        sessions["orig"] = Session(zeroed, args.threads)
        reference = sessions["orig"].run(x)

        tp_result, row.tp_s = common.best_of(args.repeat, failures, name, "Torch-Pruning",
                                             prune_with_torch_pruning, model, shape,
                                             seconds=lambda result: result.seconds)
        tp_onnx = FAIL
        if ok(tp_result):
            row.tp_groups = tp_result.groups
            got = failures.attempt(name, "Torch-Pruning's model", common.torch_outputs,
                                   tp_result.module, x)
            row.tp_error = common.output_errors(common.torch_outputs(model, x), got) \
                if ok(got) else got
            if ok(got):
                tp_onnx = failures.attempt(name, "Torch-Pruning ONNX export",
                                           common.export, tp_result.module, shape)
        else:
            row.tp_error = FAIL

        result, row.cut_s = common.best_of(args.repeat, failures, name,
                                           "channelcut.cut (zero)", channelcut.cut, zeroed,
                                           fold=False, verify=False, align=args.align)
        cut_onnx = result.model if ok(result) else FAIL
        if ok(result):
            row.cut_groups = result.report.removed_groups
            sessions["cut"] = failures.attempt(name, "ORT session of the cut", Session,
                                               result.model, args.threads)
            if ok(sessions["cut"]):
                row.cut_error = common.output_errors(reference, sessions["cut"].run(x))
            else:
                row.cut_error = sessions.pop("cut")
        else:
            row.cut_error = FAIL
        if args.latency_align > 1:  # the same cut in blocks ONNX Runtime's CPU kernels take
            row.aligned_flops, row.aligned_error = extra_cut(
                name, "aligned", zeroed, reference, x, args, sessions, "aligned", failures,
                fold=False, align=args.latency_align)
        models = (zeroed, tp_onnx, cut_onnx)
        row.params = tuple(common.onnx_params(m) if ok(m) else m for m in models)
        row.flops = tuple(failures.attempt(name, "FLOP count", common.onnx_flops, m)
                          if ok(m) else m for m in models)

    if args.naive:
        row.naive = naive_cut(name, naive, shape, x, args, sessions, failures)
    if sessions:
        medians = common.alternating_latency(list(sessions.values()), x, args.runs,
                                             args.warmup, args.stat)
        latency = dict(zip(sessions, medians))
        row.latency = (latency.get("orig"), latency.get("cut", FAIL if not row.skipped else None))
        if args.latency_align > 1 and not row.skipped:
            row.aligned_latency = latency.get("aligned", FAIL)
        if row.naive:
            row.naive["latency"] = latency.get("naive", FAIL)
            if args.latency_align > 1:
                row.naive["cpu_latency"] = latency.get("naive_cpu", FAIL)
    return row


def extra_cut(name: str, label: str, model: Any, reference: Any, x: Any, args: Any,
              sessions: dict[str, Session], key: str, failures: Failures,
              **options: Any) -> tuple[Any, Any]:
    """Another cut of `model` with these channelcut.cut options (no verification): its FLOPs
    and output errors against `reference`, FAIL where a step raised; its ORT session is
    added under `key`, for the alternated latency runs."""
    import channelcut

    result = failures.attempt(name, f"channelcut.cut ({label})", channelcut.cut, model,
                              verify=False, **options)
    if not ok(result):
        return FAIL, FAIL
    flops = failures.attempt(name, "FLOP count", common.onnx_flops, result.model)
    session = failures.attempt(name, f"ORT session of the {label} cut", Session, result.model,
                               args.threads)
    if not ok(session):
        return flops, session
    sessions[key] = session
    return flops, common.output_errors(reference, session.run(x))


def naive_cut(name: str, model: Any, shape: tuple[int, ...], x: Any, args: Any,
              sessions: dict[str, Session], failures: Failures) -> dict[str, Any]:
    """Mode (a): naive ln_structured pruning, channelcut's full cut; adds its ORT session(s)."""
    import channelcut

    common.zoo.prune_ln_structured(model, AMOUNT)
    pruned = common.export(model, shape)
    naive: dict[str, Any] = {"params_before": common.onnx_params(pruned)}
    naive["flops_before"] = failures.attempt(name, "FLOP count", common.onnx_flops, pruned)
    result, naive["seconds"] = common.best_of(args.repeat, failures, name,
                                              "channelcut.cut (naive, full)", channelcut.cut,
                                              pruned, fold=True, verify=False, align=args.align)
    if not ok(result):
        naive.update(seconds=FAIL, params_after=FAIL, flops_after=FAIL, error=FAIL)
        return naive
    naive["groups"] = result.report.removed_groups
    naive["params_after"] = common.onnx_params(result.model)
    naive["flops_after"] = failures.attempt(name, "FLOP count", common.onnx_flops,
                                            result.model)
    session = failures.attempt(name, "ORT session of the naive cut", Session, result.model,
                               args.threads)
    if not ok(session):
        naive["error"] = session
        return naive
    original = Session(pruned, args.threads)
    reference = original.run(x)
    naive["error"] = common.output_errors(reference, session.run(x))
    # the same architecture as mode (b)'s original, so either times the uncut model
    sessions.setdefault("orig", original)
    sessions["naive"] = session
    if args.latency_align > 1:  # the settings for a CPU
        naive["cpu_flops"], naive["cpu_error"] = extra_cut(
            name, "naive, latency, aligned", pruned, reference, x, args, sessions, "naive_cpu",
            failures, fold=True, objective="latency", align=args.latency_align)
    return naive


def _options(parser: Any) -> None:
    parser.add_argument("--no-naive", dest="naive", action="store_false",
                        help="skip the second table (naive pruning, channelcut's full cut)")
    parser.add_argument("--latency-align", type=int, default=16, metavar="N",
                        help="also time the cut with align=N (default 16: AVX-512's block of "
                             "ONNX Runtime's NCHWc kernels; 1: skip); the speed-up target is "
                             "judged on it")


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__, MODELS, argv, more=_options)
    table, naive_table = Table(MAIN_COLUMNS), Table(NAIVE_COLUMNS)
    failures = Failures()
    emit(f"mode (b): {AMOUNT:.0%} of the coupled channel groups zeroed; "
         f"{common.latency_setup(args)}")
    emit(table.header())
    rows = []
    for name in args.models:
        row = failures.attempt(name, "build/zero/export", run_model, name, args, failures)
        row = row if ok(row) else Row(name, skipped="failed, see below")
        rows.append(row)
        emit(table.row(row.cells()))
    if args.naive:
        emit()
        emit(f"mode (a): naive {AMOUNT:.0%} ln_structured(dim=0) on every Conv2d, channelcut's "
             "full cut (fold=True; then objective='latency', align="
             f"{args.latency_align}); ORT speed-up against the same original")
        emit(naive_table.header())
        for row in rows:
            emit(naive_table.row(row.naive_cells()))
    emit()
    common.summarize(failures, {r.name: r.targets() for r in rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
