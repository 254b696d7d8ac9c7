"""Small server-rendered charts for the overview page (pure Python, no Django).

Each function lays a chart out; ``ui/svg/bars.svg`` and ``ui/svg/columns.svg`` draw it,
so every label passes through Django's autoescaping.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LABEL = 28


@dataclass(frozen=True)
class Bar:
    label: str
    title: str
    text: str
    x: float
    y: float
    width: float
    height: float
    text_x: float
    text_y: float
    alert: bool = False


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    baseline: float
    summary: str
    empty: bool


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "\u2026"


def bar_chart(
    rows: list[tuple[str, float, str]],
    *,
    maximum: float | None = None,
    width: int = 440,
    alert_above: float | None = None,
    summary: str = "",
) -> Chart:
    """Horizontal bars, one per (label, value, text) row; the longest fills the width
    unless ``maximum`` fixes the scale (1.0 for rates)."""
    row_h, label_w, text_w = 24, 170, 80
    top = maximum if maximum is not None else max((v for _, v, _ in rows), default=0.0)
    top = top or 1.0
    plot = width - label_w - text_w
    bars = []
    for i, (label, value, text) in enumerate(rows):
        w = max(0.0, min(1.0, value / top)) * plot
        y = i * row_h + 4
        bars.append(
            Bar(
                label=_shorten(label),
                title=f"{label}: {text}",
                text=text,
                x=label_w,
                y=y,
                width=round(max(w, 1.0 if value else 0.0), 2),
                height=row_h - 8,
                text_x=label_w + w + 6,
                text_y=y + row_h / 2,
                alert=alert_above is not None and value > alert_above,
            )
        )
    return Chart(
        width=width,
        height=max(1, len(rows)) * row_h + 8,
        bars=bars,
        baseline=label_w,
        summary=summary,
        empty=not rows,
    )


def column_chart(
    points: list[tuple[str, float]],
    *,
    width: int = 440,
    height: int = 140,
    label_every: int = 6,
    summary: str = "",
) -> Chart:
    """Vertical columns over time, one per (label, value); every ``label_every``-th
    column is labeled under the axis."""
    bottom, top_pad = 22, 16
    plot_h = height - bottom - top_pad
    n = max(1, len(points))
    step = width / n
    top = max((v for _, v in points), default=0.0) or 1.0
    bars = []
    for i, (label, value) in enumerate(points):
        h = value / top * plot_h
        x = i * step + 1
        bars.append(
            Bar(
                label=label if i % label_every == 0 else "",
                title=f"{label}: {value:g}",
                text=f"{value:g}" if value else "",
                x=round(x, 2),
                y=round(top_pad + plot_h - h, 2),
                width=round(max(step - 2, 1), 2),
                height=round(h, 2),
                text_x=round(x + step / 2 - 1, 2),
                text_y=round(top_pad + plot_h - h - 3, 2),
            )
        )
    return Chart(
        width=width,
        height=height,
        bars=bars,
        baseline=top_pad + plot_h,
        summary=summary,
        empty=not any(v for _, v in points),
    )
