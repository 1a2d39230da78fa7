"""Parallel coordinates in a terminal: axes, positions, brushing, and a braille drawing.

One vertical axis per varying parameter (most important first) and the metric last; each run is
a polyline through its value on every axis, coloured by its metric (dark blue = worst,
yellow = best). Lines are drawn on a braille canvas (2 × 4 dots a character cell), best runs on
top. A brush is a range on one axis; runs outside any brush fade to grey.

Used by `vqatune analyze --plot` and the TUI's Analysis screen. No textual, no torch: rich only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.style import Style
from rich.text import Span, Text

# Colour ramp for the metric (viridis, low -> high): readable on dark and light terminals.
RAMP = ("#440154", "#414487", "#2a788e", "#22a884", "#7ad151", "#fde725")
FADED = "grey30"
AXIS = "grey70"
BRAILLE = 0x2800
AXIS_KEY, BRUSH_KEY = -2, -3  # style keys of axis cells (outside / inside a brush)
BRUSH_STYLE = Style(color="white", bold=True, reverse=True)
# Dot (column, row) within a cell -> braille bit.
_DOT_VALUES = np.array([0x01, 0x02, 0x04, 0x40, 0x08, 0x10, 0x20, 0x80], dtype=np.uint8)
GLYPHS = [" "] + [chr(BRAILLE + b) for b in range(1, 256)]


@dataclass
class Axis:
    name: str
    kind: str  # "num", "log" or "cat"
    low: float = 0.0
    high: float = 1.0
    choices: list[Any] = field(default_factory=list)
    importance: float | None = None

    def position(self, value: Any) -> float:
        """Where a value sits on the axis: 0 at the bottom, 1 at the top."""
        if self.kind == "cat":
            if len(self.choices) < 2:
                return 0.5
            return self.choices.index(_key(value)) / (len(self.choices) - 1)
        x = float(value)
        lo, hi = self.low, self.high
        if self.kind == "log":
            x, lo, hi = math.log10(x), math.log10(lo), math.log10(hi)
        return 0.5 if hi == lo else (x - lo) / (hi - lo)

    def label_at(self, position: float) -> str:
        if self.kind == "cat":
            if not self.choices:
                return ""
            i = round(position * (len(self.choices) - 1))
            return str(self.choices[i])
        lo, hi = self.low, self.high
        if self.kind == "log":
            return _short(10 ** (math.log10(lo) + position * (math.log10(hi) - math.log10(lo))))
        return _short(lo + position * (hi - lo))


def _key(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


def _short(x: float) -> str:
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e5):
        return f"{x:.1e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{x:.3g}"


def build_axes(
    points: list[dict[str, Any]], params: list[str], metric: str, importances: dict | None = None
) -> list[Axis]:
    """Axes for `params` (in the given order) and the metric last, from the points' values.
    Each point is {"values": {...}, "metric": float}."""
    axes = []
    for name in params:
        values = [p["values"].get(name) for p in points]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric and values:
            lo, hi = min(values), max(values)
            kind = "log" if lo > 0 and hi / lo >= 100 else "num"
            axes.append(Axis(name, kind, float(lo), float(hi)))
        else:
            choices = sorted({_key(v) for v in values}, key=lambda v: (str(type(v)), v))
            axes.append(Axis(name, "cat", choices=choices))
        axes[-1].importance = (importances or {}).get(name)
    scores = [p["metric"] for p in points if p["metric"] is not None]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    axes.append(Axis(metric, "num", lo, hi))
    return axes


def positions(points: list[dict[str, Any]], axes: list[Axis]) -> np.ndarray:
    """(runs, axes) array of positions in [0, 1]; the last axis is the metric."""
    out = np.empty((len(points), len(axes)))
    for i, p in enumerate(points):
        for j, axis in enumerate(axes[:-1]):
            out[i, j] = axis.position(p["values"].get(axis.name))
        out[i, -1] = axes[-1].position(p["metric"])
    return out


@dataclass
class Brush:
    """A range [low, high] of positions (0..1) on one axis."""

    axis: int
    low: float
    high: float

    def moved(self, delta: float) -> Brush:
        width = self.high - self.low
        low = min(max(self.low + delta, 0.0), 1.0 - width)
        return Brush(self.axis, low, low + width)

    def resized(self, delta: float) -> Brush:
        mid = (self.low + self.high) / 2
        half = min(max((self.high - self.low) / 2 + delta, 0.025), 0.5)
        low = min(max(mid - half, 0.0), 1.0 - 2 * half)
        return Brush(self.axis, low, low + 2 * half)


def selected(pos: np.ndarray, brushes: list[Brush]) -> np.ndarray:
    """Runs inside every brush (all runs when there is none)."""
    keep = np.ones(len(pos), dtype=bool)
    for b in brushes:
        col = pos[:, b.axis]
        keep &= (col >= b.low - 1e-9) & (col <= b.high + 1e-9)
    return keep


@dataclass
class Layout:
    """Where things go in a width × height character area."""

    width: int
    height: int
    top: int = 1  # a row of axis names
    bottom: int = 2  # rows of axis min/max labels under the plot

    @property
    def plot_rows(self) -> int:
        return max(2, self.height - self.top - self.bottom)

    def axis_columns(self, n_axes: int) -> list[int]:
        if n_axes == 1:
            return [self.width // 2]
        left, right = 1, self.width - 2
        return [left + round(i * (right - left) / (n_axes - 1)) for i in range(n_axes)]

    def dot_y(self, position: np.ndarray) -> np.ndarray:
        """Dot row (0 = top) for positions in [0, 1]."""
        dots = self.plot_rows * 4 - 1
        return np.rint((1.0 - np.clip(position, 0.0, 1.0)) * dots).astype(np.int64)


def draw(
    pos: np.ndarray,
    metric_pos: np.ndarray,
    layout: Layout,
    keep: np.ndarray | None = None,
    color: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Braille bits and colour index per plot cell: (rows, width) uint8 and int16 arrays.

    Colour index -1 = empty, 0 = faded, 1.. = RAMP[i - 1]. Every segment is sampled at each dot
    column between its two axes; runs are drawn faded first, then by ascending metric, so the
    best selected runs end on top.
    """
    rows, width = layout.plot_rows, layout.width
    bits = np.zeros((rows, width), dtype=np.uint8)
    colours = np.full((rows, width), -1, dtype=np.int16)
    n_runs, n_axes = pos.shape
    if n_runs == 0:
        return bits, colours
    keep = np.ones(n_runs, dtype=bool) if keep is None else keep
    ramp = np.clip((metric_pos * len(RAMP)).astype(np.int64), 0, len(RAMP) - 1) + 1
    run_colour = np.where(keep, ramp if color else 1, 0)
    order = np.lexsort((metric_pos, keep))  # faded first, then worst to best
    cols = layout.axis_columns(n_axes)
    xs_all, ys_all, cs_all = [], [], []
    for a in range(n_axes - 1):
        x0, x1 = cols[a] * 2, cols[a + 1] * 2
        dx = np.arange(x0, x1 + 1)
        t = (dx - x0) / max(x1 - x0, 1)
        y0 = layout.dot_y(pos[order, a]).astype(np.float64)
        y1 = layout.dot_y(pos[order, a + 1]).astype(np.float64)
        ys = np.rint(y0[:, None] + (y1 - y0)[:, None] * t[None, :]).astype(np.int64)
        xs_all.append(np.broadcast_to(dx, ys.shape))
        ys_all.append(ys)
        cs_all.append(np.broadcast_to(run_colour[order][:, None], ys.shape))
    # Run-major order (each run's segments together) so later runs overwrite earlier ones.
    xs = np.concatenate(xs_all, axis=1).ravel()
    ys = np.concatenate(ys_all, axis=1).ravel()
    cs = np.concatenate(cs_all, axis=1).ravel()
    cell_r, cell_c = ys // 4, xs // 2
    inside = (cell_r >= 0) & (cell_r < rows) & (cell_c >= 0) & (cell_c < width)
    cell_r, cell_c, xs, ys, cs = (a[inside] for a in (cell_r, cell_c, xs, ys, cs))
    # Which of its 8 dots each cell has: a boolean per (cell, dot), then the dots' bit values.
    cell = cell_r * width + cell_c
    dots = np.zeros((rows * width, 8), dtype=bool)
    dots[cell, (xs % 2) * 4 + ys % 4] = True
    bits[:] = (dots @ _DOT_VALUES).reshape(rows, width)
    colours[cell_r, cell_c] = cs  # numpy keeps the last write of repeated indices
    return bits, colours


def render(
    points: list[dict[str, Any]],
    axes: list[Axis],
    width: int,
    height: int,
    *,
    brushes: list[Brush] = (),
    current: int | None = None,
    color: bool = True,
    pos: np.ndarray | None = None,
) -> Text:
    """The whole picture as rich Text: axis names, the plot with its axes, then each axis's
    top (max) and bottom (min) value."""
    layout = Layout(width, height)
    pos = positions(points, axes) if pos is None else pos
    keep = selected(pos, list(brushes))
    metric_pos = pos[:, -1] if len(pos) else np.zeros(0)
    bits, colours = draw(pos, metric_pos, layout, keep, color)
    cols = layout.axis_columns(len(axes))
    brush_of = {b.axis: b for b in brushes}
    out = Text(no_wrap=True, overflow="crop")
    out.append_text(_label_row([a.name for a in axes], cols, width, current))
    out.append("\n")
    styles = {-1: None, AXIS_KEY: Style.parse(AXIS), BRUSH_KEY: BRUSH_STYLE}
    styles.update({0: Style.parse(FADED), **{i + 1: Style(color=c) for i, c in enumerate(RAMP)}})
    if not color:
        styles.update({0: Style(dim=True), **{i + 1: None for i in range(len(RAMP))}})
    bits_rows, colour_rows = bits.tolist(), colours.tolist()
    lines, spans, offset = [], [], len(out.plain)
    for r in range(layout.plot_rows):
        row_hi, row_lo = 1.0 - r / layout.plot_rows, 1.0 - (r + 1) / layout.plot_rows
        chars = [GLYPHS[b] for b in bits_rows[r]]
        keys = colour_rows[r]
        for a, c in enumerate(cols):
            if not bits_rows[r][c]:
                chars[c] = "┃" if a == current else "│"
            b = brush_of.get(a)
            keys[c] = (
                BRUSH_KEY if b is not None and b.low <= row_hi and b.high >= row_lo else AXIS_KEY
            )
        lines.append("".join(chars))
        c = 0
        for key, group in itertools.groupby(keys):
            n = len(list(group))
            if styles[key] is not None:
                spans.append(Span(offset + c, offset + c + n, styles[key]))
            c += n
        offset += width + 1
    out.append_text(Text("\n".join(lines) + "\n", no_wrap=True))
    out.spans.extend(spans)
    out.append_text(_label_row([a.label_at(1.0) for a in axes], cols, width, None))
    out.append("\n")
    out.append_text(_label_row([a.label_at(0.0) for a in axes], cols, width, None))
    return out


def _label_row(labels: list[str], cols: list[int], width: int, current: int | None) -> Text:
    """Labels centred on their axis columns, each cut to the space between neighbours."""
    row = [" "] * width
    marks: list[tuple[int, int]] = []
    gap = (cols[1] - cols[0]) if len(cols) > 1 else width
    for i, (label, c) in enumerate(zip(labels, cols)):
        room = max(1, gap - 1)
        text = label[:room]
        start = min(max(0, c - len(text) // 2), width - len(text))
        if i == 0:
            start = 0
        elif i == len(cols) - 1:
            start = max(0, width - len(text))
        for k, ch in enumerate(text):
            if 0 <= start + k < width:
                row[start + k] = ch
        if i == current:
            marks.append((start, start + len(text)))
    out = Text("".join(row), no_wrap=True)
    for lo, hi in marks:
        out.stylize("bold reverse", lo, hi)
    return out
