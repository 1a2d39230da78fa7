"""Sweeps: a plan (base + variants x seeds, or an Optuna [search]) run as ordinary runs.

A plan is a TOML file:

    title = "Learning rate"
    base = "default"               # preset name or file (relative to the plan)
    seeds = [1204, 1205]           # optional; default: the base's seed
    [set]                          # optional: overrides for every run
    epochs = 10
    [variants.higher]              # one table per variant, flat parameter names
    lr = 3.5e-4
    [search]                       # instead of variants: an Optuna study (see search.py)

A sweep is one expansion of a plan. Its id is derived from the plan's name, the base and a digest
of every run's resolved config, so running the same command again finds the same sweep and
resumes it. Its runs live in the run store like any other run, tagged in meta.json with
`sweep`, `sweep_key` and `variant`/`seed` (or `trial`); its own state lives in

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
import hashlib
import json
import math
import os
import signal
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config as config_mod
from . import runstore
from .config import Config, ConfigError, _key_line, _parse_toml, unknown_message
from .events import FINAL_STATES, META_FILE, read_json, write_json_atomic
from .schema import BY_NAME, ParamError, coerce

PLAN_KEYS = ("title", "description", "base", "seeds", "set", "variants", "search")
SWEEPS_DIR = ".sweeps"
SWEEP_FILE = "sweep.json"
LOCK_FILE = ".lock"
SWEEP_LOG = "sweep.log"
# Final states a sweep keeps; `stopped` (interrupted) and `crashed` runs are resumed.
KEPT_STATES = tuple(s for s in FINAL_STATES if s != "stopped")


# ----------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any]


@dataclass
class Plan:
    name: str  # the file's stem: part of the sweep id
    path: Path
    title: str
    description: str
    base: str  # preset name or file path
    seeds: list[int]  # empty: the base's own seed
    common: dict[str, Any]  # [set]: overrides for every run
    variants: list[Variant]
    search: dict | None = None  # the raw [search] table, checked by search.parse_search

    @property
    def kind(self) -> str:
        return "search" if self.search is not None else "variants"


@dataclass
class PlanInfo:
    name: str
    title: str
    description: str
    path: Path
    kind: str


def plan_dirs() -> list[Path]:
    """Where plans are found (a later directory wins): next to the presets, in experiments/."""
    return [d / "experiments" for d in config_mod.preset_dirs()]


def plan_paths() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in plan_dirs():
        if d.is_dir():
            for path in sorted(d.glob("*.toml")):
                found[path.stem] = path
    return found


def list_plans() -> list[PlanInfo]:
    out = []
    for name, path in sorted(plan_paths().items()):
        try:
            data = _parse_toml(path)
        except ConfigError:
            data = {}
        out.append(
            PlanInfo(
                name,
                str(data.get("title", "")),
                str(data.get("description", "")),
                path,
                "search" if "search" in data else "variants",
            )
        )
    return out


def find_plan(source: str) -> Path:
    """A plan name (presets/experiments/NAME.toml) or a path to a plan file."""
    if source.endswith(".toml") or "/" in source or os.sep in source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"{source}: no such plan file")
        return path
    paths = plan_paths()
    if source in paths:
        return paths[source]
    import difflib

    near = difflib.get_close_matches(source, list(paths), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else f" (plans: {', '.join(paths)})"
    raise ConfigError(f"{source}: no such plan{hint}")


def _where(path: Path, table: str | None, key: str) -> str:
    line = _key_line(path, table, key)
    return f"{path}:{line}: " if line else f"{path}: "


def _overrides(path: Path, table: str, data: Any) -> dict[str, Any]:
    """A table of parameter overrides, typed and checked by the schema."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{_where(path, None, table.split('.')[0])}[{table}]: expected a table of parameters"
        )
    out = {}
    for name, value in data.items():
        if name not in BY_NAME:
            if isinstance(value, dict):
                raise ConfigError(
                    f"{_where(path, table, name)}[{table}.{name}]: expected "
                    f"parameter = value, not a table"
                )
            raise ConfigError(unknown_message(name, _where(path, table, name)))
        param = BY_NAME[name]
        try:
            if param.kind in ("int", "float") and isinstance(value, str):
                raise ParamError(name, f"expected a number, got the string {value!r}")
            out[name] = coerce(param, value)
        except ParamError as e:
            raise ConfigError(f"{_where(path, table, name)}{e}") from None
    return out


def load_plan(source: str, *, base: str | None = None, seeds: list[int] | None = None) -> Plan:
    """Read and check a plan; `base` replaces its base, `seeds` its seeds (the CLI options)."""
    path = find_plan(source)
    data = _parse_toml(path)
    for key in data:
        if key not in PLAN_KEYS:
            raise ConfigError(
                f"{_where(path, None, key)}unknown plan key {key!r} "
                f"(plan keys: {', '.join(PLAN_KEYS)})"
            )
    for key in ("title", "description", "base"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{_where(path, None, key)}{key}: expected a string")
    plan_base = data.get("base", "default")
    if base is None and ("/" in plan_base or plan_base.endswith(".toml")):
        plan_base = str(path.parent / plan_base) if not Path(plan_base).is_absolute() else plan_base
    raw_seeds = data.get("seeds", [])
    if not isinstance(raw_seeds, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw_seeds
    ):
        raise ConfigError(f"{_where(path, None, 'seeds')}seeds: expected a list of integers >= 0")
    if seeds is not None:
        raw_seeds = list(seeds)
    if len(set(raw_seeds)) != len(raw_seeds):
        raise ConfigError(f"{_where(path, None, 'seeds')}seeds: a seed is given twice")
    common = _overrides(path, "set", data.get("set", {}))
    raw_variants = data.get("variants", {})
    if not isinstance(raw_variants, dict):
        raise ConfigError(
            f"{_where(path, None, 'variants')}variants: expected [variants.NAME] tables"
        )
    variants = []
    for name, table in raw_variants.items():
        if runstore.sanitize_name(name) != name:
            raise ConfigError(
                f"{path}: variant name {name!r}: use letters, digits, '.', '_', '+' and '-' only"
            )
        variants.append(Variant(name, _overrides(path, f"variants.{name}", table)))
    search = data.get("search")
    if search is not None:
        if variants:
            raise ConfigError(f"{path}: a plan has either [variants.*] or [search], not both")
        if raw_seeds:
            raise ConfigError(
                f"{path}: seeds are for plans with variants; every trial of a "
                f"search uses the base's seed (set it in [set])"
            )
        from .search import parse_search  # checks the table now, before anything runs

        parse_search(search, path)
    elif not variants:
        variants = [Variant("base", {})]
    return Plan(
        name=path.stem,
        path=path,
        title=str(data.get("title", path.stem)),
        description=str(data.get("description", "")),
        base=base or plan_base,
        seeds=raw_seeds,
        common=common,
        variants=variants,
        search=search,
    )


# ----------------------------------------------------------------------------------------------
# Expansion


@dataclass
class PlannedRun:
    key: str  # "<variant>/seed<seed>": unique within a sweep
    variant: str
    seed: int
    config: Config
    overrides: dict[str, Any]  # what the run changes from the base, recorded in meta.json


def base_config(plan: Plan) -> Config:
    cfg = config_mod.load(plan.base)
    return cfg.replace(**plan.common) if plan.common else cfg


def expand(plan: Plan) -> list[PlannedRun]:
    """Every variant x seed, in the plan's order (variants outer, seeds inner)."""
    base = base_config(plan)
    seeds = plan.seeds or [base.seed]
    out = []
    for variant in plan.variants:
        for seed in seeds:
            overrides = {**plan.common, **variant.overrides, "seed": seed}
            out.append(
                PlannedRun(
                    f"{variant.name}/seed{seed}",
                    variant.name,
                    seed,
                    base.replace(**variant.overrides, seed=seed),
                    overrides,
                )
            )
    return out


def make_sweep_id(plan: Plan, planned: list[PlannedRun] | None = None) -> str:
    """<plan>-<base>-<digest>: the same plan on the same base is the same sweep."""
    if plan.kind == "search":  # n_trials left out: raising it and re-running adds trials
        search = {k: v for k, v in plan.search.items() if k != "n_trials"}
        content: Any = {"base": base_config(plan).to_dict(), "search": search}
    else:
        content = [(p.key, p.config.to_dict()) for p in (planned or expand(plan))]
    digest = hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    base_label = runstore.sanitize_name(Path(plan.base).stem if plan.base else "default")
    return f"{plan.name}-{base_label}-{digest[:6]}"


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
# Running runs in slots (one per GPU, or N on CPU)


class SweepInterrupted(Exception):
    """Ctrl-C or SIGTERM: the sweep's live runs were stopped; re-running resumes them."""


@contextlib.contextmanager
def interrupts_as_keyboard() -> Iterator[None]:
    """SIGTERM (and SIGHUP) behave like Ctrl-C so that the sweep stops its runs cleanly."""

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def make_slots(parallel: int | None, gpus: list[str] | None) -> list[str | None]:
    """GPU ids (at most one run on each), or `parallel` CPU slots (None: no CUDA pinning)."""
    if parallel is not None and parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, got {parallel}")
    if gpus:
        if len(set(gpus)) != len(gpus):
            raise ConfigError(f"--gpus: a GPU is given twice ({','.join(gpus)})")
        return list(gpus[:parallel] if parallel else gpus)
    return [None] * (parallel or 1)


def describe_slots(slots: list[str | None]) -> str:
    if slots and slots[0] is not None:
        return f"GPUs {','.join(slots)}, one run each"
    return f"{len(slots)} run{'s' * (len(slots) > 1)} at a time"


def launch_in_slot(run_dir: Path, slot: str | None, *, resume: bool):
    """Start the trainer detached, pinned to one GPU when slot is a GPU id."""
    if slot is None:
        return runstore.launch(run_dir, detach=True, resume=resume)
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = slot  # launch copies os.environ into the child
    try:
        return runstore.launch(run_dir, detach=True, resume=resume)
    finally:
        if saved is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def relaunch(run_dir: Path, slot: str | None):
    """Start an unfinished run again: the trainer continues from checkpoints/last.pt, or from
    the start when it never reached one. -> (process, "resumed" or "restarted")"""
    what = "resumed" if runstore.last_checkpoint(run_dir) is not None else "restarted"
    return launch_in_slot(run_dir, slot, resume=True), what


@dataclass
class Job:
    """A run the sweep is waiting for: started by us (proc) or adopted from an earlier process."""

    run_dir: Path
    label: str
    slot: str | None
    proc: Any = None  # subprocess.Popen when we started it
    started: float = field(default_factory=time.time)

    def finished(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is not None
        return not runstore.run_info(self.run_dir).live


def stop_jobs(jobs: list[Job], echo: Callable[[str], None], wait_s: float = 60.0) -> None:
    """Ask every live run to stop (checkpoint, `stopped`) and wait for them to end."""
    for job in jobs:
        with contextlib.suppress(ConfigError, OSError):
            runstore.stop(job.run_dir)
    deadline = time.time() + wait_s
    for job in jobs:
        while not job.finished() and time.time() < deadline:
            time.sleep(0.1)
        if not job.finished():
            with contextlib.suppress(ConfigError, OSError):
                runstore.stop(job.run_dir, kill=True)
        if job.proc is not None:
            job.proc.wait()
        echo(f"stopped {job.label} ({job.run_dir.name})")


# ----------------------------------------------------------------------------------------------
# Variants sweeps


@dataclass
class SweepItem:
    planned: PlannedRun
    run_dir: Path | None  # None: not created yet
    state: str  # run state when the sweep looked ("new" when not created)


def match_runs(sweep: Sweep, planned: list[PlannedRun]) -> list[SweepItem]:
    """Pair every planned run with its run in the store (by tag), if it has one."""
    by_key: dict[str, list[runstore.RunInfo]] = {}
    for info in sweep_runs(sweep):
        by_key.setdefault(str(info.meta.get("sweep_key")), []).append(info)
    items = []
    for p in planned:
        runs = by_key.get(p.key, [])
        # Never expected to be more than one; if it is, prefer a finished run.
        runs.sort(key=lambda r: (r.state in KEPT_STATES, r.created or 0))
        info = runs[-1] if runs else None
        items.append(SweepItem(p, info.path if info else None, info.state if info else "new"))
    return items


@dataclass
class SweepResult:
    sweep: Sweep
    states: dict[str, str]  # key -> final state of its run
    run_ids: dict[str, str]  # key -> run id
    kept: int  # runs already finished before this invocation


def run_variants(
    sweep: Sweep,
    plan: Plan,
    *,
    slots: list[str | None],
    echo: Callable[[str], None] = print,
    poll_s: float = 0.25,
) -> SweepResult:
    """Run every planned run that has not finished; keep finished ones, resume unfinished ones,
    wait for ones still running from an earlier invocation. Ctrl-C stops the live runs."""
    planned = expand(plan)
    with sweep_lock(sweep):
        echo(
            f"sweep {sweep.id}: {plan.title} on {plan.base} ({describe_slots(slots)}; "
            f"runs in {sweep.runs_dir})"
        )
        items = match_runs(sweep, planned)
        total = len(items)
        states = {it.planned.key: it.state for it in items}
        run_ids = {it.planned.key: it.run_dir.name for it in items if it.run_dir}
        kept = sum(it.state in KEPT_STATES for it in items)
        if kept:
            echo(f"sweep {sweep.id}: {kept} of {total} runs already finished, kept")
        pending = [it for it in items if it.state not in KEPT_STATES]
        free = list(range(len(slots)))
        jobs: dict[int, tuple[Job, SweepItem]] = {}
        done_count = kept

        def pick_slot(item: SweepItem, free_slots: list[int]) -> int:
            if item.run_dir is not None:
                held = read_json(item.run_dir / META_FILE) or {}
                for i in free_slots:
                    if slots[i] is not None and slots[i] == held.get("gpu"):
                        return i
            return min(free_slots)

        def start(item: SweepItem, slot_index: int) -> None:
            slot = slots[slot_index]
            p = item.planned
            if item.run_dir is None:
                item.run_dir = create_sweep_run(
                    sweep,
                    p.config,
                    name=f"{plan.name}-{p.variant}-s{p.seed}",
                    overrides=p.overrides,
                    tags={"sweep_key": p.key, "variant": p.variant, "seed": p.seed, "gpu": slot},
                )
                run_ids[p.key] = item.run_dir.name
                what = "started"
                proc = launch_in_slot(item.run_dir, slot, resume=False)
            elif item.state in ("running", "queued") and runstore.run_info(item.run_dir).live:
                what, proc = "waiting for", None  # still running from an earlier invocation
            else:
                proc, what = relaunch(item.run_dir, slot)
            where = f" on GPU {slot}" if slot is not None else ""
            echo(
                f"[{done_count + len(jobs) + 1}/{total}] {what} {p.key}: run "
                f"{item.run_dir.name}{where}"
            )
            jobs[slot_index] = (Job(item.run_dir, p.key, slot, proc), item)

        try:
            while pending or jobs:
                for slot_index, (job, item) in list(jobs.items()):
                    if job.finished():
                        del jobs[slot_index]
                        free.append(slot_index)
                        info = runstore.run_info(job.run_dir)
                        states[item.planned.key] = info.state
                        done_count += 1
                        acc = _fmt_acc(info.best_accuracy)
                        echo(
                            f"[{done_count}/{total}] {info.state} {item.planned.key}: "
                            f"best accuracy {acc} ({time.time() - job.started:.0f} s)"
                        )
                # Runs still going from an earlier invocation first, on the GPU they hold.
                pending.sort(key=lambda it: it.state not in ("running", "queued"))
                while pending and free:
                    item = pending.pop(0)
                    free.remove(slot_index := pick_slot(item, free))
                    start(item, slot_index)
                if jobs:
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            echo(f"interrupted: stopping {len(jobs)} live run(s)")
            stop_jobs([job for job, _ in jobs.values()], echo)
            raise SweepInterrupted(
                f"sweep {sweep.id} interrupted; run the same command again to resume it"
            ) from None
    update_sweep(sweep, finished=time.time())
    return SweepResult(sweep, states, run_ids, kept)


def _fmt_acc(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "-"


# ----------------------------------------------------------------------------------------------
# Progress and comparison (for `vqatune sweeps`, `vqatune compare --sweep` and the TUI)


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
        running=sum(r.state in ("running", "queued") and r.live for r in runs),
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


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def compare(sweep: Sweep, *, curves: bool = True) -> dict:
    """A table per variant (mean ± std over seeds of the best and final validation accuracy,
    the best run), the winner, and every run's validation-accuracy curve.

    For a search sweep every trial is a row (its searched values as overrides)."""
    runs = sweep_runs(sweep)
    groups: dict[str, list[runstore.RunInfo]] = {}
    overrides: dict[str, dict] = {}
    if sweep.kind == "variants":
        for p in sweep.data.get("planned", []):
            groups.setdefault(p["variant"], [])
            overrides.setdefault(
                p["variant"], {k: v for k, v in p["overrides"].items() if k != "seed"}
            )
        for r in runs:
            groups.setdefault(str(r.meta.get("variant")), []).append(r)
    else:
        for r in sorted(runs, key=lambda r: r.meta.get("trial", 0)):
            label = run_label(r)
            groups.setdefault(label, []).append(r)
            overrides[label] = dict(r.meta.get("params") or {})
    rows = []
    for name, members in groups.items():
        finished = [r for r in members if is_finished(r)]
        best_xs = [r.best_accuracy for r in finished if isinstance(r.best_accuracy, (int, float))]
        final_xs = [r.last_accuracy for r in finished if isinstance(r.last_accuracy, (int, float))]
        mean, std = _mean_std(best_xs)
        fmean, fstd = _mean_std(final_xs)
        top = max(
            (r for r in members if isinstance(r.best_accuracy, (int, float))),
            key=lambda r: r.best_accuracy,
            default=None,
        )
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
                        "best_accuracy": r.best_accuracy,
                        "final_accuracy": r.last_accuracy,
                    }
                    for r in members
                ],
                "n": len(best_xs),
                "best_mean": mean,
                "best_std": std,
                "final_mean": fmean,
                "final_std": fstd,
                "best": top.best_accuracy if top else None,
                "best_run": top.id if top else None,
            }
        )
    scored = [r for r in rows if r["best_mean"] is not None]
    winner = max(scored, key=lambda r: r["best_mean"])["variant"] if scored else None
    out = {
        "sweep": sweep.id,
        "title": sweep.title,
        "kind": sweep.kind,
        "base": sweep.data.get("base"),
        "variants": rows,
        "winner": winner,
    }
    if curves:
        out["curves"] = [{"run": r.id, "label": run_label(r), **eval_curve(r.path)} for r in runs]
    return out


def eval_curve(run_dir: Path) -> dict[str, list]:
    """Validation accuracy by optimiser step, from the run's eval events."""
    from .metrics import read_events

    steps, accs = [], []
    for ev in read_events(Path(run_dir) / "metrics.jsonl", kinds=("eval",)):
        acc = ev.get("accuracy")
        if isinstance(acc, (int, float)) and math.isfinite(acc):
            steps.append(ev.get("step"))
            accs.append(acc)
    return {"steps": steps, "accuracy": accs}
