"""Show a Report to a person: rich tables on a terminal, plain stable text everywhere else.

The plain text is what scripts and tests parse; its section titles and column order are part of
the CLI's interface. The rich form shows the same sections with the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from channelcut.report import Report, const_change_lines, range_lines, summary_lines

SECTION_TITLES = {
    "consts": "const change detail",
    "summary": "summary",
    "layers": "channels per layer (kept/original)",
    "sites": "folded and reinserted constants (what each adds, what the channels it frees save)",
    "blockers": "blockers (channels kept only because of these)",
    "checks": "verification",
}


def plain_lines(report: Report, *, threshold: float | None = None) -> list[str]:
    """The whole report as plain text lines: consts, summary, layers, blockers, verification."""
    lines = [SECTION_TITLES["consts"], *const_change_lines(report), ""]
    lines += [SECTION_TITLES["summary"], *summary_lines(report), _removed_line(report),
              *range_lines(report), ""]
    lines.append(SECTION_TITLES["layers"])
    lines += _columns(["node", "op_type", "in_channels", "out_channels"], _layer_rows(report))
    lines += ["", SECTION_TITLES["sites"]]
    lines += _columns(SITE_HEADER, _site_rows(report))
    lines += ["", SECTION_TITLES["blockers"]]
    lines += _columns(["op_type", "node", "channels", "reason"], _blocker_rows(report))
    lines += ["", _checks_title(report, threshold)]
    if report.checks:
        lines += _columns(["output", "cosine", "max_abs_error", "max_rel_error"],
                          _check_rows(report))
    return lines


def print_report(report: Report, console: Console, *, threshold: float | None = None) -> None:
    """The same sections as `plain_lines`, as rich tables for a terminal."""
    consts = [[c.name, str(c.src_size), str(c.pruned_size), str(c.diff)]
              for c in report.const_changes]
    _print_section(console, SECTION_TITLES["consts"],
                   ["const name", "src_size", "pruned_size", "diff"], consts, numeric_from=1)
    console.print(f"[bold]{SECTION_TITLES['summary']}[/bold]")
    for line in [*summary_lines(report), _removed_line(report), *range_lines(report)]:
        console.print(line, highlight=False)
    console.print()
    _print_section(console, SECTION_TITLES["layers"],
                   ["node", "op_type", "in_channels", "out_channels"], _layer_rows(report))
    _print_section(console, SECTION_TITLES["sites"], SITE_HEADER, _site_rows(report),
                   numeric_from=3)
    _print_section(console, SECTION_TITLES["blockers"],
                   ["op_type", "node", "channels", "reason"], _blocker_rows(report))
    if report.checks:
        _print_section(console, _checks_title(report, threshold),
                       ["output", "cosine", "max_abs_error", "max_rel_error"],
                       _check_rows(report), last=True)
    else:
        console.print(f"[bold]{_checks_title(report, threshold)}[/bold]")


def _removed_line(report: Report) -> str:
    line = (f"removed: {report.removed_channels} channel positions in "
            f"{report.removed_groups} channel groups")
    if report.removed_nodes:
        line += f", and {report.removed_nodes} nodes no output depends on"
    return line


def _checks_title(report: Report, threshold: float | None) -> str:
    if not report.checks:
        return f"{SECTION_TITLES['checks']}: not run"
    if threshold is None:
        return SECTION_TITLES["checks"]
    return f"{SECTION_TITLES['checks']} (cosine threshold {threshold})"


def _layer_rows(report: Report) -> list[list[str]]:
    return [[layer.node, layer.op_type, _kept(layer.in_channels), _kept(layer.out_channels)]
            for layer in report.layers]


SITE_HEADER = ["node", "op_type", "kind", "groups", "added bytes", "added FLOPs",
               "saved bytes", "saved FLOPs"]


def _site_rows(report: Report) -> list[list[str]]:
    return [[u.node, u.op_type, u.kind, str(u.groups), str(u.added_bytes), str(u.added_flops),
             str(u.saved_bytes), str(u.saved_flops)] for u in report.sites]


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


def _print_section(console: Console, title: str, header: Sequence[str],
                   rows: list[list[str]], numeric_from: int | None = None,
                   last: bool = False) -> None:
    """A titled table, or the title and `(none)` when there are no rows; a blank line after,
    unless it is the `last` section."""
    if not rows:
        console.print(f"[bold]{title}[/bold]")
        console.print("(none)")
    else:
        table = Table(title=title, title_justify="left", title_style="bold")
        for i, column in enumerate(header):
            numeric = numeric_from is not None and i >= numeric_from
            table.add_column(column, justify="right" if numeric else "left")
        for row in rows:
            table.add_row(*(cell or "-" for cell in row))
        console.print(table)
    if not last:
        console.print()
