"""`vqatune analyze`: which parameters mattered over a set of finished runs, and where the good
runs are (parallel coordinates in the terminal).

Optuna (and, for fANOVA, scikit-learn) is imported only when the command runs.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer

from .common import fail, print_json, user_errors, warn
from .runs_cmd import JsonOption, RunsDirOption

BAR = 24


def analyze(
    run_names: list[str] | None = typer.Argument(
        None, metavar="[RUN...]", help="Runs (id, prefix, name or directory); default: all."
    ),
    sweep: str | None = typer.Option(
        None, "--sweep", metavar="ID", help="The runs of a sweep (id, prefix or plan name)."
    ),
    filters: list[str] | None = typer.Option(
        None,
        "--filter",
        "-f",
        metavar="KEY OP VALUE",
        help="Keep runs where a parameter or state/name/source/sweep/id matches "
        "(=, !=, <, <=, >, >=, ~ contains); repeatable: -f 'lr>=1e-4' -f state=done.",
    ),
    metric: str = typer.Option(
        "best_accuracy",
        "--metric",
        help="best_accuracy, final_accuracy, final_loss, duration_s or samples_per_s.",
    ),
    evaluator: str = typer.Option(
        "ped-anova", "--evaluator", help="ped-anova (fast, default) or fanova (scikit-learn)."
    ),
    seed: int = typer.Option(0, "--seed", help="fANOVA's random forest seed."),
    plot: bool = typer.Option(
        False, "--plot", help="Draw parallel coordinates: one axis per varying parameter."
    ),
    as_json: bool = JsonOption,
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Parameter importance over finished runs (a sweep, a filter, or runs picked by hand)."""
    from vqatune.engine import analysis

    with user_errors():
        parsed = [analysis.parse_filter(f) for f in filters or []]
        dirs = analysis.select_runs(run_names, sweep=sweep, runs_dir=runs_dir)
        points = analysis.load_points(dirs, metric, parsed)
        if not points:
            fail("no runs to analyse" + (" (the filters keep none)" if parsed else ""))
        result = analysis.analyse(points, metric=metric, evaluator=evaluator, seed=seed)
    if as_json:
        print_json(result.to_dict())
        return
    print_importance(result)
    if plot:
        print_parallel_coordinates(result)


def print_importance(result) -> None:
    seed = "deterministic" if result.seed is None else f"seed {result.seed}"
    better = "higher" if result.higher_is_better else "lower"
    typer.echo(
        f"importance for {result.metric} ({better} is better) · {result.evaluator} ({seed}) · "
        f"{result.n_used} of {result.n_runs} runs used"
    )
    if result.warning:
        warn(result.warning)
    if result.importances:
        width = max(len(n) for n in result.params)
        for name in result.params:
            share = result.importances[name]
            typer.echo(f"  {name:<{width}}  {share:6.3f}  {'█' * round(share * BAR)}")
    if result.constant:
        typer.echo(f"left out (one value in every run): {len(result.constant)} parameters")


def points_for_plot(result) -> list[dict]:
    return [{"values": p.values, "metric": p.metric} for p in result.points if p.metric is not None]


def print_parallel_coordinates(result) -> None:
    from rich.console import Console
    from vqatune.tui import parcoords

    points = points_for_plot(result)
    if not points or not result.params:
        warn("nothing to draw: no finished run with a varying parameter")
        return
    axes = parcoords.build_axes(points, result.params, result.metric, result.importances)
    width, height = shutil.get_terminal_size((100, 30))
    plain = not sys.stdout.isatty() or bool(os.environ.get("NO_COLOR"))
    text = parcoords.render(
        points, axes, min(width, 160), max(12, min(height - 4, 30)), color=not plain
    )
    console = Console(width=min(width, 160), no_color=plain, highlight=False)
    console.print()
    console.print(text)


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
