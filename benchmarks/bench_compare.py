"""`vqatune compare` of two runs with 1,000,000 metric lines each: target under 2 s.

Writes two run directories whose metrics.jsonl hold N step events shaped like the trainer's
(per-branch losses, learning rates, memory: ~390 bytes a line) with an eval event every 1,000
steps, then times the real command (table, --json, --plot) in a subprocess, and, for scale,
a plain json.loads of every line of one file.

    .venv/bin/python benchmarks/bench_compare.py [--lines 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vqatune.engine import config, runstore

TARGET_S = 2.0


def write_metrics(path: Path, lines: int, seed: int) -> None:
    rng = random.Random(seed)
    t = 1.7e9
    with open(path, "w") as f:
        f.write(json.dumps({"event": "start", "time": t, "params": 123456}) + "\n")
        buf = []
        for step in range(1, lines + 1):
            t += 0.05
            loss = 3.0 / (1 + step / 1e5) + rng.random() * 0.1
            buf.append(
                f'{{"event": "step", "time": {t:.3f}, "step": {step}, "epoch": {step // 50000}, '
                f'"loss": {loss!r}, "losses": {{"fused": {rng.random()!r}, "ban": '
                f'{rng.random()!r}, "graph": {rng.random()!r}, "xvlm": {rng.random()!r}}}, '
                f'"lr": 0.00028, "xvlm_lr": 5e-05, "grad_norm": {rng.random()!r}, '
                f'"samples_per_s": 1234.5, "memory": {{"allocated": 123456789, '
                f'"reserved": 223456789, "peak": 323456789}}}}\n'
            )
            if step % 1000 == 0:
                buf.append(
                    json.dumps(
                        {
                            "event": "eval",
                            "time": t,
                            "step": step,
                            "epoch": step // 50000,
                            "accuracy": min(1.0, step / lines + rng.random() * 0.01),
                            "accuracy_branch": {"fused": 0.5},
                            "loss": 1.0,
                        }
                    )
                    + "\n"
                )
            if len(buf) > 10000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
        f.write(json.dumps({"event": "end", "time": t, "state": "done", "step": lines}) + "\n")


def time_command(cmd: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + sys of the child) seconds of each run."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
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
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        runs_dir = tmp / "runs"
        dirs = []
        t = time.perf_counter()
        for seed in (1, 2):
            d = runstore.create_run(
                config.load("smoke").replace(seed=seed), source="smoke", runs_dir=runs_dir
            )
            write_metrics(d / "metrics.jsonl", args.lines, seed)
            dirs.append(d)
        size = (dirs[0] / "metrics.jsonl").stat().st_size
        print(
            f"wrote 2 x {args.lines} step lines ({size / 1e6:.0f} MB each) in "
            f"{time.perf_counter() - t:.1f} s"
        )

        t = time.perf_counter()
        with open(dirs[0] / "metrics.jsonl", "rb") as f:
            n = sum(1 for line in f if json.loads(line))
        naive = time.perf_counter() - t
        print(f"for scale: json.loads of every line of ONE file: {naive:.2f} s ({n} lines)")

        vqatune = [
            sys.executable,
            "-m",
            "vqatune.tui.cli",
            "compare",
            "--runs-dir",
            str(runs_dir),
            dirs[0].name,
            dirs[1].name,
        ]
        for label, extra in (("table", []), ("--json", ["--json"]), ("--plot", ["--plot"])):
            times, cpu = time_command(vqatune + extra, args.repeat)
            report(f"`vqatune compare {label}` 2 x {args.lines} lines", times, cpu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
