"""Running runs in slots (one per GPU, or N on CPU): the loop both sweep runners share.

run_in_slots asks `next_job` for a job whenever a slot is free, polls the live jobs, hands each
finished one to `job_finished`, and on Ctrl-C (or SIGTERM, see interrupts_as_keyboard) stops
the live runs and raises SweepInterrupted. The variants runner (sweep.py) and the Optuna
worker (search.py) give the two hooks.

Light module: no torch, no optuna.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runstore
from .config import ConfigError


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
    env = None if slot is None else {"CUDA_VISIBLE_DEVICES": slot}
    return runstore.launch(run_dir, detach=True, resume=resume, env=env)


def relaunch(run_dir: Path, slot: str | None):
    """Start an unfinished run again: the trainer continues from checkpoints/last.pt, or from
    the start when it never reached one. -> (process, "resumed" or "restarted")"""
    what = "resumed" if runstore.last_checkpoint(run_dir) is not None else "restarted"
    return launch_in_slot(run_dir, slot, resume=True), what


@dataclass
class Job:
    """A run in a slot: started by us (proc) or adopted from an earlier process."""

    run_dir: Path
    label: str
    slot_index: int  # into the runner's slots
    proc: Any = None  # subprocess.Popen when we started it
    started: float = field(default_factory=time.time)

    def finished(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is not None
        # Judged by the run directory: a run waiting in the queue or in a Slurm job has no
        # pid here, yet it is not over until it reaches a final state.
        return not runstore.run_info(self.run_dir).active

    def watch(self) -> None:
        """Called at every poll while the run is live (a trial reports its evaluations)."""

    def release(self) -> None:
        """Called once the job is over, finished or stopped (a trial drops its claim)."""


def stop_jobs(jobs: list[Job], echo: Callable[[str], None], wait_s: float = 60.0) -> None:
    """Ask every live run to stop (checkpoint, `stopped`) and wait for them to end."""
    runstore.stop_many([job.run_dir for job in jobs])
    deadline = time.time() + wait_s
    for job in jobs:
        while not job.finished() and time.time() < deadline:
            time.sleep(0.1)
        if not job.finished():
            runstore.stop_many([job.run_dir], kill=True)
        if job.proc is not None:
            job.proc.wait()
        echo(f"stopped {job.label} ({job.run_dir.name})")


def run_in_slots(
    slots: list[str | None],
    next_job: Callable[[list[int]], Job | None],
    job_finished: Callable[[Job], None],
    *,
    echo: Callable[[str], None],
    interrupted: str,
    poll_s: float = 0.25,
    tick: Callable[[], None] | None = None,
) -> None:
    """Fill free slots from `next_job(free slot indices)` (None: nothing to start now) until
    it has nothing left and every job has finished; `job_finished(job)` sees each one end;
    `tick()` runs at every poll (the queue executor keeps its worker alive).
    Ctrl-C stops the live runs and raises SweepInterrupted(interrupted)."""
    free = list(range(len(slots)))
    jobs: dict[int, Job] = {}
    try:
        while True:
            if tick is not None:
                tick()
            for slot_index, job in list(jobs.items()):
                job.watch()
                if job.finished():
                    del jobs[slot_index]
                    free.append(slot_index)
                    try:
                        job_finished(job)
                    finally:
                        job.release()
            free.sort()
            while free:
                job = next_job(list(free))
                if job is None:
                    break
                free.remove(job.slot_index)
                jobs[job.slot_index] = job
            if not jobs:
                return
            time.sleep(poll_s)
    except KeyboardInterrupt:
        echo(f"interrupted: stopping {len(jobs)} live run(s)")
        stop_jobs(list(jobs.values()), echo)
        for job in jobs.values():
            job.release()
        raise SweepInterrupted(interrupted) from None
