"""Show a Report to a person: rich tables on a terminal, plain stable text everywhere else.

Both put the summary first (what was cut, at what shapes, in which mode; weights, parameters
and FLOPs before and after; the verification; what blocked the most), then the layers by name,
then the constants tied to their layers, then the details. The plain text fits 80 columns:
names are shortened in the middle and long reasons wrapped, numbers are never cut. Its section
titles and column order are part of the CLI's interface (scripts parse it).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from channelcut.report import (Report, layer_name, most_blocked, params_line,
                               summary_lines)

if TYPE_CHECKING:
    from rich.console import Console

WIDTH = 80
SECTION_TITLES = {
    "summary": "summary",
    "layers": "channels per layer (kept/original)",
    "consts": "const change detail",
    "sites": "folds and reinsertions (+ what each adds, - what the channels it frees save)",
    "blockers": "blockers (channels kept only because of these)",
    "checks": "verification",
    "seconds": "time per stage (seconds)",
}
MODES = {"full": "full cut", "zero": "zero-only cut"}
# labels for summary_lines' longer lines, by how they start
EXTRA_LABELS = {"ONNX Runtime": "timed:", "aligned": "aligned:"}


@dataclass(frozen=True)
class Column:
    """A table column: numbers are right-aligned and never shortened; text is shortened in
    the middle (`wrap`: wrapped onto continuation lines instead) when the table is too wide."""

    title: str
    numeric: bool = False
    wrap: bool = False


def plain_lines(report: Report, *, threshold: float | None = None,
                timings: bool = False) -> list[str]:
    """The whole report as plain text lines of at most 80 columns (`timings`: add the time
    per stage)."""
    lines = [SECTION_TITLES["summary"], *_wrapped(summary_rows(report, threshold)), ""]
    for key, header, rows in _tables(report, threshold):
        lines.append(_checks_title(report, threshold) if key == "checks" else SECTION_TITLES[key])
        if key == "consts":
            lines += _grouped_by_layer(rows)
        elif rows or key != "checks":
            lines += table_lines(header, rows)
        lines.append("")
    if timings:
        lines += [SECTION_TITLES["seconds"], *table_lines(*_seconds_table(report)), ""]
    return lines[:-1]


def print_report(report: Report, console: Console, *, threshold: float | None = None,
                 timings: bool = False) -> None:
    """The same sections as `plain_lines`, as rich tables for a terminal."""
    from rich.table import Table  # noqa: PLC0415 - rich is only needed on a terminal

    console.print(f"[bold]{SECTION_TITLES['summary']}[/bold]")
    summary = Table.grid(padding=(0, 1))
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column()
    for label, text in summary_rows(report, threshold):
        summary.add_row(label, text)
    console.print(summary, highlight=False)
    sections = list(_tables(report, threshold))
    if timings:
        sections.append(("seconds", *_seconds_table(report)))
    for key, header, rows in sections:
        console.print()
        title = _checks_title(report, threshold) if key == "checks" else SECTION_TITLES[key]
        if not rows:
            console.print(f"[bold]{title}[/bold]")
            if key != "checks":
                console.print("(none)")
            continue
        table = Table(title=title, title_justify="left", title_style="bold")
        grouped = key == "consts"  # rows under a line naming their layer, as in the text
        for column in header[1:] if grouped else header:
            table.add_column(column.title, justify="right" if column.numeric else "left",
                             no_wrap=column.numeric, overflow="fold")
        for k, row in enumerate(rows):
            if grouped:
                if k == 0 or row[0] != rows[k - 1][0]:
                    table.add_row(f"[bold]{row[0]}[/bold]", end_section=False)
                row = ["  " + row[1], *row[2:]]
            table.add_row(*(cell or "-" for cell in row))
        console.print(table)


# --- the summary ------------------------------------------------------------------------------

def summary_rows(report: Report, threshold: float | None = None) -> list[tuple[str, str]]:
    """(label, text) lines of the summary, in order."""
    rows = []
    if report.model_path:
        rows.append(("model:", report.model_path))
    if report.input_shapes:
        rows.append(("inputs:", ", ".join(f"{name} {'x'.join(map(str, dims))}"
                                          for name, dims in report.input_shapes.items())))
    mode = f"{MODES.get(report.mode, report.mode)}, objective {report.objective}, " \
           f"align {report.align}"
    if report.target:
        rows.append(("target:", report.target))
    rows.append(("mode:", mode))
    weights, flops, *more = summary_lines(report)
    rows.append(("weights:", weights.split(":", 1)[1].strip()))
    rows.append(("params:", params_line(report).split(":", 1)[1].strip()))
    rows.append(("FLOPs:", flops.split(":", 1)[1].strip()))
    for line in more:  # the summary's extra lines (the guard's times, notes)
        label, _, text = line.partition(": ")
        short = len(label) <= 12 and " " not in label
        extra = next((v for k, v in EXTRA_LABELS.items() if line.startswith(k)), "note:")
        rows.append((f"{label}:", text) if short else (extra, line))
    rows.append(("removed:", removed_text(report)))
    rows += range_rows(report)
    rows.append(("verified:", verified_text(report, threshold)))
    rows.append(("blocked most:", blocked_text(report)))
    return rows


def range_rows(report: Report) -> list[tuple[str, str]]:
    """The input ranges assumed, and the channels cut because their interval is one point
    (each tensor's, with the bound of the clamp's input that proves it); none without."""
    rows = [("input range:", f"{name} in " + ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in
                                                      pairs[:4])
             + (f", ... ({len(pairs)} channels)" if len(pairs) > 4 else ""))
            for name, pairs in report.input_ranges.items()]
    if report.range_cuts:
        shown = [f"{c.tensor} {c.channels if len(c.channels) <= 6 else c.count} always "
                 f"{c.value:g}" + ("" if c.bound is None else
                                   f" (input in [{c.bound[0]:.4g}, {c.bound[1]:.4g}])")
                 for c in report.range_cuts[:3]]
        more = f"; {len(report.range_cuts) - 3} more tensors" if len(report.range_cuts) > 3 \
            else ""
        rows.append(("by range:", f"{report.range_channels} channels cut, dead by their "
                                  f"interval: {'; '.join(shown)}{more}"))
    return rows


def removed_text(report: Report) -> str:
    text = (f"{report.removed_channels} channel positions in {report.removed_groups} channel "
            "groups")
    if report.removed_nodes:
        text += f", and {report.removed_nodes} nodes no output depends on"
    return text


def verified_text(report: Report, threshold: float | None) -> str:
    """One sentence: the worst cosine and error over the outputs, and on what inputs."""
    if not report.checks:
        return "not run"
    worst = min(c.cosine for c in report.checks)
    outputs = f"{len(report.checks)} output{'s' if len(report.checks) > 1 else ''}"
    limit = f" (threshold {threshold})" if threshold is not None else ""
    text = (f"{outputs}, cosine >= {worst:.7f}{limit}, max abs error "
            f"{max(c.max_abs_error for c in report.checks):.3e}")
    return f"{text}, on {report.verify_inputs}" if report.verify_inputs else text


def blocked_text(report: Report) -> str:
    """The op types that kept the most channels, most first."""
    ranked = most_blocked(report)
    if not ranked:
        return "nothing"
    shown = ", ".join(f"{op} ({n} channels)" for op, n in ranked[:3])
    return shown + (f" and {len(ranked) - 3} more" if len(ranked) > 3 else "")


def _wrapped(rows: list[tuple[str, str]]) -> list[str]:
    """`label text` lines, the text wrapped at 80 columns under itself (no word is split)."""
    indent = max(len(label) for label, _ in rows) + 1
    lines = []
    for label, text in rows:
        if label == "model:":  # a path has no spaces to wrap at
            text = shorten(text, WIDTH - indent)
        lines += textwrap.wrap(text, WIDTH, initial_indent=label.ljust(indent),
                               subsequent_indent=" " * indent, break_long_words=False,
                               break_on_hyphens=False) or [label]
    return lines


# --- the tables -------------------------------------------------------------------------------

LAYER_HEADER = [Column("layer"), Column("op"), Column("in", True), Column("out", True),
                Column("FLOPs", True)]
CONST_HEADER = [Column("layer"), Column("const name"), Column("role"), Column("src_size", True),
                Column("pruned_size", True), Column("diff", True)]
SITE_HEADER = [Column("layer"), Column("kind"), Column("groups", True), Column("+bytes", True),
               Column("+FLOPs", True), Column("-bytes", True), Column("-FLOPs", True)]
BLOCKER_HEADER = [Column("op_type"), Column("layer"), Column("channels", True),
                  Column("reason", wrap=True)]
CHECK_HEADER = [Column("output"), Column("cosine", True), Column("max_abs_error", True),
                Column("max_rel_error", True)]


def _tables(report: Report, threshold: float | None
            ) -> list[tuple[str, list[Column], list[list[str]]]]:
    return [
        ("layers", LAYER_HEADER, _layer_rows(report)),
        ("consts", CONST_HEADER, _const_rows(report)),
        ("sites", SITE_HEADER, _site_rows(report)),
        ("blockers", BLOCKER_HEADER, _blocker_rows(report)),
        ("checks", CHECK_HEADER, _check_rows(report)),
    ]


def _checks_title(report: Report, threshold: float | None) -> str:
    if not report.checks:
        return f"{SECTION_TITLES['checks']}: not run"
    if threshold is None:
        return SECTION_TITLES["checks"]
    return f"{SECTION_TITLES['checks']} (cosine threshold {threshold})"


def _layer_rows(report: Report) -> list[list[str]]:
    return [[layer.layer, layer.op_type, kept(layer.in_channels), kept(layer.out_channels),
             _flops(layer.flops)] for layer in report.layers]


def _grouped_by_layer(rows: list[list[str]]) -> list[str]:
    """The constants table with each run of rows of one layer under that layer's name."""
    if not rows:
        return ["(none)"]
    body = table_lines(CONST_HEADER[1:], [["  " + row[1], *row[2:]] for row in rows])
    lines = [body[0]]
    for k, row in enumerate(rows):
        if k == 0 or row[0] != rows[k - 1][0]:
            lines.append(shorten(row[0], WIDTH))
        lines.append(body[k + 1])
    return lines


def _const_rows(report: Report) -> list[list[str]]:
    return [[layer_label(c.node), c.name, c.role, str(c.src_size), str(c.pruned_size),
             str(c.diff)] for c in report.const_changes]


def layer_label(node: str) -> str:
    """`layer1.0 (Add)`: the layer's name and, when the exporter's node name says it, its op."""
    name = layer_name(node)
    op = node.rstrip("/").rsplit("/", 1)[-1] if name != node else ""
    return f"{name} ({op})" if op else (name or "(no layer)")


def _site_rows(report: Report) -> list[list[str]]:
    return [[layer_name(u.node), u.kind, str(u.groups), str(u.added_bytes), str(u.added_flops),
             str(u.saved_bytes), str(u.saved_flops)] for u in report.sites]


def _blocker_rows(report: Report) -> list[list[str]]:
    return [[b.op_type, layer_name(b.node), str(b.channels), b.reason] for b in report.blockers]


def _check_rows(report: Report) -> list[list[str]]:
    return [[c.name, f"{c.cosine:.7f}", f"{c.max_abs_error:.3e}", f"{c.max_rel_error:.3e}"]
            for c in report.checks]


def _seconds_table(report: Report) -> tuple[list[Column], list[list[str]]]:
    rows = [[stage, f"{seconds:.3f}"] for stage, seconds in report.seconds.items()]
    if rows:
        rows.append(["total", f"{sum(report.seconds.values()):.3f}"])
    return [Column("stage"), Column("seconds", True)], rows


def kept(channels: tuple[int, int]) -> str:
    """`12/16`: channels after the cut over channels before."""
    before, after = channels
    return f"{after}/{before}"


def _flops(flops: tuple[int, int]) -> str:
    """`57.8M/231M`: FLOPs after the cut over before, three significant digits."""
    before, after = flops
    return f"{si(after)}/{si(before)}"


def si(n: float) -> str:
    """`231M`, `57.8M`, `1.16G`, `950`: three significant digits and an SI prefix."""
    rounded = float(f"{n:.3g}")  # first, so that 999.96M reads 1.00G
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(rounded) >= scale:
            value = rounded / scale
            return f"{value:.{2 - len(str(int(abs(value)))) + 1}f}{prefix}"
    return f"{rounded:.0f}"


def table_lines(header: Sequence[Column], rows: list[list[str]], width: int = WIDTH
                ) -> list[str]:
    """Columns two spaces apart in at most `width` characters; `(none)` when there are no rows.

    When the natural widths do not fit, the widest text column is narrowed first (its cells
    shortened in the middle, or wrapped onto continuation lines for a `wrap` column), down to
    8 characters; numbers keep their width."""
    if not rows:
        return ["(none)"]
    rows = [[cell or "-" for cell in row] for row in rows]  # an empty cell would shift columns
    titles = [c.title for c in header]
    widths = [max(len(row[i]) for row in [titles, *rows]) for i in range(len(header))]
    while sum(widths) + 2 * (len(widths) - 1) > width:
        text = [i for i, c in enumerate(header)
                if not c.numeric and widths[i] > max(8, len(titles[i]))]
        if not text:
            break
        widest = max(text, key=lambda i: widths[i])
        widths[widest] -= sum(widths) + 2 * (len(widths) - 1) - width
        widths[widest] = max(widths[widest], 8, len(titles[widest]))
    lines = []
    for row in [titles, *rows]:
        cells = []
        for i, (cell, column) in enumerate(zip(row, header)):
            if column.wrap and len(cell) > widths[i]:
                cells.append(textwrap.wrap(cell, widths[i], break_long_words=False) or [cell])
            else:
                cells.append([shorten(cell, widths[i])])
        for k in range(max(len(c) for c in cells)):
            parts = []
            for i, (column, cell) in enumerate(zip(header, cells)):
                part = cell[k] if k < len(cell) else ""
                parts.append(part.rjust(widths[i]) if column.numeric else part.ljust(widths[i]))
            lines.append("  ".join(parts).rstrip())
    return lines


def shorten(text: str, width: int) -> str:
    """`text`, or its start and (longer) end around `...` when it is wider than `width`."""
    if len(text) <= width:
        return text
    head = (width - 3) // 3
    return text[:head] + "..." + text[len(text) - (width - 3 - head):]
