"""The vqatune workstation: Configure, Runs (with Monitor and Compare) as Textual modes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from vqatune.tui.screens.configure import ConfigureScreen


class VQATuneApp(App):
    """Keyboard first: F2 Configure, F3 Runs, ctrl+p the command palette, ctrl+q quit.

    Quitting never stops a run: training runs in its own detached process and the TUI only reads
    its run directory.
    """

    CSS_PATH = "app.tcss"
    TITLE = "vqatune"
    MODES = {"configure": ConfigureScreen}
    BINDINGS = [
        Binding("f2", "switch_mode('configure')", "Configure"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, runs_dir: Path | None = None, start: str = "configure"):
        super().__init__()
        self.runs_dir = runs_dir
        self.start = start

    def on_mount(self) -> None:
        self.switch_mode("configure" if self.start == "auto" else self.start)

    def open_monitor(self, run_dir: Path) -> None:
        raise NotImplementedError

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Configure", "Edit parameters, presets, launch (F2)",
                            lambda: self.switch_mode("configure"))
        configure = self._configure_screen()
        if configure is not None and screen is configure:
            yield SystemCommand("Launch", "Create the run and start it detached",
                                configure.action_launch)
            yield SystemCommand("Diff against preset", "Show the changed parameters",
                                configure.action_diff)
            yield SystemCommand("Save as preset", "Write the current values as a preset TOML",
                                configure.action_save_preset)
            yield SystemCommand("Load config file", "Read a TOML config into the form",
                                configure.action_load_file)
            from vqatune.engine.config import list_presets

            for p in list_presets():
                yield SystemCommand(f"Apply preset {p.name}", p.title or p.description,
                                    lambda name=p.name: configure.apply_preset(name))

    def _configure_screen(self) -> ConfigureScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, ConfigureScreen):
                return screen
        return None
