"""The TUI's run queue and fit verdict: Runs lists queued runs with their place and cancels or
moves them (engine/queue.py's own functions), Configure queues a launch (switch on, or its GPU
held by a run) and shows `vqatune fit`'s verdict in its top bar, judged in a worker."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time

import psutil
import pytest
from polling import wait_for
from textual.widgets import DataTable, Input, Switch
from tui_fixtures import make_run, make_store
from vqatune.engine import config as config_mod
from vqatune.engine import events as ev
from vqatune.engine import fit as fitting
from vqatune.engine import gpu, queue, runstore, schema
from vqatune.engine.gpu import GIB, GPUInfo, Snapshot
from vqatune.tui import services
from vqatune.tui.app import VQATuneApp
from vqatune.tui.readers import RunWatcher
from vqatune.tui.screens.configure import ConfigureScreen
from vqatune.tui.screens.dialogs import ConfirmScreen
from vqatune.tui.screens.monitor import MonitorScreen, header_lines

REAL_MEASURE_FIT = services.measure_fit  # before conftest's stand-in replaces it in each test
A10 = ("GPU 0 NVIDIA A10", 24 * GIB)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(services, "gpu_suggestion", lambda: (None, "no NVIDIA GPU"))
    monkeypatch.setattr(services, "fit_gpus", lambda: [])
    # The queue worker the TUI starts only says it was asked to serve the store: no training.
    marker = "import pathlib, sys; pathlib.Path(sys.argv[1], '.queue', 'served').touch()"
    monkeypatch.setattr(queue, "WORKER", [sys.executable, "-c", marker])
    runs = tmp_path / "runs"
    make_store(runs)
    return runs


def queued_run(store, name: str):
    cfg = config_mod.load("smoke").replace(name=name)
    run_dir = runstore.create_run(cfg, source="smoke", runs_dir=store)
    queue.enqueue(run_dir, store)
    return run_dir


async def until(pilot, predicate, timeout: float = 120.0) -> bool:
    """Let the app run until `predicate` holds (True) or `timeout` s pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await pilot.pause(0.05)
    return False


def state_cells(table: DataTable) -> dict[str, str]:
    return {str(table.get_row(k)[1]): str(table.get_row(k)[2]) for k in table.rows}


def highlight(table: DataTable, run_id: str) -> None:
    table.move_cursor(row=table.get_row_index(run_id), animate=False)


# ----------------------------------------------------------------------------------------------
# Runs: the line, cancel, move


def test_runs_lists_the_queue_and_x_cancels_after_a_confirm(store):
    first, second = queued_run(store, "first"), queued_run(store, "second")
    started = queued_run(store, "started")  # the worker took it: starting on GPU 1
    with queue.edit(store) as q:
        q["order"].remove(started.name)
        q["starting"][started.name] = time.time()
    meta = json.loads((started / ev.META_FILE).read_text())
    (started / ev.META_FILE).write_text(json.dumps({**meta, "gpus": ["1"]}))

    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            table = screen.query_one("#runs-table", DataTable)
            assert await until(pilot, lambda: table.row_count == 7)
            cells = state_cells(table)
            assert cells[first.name] == "queued #1" and cells[second.name] == "queued #2"
            assert cells[started.name] == "queued GPU 1"
            assert cells["20260101-100000-base-aaaa"] == "done"
            status = str(screen.query_one("#runs-status").render())
            assert "queue: 2 waiting · 1 started" in status

            highlight(table, "20260101-100000-base-aaaa")  # not queued: told, no dialog
            await pilot.press("x")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
            assert any("not waiting in the queue" in n.message for n in app._notifications)

            highlight(table, second.name)
            await pilot.press("x")
            assert await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("n")  # kept
            assert await until(pilot, lambda: app.screen is screen)
            assert queue.read(store)["order"] == [first.name, second.name]

            await pilot.press("x")
            assert await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            assert await until(pilot, lambda: runstore.run_info(second).state == "stopped")
            assert runstore.run_info(second).message == "cancelled in the queue before it started"
            assert queue.read(store)["order"] == [first.name]
            assert await until(pilot, lambda: state_cells(table)[second.name] == "stopped")
            assert "queue: 1 waiting" in str(screen.query_one("#runs-status").render())

    asyncio.run(run())


def test_shift_arrows_move_a_queued_run_in_line(store):
    a, b, c = (queued_run(store, n) for n in ("a", "b", "c"))

    async def run():
        app = VQATuneApp(runs_dir=store, start="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one("#runs-table", DataTable)
            assert await until(pilot, lambda: table.row_count == 7)
            highlight(table, c.name)
            await pilot.press("shift+up")
            assert await until(pilot, lambda: queue.read(store)["order"][1] == c.name)
            assert await until(pilot, lambda: state_cells(table)[c.name] == "queued #2")
            await pilot.press("shift+up")
            assert await until(
                pilot, lambda: queue.read(store)["order"] == [c.name, a.name, b.name]
            )
            await pilot.press("shift+up")  # already first: said so, nothing moves
            assert await until(
                pilot, lambda: any("head of the queue" in n.message for n in app._notifications)
            )
            highlight(table, a.name)
            await pilot.press("shift+down")
            assert await until(
                pilot, lambda: queue.read(store)["order"] == [c.name, b.name, a.name]
            )
            commands = {c.title for c in app.get_system_commands(app.screen)}
            assert {"Cancel queued run", "Move queued run up", "Move queued run down"} <= commands

    asyncio.run(run())


def test_monitor_of_a_waiting_run_says_its_place(store):
    queued_run(store, "a")
    b = queued_run(store, "b")
    update = RunWatcher(b).poll()
    assert update.queue_position == 2
    assert header_lines(update.status, 8, None, update.queue_position)[1].startswith(
        "QUEUED: position 2 in the run queue"
    )
    done = RunWatcher(store / "20260101-100000-base-aaaa").poll()
    assert done.queue_position is None


# ----------------------------------------------------------------------------------------------
# Configure: Launch queues


def configure_app_noting(store, notes: list[str]) -> VQATuneApp:
    """The app on its Configure screen, every notification's message also kept in notes."""
    app = VQATuneApp(runs_dir=store, start="configure")
    notify = app.notify
    app.notify = lambda message, **kw: (notes.append(message), notify(message, **kw))
    return app


def test_launch_with_the_queue_switch_on_creates_a_queued_run(store, monkeypatch):
    monkeypatch.setattr(runstore, "launch", lambda *a, **kw: pytest.fail("started, not queued"))
    notes = []

    async def run():
        app = configure_app_noting(store, notes)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            commands = {c.title for c in app.get_system_commands(app.screen)}
            assert "Queue launches on/off" in commands
            await pilot.press("ctrl+r")
            assert app.screen.query_one("#queue-switch", Switch).value
            assert await until(pilot, lambda: str(app.screen.query_one("#launch").label) == "Queue")
            await pilot.press("ctrl+l")
            assert await until(pilot, lambda: isinstance(app.screen, MonitorScreen))
            run_dir = app.screen.run_dir
            assert runstore.run_info(run_dir).state == "queued"
            assert json.loads((run_dir / ev.META_FILE).read_text())["queued"] is True
            assert queue.read(store)["order"] == [run_dir.name]
            state = app.screen.query_one("#run-state")
            assert await until(pilot, lambda: "position 1 in the run queue" in str(state.render()))
            assert wait_for(lambda: (store / ".queue" / "served").exists(), timeout=60)
            assert any(
                f"queued {run_dir.name} at position 1 (the queue switch is on)" in m for m in notes
            )

    asyncio.run(run())


def _fake_gpu(monkeypatch) -> None:
    gpus = [GPUInfo(0, "NVIDIA A10", 1 * GIB, 24 * GIB, 0)]
    monkeypatch.setattr(gpu, "sample", lambda pid=None: Snapshot(time=0.0, gpus=gpus))


def _held_by_this_process(store) -> None:
    """A GPU run of the store that is live (this test's own process) and so holds GPU 0."""
    run_dir = make_run(
        store, "20260101-150000-live-ffff", state="queued", values={"device": "auto"}
    )
    me = psutil.Process()
    status = {"state": "running", "pid": os.getpid(), "pid_start_time": me.create_time()}
    (run_dir / ev.STATUS_FILE).write_text(json.dumps({**status, "heartbeat": time.time()}))


def test_queue_reason_names_a_held_gpu_or_a_waiting_line(store, monkeypatch):
    cfg = config_mod.load("smoke").replace(device="auto")
    assert services.queue_reason(cfg, store) is None  # no GPU here: nothing to wait for
    _fake_gpu(monkeypatch)
    assert services.queue_reason(cfg, store) is None  # the GPU is free
    assert services.queue_reason(cfg.replace(device="cpu"), store) is None
    _held_by_this_process(store)
    assert services.queue_reason(cfg, store) == "GPU 0 is held by another run"
    queued_run(store, "waiting")
    assert services.queue_reason(cfg, store) == "1 run already waits for a GPU"


def test_launch_is_queued_when_its_gpu_is_held(store, monkeypatch):
    monkeypatch.setattr(runstore, "launch", lambda *a, **kw: pytest.fail("started, not queued"))
    _fake_gpu(monkeypatch)
    _held_by_this_process(store)
    notes = []

    async def run():
        app = configure_app_noting(store, notes)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            assert not app.screen.query_one("#queue-switch", Switch).value
            await pilot.press("ctrl+l")
            assert await until(pilot, lambda: isinstance(app.screen, MonitorScreen))
            run_dir = app.screen.run_dir
            assert queue.read(store)["order"] == [run_dir.name]
            assert any("(GPU 0 is held by another run)" in m for m in notes)

    asyncio.run(run())


# ----------------------------------------------------------------------------------------------
# Configure: the fit verdict


def fake_measured(params: int = 100_000_000, per_sample: float = 50 * 2**20) -> dict:
    return {
        "params": params,
        "trainable_params": params,
        "activation_fixed_bytes": 0.0,
        "activation_per_sample_bytes": per_sample,
        "measured_at": {},
    }


def fit_text(app) -> str:
    return str(app.screen.query_one("#fit").render())


def test_top_bar_shows_the_fit_verdict_measured_once_per_model(store, monkeypatch):
    measured = []  # the configs the fake measuring process was given
    release = threading.Event()

    def measure(cfg, cancelled=None):
        measured.append(cfg)
        assert release.wait(60)
        return fake_measured()

    monkeypatch.setattr(services, "measure_fit", measure)
    monkeypatch.setattr(services, "fit_gpus", lambda: [A10])

    async def run():
        app = VQATuneApp(runs_dir=store, start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            assert await until(pilot, lambda: fit_text(app) == "fit: …" and measured)
            release.set()
            # default: batch 32 -> 1.5 GiB static + 1.6 GiB activations of 0.8 x 24 GiB; the
            # largest batch leaves 10% of that: (17.28 - 1.49) GiB / 50 MiB = 323
            assert await until(pilot, lambda: fit_text(app).startswith("fit GPU 0: fits · "))
            assert fit_text(app) == "fit GPU 0: fits · 3.1 GiB of 19.2 GiB · batch ≤ 323"
            assert screen.query_one("#fit").has_class("-fits")
            assert "NVIDIA A10" in str(screen.query_one("#fit").tooltip)

            # batch edits are judged again at once: no new measurement
            for value in ("3", "30", "300", "400"):
                screen.query_one("#param-batch_size", Input).value = value
            assert await until(pilot, lambda: "does not fit" in fit_text(app))
            assert fit_text(app) == "fit GPU 0: does not fit · 21.0 GiB of 19.2 GiB · batch ≤ 323"
            assert screen.query_one("#fit").has_class("-no-fit") and len(measured) == 1

            await screen.show_panel(schema.BY_NAME["num_hid"].group)
            screen.query_one("#param-num_hid", Input).value = "512"  # another model: measured
            assert await until(pilot, lambda: len(measured) == 2)
            assert measured[1].num_hid == 512 and measured[1].batch_size == 32  # measure_input
            screen.query_one("#param-lr", Input).value = "0"  # invalid: nothing to judge
            assert await until(pilot, lambda: fit_text(app) == "fit: ? (invalid values)")

    asyncio.run(run())


def test_a_newer_config_cancels_the_running_measurement(store, monkeypatch):
    calls = []  # per call: whether it saw itself cancelled

    def measure(cfg, cancelled=None):
        calls.append(False)
        if len(calls) == 1:  # the first one "takes long": until the worker is cancelled
            assert wait_for(cancelled, timeout=120)
            calls[0] = True
            raise fitting.FitCancelled("measurement cancelled")
        return fake_measured()

    monkeypatch.setattr(services, "measure_fit", measure)
    monkeypatch.setattr(services, "fit_gpus", lambda: [A10])

    async def run():
        app = VQATuneApp(runs_dir=store, start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            assert await until(pilot, lambda: len(calls) == 1)
            await app.screen.show_panel(schema.BY_NAME["num_hid"].group)
            app.screen.query_one("#param-num_hid", Input).value = "256"
            assert await until(pilot, lambda: fit_text(app).startswith("fit GPU 0: fits"))
            assert await until(pilot, lambda: calls == [True, False])

    asyncio.run(run())


def test_cpu_runs_are_not_measured(store, monkeypatch):
    monkeypatch.setattr(services, "measure_fit", lambda *a, **kw: pytest.fail("measured"))

    async def run():
        app = VQATuneApp(runs_dir=store, start="configure")
        async with app.run_test(size=(120, 40)) as pilot:
            assert await until(pilot, lambda: fit_text(app) == "fit: trains on CPU (no GPU)")
            await app.screen.show_panel(schema.BY_NAME["device"].group)
            app.screen.query_one("#param-device").value = "cpu"
            assert await until(pilot, lambda: fit_text(app) == "fit: trains on CPU")
            assert isinstance(app.screen, ConfigureScreen)

    asyncio.run(run())


def test_without_a_gpu_a_cuda_config_is_judged_for_every_size():
    cfg = config_mod.load("default").replace(device="cuda")
    cache = {config_mod.dumps(fitting.measure_input(cfg), full=True): fake_measured()}
    line = services.judge_fit(cfg.replace(batch_size=200), cache)  # from the cache: no process
    # 11.3 GiB: over 8GB's 6.4 GiB, under 90% of 24GB's 19.2 GiB
    assert line.text == "fit 24GB: fits · 11.3 GiB of 19.2 GiB · batch ≤ 323"
    assert line.verdict == "fits" and len(line.detail.splitlines()) == len(fitting.GPU_SIZES)
    assert line.detail.startswith("8GB: ") and "does not fit" in line.detail.splitlines()[0]


def test_measure_input_ignores_what_only_the_verdict_reads():
    cfg = config_mod.load("smoke")
    same = cfg.replace(batch_size=64, gradient_accumulation_steps=4, max_memory_usage=0.5)
    assert fitting.measure_input(cfg) == fitting.measure_input(same)
    assert fitting.measure_input(cfg) != fitting.measure_input(cfg.replace(num_hid=64))


def test_a_cancelled_measurement_ends_its_process(tmp_path, monkeypatch):
    """The TUI's way in (the config as a TOML file for engine/fit.py's process): given up on,
    the process is killed and the file removed, long before a measurement could end."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    asked = time.monotonic()
    with pytest.raises(fitting.FitCancelled):
        REAL_MEASURE_FIT(config_mod.load("smoke"), cancelled=lambda: time.monotonic() - asked > 0.5)
    assert list(tmp_path.iterdir()) == []
    children = psutil.Process().children(recursive=True)
    assert not [c for c in children if "vqatune.engine.fit" in " ".join(c.cmdline())]
