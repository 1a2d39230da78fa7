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
