"""Sweeps: every sweep in the store with its progress and best run; open its runs or the best."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from vqatune.engine import sweepstore as sweep_mod
from vqatune.tui.messages import SweepsListed

REFRESH_S = 2.0
# No `kind` column: at 80 columns every column must fit, and a search's best is "trial N" anyway.
COLUMNS = ("sweep", "state", "done", "running", "failed", "best acc", "best")
STATE_STYLES = {"running": "bold green", "finished": "green", "incomplete": "yellow"}


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


class SweepsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open_runs", "Its runs", priority=True),
        Binding("b", "open_best", "Best run"),
    ]

    def __init__(self):
        super().__init__(id="sweeps")
        self.rows: list[SweepRow] = []

    def compose(self) -> ComposeResult:
        yield Static("Sweeps", id="sweeps-title")
        yield DataTable(id="sweeps-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="sweeps-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#sweeps-table", DataTable)
        for label in COLUMNS:
            table.add_column(label, key=label)
        table.focus()
        self.refresh_sweeps()
        self.set_interval(REFRESH_S, self.refresh_if_shown)

    def refresh_if_shown(self) -> None:
        """Hidden (another mode, or under compare/monitor): no polling of the run store."""
        if self.is_active:
            self.refresh_sweeps()

    def on_screen_resume(self) -> None:
        self.refresh_sweeps()

    @work(thread=True, exclusive=True, group="sweeps")
    def refresh_sweeps(self) -> None:
        self.post_message(SweepsListed(load_rows(getattr(self.app, "runs_dir", None))))

    def on_sweeps_listed(self, message: SweepsListed) -> None:
        if message.sweeps == self.rows:  # unchanged: keep the table and its cursor still
            return
        self.rows = message.sweeps
        self.rebuild()

    def rebuild(self) -> None:
        table = self.query_one("#sweeps-table", DataTable)
        cursor_key = None
        if table.row_count and table.cursor_row < table.row_count:
            cursor_key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        table.clear()
        for r in self.rows:
            table.add_row(
                r.id,
                Text(r.state, style=STATE_STYLES.get(r.state, "")),
                progress_text(r),
                str(r.running),
                Text(str(r.failed), style="red" if r.failed else ""),
                f"{r.best_accuracy:.4f}" if r.best_accuracy is not None else "-",
                r.best_label or "-",
                key=r.id,
            )
        if cursor_key is not None and cursor_key in table.rows:
            table.move_cursor(row=table.get_row_index(cursor_key), animate=False)
        active = sum(r.state == "running" for r in self.rows)
        self.query_one("#sweeps-status", Static).update(
            f"{len(self.rows)} sweep{'' if len(self.rows) == 1 else 's'} · {active} running · "
            "enter: compare its runs · b: best run's monitor"
        )

    def current_row(self) -> SweepRow | None:
        table = self.query_one("#sweeps-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return next((r for r in self.rows if r.id == key), None)

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

    def action_open_best(self) -> None:
        row = self.current_row()
        if row is None:
            return
        if row.best_run is None:
            self.notify(f"sweep {row.id} has no evaluated run yet", severity="warning")
            return
        from vqatune.tui.screens.monitor import MonitorScreen

        self.app.push_screen(MonitorScreen(row.sweep.runs_dir / row.best_run))
