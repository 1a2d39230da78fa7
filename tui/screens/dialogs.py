"""Modal dialogs: diff against the preset, save as preset, load a file (Configure), and a yes/no
confirmation (cancelling a queued run on Runs)."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Static
from vqatune.engine import schema
from vqatune.tui.form import display


class DiffScreen(ModalScreen[None]):
    """The parameters that differ from the preset (or loaded file), and the invalid ones."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, source: str, changed: list[tuple[str, Any, Any]], errors: dict[str, str]):
        super().__init__()
        self.source = source
        self.changed = changed
        self.errors = errors

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog wide"):
            yield Label(f"Changes against {self.source}", classes="dialog-title")
            if not self.changed and not self.errors:
                yield Static("No changes.", id="diff-empty")
            yield DataTable(id="diff-table", cursor_type="row", zebra_stripes=True)
            yield Static("esc to close", classes="dialog-hint")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("parameter", self.source, "current")
        for name, old, new in self.changed:
            p = schema.BY_NAME[name]
            table.add_row(name, str(display(p, old)), str(display(p, new)), key=name)
        for name, error in self.errors.items():
            table.add_row(name, "", f"✗ {error}", key=name)
        table.display = table.row_count > 0
        table.focus()


class SavePresetScreen(ModalScreen[tuple[str, str] | None]):
    """Ask for a preset name and title; returns (name, title) or None."""

    BINDINGS = [Binding("escape", "dismiss", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label("Save the current values as a preset", classes="dialog-title")
            yield Input(placeholder="name (e.g. my-24gb)", id="preset-name")
            yield Input(placeholder="title (optional)", id="preset-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", id="save", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def submit(self) -> None:
        name = self.query_one("#preset-name", Input).value.strip()
        if not name:
            self.query_one("#preset-name", Input).focus()
            return
        self.dismiss((name, self.query_one("#preset-title", Input).value))

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)


class LoadFileScreen(ModalScreen[str | None]):
    """Ask for a config file (or preset name) to load into the form."""

    BINDINGS = [Binding("escape", "dismiss", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label("Load a config file", classes="dialog-title")
            yield Input(placeholder="path/to/config.toml", id="load-path")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Load", id="load", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#load")
    def submit(self) -> None:
        path = self.query_one("#load-path", Input).value.strip()
        if path:
            self.dismiss(path)

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question about something that cannot be undone here; returns True for yes."""

    BINDINGS = [
        Binding("escape,n", "dismiss(False)", "No"),
        Binding("y", "dismiss(True)", "Yes"),
    ]

    def __init__(self, title: str, text: str, yes: str = "Yes", no: str = "No"):
        super().__init__()
        self.title_text = title
        self.text = text
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.text, id="confirm-text")
            yield Static("y / enter: yes · n / esc: no", classes="dialog-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, id="yes", variant="error", compact=True)
                yield Button(self.no, id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    @on(Button.Pressed, "#yes")
    def confirmed(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def refused(self) -> None:
        self.dismiss(False)
