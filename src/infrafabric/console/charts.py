"""Charts as server-rendered SVG: nothing to fetch or run in the browser, nothing for a CSP to allow.

Written here rather than taken from a chart library: the views need two shapes (bars, a line), and SVG
made on the server keeps the page free of script the console did not write. Every label is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 560
BAR_HEIGHT = 18
GAP = 6
LABEL_W = 170


def _num(value: float) -> str:
    return f"{value:.1f}"


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, unit: str = "", limit: float | None = None,
              css: str = "bars") -> Markup:
    """Horizontal bars, one per (label, value); ``limit`` draws every bar against one scale (e.g. 100 %)."""
    items = list(items)[:40]
    top = limit if limit is not None else max([v for _, v in items] + [0.0])
    scale = (WIDTH - LABEL_W - 70) / top if top > 0 else 0.0
    height = max(len(items), 1) * (BAR_HEIGHT + GAP) + 24
    parts = [f'<svg class="chart {escape(css)}" role="img" viewBox="0 0 {WIDTH} {height}" '
             f'width="{WIDTH}" height="{height}" aria-label="{escape(title)}"><title>{escape(title)}</title>']
    if not items:
        parts.append('<text x="8" y="18" class="empty">no data yet</text>')
    for i, (label, value) in enumerate(items):
        y = 4 + i * (BAR_HEIGHT + GAP)
        w = max(min(value, top) * scale, 0.0) if top > 0 else 0.0
        level = "" if limit is None else (" over" if value >= limit else (" warn" if value >= 0.8 * limit else ""))
        parts.append(f'<text x="{LABEL_W - 6}" y="{y + 13}" class="label" text-anchor="end">'
                     f'{escape(label[:28])}</text>'
                     f'<rect x="{LABEL_W}" y="{y}" width="{_num(w)}" height="{BAR_HEIGHT}" class="bar{level}"/>'
                     f'<text x="{_num(LABEL_W + w + 6)}" y="{y + 13}" class="value">'
                     f'{escape(f"{value:,.2f}")}{escape(unit)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(series: Sequence[tuple[str, Sequence[float]]], *, title: str, unit: str = "",
               height: int = 140, top: float | None = None) -> Markup:
    """One polyline per (name, values), values evenly spaced in time (oldest first)."""
    series = [(name, list(values)) for name, values in series if values][:6]
    peak = top if top is not None else max([max(v) for _, v in series] + [1.0])
    plot_w, plot_h = WIDTH - 60, height - 30
    parts = [f'<svg class="chart line" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
             f'height="{height}" aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<line x1="40" y1="{plot_h + 6}" x2="{WIDTH - 10}" y2="{plot_h + 6}" class="axis"/>',
             f'<text x="4" y="14" class="value">{escape(f"{peak:,.0f}")}{escape(unit)}</text>']
    if not series:
        parts.append('<text x="48" y="40" class="empty">no data yet</text>')
    for idx, (name, values) in enumerate(series):
        n = len(values)
        step = plot_w / max(n - 1, 1)
        points = " ".join(f"{_num(40 + i * step)},{_num(6 + plot_h - min(max(v, 0.0), peak) / peak * plot_h)}"
                          for i, v in enumerate(values))
        parts.append(f'<polyline points="{points}" class="series s{idx}"><title>{escape(name)}</title></polyline>')
        parts.append(f'<text x="{44 + idx * 130}" y="{height - 4}" class="legend s{idx}">{escape(name[:24])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
