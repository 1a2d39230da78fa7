"""Reading the states of a Slurm sweep's runs from the login node: sacct calls and time.

A sweep of N runs submitted as one job array (tasks JOBID_0..JOBID_{N-1}) against the same N
runs as separate jobs. The run store asks sacct once for a whole array (engine/slurm.py
job_state) and once per job otherwise; this prints both and their ratio. sacct is the fake of
tests/fake_slurm.py behind a wrapper that counts its calls (a real sacct asks slurmdbd, so each
call costs more there, not less).

    .venv/bin/python benchmarks/bench_slurm_states.py [--runs 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from vqatune.engine import runstore, slurm
from vqatune.engine.events import META_FILE, STATUS_FILE

FAKE_SLURM = Path(__file__).resolve().parent.parent / "tests" / "fake_slurm.py"


def build(root: Path, n: int, array: bool) -> Path:
    """N pending Slurm runs: one array's tasks, or N jobs."""
    runs, jobs = root / "runs", root / "slurm" / "jobs"
    runs.mkdir(parents=True)
    jobs.mkdir(parents=True)
    for i in range(n):
        job_id = f"5000_{i}" if array else str(5000 + i)
        (jobs / f"{job_id}.json").write_text(json.dumps({"state": "PENDING", "limit": 0}))
        run_dir = runs / f"20260101-000000-r{i}-{i:04x}"
        run_dir.mkdir()
        (run_dir / META_FILE).write_text(json.dumps({"slurm": {"job_id": job_id}}))
        (run_dir / STATUS_FILE).write_text(json.dumps({"state": "queued"}))
    return runs


def measure(n: int, array: bool) -> tuple[int, float, float]:
    """-> (sacct calls, wall s, CPU s of this process and its children) for one listing."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = build(root, n, array)
        bin_dir, calls = root / "bin", root / "calls"
        bin_dir.mkdir()
        wrapper = bin_dir / "sacct"
        wrapper.write_text(
            f"#!/bin/sh\necho x >> {calls}\nFAKE_SLURM_COMMAND=sacct exec {sys.executable} "
            f'{FAKE_SLURM} "$@"\n'
        )
        wrapper.chmod(0o755)
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
        os.environ["FAKE_SLURM_DIR"] = str(root / "slurm")
        slurm._cache.clear()
        cpu0 = _cpu()
        t0 = time.perf_counter()
        infos = runstore.list_runs(runs)
        wall = time.perf_counter() - t0
        cpu = _cpu() - cpu0
        assert [i.state for i in infos] == ["queued"] * n, {i.state for i in infos}
        return len(calls.read_text().splitlines()), wall, cpu


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=64)
    args = parser.parse_args()
    arr_calls, arr_wall, arr_cpu = measure(args.runs, array=True)
    job_calls, job_wall, job_cpu = measure(args.runs, array=False)
    print(f"{args.runs} pending Slurm runs, one listing (runstore.list_runs):")
    print(
        f"  one job array : {arr_calls:4d} sacct calls  {arr_wall:6.2f} s wall  {arr_cpu:6.2f} s CPU"
    )
    print(
        f"  separate jobs : {job_calls:4d} sacct calls  {job_wall:6.2f} s wall  {job_cpu:6.2f} s CPU"
    )
    print(
        f"  ratio (separate / array): calls {job_calls / max(arr_calls, 1):.0f}x, "
        f"wall {job_wall / arr_wall:.1f}x, CPU {job_cpu / max(arr_cpu, 1e-9):.1f}x"
    )


if __name__ == "__main__":
    main()
