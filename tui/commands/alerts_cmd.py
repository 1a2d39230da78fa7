"""`vqatune alerts`: show the alert settings, set them for runs or a sweep, send a test."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail, print_json, user_errors
from .runs_cmd import JsonOption, RunsDirOption, _find


def alerts(
    run_names: list[str] | None = typer.Argument(
        None, metavar="[RUN...]", help="Runs to configure (id, prefix, name or directory)."
    ),
    sweep: str | None = typer.Option(
        None, "--sweep", metavar="ID", help="Configure a sweep: its runs and its end."
    ),
    on: str | None = typer.Option(
        None, "--on", metavar="STATES", help="End states that notify: done,crashed,... or none."
    ),
    when: list[str] | None = typer.Option(
        None, "--when", metavar="COND", help="A threshold, e.g. 'accuracy >= 0.9' (repeatable)."
    ),
    silent: float | None = typer.Option(
        None, "--silent", metavar="MIN", help="Notify after MIN minutes without metrics (0: off)."
    ),
    webhook: str | None = typer.Option(
        None, "--webhook", metavar="URL", help="POST a Slack-compatible JSON body here."
    ),
    desktop: bool | None = typer.Option(
        None, "--desktop/--no-desktop", help="Desktop notifications where a desktop exists."
    ),
    test: bool = typer.Option(False, "--test", help="Send a test alert on every channel now."),
    as_json: bool = JsonOption,
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Alerts when a run ends (done, crashed, diverged, oom), crosses a threshold or goes
    silent: desktop, webhook, and the bell of an open TUI. Defaults live in
    ~/.config/vqatune/config.toml [alerts]; this sets them per run or sweep."""
    from vqatune.engine import alerts as al

    table: dict = {}
    if on is not None:
        table["on"] = [] if on.strip() == "none" else [s.strip() for s in on.split(",") if s]
    if when:
        table["when"] = list(when)
    if silent is not None:
        table["silent_min"] = silent
    if webhook is not None:
        table["webhook"] = webhook
    if desktop is not None:
        table["desktop"] = desktop
    with user_errors():
        targets = _targets(run_names, sweep, runs_dir)
        if table and not targets:
            fail(f"give runs or --sweep to configure; defaults go in {al.user_config_file()}")
        for directory, _ in targets:
            al.write_settings(directory, table) if table else None
        shown = targets or [(None, None)]
        report = []
        for directory, run_dir in shown:
            settings = (
                al.load_settings(run_dir)
                if run_dir is not None
                else al.load_settings(sweep_dir=directory)
            )
            watching = None
            if run_dir is not None and table:
                watching = al.start_watcher(run_dir) if _live(run_dir) else None
            report.append((directory, settings, watching))
            if test:
                alert = al.Alert(
                    "test", Path(directory).name if directory else "-", "vqatune: test alert"
                )
                failures = al.deliver(alert, settings, run_dir, None)
                for line in failures:
                    typer.echo(f"not delivered: {line}", err=True)
                if failures:
                    raise typer.Exit(1)
    if as_json:
        print_json([{"target": str(d) if d else None, **s.to_dict()} for d, s, _ in report])
        return
    for directory, settings, watching in report:
        typer.echo(f"{directory or 'defaults'}:")
        for key, value in settings.to_dict().items():
            typer.echo(f"  {key} = {value}")
        desktop_cmd = al.desktop_command("vqatune", "")
        typer.echo(f"  desktop notifications: {'available' if desktop_cmd else 'none here'}")
        if watching:
            typer.echo(f"  watcher started (pid {watching})")


def _targets(run_names, sweep, runs_dir) -> list[tuple[Path, Path | None]]:
    """(directory whose alerts.toml to use, run directory or None for a sweep)."""
    if sweep:
        from vqatune.engine import sweepstore

        return [(sweepstore.find_sweep(sweep, runs_dir).path, None)]
    return [(d, d) for d in (_find(q, runs_dir) for q in run_names or [])]


def _live(run_dir: Path) -> bool:
    from vqatune.engine import runstore

    return runstore.run_info(run_dir).state in ("running", "queued")


def register(app: typer.Typer) -> None:
    app.command("alerts")(alerts)
