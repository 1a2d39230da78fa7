"""The parallel-coordinates widget: draws tui/parcoords.py's picture at its own size."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.widget import Widget
from vqatune.tui import parcoords


class ParallelCoordinates(Widget):
    """Runs as lines across one axis per parameter and the metric; brushes fade the rest.

    Positions are computed once per data set; a redraw (a key, a resize) only draws."""

    can_focus = True

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.points: list[dict] = []
        self.axes: list[parcoords.Axis] = []
        self.pos = np.zeros((0, 0))
        self.brushes: dict[int, parcoords.Brush] = {}
        self.current = 0

    def set_data(self, points: list[dict], axes: list[parcoords.Axis]) -> None:
        self.points, self.axes = points, axes
        self.pos = parcoords.positions(points, axes) if points and axes else np.zeros((0, 0))
        self.brushes.clear()
        self.current = (
            len(axes) - 1 if axes else 0
        )  # start on the metric: "where are the good runs"
        self.refresh()

    def selected(self) -> np.ndarray:
        return parcoords.selected(self.pos, list(self.brushes.values()))

    def move_axis(self, delta: int) -> None:
        if self.axes:
            self.current = (self.current + delta) % len(self.axes)
            self.refresh()

    def toggle_brush(self) -> None:
        if not self.axes:
            return
        if self.current in self.brushes:
            del self.brushes[self.current]
        else:
            self.brushes[self.current] = parcoords.Brush(self.current, 0.5, 1.0)
        self.refresh()

    def change_brush(self, move: float = 0.0, grow: float = 0.0) -> None:
        b = self.brushes.get(self.current)
        if b is None:
            return
        self.brushes[self.current] = b.moved(move).resized(grow) if grow else b.moved(move)
        self.refresh()

    def clear_brushes(self) -> None:
        self.brushes.clear()
        self.refresh()

    def render(self) -> Text:
        if not self.axes or not self.points:
            return Text("no finished run with a parameter that varies", style="dim")
        return parcoords.render(
            self.points,
            self.axes,
            max(self.size.width, 20),
            max(self.size.height, 6),
            brushes=list(self.brushes.values()),
            current=self.current,
            color=not self.app.no_color,
            pos=self.pos,
        )
