"""Configure: every parameter in the guide's panels, presets, diff, save, load, launch."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, ContentSwitcher, Footer, Label, OptionList, Select, Static
from textual.widgets.option_list import Option
from vqatune.engine import schema
from vqatune.engine.config import ConfigError
from vqatune.tui import services
from vqatune.tui.form import BATCH_FIELDS, FormState
from vqatune.tui.messages import ConfigLoaded, PresetSaved, PresetsListed, RunLaunched, UserError
from vqatune.tui.palette import PaletteBinding
from vqatune.tui.screens.dialogs import DiffScreen, LoadFileScreen, SavePresetScreen
from vqatune.tui.widgets.param_field import ParamField

SUGGESTED_MARK = "★"


class ConfigureScreen(Screen):
    """The form is generated from engine/schema.py; FormState holds and checks the values."""

    BINDINGS = [
        PaletteBinding(
            "ctrl+l",
            "launch",
            "Launch",
            title="Launch",
            help="Create the run and start it detached",
        ),
        PaletteBinding(
            "ctrl+t",
            "diff",
            "Diff",
            title="Diff against preset",
            help="Show the changed parameters",
        ),
        PaletteBinding(
            "ctrl+s",
            "save_preset",
            "Save",
            title="Save as preset",
            help="Write the current values as a preset TOML",
        ),
        PaletteBinding(
            "ctrl+o",
            "load_file",
            "Load",
            title="Load config file",
            help="Read a TOML config into the form",
        ),
        PaletteBinding(
            "ctrl+g",
            "focus_preset",
            "Preset",
            show=False,
            title="Choose preset",
            help="Focus the preset picker",
        ),
    ]

    def __init__(self):
        super().__init__(id="configure")
        self.form = FormState()
        self.presets: list[tuple[str, str]] = []
        self.built_panels: set[str] = set()
        self.panel_marks: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with Horizontal(id="config-bar"):
            yield Label("Preset", classes="bar-label")
            yield Select(
                [("default", "default")],
                value="default",
                allow_blank=False,
                compact=True,
                id="preset",
            )
            yield Static("", id="effective-batch")
            yield Button("Launch", id="launch", variant="primary", compact=True)
        with Horizontal(id="config-body"):
            yield OptionList(*[Option(g, id=g) for g in schema.GROUPS], id="panels")
            first = schema.GROUPS[0]
            with ContentSwitcher(id="fields", initial=_panel_id(first)):
                # Only the first panel is built now; the others on first view (show_panel).
                with VerticalScroll(id=_panel_id(first), classes="panel"):
                    yield from self.panel_widgets(first)
        yield Static("", id="form-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(ParamField).focus_control()
        self.refresh_summary()
        self.list_presets()

    def panel_widgets(self, group: str) -> list:
        self.built_panels.add(group)
        return [
            Static(group, classes="panel-title"),
            *[
                ParamField(
                    p, self.form.raw[p.name], self.form.field(p.name), self.field_note(p.name)
                )
                for p in schema.params_in_group(group)
            ],
        ]

    async def show_panel(self, group: str) -> None:
        """Switch to a panel, building it the first time (a fast first frame)."""
        switcher = self.query_one("#fields", ContentSwitcher)
        if group not in self.built_panels:
            panel = VerticalScroll(*self.panel_widgets(group), id=_panel_id(group), classes="panel")
            await switcher.mount(panel)
        switcher.current = _panel_id(group)
        panels = self.query_one("#panels", OptionList)
        index = schema.GROUPS.index(group)
        if panels.highlighted != index:
            with self.prevent(OptionList.OptionHighlighted):
                panels.highlighted = index

    # ------------------------------------------------------------------------------------------
    # Workers (blocking I/O off the UI thread)

    @work(thread=True, exclusive=True, group="presets")
    def list_presets(self) -> None:
        presets = services.presets()
        self.post_message(PresetsListed(presets, None, ""))
        try:
            suggested, gpu = services.gpu_suggestion()
        except Exception as e:  # a broken driver must not break the form
            suggested, gpu = None, f"GPU query failed: {e}"
        self.post_message(PresetsListed(presets, suggested, gpu))

    @work(thread=True, exclusive=True, group="load")
    def load_source(self, source: str, select_preset: str | None) -> None:
        try:
            resolved = services.resolve(source)
        except ConfigError as e:
            self.post_message(UserError(str(e)))
            return
        self.post_message(ConfigLoaded(resolved, select_preset))

    @work(thread=True, exclusive=True, group="save")
    def save(self, name: str, title: str) -> None:
        try:
            path = services.save_preset(self.form.config(), name, title)
        except ConfigError as e:
            self.post_message(UserError(str(e)))
            return
        self.post_message(PresetSaved(path.stem, path))

    @work(thread=True, exclusive=True, group="launch")
    def start_run(self) -> None:
        try:
            cfg = self.form.config()
            overrides = {name: value for name, _, value in self.form.changed()}
            run_dir = services.launch(
                cfg, self.form.source, overrides, getattr(self.app, "runs_dir", None)
            )
        except (ConfigError, OSError) as e:
            self.post_message(UserError(f"cannot launch: {e}"))
            return
        self.post_message(RunLaunched(run_dir))

    # ------------------------------------------------------------------------------------------
    # Messages from workers

    def on_presets_listed(self, message: PresetsListed) -> None:
        self.presets = message.presets
        select = self.query_one("#preset", Select)
        options = []
        for name, title in message.presets:
            label = f"{name} — {title}" if title else name
            if name == message.suggested:
                label = f"{SUGGESTED_MARK} {label} (suggested)"
            options.append((label, name))
        if message.suggested:
            select.tooltip = f"{SUGGESTED_MARK} {message.suggested} is suggested: {message.gpu}"
        current = select.value
        with self.prevent(Select.Changed):
            select.set_options(options)
            if any(name == current for _, name in options):
                select.value = current

    def on_config_loaded(self, message: ConfigLoaded) -> None:
        resolved = message.resolved
        self.form.reset(resolved.config, resolved.source or "default")
        for field in self.query(ParamField):
            field.set_raw(self.form.raw[field.param.name])
        if message.select_preset:
            select = self.query_one("#preset", Select)
            with self.prevent(Select.Changed):
                select.value = message.select_preset
        self.refresh_all_fields()
        self.notify(f"applied {resolved.source or 'the defaults'}", timeout=3)

    def on_user_error(self, message: UserError) -> None:
        self.notify(message.text, severity="error", timeout=8)

    def on_preset_saved(self, message: PresetSaved) -> None:
        self.notify(f"saved preset {message.name} to {message.path}", timeout=5)
        self.list_presets()
        self.form.source = message.name
        self.form.base = self.form.config()
        self.refresh_all_fields()

    def on_run_launched(self, message: RunLaunched) -> None:
        self.notify(f"launched {message.run_dir.name}", timeout=4)
        self.app.open_monitor(message.run_dir)

    # ------------------------------------------------------------------------------------------
    # Widget events

    @on(Select.Changed, "#preset")
    def preset_chosen(self, event: Select.Changed) -> None:
        if event.value is Select.BLANK:
            return
        if event.value == self.form.source and not self.form.changed():
            return  # the select reporting its first value; nothing to apply
        self.load_source(str(event.value), None)

    @on(ParamField.Edited)
    def field_edited(self, event: ParamField.Edited) -> None:
        name = event.field.param.name
        self.form.set(name, event.raw)
        if name in BATCH_FIELDS:
            self.refresh_all_fields()
        else:
            self.refresh_field(event.field)
            self.refresh_summary()

    @on(OptionList.OptionSelected, "#panels")
    @on(OptionList.OptionHighlighted, "#panels")
    async def panel_chosen(self, event) -> None:
        await self.show_panel(event.option.id)

    @on(Button.Pressed, "#launch")
    async def launch_pressed(self) -> None:
        await self.action_launch()

    # ------------------------------------------------------------------------------------------
    # Display

    def field_note(self, name: str) -> str:
        """The batch fields say what effective batch they make."""
        ebs = self.form.effective_batch_size() if name in BATCH_FIELDS else None
        return f"effective batch {ebs}" if ebs is not None else ""

    def refresh_field(self, field: ParamField) -> None:
        name = field.param.name
        field.show_state(self.form.field(name), self.field_note(name))

    def refresh_all_fields(self) -> None:
        for field in self.query(ParamField):
            self.refresh_field(field)
        self.refresh_summary()

    def refresh_summary(self) -> None:
        errors = self.form.errors()
        changed = self.form.changed()
        ebs = self.form.effective_batch_size()
        f = self.form
        batch = (
            f"effective batch {ebs} = {f.raw['batch_size']}×{f.raw['update_freq']}"
            f"×{f.raw['gradient_accumulation_steps']}"
            if ebs is not None
            else "effective batch ?"
        )
        self.query_one("#effective-batch", Static).update(batch)
        status = f"{len(changed)} changed vs {f.source}"
        if errors:
            status += f" · {len(errors)} invalid"
        self.query_one("#form-status", Static).update(status)
        launch = self.query_one("#launch", Button)
        launch.disabled = bool(errors)
        panels = self.query_one("#panels", OptionList)
        changed_names = {n for n, _, _ in changed}
        for group, params in schema.iter_groups():
            names = {p.name for p in params}
            mark = " ✗" if names & set(errors) else (" ●" if names & changed_names else "")
            if self.panel_marks.get(group, "") != mark:  # each replacement re-renders the list
                self.panel_marks[group] = mark
                panels.replace_option_prompt(group, group + mark)

    # ------------------------------------------------------------------------------------------
    # Actions

    async def action_launch(self) -> None:
        errors = self.form.errors()
        if errors:
            name, error = next(iter(errors.items()))
            self.notify(f"cannot launch: {name}: {error}", severity="error", timeout=8)
            await self.show_panel(schema.BY_NAME[name].group)
            self.query_one(f"#field-{name}", ParamField).focus_control()
            return
        self.start_run()

    def action_diff(self) -> None:
        self.app.push_screen(DiffScreen(self.form.source, self.form.changed(), self.form.errors()))

    def action_save_preset(self) -> None:
        if self.form.errors():
            self.notify("fix the invalid fields before saving", severity="error")
            return

        def saved(result: tuple[str, str] | None) -> None:
            if result:
                self.save(*result)

        self.app.push_screen(SavePresetScreen(), saved)

    def action_load_file(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                self.load_source(str(Path(path).expanduser()), None)

        self.app.push_screen(LoadFileScreen(), chosen)

    def action_focus_preset(self) -> None:
        self.query_one("#preset", Select).focus()

    def apply_preset(self, name: str) -> None:
        """Select and apply a preset (the command palette's entry point)."""
        self.load_source(name, name)

    def palette_commands(self) -> Iterable[SystemCommand]:
        """Beside the bindings' commands: one "Apply preset NAME" per preset."""
        for name, title in self.presets:  # as last listed by its worker: no I/O here
            yield SystemCommand(f"Apply preset {name}", title, partial(self.apply_preset, name))


def _panel_id(group: str) -> str:
    return "panel-" + "".join(c if c.isalnum() else "-" for c in group.lower())
