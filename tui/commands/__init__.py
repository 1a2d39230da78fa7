"""Command modules; each exposes `register(app)`. Keep module-level imports light."""

from __future__ import annotations

import typer

from . import (
    alerts_cmd,
    analyze_cmd,
    config_cmd,
    data_cmd,
    export_cmd,
    fit_cmd,
    model_cmd,
    predict_cmd,
    presets_cmd,
    queue_cmd,
    run_cmd,
    runs_cmd,
    sweep_cmd,
    tui_cmd,
)

# Order of the commands in `vqatune --help`.
MODULES = (
    presets_cmd,
    config_cmd,
    tui_cmd,
    run_cmd,
    runs_cmd,
    queue_cmd,
    sweep_cmd,
    analyze_cmd,
    export_cmd,
    alerts_cmd,
    data_cmd,
    model_cmd,
    fit_cmd,
    predict_cmd,
)


def register_all(app: typer.Typer) -> None:
    for module in MODULES:
        module.register(app)
