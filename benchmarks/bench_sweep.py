"""What a sweep adds on top of its runs, and listing sweeps over a large run store.

1. Scheduling overhead: a 20-run sweep whose trainer is an instant stand-in (it writes the
   run directory contract and exits) against launching and waiting for the same 20 runs by
   hand with runstore.launch. Prints the extra milliseconds per run and the ratio (aim: the
   sweep's bookkeeping is small beside even a seconds-long run: < 100 ms per run).
2. `vqatune sweeps` over 1,000 tagged runs in 10 sweeps (aim: under 1 s, like `vqatune runs`).
3. `vqatune compare --sweep` of a 100-run sweep whose runs hold 5,000 step and 10 eval events
   each (its numbers are read from every run's metrics.jsonl, as `vqatune compare` reads them;
   aim: under 1 s).

    .venv/bin/python benchmarks/bench_sweep.py [--runs 20] [--store 1000] [--compared 100]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from vqatune.engine import config, plans, runstore, sweep, sweepstore

INSTANT_TRAINER = textwrap.dedent("""
    import json, os, sys, time
    run_dir = sys.argv[1]
    now = time.time()
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"event": "eval", "time": now, "step": 1, "accuracy": 0.5}) + "\\n")
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump({"best_accuracy": 0.5, "final_accuracy": 0.5}, f)
    with open(os.path.join(run_dir, "status.json"), "w") as f:
        json.dump({"state": "done", "started": now, "ended": now, "best_accuracy": 0.5,
                   "last_accuracy": 0.5}, f)
""")


def bench_overhead(tmp: Path, n: int) -> None:
    script = tmp / "instant_trainer.py"
    script.write_text(INSTANT_TRAINER)
    runstore.TRAINER = [sys.executable, "-S", str(script)]
    plan_path = tmp / "bench.toml"
    plan_path.write_text(f'base = "smoke"\nseeds = {list(range(n))}\n')
    plan = plans.load_plan(str(plan_path))

    # By hand: create and launch each run, wait for it.
    cfg = config.load("smoke")
    t = time.perf_counter()
    for i in range(n):
        run_dir = runstore.create_run(
            cfg.replace(seed=i), name=f"hand{i}", runs_dir=tmp / "by-hand"
        )
        runstore.launch(run_dir, detach=True).wait()
    by_hand = time.perf_counter() - t

    t = time.perf_counter()
    sw = sweepstore.open_sweep(plan, tmp / "swept")
    sweep.run_variants(sw, plan, slots=[None], echo=lambda _: None, poll_s=0.05)
    swept = time.perf_counter() - t
    extra_ms = (swept - by_hand) / n * 1000
    print(
        f"scheduling: {n} runs by hand {by_hand:.2f} s, as a sweep {swept:.2f} s "
        f"(ratio {swept / by_hand:.2f}; {extra_ms:+.0f} ms per run, aim < 100)"
    )


def bench_list(tmp: Path, n: int, n_sweeps: int = 10) -> None:
    runs_dir = tmp / "store"
    cfg = config.load("smoke")
    template = runstore.create_run(cfg, name="template", runs_dir=runs_dir)
    for k in range(n_sweeps):
        plan_path = tmp / f"plan{k}.toml"
        plan_path.write_text(f'base = "smoke"\nseeds = {list(range(n // n_sweeps))}\n')
        plan = plans.load_plan(str(plan_path))
        sw = sweepstore.open_sweep(plan, runs_dir)
        for p in plans.expand(plan):
            run_dir = runs_dir / f"20260101-000000-{sw.id}-{p.seed:04x}"
            shutil.copytree(template, run_dir)
            meta = json.loads((run_dir / "meta.json").read_text())
            meta.update(
                id=run_dir.name, sweep=sw.id, sweep_key=p.key, variant=p.variant, seed=p.seed
            )
            (run_dir / "meta.json").write_text(json.dumps(meta))
            (run_dir / "status.json").write_text(
                json.dumps({"state": "done", "best_accuracy": 0.5 + p.seed / 1e4, "ended": 1.0})
            )
            (run_dir / "summary.json").write_text(
                json.dumps({"best_accuracy": 0.5 + p.seed / 1e4, "final_accuracy": 0.5})
            )
    shutil.rmtree(template)
    wall, cpu = timed_cli(["sweeps", "--runs-dir", str(runs_dir)])
    print(
        f"vqatune sweeps: {n} runs in {n_sweeps} sweeps: best wall {wall:.2f} s, "
        f"CPU {cpu:.2f} s (aim < 1 s)"
    )


def timed_cli(args: list[str], repeat: int = 3) -> tuple[float, float]:
    """Best wall and CPU seconds of `vqatune ARGS` in a subprocess."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "vqatune.tui.cli", *args], check=True, stdout=subprocess.DEVNULL
        )
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(walls), min(cpus)


def bench_compare(tmp: Path, n: int, steps: int = 5000, evals: int = 10) -> None:
    runs_dir = tmp / "compared"
    plan_path = tmp / "compared.toml"
    plan_path.write_text(
        f'base = "smoke"\nseeds = {list(range(n // 2))}\n[variants.a]\n[variants.b]\nlr = 5e-4\n'
    )
    plan = plans.load_plan(str(plan_path))
    sw = sweepstore.open_sweep(plan, runs_dir)
    for p in plans.expand(plan):
        run_dir = sweepstore.create_sweep_run(
            sw,
            p.config,
            name=p.key.replace("/", "-"),
            overrides=p.overrides,
            tags={"sweep_key": p.key, "variant": p.variant, "seed": p.seed},
        )
        lines = []
        for step in range(1, steps + 1):
            lines.append(json.dumps({"event": "step", "step": step, "loss": 1.0 / step}))
            if step % (steps // evals) == 0:
                lines.append(json.dumps({"event": "eval", "step": step, "accuracy": step / steps}))
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        (run_dir / "status.json").write_text(
            json.dumps({"state": "done", "best_accuracy": 1.0, "last_accuracy": 1.0, "ended": 1.0})
        )
    wall, cpu = timed_cli(["compare", "--sweep", sw.id, "--runs-dir", str(runs_dir)])
    print(
        f"vqatune compare --sweep: {n} runs x {steps} steps: best wall {wall:.2f} s, "
        f"CPU {cpu:.2f} s (aim < 1 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--store", type=int, default=1000)
    parser.add_argument("--compared", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_overhead(Path(tmp), args.runs)
        bench_list(Path(tmp), args.store)
        bench_compare(Path(tmp), args.compared)


if __name__ == "__main__":
    main()
