"""Shared fixtures. Keep this small: fixtures that only one test module uses live in it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory, HOME and runs store: no ./presets or user presets leak in.

    Returns the working directory (also the cwd).
    """
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("VQATUNE_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(work)
    return work


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is many times faster than two
    competing with other processes (and the training subprocesses get the same). A module that
    trains in-process or starts trainers says `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch  # here, not at the top: most test modules never need torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_fit_measurements(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Configure screen measures its config for the fit verdict (a torch subprocess of
    10-90 CPU-seconds) whenever a GPU run is judged; in tests it fails at once instead, unless a
    test puts its own measurement in place (tests/test_tui_configure.py does)."""
    from vqatune.engine.fit import FitError
    from vqatune.tui import services

    def unmeasured(cfg, cancelled=None):
        raise FitError("not measured in tests (tests/conftest.py)")

    monkeypatch.setattr(services, "measure_fit", unmeasured)
