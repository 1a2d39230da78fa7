"""End to end: launch the real `smoke` preset from the Configure screen, watch it train, restart
the app and find its history; and what a person sees through tmux."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import Select
from tui_fixtures import make_store
from vqatune.engine import config as config_mod
from vqatune.engine import runstore
from vqatune.tui import services
from vqatune.tui.app import VQATuneApp
from vqatune.tui.screens.monitor import MonitorScreen
from vqatune.tui.widgets.charts import MetricChart

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("VQATUNE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(services, "gpu_suggestion", lambda: (None, "no NVIDIA GPU"))
    return tmp_path


def test_launch_smoke_monitor_to_done_then_reattach(env):
    runs = env / "runs"
    smoke = config_mod.load("smoke")
    steps = smoke.max_steps  # a step event every log_every (1) steps
    assert smoke.log_every == 1

    async def launch_and_watch() -> Path:
        app = VQATuneApp(runs_dir=runs, start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            app.screen.query_one("#preset", Select).value = "smoke"
            await pilot.pause(0.2)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.screen.form.source == "smoke"
            await pilot.press("ctrl+l")
            deadline = time.time() + 120
            while time.time() < deadline:
                await pilot.pause(0.2)
                screen = app.screen
                if not isinstance(screen, MonitorScreen) or screen.info is None:
                    continue
                if screen.info.state == "done" and screen.steps_seen == steps:
                    break
            screen = app.screen
            assert isinstance(screen, MonitorScreen), "launch did not open the monitor"
            assert screen.info.state == "done", screen.info
            # Every step reached the loss chart once, in order, however the polls fell (a loaded
            # machine may finish the run between two polls).
            loss = screen.query_one("#chart-loss", MetricChart).series["loss"]
            assert loss.x.tolist() == list(range(1, steps + 1))
            header = str(screen.query_one("#run-header").render())
            assert "DONE" in header and f"step {steps}/{steps}" in header
            assert str(screen.query_one("#run-state").render()).startswith("DONE")
            return screen.run_dir

    run_dir = asyncio.run(launch_and_watch())
    assert runstore.run_info(run_dir).source == "smoke"

    async def reattach():
        app = VQATuneApp(runs_dir=runs, start="auto")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            app.open_monitor(run_dir)
            await pilot.pause(0.3)
            await app.workers.wait_for_complete()
            await pilot.pause()
            screen = app.screen
            assert screen.query_one("#chart-loss").series["loss"].n == steps
            assert screen.query_one("#chart-accuracy").series["val"].n >= 1
            assert screen.query_one("#chart-memory").series["rss_mb"].n == steps

    asyncio.run(reattach())


SOCKET = f"vqatune-test-{os.getpid()}"  # a private tmux server, never the user's


def _tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", SOCKET, *args], capture_output=True, text=True, check=True
    ).stdout


def _wait_for(session: str, *texts: str, timeout: float = 30.0) -> str:
    """The screen once every text is on it (the app draws in several passes)."""
    deadline = time.time() + timeout
    screen = ""
    while time.time() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", session)
        if all(text in screen for text in texts):
            return screen
        time.sleep(0.2)
    missing = [text for text in texts if text not in screen]
    raise AssertionError(f"{missing} not on screen:\n{screen}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_through_tmux_at_80x24(env):
    """The real command in a real terminal: Configure, an invalid value, Runs, a monitor."""
    make_store(env / "runs")
    session = "tui"
    vqatune = Path(sys.executable).parent / "vqatune"
    command = f"env VQATUNE_RUNS={env / 'runs'} XDG_CONFIG_HOME={env / 'xdg'} {vqatune} tui"
    _tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", command)
    try:
        _wait_for(session, "eff. batch 128", "Training basics", "^l Launch")
        for attempt in range(3):  # keys typed while the app starts may be discarded: retype
            _tmux("send-keys", "-t", session, "End", "BSpace", "BSpace", "BSpace")  # epochs
            try:  # the field is empty before the new value is typed, then shows its error
                _wait_for(session, "expected an integer, got ''", timeout=15)
                _tmux("send-keys", "-t", session, "-l", "--", "-1")
                _wait_for(session, "must be >= 1, got -1", "1 invalid", timeout=15)
                break
            except AssertionError:
                if attempt == 2:
                    raise
        _tmux("send-keys", "-t", session, "F3")
        _wait_for(session, "20260101-120000-hilr-cccc", "crashed", "4 runs")
        _tmux("send-keys", "-t", session, "Enter")  # the newest: the crashed one
        _wait_for(session, "CRASHED: r resumes", "loss", "accuracy", "memory (MiB)")
        _tmux("send-keys", "-t", session, "C-q")
        deadline = time.time() + 30
        while time.time() < deadline and _has_session(session):
            time.sleep(0.2)
        assert not _has_session(session), "ctrl+q did not quit"
    finally:
        subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True)


def _has_session(session: str) -> bool:
    return (
        subprocess.run(
            ["tmux", "-L", SOCKET, "has-session", "-t", session], capture_output=True
        ).returncode
        == 0
    )
