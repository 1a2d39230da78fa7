"""Runs, Monitor and Compare against run directories written by the tests (and a fake trainer)."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest
from polling import wait_for
from textual.widgets import DataTable, Log
from tui_fixtures import FAKE_TRAINER, make_run, make_store
from vqatune.engine import runstore
from vqatune.tui import services
from vqatune.tui.app import VQATuneApp
from vqatune.tui.readers import LogTail, RunWatcher
from vqatune.tui.screens.compare import CompareScreen
from vqatune.tui.screens.monitor import MonitorScreen
from vqatune.tui.screens.runs import RunsScreen


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(services, "gpu_suggestion", lambda: (None, "no NVIDIA GPU"))
    runs = tmp_path / "runs"
    make_store(runs)
    return runs


async def settle(pilot, app, seconds: float = 0.0):
    await pilot.pause(seconds)
    await app.workers.wait_for_complete()
    await pilot.pause()


async def until(pilot, predicate, timeout: float = 120.0) -> bool:
    """Let the app run until `predicate` holds (True) or `timeout` s pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await pilot.pause(0.1)
    return False


def table_rows(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row(k)] for k in table.rows]


# ----------------------------------------------------------------------------------------------
# Readers


def test_log_tail_reads_only_complete_new_lines(tmp_path):
    path = tmp_path / "train.log"
    tail = LogTail(path, backlog=20)
    assert tail.read() == []  # no file yet
    path.write_text("".join(f"line {i}\n" for i in range(10)))
    first = tail.read()
    assert first[-1] == "line 9" and len(first) < 10  # only the backlog, from a line start
    assert all(line.startswith("line ") and len(line) == 6 for line in first)
    with open(path, "a") as f:
        f.write("half")
    assert tail.read() == []
    with open(path, "a") as f:
        f.write(" done\nnext\n")
    assert tail.read() == ["half done", "next"]
    path.write_text("new\n")  # truncated and rewritten
    assert tail.read() == ["new"]


def test_run_watcher_reads_history_then_only_what_was_appended(store):
    run = store / "20260101-100000-base-aaaa"
    watcher = RunWatcher(run)
    first = watcher.poll()
    assert first.status.state == "done"
    assert first.steps == 40 and first.new_events == 40 + 4 + 2  # steps, evals, start, end
    xs, ys = first.points[("loss", "loss")]
    assert xs.tolist() == list(range(1, 41)) and len(first.points[("loss", "smoothed")][1]) == 40
    assert first.points[("accuracy", "val")][0].tolist() == [10, 20, 30, 40]
    assert ("accuracy", "val fused") not in first.points  # the same as "val"
    assert first.log_lines[-1] == "log line 29"
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"event": "step", "time": 1, "step": 41, "loss": 0.1}) + "\n")
        f.write('{"event": "step", "ti')  # a line still being written
    second = watcher.poll()
    assert second.steps == 1
    assert [a.tolist() for a in second.points[("loss", "loss")]] == [[41], [0.1]]
    smoothed = 0.9 * first.points[("loss", "smoothed")][1][-1] + 0.1 * 0.1
    assert second.points[("loss", "smoothed")][1].tolist() == [pytest.approx(smoothed)]
    assert second.log_lines == []


# ----------------------------------------------------------------------------------------------
# Screens


def test_runs_table_filter_sort_and_compare(store):
    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            screen = app.screen
            assert isinstance(screen, RunsScreen)
            table = screen.query_one("#runs-table", DataTable)
            rows = table_rows(table)
            assert [r[1] for r in rows][0] == "20260101-130000-died-dddd"  # newest first
            states = {r[1]: r[2] for r in rows}
            assert states["20260101-130000-died-dddd"] == "crashed"
            assert states["20260101-120000-hilr-cccc"] == "done"
            assert {r[1]: r[6] for r in rows}["20260101-120000-hilr-cccc"] == "5e-4"
            # filter
            await pilot.press("slash", *"base")
            await pilot.pause()
            assert [r[1] for r in table_rows(table)] == [
                "20260101-110000-base-bbbb",
                "20260101-100000-base-aaaa",
            ]
            await pilot.press("escape")
            assert table.row_count == 4
            # sort by best accuracy (cycle: run -> state -> preset -> lr -> batch -> ... )
            screen.sort_column, screen.sort_reverse = "best acc", True
            screen.rebuild()
            assert table_rows(table)[0][1] == "20260101-120000-hilr-cccc"
            # select two and compare
            screen.sort_column, screen.sort_reverse = "run", False
            screen.rebuild()
            table.move_cursor(row=0)
            await pilot.pause()
            assert screen.current_row().id == "20260101-100000-base-aaaa"
            await pilot.press("space", "down", "down")
            assert screen.current_row().id == "20260101-120000-hilr-cccc"
            await pilot.press("space")
            await pilot.press("c")
            await settle(pilot, app, 0.1)
            assert isinstance(app.screen, CompareScreen)
            params = table_rows(app.screen.query_one("#compare-params", DataTable))
            assert [r[0] for r in params] == ["lr"]  # both have seed 1
            assert params[0][1:] == ["2.8e-4", "5e-4"]
            metrics = table_rows(app.screen.query_one("#compare-metrics", DataTable))
            assert metrics[0] == ["state", "done", "done"]
            chart = app.screen.query_one("#compare-accuracy")
            assert set(chart.series) == {"base-aaaa", "hilr-cccc"}

    asyncio.run(run())


def test_compare_screen_groups_seeds(store):
    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            app.open_compare(sorted(store.iterdir())[:3])
            await settle(pilot, app, 0.1)
            metrics = table_rows(app.screen.query_one("#compare-metrics", DataTable))
            seeds = [r for r in metrics if r[0] == "seeds 1, 2"]
            assert seeds and seeds[0][1].startswith("best 0.") and "±" in seeds[0][1]
            assert seeds[0][3] == ""  # the third run is not in the group

    asyncio.run(run())


def test_monitor_shows_a_finished_runs_history(store):
    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            await pilot.press("down", "down", "down", "enter")  # the oldest run
            await settle(pilot, app, 0.3)
            screen = app.screen
            assert isinstance(screen, MonitorScreen)
            assert screen.run_dir.name == "20260101-100000-base-aaaa"
            header = str(screen.query_one("#run-header").render())
            assert "DONE" in header and "step 40/40" in header and "eff. batch 8" in header
            state = str(screen.query_one("#run-state").render())
            assert state.startswith("DONE: the run finished") and "best val accuracy" in state
            loss = screen.query_one("#chart-loss")
            assert loss.series["loss"].n == 40 and loss.series["smoothed"].n == 40
            acc = screen.query_one("#chart-accuracy")
            assert acc.series["val"].n == 4 and "val graph" in acc.series
            assert screen.query_one("#chart-memory").series["rss_mb"].n == 40
            assert screen.query_one("#log-tail", Log).lines[-1] == "log line 29"
            # m cycles the smoothing of every chart, ] and [ step its factor
            await pilot.press("m", "right_square_bracket")
            await pilot.pause()
            for chart in (loss, acc, screen.query_one("#chart-memory")):
                assert chart.smoothing == ("ema", 0.8)
            assert "loss · EMA 0.8 (debiased)" in str(loss.render())
            await pilot.press("m", "m")
            await pilot.pause()
            assert loss.smoothing == ("none", 0.0) and "EMA" not in str(loss.render())
            await pilot.press("escape")
            assert isinstance(app.screen, RunsScreen)

    asyncio.run(run())


def test_monitor_says_crashed_plainly(store):
    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            app.open_monitor(store / "20260101-130000-died-dddd")
            await settle(pilot, app, 0.3)
            state = app.screen.query_one("#run-state")
            assert str(state.render()).startswith("CRASHED: r resumes")
            assert state.has_class("-crashed")
            await pilot.press("s")  # nothing to stop: an error, not a crash
            await settle(pilot, app)
            assert any("not running" in n.message for n in app._notifications)

    asyncio.run(run())


def test_monitor_follows_a_live_run_and_stop_key(tmp_path, monkeypatch, store):
    # long enough to still be running when pressing `s` on a loaded machine (stopped by it)
    _fake_trainer(tmp_path, monkeypatch, steps=4000, step_s=0.05)
    from vqatune.engine import config as config_mod

    run_dir = runstore.create_run(config_mod.load("smoke"), source="smoke", runs_dir=store)
    runstore.launch(run_dir, detach=True)

    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            app.open_monitor(run_dir)
            screen = app.screen
            assert await until(
                pilot, lambda: screen.steps_seen > 5 and screen.info.state == "running"
            )
            assert "RUNNING" in str(screen.query_one("#run-header").render())
            rising = screen.steps_seen
            assert await until(pilot, lambda: screen.steps_seen > rising)  # the count rises
            await pilot.press("s")
            # the fake trainer has no SIGTERM handler: it dies, the run store says crashed
            ended = ("crashed", "stopped")
            assert await until(pilot, lambda: runstore.run_info(run_dir).state in ended)
            assert await until(pilot, lambda: screen.info.state in ended)  # the monitor's polls

    asyncio.run(run())


def test_live_gpu_samples_reach_the_memory_chart(store):
    from vqatune.engine.gpu import GPUInfo, Snapshot
    from vqatune.tui.messages import RunUpdate, RunUpdated

    gib = 1 << 30
    snapshot = Snapshot(time=0.0, gpus=[GPUInfo(0, "H200", 10 * gib, 140 * gib, 50, 3 * gib)])

    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            app.open_monitor(store / "20260101-100000-base-aaaa")
            await settle(pilot, app, 0.2)
            screen = app.screen
            info = runstore.run_info(screen.run_dir)
            screen.post_message(RunUpdated(RunUpdate(status=info, gpu=snapshot)))
            await pilot.pause()
            mem = screen.query_one("#chart-memory").series
            assert mem["gpu0 used"].y.tolist() == [10 * 1024]
            assert mem["gpu0 total"].y.tolist() == [140 * 1024]
            assert mem["gpu0 this run"].y.tolist() == [3 * 1024]

    asyncio.run(run())


def test_no_color_turns_charts_monochrome(store, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")

    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            assert app.no_color
            app.open_monitor(store / "20260101-100000-base-aaaa")
            await settle(pilot, app, 0.2)
            assert {c.theme for c in app.screen.query("MetricChart")} == {"clear"}

    asyncio.run(run())


def test_no_torch_or_transformers_in_the_tui():
    import subprocess

    code = (
        "import sys, vqatune.tui.cli, vqatune.tui.app, vqatune.tui.screens.monitor, "
        "vqatune.tui.screens.compare, vqatune.tui.screens.runs, vqatune.tui.readers; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    code = (
        "import sys, vqatune.tui.cli; "
        "assert 'textual' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_header_click_sorts_and_reverses(store):
    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            table = app.screen.query_one("#runs-table", DataTable)
            x = sum(c.get_render_width(table) for c in list(table.columns.values())[:3]) + 2
            await pilot.click("#runs-table", offset=(x, 0))  # the "best acc" header
            await pilot.pause()
            ids = [r[1] for r in table_rows(table)]
            assert app.screen.sort_column == "best acc" and not app.screen.sort_reverse
            assert ids[-1] == "20260101-120000-hilr-cccc"  # ascending: the best is last
            await pilot.click("#runs-table", offset=(x, 0))
            await pilot.pause()
            assert table_rows(table)[0][1] == "20260101-120000-hilr-cccc"

    asyncio.run(run())


def _fake_trainer(tmp_path, monkeypatch, steps: int, step_s: float) -> None:
    trainer = tmp_path / "fake_trainer.py"
    trainer.write_text(FAKE_TRAINER)
    monkeypatch.setattr(runstore, "TRAINER", [sys.executable, str(trainer)])
    monkeypatch.setenv("FAKE_STEPS", str(steps))
    monkeypatch.setenv("FAKE_STEP_S", str(step_s))


def test_resume_key_continues_a_stopped_run_in_place(tmp_path, monkeypatch, store):
    _fake_trainer(tmp_path, monkeypatch, steps=5, step_s=0.05)
    run_dir = make_run(store, "20260101-140000-halt-eeee", state="stopped", steps=40)

    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            app.open_monitor(run_dir)
            await settle(pilot, app, 0.2)
            screen = app.screen
            assert screen.info.state == "stopped" and screen.steps_seen == 40
            await pilot.press("r")
            assert await until(
                pilot, lambda: screen.info.state == "done" and screen.steps_seen == 45
            )
            assert screen.query_one("#chart-loss").series["loss"].n == 45  # history kept once
            assert json.loads((run_dir / "launch.json").read_text())["resume"] is True

    asyncio.run(run())


def test_auto_start_opens_runs_when_a_run_is_training(tmp_path, monkeypatch, store):
    # long enough to still be running when a loaded machine has started the app; killed below
    _fake_trainer(tmp_path, monkeypatch, steps=3000, step_s=0.05)
    from vqatune.engine import config as config_mod

    run_dir = runstore.create_run(config_mod.load("smoke"), source="smoke", runs_dir=store)
    proc = runstore.launch(run_dir, detach=True)
    try:
        assert wait_for(lambda: runstore.run_info(run_dir).state == "running", timeout=120)

        async def run():
            app = VQATuneApp(runs_dir=store, start="auto")
            # Recorded as sent: on a loaded machine the 4 s toast may be gone before settle ends.
            notes = []
            notify = app.notify
            app.notify = lambda message, **kw: (notes.append(message), notify(message, **kw))
            async with app.run_test(size=(120, 40)) as pilot:
                await settle(pilot, app)
                assert app.current_mode == "runs"
                assert any("1 run running" in m for m in notes), notes

        asyncio.run(run())
    finally:
        proc.kill()
        proc.wait()


def test_auto_start_stays_on_configure_without_live_runs(store):
    async def run():
        app = VQATuneApp(runs_dir=store, start="auto")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            assert app.current_mode == "configure"

    asyncio.run(run())


def test_runs_table_is_rebuilt_only_when_runs_change(store):
    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            screen = app.screen
            rebuilds = []
            original = screen.rebuild
            screen.rebuild = lambda: (rebuilds.append(1), original())
            screen.refresh_rows()
            await settle(pilot, app)
            assert rebuilds == []  # the same four finished runs
            make_run(store, "20260102-100000-new-ffff")
            screen.refresh_rows()
            await settle(pilot, app)
            assert rebuilds == [1]
            assert screen.query_one("#runs-table", DataTable).row_count == 5

    asyncio.run(run())


def test_runs_list_is_not_refreshed_under_a_monitor(store, monkeypatch):
    # no 2 s timer during the test: every listing counted below comes from the code under test
    monkeypatch.setattr("vqatune.tui.screens.table.REFRESH_S", 3600.0)

    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            runs_screen = app.screen
            calls = []
            runs_screen.refresh_rows = lambda: calls.append(1)
            runs_screen.refresh_if_shown()
            assert calls  # shown: listed
            app.open_monitor(store / "20260101-100000-base-aaaa")
            await settle(pilot, app)
            before = len(calls)
            runs_screen.refresh_if_shown()
            assert len(calls) == before  # hidden: no listing
            await pilot.press("escape")
            await pilot.pause()
            assert len(calls) == before + 1  # shown again: listed at once

    asyncio.run(run())


def test_chart_downsampling_keeps_spikes_and_order():
    import numpy as np
    from vqatune.tui.widgets.charts import downsample

    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 1000)
    y[54_321] = 50.0  # a spike (a diverging loss) must survive
    xs, ys = downsample(x, y, 200)
    assert len(xs) <= 202 and ys.max() == 50.0 and xs[ys.argmax()] == 54_321
    assert np.all(np.diff(xs) > 0)
    assert ys.min() == y.min()
    short_x, short_y = downsample(x[:150], y[:150], 200)
    assert len(short_x) == 150  # short series unchanged


def test_chart_redraws_are_throttled():
    from textual.app import App
    from vqatune.tui.widgets.charts import MetricChart

    class ChartApp(App):
        def compose(self):
            yield MetricChart("loss", max_fps=2.0)

    async def run():
        app = ChartApp()
        async with app.run_test(size=(80, 20)) as pilot:
            chart = app.query_one(MetricChart)
            first = chart.redraws
            start = time.monotonic()
            for i in range(150):  # 150 points over about 1.5 s (longer on a loaded machine)
                chart.add("loss", i, 1.0 / (i + 1))
                await pilot.pause(0.01)
            elapsed = time.monotonic() - start
            # 2 a second, not one per point: the bound follows the time the loop really took
            assert 1 <= chart.redraws - first <= 2.0 * elapsed + 2
            assert chart.series["loss"].n == 150

    asyncio.run(run())


def _line(table: DataTable, y: int) -> str:
    return "".join(segment.text for segment in table.render_line(y))


def test_runs_table_at_80_columns_shows_whole_ids_and_states_in_any_frame(store):
    """The first frame after a rebuild (drawn before the table is idle, as on a loaded machine)
    already has the full run id and state; scrolled right, they stay in view."""

    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            screen = app.screen
            table = screen.query_one("#runs-table", DataTable)
            make_run(store, "20260102-100000-longer-name-ffff", state="diverged")
            screen.rows = screen.load_rows()
            screen.rebuild()  # no idle in between: what the next frame draws
            first = _line(table, 1)  # line 0 is the header
            assert "20260102-100000-longer-name-ffff" in first and "diverged" in first, first
            await settle(pilot, app)
            assert table.max_scroll_x > 0  # the rest of the columns scroll
            table.scroll_x = table.max_scroll_x
            await pilot.pause()
            scrolled = _line(table, 1)
            assert "20260102-100000-longer-name-ffff" in scrolled and "diverged" in scrolled
            assert "seed" in _line(table, 0)  # the last column came into view

    asyncio.run(run())
