"""Re-attach to a long run: open the Monitor on a run whose metrics.jsonl has --steps step events
(plus an eval every 100 steps) and time until every point is in the charts. Also reports the
longest the UI thread was busy in one go meanwhile (what a user would feel as a freeze).

    .venv/bin/python benchmarks/bench_tui_reattach.py [--steps 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def write_history(runs: Path, steps: int) -> Path:
    from tui_fixtures import make_run

    run_dir = make_run(runs, "20260101-100000-long-aaaa", steps=10, eval_every=10)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(1, steps + 1):
            f.write(
                json.dumps(
                    {
                        "event": "step",
                        "time": 1.0 * step,
                        "step": step,
                        "epoch": 1,
                        "loss": 1.0 / step,
                        "lr": 1e-4,
                        "samples_per_s": 100.0,
                        "memory": {"device": "cpu", "rss_mb": 500.0},
                    }
                )
                + "\n"
            )
            if step % 100 == 0:
                f.write(
                    json.dumps(
                        {
                            "event": "eval",
                            "time": 1.0 * step,
                            "step": step,
                            "accuracy": 0.5,
                            "accuracy_branch": {"ban": 0.4},
                        }
                    )
                    + "\n"
                )
    return run_dir


async def measure(runs: Path, run_dir: Path, steps: int) -> tuple[float, float]:
    from vqatune.tui.app import VQATuneApp

    app = VQATuneApp(runs_dir=runs, start="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        longest, last = 0.0, time.perf_counter()

        def tick() -> None:  # the UI thread's heartbeat: gaps are freezes
            nonlocal longest, last
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

        app.set_interval(0.01, tick)
        t0 = time.perf_counter()
        app.open_monitor(run_dir)
        while True:
            await pilot.pause(0.01)
            loss = getattr(app.screen, "steps_seen", 0)
            if loss == steps:
                break
        return time.perf_counter() - t0, longest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        run_dir = write_history(runs, args.steps)
        size = (run_dir / "metrics.jsonl").stat().st_size / 2**20
        seconds, freeze = asyncio.run(measure(runs, run_dir, args.steps))
    print(
        f"re-attach to {args.steps:,} steps ({size:.0f} MiB of metrics): full history in the "
        f"charts after {seconds:.2f} s; longest UI-thread stall {freeze * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
