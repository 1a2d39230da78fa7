"""Time to first frame of `vqatune tui`: from the process start to the first painted Configure
screen (headless, 100x30). Goal: under 0.5 s.

    .venv/bin/python benchmarks/bench_tui_startup.py [--repeat 5]

Each repeat is a fresh process (`python -c`), so interpreter start and imports are counted: the
clock starts in the parent just before it starts the child (psutil's process creation time is
not used: Linux gives the boot time in whole seconds, which biased every figure by up to 1 s).
The CPU time the process used until then is printed too: on a loaded 2-core machine the wall
time mostly measures the other processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import os, sys, time
from pathlib import Path
started = float(os.environ["BENCH_STARTED"])
from vqatune.tui.app import VQATuneApp
imported = time.time()

class Probe(VQATuneApp):
    CSS_PATH = str(Path(sys.modules[VQATuneApp.__module__].__file__).parent / VQATuneApp.CSS_PATH)

    def on_mount(self):
        super().on_mount()
        self.call_after_refresh(self.first_frame)

    def first_frame(self):
        # the Configure screen builds its first panel on mount; wait for that paint too
        self.screen.call_after_refresh(self.done)

    def done(self):
        cpu = os.times()
        self.exit((imported - started, time.time() - started, cpu.user + cpu.system))

result = Probe(start="configure").run(headless=True, size=(100, 30))
print(f"{result[0]:.4f} {result[1]:.4f} {result[2]:.4f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = dict(os.environ, VQATUNE_RUNS=os.environ.get("VQATUNE_RUNS", "/nonexistent-runs"))
    imports, frames, cpus = [], [], []
    for _ in range(args.repeat):
        env["BENCH_STARTED"] = repr(time.time())
        out = subprocess.run(
            [sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
        imports.append(float(out[-3]))
        frames.append(float(out[-2]))
        cpus.append(float(out[-1]))
    load = os.getloadavg()[0]
    print(
        f"time to first frame: median {statistics.median(frames):.3f} s, "
        f"min {min(frames):.3f} s over {args.repeat} runs (imports: median "
        f"{statistics.median(imports):.3f} s; CPU time to first frame: median "
        f"{statistics.median(cpus):.3f} s); goal < 0.5 s; "
        f"ratio to goal {statistics.median(frames) / 0.5:.2f}; load average {load:.1f}"
    )


if __name__ == "__main__":
    main()
