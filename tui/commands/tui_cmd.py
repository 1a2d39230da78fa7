"""`vqatune tui`: the Textual workstation (textual is imported only here, inside the command)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from .common import RunsDirOption


class StartScreen(str, Enum):
    auto = "auto"
    configure = "configure"
    runs = "runs"
    sweeps = "sweeps"


def tui(
    runs_dir: Path | None = RunsDirOption,
    screen: StartScreen = typer.Option(
        StartScreen.auto,
        "--screen",
        help="Screen to open: auto opens Runs when a run is running, else Configure.",
    ),
) -> None:
    """Configure, launch, monitor and compare runs in a terminal UI (quitting never stops a run)."""
    from vqatune.tui.app import VQATuneApp

    VQATuneApp(runs_dir=runs_dir, start=screen.value).run()


def register(app: typer.Typer) -> None:
    app.command("tui")(tui)
