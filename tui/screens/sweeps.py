"""Sweeps: every sweep in the store with its progress and best run; open its runs or the best."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import Footer, Static
from vqatune.engine import sweepstore as sweep_mod
from vqatune.tui import display
from vqatune.tui.palette import PaletteBinding
from vqatune.tui.screens.table import PolledTableScreen

# No `kind` column: at 80 columns every column must fit, and a search's best is "trial N" anyway.
COLUMNS = ("sweep", "state", "done", "running", "failed", "best acc", "best")


@dataclass
class SweepRow:
    """One table row: a sweep and its progress, as plain values (compared to skip redraws)."""

    sweep: sweep_mod.Sweep
    state: str
    total: int | None
    done: int
    running: int
    failed: int
    best_accuracy: float | None
    best_run: str | None
    best_label: str | None

    @property
    def id(self) -> str:
        return self.sweep.id


def load_rows(runs_dir: Path | None) -> list[SweepRow]:
    """Newest sweep first; reads the run store once for all sweeps."""
    rows = [
        SweepRow(
            s,
            p.state,
            p.total,
            p.done,
            p.running,
            p.failed,
            p.best_accuracy,
            p.best_run,
            p.best_label,
        )
        for s, p in sweep_mod.overview(runs_dir)
    ]
    return rows[::-1]


def progress_text(row: SweepRow) -> str:
    return f"{row.done}/{row.total if row.total is not None else '?'}"


class SweepsScreen(PolledTableScreen):
    COLUMNS = COLUMNS
    FIXED_COLUMNS = 1  # the sweep id stays in view when the table scrolls right
    TABLE_ID = "sweeps-table"
    BINDINGS = [
        PaletteBinding(
            "enter",
            "open_runs",
            "Its runs",
            priority=True,
            title="Compare the sweep's runs",
            help="Its runs side by side",
        ),
        PaletteBinding(
            "b", "open_best", "Best run", title="Open the sweep's best run", help="Its monitor"
        ),
        PaletteBinding(
            "a",
            "analyse",
            "Analysis",
            title="Analyse the sweep",
            help="Importance, parallel coordinates",
        ),
    ]

    def __init__(self):
        super().__init__(id="sweeps")

    def compose(self) -> ComposeResult:
        yield Static("Sweeps", id="sweeps-title")
        yield self.make_table()
        yield Static("", id="sweeps-status")
        yield Footer(compact=True)

    def load_rows(self) -> list[SweepRow]:
        return load_rows(getattr(self.app, "runs_dir", None))

    def cells(self, r: SweepRow) -> tuple:
        return (
            r.id,
            display.state_text(r.state),
            progress_text(r),
            str(r.running),
            Text(str(r.failed), style="red" if r.failed else ""),
            display.accuracy(r.best_accuracy),
            r.best_label or "-",
        )

    def after_rebuild(self) -> None:
        active = sum(r.state == "running" for r in self.rows)
        self.query_one("#sweeps-status", Static).update(
            f"{len(self.rows)} sweep{'' if len(self.rows) == 1 else 's'} · {active} running · "
            "enter: compare its runs · b: best run's monitor"
        )

    # ------------------------------------------------------------------------------------------

    def action_open_runs(self) -> None:
        row = self.current_row()
        if row is not None:
            self.find_runs(row.sweep)

    @work(thread=True, exclusive=True, group="open")
    def find_runs(self, sweep: sweep_mod.Sweep) -> None:
        paths = [info.path for info in sweep_mod.sweep_runs(sweep)]
        self.app.call_from_thread(self._open_compare, sweep.id, paths)

    def _open_compare(self, sweep_id: str, paths: list[Path]) -> None:
        if not paths:
            self.notify(f"sweep {sweep_id} has no runs yet", severity="warning")
            return
        self.app.open_compare(paths)

    def action_analyse(self) -> None:
        row = self.current_row()
        if row is not None:
            self.app.open_analysis(sweep=row.id)

    def action_open_best(self) -> None:
        row = self.current_row()
        if row is None:
            return
        if row.best_run is None:
            self.notify(f"sweep {row.id} has no evaluated run yet", severity="warning")
            return
        from vqatune.tui.screens.monitor import MonitorScreen

        self.app.push_screen(MonitorScreen(row.sweep.runs_dir / row.best_run))
