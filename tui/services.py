"""The blocking work behind the screens (files, GPU query, processes), as plain functions.

Screens call these from thread workers only; they talk to the engine's torch-free modules and
never to widgets, so they are tested without an app.
"""

from __future__ import annotations

import re
from pathlib import Path

from vqatune.engine import config as config_mod
from vqatune.engine.config import Config, ConfigError

PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def presets() -> list[tuple[str, str]]:
    """(name, title) of every preset, built-in order first."""
    return [(p.name, p.title) for p in config_mod.list_presets()]


def gpu_suggestion() -> tuple[str | None, str]:
    """The preset suggested for this machine's GPUs (cpu-quick without one) and why."""
    from vqatune.engine import gpu

    return gpu.suggestion()


def resolve(source: str) -> config_mod.Resolved:
    """A preset name or a TOML path -> its resolved config (ConfigError on a user mistake)."""
    return config_mod.resolve(source)


def save_preset(cfg: Config, name: str, title: str = "", directory: Path | None = None) -> Path:
    """Write cfg as a standalone preset (its differences from the defaults) in the user's presets."""
    name = name.strip()
    if name.endswith(config_mod.PRESET_SUFFIX):
        name = name[: -len(config_mod.PRESET_SUFFIX)]
    if not PRESET_NAME.match(name):
        raise ConfigError(f"preset name {name!r}: use letters, digits, '.', '_' or '-'")
    directory = directory or config_mod.user_presets_dir()
    path = directory / (name + config_mod.PRESET_SUFFIX)
    if path.exists():
        raise ConfigError(f"{path}: already exists; choose another name")
    directory.mkdir(parents=True, exist_ok=True)
    config_mod.write_atomic(path, config_mod.dumps(cfg, title=title.strip()))
    return path


def launch(cfg: Config, source: str, overrides: dict, runs_dir: Path | None = None) -> Path:
    """Create the run directory and start training detached; the run outlives the TUI."""
    from vqatune.engine import runstore

    run_dir = runstore.create_run(
        cfg,
        source=source,
        name=cfg.name,
        runs_dir=runs_dir,
        overrides=overrides,
        argv=["vqatune", "tui"],
        output=cfg.output or None,
    )
    runstore.launch(run_dir, detach=True)
    return run_dir
