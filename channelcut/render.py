"""Show a Report to a person: rich tables on a terminal, plain stable text everywhere else.

The plain text is what scripts and tests parse; its section titles and column order are part of
the CLI's interface. The rich form shows the same sections with the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from channelcut.report import Report, const_change_lines, summary_lines

SECTION_TITLES = {
    "consts": "const change detail",
    "summary": "summary",
    "layers": "channels per layer (kept/original)",
    "blockers": "blockers (channels kept only because of these)",
    "checks": "verification",
}


def plain_lines(report: Report, *, threshold: float | None = None) -> list[str]:
    """The whole report as plain text lines: consts, summary, layers, blockers, verification."""
    lines = [SECTION_TITLES["consts"], *const_change_lines(report), ""]
    lines += [SECTION_TITLES["summary"], *summary_lines(report), _removed_line(report), ""]
    lines.append(SECTION_TITLES["layers"])
    lines += _columns(["node", "op_type", "in_channels", "out_channels"], _layer_rows(report))
    lines += ["", SECTION_TITLES["blockers"]]
    lines += _columns(["op_type", "node", "channels", "reason"], _blocker_rows(report))
    lines += ["", _checks_title(report, threshold)]
    if report.checks:
        lines += _columns(["output", "cosine", "max_abs_error", "max_rel_error"],
                          _check_rows(report))
    return lines


def print_report(report: Report, console: Console, *, threshold: float | None = None) -> None:
    """The same sections as `plain_lines`, as rich tables for a terminal."""
    consts = Table(title=SECTION_TITLES["consts"], title_justify="left")
    for column in ("const name", "src_size", "pruned_size", "diff"):
        consts.add_column(column, justify="left" if column == "const name" else "right")
    for change in report.const_changes:
        consts.add_row(change.name, str(change.src_size), str(change.pruned_size),
                       str(change.diff))
    console.print(consts)
    console.print(f"[bold]{SECTION_TITLES['summary']}[/bold]")
    for line in [*summary_lines(report), _removed_line(report)]:
        console.print(line, highlight=False)
    sections = [
        ("layers", ["node", "op_type", "in_channels", "out_channels"], _layer_rows(report)),
        ("blockers", ["op_type", "node", "channels", "reason"], _blocker_rows(report)),
    ]
    for key, header, rows in sections:
        console.print(_table(SECTION_TITLES[key], header, rows))
    if report.checks:
        console.print(_table(_checks_title(report, threshold),
                             ["output", "cosine", "max_abs_error", "max_rel_error"],
                             _check_rows(report)))
    else:
        console.print(_checks_title(report, threshold))


def _removed_line(report: Report) -> str:
    return (f"removed: {report.removed_channels} channel positions in "
            f"{report.removed_groups} channel groups")


def _checks_title(report: Report, threshold: float | None) -> str:
    if not report.checks:
        return f"{SECTION_TITLES['checks']}: not run"
    if threshold is None:
        return SECTION_TITLES["checks"]
    return f"{SECTION_TITLES['checks']} (cosine threshold {threshold})"


def _layer_rows(report: Report) -> list[list[str]]:
    return [[layer.node, layer.op_type, _kept(layer.in_channels), _kept(layer.out_channels)]
            for layer in report.layers]


def _blocker_rows(report: Report) -> list[list[str]]:
    return [[b.op_type, b.node, str(b.channels), b.reason] for b in report.blockers]


def _check_rows(report: Report) -> list[list[str]]:
    return [[c.name, f"{c.cosine:.7f}", f"{c.max_abs_error:.3e}", f"{c.max_rel_error:.3e}"]
            for c in report.checks]


def _kept(channels: tuple[int, int]) -> str:
    """`12/16`: channels after the cut over channels before."""
    before, after = channels
    return f"{after}/{before}"


def _columns(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; `(none)` under the header when there are no rows."""
    if not rows:
        return ["(none)"]
    rows = [[cell or "-" for cell in row] for row in rows]  # an empty cell would shift columns
    widths = [max(len(row[i]) for row in [list(header), *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in [list(header), *rows]]


def _table(title: str, header: Sequence[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*(cell or "-" for cell in row))
    return table
