"""Sweep directories: where a sweep keeps its own state, its lock, its runs' tags, progress.

A sweep is one expansion of a plan (plans.py). Its runs live in the run store like any other
run, tagged in meta.json with `sweep`, `sweep_key` and `variant`/`seed` (or `trial`); its own
state lives in

    RUNS_DIR/.sweeps/<sweep id>/
      sweep.json     id, plan, base, kind, the planned runs (or the search spec), created
      study.db       the Optuna study of a search sweep (default storage)
      sweep.log      output of a sweep started with --detach
      .lock          held by the process running a variants sweep

Light module: no torch, no optuna.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runstore
from .config import Config, ConfigError
from .events import FINAL_STATES, META_FILE, read_json, write_json_atomic
from .plans import Plan, expand, make_sweep_id

SWEEPS_DIR = ".sweeps"
SWEEP_FILE = "sweep.json"
LOCK_FILE = ".lock"
SWEEP_LOG = "sweep.log"
# Final states a sweep keeps; `stopped` (interrupted) and `crashed` runs are resumed.
KEPT_STATES = tuple(s for s in FINAL_STATES if s != "stopped")


# ----------------------------------------------------------------------------------------------
# Sweep directories and run tags


def sweeps_dir(runs_dir: Path | None = None) -> Path:
    return (Path(runs_dir) if runs_dir else runstore.default_runs_dir()) / SWEEPS_DIR


@dataclass
class Sweep:
    id: str
    path: Path  # the sweep directory
    runs_dir: Path
    data: dict  # sweep.json

    @property
    def kind(self) -> str:
        return self.data.get("kind", "variants")

    @property
    def title(self) -> str:
        return self.data.get("title", self.id)


def open_sweep(
    plan: Plan,
    runs_dir: Path | None = None,
    *,
    sweep_id: str | None = None,
    extra: dict | None = None,
) -> Sweep:
    """Create the sweep directory for this plan, or find it again (the resume path)."""
    runs_dir = Path(runs_dir).expanduser().absolute() if runs_dir else runstore.default_runs_dir()
    planned = expand(plan) if plan.kind == "variants" else []
    sweep_id = sweep_id or make_sweep_id(plan, planned)
    path = sweeps_dir(runs_dir) / sweep_id
    existing = read_json(path / SWEEP_FILE)
    if existing is not None:
        return Sweep(sweep_id, path, runs_dir, existing)
    data = {
        "id": sweep_id,
        "kind": plan.kind,
        "plan": plan.name,
        "plan_path": str(plan.path),
        "title": plan.title,
        "description": plan.description,
        "base": plan.base,
        "created": time.time(),
        "host": socket.gethostname(),
        "planned": [
            {"key": p.key, "variant": p.variant, "seed": p.seed, "overrides": p.overrides}
            for p in planned
        ],
        **(extra or {}),
    }
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the sweep directory: {e.strerror}") from None
    write_json_atomic(path / SWEEP_FILE, data)
    return Sweep(sweep_id, path, runs_dir, data)


def update_sweep(sweep: Sweep, **changes: Any) -> None:
    sweep.data.update(changes)
    write_json_atomic(sweep.path / SWEEP_FILE, sweep.data)


def tag_run(run_dir: Path, **tags: Any) -> None:
    """Add tags to an existing run's meta.json (`pruned` when the pruner stops a trial)."""
    meta = read_json(Path(run_dir) / META_FILE) or {}
    meta.update(tags)
    write_json_atomic(Path(run_dir) / META_FILE, meta)


def create_sweep_run(sweep: Sweep, cfg: Config, *, name: str, overrides: dict, tags: dict) -> Path:
    # Tagged as it is created: a sweep interrupted right here leaves no untagged run behind.
    return runstore.create_run(
        cfg,
        source=sweep.data.get("base", ""),
        name=name,
        runs_dir=sweep.runs_dir,
        overrides=overrides,
        tags={"sweep": sweep.id, **tags},
    )


def sweep_runs(sweep: Sweep) -> list[runstore.RunInfo]:
    """The runs tagged with this sweep, oldest first."""
    return [r for r in runstore.list_runs(sweep.runs_dir) if r.meta.get("sweep") == sweep.id]


def list_sweeps(runs_dir: Path | None = None) -> list[Sweep]:
    runs_dir = Path(runs_dir).expanduser().absolute() if runs_dir else runstore.default_runs_dir()
    root = sweeps_dir(runs_dir)
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            data = read_json(d / SWEEP_FILE)
            if data is not None:
                out.append(Sweep(d.name, d, runs_dir, data))
    out.sort(key=lambda s: s.data.get("created") or 0)
    return out


def find_sweep(query: str, runs_dir: Path | None = None) -> Sweep:
    """A sweep by id, unique id prefix, or plan name (the latest sweep of that plan)."""
    sweeps = list_sweeps(runs_dir)
    for s in sweeps:
        if s.id == query:
            return s
    matches = [s for s in sweeps if s.id.startswith(query)]
    if len(matches) > 1:
        by_plan = [s for s in matches if s.data.get("plan") == query]
        if by_plan:
            return by_plan[-1]
        raise ConfigError(f"sweep {query!r} is ambiguous: {', '.join(s.id for s in matches[-5:])}")
    if matches:
        return matches[0]
    known = ", ".join(s.id for s in sweeps[-5:]) or "none yet"
    raise ConfigError(f"no sweep {query!r} in {sweeps_dir(runs_dir)} (sweeps: {known})")


@contextlib.contextmanager
def sweep_lock(sweep: Sweep, *, shared: bool = False) -> Iterator[None]:
    """Held while a process works on the sweep: exclusive for a variants sweep (two processes
    would duplicate its runs), shared by the workers of a search (the study keeps them apart).
    is_active() tells from it whether anyone works on the sweep now."""
    with open(sweep.path / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ConfigError(f"sweep {sweep.id} is already running ({holder})") from None
        if shared:
            yield
            return
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


def is_active(sweep: Sweep) -> bool:
    """A process on this machine is running the sweep (it holds the sweep's lock)."""
    try:
        with open(sweep.path / LOCK_FILE, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
    except BlockingIOError:
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------
# Progress (for `vqatune sweeps` and the TUI)


@dataclass
class SweepProgress:
    total: int | None  # planned runs, or n_trials for a search
    done: int  # runs in a final state (done, diverged, oom, failed; stopped when pruned)
    running: int
    failed: int  # diverged, oom, failed, crashed
    best_accuracy: float | None
    best_run: str | None  # run id
    best_label: str | None  # variant/seed or "trial N"
    active: bool = False  # a sweep process works on it now

    @property
    def state(self) -> str:
        """running (a process works on it), finished, or incomplete (interrupted)."""
        if self.active:
            return "running"
        return "finished" if self.total is not None and self.done >= self.total else "incomplete"


def run_label(info: runstore.RunInfo) -> str:
    meta = info.meta
    if meta.get("trial") is not None:
        return f"trial {meta['trial']}"
    return str(meta.get("sweep_key") or info.name)


def is_finished(info: runstore.RunInfo) -> bool:
    return info.state in KEPT_STATES or (info.state == "stopped" and bool(info.meta.get("pruned")))


def progress(sweep: Sweep, runs: list[runstore.RunInfo] | None = None) -> SweepProgress:
    runs = sweep_runs(sweep) if runs is None else runs
    if sweep.kind == "search":
        total = sweep.data.get("search", {}).get("n_trials")
    else:
        total = len(sweep.data.get("planned", []))
    best = max(
        (r for r in runs if isinstance(r.best_accuracy, (int, float))),
        key=lambda r: r.best_accuracy,
        default=None,
    )
    return SweepProgress(
        total=total,
        done=sum(is_finished(r) for r in runs),
        running=sum(r.active for r in runs),
        failed=sum(r.state in ("diverged", "oom", "failed", "crashed") for r in runs),
        best_accuracy=best.best_accuracy if best else None,
        best_run=best.id if best else None,
        best_label=run_label(best) if best else None,
        active=is_active(sweep),
    )


def overview(runs_dir: Path | None = None) -> list[tuple[Sweep, SweepProgress]]:
    """Every sweep with its progress, reading the run store once (for `vqatune sweeps` and
    the TUI's Sweeps view)."""
    sweeps = list_sweeps(runs_dir)
    if not sweeps:
        return []
    by_sweep: dict[str, list[runstore.RunInfo]] = {}
    for info in runstore.list_runs(sweeps[0].runs_dir):
        if info.meta.get("sweep"):
            by_sweep.setdefault(info.meta["sweep"], []).append(info)
    return [(s, progress(s, by_sweep.get(s.id, []))) for s in sweeps]
