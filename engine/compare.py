"""Comparing runs: the parameters that differ, best and final metrics, seed groups, curves.

One computation for the three places that show a comparison: `vqatune compare` (CLI), the
TUI's Compare screen and a sweep's table (`vqatune compare --sweep`, the end of `vqatune
sweep`). Runs whose configs differ only in `seed` (and in `name`/`output`, which name and place
a run) form a group summarised as mean ± std; the std of a single value is None, not 0: one
run says nothing about the spread. Metrics come from metrics.scan (eval events, the last step,
the end event), never from loading every line.

Light module: no torch, no textual.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config, metrics, runstore, sweepstore
from .config import Config, ConfigError
from .events import CONFIG_FILE, METRICS_FILE
from .official import breakdown
from .schema import PARAMS

# Parameters that name or place a run rather than change what it learns.
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

    def curves(self, points: int) -> dict[str, tuple[list[float], list[float]]]:
        """Validation accuracy and training loss by step, at most `points` each, ready to
        overlay; a curve without values is left out."""
        out = {}
        for name, xs, ys in (
            ("val accuracy", self.scan.accuracy_steps, self.scan.accuracy),
            ("loss", self.scan.loss_steps, self.scan.loss),
        ):
            if ys:
                xs, ys = metrics.downsample(xs, ys, points)
                out[name] = (list(map(float, xs)), list(map(float, ys)))
        return out


@dataclass
class Group:
    runs: list[RunResult]
    seeds: list[int]
    mean: dict[str, float | None] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)  # None: fewer than two values

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
    return RunResult(info, cfg, scan, run_metrics(info, scan))


def run_metrics(info: runstore.RunInfo, scan: metrics.Scan) -> dict[str, float | None]:
    """A run's METRICS: from its eval, last step and end events, else from its status."""
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
    return {k: _number(v) for k, v in values.items()}


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


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample std) of the values; (None, None) for none, std None for one."""
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def differing_params(configs: list[Config]) -> list[tuple[str, list[Any]]]:
    """Parameters (schema order) whose values are not all equal, the identity ones left out."""
    out = []
    for p in PARAMS:
        if p.name in IDENTITY_PARAMS:
            continue
        values = [getattr(c, p.name) for c in configs]
        if any(v != values[0] for v in values[1:]):
            out.append((p.name, values))
    return out


def compare(run_dirs: list[Path], *, curve_points: int = 1000) -> Comparison:
    results = [load_result(Path(d), curve_points=curve_points) for d in run_dirs]
    return Comparison(results, differing_params([r.config for r in results]), seed_groups(results))


def _without_seed(cfg: Config) -> tuple:
    return tuple(
        sorted(
            (k, repr(v))
            for k, v in cfg.to_dict().items()
            if k != "seed" and k not in IDENTITY_PARAMS
        )
    )


def summarise(run_metrics: list[dict[str, float | None]]) -> tuple[dict, dict]:
    """(mean, std) of every metric over the runs' metrics, by metric key."""
    mean, std = {}, {}
    for key, _ in METRICS:
        mean[key], std[key] = mean_std([m[key] for m in run_metrics if m[key] is not None])
    return mean, std


def seed_groups(results: list[RunResult]) -> list[Group]:
    by_key: dict[tuple, list[RunResult]] = {}
    for r in results:
        by_key.setdefault(_without_seed(r.config), []).append(r)
    groups = []
    for members in by_key.values():
        if len(members) < 2 or len({m.config.seed for m in members}) < 2:
            continue
        mean, std = summarise([m.metrics for m in members])
        groups.append(Group(members, [m.config.seed for m in members], mean, std))
    return groups


# ----------------------------------------------------------------------------------------------
# A sweep's table


def compare_sweep(sweep: sweepstore.Sweep, *, curves: bool = True) -> dict:
    """A row per variant (mean ± std over its finished seeds of the best and final validation
    accuracy, the best run), the winner, and every run's validation-accuracy curve.

    For a search sweep every trial is a row (its searched values as overrides)."""
    infos = sweepstore.sweep_runs(sweep)
    # The table needs eval events alone: found by byte search, never a full parse.
    scans = {r.id: metrics.scan(r.path / METRICS_FILE, evals_only=True) for r in infos}
    numbers = {r.id: run_metrics(r, scans[r.id]) for r in infos}
    groups: dict[str, list[runstore.RunInfo]] = {}
    overrides: dict[str, dict] = {}
    if sweep.kind == "variants":
        for p in sweep.data.get("planned", []):
            groups.setdefault(p["variant"], [])
            overrides.setdefault(
                p["variant"], {k: v for k, v in p["overrides"].items() if k != "seed"}
            )
        for r in infos:
            groups.setdefault(str(r.meta.get("variant")), []).append(r)
    else:
        for r in sorted(infos, key=lambda r: r.meta.get("trial", 0)):
            label = sweepstore.run_label(r)
            groups.setdefault(label, []).append(r)
            overrides[label] = dict(r.meta.get("params") or {})
    rows = []
    for name, members in groups.items():
        finished = [numbers[r.id] for r in members if sweepstore.is_finished(r)]
        mean, std = summarise(finished)
        scored = [r for r in members if numbers[r.id]["best_accuracy"] is not None]
        top = max(scored, key=lambda r: numbers[r.id]["best_accuracy"], default=None)
        rows.append(
            {
                "variant": name,
                "overrides": overrides.get(name, {}),
                "runs": [
                    {
                        "id": r.id,
                        "seed": r.meta.get("seed"),
                        "trial": r.meta.get("trial"),
                        "state": r.state,
                        "pruned": bool(r.meta.get("pruned")),
                        "best_accuracy": numbers[r.id]["best_accuracy"],
                        "final_accuracy": numbers[r.id]["final_accuracy"],
                    }
                    for r in members
                ],
                "n": sum(m["best_accuracy"] is not None for m in finished),
                "best_mean": mean["best_accuracy"],
                "best_std": std["best_accuracy"],
                "final_mean": mean["final_accuracy"],
                "final_std": std["final_accuracy"],
                "best": numbers[top.id]["best_accuracy"] if top else None,
                "best_run": top.id if top else None,
            }
        )
    scored_rows = [r for r in rows if r["best_mean"] is not None]
    winner = max(scored_rows, key=lambda r: r["best_mean"])["variant"] if scored_rows else None
    out = {
        "sweep": sweep.id,
        "title": sweep.title,
        "kind": sweep.kind,
        "base": sweep.data.get("base"),
        "variants": rows,
        "winner": winner,
    }
    if curves:
        out["curves"] = [
            {
                "run": r.id,
                "label": sweepstore.run_label(r),
                "steps": scans[r.id].accuracy_steps,
                "accuracy": scans[r.id].accuracy,
            }
            for r in infos
        ]
    return out
