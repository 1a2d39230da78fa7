"""`vqatune runs` over 1,000 runs: target under 1 s (wall time of the whole command).

Builds a store of 1,000 runs (done with summaries, stopped, crashed with dead pids, queued, a
few running under this process's pid), then times the real command in a subprocess.

    .venv/bin/python benchmarks/bench_runs.py [--runs 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from vqatune.engine import config, runstore


def write_json(path: Path, data: dict) -> None:  # the store is built, not raced: no fsync
    path.write_text(json.dumps(data))


TARGET_S = 1.0


def build_store(runs_dir: Path, n: int) -> None:
    cfg = config.load("smoke")
    me, my_start = os.getpid(), psutil.Process().create_time()
    now = time.time()
    for i in range(n):
        if i < 20:  # real run dirs, then copies with their own ids (create_run fsyncs: slow)
            run_dir = runstore.create_run(
                cfg.replace(seed=i), source="smoke", name=f"r{i}", runs_dir=runs_dir
            )
        else:
            template = runs_dir / sorted(os.listdir(runs_dir))[i % 20]
            run_dir = runs_dir / f"{template.name[:16]}r{i}-{i % 65536:04x}"
            shutil.copytree(template, run_dir)
            meta = json.loads((run_dir / "meta.json").read_text())
            write_json(run_dir / "meta.json", {**meta, "id": run_dir.name, "name": f"r{i}"})
        base = {
            "step": 100,
            "total_steps": 100,
            "epoch": 3,
            "epochs": 3,
            "started": now - 600,
            "best_accuracy": 0.9,
            "last_accuracy": 0.89,
            "heartbeat": now,
        }
        kind = i % 10
        if kind < 6:
            write_json(run_dir / "status.json", {**base, "state": "done", "ended": now})
            write_json(run_dir / "summary.json", {"best_accuracy": 0.9, "final_accuracy": 0.89})
        elif kind == 6:
            write_json(run_dir / "status.json", {**base, "state": "stopped", "ended": now})
        elif kind in (7, 8):  # a dead pid: derived crashed
            write_json(
                run_dir / "status.json",
                {**base, "state": "running", "pid": 2**22 - 1 - i, "pid_start_time": now - 700},
            )
        elif i % 100 == 9:  # alive: derived running
            write_json(
                run_dir / "status.json",
                {
                    **base,
                    "state": "running",
                    "pid": me,
                    "pid_start_time": my_start,
                    "heartbeat": now + 3600,
                },
            )
        else:
            write_json(run_dir / "status.json", {"state": "queued", "created": now})


def time_command(args: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + sys of the child) seconds of each run of `vqatune ARGS`."""
    vqatune = [sys.executable, "-m", "vqatune.tui.cli"]
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(vqatune + args, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def report(label: str, walls: list[float], cpus: list[float]) -> None:
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(
        f"{label}: wall median {wall:.3f} s (min {min(walls):.3f}), CPU {cpu:.3f} s; "
        f"target {TARGET_S:.1f} s -> ratio wall {wall / TARGET_S:.2f}, CPU {cpu / TARGET_S:.2f} "
        f"{'OK' if min(walls) < TARGET_S else 'OVER'}"
    )
    load = os.getloadavg()[0]
    if load > os.cpu_count():
        print(
            f"  (load average {load:.1f} on {os.cpu_count()} cores: wall times are inflated; "
            f"the CPU time is the fairer figure)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="Keep the store (to profile it).")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    try:
        runs_dir = tmp / "runs"
        if args.keep:
            print(f"store kept in {runs_dir}")
        t = time.perf_counter()
        build_store(runs_dir, args.runs)
        print(f"built {args.runs} runs in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        states = {}
        for r in runstore.list_runs(runs_dir):
            states[r.state] = states.get(r.state, 0) + 1
        print(f"list_runs (in process): {time.perf_counter() - t:.3f} s; states {states}")
        report("`vqatune --help` (start-up alone)", *time_command(["--help"], args.repeat))
        for extra in ([], ["--json"]):
            report(
                f"`vqatune runs {' '.join(extra)}` over {args.runs} runs",
                *time_command(["runs", "--runs-dir", str(runs_dir), *extra], args.repeat),
            )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
