"""The Sweeps view: sweeps with progress and best run, read from `.sweeps/<id>/sweep.json` and
run directories tagged the way engine/sweep.py tags them."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input
from tui_fixtures import T0, make_run
from typer.testing import CliRunner
from vqatune.engine import plans, runstore, sweep, sweepstore
from vqatune.tui import services
from vqatune.tui.app import VQATuneApp
from vqatune.tui.screens.compare import CompareScreen
from vqatune.tui.screens.monitor import MonitorScreen
from vqatune.tui.screens.sweeps import SweepsScreen

SIZES = [(80, 24), (120, 40)]


def make_sweep(
    runs_dir: Path, sweep_id: str, planned: list[tuple[str, int]], *, created: float
) -> sweepstore.Sweep:
    """sweep.json as open_sweep writes it (fixed time, so snapshots are stable)."""
    path = runs_dir / sweepstore.SWEEPS_DIR / sweep_id
    path.mkdir(parents=True)
    data = {
        "id": sweep_id,
        "kind": "variants",
        "plan": sweep_id.split("-")[0],
        "title": sweep_id,
        "base": "smoke",
        "created": created,
        "planned": [
            {"key": f"{v}/seed{s}", "variant": v, "seed": s, "overrides": {}} for v, s in planned
        ],
    }
    (path / sweepstore.SWEEP_FILE).write_text(json.dumps(data))
    return sweepstore.Sweep(sweep_id, path, runs_dir, data)


def tag(run_dir: Path, sweep_id: str, variant: str, seed: int) -> Path:
    sweepstore.tag_run(
        run_dir, sweep=sweep_id, sweep_key=f"{variant}/seed{seed}", variant=variant, seed=seed
    )
    return run_dir


def make_sweep_store(runs_dir: Path) -> None:
    """lr-sweep: 3 variants x 2 seeds, 4 runs so far (one crashed, `higher` best), nobody on it;
    cx-sweep: 1 variant x 1 seed, finished."""
    make_sweep(
        runs_dir,
        "lr-smoke-a1b2c3",
        [(v, s) for v in ("base", "higher", "lower") for s in (1, 2)],
        created=T0,
    )
    for i, (variant, seed, offset, state) in enumerate(
        [
            ("base", 1, 0.0, "done"),
            ("base", 2, 0.01, "done"),
            ("higher", 1, 0.08, "done"),
            ("higher", 2, 0.0, "running"),
        ]
    ):
        run = make_run(
            runs_dir,
            f"20260101-1{i}0000-{variant}-{i}aaa",
            start=T0 + 3600 * i,
            acc_offset=offset,
            state=state,
            steps=40 if state == "done" else 5,
        )
        tag(run, "lr-smoke-a1b2c3", variant, seed)
    make_sweep(runs_dir, "cx-smoke-d4e5f6", [("simple", 1)], created=T0 + 20000)
    tag(
        make_run(runs_dir, "20260101-200000-simple-bbbb", start=T0 + 30000),
        "cx-smoke-d4e5f6",
        "simple",
        1,
    )
    make_run(runs_dir, "20260101-210000-loose-cccc", start=T0 + 40000)  # in no sweep


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(services, "gpu_suggestion", lambda: (None, "no NVIDIA GPU"))
    runs = tmp_path / "runs"
    make_sweep_store(runs)
    return runs


async def settle(pilot):
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def table_rows(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_sweeps_table_shows_progress_state_and_best(store):
    async def run():
        app = VQATuneApp(runs_dir=store, start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("f4")
            await settle(pilot)
            assert isinstance(app.screen, SweepsScreen)
            rows = table_rows(app.screen.query_one("#sweeps-table", DataTable))
            # newest first; the running run is a dead process -> crashed -> failed
            assert rows == [
                ["cx-smoke-d4e5f6", "finished", "1/1", "0", "0", "0.8000", "simple/seed1"],
                ["lr-smoke-a1b2c3", "incomplete", "3/6", "0", "1", "0.8800", "higher/seed1"],
            ]
            status = str(app.screen.query_one("#sweeps-status").render())
            assert "2 sweeps" in status

    asyncio.run(run())


def test_enter_compares_the_sweeps_runs_and_b_opens_the_best_monitor(store):
    async def run():
        app = VQATuneApp(runs_dir=store, start="sweeps")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("down")  # lr-smoke
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, CompareScreen)
            assert sorted(p.name for p in app.screen.run_dirs) == [
                "20260101-100000-base-0aaa",
                "20260101-110000-base-1aaa",
                "20260101-120000-higher-2aaa",
                "20260101-130000-higher-3aaa",
            ]
            await pilot.press("escape")
            await settle(pilot)
            assert isinstance(app.screen, SweepsScreen)
            await pilot.press("b")
            await settle(pilot)
            assert isinstance(app.screen, MonitorScreen)
            assert app.screen.run_dir == store / "20260101-120000-higher-2aaa"
            await pilot.press("escape")
            await settle(pilot)
            assert isinstance(app.screen, SweepsScreen)  # back on the sweeps, not Runs

    asyncio.run(run())


def test_empty_sweep_warns_instead_of_opening(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    make_sweep(runs, "lr-smoke-000000", [("base", 1)], created=T0)

    async def run():
        app = VQATuneApp(runs_dir=runs, start="sweeps")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            rows = table_rows(app.screen.query_one("#sweeps-table", DataTable))
            assert rows == [["lr-smoke-000000", "incomplete", "0/1", "0", "0", "-", "-"]]
            await pilot.press("enter")
            await settle(pilot)
            await pilot.press("b")
            await settle(pilot)
            assert isinstance(app.screen, SweepsScreen)
            notes = [n.message for n in app._notifications]
            assert any("no runs yet" in m for m in notes)
            assert any("no evaluated run" in m for m in notes)

    asyncio.run(run())


def test_refreshes_while_shown_and_not_when_hidden(store, monkeypatch):
    from vqatune.tui.screens import sweeps as sweeps_screen
    from vqatune.tui.screens import table as polled_table

    calls = []
    real = sweeps_screen.load_rows
    monkeypatch.setattr(sweeps_screen, "load_rows", lambda d: calls.append(1) or real(d))
    monkeypatch.setattr(polled_table, "REFRESH_S", 0.1)

    async def run():
        app = VQATuneApp(runs_dir=store, start="sweeps")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            # a new sweep appears while the view is shown
            make_sweep(store, "isg-smoke-999999", [("base", 1)], created=T0 + 50000)
            await pilot.pause(0.5)
            await settle(pilot)
            rows = table_rows(app.screen.query_one("#sweeps-table", DataTable))
            assert rows[0][0] == "isg-smoke-999999"
            await pilot.press("f2")
            await settle(pilot)
            before = len(calls)
            await pilot.pause(0.6)
            assert len(calls) == before  # hidden: no polling

    asyncio.run(run())


def test_palette_and_cli_reach_the_sweeps_screen(store, monkeypatch):
    from vqatune.tui.cli import app as cli

    started = []
    monkeypatch.setattr(VQATuneApp, "run", lambda self: started.append(self.start))
    result = CliRunner().invoke(cli, ["tui", "--screen", "sweeps", "--runs-dir", str(store)])
    assert result.exit_code == 0, result.output
    assert started == ["sweeps"]

    async def run():
        app = VQATuneApp(runs_dir=store, start="sweeps")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert "Sweeps" in titles
            assert "Open the sweep's best run" in titles

    asyncio.run(run())


def test_a_sweep_run_by_the_engine_and_its_lock(tmp_path, monkeypatch):
    """A real 2-variant sweep with the stand-in trainer; while a process holds the sweep's lock
    the view says running."""
    monkeypatch.setattr(
        runstore,
        "TRAINER",
        [sys.executable, str(Path(__file__).with_name("sweep_fake_trainer.py"))],
    )
    monkeypatch.setenv("FAKE_DELAY", "0.01")
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(
        'base = "smoke"\nseeds = [1]\n[variants.slow]\nlr = 1e-4\n[variants.fast]\nlr = 5e-4\n'
    )
    plan = plans.load_plan(str(plan_path))
    runs = tmp_path / "runs"
    sw = sweepstore.open_sweep(plan, runs)
    sweep.run_variants(sw, plan, slots=[None], echo=lambda _: None, poll_s=0.02)

    async def run():
        app = VQATuneApp(runs_dir=runs, start="sweeps")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#sweeps-table", DataTable)
            assert table_rows(table) == [
                [sw.id, "finished", "2/2", "0", "0", "0.5000", "fast/seed1"]
            ]
            with sweepstore.sweep_lock(sw):
                app.screen.refresh_rows()
                await settle(pilot)
                assert table_rows(table)[0][1] == "running"
                assert str(app.screen.query_one("#sweeps-status").render()).startswith(
                    "1 sweep · 1 running"
                )

    asyncio.run(run())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sweeps_snapshot(snap_compare, store, size):
    assert snap_compare(
        VQATuneApp(runs_dir=store, start="sweeps"), terminal_size=size, run_before=settle
    )
