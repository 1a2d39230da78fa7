"""`vqatune analyze` over 1,000 finished runs (PED-ANOVA): target under 2 s for the whole
command, and the parallel-coordinates redraw with 200 runs × 10 axes: target under 50 ms.

The store: 1,000 run directories as the trainer leaves them (config.toml, meta.json,
status.json, summary.json; 5 varying parameters: two log-scale floats, a float, a choice and
a switch). The command runs in fresh subprocesses; wall and CPU time of each are printed (on a
loaded machine the wall time is inflated, the CPU time much less so).

    .venv/bin/python benchmarks/bench_analyze.py [--runs 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vqatune.engine import config
from vqatune.engine import events as ev

TARGET_ANALYZE_S = 2.0
TARGET_REDRAW_S = 0.050


def build_store(runs_dir: Path, n: int) -> None:
    rng = random.Random(0)
    base = config.load("smoke")
    runs_dir.mkdir(parents=True)
    for i in range(n):
        values = {
            "lr": 10 ** rng.uniform(-4.5, -3),
            "xvlm_lr": 10 ** rng.uniform(-5, -4),
            "dropout": rng.uniform(0.1, 0.5),
            "activation": rng.choice(["relu", "swish"]),
            "use_counter": rng.random() < 0.5,
        }
        acc = 0.9 - 0.2 * abs(math.log10(values["lr"] / 3e-4)) + rng.gauss(0, 0.01)
        d = runs_dir / f"20260101-{i:06d}-r{i}-{i % 65536:04x}"
        d.mkdir()
        (d / ev.CONFIG_FILE).write_text(config.dumps(base.replace(**values), full=True))
        (d / ev.META_FILE).write_text(json.dumps({"id": d.name, "name": f"r{i}"}))
        status = {"state": "done", "started": 0, "ended": 60, "best_accuracy": acc}
        (d / ev.STATUS_FILE).write_text(json.dumps(status))
        (d / ev.SUMMARY_FILE).write_text(json.dumps({"state": "done", "best_accuracy": acc}))


def time_command(args: list[str], env: dict) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_redraw(n_runs: int = 200, n_axes: int = 10, repeat: int = 50) -> tuple[float, float]:
    """Median wall and CPU seconds of one redraw at 120 × 30 cells (positions cached, as the
    widget keeps them)."""
    from vqatune.tui import parcoords

    rng = random.Random(1)
    points = []
    for _ in range(n_runs):
        v = {f"p{j}": rng.uniform(0, 1) for j in range(n_axes - 2)}
        v["act"] = rng.choice(["relu", "swish", "gelu"])
        points.append({"values": v, "metric": rng.random()})
    axes = parcoords.build_axes(points, [*(f"p{j}" for j in range(n_axes - 2)), "act"], "acc")
    pos = parcoords.positions(points, axes)
    brushes = [parcoords.Brush(len(axes) - 1, 0.5, 1.0)]
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        parcoords.render(points, axes, 120, 30, brushes=brushes, current=0, pos=pos)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        build_store(runs, args.runs)
        env = dict(os.environ, VQATUNE_RUNS=str(runs))
        cmd = [sys.executable, "-m", "vqatune.tui.cli", "analyze"]
        times = [time_command(cmd, env) for _ in range(args.repeat)]
    wall = statistics.median(t[0] for t in times)
    cpu = statistics.median(t[1] for t in times)
    print(
        f"analyze, {args.runs} runs, PED-ANOVA: {wall:.2f} s wall, {cpu:.2f} s CPU (median of "
        f"{args.repeat}); target < {TARGET_ANALYZE_S} s: ratio {wall / TARGET_ANALYZE_S:.2f} "
        f"(CPU {cpu / TARGET_ANALYZE_S:.2f})"
    )
    wall, cpu = bench_redraw()
    print(
        f"parallel coordinates, 200 runs × 10 axes at 120×30: {wall * 1000:.1f} ms wall, "
        f"{cpu * 1000:.1f} ms CPU (median of 50); target < 50 ms: ratio "
        f"{wall / TARGET_REDRAW_S:.2f} (CPU {cpu / TARGET_REDRAW_S:.2f})"
    )


if __name__ == "__main__":
    main()
