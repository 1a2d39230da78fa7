"""The Analysis view: parallel coordinates with keyboard brushing, reached by F5, from Compare
and from Sweeps; curve options on Compare; the alert bell of an open TUI."""

from __future__ import annotations

import asyncio
import json

import pytest
from analysis_fixtures import make_search_store
from test_tui_sweeps import make_sweep, tag
from tui_fixtures import make_store, screen_store, settle
from vqatune.engine import alerts
from vqatune.tui.app import VQATuneApp
from vqatune.tui.screens.analysis import AnalysisScreen
from vqatune.tui.screens.compare import CompareScreen
from vqatune.tui.widgets.charts import MetricChart
from vqatune.tui.widgets.parcoords import ParallelCoordinates

SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def store(tmp_path, monkeypatch):
    return screen_store(tmp_path, monkeypatch, make_search_store)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_analysis_snapshot(snap_compare, store, size):
    async def brush(pilot):
        await settle(pilot)
        await pilot.press("f5")
        await settle(pilot)
        await pilot.press("b", "down")  # the metric axis: a brush over the upper half, lowered
        await settle(pilot)

    assert snap_compare(
        VQATuneApp(runs_dir=store, start="runs"), terminal_size=size, run_before=brush
    )


def test_brushing_selects_runs_and_opens_them_in_compare(store):
    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("f5")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, AnalysisScreen)
            plot = screen.query_one(ParallelCoordinates)
            assert [a.name for a in plot.axes][0] == "lr" and plot.axes[-1].name == "best_accuracy"
            assert plot.current == len(plot.axes) - 1
            await pilot.press("b")
            best = sorted(p.metric for p in screen.scored)
            top = plot.axes[-1]
            cut = top.low + 0.5 * (top.high - top.low)
            expected = [p.path for p in screen.scored if p.metric >= cut - 1e-9]
            assert int(plot.selected().sum()) == len(expected) < len(best)
            status = str(screen.query_one("#analysis-status").render())
            assert f"{len(expected)} of 24 runs selected" in status
            await pilot.press("c")
            await settle(pilot)
            assert isinstance(app.screen, CompareScreen)
            assert app.screen.run_dirs == expected
            await pilot.press("escape")
            await pilot.press("left")  # the axis before the metric
            assert plot.current == len(plot.axes) - 2
            await pilot.press("x")
            assert int(plot.selected().sum()) == 24

    asyncio.run(run())


def test_compare_curve_keys_and_analysis(tmp_path):
    async def run():
        runs = tmp_path / "runs"
        dirs = make_store(runs)[:3]
        app = VQATuneApp(runs_dir=runs, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            app.open_compare(dirs)
            await settle(pilot)
            screen = app.screen
            chart = screen.query_one("#compare-accuracy", MetricChart)
            assert chart.smoothing == ("none", 0.0) and chart.xlabel == "step"
            await pilot.press("m", "right_square_bracket", "x")
            await settle(pilot)
            assert chart.smoothing == ("ema", 0.8) and chart.xlabel == "wall time (s)"
            stats = str(screen.query_one("#compare-curve-stats").render())
            assert "best 0.85 @ 40" in stats  # hilr's best accuracy, 40 s after its start
            await pilot.press("a")
            await settle(pilot)
            assert isinstance(app.screen, AnalysisScreen) and app.screen.run_dirs == dirs

    asyncio.run(run())


def test_sweeps_a_opens_the_sweeps_analysis(store):
    async def run():
        sweep = make_sweep(store, "lr-smoke-a1b2c3", [("base", 1)], created=0)
        first = sorted(store.iterdir())[1]
        tag(first, sweep.id, "base", 1)
        app = VQATuneApp(runs_dir=store, start="sweeps")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("a")
            await settle(pilot)
            assert isinstance(app.screen, AnalysisScreen) and app.screen.sweep == sweep.id
            assert app.screen.result.n_runs == 1

    asyncio.run(run())


def test_an_alert_rings_the_bell(store, monkeypatch):
    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        rings = []
        monkeypatch.setattr(app, "bell", lambda: rings.append(1))
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            app.poll_alerts()
            await settle(pilot)
            record = alerts.Alert("end", "r1", "vqatune run r1: CRASHED", "crashed").to_dict()
            with open(store / alerts.FEED_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
            app.poll_alerts()
            await settle(pilot)
            assert rings == [1]
            assert any("CRASHED" in str(n.message) for n in app._notifications)

    asyncio.run(run())
