"""What each screen looks like at 80x24 and 120x40 (pytest-textual-snapshot).

Run dirs come from tui_fixtures with fixed ids and times, so the pictures are stable. After an
intended change of the look: `pytest tests/test_tui_snapshots.py --snapshot-update`, then review
the SVGs in tests/__snapshots__/.
"""

from __future__ import annotations

import pytest
from tui_fixtures import make_store, screen_store, settle
from vqatune.tui import services
from vqatune.tui.app import VQATuneApp

SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def store(tmp_path, monkeypatch):
    return screen_store(tmp_path, monkeypatch, make_store)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_configure(snap_compare, store, size):
    async def edit(pilot):
        await settle(pilot)
        screen = pilot.app.screen
        screen.query_one("#param-lr").value = "0"  # invalid
        screen.query_one("#param-epochs").value = "60"  # outside the recommended range
        await settle(pilot)

    assert snap_compare(
        VQATuneApp(runs_dir=store, start="configure"), terminal_size=size, run_before=edit
    )


def test_configure_fit_and_queue_at_80x24(snap_compare, store, monkeypatch):
    """The top bar with a fit verdict on a detected 24 GB GPU, the queue switch on."""
    measured = {
        "params": 400_000_000,
        "trainable_params": 400_000_000,
        "activation_fixed_bytes": 0.0,
        "activation_per_sample_bytes": 1 << 30,
        "measured_at": {},
    }
    monkeypatch.setattr(services, "fit_gpus", lambda: [("GPU 0 NVIDIA A10", 24 << 30)])
    monkeypatch.setattr(services, "measure_fit", lambda cfg, cancelled=None: measured)

    async def queue_on(pilot):
        await settle(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)

    assert snap_compare(
        VQATuneApp(runs_dir=store, start="configure"), terminal_size=(80, 24), run_before=queue_on
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runs(snap_compare, store, size):
    async def select(pilot):
        await settle(pilot)
        await pilot.press("space")
        await settle(pilot)

    assert snap_compare(
        VQATuneApp(runs_dir=store, start="runs"), terminal_size=size, run_before=select
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_monitor(snap_compare, store, size):
    async def open_monitor(pilot):
        await settle(pilot)
        pilot.app.open_monitor(store / "20260101-120000-hilr-cccc")
        await settle(pilot)

    assert snap_compare(
        VQATuneApp(runs_dir=store, start="runs"), terminal_size=size, run_before=open_monitor
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compare(snap_compare, store, size):
    async def open_compare(pilot):
        await settle(pilot)
        pilot.app.open_compare(sorted(store.iterdir())[:3])
        await settle(pilot)

    assert snap_compare(
        VQATuneApp(runs_dir=store, start="runs"), terminal_size=size, run_before=open_compare
    )
