"""Bar charts drawn on the server as inline SVG: no script, no CDN, and nothing for the CSP to allow.

Colours are SVG presentation attributes and CSS classes (the CSP forbids inline style), bar
heights are integer arithmetic on minor units, and every label is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Bar:
    label: str
    value: int  # minor units (or a count); never negative on these charts
    caption: str  # the value as a person reads it, e.g. "$1,250.00"
    tone: str = "normal"  # normal, warn or bad: a CSS class


def bar_chart(
    bars: list[Bar], *, chart_id: str, title: str, height: int = 180, bar_width: int = 56, gap: int = 28
) -> Markup:
    """An accessible SVG bar chart (role img, a title, one <title> per bar for hover)."""
    top, bottom = 22, 34  # room for the value above a bar and the label below the axis
    plot = height - top - bottom
    width = gap + len(bars) * (bar_width + gap)
    peak = max((b.value for b in bars), default=0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-labelledby="{escape(chart_id)}-title">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<line class="axis" x1="0" y1="{top + plot}" x2="{width}" y2="{top + plot}" stroke="#8a94a6" />',
    ]
    for n, bar in enumerate(bars):
        h = 0 if peak <= 0 else max(1 if bar.value > 0 else 0, bar.value * plot // peak)
        x = gap + n * (bar_width + gap)
        y = top + plot - h
        center = x + bar_width // 2
        parts.append(
            f'<g class="bar bar-{escape(bar.tone)}" data-value="{bar.value}">'
            f"<title>{escape(bar.label)}: {escape(bar.caption)}</title>"
            f'<rect x="{x}" y="{y}" width="{bar_width}" height="{h}" rx="3" />'
            f'<text class="value" x="{center}" y="{y - 6}" text-anchor="middle">{escape(bar.caption)}</text>'
            f'<text class="label" x="{center}" y="{top + plot + 20}" text-anchor="middle">'
            f"{escape(bar.label)}</text>"
            "</g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text above is escaped
