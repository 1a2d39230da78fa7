"""`vqatune sweep PLAN`, `vqatune sweeps`, `vqatune plans`, and the `compare --sweep` view.

The engine (vqatune.engine.sweep / .search) does the work; optuna is imported only by the
search engine, inside its functions.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import typer
from vqatune.engine import exitcodes
from vqatune.tui import display

from . import run_cmd, slurm_cmd
from .common import (
    RunsDirOption,
    console,
    fail,
    print_json,
    print_listing,
    quiet_on_hangup,
    user_errors,
)

POLL_S = 0.25


def _split_list(text: str | None, what: str) -> list[str] | None:
    if text is None:
        return None
    items = [x.strip() for x in text.split(",")]
    if not all(items):
        fail(f"{what} {text!r}: expected a comma-separated list, e.g. 0,1")
    return items


def _seeds(text: str | None) -> list[int] | None:
    items = _split_list(text, "--seeds")
    if items is None:
        return None
    try:
        seeds = [int(x) for x in items]
    except ValueError:
        fail(f"--seeds {text!r}: expected integers, e.g. 1204,1205,1206")
    if any(s < 0 for s in seeds):
        fail(f"--seeds {text!r}: seeds must be >= 0")
    return seeds


def sweep(
    plan_source: str = typer.Argument(
        ..., metavar="PLAN", help="A plan name (see `vqatune plans`) or a plan file."
    ),
    base: str | None = typer.Option(
        None, "--base", "-b", metavar="PRESET|FILE", help="Replace the plan's base config."
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", metavar="S1,S2,...", help="Replace the plan's seeds."
    ),
    parallel: int | None = typer.Option(
        None,
        "--parallel",
        "-p",
        metavar="N",
        help="Runs at a time (default 1; with --gpus, one per GPU). Queue and Slurm: runs in "
        "flight at once (default: every run of a variants sweep, one trial of a search).",
    ),
    gpus: str | None = typer.Option(
        None,
        "--gpus",
        metavar="0,1,...",
        help="GPUs to use, one run on each at a time (CUDA_VISIBLE_DEVICES).",
    ),
    storage: str | None = typer.Option(
        None,
        "--storage",
        metavar="URL",
        help="Search: Optuna storage URL or journal:PATH shared by workers "
        "(default: SQLite in the sweep directory).",
    ),
    study: str | None = typer.Option(
        None,
        "--study",
        metavar="NAME",
        help="Search: study name (default: the sweep id); the same name and "
        "storage on several machines share one study.",
    ),
    runs_dir: Path | None = RunsDirOption,
    executor: str | None = typer.Option(
        None,
        "--executor",
        "-x",
        metavar="local|queue|slurm",
        help="Where the runs run: this sweep's own slots (local), the run queue shared with "
        "single runs (queue; the default while a queue worker serves the store), or Slurm.",
    ),
    queued: bool = typer.Option(False, "--queue", "-q", help="Same as --executor queue."),
    partition: str | None = run_cmd.PartitionOption,
    gpus_per_node: int | None = run_cmd.GpusPerNodeOption,
    nodes: int | None = run_cmd.NodesOption,
    time_limit: str | None = run_cmd.TimeOption,
    account: str | None = run_cmd.AccountOption,
    slurm_args: list[str] | None = run_cmd.SlurmArgOption,
    detach: bool = typer.Option(
        False,
        "--detach",
        "-d",
        help="Run the sweep in the background (own session, output to "
        "sweep.log in the sweep directory) and return.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the runs (or search space) and start nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
) -> None:
    """Run a plan: every variant x seed as ordinary runs, or an Optuna study. Re-running the same
    command resumes it: finished runs are kept, unfinished ones resumed, none duplicated."""
    from vqatune.engine import executors
    from vqatune.engine import sweep as sweep_mod

    executor = _executor_kind(executor, queued, gpus, runs_dir)
    slurm_options = slurm_cmd.options(
        executor == "slurm",
        partition,
        gpus_per_node,
        nodes,
        time_limit,
        account,
        slurm_args,
        switch="--executor slurm",
    )
    with user_errors():
        plan = sweep_mod.load_plan(plan_source, base=base, seeds=_seeds(seeds))
        # Every option is checked here, before anything is written or started.
        executors.make_executor(
            executor,
            parallel=parallel,
            gpus=_split_list(gpus, "--gpus"),
            runs_dir=runs_dir or Path("."),
            slurm_options=slurm_options,
        )
        if executor == "slurm" and shutil.which("sbatch") is None:
            fail("--executor slurm: sbatch is not on PATH (submit from a Slurm login node)")
        if plan.kind == "variants" and (storage or study):
            fail(f"{plan.path}: --storage and --study are for plans with a [search] table")
        if dry_run:
            _dry_run(plan, as_json)
            return
        from vqatune.engine import search as search_mod

        if plan.kind == "search":
            search_mod.parse_search(plan.search, plan.path)
        # Check a storage URL before anything is written.
        if storage:
            search_mod.open_storage(storage)
        sweep_obj = sweep_mod.open_sweep(plan, runs_dir)
    if plan.kind == "variants" and sweep_mod.is_active(sweep_obj):
        fail(f"sweep {sweep_obj.id} is already running (`vqatune attach --sweep {sweep_obj.id}`)")
    from vqatune.engine import sweeper, sweepstore

    args = [str(plan.path), "--runs-dir", str(sweep_obj.runs_dir)]
    for flag, value in (
        ("--base", base),
        ("--seeds", ",".join(map(str, _seeds(seeds))) if seeds is not None else None),
        ("--parallel", parallel),
        ("--gpus", gpus),
        ("--storage", storage),
        ("--study", study),
        ("--executor", executor),
        ("--slurm-options", json.dumps(slurm_options.__dict__) if slurm_options else None),
    ):
        if value is not None:
            args += [flag, str(value)]
    log = sweep_obj.path / sweepstore.SWEEP_LOG
    offset = log.stat().st_size if log.exists() else 0
    proc = sweeper.launch(sweep_obj, args)
    if detach:
        typer.echo(
            f"sweep {sweep_obj.id} running in the background (pid {proc.pid})\n"
            f"  log: {log}\n  follow it: vqatune attach --sweep {sweep_obj.id}; progress: "
            f"vqatune sweeps; results: vqatune compare --sweep {sweep_obj.id}"
        )
        return
    typer.echo(
        f"sweep {sweep_obj.id}: Ctrl-C stops it; closing the terminal leaves it running "
        f"(`vqatune attach --sweep {sweep_obj.id}` to follow it again)",
        err=True,
    )
    raise typer.Exit(follow_sweep(sweep_obj, offset, proc, as_json=as_json))


def _executor_kind(
    executor: str | None, queued: bool, gpus: str | None, runs_dir: Path | None
) -> str:
    """--executor, or --queue; by default the queue while a worker serves the store (its
    runs and the sweep's would otherwise compete for the same GPUs), unless --gpus pins."""
    from vqatune.engine import queue

    if queued and executor not in (None, "queue"):
        fail(f"--queue and --executor {executor}: give one of them")
    if queued or executor is not None:
        return "queue" if queued else executor
    if gpus is None and queue.worker_alive(runs_dir):
        typer.echo(
            "a queue worker serves this run store: the sweep's runs go through the queue "
            "(--executor local runs them in the sweep's own slots)",
            err=True,
        )
        return "queue"
    return "local"


def attach_sweep(query: str, runs_dir: Path | None) -> None:
    """`vqatune attach --sweep ID`: where the sweep stands, then its scheduler's output since
    it started, followed to the end (as the foreground `vqatune sweep` shows it)."""
    from vqatune.engine import sweep as sweep_mod
    from vqatune.engine import sweeper, sweepstore

    with user_errors():
        found = sweep_mod.find_sweep(query, runs_dir)
    p = sweepstore.progress(found)
    best = f", best {display.accuracy(p.best_accuracy)} ({p.best_label})" if p.best_label else ""
    running = sweeper.is_running(found)
    typer.echo(
        f"sweep {found.id}: {p.state}, {p.done}/{p.total} runs finished, {p.running} live{best}"
        + ("" if running else "; its scheduler is not running (`vqatune sweep` resumes it)")
    )
    if not running:
        return
    offset = sweeper.record(found).get("log_offset") or 0
    raise typer.Exit(follow_sweep(found, offset, None, as_json=False))


def follow_sweep(sweep_obj, offset: int, proc=None, *, as_json: bool) -> int:
    """Relay the scheduler's lines from sweep.log (from offset) until it ends, then the sweep's
    table. proc: the scheduler we started; None: the one its scheduler.json names. Ctrl-C
    stops the sweep (its runs stop cleanly); a second Ctrl-C leaves it running."""
    import signal
    import time

    from vqatune.engine import sweep as sweep_mod
    from vqatune.engine import sweeper, sweepstore

    lines = _LogLines(sweep_obj.path / sweepstore.SWEEP_LOG, offset)

    def running() -> bool:
        return proc.poll() is None if proc is not None else sweeper.is_running(sweep_obj)

    def relay() -> None:
        for line in lines.read():
            typer.echo(line, err=as_json or line.startswith("error: "))

    def wait() -> None:
        while running():
            relay()
            time.sleep(POLL_S)
        relay()

    interrupted = False
    with quiet_on_hangup():
        try:
            wait()
        except KeyboardInterrupt:
            interrupted = True
            typer.echo(
                "stopping the sweep: its live runs finish their step and save a checkpoint "
                "(Ctrl-C again to leave it running)",
                err=True,
            )
            try:
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                elif running():
                    os.kill(sweeper.record(sweep_obj)["pid"], signal.SIGTERM)
                wait()
            except KeyboardInterrupt:
                typer.echo(
                    f"left running: `vqatune attach --sweep {sweep_obj.id}` to follow it again",
                    err=True,
                )
                return exitcodes.INTERRUPTED
    code = proc.returncode if proc is not None else sweeper.record(sweep_obj).get("exit_code", 1)
    if interrupted or code != 0:
        return exitcodes.INTERRUPTED if interrupted else code
    comparison = sweep_mod.compare(sweep_obj, curves=as_json)
    from vqatune.engine import sweepstore
    from vqatune.engine.alerts import sweep_ended

    sweep_ended(sweep_obj.id, sweep_obj.path, sweepstore.progress(sweep_obj))
    if as_json:
        print_json(comparison)
    else:
        print_comparison(comparison)
    return 0


class _LogLines:
    """The complete lines appended to a log since the last read."""

    def __init__(self, path: Path, offset: int):
        self.path, self.offset = path, offset

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a partial last line waits for its end
        self.offset += end
        return data[:end].decode("utf-8", "replace").splitlines()


def _dry_run(plan, as_json: bool) -> None:
    from vqatune.engine import sweep as sweep_mod

    sweep_id = sweep_mod.make_sweep_id(plan)
    if plan.kind == "search":
        from vqatune.engine.search import parse_search

        spec = parse_search(plan.search, plan.path)
        if as_json:
            print_json({"sweep": sweep_id, "base": plan.base, "search": spec.to_dict()})
            return
        typer.echo(
            f"sweep {sweep_id}: Optuna study on {plan.base}: {spec.sampler} sampler, "
            f"{spec.n_trials} trials, pruner {spec.pruner}"
        )
        for d in spec.dims:
            typer.echo(f"  {d.name}: {d.describe()}")
        return
    planned = sweep_mod.expand(plan)
    if as_json:
        print_json(
            {
                "sweep": sweep_id,
                "base": plan.base,
                "runs": [
                    {"key": p.key, "variant": p.variant, "seed": p.seed, "overrides": p.overrides}
                    for p in planned
                ],
            }
        )
        return
    typer.echo(f"sweep {sweep_id}: {len(planned)} runs on {plan.base}")
    from vqatune.engine.cmdline import format_value

    for p in planned:
        changes = " ".join(f"{k}={format_value(v)}" for k, v in p.overrides.items())
        typer.echo(f"  {p.key}: {changes}")


def print_comparison(result: dict, plot: bool = False) -> None:
    """The sweep's table (one row per variant or trial), its winner, and optionally the
    overlaid validation-accuracy curves."""
    from rich.table import Table
    from vqatune.engine.cmdline import format_value

    trials = result["kind"] == "search"
    table = Table(
        title=f"{result['title']} — sweep {result['sweep']} on {result['base']}",
        box=None,
        pad_edge=False,
        title_justify="left",
    )
    table.add_column("trial" if trials else "variant", style="bold")
    table.add_column("params" if trials else "overrides", overflow="fold")
    table.add_column("runs" if not trials else "state", justify="right")
    table.add_column("best acc (mean ± std)" if not trials else "best acc")
    table.add_column("final acc (mean ± std)" if not trials else "final acc")
    if not trials:
        table.add_column("best run")
    for row in result["variants"]:
        mark = " *" if row["variant"] == result["winner"] else ""
        changes = " ".join(f"{k}={format_value(v)}" for k, v in row["overrides"].items())
        if trials:
            run = row["runs"][0] if row["runs"] else {}
            state = "pruned" if run.get("pruned") else run.get("state", "-")
            table.add_row(
                row["variant"] + mark,
                changes,
                state,
                display.accuracy(row["best"]),
                display.accuracy(run.get("final_accuracy")),
            )
        else:
            states = [r["state"] for r in row["runs"]]
            count = f"{states.count('done')}/{len(states)}" if states else "0"
            best = (
                f"{display.accuracy(row['best'])} ({row['best_run']})" if row["best_run"] else "-"
            )
            table.add_row(
                row["variant"] + mark,
                changes,
                count,
                display.mean_std(row["best_mean"], row["best_std"]),
                display.mean_std(row["final_mean"], row["final_std"]),
                best,
            )
    out = console()
    out.print(table)
    if result["winner"] is not None:
        out.print(f"winner: {result['winner']}")
    else:
        out.print("no finished run yet")
    if plot:
        plot_curves(result)


def plot_curves(result: dict) -> None:
    import plotext as plt

    curves = [c for c in result.get("curves", []) if c["accuracy"]]
    if not curves:
        typer.echo("no evaluations to plot yet")
        return
    plt.clear_figure()
    for c in curves:
        plt.plot(c["steps"], c["accuracy"], label=c["label"], marker="braille")
    plt.title(f"validation accuracy — sweep {result['sweep']}")
    plt.xlabel("step")
    plt.plotsize(100, 25)
    plt.show()


def compare_sweep(
    query: str, runs_dir: Path | None = None, *, as_json: bool = False, plot: bool = False
) -> None:
    """`vqatune compare --sweep ID`: called by the compare command of runs_cmd."""
    from vqatune.engine import sweep as sweep_mod

    with user_errors():
        found = sweep_mod.find_sweep(query, runs_dir)
    result = sweep_mod.compare(found, curves=as_json or plot)
    if as_json:
        print_json(result)
    else:
        print_comparison(result, plot=plot)


def sweeps(
    runs_dir: Path | None = RunsDirOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the sweeps in the run store: progress and best run."""
    from vqatune.engine import sweep as sweep_mod

    rows = []
    for s, p in sweep_mod.overview(runs_dir):
        rows.append(
            {
                "id": s.id,
                "title": s.title,
                "kind": s.kind,
                "executor": s.data.get("executor", "local"),
                "base": s.data.get("base"),
                "state": p.state,
                "total": p.total,
                "done": p.done,
                "running": p.running,
                "failed": p.failed,
                "best_accuracy": p.best_accuracy,
                "best_run": p.best_run,
                "best_label": p.best_label,
                "path": str(s.path),
            }
        )
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no sweeps yet: start one with `vqatune sweep PLAN`")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("sweep", "kind", "runs on", "state", "progress", "live runs", "best acc", "best"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["id"],
            r["kind"],
            r["executor"],
            r["state"],
            f"{r['done']}/{r['total']}",
            str(r["running"]),
            display.accuracy(r["best_accuracy"]),
            r["best_label"] or "-",
        )
    console().print(table)


def plans(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the sweep plans (presets/experiments, ./presets/experiments, user plans)."""
    from vqatune.engine.sweep import list_plans

    found = list_plans()
    if as_json:
        print_json(
            [
                {
                    "name": p.name,
                    "title": p.title,
                    "kind": p.kind,
                    "description": p.description,
                    "path": str(p.path),
                }
                for p in found
            ]
        )
        return
    print_listing(("plan", "kind", "description"), ((p.name, p.kind, p.description) for p in found))


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("sweeps")(sweeps)
    app.command("plans")(plans)
