"""The SHAP waterfall chart, laid out server-side (pure Python, no Django).

A waterfall reads top to bottom: the explainer's base value (what the model says
before it sees this case), then each feature's contribution as a bar that starts where
the previous one ended (largest first; red pushes the score up, blue pulls it down),
the remaining small contributions folded into one "other features" bar, and last the
model's output for this case. Base value plus every bar equals the output, so the
chart adds up. The x axis is labeled with the output space (log-odds or probability)
and the class the explanation is for.

``waterfall_layout`` computes geometry and text; ``waterfall_svg`` writes the SVG
markup in one pass (a template loop cost several milliseconds per page), escaping every
piece of text with ``html.escape``: feature names and values come from producers and
are never trusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

TOP = 10
ROW = 26
LABEL_WIDTH = 250
VALUE_WIDTH = 70
TOP_MARGIN = 8
AXIS_HEIGHT = 44
MAX_LABEL = 36


@dataclass(frozen=True)
class WaterfallRow:
    kind: str  # base | up | down | other-up | other-down | output
    label: str  # what the row shows at its left (truncated)
    title: str  # the full text, shown as a tooltip
    amount: str  # the number shown after the bar
    x: float
    width: float
    y: float
    text_x: float
    text_anchor: str
    marker_x: float  # for base and output rows: where the value sits on the axis


@dataclass(frozen=True)
class Tick:
    x: float
    text: str


@dataclass(frozen=True)
class Waterfall:
    width: int
    height: int
    rows: list[WaterfallRow]
    ticks: list[Tick]
    axis_y: float
    axis_title: str
    plot_left: float
    plot_right: float
    connectors: list[tuple[float, float, float]]  # (x, y1, y2): dotted steps between rows
    summary: str  # one sentence for screen readers


def _shorten(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def format_value(value: Any) -> str:
    """A feature value as reviewers read it."""
    if value is None:
        return "hidden"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}"
    return str(value)


def _signed(x: float) -> str:
    return f"{x:+.3f}" if abs(x) >= 0.0005 or x == 0 else f"{x:+.2e}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    span = hi - lo
    if span <= 0 or not math.isfinite(span):
        return [lo]
    raw = span / n
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def waterfall_layout(
    *,
    base_value: float,
    model_output: float,
    contributions: list[dict[str, Any]],
    output: str,
    explained_label: str,
    top: int = TOP,
    width: int = 720,
) -> Waterfall:
    """Lay out the chart for an explanation as ``explanation_for_reviewer`` gives it
    (contributions already sorted by size, sensitive features already folded)."""
    shown = contributions[:top]
    rest = contributions[top:]
    steps: list[tuple[str, str, str, float]] = []  # (kind, label, title, contribution)
    for row in shown:
        c = float(row["contribution"])
        name = str(row["feature"])
        if row.get("value") is None and name == "sensitive features":
            text = name
        else:
            text = f"{name} = {format_value(row.get('value'))}"
        steps.append(("up" if c >= 0 else "down", _shorten(text), text, c))
    if rest:
        c = sum(float(r["contribution"]) for r in rest)
        text = f"{len(rest)} other features"
        steps.append(("other-up" if c >= 0 else "other-down", text, text, c))

    # The running total after each step, to find the axis range.
    points = [base_value]
    running = base_value
    for *_, c in steps:
        running += c
        points.append(running)
    points.append(model_output)
    lo, hi = min(points), max(points)
    if output == "probability":
        lo, hi = min(lo, 0.0), max(hi, 1.0)
    pad = (hi - lo) * 0.06 or 0.5
    lo, hi = lo - pad, hi + pad

    plot_left = float(LABEL_WIDTH)
    plot_right = float(width - VALUE_WIDTH)

    def sx(v: float) -> float:
        return round(plot_left + (v - lo) / (hi - lo) * (plot_right - plot_left), 2)

    rows: list[WaterfallRow] = []
    connectors: list[tuple[float, float, float]] = []
    y = float(TOP_MARGIN)
    bar_h = ROW - 8

    def marker_row(kind: str, label: str, value: float) -> WaterfallRow:
        x = sx(value)
        return WaterfallRow(
            kind=kind,
            label=label,
            title=f"{label}: {value:.4f}",
            amount=f"{value:.3f}",
            x=x,
            width=0,
            y=y,
            text_x=plot_right + 6,
            text_anchor="start",
            marker_x=x,
        )

    rows.append(marker_row("base", "base value E[f(x)]", base_value))
    running = base_value
    for kind, label, title, c in steps:
        connectors.append((sx(running), y + 4, y + ROW + 4))
        y += ROW
        start, end = running, running + c
        x0, x1 = sorted((sx(start), sx(end)))
        rows.append(
            WaterfallRow(
                kind=kind,
                label=label,
                title=f"{title}: {_signed(c)}",
                amount=_signed(c),
                x=x0,
                width=max(1.0, round(x1 - x0, 2)),
                y=y,
                text_x=plot_right + 6,
                text_anchor="start",
                marker_x=0,
            )
        )
        running = end
    connectors.append((sx(running), y + 4, y + ROW + 4))
    y += ROW
    rows.append(marker_row("output", "model output f(x)", model_output))
    axis_y = y + bar_h + 6
    space = "log-odds" if output == "log_odds" else output.replace("_", " ")
    ticks = [Tick(sx(t), f"{t:g}") for t in nice_ticks(lo, hi)]
    ups = [s for s in steps if s[3] >= 0]
    summary = (
        f"From a base value of {base_value:.3f} to a model output of {model_output:.3f} "
        f"({space} of {explained_label!r}); {len(ups)} of {len(steps)} bars push it up."
    )
    return Waterfall(
        width=width,
        height=int(axis_y + AXIS_HEIGHT),
        rows=rows,
        ticks=ticks,
        axis_y=axis_y,
        axis_title=f"model output: {space} of \u201c{explained_label}\u201d",
        plot_left=plot_left,
        plot_right=plot_right,
        connectors=connectors,
        summary=summary,
    )


def _n(x: float) -> str:
    """A coordinate, short."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def waterfall_svg(chart: Waterfall) -> str:
    """The chart as an inline SVG element; all text escaped."""
    e = escape
    out = [
        f'<svg class="waterfall" viewBox="0 0 {chart.width} {chart.height}" '
        f'width="{chart.width}" height="{chart.height}" role="img" '
        f'aria-label="{e(chart.summary)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{e(chart.summary)}</title>",
    ]
    out += [
        f'<line class="step" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(y1)}" y2="{_n(y2)}"/>'
        for x, y1, y2 in chart.connectors
    ]
    label_x = _n(chart.plot_left - 8)
    for row in chart.rows:
        y = _n(row.y)
        out.append(f'<g class="row {row.kind}"><title>{e(row.title)}</title>')
        out.append(
            f'<text class="label" x="{label_x}" y="{y}" dy="13" text-anchor="end">'
            f"{e(row.label)}</text>"
        )
        if row.kind in ("base", "output"):
            mx = _n(row.marker_x)
            out.append(
                f'<line class="marker" x1="{mx}" x2="{mx}" y1="{y}" y2="{_n(row.y + 18)}"/>'
                f'<circle class="marker" cx="{mx}" cy="{_n(row.y + 9)}" r="4"/>'
            )
        else:
            out.append(
                f'<rect class="bar" x="{_n(row.x)}" y="{y}" width="{_n(row.width)}" '
                f'height="18" rx="2"/>'
            )
        out.append(
            f'<text class="amount" x="{_n(row.text_x)}" y="{y}" dy="13" '
            f'text-anchor="{row.text_anchor}">{e(row.amount)}</text></g>'
        )
    ay = _n(chart.axis_y)
    out.append(
        f'<line class="axis" x1="{_n(chart.plot_left)}" x2="{_n(chart.plot_right)}" '
        f'y1="{ay}" y2="{ay}"/>'
    )
    for tick in chart.ticks:
        tx = _n(tick.x)
        out.append(
            f'<line class="tick" x1="{tx}" x2="{tx}" y1="{ay}" y2="{_n(chart.axis_y + 4)}"/>'
            f'<text class="tick" x="{tx}" y="{ay}" dy="16" text-anchor="middle">'
            f"{e(tick.text)}</text>"
        )
    out.append(
        f'<text class="axis-title" x="{_n(chart.plot_left)}" y="{ay}" dy="36">'
        f"{e(chart.axis_title)}</text></svg>"
    )
    return "".join(out)
