"""Variants sweeps: every planned run of a plan (plans.py), in slots (slots.py), kept in the run
store and the sweep directory (sweepstore.py). Re-running the same plan resumes its sweep:
finished runs are kept, unfinished ones resumed, runs still going are waited for.

This module is also the sweep API the CLI and the TUI call (`vqatune sweep`, `sweeps`,
`plans`, `compare --sweep`): the names below the runner are imported for them.

Light module: no torch, no optuna.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import runstore
from .compare import compare_sweep as compare
from .events import META_FILE, read_json
from .executors import LocalExecutor, SlurmExecutor
from .plans import Plan, PlannedRun, expand, list_plans, load_plan, make_sweep_id
from .slots import (
    Job,
    SweepInterrupted,
    interrupts_as_keyboard,
    make_slots,
    run_in_slots,
)
from .sweepstore import (
    KEPT_STATES,
    Sweep,
    create_sweep_run,
    find_sweep,
    is_active,
    open_sweep,
    overview,
    sweep_lock,
    sweep_runs,
    update_sweep,
)

# What `vqatune sweep | sweeps | plans | compare --sweep` call through this module.
__all__ = [
    "SweepInterrupted",
    "SweepResult",
    "compare",
    "expand",
    "find_sweep",
    "interrupts_as_keyboard",
    "is_active",
    "list_plans",
    "load_plan",
    "make_slots",
    "make_sweep_id",
    "open_sweep",
    "overview",
    "run_variants",
]


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


def _still_running(item: SweepItem) -> bool:
    return item.state in ("running", "queued")


class VariantsRunner:
    """The two hooks of run_in_slots for a variants sweep, and what they count."""

    def __init__(
        self,
        sweep: Sweep,
        plan: Plan,
        items: list[SweepItem],
        executor: LocalExecutor,
        echo: Callable[[str], None],
    ):
        self.sweep, self.plan, self.executor, self.echo = sweep, plan, executor, echo
        self.total = len(items)
        self.states = {it.planned.key: it.state for it in items}
        self.run_ids = {it.planned.key: it.run_dir.name for it in items if it.run_dir}
        self.kept = sum(it.state in KEPT_STATES for it in items)
        self.done = self.kept
        self.live = 0
        # Runs still going from an earlier invocation first, on the GPU they hold.
        self.pending = sorted(
            (it for it in items if it.state not in KEPT_STATES),
            key=lambda it: not _still_running(it),
        )
        self.items: dict[Path, SweepItem] = {}  # by run directory, for job_finished
        self.slots = executor.window(len(self.pending))
        self.submitted: dict[Path, str] = {}  # runs of a job array already submitted: what

    def pick_slot(self, item: SweepItem, free: list[int]) -> int:
        if item.run_dir is not None:
            held = read_json(item.run_dir / META_FILE) or {}
            for i in free:
                if self.slots[i] is not None and self.slots[i] == held.get("gpu"):
                    return i
        return min(free)

    def next_job(self, free: list[int]) -> Job | None:
        if not self.pending:
            return None
        item = self.pending.pop(0)
        slot_index = self.pick_slot(item, free)
        slot = self.slots[slot_index]
        p = item.planned
        if item.run_dir in self.submitted:
            proc, what, where = None, "submitted", self.submitted.pop(item.run_dir)
        elif item.run_dir is None:
            self.create(item, slot)
            proc, what, where = self.executor.start(item.run_dir, slot)
        elif _still_running(item) and runstore.run_info(item.run_dir).active:
            # still going from an earlier invocation
            proc, what, where = None, "waiting for", self.executor.where(slot)
        else:
            proc, what, where = self.executor.restart(item.run_dir, slot)
        self.live += 1
        self.echo(
            f"[{self.done + self.live}/{self.total}] {what} {p.key}: run {item.run_dir.name}{where}"
        )
        self.items[item.run_dir] = item
        return Job(item.run_dir, p.key, slot_index, proc)

    def create(self, item: SweepItem, slot: str | None) -> None:
        p = item.planned
        changes = self.executor.config_changes
        item.run_dir = create_sweep_run(
            self.sweep,
            p.config.replace(**changes) if changes else p.config,
            name=f"{self.plan.name}-{p.variant}-s{p.seed}",
            overrides={**p.overrides, **changes},
            tags={"sweep_key": p.key, "variant": p.variant, "seed": p.seed, "gpu": slot},
        )
        self.run_ids[p.key] = item.run_dir.name

    def submit_array(self) -> None:
        """Slurm: every run left to start, new or unfinished, goes out in one job array."""
        batch = [
            it
            for it in self.pending
            if not (_still_running(it) and runstore.run_info(it.run_dir).active)
        ]
        for it in batch:
            if it.run_dir is None:
                self.create(it, None)
            else:
                runstore.mark_resuming(it.run_dir, it.state)
        ids = self.executor.submit_array([it.run_dir for it in batch])
        for it, job_id in zip(batch, ids, strict=True):
            self.submitted[it.run_dir] = f" (Slurm job {job_id})"

    def job_finished(self, job: Job) -> None:
        item = self.items.pop(job.run_dir)
        info = runstore.run_info(job.run_dir)
        self.states[item.planned.key] = info.state
        self.live -= 1
        self.done += 1
        acc = f"{info.best_accuracy:.4f}" if isinstance(info.best_accuracy, (int, float)) else "-"
        self.echo(
            f"[{self.done}/{self.total}] {info.state} {item.planned.key}: "
            f"best accuracy {acc} ({time.time() - job.started:.0f} s)"
        )


def run_variants(
    sweep: Sweep,
    plan: Plan,
    *,
    slots: list[str | None] | None = None,
    executor: LocalExecutor | None = None,
    echo: Callable[[str], None] = print,
    poll_s: float = 0.25,
) -> SweepResult:
    """Run every planned run that has not finished; keep finished ones, resume unfinished ones,
    wait for ones still running from an earlier invocation. Ctrl-C stops the live runs.
    executor: where the runs run (executors.py); `slots` alone means local slots."""
    executor = executor or LocalExecutor(slots or [None])
    planned = expand(plan)
    with sweep_lock(sweep):
        runner = VariantsRunner(sweep, plan, match_runs(sweep, planned), executor, echo)
        # Announced once the runner is built: a signal after this line is run_in_slots' own.
        echo(
            f"sweep {sweep.id}: {plan.title} on {plan.base} "
            f"({executor.describe(runner.slots)}; runs in {sweep.runs_dir})"
        )
        if runner.kept:
            echo(f"sweep {sweep.id}: {runner.kept} of {runner.total} runs already finished, kept")
        if isinstance(executor, SlurmExecutor):
            runner.submit_array()
        run_in_slots(
            runner.slots,
            runner.next_job,
            runner.job_finished,
            echo=echo,
            interrupted=f"sweep {sweep.id} interrupted; run the same command again to resume it",
            poll_s=poll_s,
            tick=lambda: executor.tick(echo),
        )
    update_sweep(sweep, finished=time.time())
    return SweepResult(sweep, runner.states, runner.run_ids, runner.kept)
