"""What the Compare screen shows, computed without widgets: differing parameters, metrics side by
side, seed groups as mean ± std, and curves ready to overlay.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqatune.engine import config as config_mod
from vqatune.engine import events as ev
from vqatune.engine import runstore
from vqatune.engine.metrics import downsample, read_events
from vqatune.engine.schema import PARAMS

# Parameters that name or place a run rather than change what it learns.
IDENTITY_PARAMS = ("name", "output")
CURVE_POINTS = 400


@dataclass
class RunSummary:
    id: str
    path: Path
    source: str
    state: str
    values: dict[str, Any]
    best_accuracy: float | None
    final_accuracy: float | None
    final_loss: float | None
    curves: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)


@dataclass
class SeedGroup:
    ids: list[str]
    seeds: list[int]
    best: tuple[float, float] | None  # mean, std of the best val accuracy
    final: tuple[float, float] | None


@dataclass
class Comparison:
    runs: list[RunSummary]
    differing: list[tuple[str, list[Any]]]
    groups: list[SeedGroup]


def load_run(run_dir: Path) -> RunSummary:
    info = runstore.run_info(run_dir)
    try:
        values = config_mod.load(str(Path(run_dir) / ev.CONFIG_FILE)).to_dict()
    except config_mod.ConfigError:
        values = {}
    steps_x, loss_y, eval_x, acc_y = [], [], [], []
    for r in read_events(Path(run_dir) / ev.METRICS_FILE, kinds=("step", "eval")):
        step = r.get("step")
        if r["event"] == "step" and isinstance(r.get("loss"), (int, float)):
            steps_x.append(step)
            loss_y.append(r["loss"])
        elif r["event"] == "eval" and isinstance(r.get("accuracy"), (int, float)):
            eval_x.append(step)
            acc_y.append(r["accuracy"])
    best = info.best_accuracy if info.best_accuracy is not None else (max(acc_y) if acc_y else None)
    final = acc_y[-1] if acc_y else info.last_accuracy
    curves = {}
    if steps_x:
        xs, ys = downsample(steps_x, loss_y, CURVE_POINTS)
        curves["loss"] = (list(map(float, xs)), list(map(float, ys)))
    if eval_x:
        xs, ys = downsample(eval_x, acc_y, CURVE_POINTS)
        curves["val accuracy"] = (list(map(float, xs)), list(map(float, ys)))
    return RunSummary(
        info.id,
        Path(run_dir),
        info.source,
        info.state,
        values,
        best,
        final,
        loss_y[-1] if loss_y else None,
        curves,
    )


def differing_params(runs: list[RunSummary]) -> list[tuple[str, list[Any]]]:
    """Parameters (schema order) whose values are not all equal across the runs."""
    out = []
    for p in PARAMS:
        values = [r.values.get(p.name) for r in runs]
        if any(v != values[0] for v in values[1:]):
            out.append((p.name, values))
    return out


def _mean_std(xs: list[float]) -> tuple[float, float] | None:
    if not xs:
        return None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def seed_groups(runs: list[RunSummary]) -> list[SeedGroup]:
    """Runs identical but for their seed (and name/output), two or more to a group."""
    groups: dict[tuple, list[RunSummary]] = {}
    for r in runs:
        if not r.values:
            continue
        key = tuple(
            sorted(
                (k, repr(v))
                for k, v in r.values.items()
                if k != "seed" and k not in IDENTITY_PARAMS
            )
        )
        groups.setdefault(key, []).append(r)
    out = []
    for members in groups.values():
        if len({m.values.get("seed") for m in members}) < 2:
            continue
        best = [m.best_accuracy for m in members if m.best_accuracy is not None]
        final = [m.final_accuracy for m in members if m.final_accuracy is not None]
        out.append(
            SeedGroup(
                [m.id for m in members],
                [m.values.get("seed") for m in members],
                _mean_std(best),
                _mean_std(final),
            )
        )
    return out


def compare(run_dirs: list[Path]) -> Comparison:
    runs = [load_run(d) for d in run_dirs]
    return Comparison(runs, differing_params(runs), seed_groups(runs))


def format_mean_std(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[0]:.4f} ± {value[1]:.4f}"
