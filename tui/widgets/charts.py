"""Live line charts over textual-plotext, cheap however long the history.

Points are appended to growing numpy buffers; a redraw downsamples every series to about the
widget's width (the terminal cannot show more) and redraws happen at most `max_fps` times a
second, however fast events arrive. A chart can smooth its series (engine.curves: EMA with
debiasing or a moving window) at redraw time; the buffers keep the raw points.
"""

from __future__ import annotations

import os

import numpy as np
from textual_plotext import PlotextPlot
from vqatune.engine import curves


def downsample(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about n points: the min and max of n/2 equal buckets, in x order, so spikes
    survive. The same rule as engine.metrics.downsample, vectorised for redraws of long
    histories (100,000 points in well under a millisecond)."""
    size = len(y)
    buckets = n // 2
    if size <= n or buckets < 1:
        return x, y
    per = size // buckets
    body = buckets * per  # the remainder joins as its own small bucket
    starts = np.arange(0, body, per)
    blocks = y[:body].reshape(buckets, per)
    i_min = starts + blocks.argmin(axis=1)
    i_max = starts + blocks.argmax(axis=1)
    if body < size:
        tail = y[body:]
        i_min = np.append(i_min, body + tail.argmin())
        i_max = np.append(i_max, body + tail.argmax())
    idx = np.unique(np.concatenate([i_min, i_max]))  # sorted, min == max merged
    return x[idx], y[idx]


class Series:
    """An append-only (x, y) buffer with amortised growth."""

    def __init__(self, capacity: int = 1024):
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self.n = 0

    def append(self, x: float, y: float) -> None:
        if self.n == len(self._x):
            self._x = np.concatenate([self._x, np.empty_like(self._x)])
            self._y = np.concatenate([self._y, np.empty_like(self._y)])
        self._x[self.n] = x
        self._y[self.n] = y
        self.n += 1

    def extend(self, xs, ys) -> None:
        xs = np.asarray(xs, dtype=np.float64)
        ys = np.asarray(ys, dtype=np.float64)
        need = self.n + len(xs)
        if need > len(self._x):
            size = max(need, 2 * len(self._x))
            self._x = np.concatenate([self._x[: self.n], np.empty(size - self.n)])
            self._y = np.concatenate([self._y[: self.n], np.empty(size - self.n)])
        self._x[self.n : need] = xs
        self._y[self.n : need] = ys
        self.n = need

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.n]


class MetricChart(PlotextPlot):
    """A titled chart of named series; call `add` freely, it redraws on its own schedule."""

    def __init__(
        self,
        title: str,
        *,
        xlabel: str = "step",
        max_fps: float = 1.0,
        id: str | None = None,
        classes: str | None = None,
    ):
        super().__init__(id=id, classes=classes)
        self.title = title
        self.xlabel = xlabel
        self.series: dict[str, Series] = {}
        self.max_fps = max_fps
        self.dirty = False
        self.redraws = 0
        self.smoothing: tuple[str, float] = ("none", 0.0)  # engine.curves method and factor

    def on_mount(self) -> None:
        super().on_mount()
        if self.app.no_color or os.environ.get("NO_COLOR") is not None:
            self.theme = "clear"
        self.set_interval(1.0 / self.max_fps, self.redraw_if_dirty)
        self.redraw()

    def add(self, name: str, x: float, y: float) -> None:
        self.series.setdefault(name, Series()).append(x, y)
        self.dirty = True

    def extend(self, name: str, xs, ys) -> None:
        if len(xs):
            self.series.setdefault(name, Series()).extend(xs, ys)
            self.dirty = True

    def clear(self) -> None:
        self.series.clear()
        self.dirty = True

    def redraw_if_dirty(self) -> None:
        if self.dirty:
            self.redraw()

    def redraw(self) -> None:
        """Rebuild the plot from downsampled series; plotext draws it at the next render."""
        self.dirty = False
        self.redraws += 1
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        method, factor = self.smoothing
        smoothed = method != "none"
        plt.title(self.title + (f" · {curves.describe(method, factor)}" if smoothed else ""))
        plt.xlabel(self.xlabel)
        width = max(self.size.width, 20)
        for name, s in self.series.items():
            if s.n == 0:
                continue
            y = np.asarray(curves.smooth(s.y.tolist(), method, factor)) if smoothed else s.y
            xs, ys = downsample(s.x, y, 2 * width)
            plt.plot(xs.tolist(), ys.tolist(), label=name, marker="braille")
        self.refresh()
