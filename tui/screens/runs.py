"""Runs: every run in the store with its state and key parameters; filter, sort, open, compare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, Static
from vqatune.engine import config as config_mod
from vqatune.engine import events as ev
from vqatune.engine import runstore
from vqatune.engine.schema import format_float
from vqatune.tui import display
from vqatune.tui.palette import PaletteBinding
from vqatune.tui.screens.table import PolledTableScreen

SELECTED_MARK = "▶"
COLUMNS = ("", "run", "state", "best acc", "duration", "preset", "lr", "batch", "epochs", "seed")
SORTABLE = COLUMNS[1:]


@dataclass
class RunRow:
    """One table row: the derived state plus the parameters worth seeing at a glance."""

    id: str
    path: Path
    state: str
    source: str
    lr: float | None
    batch: int | None  # effective batch size
    epochs: int | None
    seed: int | None
    best_accuracy: float | None
    duration_s: float | None
    created: float

    def sort_key(self, column: str):
        value = {
            "run": self.id,
            "state": self.state,
            "preset": self.source,
            "lr": self.lr,
            "batch": self.batch,
            "epochs": self.epochs,
            "seed": self.seed,
            "best acc": self.best_accuracy,
            "duration": self.duration_s,
        }[column]
        return (value is None, value if value is not None else 0)

    def matches(self, text: str) -> bool:
        text = text.lower()
        return not text or any(text in s.lower() for s in (self.id, self.state, self.source))


_params_cache: dict[Path, tuple[float, int, int, int] | None] = {}


def _key_params(run_dir: Path):
    """lr, effective batch, epochs, seed from config.toml (never changes, so read once)."""
    if run_dir not in _params_cache:
        try:
            cfg = config_mod.load(str(run_dir / ev.CONFIG_FILE))
            _params_cache[run_dir] = (cfg.lr, cfg.effective_batch_size, cfg.epochs, cfg.seed)
        except config_mod.ConfigError:
            _params_cache[run_dir] = None
    return _params_cache[run_dir]


def load_rows(runs_dir: Path | None) -> list[RunRow]:
    rows = []
    for info in runstore.list_runs(runs_dir):
        params = _key_params(info.path) or (None, None, None, None)
        rows.append(
            RunRow(
                info.id,
                info.path,
                info.state,
                info.source or "-",
                *params,
                info.best_accuracy,
                info.duration_s,
                info.created or 0.0,
            )
        )
    return rows


class RunsScreen(PolledTableScreen):
    COLUMNS = COLUMNS
    FIXED_COLUMNS = 3  # the mark, the run id and its state stay in view at any width
    TABLE_ID = "runs-table"
    BINDINGS = [
        Binding("enter", "open", "Monitor", priority=True),
        Binding("space", "toggle_select", "Select", key_display="␣"),
        PaletteBinding(
            "c",
            "compare",
            "Compare",
            title="Compare selected runs",
            help="Parameters, metrics and curves",
        ),
        PaletteBinding(
            "o",
            "cycle_sort",
            "Sort",
            show=False,
            title="Sort runs by the next column",
            help="Or click a column header",
        ),
        PaletteBinding(
            "slash",
            "focus_filter",
            "Filter",
            title="Filter runs",
            help="By id, state or preset",
        ),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self):
        super().__init__(id="runs")
        self.selected: set[str] = set()
        self.sort_column = "run"
        self.sort_reverse = True  # newest first
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        yield Input(placeholder="/ filter by id, state or preset", id="runs-filter", compact=True)
        yield self.make_table()
        yield Static("", id="runs-status")
        yield Footer(compact=True)

    def load_rows(self) -> list[RunRow]:
        return load_rows(getattr(self.app, "runs_dir", None))

    def visible_rows(self) -> list[RunRow]:
        rows = [r for r in self.rows if r.matches(self.filter_text)]
        return sorted(rows, key=lambda r: r.sort_key(self.sort_column), reverse=self.sort_reverse)

    def cells(self, r: RunRow) -> tuple:
        return (
            SELECTED_MARK if r.id in self.selected else "",
            r.id,
            display.state_text(r.state),
            display.accuracy(r.best_accuracy),
            display.duration(r.duration_s),
            r.source,
            format_float(r.lr) if r.lr is not None else "-",
            str(r.batch) if r.batch is not None else "-",
            str(r.epochs) if r.epochs is not None else "-",
            str(r.seed) if r.seed is not None else "-",
        )

    def after_rebuild(self) -> None:
        running = sum(r.state == "running" for r in self.rows)
        direction = "desc" if self.sort_reverse else "asc"
        self.query_one("#runs-status", Static).update(
            f"{len(self.rows)} run{'' if len(self.rows) == 1 else 's'} · {running} running · "
            f"{len(self.selected)} selected · "
            f"sorted by {self.sort_column} {direction}"
            + (f" · filter {self.filter_text!r}" if self.filter_text else "")
        )

    # ------------------------------------------------------------------------------------------

    @on(Input.Changed, "#runs-filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.rebuild()

    @on(DataTable.HeaderSelected, "#runs-table")
    def header_chosen(self, event: DataTable.HeaderSelected) -> None:
        label = str(event.label)
        if label in SORTABLE:
            self.sort_reverse = not self.sort_reverse if label == self.sort_column else False
            self.sort_column = label
            self.rebuild()

    def action_open(self) -> None:
        if self.focused is self.query_one("#runs-filter"):
            self.table.focus()
            return
        row = self.current_row()
        if row is not None:
            self.app.open_monitor(row.path)

    def action_toggle_select(self) -> None:
        row = self.current_row()
        if row is None:
            return
        self.selected ^= {row.id}
        self.rebuild()

    def action_compare(self) -> None:
        chosen = [r.path for r in self.rows if r.id in self.selected]
        if len(chosen) < 2:
            self.notify("select two or more runs with space first", severity="warning")
            return
        self.app.open_compare(chosen)

    def action_cycle_sort(self) -> None:
        i = SORTABLE.index(self.sort_column)
        self.sort_column = SORTABLE[(i + 1) % len(SORTABLE)]
        self.sort_reverse = self.sort_column in ("run", "best acc")
        self.rebuild()

    def action_focus_filter(self) -> None:
        self.query_one("#runs-filter").focus()

    def action_clear_filter(self) -> None:
        self.query_one("#runs-filter", Input).value = ""
        self.table.focus()
