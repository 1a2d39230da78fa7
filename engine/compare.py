"""Comparing runs: the parameters that differ, best and final metrics, seed groups.

Runs whose configs differ only in `seed` form a group summarised as mean ± std. Metrics come
from metrics.scan (eval events, the last step, the end event), never from loading every line.

Light module: no torch, no textual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config, metrics, runstore
from .config import Config, ConfigError
from .events import CONFIG_FILE, METRICS_FILE
from .official import breakdown
from .schema import PARAMS

# Parameters that name a run rather than change its training.
IDENTITY_PARAMS = ("name", "output")
# (key, label) of the metrics shown side by side; all numeric or None.
METRICS = (
    ("best_accuracy", "best val accuracy"),
    ("best_step", "best at step"),
    ("final_accuracy", "final val accuracy"),
    ("final_loss", "final train loss"),
    ("steps", "steps"),
    ("duration_s", "duration"),
    ("samples_per_s", "samples/s"),
)


@dataclass
class RunResult:
    info: runstore.RunInfo
    config: Config
    scan: metrics.Scan
    metrics: dict[str, float | None]

    @property
    def label(self) -> str:
        return self.info.id


@dataclass
class Group:
    runs: list[RunResult]
    seeds: list[int]
    mean: dict[str, float | None] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        first = self.runs[0].info
        return f"{first.name} × {len(self.runs)} seeds"


@dataclass
class Comparison:
    runs: list[RunResult]
    differing: list[tuple[str, list[Any]]]  # (param, value per run), schema order
    groups: list[Group]  # runs that differ only in seed; only groups of two or more

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [{**r.info.to_dict(), "metrics": r.metrics} for r in self.runs],
            "differing": {name: values for name, values in self.differing},
            "groups": [
                {
                    "runs": [r.info.id for r in g.runs],
                    "seeds": g.seeds,
                    "mean": g.mean,
                    "std": g.std,
                }
                for g in self.groups
            ],
        }


def load_result(run_dir: Path, *, curve_points: int = 1000) -> RunResult:
    info = runstore.run_info(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"run {info.id}: {CONFIG_FILE} is missing")
    cfg = config.load(str(run_dir / CONFIG_FILE))
    scan = metrics.scan(run_dir / METRICS_FILE, curve_points=curve_points)
    best, final, last = scan.best_eval, scan.final_eval, scan.last_step or {}
    values = {
        "best_accuracy": best["accuracy"] if best else info.best_accuracy,
        "best_step": best.get("step") if best else None,
        "final_accuracy": final["accuracy"] if final else info.last_accuracy,
        "final_loss": last.get("loss"),
        "steps": last.get("step", info.step),
        "duration_s": info.duration_s,
        "samples_per_s": last.get("samples_per_s", info.status.get("samples_per_s")),
    }
    values.update({key: v for key, _, v in breakdown(best)})  # the best eval's official figures
    return RunResult(info, cfg, scan, {k: _number(v) for k, v in values.items()})


def breakdown_metrics(results: list[RunResult]) -> list[tuple[str, str]]:
    """(key, label) of the official figures any of the runs has (per type, consistency, ...)."""
    seen: dict[str, str] = {}
    for r in results:
        for key, label, _ in breakdown(r.scan.best_eval):
            seen.setdefault(key, f"best eval: {label}")
    return list(seen.items())


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return x


def compare(run_dirs: list[Path], *, curve_points: int = 1000) -> Comparison:
    results = [load_result(Path(d), curve_points=curve_points) for d in run_dirs]
    differing = []
    for p in PARAMS:
        if p.name in IDENTITY_PARAMS:
            continue
        values = [getattr(r.config, p.name) for r in results]
        if any(v != values[0] for v in values[1:]):
            differing.append((p.name, values))
    return Comparison(results, differing, seed_groups(results))


def _without_seed(cfg: Config) -> tuple:
    return tuple(
        sorted(
            (k, repr(v))
            for k, v in cfg.to_dict().items()
            if k != "seed" and k not in IDENTITY_PARAMS
        )
    )


def seed_groups(results: list[RunResult]) -> list[Group]:
    by_key: dict[tuple, list[RunResult]] = {}
    for r in results:
        by_key.setdefault(_without_seed(r.config), []).append(r)
    groups = []
    for members in by_key.values():
        if len(members) < 2 or len({m.config.seed for m in members}) < 2:
            continue
        g = Group(members, [m.config.seed for m in members])
        for key, _ in METRICS:
            xs = [m.metrics[key] for m in members if m.metrics[key] is not None]
            g.mean[key] = sum(xs) / len(xs) if xs else None
            g.std[key] = _sample_std(xs) if xs else None
        groups.append(g)
    return groups


def _sample_std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
