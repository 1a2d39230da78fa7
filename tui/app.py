"""The vqatune workstation: Configure, Runs (with Monitor and Compare), Sweeps as Textual modes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from vqatune.tui.palette import PaletteBinding, binding_commands
from vqatune.tui.screens.configure import ConfigureScreen


class VQATuneApp(App):
    """Keyboard first: F2 Configure, F3 Runs, F4 Sweeps, ctrl+p the command palette, ctrl+q quit.

    Quitting never stops a run: training runs in its own detached process and the TUI only reads
    its run directory.
    """

    CSS_PATH = "app.tcss"
    TITLE = "vqatune"
    MODES = {
        "configure": ConfigureScreen,
        "runs": lambda: _runs_screen(),
        "sweeps": lambda: _sweeps_screen(),
    }
    DEFAULT_MODE = "configure"  # built directly, without an empty default screen first
    BINDINGS = [
        PaletteBinding(
            "f2",
            "switch_mode('configure')",
            "Config",
            title="Configure",
            help="Edit parameters, presets, launch",
        ),
        PaletteBinding(
            "f3",
            "switch_mode('runs')",
            "Runs",
            title="Runs",
            help="All runs: monitor, filter, sort, compare",
        ),
        PaletteBinding(
            "f4",
            "switch_mode('sweeps')",
            "Sweeps",
            title="Sweeps",
            help="Sweeps: progress, best run, compare their runs",
        ),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, runs_dir: Path | None = None, start: str = "configure"):
        super().__init__()
        self.runs_dir = runs_dir
        self.start = start

    def on_mount(self) -> None:
        if self.start == "auto":
            self.find_running_runs()
        elif self.start != self.current_mode:
            self.switch_mode(self.start)

    @work(thread=True, exclusive=True)
    def find_running_runs(self) -> None:
        """Re-attach: when runs are training, open Runs (unless the user already moved on)."""
        from vqatune.engine import runstore

        running = [r for r in runstore.list_runs(self.runs_dir) if r.state == "running"]
        if running:
            self.call_from_thread(self._show_running, len(running))

    def _show_running(self, count: int) -> None:
        if self.current_mode == "configure" and len(self.screen_stack) == 1:
            self.switch_mode("runs")
        self.notify(f"{count} run{'s' if count > 1 else ''} running", timeout=4)

    def open_monitor(self, run_dir: Path) -> None:
        """Show a run's monitor on top of the Runs screen (so escape lands on the list)."""
        if self.current_mode != "runs":
            self.switch_mode("runs")
        from vqatune.tui.screens.monitor import MonitorScreen

        self.push_screen(MonitorScreen(run_dir))

    def open_compare(self, run_dirs: list[Path]) -> None:
        from vqatune.tui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(run_dirs))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from binding_commands(self, self)
        yield from binding_commands(self, screen)
        yield from getattr(screen, "palette_commands", tuple)()


def _runs_screen() -> Screen:
    # Imported on first use: charts pull in numpy and plotext, which the first frame never needs.
    from vqatune.tui.screens.runs import RunsScreen

    return RunsScreen()


def _sweeps_screen() -> Screen:
    from vqatune.tui.screens.sweeps import SweepsScreen

    return SweepsScreen()
