"""Configure screen: the form state, and the screen driven by Pilot."""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import Input, Select, Switch
from vqatune.engine import config as config_mod
from vqatune.engine import schema
from vqatune.engine.config import Config, ConfigError
from vqatune.tui import services
from vqatune.tui.app import VQATuneApp
from vqatune.tui.form import FormState
from vqatune.tui.screens.configure import ConfigureScreen
from vqatune.tui.screens.dialogs import DiffScreen
from vqatune.tui.widgets.param_field import ParamField

REAL_GPU_SUGGESTION = services.gpu_suggestion


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """User presets and runs in tmp; no GPU query."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("VQATUNE_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(services, "gpu_suggestion", lambda: ("cpu-quick", "no NVIDIA GPU"))


# ----------------------------------------------------------------------------------------------
# FormState


def test_form_coerces_like_the_schema():
    form = FormState()
    assert form.set("lr", "3e-4").value == 3e-4
    assert form.set("lr", "0").error  # lr > 0
    assert form.set("epochs", "ten").error == "expected an integer, got 'ten'"
    assert form.set("activation", "silu").value == "swish"  # schema alias
    assert form.set("use_instruction", False).value == 0  # int01 switch
    with pytest.raises(ConfigError, match="^epochs: "):  # the first invalid, in schema order
        form.config()


def test_form_marks_changed_and_warnings_against_its_base():
    base = config_mod.load("8gb")
    form = FormState(base, "8gb")
    assert form.changed() == []
    assert form.field("batch_size").changed is False
    form.set("batch_size", "32")
    assert form.changed() == [("batch_size", 16, 32)]
    assert form.field("dropout").warning is None
    assert "recommended range" in form.set("dropout", "0.9").warning
    assert form.config().dropout == 0.9  # a warning does not block


def test_effective_batch_size_follows_the_three_fields():
    form = FormState()
    assert form.effective_batch_size() == Config().effective_batch_size == 128
    form.set("gradient_accumulation_steps", "2")
    assert form.effective_batch_size() == 256
    form.set("batch_size", "x")
    assert form.effective_batch_size() is None


def test_save_preset_roundtrips_and_refuses_bad_names(tmp_path):
    cfg = Config().replace(lr=3e-4, mixed_precision=True)
    path = services.save_preset(cfg, "mine", "My preset", directory=tmp_path)
    assert config_mod.load(str(path)) == cfg
    assert 'title = "My preset"' in path.read_text()
    with pytest.raises(ConfigError, match="already exists"):
        services.save_preset(cfg, "mine", directory=tmp_path)
    with pytest.raises(ConfigError, match="preset name"):
        services.save_preset(cfg, "../evil", directory=tmp_path)


# ----------------------------------------------------------------------------------------------
# The screen


async def settle(pilot, app, seconds: float = 0.0):
    """Let workers finish and their messages land."""
    await pilot.pause(seconds)
    await app.workers.wait_for_complete()
    await pilot.pause()


async def show(pilot, app, *names):
    """Build and show the panels of these parameters (panels are built on first view)."""
    for name in names:
        await app.screen.show_panel(schema.BY_NAME[name].group)
    await pilot.pause()


def field(app, name) -> ParamField:
    return app.screen.query_one(f"#field-{name}", ParamField)


def message_text(app, name) -> str:
    return str(field(app, name).query_one(".param-message").render())


def test_every_parameter_has_a_field_of_the_right_kind():
    async def run():
        app = VQATuneApp(start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            shown = None
            for p in schema.PARAMS:
                if p.group != shown:  # each panel once (a panel's parameters are adjacent)
                    await show(pilot, app, p.name)
                    shown = p.group
                control = app.screen.query_one(f"#param-{p.name}")
                expected = Switch if p.kind in ("bool", "int01") else Select if p.choices else Input
                assert isinstance(control, expected), p.name
                hint = str(field(app, p.name).query_one(".param-hint").render())
                assert hint.startswith("default"), p.name
                if p.recommended and p.kind != "choice":
                    assert "recommended" in hint

    asyncio.run(run())


def test_invalid_value_shows_error_and_blocks_launch(tmp_path):
    async def run():
        app = VQATuneApp(start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            screen = app.screen
            lr = screen.query_one("#param-lr", Input)
            lr.focus()
            lr.value = ""
            await pilot.press(*"-0.1")
            await pilot.pause()
            assert message_text(app, "lr") == "✗ lr: must be > 0.0, got -0.1".replace("lr: ", "")
            assert field(app, "lr").has_class("-invalid")
            assert screen.query_one("#launch").disabled
            assert "1 invalid" in str(screen.query_one("#form-status").render())
            await pilot.press("ctrl+l")
            await settle(pilot, app)
            assert not (tmp_path / "runs").exists()  # nothing was created
            assert isinstance(app.screen, ConfigureScreen)
            assert app.focused is lr
            # fixing it unblocks
            lr.value = "3e-4"
            await pilot.pause()
            assert not screen.query_one("#launch").disabled
            assert field(app, "lr").has_class("-changed")

    asyncio.run(run())


def test_out_of_range_value_warns_without_blocking():
    async def run():
        app = VQATuneApp(start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            await show(pilot, app, "dropout")
            app.screen.query_one("#param-dropout", Input).value = "0.9"
            await pilot.pause()
            assert field(app, "dropout").has_class("-warning")
            assert "recommended range 0.3 to 0.6" in message_text(app, "dropout")
            assert not app.screen.query_one("#launch").disabled

    asyncio.run(run())


def test_applying_the_8gb_preset_updates_every_panel():
    async def run():
        app = VQATuneApp(start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            screen = app.screen
            screen.query_one("#param-epochs", Input).value = "33"  # an edit the preset replaces
            await pilot.pause()
            screen.query_one("#preset", Select).value = "8gb"
            await settle(pilot, app, 0.1)
            want = config_mod.load("8gb")
            await show(pilot, app, "gradient_accumulation_steps", "mixed_precision", "batch_size")
            assert screen.form.source == "8gb"
            assert screen.form.config() == want
            assert screen.query_one("#param-batch_size", Input).value == "16"
            assert screen.query_one("#param-epochs", Input).value == "20"
            assert screen.query_one("#param-gradient_accumulation_steps", Input).value == "4"
            assert screen.query_one("#param-mixed_precision", Switch).value is True
            assert screen.query_one("#param-max_memory_usage", Input).value == "0.7"
            await show(pilot, app, "dropout")  # a panel built after the preset was applied
            assert screen.query_one("#param-dropout", Input).value == str(want.dropout)
            assert not any(f.has_class("-changed") for f in screen.query(ParamField))
            batch = str(screen.query_one("#effective-batch").render())
            assert batch == f"eff. batch {want.effective_batch_size}"
            assert str(screen.query_one("#batch-parts").render()) == "= 16×4×4"
            assert "effective batch 256" in message_text(app, "update_freq")

    asyncio.run(run())


def test_preset_picker_marks_the_suggested_preset(monkeypatch):
    monkeypatch.setattr(services, "gpu_suggestion", lambda: ("24gb", "NVIDIA A10 with 24 GiB"))

    async def run():
        app = VQATuneApp(start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            select = app.screen.query_one("#preset", Select)
            labels = {
                value: str(label) for label, value in select._options if value != Select.BLANK
            }
            assert labels["24gb"].startswith("★ 24gb")
            assert labels["24gb"].endswith("(suggested)")
            assert "NVIDIA A10 with 24 GiB" in str(select.tooltip)
            assert not labels["8gb"].startswith("★")
            assert {"8gb", "24gb", "high-performance", "smoke"} <= set(labels)

    asyncio.run(run())


def test_diff_view_lists_changes_against_the_preset():
    async def run():
        app = VQATuneApp(start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            app.screen.query_one("#param-epochs", Input).value = "30"
            await show(pilot, app, "use_counter")
            app.screen.query_one("#param-use_counter", Switch).value = True
            await pilot.pause()
            assert str(field(app, "epochs").query_one(".param-name").render()) == "epochs ●"
            panels = app.screen.query_one("#panels")
            assert str(panels.get_option("BAN").prompt) == "BAN ●"  # the sidebar marks it
            await pilot.press("ctrl+t")
            await pilot.pause()
            assert isinstance(app.screen, DiffScreen)
            table = app.screen.query_one("#diff-table")
            rows = [table.get_row(k) for k in table.rows]
            assert ["epochs", "20", "30"] in rows
            assert ["use_counter", "False", "True"] in rows
            assert len(rows) == 2

    asyncio.run(run())


def test_save_as_preset_then_it_is_listed(tmp_path):
    async def run():
        app = VQATuneApp(start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            app.screen.query_one("#param-lr", Input).value = "4e-4"
            await pilot.pause()
            await pilot.press("ctrl+s")
            await pilot.pause()
            await pilot.press(*"mylr")
            await pilot.press("enter")
            await settle(pilot, app, 0.1)
            path = tmp_path / "xdg" / "vqatune" / "presets" / "mylr.toml"
            assert config_mod.load(str(path)).lr == 4e-4
            screen = app.screen
            assert screen.form.source == "mylr"
            assert not field(app, "lr").has_class("-changed")
            values = [v for _, v in screen.query_one("#preset", Select)._options]
            assert "mylr" in values

    asyncio.run(run())


def test_load_config_file_and_a_bad_one(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('extends = "24gb"\n[training]\nepochs = 7\n')
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nepochs = 0\n")

    async def run():
        app = VQATuneApp(start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            screen = app.screen
            screen.load_source(str(good), None)
            await settle(pilot, app)
            assert screen.query_one("#param-epochs", Input).value == "7"
            assert screen.form.config() == config_mod.load(str(good))
            screen.load_source(str(bad), None)
            await settle(pilot, app)
            assert screen.query_one("#param-epochs", Input).value == "7"  # unchanged
            notes = [n.message for n in app._notifications]
            assert any(f"{bad}:2: epochs: must be >= 1" in n for n in notes), notes

    asyncio.run(run())


def test_load_dialog_lists_every_error_of_a_file(tmp_path):
    bad = tmp_path / "three.toml"
    bad.write_text("[training]\nlr = -1\nlerning_rate = 3\n[model]\nAOA_layers = 0\n")

    async def run():
        app = VQATuneApp(start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            await pilot.press("ctrl+o")
            await pilot.pause()
            app.screen.query_one("#load-path", Input).value = str(bad)
            await pilot.press("enter")
            await settle(pilot, app)
            errors = [n.message for n in app._notifications if n.severity == "error"]
            assert len(errors) == 1, errors
            lines = errors[0].splitlines()
            assert [line.split(": ")[:2] for line in lines] == [
                [f"{bad}:2", "lr"],
                [f"{bad}:3", "unknown parameter 'lerning_rate'"],
                [f"{bad}:5", "AOA_layers"],
            ]

    asyncio.run(run())


def test_sidebar_switches_panels_and_invalid_field_elsewhere_is_shown():
    async def run():
        app = VQATuneApp(start="configure")
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            screen = app.screen
            switcher = screen.query_one("#fields")
            assert switcher.current == "panel-training-basics"
            screen.query_one("#panels").focus()
            await pilot.press("down", "down")  # BAN, then AoA
            await pilot.pause()
            assert switcher.current == "panel-aoa"
            screen.query_one("#param-num_hid", Input).value = "4"  # below its hard bound 8
            await pilot.pause()
            assert str(screen.query_one("#panels").get_option("AoA").prompt) == "AoA ✗"
            screen.query_one("#panels").highlighted = 0
            await pilot.pause()
            assert switcher.current == "panel-training-basics"
            await pilot.press("ctrl+l")  # blocked: shows the panel with the invalid field
            await pilot.pause()
            assert switcher.current == "panel-aoa"
            assert app.focused is screen.query_one("#param-num_hid")

    asyncio.run(run())


def test_launch_creates_the_run_with_its_source_overrides_and_output(tmp_path, monkeypatch):
    from vqatune.engine import runstore

    started = []
    monkeypatch.setattr(runstore, "launch", lambda run_dir, **kw: started.append((run_dir, kw)))
    cfg = config_mod.load("smoke").replace(lr=1e-4)
    run_dir = services.launch(cfg, "smoke", {"lr": 1e-4}, tmp_path / "runs")
    assert started == [(run_dir, {"detach": True})]
    info = runstore.run_info(run_dir)
    assert info.source == "smoke" and info.meta["overrides"] == {"lr": 1e-4}
    assert config_mod.load(str(run_dir / "config.toml")) == cfg
    out = tmp_path / "chosen"
    assert services.launch(cfg.replace(output=str(out)), "smoke", {}, tmp_path / "runs") == out


def test_gpu_suggestion_without_a_gpu_is_cpu_quick():
    from vqatune.engine import gpu

    if gpu.sample().gpus:
        pytest.skip("an NVIDIA GPU is present")
    preset, why = REAL_GPU_SUGGESTION()  # the real query, not the fixture's stand-in
    assert preset == "cpu-quick" and why.startswith("no NVIDIA GPU")


def test_command_palette_applies_a_preset():
    async def run():
        app = VQATuneApp(start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            commands = {c.title: c for c in app.get_system_commands(app.screen)}
            assert {
                "Launch",
                "Diff against preset",
                "Save as preset",
                "Load config file",
                "Runs",
                "Apply preset 24gb",
            } <= set(commands)
            commands["Apply preset 24gb"].callback()
            await settle(pilot, app)
            assert app.screen.form.source == "24gb"
            assert app.screen.query_one("#preset", Select).value == "24gb"

    asyncio.run(run())
