"""DDP scaling: training throughput of 1 process against N processes, same global batch.

Trains the smoke model (a larger slice of easy-VQA) once as one process with batch B x N and
once under torchrun with N processes of batch B, and prints each run's samples/s (from the
step events, after the first step) and the ratio, plus the whole run's wall time (torchrun's
start-up included). On a CPU-only machine each process gets one thread (OMP_NUM_THREADS=1) and
the backend is gloo; on GPUs pass --device cuda (N <= the GPUs of the server).

    .venv/bin/python benchmarks/bench_ddp.py [--nproc 2] [--batch 8] [--steps 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from vqatune.engine import config, events, runstore


def train(root: Path, name: str, sets: list[str]) -> tuple[float, float]:
    cfg = config.load("smoke", sets)
    run_dir = runstore.create_run(cfg, source="smoke", name=name, runs_dir=root)
    start = time.perf_counter()
    runstore.launch(run_dir, detach=True).wait()
    wall = time.perf_counter() - start
    state = events.read_json(run_dir / events.STATUS_FILE)["state"]
    if state != "done":
        raise SystemExit(f"{name}: ended {state}; see {run_dir / events.LOG_FILE}")
    with open(run_dir / events.METRICS_FILE, encoding="utf-8") as f:
        rates = [e["samples_per_s"] for e in map(json.loads, f) if e["event"] == "step"][1:]
    return statistics.median(rates), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="micro-batch per process")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    n, b = args.nproc, args.batch
    common = [
        f"max_steps={args.steps}",
        f"train_limit={args.steps * b * n}",
        "eval_limit=16",
        "log_every=5",
        f"device={args.device}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        one, one_wall = train(Path(tmp), "one", [*common, f"batch_size={b * n}"])
        many, many_wall = train(
            Path(tmp), f"ddp{n}", [*common, f"batch_size={b}", f"nproc_per_node={n}"]
        )
    print(f"global batch {b * n}, {args.steps} steps, device {args.device}")
    print(f"1 process  : {one:8.1f} samples/s  (run {one_wall:5.1f} s)")
    print(f"{n} processes: {many:8.1f} samples/s  (run {many_wall:5.1f} s)")
    print(f"throughput ratio {n} processes / 1: {many / one:.2f}  (ideal {n}.00 with {n} devices)")


if __name__ == "__main__":
    main()
