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

        def __init__(self, field: ParamField, raw: Any):
            super().__init__()
            self.field = field
            self.raw = raw

    def __init__(self, param: schema.Param, raw: Any, state: FieldState, note: str = ""):
        # The first state goes in as classes and texts: restyling after mount is what makes
        # building a panel slow.
        super().__init__(
            id=f"field-{param.name}", classes=" ".join(["param-field", *_state_classes(state)])
        )
        self.param = param
        self.raw = raw
        self.first_state = state
        self.first_note = note

    @property
    def control_id(self) -> str:
        return f"param-{self.param.name}"

    def compose(self) -> ComposeResult:
        p = self.param
        with Horizontal(classes="param-row"):
            yield Label(_name_text(p, self.first_state), classes="param-name")
            if p.kind in SWITCH_KINDS:
                yield Switch(value=bool(self.raw), id=self.control_id)
            elif p.choices:
                yield Select(
                    [(c, c) for c in p.choices],
                    value=self.raw,
                    allow_blank=False,
                    compact=True,
                    id=self.control_id,
                )
            else:
                yield Input(value=str(self.raw), compact=True, id=self.control_id)
        yield Static(f"{hint_text(p)}\n{p.help}", classes="param-hint")
        message = _message_text(self.first_state, self.first_note)
        yield Static(message, classes="param-message -shown" if message else "param-message")

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
        classes = _state_classes(state)
        for name in ("-changed", "-invalid", "-warning"):
            self.set_class(name in classes, name)
        self.query_one(".param-name", Label).update(_name_text(self.param, state))
        message = self.query_one(".param-message", Static)
        text = _message_text(state, note)
        message.update(text)
        message.set_class(bool(text), "-shown")


def _state_classes(state: FieldState) -> list[str]:
    return [
        name
        for name, on in (
            ("-changed", state.changed),
            ("-invalid", state.error),
            ("-warning", state.warning),
        )
        if on
    ]


def _name_text(param: schema.Param, state: FieldState) -> str:
    return f"{param.name} {CHANGED_MARK}" if state.changed else param.name


def _message_text(state: FieldState, note: str) -> str:
    if state.error:
        return f"✗ {state.error}"
    if state.warning:
        return f"! {state.warning}"
    return note
