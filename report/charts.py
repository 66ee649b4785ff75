"""Small inline SVG charts for the HTML report: no JavaScript, no external resources.

Each function takes plain numbers and returns one ``<svg>`` element as a string; every
label goes through `html.escape`, so data (segment names, reasons) cannot inject markup.
Hovering a point shows its ``<title>`` as a native tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

LEGEND_H = 18  # px above the plot area taken by a legend
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif"


@dataclass(frozen=True, slots=True)
class Series:
    """One named line or set of bars: x and y of equal length, drawn in `color`."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Marker:
    """A point on a step chart with a tooltip (e.g. a decision)."""

    x: float
    y: float
    color: str
    label: str  # short text next to the point
    tooltip: str  # shown on hover


@dataclass(frozen=True, slots=True)
class Frame:
    """Pixel geometry of a plot area inside an SVG of `width` x `height`."""

    width: int = 640
    height: int = 300
    left: int = 56
    right: int = 16
    top: int = 16 + LEGEND_H
    bottom: int = 44

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (1, 2, 2.5 or 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks: list[float] = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


_TIME_STEPS = (
    1,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    604800,
)


def time_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """About `count` round Unix-second ticks in [lo, hi]: whole minutes, hours or days."""
    span = max(hi - lo, 1.0)
    step = next((s for s in _TIME_STEPS if span / s <= count), _TIME_STEPS[-1])
    first = math.ceil(lo / step) * step
    return [float(t) for t in range(int(first), int(hi) + 1, step)] or [lo]


def time_format(lo: float, hi: float) -> Callable[[float], str]:
    """A tick label format that is unambiguous over [lo, hi] (UTC)."""
    from datetime import UTC, datetime

    span = hi - lo
    fmt = "%H:%M:%S" if span < 300 else ("%H:%M" if span < 86_400 else "%m-%d %H:%M")
    return lambda t: datetime.fromtimestamp(t, UTC).strftime(fmt)


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:g}"


def _scale(lo: float, hi: float, a: float, b: float) -> Callable[[float], float]:
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _axes(
    f: Frame,
    xticks: Sequence[float],
    yticks: Sequence[float],
    sx: Callable[[float], float],
    sy: Callable[[float], float],
    xlabel: str,
    ylabel: str,
    xfmt: Callable[[float], str] = _fmt_tick,
    yfmt: Callable[[float], str] = _fmt_tick,
) -> list[str]:
    out = []
    for t in yticks:
        y = sy(t)
        out.append(
            f'<line x1="{f.left}" x2="{f.width - f.right}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#e4e7eb"/>'
            f'<text x="{f.left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(yfmt(t))}</text>'
        )
    base = f.height - f.bottom
    for t in xticks:
        x = sx(t)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#666"/>'
            f'<text x="{x:.1f}" y="{base + 17}" text-anchor="middle">{escape(xfmt(t))}</text>'
        )
    out.append(
        f'<line x1="{f.left}" x2="{f.width - f.right}" y1="{base}" y2="{base}" stroke="#666"/>'
        f'<text x="{f.left + f.plot_w / 2:.1f}" y="{f.height - 6}" text-anchor="middle">'
        f"{escape(xlabel)}</text>"
        f'<text transform="translate(13 {f.top + f.plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(ylabel)}</text>'
    )
    return out


def _svg(f: Frame, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {f.width} {f.height}" '
        f'width="{f.width}" height="{f.height}" role="img" aria-label="{escape(title)}" '
        f'style="{FONT};font-size:11px;max-width:100%;height:auto">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _legend(f: Frame, series: Sequence[tuple[str, str, bool]]) -> list[str]:
    """One line above the plot area (the frame's top margin must leave room: LEGEND_H)."""
    out = []
    x, y = f.left, f.top - LEGEND_H + 8
    for name, color, dashed in series:
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        out.append(
            f'<line x1="{x}" x2="{x + 18}" y1="{y}" y2="{y}" '
            f'stroke="{color}" stroke-width="3"{dash}/>'
            f'<text x="{x + 23}" y="{y + 4}">{escape(name)}</text>'
        )
        x += 34 + 6.5 * len(name)
    return out


def empty_chart(title: str, message: str = "no data", frame: Frame = Frame()) -> str:
    body = [
        f'<text x="{frame.width / 2}" y="{frame.height / 2}" text-anchor="middle" '
        f'fill="#888">{escape(message)}</text>'
    ]
    return _svg(frame, title, body)


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
    xfmt: Callable[[float], str] = _fmt_tick,
    yfmt: Callable[[float], str] = _fmt_tick,
    guides: Sequence[float] = (),
    frame: Frame = Frame(),
) -> str:
    """Lines through the points of each series (e.g. latency CDFs); `guides` are dashed y
    reference lines (e.g. 0.95 and 0.99)."""
    points = [(x, y) for s in series for x, y in zip(s.xs, s.ys, strict=True)]
    points = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if not points:
        return empty_chart(title, frame=frame)
    xticks = nice_ticks(min(0.0, min(p[0] for p in points)), max(p[0] for p in points))
    lo, hi = ylim if ylim else (min(0.0, min(p[1] for p in points)), max(p[1] for p in points))
    yticks = nice_ticks(lo, hi, 4) if not ylim else nice_ticks(lo, hi, 5)
    sx = _scale(xticks[0], xticks[-1], frame.left, frame.width - frame.right)
    sy = _scale(yticks[0], yticks[-1], frame.height - frame.bottom, frame.top)
    body = _axes(frame, xticks, yticks, sx, sy, xlabel, ylabel, xfmt, yfmt)
    for g in guides:
        y = sy(g)
        ty = y - 3 if g == max(guides) else y + 11  # close guides: one label above, one below
        body.append(
            f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="#999" stroke-dasharray="3 3"/>'
            f'<text x="{frame.width - frame.right - 2}" y="{ty:.1f}" text-anchor="end" '
            f'fill="#777">{escape(yfmt(g))}</text>'
        )
    for s in series:
        pts = [
            f"{sx(x):.1f},{sy(y):.1f}"
            for x, y in zip(s.xs, s.ys, strict=True)
            if math.isfinite(x) and math.isfinite(y)
        ]
        if not pts:
            continue
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        body.append(
            f'<polyline fill="none" stroke="{s.color}" stroke-width="2.2"{dash} '
            f'points="{" ".join(pts)}"><title>{escape(s.name)}</title></polyline>'
        )
    body += _legend(frame, [(s.name, s.color, s.dashed) for s in series])
    return _svg(frame, title, body)


def bar_chart(
    title: str,
    edges: Sequence[float],
    series: Sequence[Series],
    *,
    xlabel: str,
    ylabel: str,
    yfmt: Callable[[float], str] = _fmt_tick,
    frame: Frame = Frame(),
) -> str:
    """A histogram: bins between consecutive `edges`, one bar per series side by side;
    each series' ys holds one value per bin."""
    nbins = len(edges) - 1
    if nbins < 1 or not series or not any(any(v > 0 for v in s.ys) for s in series):
        return empty_chart(title, frame=frame)
    top = max(max(s.ys) for s in series)
    yticks = nice_ticks(0.0, top, 4)
    sx = _scale(edges[0], edges[-1], frame.left, frame.width - frame.right)
    sy = _scale(0.0, yticks[-1], frame.height - frame.bottom, frame.top)
    xticks = nice_ticks(edges[0], edges[-1], 5)
    body = _axes(frame, xticks, yticks, sx, sy, xlabel, ylabel, yfmt=yfmt)
    width = frame.plot_w / nbins
    inner = max(1.0, (width - 2) / len(series))
    for k, s in enumerate(series):
        for i, v in enumerate(s.ys):
            if v <= 0:
                continue
            x = sx(edges[i]) + 1 + k * inner
            y = sy(v)
            tip = f"{s.name}: {yfmt(v)} in [{edges[i]:g}, {edges[i + 1]:g})"
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{inner:.1f}" '
                f'height="{frame.height - frame.bottom - y:.1f}" fill="{s.color}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    body += _legend(frame, [(s.name, s.color, False) for s in series])
    return _svg(frame, title, body)


def step_chart(
    title: str,
    xs: Sequence[float],
    ys: Sequence[float],
    markers: Sequence[Marker],
    *,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float],
    xfmt: Callable[[float], str] = _fmt_tick,
    yfmt: Callable[[float], str] = _fmt_tick,
    color: str = "#4c78a8",
    time_axis: bool = False,
    yticks: Sequence[float] | None = None,
    frame: Frame = Frame(),
) -> str:
    """A value that holds until the next change (the ramp's traffic share over time), with
    a marker per event. `time_axis`: xs are Unix seconds, ticked and labelled as UTC time."""
    if not xs:
        return empty_chart(title, frame=frame)
    x_lo, x_hi = min(xs), max(xs)
    if x_hi <= x_lo:
        x_hi = x_lo + 60
    pad = (x_hi - x_lo) * 0.03
    sx = _scale(x_lo - pad, x_hi + pad, frame.left, frame.width - frame.right)
    sy = _scale(ylim[0], ylim[1], frame.height - frame.bottom, frame.top)
    xticks = time_ticks(x_lo - pad, x_hi + pad) if time_axis else nice_ticks(x_lo, x_hi, 6)
    xticks = [t for t in xticks if x_lo - pad <= t <= x_hi + pad]
    if time_axis:
        xfmt = time_format(x_lo, x_hi)
    yticks = list(yticks) if yticks is not None else nice_ticks(ylim[0], ylim[1], 4)
    body = _axes(frame, xticks, yticks, sx, sy, xlabel, ylabel, xfmt, yfmt)
    pts = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if i:
            pts.append(f"{sx(x):.1f},{sy(ys[i - 1]):.1f}")
        pts.append(f"{sx(x):.1f},{sy(y):.1f}")
    body.append(
        f'<polyline fill="none" stroke="{color}" stroke-width="2.2" points="{" ".join(pts)}"/>'
    )
    for m in markers:
        cx, cy = sx(m.x), sy(m.y)
        body.append(
            f'<g><circle cx="{cx:.1f}" cy="{cy:.1f}" r="5.5" fill="{m.color}" '
            f'stroke="#fff" stroke-width="1.5"/><title>{escape(m.tooltip)}</title></g>'
        )
        if m.label:
            body.append(
                f'<text x="{cx:.1f}" y="{cy - 9:.1f}" text-anchor="middle" fill="{m.color}">'
                f"{escape(m.label)}</text>"
            )
    return _svg(frame, title, body)
