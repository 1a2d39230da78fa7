"""`vqatune export`: runs to CSV, TensorBoard event files or a self-contained HTML report.

The writers (tensorboardX, plotly) are imported only by the format that needs them.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail, user_errors
from .runs_cmd import RunsDirOption


def export(
    run_names: list[str] | None = typer.Argument(
        None, metavar="[RUN...]", help="Runs (id, prefix, name or directory)."
    ),
    sweep: str | None = typer.Option(
        None, "--sweep", metavar="ID", help="Export a sweep's runs (id, prefix or plan name)."
    ),
    fmt: str = typer.Option(..., "--format", metavar="csv|tensorboard|html", help="What to write."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Folder to write into."),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Export runs: CSV of every event, TensorBoard event files (scalars and hparams), or one
    HTML report (config diff, seed statistics, importance, curves, parallel coordinates)."""
    from vqatune.engine import analysis
    from vqatune.engine import export as exporting

    if not run_names and not sweep:
        fail("give runs or --sweep")
    with user_errors():
        if fmt not in exporting.FORMATS:  # before reading any run
            fail(f"--format {fmt!r}: must be one of {', '.join(exporting.FORMATS)}")
        selected = analysis.select_runs(run_names, sweep=sweep, runs_dir=runs_dir)
        dirs = [getattr(run, "path", run) for run in selected]  # a RunInfo or a directory
        written = exporting.export(dirs, fmt, out)
    for path in written:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("export")(export)
