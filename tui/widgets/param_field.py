"""One parameter as a form row, generated from its schema entry.

Numbers and paths are inputs, booleans (and the guide's 0/1 switches) are switches, choices are
selects. The row shows the default, the guide's recommended range and the help; a changed value
is marked, an out-of-range value warns and an invalid value shows the error.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, Select, Static, Switch

from vqatune.engine import schema
from vqatune.tui.form import SWITCH_KINDS, FieldState, display

CHANGED_MARK = "●"


def hint_text(param: schema.Param) -> str:
    default = param.default if param.kind in SWITCH_KINDS else display(param, param.default)
    parts = [f"default {default!r}" if default == "" else f"default {default}"]
    if param.recommended_text():
        parts.append(f"recommended {param.recommended_text()}")
    if param.bounds_text() and not param.choices:
        parts.append(f"must be {param.bounds_text()}")
    return " · ".join(parts)


class ParamField(Vertical):
    """A labelled control for one parameter with its hint and its error or warning line."""

    class Edited(Message):
        """The user changed the value (raw: text, bool or choice)."""

        def __init__(self, field: "ParamField", raw: Any):
            super().__init__()
            self.field = field
            self.raw = raw

    def __init__(self, param: schema.Param, raw: Any):
        super().__init__(id=f"field-{param.name}", classes="param-field")
        self.param = param
        self.raw = raw

    @property
    def control_id(self) -> str:
        return f"param-{self.param.name}"

    def compose(self) -> ComposeResult:
        p = self.param
        with Horizontal(classes="param-row"):
            yield Label(p.name, classes="param-name")  # "name ●" when changed
            if p.kind in SWITCH_KINDS:
                yield Switch(value=bool(self.raw), id=self.control_id)
            elif p.choices:
                yield Select([(c, c) for c in p.choices], value=self.raw, allow_blank=False,
                             compact=True, id=self.control_id)
            else:
                yield Input(value=str(self.raw), compact=True, id=self.control_id)
        yield Static(f"{hint_text(p)}\n{p.help}", classes="param-hint")
        yield Static("", classes="param-message")

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.raw = event.value
        self.post_message(self.Edited(self, event.value))

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self.raw = event.value
        self.post_message(self.Edited(self, event.value))

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is Select.BLANK:
            return
        self.raw = event.value
        self.post_message(self.Edited(self, event.value))

    def focus_control(self) -> None:
        self.query_one(f"#{self.control_id}").focus()

    def set_raw(self, raw: Any) -> None:
        """Put a value in the control without reporting it as an edit (a preset was applied)."""
        self.raw = raw
        control = self.query_one(f"#{self.control_id}")
        with self.prevent(Input.Changed, Switch.Changed, Select.Changed):
            if isinstance(control, Switch):
                control.value = bool(raw)
            elif isinstance(control, Select):
                control.value = raw
            else:
                control.value = str(raw)

    def show_state(self, state: FieldState, note: str = "") -> None:
        """Mark changed, show the error (invalid) or the warning (outside the recommended range)."""
        self.set_class(state.changed, "-changed")
        self.set_class(state.error is not None, "-invalid")
        self.set_class(state.warning is not None, "-warning")
        self.query_one(".param-name", Label).update(
            f"{self.param.name} {CHANGED_MARK}" if state.changed else self.param.name)
        message = self.query_one(".param-message", Static)
        if state.error:
            message.update(f"✗ {state.error}")
        elif state.warning:
            message.update(f"! {state.warning}")
        else:
            message.update(note)
        message.display = bool(state.error or state.warning or note)
