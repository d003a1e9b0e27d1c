"""What a cut did: the const change table, bytes and FLOPs saved, channels per layer, blockers."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ConstChange:
    """One constant whose size changed; sizes are in bytes, like the seed's table."""

    name: str
    src_size: int
    pruned_size: int
    node: str = ""  # the node whose constant this is (reads it, or had it added for it)
    role: str = ""  # what it is to that node: "weight", "bias", "border kernel", ...

    @property
    def layer(self) -> str:
        return layer_name(self.node)

    @property
    def diff(self) -> int:
        return self.pruned_size - self.src_size


@dataclass(frozen=True)
class LayerChange:
    """Channels of one weighted layer (Conv, Gemm, MatMul, ...) before and after the cut."""

    node: str
    op_type: str
    in_channels: tuple[int, int]  # (original, kept); the text and JSON show kept first
    out_channels: tuple[int, int]
    flops: tuple[int, int] = (0, 0)  # this node's FLOPs (original, kept)

    @property
    def layer(self) -> str:
        return layer_name(self.node, self.op_type)


@dataclass(frozen=True)
class Blocker:
    """Channels that every reader ignores but that one op or graph boundary forces us to keep."""

    op_type: str  # an op type, or "graph input" / "graph output"
    node: str  # node name, or the graph input/output name
    channels: int
    reason: str


@dataclass(frozen=True)
class SiteChange:
    """A fold or reinsertion the full cut made at one node, with the cost model's estimates:
    what it adds and what removing the channel groups that needed it saves."""

    node: str
    op_type: str
    kind: str  # "bias fold", "border fold", "carrier fold" or "reinsert"
    groups: int
    added_bytes: int
    added_flops: int
    saved_bytes: int
    saved_flops: int


@dataclass(frozen=True)
class RangeCut:
    """Channels cut because their interval is one point: `op_type` (a clamp such as Relu or
    Clip) always outputs `value` there, as its input never leaves `bound` (the hull of their
    inputs' intervals)."""

    tensor: str
    node: str
    op_type: str
    count: int
    channels: list[int]
    value: float
    bound: tuple[float, float] | None


@dataclass(frozen=True)
class OutputCheck:
    """Original vs cut model, one graph output, on the same seeded random inputs (the worst
    over every input set: errors and cosine over the positions finite in both models)."""

    name: str
    cosine: float
    max_abs_error: float
    max_rel_error: float
    # positions where one model has NaN or Inf and the other has not the same value
    nonfinite_mismatches: int = 0


@dataclass(frozen=True)
class AlignedGain:
    """What the same cut aligned to the target's channel multiple would give (reported when
    the cut itself was not aligned, as the seed's zero-only table is not)."""

    align: int
    weight_bytes_after: int
    flops_after: int


@dataclass
class Report:
    """Everything `channelcut cut` prints; `to_dict()` is the `--report-json` content."""

    const_changes: list[ConstChange] = field(default_factory=list)
    layers: list[LayerChange] = field(default_factory=list)
    blockers: list[Blocker] = field(default_factory=list)
    sites: list[SiteChange] = field(default_factory=list)
    unsupported_ops: dict[str, int] = field(default_factory=dict)  # op type -> nodes (barriers)
    mode: str = "full"  # "full" (fold constants, one-sided cuts) or "zero" (zero channels only)
    objective: str = "flops"
    align: int = 1  # every tensor that lost channels keeps a multiple of this many
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0
    flops_before: int = 0  # a lower bound when flops_unknown_before > 0
    flops_after: int = 0
    # nodes whose FLOPs are not in the count: their shapes are unknown (after a custom op)
    flops_unknown_before: int = 0
    flops_unknown_after: int = 0
    removed_groups: int = 0
    removed_channels: int = 0  # channel positions removed, summed over every tensor
    removed_nodes: int = 0  # nodes no graph output depends on, deleted whole
    checks: list[OutputCheck] = field(default_factory=list)
    target: str = ""  # channelcut.targets name the cut was made for
    # the guard's ONNX Runtime CPU times (CPU seconds per run, lower quartile; channelcut.guard)
    # by candidate, and which it kept: "cut", "fewer added ops", "no added ops", "zero-only"
    # (aligned) or "original"
    latencies: dict[str, float] = field(default_factory=dict)
    kept: str = ""
    aligned: AlignedGain | None = None
    # what was cut, from what: filled by cut() and the console script
    model_path: str = ""
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    params_before: int = 0  # elements of every constant tensor
    params_after: int = 0
    verify_inputs: str = ""  # where verification's inputs came from ("" when not run)
    network: list[LayerChange] = field(default_factory=list)  # every weighted layer, in order
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage (STAGES)
    # one line when dynamic input dims took the default size: which, and how to set them
    assumed_dims: str = ""
    # initializers that are also graph inputs (io.initializer_inputs), and whether the cut
    # took them as constants (cut(constant_initializers=True)) and dropped them from the inputs
    initializer_inputs: list[str] = field(default_factory=list)
    constant_initializers: bool = False
    # Conv/ConvTranspose/Gemm layers whose weights are computed, by what computes them
    # (Analysis.computed_weights): a quantized model's DequantizeLinear, weights fed at run time
    computed_weights: dict[str, int] = field(default_factory=dict)
    range_cuts: list[RangeCut] = field(default_factory=list)  # constant by their interval
    # graph inputs assumed bounded: name -> [[lo, hi]] (or one pair per channel)
    input_ranges: dict[str, list[list[float]]] = field(default_factory=dict)

    @property
    def range_channels(self) -> int:
        """Channels cut because their interval is one point (see RangeCut)."""
        return sum(c.count for c in self.range_cuts)

    def to_dict(self) -> dict:
        """The report as JSON data, in the text's order: what was cut, the summary, the layers,
        the constants, then the details. Channel pairs are [kept, original], as the text's
        kept/original."""
        from channelcut import __version__  # noqa: PLC0415 - the package imports this module

        def layer(c: LayerChange) -> dict:
            return {"layer": c.layer, "node": c.node, "op_type": c.op_type,
                    "in_channels": [c.in_channels[1], c.in_channels[0]],
                    "out_channels": [c.out_channels[1], c.out_channels[0]],
                    "flops": [c.flops[1], c.flops[0]]}

        return {
            "tool": "channelcut", "version": __version__, "model_path": self.model_path,
            "input_shapes": self.input_shapes, "target": self.target, "mode": self.mode,
            "objective": self.objective, "align": self.align,
            "pairs": "[kept, original]",
            "weight_bytes_before": self.weight_bytes_before,
            "weight_bytes_after": self.weight_bytes_after,
            "params_before": self.params_before, "params_after": self.params_after,
            "flops_before": self.flops_before, "flops_after": self.flops_after,
            "flops_unknown_before": self.flops_unknown_before,
            "flops_unknown_after": self.flops_unknown_after,
            "removed_groups": self.removed_groups, "removed_channels": self.removed_channels,
            "removed_nodes": self.removed_nodes,
            "input_ranges": self.input_ranges,
            "range_channels": self.range_channels,
            "range_cuts": [asdict(c) for c in self.range_cuts],
            "latencies": self.latencies, "kept": self.kept,
            "aligned": None if self.aligned is None else asdict(self.aligned),
            "assumed_dims": self.assumed_dims,
            "initializer_inputs": self.initializer_inputs,
            "constant_initializers": self.constant_initializers,
            "computed_weights": self.computed_weights,
            "verify_inputs": self.verify_inputs,
            "checks": [asdict(c) for c in self.checks],
            "most_blocked": [{"op_type": op, "channels": n}
                             for op, n in most_blocked(self)],
            "layers": [layer(c) for c in self.layers],
            "const_changes": [{**asdict(c), "layer": c.layer, "diff": c.diff}
                              for c in self.const_changes],
            "sites": [asdict(u) for u in self.sites],
            "blockers": [asdict(b) for b in self.blockers],
            "unsupported_ops": self.unsupported_ops,
            "seconds": self.seconds,
            "network": [layer(c) for c in self.network],
        }


def most_blocked(report: Report) -> list[tuple[str, int]]:
    """Op types (or graph boundaries) by the channels they kept, most first."""
    counts: dict[str, int] = {}
    for b in report.blockers:
        counts[b.op_type] = counts.get(b.op_type, 0) + b.channels
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


_OP_SEGMENT = re.compile(r"[A-Z][A-Za-z0-9]*(_\d+)?$")


def layer_name(node: str, op_type: str = "") -> str:
    """The module path a PyTorch exporter gave a node (`/layer1/layer1.0/conv1/Conv` ->
    `layer1.0.conv1`); any other name as it is."""
    if not node.startswith("/") or node.count("/") < 2:
        return node
    segments = [s for s in node.strip("/").split("/") if s]
    if segments and (segments[-1].split("_")[0] == op_type or _OP_SEGMENT.match(segments[-1])):
        segments = segments[:-1]
    path: list[str] = []
    for segment in segments:
        if path and segment.startswith(path[-1] + "."):
            path[-1] = segment  # `layer1` then `layer1.0`: the exporter repeats the prefix
        else:
            path.append(segment)
    return ".".join(path) or node


def const_change_lines(report: Report) -> list[str]:
    """The seed's "const change detail" table: a header line, then one row per changed constant."""
    row = "{:<40}{:<12}{:<12}{:<12}".format
    lines = [row("const name", "src_size", "pruned_size", "diff")]
    lines += [row(c.name, c.src_size, c.pruned_size, c.diff) for c in report.const_changes]
    return lines


def _signed_change(before: int, after: int, scale: float, unit: str) -> str:
    """`-1.12144 MB (-6.9%)`: the change in `unit` and in percent of `before`."""
    percent = 100.0 * (after - before) / before if before else 0.0
    return f"{(after - before) / scale:+.5f} {unit} ({percent:+.1f}%)"


def params_line(report: Report) -> str:
    """`params: 11.68 M -> 4.00 M, -7.68 M (-65.7%)`: elements of the constant tensors."""
    pb, pa = report.params_before, report.params_after
    percent = 100.0 * (pa - pb) / pb if pb else 0.0
    return f"params:  {pb / 1e6:.5f} M -> {pa / 1e6:.5f} M, {(pa - pb) / 1e6:+.5f} M ({percent:+.1f}%)"


def _flops(flops: int, unknown_nodes: int) -> str:
    """`0.01144 G`, or `>= 0.01144 G (42 nodes of unknown shape)` when some are not counted."""
    if not unknown_nodes:
        return f"{flops / 1e9:.5f} G"
    return f">= {flops / 1e9:.5f} G ({unknown_nodes} nodes of unknown shape)"


def initializer_inputs_line(report: Report) -> str:
    """What the cut made of initializers that are also graph inputs, and how to change it."""
    names = report.initializer_inputs
    shown = ", ".join(repr(n) for n in names[:3]) + \
        (f" and {len(names) - 3} more" if len(names) > 3 else "")
    count = f"{len(names)} initializer{'s are' if len(names) > 1 else ' is'} also graph " \
        f"input{'s' if len(names) > 1 else ''} ({shown})"
    if report.constant_initializers:
        return f"{count}: taken as constants; the cut model lists only the other inputs"
    return (f"{count}, so a caller may feed other values: channelcut keeps them as inputs and "
            "cuts nothing that reads them; if nobody feeds them (an export with "
            "keep_initializers_as_inputs), pass --constant-initializers "
            "(cut(constant_initializers=True)) to cut them")


def computed_weights_line(report: Report) -> str:
    """Which layers read weights that are no constant, and what to do about it."""
    counts = report.computed_weights
    total = sum(counts.values())
    sources = ", ".join(f"{n} from {source}" for source, n in counts.items())
    line = (f"{total} Conv/Gemm layer{'s read' if total > 1 else ' reads'} weights that are "
            f"computed ({sources}), so channelcut cannot cut their channels")
    if "DequantizeLinear" in counts:
        line += ("; a quantized model: cut the float model, then quantize it (the RKNN "
                 "facade's build does so)")
    return line


def summary_lines(report: Report) -> list[str]:
    """Weights (bytes, MB = 10^6) and FLOPs (2 per multiply-add) before, after and the change;
    the change in FLOPs is unknown when either count misses nodes of unknown shape."""
    wb, wa, fb, fa = (report.weight_bytes_before, report.weight_bytes_after,
                      report.flops_before, report.flops_after)
    ub, ua = report.flops_unknown_before, report.flops_unknown_after
    change = "change unknown" if ub or ua else _signed_change(fb, fa, 1e9, "GFLOPs")
    lines = [
        f"weights: {wb / 1e6:.5f} MB -> {wa / 1e6:.5f} MB, {_signed_change(wb, wa, 1e6, 'MB')}",
        f"FLOPs:   {_flops(fb, ub)} -> {_flops(fa, ua)}, {change}",
        *([f"note: {report.assumed_dims}"] if report.assumed_dims else []),
        *([f"note: {initializer_inputs_line(report)}"] if report.initializer_inputs else []),
        *([f"note: {computed_weights_line(report)}"] if report.computed_weights else []),
    ]
    if report.latencies:
        times = ", ".join(f"{name} {seconds * 1e3:.3f} ms"
                          for name, seconds in report.latencies.items())
        lines.append(f"ONNX Runtime CPU, 1 thread, CPU time per run: {times}; "
                     f"kept: {report.kept}")
    if report.aligned is not None:
        a = report.aligned
        lines.append(f"aligned as {report.target or 'the target'} runs best (blocks of "
                     f"{a.align}; --align target), it would be: weights "
                     f"{_signed_change(wb, a.weight_bytes_after, 1e6, 'MB')}, FLOPs "
                     f"{_signed_change(fb, a.flops_after, 1e9, 'GFLOPs')}")
    return lines


def range_lines(report: Report) -> list[str]:
    """Which input ranges were assumed, and the channels cut because of their interval."""
    lines = []
    for name, pairs in report.input_ranges.items():
        shown = ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in pairs[:4])
        more = f", ... ({len(pairs)} channels)" if len(pairs) > 4 else ""
        lines.append(f"assumed input range: {name} in {shown}{more}")
    if report.range_cuts:
        lines.append(f"cut by range: {report.range_channels} channels")
        for c in report.range_cuts:
            bound = "" if c.bound is None else \
                f" (its input lies in [{c.bound[0]:.4g}, {c.bound[1]:.4g}])"
            lines.append(f"  {c.tensor} ({c.op_type} {c.node}): {c.count} channels always "
                         f"{c.value:g}{bound}")
    return lines
