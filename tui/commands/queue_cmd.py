"""`vqatune queue`: the run store's line of runs waiting for a GPU (engine/queue.py).

vqatune queue                      the line and the runs it started, with positions and GPUs
vqatune queue move RUN --to N      change a queued run's place
vqatune queue cancel RUN           take it out of the line (it ends `stopped`)
vqatune queue pause | resume       hold the line / go on (also after the crash guard paused it)
vqatune queue --gpus 0,2           the GPUs the worker may use (`--gpus all`: every GPU)
"""

from __future__ import annotations

from pathlib import Path

import typer

from .common import RunsDirOption, fail, print_json, user_errors

app = typer.Typer(
    help="Runs waiting for a free GPU: list, reorder, cancel, pause, resume.",
    no_args_is_help=False,
    invoke_without_command=True,
)


def parse_gpus(text: str | None) -> list[str] | None:
    if text is None or text.strip().lower() == "all":
        return None
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        fail(f"--gpus: {text!r} is not a list of GPU ids such as 0,2 (or `all`)")
    return gpus


@app.callback()
def show(
    ctx: typer.Context,
    gpus: str | None = typer.Option(
        None, "--gpus", metavar="IDS", help="GPUs the worker may use: 0,2 or all."
    ),
    cpu_slots: int | None = typer.Option(
        None, "--cpu-slots", min=1, metavar="N", help="Runs at a time on a machine without GPUs."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """The queue: waiting runs in order, then the runs it started that are still live."""
    from vqatune.engine import queue

    ctx.obj = runs_dir
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        if gpus is not None or cpu_slots is not None:
            queue.set_gpus(runs_dir, parse_gpus(gpus), cpu_slots)
        q, entries = queue.listing(runs_dir)
    if as_json:
        print_json(queue.as_json(q, entries))
        return
    typer.echo(queue.describe(q))
    for e in entries:
        if e.gpus:
            where = f"GPU {','.join(e.gpus)}"
        elif e.need:
            where = f"needs {e.need} GPU{'s' * (e.need > 1)}"
        else:
            where = "CPU"
        place = f"{e.position:>3}" if e.position is not None else "  -"
        sweep = f"  sweep {e.info.meta['sweep']}" if e.info.meta.get("sweep") else ""
        typer.echo(f"{place}  {e.info.id}  {e.info.state:<8}  {where}{sweep}")


def _runs_dir(ctx: typer.Context) -> Path | None:
    return ctx.obj


def _run_id(query: str, runs_dir: Path | None) -> str:
    from vqatune.engine import runstore

    return runstore.find_run(query, runs_dir).name


@app.command("move")
def move(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run id, prefix or name."),
    to: int = typer.Option(..., "--to", metavar="N", help="New position (1: next to start)."),
) -> None:
    """Move a queued run to position N."""
    from vqatune.engine import queue

    with user_errors():
        run_id = _run_id(run, _runs_dir(ctx))
        where = queue.move(_runs_dir(ctx), run_id, to)
    typer.echo(f"{run_id}: position {where}")


@app.command("cancel")
def cancel(ctx: typer.Context, run: str = typer.Argument(..., help="Run id, prefix or name.")):
    """Take a queued run out of the line (it ends `stopped`; `vqatune resume` starts it)."""
    from vqatune.engine import queue

    with user_errors():
        run_id = _run_id(run, _runs_dir(ctx))
        queue.cancel(_runs_dir(ctx), run_id)
    typer.echo(f"{run_id}: cancelled")


@app.command("pause")
def pause(ctx: typer.Context) -> None:
    """Start no more runs (running ones go on)."""
    from vqatune.engine import queue

    with user_errors():
        queue.pause(_runs_dir(ctx))
    typer.echo("queue paused: `vqatune queue resume` goes on")


@app.command("resume")
def resume(ctx: typer.Context) -> None:
    """Go on starting runs (also after the crash guard paused the queue)."""
    from vqatune.engine import queue

    with user_errors():
        queue.resume(_runs_dir(ctx))
    typer.echo("queue resumed")


def enqueue(run_dir: Path, runs_dir: Path | None) -> None:
    """`vqatune run --queue`: put the new run in line, make sure a worker serves it."""
    from vqatune.engine import queue

    position = queue.submit(run_dir, runs_dir)
    typer.echo(run_dir.name)
    typer.echo(
        f"queued at position {position}: it starts when a GPU is free "
        f"(`vqatune queue` shows the line, `vqatune logs {run_dir.name} -f` follows it)",
        err=True,
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="queue")
