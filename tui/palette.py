"""Key bindings that are also command palette entries: a key, its footer label and its palette
title are declared once, in a screen's (or the app's) BINDINGS."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode


@dataclass(frozen=True)
class PaletteBinding(Binding):
    """A Binding listed in the command palette as `title`, with `help` and its key below."""

    title: str = ""
    help: str = ""


def binding_commands(app: App, node: DOMNode) -> Iterable[SystemCommand]:
    """The palette entries of `node`'s declared bindings, each running the binding's action on
    `node` (the key shown is the one the footer shows)."""
    for binding in node.BINDINGS:
        if isinstance(binding, PaletteBinding):
            key = app.get_key_display(binding)
            yield SystemCommand(
                binding.title,
                f"{binding.help} ({key})" if binding.help else f"({key})",
                partial(node.call_later, node.run_action, binding.action),
            )
