"""The report as one self-contained HTML file: the summary, a per-layer picture (inline SVG) of
the channels each layer kept and cut and its FLOPs before and after, in network order, the
blockers with the op that caused each, the verification, then the tables of the text report.

Nothing is loaded from anywhere: no scripts, fonts, images or style sheets outside the file.
"""

from __future__ import annotations

from html import escape

from channelcut.render import (SECTION_TITLES, layer_label, removed_text, si, summary_rows,
                               verified_text)
from channelcut.report import LayerChange, Report, layer_name, most_blocked

KEPT, CUT, BEFORE, AFTER = "#2f6fb5", "#f2a65a", "#d5d9de", "#2f9e6e"
ROW, LABEL, BAR, GAP = 16, 230, 360, 40  # px: a layer's row, the label column, a bar, between

STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232b;
       margin: 24px auto; max-width: 1200px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #5b6570; margin-bottom: 16px; word-break: break-all; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }
.card { border: 1px solid #dde1e6; border-radius: 8px; padding: 10px 14px; min-width: 200px; }
.card .k { color: #5b6570; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 20px; font-weight: 600; } .card .d { color: #2f9e6e; font-weight: 600; }
.card .d.up { color: #c0392b; }
table { border-collapse: collapse; margin: 6px 0; }
td, th { padding: 3px 10px; border-bottom: 1px solid #eceef1; text-align: left;
         vertical-align: top; }
th { font-weight: 600; background: #f6f7f9; } td.n { text-align: right;
     font-variant-numeric: tabular-nums; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; margin: 0; }
dl.summary dt { color: #5b6570; } dl.summary dd { margin: 0; word-break: break-word; }
.ok { color: #2f9e6e; font-weight: 600; } .bad { color: #c0392b; font-weight: 600; }
details { margin: 8px 0; } summary { cursor: pointer; font-weight: 600; }
svg text { font: 11px system-ui, sans-serif; fill: #1d232b; }
svg .legend { font-size: 12px; }
"""


def html_report(report: Report, *, threshold: float | None = None, title: str = "") -> str:
    """The whole report as one HTML document (a string)."""
    name = title or report.model_path or "model"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>channelcut report: {escape(name)}</title><style>{STYLE}</style></head><body>",
        "<h1>channelcut report</h1>", f'<div class="sub">{escape(name)}</div>',
        _cards(report, threshold), _summary(report, threshold),
        "<h2>Channels and FLOPs per layer, in network order</h2>", layer_picture(report),
        f"<h2>{escape(SECTION_TITLES['blockers'])}</h2>", _blockers(report),
        f"<h2>{escape(SECTION_TITLES['checks'])}</h2>", _checks(report, threshold),
        _details(report), "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _change(before: int, after: int) -> str:
    if not before:
        return ""
    percent = 100.0 * (after - before) / before
    return f'<span class="d{" up" if percent > 0 else ""}">{percent:+.1f}%</span>'


def _at_least(flops: int, unknown_nodes: int) -> str:
    return f"{'&ge; ' if unknown_nodes else ''}{flops / 1e9:.3f} G"


def _threshold(threshold: float | None) -> str:
    return "" if threshold is None else f"worst output; threshold {threshold}"


def _cards(report: Report, threshold: float | None) -> str:
    cards = [
        ("weights", f"{report.weight_bytes_before / 1e6:.2f} MB",
         f"{report.weight_bytes_after / 1e6:.2f} MB",
         _change(report.weight_bytes_before, report.weight_bytes_after)),
        ("parameters", f"{report.params_before / 1e6:.2f} M",
         f"{report.params_after / 1e6:.2f} M", _change(report.params_before, report.params_after)),
        # a count that misses nodes of unknown shape is a lower bound, and its change unknown
        ("FLOPs", _at_least(report.flops_before, report.flops_unknown_before),
         _at_least(report.flops_after, report.flops_unknown_after),
         "change unknown" if report.flops_unknown_before or report.flops_unknown_after
         else _change(report.flops_before, report.flops_after)),
    ]
    html = ['<div class="cards">']
    for label, before, after, change in cards:
        html.append(f'<div class="card"><div class="k">{label}</div>'
                    f'<div class="v">{before} &rarr; {after}</div><div>{change}</div></div>')
    html.append(f'<div class="card"><div class="k">verification</div>'
                f'<div class="v">{_verdict(report)}</div><div>{_threshold(threshold)}</div>'
                '</div></div>')
    return "".join(html)


def _verdict(report: Report) -> str:
    if not report.checks:
        return '<span style="color:#5b6570">not run</span>'
    worst = min(c.cosine for c in report.checks)
    return f'<span class="ok">cosine {worst:.7f}</span>'


def _summary(report: Report, threshold: float | None) -> str:
    rows = "".join(f"<dt>{escape(label.rstrip(':'))}</dt><dd>{escape(text)}</dd>"
                   for label, text in summary_rows(report, threshold))
    return f'<h2>{escape(SECTION_TITLES["summary"])}</h2><dl class="summary">{rows}</dl>'


def layer_picture(report: Report) -> str:
    """Inline SVG, one row per weighted layer in network order: its output channels kept
    (blue) and cut (orange) as a share of the original, and its FLOPs before (grey) and
    after (green) on one scale for every layer."""
    layers = report.network or report.layers
    if not layers:
        return "<p>(no weighted layers)</p>"
    top = 44
    width = LABEL + 2 * BAR + GAP + 190
    height = top + ROW * len(layers) + 8
    most = max(max(layer.flops) for layer in layers) or 1
    x_channels, x_flops = LABEL, LABEL + BAR + GAP + 90
    svg = [f'<svg width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="channels and FLOPs per layer">']
    svg += _legend(x_channels, x_flops)
    for k, layer in enumerate(layers):
        y = top + k * ROW
        if k % 2:
            svg.append(f'<rect x="0" y="{y}" width="{width}" height="{ROW}" fill="#f6f7f9"/>')
        svg.append(f'<text x="{LABEL - 8}" y="{y + 12}" text-anchor="end">'
                   f'{escape(_short(layer.layer or layer.node, 34))} '
                   f'<tspan fill="#5b6570">{escape(layer.op_type)}</tspan>'
                   f'<title>{escape(layer.layer)}: {escape(layer.node)}</title></text>')
        svg += _channel_bar(layer, x_channels, y)
        svg += _flops_bar(layer, x_flops, y, most)
    svg.append("</svg>")
    return "".join(svg)


def _legend(x_channels: int, x_flops: int) -> list[str]:
    def key(x: int, color: str, text: str) -> str:
        return (f'<rect x="{x}" y="22" width="12" height="12" fill="{color}"/>'
                f'<text class="legend" x="{x + 17}" y="32">{text}</text>')

    return [f'<text class="legend" x="{x_channels}" y="14" font-weight="600">output channels '
            f'(share of the original)</text>',
            key(x_channels, KEPT, "kept"), key(x_channels + 70, CUT, "cut"),
            f'<text class="legend" x="{x_flops}" y="14" font-weight="600">FLOPs (one scale for '
            f'all layers)</text>',
            key(x_flops, BEFORE, "before"), key(x_flops + 80, AFTER, "after")]


def _channel_bar(layer: LayerChange, x: int, y: int) -> list[str]:
    original, kept = layer.out_channels
    share = kept / original if original > 0 else 1.0
    kept_width = round(BAR * share, 1)
    return [f'<rect x="{x}" y="{y + 3}" width="{kept_width}" height="{ROW - 6}" fill="{KEPT}"/>',
            f'<rect x="{x + kept_width}" y="{y + 3}" width="{round(BAR - kept_width, 1)}" '
            f'height="{ROW - 6}" fill="{CUT}"/>',
            f'<text x="{x + BAR + 6}" y="{y + 12}">{kept}/{original}</text>']


def _flops_bar(layer: LayerChange, x: int, y: int, most: int) -> list[str]:
    before, after = layer.flops
    return [f'<rect x="{x}" y="{y + 3}" width="{round(BAR * before / most, 1)}" '
            f'height="{ROW - 6}" fill="{BEFORE}"/>',
            f'<rect x="{x}" y="{y + 5}" width="{round(BAR * after / most, 1)}" '
            f'height="{ROW - 10}" fill="{AFTER}"/>',
            f'<text x="{x + BAR + 6}" y="{y + 12}">{si(after)} / {si(before)}</text>']


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width // 3] + "\u2026" + \
        text[len(text) - (width - 1 - width // 3):]


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td{" class=n" if i in numeric else ""}>{escape(cell)}</td>'
        for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _blockers(report: Report) -> str:
    ranked = most_blocked(report)
    intro = ("<p>Kept most: " + escape(", ".join(f"{op} ({n} channels)" for op, n in ranked))
             + "</p>") if ranked else ""
    rows = [[b.op_type, layer_name(b.node) or "-", b.node or "-", str(b.channels), b.reason]
            for b in report.blockers]
    return intro + _table(["op", "layer", "node", "channels", "reason"], rows, {3})


def _checks(report: Report, threshold: float | None) -> str:
    if not report.checks:
        return "<p>not run</p>"
    text = f"<p>{escape(verified_text(report, threshold))}</p>"
    rows = [[c.name, f"{c.cosine:.7f}", f"{c.max_abs_error:.3e}", f"{c.max_rel_error:.3e}"]
            for c in report.checks]
    return text + _table(["output", "cosine", "max abs error", "max rel error"], rows, {1, 2, 3})


def _details(report: Report) -> str:
    layers = [[layer.layer, layer.node, layer.op_type,
               f"{layer.in_channels[1]}/{layer.in_channels[0]}",
               f"{layer.out_channels[1]}/{layer.out_channels[0]}",
               f"{layer.flops[1]}", f"{layer.flops[0]}"] for layer in report.layers]
    consts = [[layer_label(c.node), c.name, c.role, str(c.src_size), str(c.pruned_size),
               str(c.diff)] for c in report.const_changes]
    sites = [[layer_name(u.node), u.node, u.kind, str(u.groups), str(u.added_bytes),
              str(u.added_flops), str(u.saved_bytes), str(u.saved_flops)] for u in report.sites]
    seconds = [[stage, f"{s:.3f}"] for stage, s in report.seconds.items()]
    sections = [
        (f"{SECTION_TITLES['layers']}: {len(layers)} layers lost channels",
         _table(["layer", "node", "op", "in", "out", "FLOPs after", "FLOPs before"], layers,
                {3, 4, 5, 6})),
        (f"{SECTION_TITLES['consts']}: {len(consts)} constants",
         _table(["layer", "const name", "role", "src_size", "pruned_size", "diff"], consts,
                {3, 4, 5})),
        (f"{SECTION_TITLES['sites']}: {len(sites)}",
         _table(["layer", "node", "kind", "groups", "added bytes", "added FLOPs", "saved bytes",
                 "saved FLOPs"], sites, {3, 4, 5, 6, 7})),
        (f"{SECTION_TITLES['seconds']}", _table(["stage", "seconds"], seconds, {1})),
    ]
    removed = f"<p>{escape(removed_text(report))}</p>"
    return "<h2>Details</h2>" + removed + "".join(
        f"<details><summary>{escape(title)}</summary>{body}</details>"
        for title, body in sections)
