"""Inline SVG charts drawn in Python: no JavaScript, fonts, images or other assets.

Every string placed in the markup goes through ``esc``; numbers are formatted here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

LEFT, RIGHT, TOP, BOTTOM = 60, 14, 46, 34
MAX_X_LABELS = 8


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


@dataclass(frozen=True)
class Series:
    name: str
    color: str
    values: Sequence[float | None]
    """One value per x position; None leaves a gap (lines) or no bar."""
    dashed: bool = False


def number(value: float) -> str:
    """A number for people: thousands separated, short decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def _tick_label(value: float) -> str:
    for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return number(value)


def _ticks(top: float, integer: bool) -> list[float]:
    """0 and a few round steps up to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    count = math.ceil(top / step - 1e-9)
    return [i * step for i in range(count + 1)]


class _Frame:
    """Axes, title and legend of one chart; maps values to pixels."""

    def __init__(
        self,
        chart_id: str,
        title: str,
        labels: Sequence[str],
        top: float,
        *,
        width: int,
        height: int,
        integer: bool,
    ) -> None:
        self.width, self.height = width, height
        self.n = max(1, len(labels))
        self.ticks = _ticks(top, integer)
        self.top = self.ticks[-1]
        self.plot_w = width - LEFT - RIGHT
        self.plot_h = height - TOP - BOTTOM
        self.parts = [
            f'<svg class="chart" data-chart="{esc(chart_id)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{esc(title)}"><title>{esc(title)}</title>',
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
            f'<text x="{LEFT}" y="16" class="ct">{esc(title)}</text>',
        ]
        for t in self.ticks:
            y = self.y(t)
            self.parts.append(
                f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                f'class="grid"/><text x="{LEFT - 6}" y="{y + 4:.1f}" class="yl">'
                f"{esc(_tick_label(t))}</text>"
            )
        step = math.ceil(len(labels) / MAX_X_LABELS) or 1
        for i in range(0, len(labels), step):
            self.parts.append(
                f'<text x="{self.x_mid(i):.1f}" y="{height - BOTTOM + 16}" class="xl">'
                f"{esc(labels[i])}</text>"
            )
        self.parts.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{self.y(0):.1f}" '
            f'y2="{self.y(0):.1f}" class="axis"/>'
        )

    def y(self, value: float) -> float:
        return TOP + self.plot_h * (1 - value / self.top)

    def x_mid(self, i: int) -> float:
        return LEFT + self.plot_w * (i + 0.5) / self.n

    def legend(self, series: Sequence[Series]) -> None:
        x = float(LEFT)
        for s in series:
            dash = ' stroke-dasharray="5 3"' if s.dashed else ""
            self.parts.append(
                f'<line x1="{x:.1f}" x2="{x + 14:.1f}" y1="30" y2="30" stroke="{esc(s.color)}"'
                f' stroke-width="6"{dash}/><text x="{x + 18:.1f}" y="34" class="lg">'
                f"{esc(s.name)}</text>"
            )
            x += 30 + 7 * len(s.name)

    def empty(self, message: str) -> None:
        self.parts.append(
            f'<text x="{LEFT + self.plot_w / 2:.1f}" y="{TOP + self.plot_h / 2:.1f}" '
            f'class="empty">{esc(message)}</text>'
        )

    def close(self) -> str:
        return "".join(self.parts) + "</svg>"


def bars(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    width: int = 560,
    height: int = 200,
    empty: str = "no jobs",
    scale: float = 0,
) -> str:
    """Grouped bars: one group per x label, one bar per series; the y axis reaches at least
    ``scale`` (so small multiples can share one)."""
    top = max((v or 0 for s in series for v in s.values), default=0)
    frame = _Frame(
        chart_id, title, labels, max(top, scale), width=width, height=height, integer=True
    )
    frame.legend(series)
    group = frame.plot_w / frame.n
    bar = max(1.0, group * 0.8 / max(1, len(series)))
    for k, s in enumerate(series):
        for i, v in enumerate(s.values):
            if not v:
                continue
            x = LEFT + group * i + group * 0.1 + bar * k
            y = frame.y(v)
            frame.parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{frame.y(0) - y:.1f}" fill="{esc(s.color)}">'
                f"<title>{esc(s.name)} {esc(labels[i])}: {esc(number(v))}</title></rect>"
            )
    if top <= 0:
        frame.empty(empty)
    return frame.close()


def lines(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    width: int = 560,
    height: int = 200,
    integer: bool = True,
    empty: str = "nothing used",
) -> str:
    """Polylines with a dot per point; None values break a line. Dashed series (limits) are
    drawn as steps, level across each x position."""
    top = max((v or 0 for s in series for v in s.values), default=0)
    frame = _Frame(chart_id, title, labels, top, width=width, height=height, integer=integer)
    frame.legend(series)
    for s in series:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        run: list[str] = []
        runs: list[list[str]] = []
        for i, v in enumerate(s.values):
            if v is None:
                if run:
                    runs.append(run)
                run = []
                continue
            if s.dashed:  # a limit: level across the whole of each x position
                half = frame.plot_w / frame.n / 2
                level = frame.y(v)
                run += [
                    f"{frame.x_mid(i) - half:.1f},{level:.1f}",
                    f"{frame.x_mid(i) + half:.1f},{level:.1f}",
                ]
            else:
                run.append(f"{frame.x_mid(i):.1f},{frame.y(v):.1f}")
        if run:
            runs.append(run)
        for points in runs:
            if len(points) == 1:  # a lone point: draw a short tick so it shows
                px, py = points[0].split(",")
                points = [f"{float(px) - 3:.1f},{py}", f"{float(px) + 3:.1f},{py}"]
            frame.parts.append(
                f'<polyline points="{" ".join(points)}" fill="none" stroke="{esc(s.color)}" '
                f'stroke-width="2.5"{dash}/>'
            )
        if not s.dashed:
            for i, v in enumerate(s.values):
                if v is not None:
                    frame.parts.append(
                        f'<circle cx="{frame.x_mid(i):.1f}" cy="{frame.y(v):.1f}" r="3" '
                        f'fill="{esc(s.color)}"><title>{esc(s.name)} {esc(labels[i])}: '
                        f"{esc(number(v))}</title></circle>"
                    )
    if top <= 0:
        frame.empty(empty)
    return frame.close()


def hbars(
    chart_id: str,
    title: str,
    items: Sequence[tuple[str, int]],
    color: str,
    *,
    width: int = 1000,
    label_width: int = 420,
) -> str:
    """Horizontal bars, one per (label, count), largest first as given."""
    row = 24
    height = 40 + row * max(1, len(items)) + 10
    top = max((v for _, v in items), default=0)
    scale_w = width - label_width - 70
    parts = [
        f'<svg class="chart" data-chart="{esc(chart_id)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">'
        f"<title>{esc(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="18" class="ct">{esc(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = 36 + row * i
        shown = label if len(label) <= 60 else label[:57] + "..."
        w = scale_w * value / top if top else 0
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 15}" class="hl">{esc(shown)}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{max(w, 1.0):.1f}" height="{row - 7}" '
            f'fill="{esc(color)}"><title>{esc(label)}: {esc(number(value))}</title></rect>'
            f'<text x="{label_width + w + 6:.1f}" y="{y + 15}" class="hv">'
            f"{esc(number(value))}</text>"
        )
    if not items:
        parts.append(f'<text x="{width / 2:.0f}" y="52" class="empty">none</text>')
    return "".join(parts) + "</svg>"
