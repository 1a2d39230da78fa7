"""P2: `vqatune run cpu-quick` on the full easy-VQA test split: accuracy and wall time.

    .venv/bin/python benchmarks/bench_cpu_quick.py [--set k=v]... [--keep] [--breakdown-steps N]

Runs the real command (a fresh process, as a user would) into a temporary runs directory and
prints the final and best accuracy on the evaluated questions (the full test split: 9,673), the
wall time of the whole command, and where the time went (training steps, evaluations, start-up).
Targets: accuracy >= 0.98; wall time under 5 minutes on 2 CPU cores. First, unless
--breakdown-steps 0, the per-component CPU time of a training step (cpu_breakdown.py: data,
backbone, question encoder, BAN, AoA, graph, heads, loss, backward, optimiser, evaluation).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    ap.add_argument("--breakdown-steps", type=int, default=60)
    args = ap.parse_args()
    if args.breakdown_steps:
        from cpu_breakdown import breakdown, print_breakdown
        from vqatune.engine import config

        print_breakdown(breakdown(config.load("cpu-quick", args.sets), args.breakdown_steps))
    runs = Path(tempfile.mkdtemp(prefix="bench-cpu-quick-"))
    cmd = [
        sys.executable,
        "-m",
        "vqatune.tui.cli",
        "run",
        "cpu-quick",
        "--runs-dir",
        str(runs),
        "--name",
        "bench",
    ]
    for s in args.sets:
        cmd += ["--set", s]
    started = time.time()
    result = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    wall = time.time() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = usage.ru_utime + usage.ru_stime  # the run's process and its children
    run_dir = next(runs.iterdir())
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
        log = [json.loads(line) for line in f]
    summary = json.loads((run_dir / "summary.json").read_text())
    start = log[0]
    steps = [e for e in log if e["event"] == "step"]
    evals = [e for e in log if e["event"] == "eval"]
    eval_s = sum(e["duration_s"] for e in evals)
    train_s = log[-1]["time"] - start["time"] - eval_s
    samples = summary["step"] * start["effective_batch_size"]
    train_s = max(train_s, 1e-9)
    print(f"exit code {result.returncode}, state {summary['state']}")
    for e in evals:
        types = ", ".join(f"{k} {v:.4f}" for k, v in (e.get("accuracy_type") or {}).items())
        print(
            f"  eval at step {e['step']} (epoch {e['epoch']}): accuracy {e['accuracy']:.4f} "
            f"on {e['questions']} questions ({types}) in {e['duration_s']:.1f} s"
        )
    if evals:
        print(
            f"final accuracy {summary['final_accuracy']:.4f}, best {summary['best_accuracy']:.4f} "
            f"on {evals[-1]['questions']} test questions (target >= 0.98)"
        )
    else:
        print(f"no evaluation ({summary.get('message')})")
    print(
        f"wall time {wall:.0f} s (target < 300 s), CPU time {cpu_s:.0f} s "
        f"({cpu_s / max(samples, 1) * 1e3:.2f} ms per training sample, "
        f"load average {os.getloadavg()[0]:.1f}): training {train_s:.0f} s "
        f"({samples / train_s:.0f} samples/s over {summary['step']} steps), evaluation "
        f"{eval_s:.0f} s, start-up and the rest {wall - train_s - eval_s:.0f} s; "
        f"{start['params']:,} parameters, {os.cpu_count()} CPUs"
    )
    if steps:
        print(f"last logged training loss {steps[-1]['loss']:.4f}")
    if args.keep:
        print(f"run directory: {run_dir}")
    else:
        import shutil

        shutil.rmtree(runs, ignore_errors=True)
    return 0 if result.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
