"""Configure: every parameter in the guide's panels, presets, diff, save, load, launch (or
queue), and whether the config fits on the GPU (`vqatune fit`, judged in a worker)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import (
    Button,
    ContentSwitcher,
    Footer,
    Label,
    OptionList,
    Select,
    Static,
    Switch,
)
from textual.widgets.option_list import Option
from textual.worker import get_current_worker
from vqatune.engine import schema
from vqatune.engine.config import Config, ConfigError
from vqatune.engine.fit import FitCancelled
from vqatune.tui import services
from vqatune.tui.form import BATCH_FIELDS, FormState
from vqatune.tui.messages import (
    ConfigLoaded,
    FitJudged,
    PresetSaved,
    PresetsListed,
    RunLaunched,
    UserError,
)
from vqatune.tui.palette import PaletteBinding
from vqatune.tui.screens.dialogs import DiffScreen, LoadFileScreen, SavePresetScreen
from vqatune.tui.widgets.param_field import ParamField

SUGGESTED_MARK = "★"
FIT_DELAY_S = 0.8  # after the last edit: typing "768" into num_hid measures once, not thrice
FIT_MEASURING = services.FitLine("fit: …", "measuring the config in a subprocess (vqatune fit)")
FIT_CLASSES = {"fits": "-fits", "tight": "-tight", "does not fit": "-no-fit"}


class ConfigureScreen(Screen):
    """The form is generated from engine/schema.py; FormState holds and checks the values."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # app.tcss trims the top bar
    BINDINGS = [
        PaletteBinding(
            "ctrl+l",
            "launch",
            "Launch",
            title="Launch",
            help="Create the run and start it detached (or queue it)",
        ),
        PaletteBinding(
            "ctrl+r",
            "toggle_queue",
            "Queue",
            show=False,
            title="Queue launches on/off",
            help="Launch into the run queue: it starts when a GPU is free",
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
        self.fit_cache: dict[str, dict] = {}  # measure_input TOML -> measured (engine/fit.py)
        self.fit_timer: Timer | None = None
        self.fit_config: Config | None = None  # the config the bar shows (or is judging)

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
            yield Static("", id="batch-parts")
            yield Static(FIT_MEASURING.text, id="fit")
            yield Button("Launch", id="launch", variant="primary", compact=True)
        with Horizontal(id="config-body"):
            yield OptionList(*[Option(g, id=g) for g in schema.GROUPS], id="panels")
            first = schema.GROUPS[0]
            with ContentSwitcher(id="fields", initial=_panel_id(first)):
                # Only the first panel is built now; the others on first view (show_panel).
                with VerticalScroll(id=_panel_id(first), classes="panel"):
                    yield from self.panel_widgets(first)
        with Horizontal(id="config-status"):
            yield Static("", id="form-status")
            yield Label("queue", id="queue-label")
            yield Switch(False, id="queue-switch", tooltip="Launch into the run queue (ctrl+r)")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(ParamField).focus_control()
        self.refresh_summary()
        self.list_presets()
        self.schedule_fit()

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
    def start_run(self, queue_it: bool) -> None:
        """Start the run now, or queue it (`vqatune run --queue`'s path) when the switch is on
        or its GPU is taken."""
        runs_dir = getattr(self.app, "runs_dir", None)
        try:
            cfg = self.form.config()
            overrides = {name: value for name, _, value in self.form.changed()}
            reason = "the queue switch is on" if queue_it else services.queue_reason(cfg, runs_dir)
            if reason is not None:
                run_dir, position = services.enqueue(cfg, self.form.source, overrides, runs_dir)
                self.post_message(RunLaunched(run_dir, position, reason))
                return
            run_dir = services.launch(cfg, self.form.source, overrides, runs_dir)
        except (ConfigError, OSError) as e:
            self.post_message(UserError(f"cannot launch: {e}"))
            return
        self.post_message(RunLaunched(run_dir))

    @work(thread=True, exclusive=True, group="fit")
    def judge_fit(self, cfg: Config) -> None:
        """The fit verdict (a measuring subprocess unless cached); a newer config cancels this
        worker, which kills its subprocess: one measurement at a time."""
        worker = get_current_worker()
        try:
            line = services.judge_fit(
                cfg,
                self.fit_cache,
                cancelled=lambda: worker.is_cancelled,
                measuring=lambda: self.post_message(FitJudged(FIT_MEASURING, cfg)),
            )
        except FitCancelled:
            return
        self.post_message(FitJudged(line, cfg))

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
        self.schedule_fit()
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
        name = message.run_dir.name
        if message.position is None:
            self.notify(f"launched {name}", timeout=4)
        else:
            self.notify(
                f"queued {name} at position {message.position} ({message.reason}): it starts "
                "when a GPU is free; F3 lists the line",
                timeout=8,
            )
        self.app.open_monitor(message.run_dir)

    def on_fit_judged(self, message: FitJudged) -> None:
        if message.config == self.fit_config:  # not a late answer about an older config
            self.show_fit(message.line)

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
        self.schedule_fit()

    @on(Switch.Changed, "#queue-switch")
    def queue_switched(self, event: Switch.Changed) -> None:
        self.query_one("#launch", Button).label = "Queue" if event.value else "Launch"

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
        self.query_one("#effective-batch", Static).update(
            f"eff. batch {ebs if ebs is not None else '?'}"
        )
        self.query_one("#batch-parts", Static).update(
            f"= {f.raw['batch_size']}×{f.raw['update_freq']}×{f.raw['gradient_accumulation_steps']}"
            if ebs is not None
            else ""
        )
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

    def schedule_fit(self) -> None:
        """Judge the fit FIT_DELAY_S after the last change (one timer, restarted by each edit)."""
        if self.fit_timer is not None:
            self.fit_timer.stop()
        self.fit_timer = self.set_timer(FIT_DELAY_S, self.start_fit)

    def start_fit(self) -> None:
        self.fit_timer = None
        try:
            cfg = self.form.config()
        except ConfigError:
            self.fit_config = None
            self.workers.cancel_group(self, "fit")
            self.show_fit(
                services.FitLine("fit: ? (invalid values)", "fix the invalid fields first")
            )
            return
        if cfg != self.fit_config:  # an edit and its undo before the timer: nothing to judge
            self.fit_config = cfg
            self.judge_fit(cfg)

    def show_fit(self, line: services.FitLine) -> None:
        fit = self.query_one("#fit", Static)
        fit.update(line.text)
        fit.tooltip = line.detail
        for verdict, css_class in FIT_CLASSES.items():
            fit.set_class(line.verdict == verdict, css_class)

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
        self.start_run(self.query_one("#queue-switch", Switch).value)

    def action_toggle_queue(self) -> None:
        switch = self.query_one("#queue-switch", Switch)
        switch.value = not switch.value

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
