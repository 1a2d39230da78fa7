"""Curves as people read them: smoothing, the x axis, and each curve's min / max / best.

- smooth(): none, an exponential moving average debiased as TensorBoard fixed it (its early
  points are not pulled towards the first value, tensorboard#610), or a trailing moving window.
- x axes: the optimiser step, wall time since the run started, or samples seen
  (step × effective batch × world size).
- stats(): min, max, the best point (highest for accuracies, lowest for losses) and the last.

The stored history is never changed: these are views of it. Light module: no torch, no textual.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SMOOTHINGS = ("none", "ema", "window")
X_AXES = ("step", "time", "samples")
# The factor each smoothing starts with, and the steps a "change the factor" key walks.
DEFAULT_FACTORS = {"none": 0.0, "ema": 0.6, "window": 5}
FACTOR_STEPS = {
    "none": (0.0,),
    "ema": (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99),
    "window": (1, 3, 5, 11, 21, 51, 101),
}
X_LABELS = {"step": "step", "time": "wall time (s)", "samples": "samples seen"}


def check_smoothing(method: str, factor: float | None) -> float:
    """The factor to use for `method` (its default when None); ValueError names the mistake."""
    if method not in SMOOTHINGS:
        raise ValueError(f"--smooth: must be one of {', '.join(SMOOTHINGS)}, not {method!r}")
    if factor is None:
        return DEFAULT_FACTORS[method]
    if method == "ema" and not 0.0 <= factor < 1.0:
        raise ValueError(f"--factor: the EMA weight must be in [0, 1), not {factor:g}")
    if method == "window" and (factor < 1 or not float(factor).is_integer()):
        raise ValueError(
            f"--factor: the window must be a whole number of points >= 1, not {factor:g}"
        )
    return factor


def smooth(ys: Sequence[float], method: str = "none", factor: float | None = None) -> list[float]:
    factor = check_smoothing(method, factor)
    if method == "ema":
        return ema(ys, factor)
    if method == "window":
        return moving_mean(ys, int(factor))
    return [float(y) for y in ys]


def ema(ys: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's debiased EMA: the running average is divided by 1 - weight**n, so the
    start is not biased towards zero or the first value. Non-finite points pass through."""
    out: list[float] = []
    last, n = 0.0, 0
    for y in ys:
        y = float(y)
        if not math.isfinite(y):
            out.append(y)
            continue
        last = last * weight + (1 - weight) * y
        n += 1
        out.append(last / (1 - weight**n) if weight > 0 else y)
    return out


def moving_mean(ys: Sequence[float], window: int) -> list[float]:
    """The mean of the last `window` points (fewer at the start)."""
    out: list[float] = []
    total, queue = 0.0, []
    for y in ys:
        queue.append(float(y))
        total += queue[-1]
        if len(queue) > window:
            total -= queue.pop(0)
        out.append(total / len(queue))
    return out


def next_smoothing(method: str) -> tuple[str, float]:
    """The method after `method` in SMOOTHINGS (round), with its default factor (a TUI key)."""
    following = SMOOTHINGS[(SMOOTHINGS.index(method) + 1) % len(SMOOTHINGS)]
    return following, DEFAULT_FACTORS[following]


def next_factor(method: str, factor: float, up: bool = True) -> float:
    """The next factor of FACTOR_STEPS in the given direction (for a TUI key)."""
    steps = FACTOR_STEPS[method]
    if up:
        return next((s for s in steps if s > factor), steps[-1])
    return next((s for s in reversed(steps) if s < factor), steps[0])


def describe(method: str, factor: float) -> str:
    if method == "ema":
        return f"EMA {factor:g} (debiased)"
    if method == "window":
        return f"moving mean of {int(factor)}"
    return "no smoothing"


@dataclass
class Stats:
    min: float
    max: float
    best: float
    best_x: float
    last: float

    def text(self, digits: int = 4) -> str:
        return (
            f"min {self.min:.{digits}g}  max {self.max:.{digits}g}  "
            f"best {self.best:.{digits}g} @ {self.best_x:g}  last {self.last:.{digits}g}"
        )


def higher_is_better(name: str) -> bool:
    return "loss" not in name


def stats(xs: Sequence[float], ys: Sequence[float], higher_better: bool = True) -> Stats | None:
    """Of the raw (unsmoothed) points: smoothing is a reading aid, the best is what happened."""
    pairs = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    if not pairs:
        return None
    best_x, best = (max if higher_better else min)(pairs, key=lambda p: p[1])
    values = [y for _, y in pairs]
    return Stats(min(values), max(values), best, best_x, values[-1])


def x_values(
    kind: str,
    steps: Sequence[float],
    times: Sequence[float] | None = None,
    *,
    started: float | None = None,
    samples_per_step: float | None = None,
) -> list[float]:
    """The x of each point: its step, its time since `started`, or samples seen."""
    if kind not in X_AXES:
        raise ValueError(f"--x: must be one of {', '.join(X_AXES)}, not {kind!r}")
    if kind == "time":
        if times is None:
            raise ValueError("--x time: these points carry no time")
        t0 = started if started is not None else (times[0] if times else 0.0)
        return [float(t) - t0 for t in times]
    if kind == "samples":
        return [float(s) * (samples_per_step or 1.0) for s in steps]
    return [float(s) for s in steps]


@dataclass
class Curve:
    """One run's curve ready to draw: x and smoothed y, and the stats of the raw points."""

    label: str
    xs: list[float]
    ys: list[float]
    stats: Stats | None


def run_curves(
    result, *, x: str = "step", method: str = "none", factor: float | None = None
) -> dict[str, Curve]:
    """ "validation accuracy" and "training loss" of an engine.compare.RunResult."""
    scan, info = result.scan, result.info
    world = info.status.get("world_size") or 1
    per_step = result.config.effective_batch_size * world
    out = {}
    for chart, steps, times, ys in (
        ("validation accuracy", scan.accuracy_steps, scan.accuracy_times, scan.accuracy),
        ("training loss", scan.loss_steps, scan.loss_times, scan.loss),
    ):
        if not ys:
            continue
        xs = x_values(x, steps, times, started=info.started, samples_per_step=per_step)
        out[chart] = Curve(
            info.id, xs, smooth(ys, method, factor), stats(xs, ys, higher_is_better(chart))
        )
    return out
