"""CLI start-up time: median wall time of `vqatune --help` over 20 runs.

Prints the median beside a bare interpreter start (`python -c pass`) and `import typer`, so the
figure reads as a ratio: what vqatune adds on top of Python and its CLI library.

    .venv/bin/python benchmarks/bench_cli_startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    python = sys.executable
    script = Path(python).parent / "vqatune"
    cases = {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import typer'": [python, "-c", "import typer"],
        "vqatune --help": [python, str(script), "--help"],
        "vqatune presets": [python, str(script), "presets"],
        "vqatune config show smoke": [python, str(script), "config", "show", "smoke"],
    }
    bare = None
    print(f"median wall time over {args.runs} runs")
    for label, argv in cases.items():
        t = median_wall(argv, args.runs)
        bare = bare or t
        print(f"  {label:28s} {t * 1000:7.1f} ms   {t / bare:4.1f}x python start-up")


if __name__ == "__main__":
    main()
