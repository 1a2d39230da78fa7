"""Chart redraw with 3 series x 100,000 points: downsample to the widget width and let plotext
build the frame, as the Monitor does on each throttled redraw. Goal: under 50 ms.

    .venv/bin/python benchmarks/bench_tui_chart.py [--points 100000] [--width 100] [--height 20]

Both the CPU time of the redraw (what it costs the machine; stable on a busy 2-core box) and its
wall time are reported; compare with --points 300 to see that history length does not matter.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np


async def measure(points: int, width: int, height: int, repeat: int):
    from textual.app import App
    from vqatune.tui.widgets.charts import MetricChart

    class ChartApp(App):
        def compose(self):
            yield MetricChart("loss", id="chart")

    rng = np.random.default_rng(0)
    x = np.arange(points, dtype=np.float64)
    app = ChartApp()
    cpu, wall = [], []
    async with app.run_test(size=(width, height)) as pilot:
        chart = app.query_one(MetricChart)
        for name in ("loss", "smoothed", "val"):
            chart.extend(name, x, np.cumsum(rng.normal(size=points)))
        await pilot.pause()
        for _ in range(repeat):
            chart.add("loss", points, 0.0)  # one new point, as from a live run
            c0, w0 = time.process_time(), time.perf_counter()
            chart.redraw()  # downsample every series, rebuild the plot
            chart.render()  # plotext builds the frame (what the compositor paints)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--height", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    cpu, wall = asyncio.run(measure(args.points, args.width, args.height, args.repeat))
    median = statistics.median(cpu) * 1000
    print(
        f"chart redraw, 3 series x {args.points:,} points at {args.width}x{args.height}: "
        f"CPU median {median:.1f} ms (max {max(cpu) * 1000:.1f}), wall median "
        f"{statistics.median(wall) * 1000:.1f} ms; goal < 50 ms; ratio to goal {median / 50:.2f}"
    )


if __name__ == "__main__":
    main()
