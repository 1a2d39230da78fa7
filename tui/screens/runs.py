"""Runs: every run in the store with its state and key parameters; filter, sort, open, compare;
queued runs with their place in line (or GPU), cancelled or moved as `vqatune queue` does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, Static
from vqatune.engine import config as config_mod
from vqatune.engine import events as ev
from vqatune.engine import queue, runstore
from vqatune.engine.config import ConfigError
from vqatune.engine.schema import format_float
from vqatune.tui import display
from vqatune.tui.messages import QueueListed, UserError
from vqatune.tui.palette import PaletteBinding
from vqatune.tui.readers import QueuePlace, queue_places
from vqatune.tui.screens.dialogs import ConfirmScreen
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
    queue: QueuePlace | None = None  # in the store's queue: waiting, or started by it

    @property
    def position(self) -> int | None:
        return self.queue.position if self.queue else None

    def sort_key(self, column: str):
        value = {
            "run": self.id,
            "state": (self.state, self.position or 0),  # queued runs in line order
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


def load_rows(runs_dir: Path | None, places: dict[str, QueuePlace] | None = None) -> list[RunRow]:
    rows = []
    places = places or {}
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
                places.get(info.id),
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
        PaletteBinding(
            "x",
            "cancel_queued",
            "Cancel queued",
            title="Cancel queued run",
            help="Take the highlighted run out of the queue; it ends stopped",
        ),
        PaletteBinding(
            "shift+up",
            "move_queued(-1)",
            "Queue up",
            show=False,
            key_display="⇧↑",
            title="Move queued run up",
            help="One place nearer the head of the queue",
        ),
        PaletteBinding(
            "shift+down",
            "move_queued(1)",
            "Queue down",
            show=False,
            key_display="⇧↓",
            title="Move queued run down",
            help="One place further back in the queue",
        ),
    ]

    def __init__(self):
        super().__init__(id="runs")
        self.selected: set[str] = set()
        self.sort_column = "run"
        self.sort_reverse = True  # newest first
        self.filter_text = ""
        self.queue_line: str | None = None  # engine.queue.describe, None while the queue is idle

    def compose(self) -> ComposeResult:
        yield Input(placeholder="/ filter by id, state or preset", id="runs-filter", compact=True)
        yield self.make_table()
        yield Static("", id="runs-status")
        yield Footer(compact=True)

    @property
    def runs_dir(self) -> Path | None:
        return getattr(self.app, "runs_dir", None)

    def load_rows(self) -> list[RunRow]:
        line, places = queue_places(self.runs_dir)
        self.post_message(QueueListed(line))  # the status line; it may change without the rows
        return load_rows(self.runs_dir, places)

    def visible_rows(self) -> list[RunRow]:
        rows = [r for r in self.rows if r.matches(self.filter_text)]
        return sorted(rows, key=lambda r: r.sort_key(self.sort_column), reverse=self.sort_reverse)

    def cells(self, r: RunRow) -> tuple:
        return (
            SELECTED_MARK if r.id in self.selected else "",
            r.id,
            _state_cell(r),
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
            + (f"queue: {self.queue_line} · " if self.queue_line else "")  # in view at 80 columns
            + f"{len(self.selected)} selected · "
            f"sorted by {self.sort_column} {direction}"
            + (f" · filter {self.filter_text!r}" if self.filter_text else "")
        )

    def on_queue_listed(self, message: QueueListed) -> None:
        if message.line != self.queue_line:
            self.queue_line = message.line
            self.after_rebuild()

    def on_user_error(self, message: UserError) -> None:
        self.notify(message.text, severity="error", timeout=6)

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

    # -- the queue: the same functions as `vqatune queue cancel` and `vqatune queue move` -------

    def waiting_row(self) -> RunRow | None:
        """The highlighted run if it waits in the queue, else None (and the user is told)."""
        row = self.current_row()
        if row is not None and row.position is None:
            self.notify(
                f"{row.id} is not waiting in the queue (a running one stops from its monitor)",
                severity="warning",
            )
            return None
        return row

    def action_cancel_queued(self) -> None:
        row = self.waiting_row()
        if row is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.cancel_in_queue(row.id)

        self.app.push_screen(
            ConfirmScreen(
                f"Cancel queued run {row.id}?",
                f"It leaves the queue at position {row.position} and ends stopped; "
                f"`vqatune resume {row.id}` would still start it.",
                yes="Cancel run",
                no="Keep it",
            ),
            confirmed,
        )

    def action_move_queued(self, delta: int) -> None:
        row = self.waiting_row()
        if row is None:
            return
        if row.position + delta < 1:
            self.notify(f"{row.id} is already at the head of the queue")
            return
        self.move_in_queue(row.id, row.position + delta)

    @work(thread=True, group="queue")
    def cancel_in_queue(self, run_id: str) -> None:
        try:
            queue.cancel(self.runs_dir, run_id)
        except ConfigError as e:  # it started (or left the line) meanwhile
            self.post_message(UserError(f"cannot cancel: {e}"))
            return
        self.app.call_from_thread(self.queue_changed, f"cancelled {run_id}: it left the queue")

    @work(thread=True, group="queue")
    def move_in_queue(self, run_id: str, to: int) -> None:
        try:
            where = queue.move(self.runs_dir, run_id, to)
        except ConfigError as e:
            self.post_message(UserError(f"cannot move: {e}"))
            return
        self.app.call_from_thread(self.queue_changed, f"{run_id}: position {where} in the queue")

    def queue_changed(self, text: str) -> None:
        self.notify(text, timeout=4)
        self.refresh_rows()


def _state_cell(r: RunRow) -> Text:
    """The state in its colour, and for a run of the queue its place (`queued #2`, `GPU 0`)."""
    cell = display.state_text(r.state)
    place = r.queue.text() if r.queue else ""
    if place:
        cell.append(f" {place}", style="bold" if r.position is not None else "")
    return cell
