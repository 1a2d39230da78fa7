"""The vqatune workstation: Configure, Runs (with Monitor and Compare), Sweeps as Textual modes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from vqatune.tui.messages import AlertsArrived
from vqatune.tui.palette import PaletteBinding, binding_commands
from vqatune.tui.screens.configure import ConfigureScreen

ALERT_POLL_S = 2.0


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
        "analysis": lambda: _analysis_screen(),
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
        PaletteBinding(
            "f5",
            "switch_mode('analysis')",
            "Analysis",
            title="Analysis",
            help="Parameter importance and parallel coordinates of all runs",
        ),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, runs_dir: Path | None = None, start: str = "configure"):
        super().__init__()
        self.runs_dir = runs_dir
        self.start = start

    def on_mount(self) -> None:
        self.alerts_feed = None  # engine.metrics.MetricsTail of the store's alert feed
        self.set_interval(ALERT_POLL_S, self.poll_alerts)
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

    def poll_alerts(self) -> None:
        # One read at a time, never cancelled: a slow disk skips a beat instead.
        if not any(w.group == "alerts" and not w.is_finished for w in self.workers):
            self.read_alerts()

    @work(thread=True, group="alerts")
    def read_alerts(self) -> None:
        """Alerts the run watchers wrote since the last look (engine/alerts.py): ring the bell."""
        from vqatune.engine import alerts, runstore
        from vqatune.engine.metrics import MetricsTail

        if self.alerts_feed is None:
            path = Path(self.runs_dir or runstore.default_runs_dir()) / alerts.FEED_FILE
            self.alerts_feed = MetricsTail(path, offset=path.stat().st_size if path.exists() else 0)
        new = self.alerts_feed.read(kinds=("alert",))
        if new:
            self.post_message(AlertsArrived(new))

    def on_alerts_arrived(self, message: AlertsArrived) -> None:
        self.bell()
        for alert in message.alerts:
            bad = alert.get("state") in ("crashed", "failed", "diverged", "oom")
            self.notify(str(alert.get("text")), severity="error" if bad else "information")

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

    def open_analysis(self, run_dirs: list[Path] | None = None, *, sweep: str | None = None):
        from vqatune.tui.screens.analysis import AnalysisScreen

        title = f"{len(run_dirs)} compared runs" if run_dirs is not None else ""
        self.push_screen(AnalysisScreen(run_dirs, sweep=sweep, title=title))

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


def _analysis_screen() -> Screen:
    from vqatune.tui.screens.analysis import AnalysisScreen

    return AnalysisScreen()


def _sweeps_screen() -> Screen:
    from vqatune.tui.screens.sweeps import SweepsScreen

    return SweepsScreen()
