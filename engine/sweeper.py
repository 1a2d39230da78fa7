"""`python -m vqatune.engine.sweeper PLAN [options]`: the scheduler of one `vqatune sweep`.

`vqatune sweep` starts it in its own session (launch), its output appended to the sweep's
sweep.log, so that no terminal event reaches it; the command in the foreground only follows the
log. It runs the plan with the sweep runners' public functions (sweep.run_variants,
search.run_search) and records itself in SCHEDULER_FILE in the sweep directory:

    scheduler.json   pid, pid_start_time, host, started, log_offset (where its output begins
                     in sweep.log), argv; and when it ends: ended, exit_code

Exit codes: 0 finished, 130 interrupted (SIGTERM or SIGINT: its live runs were stopped; running
the sweep again resumes them), 2 a user error, 1 anything else (traceback in sweep.log).

Light module: no torch, no textual (optuna only for a search, inside search.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import executors, exitcodes, runstore, slurm, sweepstore
from . import search as search_mod
from . import sweep as sweep_mod
from .config import ConfigError
from .events import read_json, write_json_atomic

SCHEDULER_FILE = "scheduler.json"


def launch(sweep: sweep_mod.Sweep, args: list[str]) -> subprocess.Popen:
    """Start the scheduler for `args` (the plan and the sweep command's options) in its own
    session, stdin from /dev/null, output appended to the sweep's sweep.log."""
    with open(sweep.path / sweepstore.SWEEP_LOG, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "vqatune.engine.sweeper", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=dict(
                os.environ,
                PYTHONUNBUFFERED="1",
                **{runstore.TRAINER_ENV: shlex.join(runstore.TRAINER)},
            ),
        )


def record(sweep: sweep_mod.Sweep) -> dict:
    return read_json(sweep.path / SCHEDULER_FILE) or {}


def is_running(sweep: sweep_mod.Sweep) -> bool:
    """The scheduler last started for this sweep is still at work."""
    rec = record(sweep)
    return "exit_code" not in rec and runstore.process_matches(
        rec.get("pid"), rec.get("pid_start_time")
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vqatune.engine.sweeper", description="Run one sweep plan."
    )
    parser.add_argument("plan", help="plan name or file")
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--base")
    parser.add_argument("--seeds", help="comma-separated integers")
    parser.add_argument("--parallel", type=int)
    parser.add_argument("--gpus", help="comma-separated GPU ids")
    parser.add_argument("--storage")
    parser.add_argument("--study")
    parser.add_argument("--executor", default="local")
    parser.add_argument("--slurm-options", help="slurm.Options fields as JSON")
    return parser


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",")]


def run(args: argparse.Namespace) -> int:
    seeds = _split(args.seeds)
    plan = sweep_mod.load_plan(
        args.plan, base=args.base, seeds=[int(s) for s in seeds] if seeds else None
    )
    sweep = sweep_mod.open_sweep(plan, args.runs_dir)
    executor = executors.make_executor(
        args.executor,
        parallel=args.parallel,
        gpus=_split(args.gpus),
        runs_dir=sweep.runs_dir,
        slurm_options=slurm.Options(**json.loads(args.slurm_options))
        if args.slurm_options
        else None,
        sweep_dir=sweep.path,
    )
    if sweep.data.get("executor") != executor.kind:  # for `vqatune sweeps`: where it runs
        sweepstore.update_sweep(sweep, executor=executor.kind)
    log = sweep.path / sweepstore.SWEEP_LOG
    import psutil

    me = {
        "pid": os.getpid(),
        "pid_start_time": psutil.Process().create_time(),
        "host": socket.gethostname(),
        "started": time.time(),
        "log_offset": log.stat().st_size if log.exists() else 0,
        "argv": sys.argv[1:],
    }
    write_json_atomic(sweep.path / SCHEDULER_FILE, me)
    code = 1
    try:
        code = _schedule(sweep, plan, executor, args)
    except ConfigError as e:
        print(f"error: {e}")
        code = 2
    finally:
        write_json_atomic(
            sweep.path / SCHEDULER_FILE, {**me, "ended": time.time(), "exit_code": code}
        )
    return code


def _schedule(sweep, plan, executor, args) -> int:
    with sweep_mod.interrupts_as_keyboard():
        try:
            if plan.kind != "search":
                sweep_mod.run_variants(sweep, plan, executor=executor, echo=print)
                return 0
            spec = search_mod.parse_search(plan.search, plan.path)
            result = search_mod.run_search(
                sweep,
                plan,
                spec,
                storage_url=args.storage or search_mod.default_storage(sweep.path),
                study_name=args.study or sweep.id,
                executor=executor,
                echo=print,
            )
        except (sweep_mod.SweepInterrupted, KeyboardInterrupt) as e:
            print(str(e) or f"sweep {sweep.id} interrupted")
            return exitcodes.INTERRUPTED
    if result.best_number is not None:
        print(
            f"best trial {result.best_number}: accuracy {result.best_value:.4f} "
            f"({search_mod.format_params(result.best_params)})"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(_parser().parse_args(argv))
    except ConfigError as e:  # before the sweep could be opened
        print(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
