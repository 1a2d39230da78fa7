"""A screen around one table of the run store, re-read in a worker while the screen is shown.

Subclasses name their COLUMNS and give `load_rows` (blocking: runs in a thread worker) and
`cells`; rows are dataclasses with an `id`, compared as a whole to skip redraws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import work
from textual.screen import Screen
from textual.widgets import DataTable
from vqatune.tui.messages import RowsListed

REFRESH_S = 2.0


def _width(cell: Any) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(str(cell))


class PolledTableScreen(Screen):
    COLUMNS: ClassVar[Sequence[str]] = ()
    # The first columns stay in view when the table scrolls right (the rest scroll).
    FIXED_COLUMNS: ClassVar[int] = 0
    TABLE_ID: ClassVar[str] = ""

    def __init__(self, id: str):
        super().__init__(id=id)
        self.rows: list = []

    # -- what a subclass gives -----------------------------------------------------------------

    def load_rows(self) -> list:
        """Read the store (called in a thread worker)."""
        raise NotImplementedError

    def cells(self, row) -> Sequence[Any]:
        """One table row's cells (str or rich Text), in COLUMNS order."""
        raise NotImplementedError

    def visible_rows(self) -> list:
        return self.rows

    def after_rebuild(self) -> None:
        """Update what describes the table (a status line)."""

    # -- the polling -----------------------------------------------------------------------------

    @property
    def table(self) -> DataTable:
        return self.query_one(f"#{self.TABLE_ID}", DataTable)

    def make_table(self) -> DataTable:
        return DataTable(
            id=self.TABLE_ID,
            cursor_type="row",
            zebra_stripes=True,
            fixed_columns=self.FIXED_COLUMNS,
        )

    def on_mount(self) -> None:
        for i, label in enumerate(self.COLUMNS):  # the header at once, before the first listing
            self.table.add_column(label, key=self._column_key(i, label))
        self.table.focus()
        self.refresh_rows()
        self.set_interval(REFRESH_S, self.refresh_if_shown)

    def refresh_if_shown(self) -> None:
        """Hidden (another mode, or under a monitor or compare screen): leave the CPU to
        training."""
        if self.is_active:
            self.refresh_rows()

    def on_screen_resume(self) -> None:
        self.refresh_rows()  # back from a monitor: show what changed meanwhile at once

    @work(thread=True, exclusive=True, group="rows")
    def refresh_rows(self) -> None:
        self.post_message(RowsListed(self.load_rows()))

    def on_rows_listed(self, message: RowsListed) -> None:
        if message.rows == self.rows:  # nothing changed: keep the table (and the UI) still
            return
        self.rows = message.rows
        self.rebuild()

    def rebuild(self) -> None:
        """Refill the table, keeping the cursor on the same row.

        Column widths are set here from the cells, not measured later by the table: DataTable
        measures auto-width columns when it is next idle, and a frame drawn before that (a busy
        machine) is cached with the header's widths and kept (`202` for a run id)."""
        table = self.table
        scroll_x, cursor_key = table.scroll_x, None
        if table.row_count and table.cursor_row < table.row_count:
            cursor_key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        rows = [(r.id, list(self.cells(r))) for r in self.visible_rows()]
        table.clear(columns=True)
        for i, label in enumerate(self.COLUMNS):
            width = max([cell_len(label), *(_width(cells[i]) for _, cells in rows)])
            table.add_column(label, key=self._column_key(i, label), width=width)
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if cursor_key is not None and cursor_key in table.rows:
            table.move_cursor(row=table.get_row_index(cursor_key), animate=False)
        table.scroll_x = scroll_x  # clear() scrolled back to the first column
        self.after_rebuild()

    @staticmethod
    def _column_key(index: int, label: str) -> str:
        return label or f"column-{index}"

    def current_row(self):
        table = self.table
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return next((r for r in self.rows if r.id == key), None)
