"""Training throughput with the TUI monitoring the run, divided by without. Goal: >= 0.97 on 2
cores.

    .venv/bin/python benchmarks/bench_tui_monitor_overhead.py [--pairs 2] [--steps 40]

Runs the `smoke` model for --steps optimiser steps (a step event every step: the TUI's worst
case), alternately plain and with `vqatune tui`'s Monitor open on it (headless, 120x40, polling
and redrawing as on a terminal) in this process. Throughput is the median of the trainer's own
samples/s over the steps after the first three (start-up excluded).

On a machine shared with other jobs the throughput of one run swings by far more than 3% (torch's
threads are very sensitive to competing processes), so the per-pair ratios are printed and the
CPU the TUI itself used is reported: on 2 cores the TUI can take at most that share of one core
from training.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from vqatune.engine import config, runstore
from vqatune.engine.events import METRICS_FILE
from vqatune.engine.metrics import read_events


def throughput(run_dir: Path) -> float:
    rates = [
        e["samples_per_s"]
        for e in read_events(run_dir / METRICS_FILE, kinds=("step",))
        if e.get("step", 0) > 3 and e.get("samples_per_s")
    ]
    return statistics.median(rates)


def train_plain(run_dir: Path) -> None:
    runstore.launch(run_dir, detach=True).wait()


def train_monitored(run_dir: Path, runs_dir: Path) -> tuple[int, float]:
    """Train with the Monitor open -> (steps it saw, share of one core the TUI used)."""
    from vqatune.tui.app import VQATuneApp
    from vqatune.tui.screens.monitor import MonitorScreen

    async def run() -> tuple[int, float]:
        app = VQATuneApp(runs_dir=runs_dir, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.5)
            proc = runstore.launch(run_dir, detach=True)
            app.open_monitor(run_dir)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            while proc.poll() is None:
                await pilot.pause(0.5)
            share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
            await pilot.pause(1.0)
            screen = app.screen
            assert isinstance(screen, MonitorScreen)
            return screen.steps_seen, share

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    cfg = config.load("smoke").replace(
        max_steps=args.steps, train_limit=8 * (args.steps + 8), log_every=1, eval_limit=16
    )
    plain, monitored, shares = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        for pair in range(args.pairs):
            order = ("plain", "tui") if pair % 2 == 0 else ("tui", "plain")
            for mode in order:
                run_dir = runstore.create_run(
                    cfg, source="smoke", name=f"bench-{mode}", runs_dir=runs
                )
                if mode == "plain":
                    train_plain(run_dir)
                    plain.append(throughput(run_dir))
                else:
                    seen, share = train_monitored(run_dir, runs)
                    shares.append(share)
                    assert seen == args.steps, f"the monitor saw {seen} of {args.steps} steps"
                    monitored.append(throughput(run_dir))
                print(f"  {mode:5s} {(plain if mode == 'plain' else monitored)[-1]:.1f} samples/s")
    ratio = statistics.median(monitored) / statistics.median(plain)
    paired = [m / p for m, p in zip(monitored, plain)]
    print(
        f"training samples/s with the TUI monitoring / without: {ratio:.3f} "
        f"(median {statistics.median(monitored):.1f} vs {statistics.median(plain):.1f} over "
        f"{args.pairs} pairs of {args.steps} steps; per pair "
        f"{', '.join(f'{r:.2f}' for r in paired)}); goal >= 0.97"
    )
    print(
        f"CPU the TUI used while monitoring: {statistics.median(shares) * 100:.1f}% of one core "
        f"(median); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
