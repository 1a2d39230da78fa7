"""Where a sweep's runs run: `--executor local` (the sweep's own slots on this machine, one run
per GPU), `queue` (the run store's queue, engine/queue.py, shared fairly with single runs) or
`slurm` (Slurm jobs through submitit, engine/slurm.py; a variants sweep as one job array).

The sweep runners (sweep.py, search.py) create each run directory and ask the executor to start
it (or start it again), then follow it through the run directory alone: slots.Job.finished is
`not run_info(...).active`, which holds for a local process, a run waiting in the queue, and a
Slurm job alike. A slot here is a place in the sweep's window of runs in flight: with the queue
or Slurm it pins nothing; `--parallel` says how many trials are in flight at once.

Light module: no torch, no optuna (submitit only where a job is submitted).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import queue, runstore, slurm
from .config import ConfigError
from .slots import describe_slots, launch_in_slot, make_slots, relaunch

KINDS = ("local", "queue", "slurm")


class LocalExecutor:
    """The sweep's own slots: one run on each GPU id, or `parallel` runs on the CPU."""

    kind = "local"
    config_changes: dict[str, Any] = {}

    def __init__(self, slots: list[str | None]):
        self.slots = slots  # make_slots: GPU ids, or None for each CPU slot

    def window(self, pending: int | None) -> list[str | None]:
        """The slots run_in_slots fills, given how many runs a variants sweep has left
        (None: a search, which asks for its trials one at a time)."""
        return self.slots

    def describe(self, slots: list[str | None]) -> str:
        return describe_slots(slots)

    def where(self, slot: str | None) -> str:
        return f" on GPU {slot}" if slot is not None else ""

    def start(self, run_dir: Path, slot: str | None) -> tuple[Any, str, str]:
        """-> (the process when one was started here, what happened and where, for the
        sweep's log: "started", " on GPU 1")"""
        return launch_in_slot(run_dir, slot, resume=False), "started", self.where(slot)

    def restart(self, run_dir: Path, slot: str | None) -> tuple[Any, str, str]:
        return *relaunch(run_dir, slot), self.where(slot)

    def tick(self, echo: Callable[[str], None]) -> None:
        """Called at every poll of the sweep's loop."""


class QueueExecutor(LocalExecutor):
    """Each run goes into the store's queue; its worker starts it when a GPU is free. Up to
    `parallel` runs of the sweep are in the line at once (a variants sweep: all of them)."""

    kind = "queue"

    def __init__(self, parallel: int | None, runs_dir: Path):
        if parallel is not None and parallel < 1:
            raise ConfigError(f"--parallel must be >= 1, got {parallel}")
        self.parallel = parallel
        self.runs_dir = Path(runs_dir)
        self.paused_said: str | None = None

    def window(self, pending: int | None) -> list[str | None]:
        return [None] * max(1, self.parallel or pending or 1)

    def describe(self, slots: list[str | None]) -> str:
        return f"through the run queue, up to {len(slots)} in line at once"

    def where(self, slot: str | None) -> str:
        return ""

    def start(self, run_dir: Path, slot: str | None) -> tuple[Any, str, str]:
        position = queue.enqueue(run_dir, self.runs_dir)
        queue.ensure_worker(self.runs_dir)
        return None, "queued", f" (position {position} in the queue)"

    def restart(self, run_dir: Path, slot: str | None) -> tuple[Any, str, str]:
        position = queue.requeue(run_dir, self.runs_dir)
        queue.ensure_worker(self.runs_dir)
        return None, "requeued", f" (position {position} in the queue)"

    def tick(self, echo: Callable[[str], None]) -> None:
        # A worker that died (killed, a reboot) is started again: the sweep waits on its line.
        queue.ensure_worker(self.runs_dir)
        paused = queue.read(self.runs_dir)["paused"]
        reason = paused["reason"] if paused else None
        if reason and reason != self.paused_said:
            echo(f"the queue is paused ({reason}): `vqatune queue resume` goes on")
        self.paused_said = reason


class SlurmExecutor(LocalExecutor):
    """Each run is a Slurm job; a variants sweep is submitted as one job array (`parallel`:
    the array's limit of tasks running at once), a search submits up to `parallel` trials as
    separate jobs and asks for the next when one ends."""

    kind = "slurm"

    def __init__(self, parallel: int | None, options: slurm.Options, folder: Path):
        if parallel is not None and parallel < 1:
            raise ConfigError(f"--parallel must be >= 1, got {parallel}")
        self.parallel = parallel
        self.options = options
        self.folder = Path(folder)  # the array's submitit folder (a sweep directory's slurm/)
        # What `run --slurm` sets from --gpus-per-node and --nodes, for every run of the sweep.
        self.config_changes = {"nproc_per_node": options.gpus_per_node, "nnodes": options.nodes}

    def window(self, pending: int | None) -> list[str | None]:
        # An array is followed whole: Slurm itself holds it to `parallel` tasks at once.
        return [None] * max(1, pending if pending is not None else self.parallel or 1)

    def describe(self, slots: list[str | None]) -> str:
        limit = f", {self.parallel} at once" if self.parallel else ""
        return f"on Slurm, {len(slots)} job{'s' * (len(slots) > 1)} followed{limit}"

    def where(self, slot: str | None) -> str:
        return ""

    def start(self, run_dir: Path, slot: str | None) -> tuple[Any, str, str]:
        return None, "submitted", f" (Slurm job {slurm.submit(run_dir, self.options)})"

    def restart(self, run_dir: Path, slot: str | None) -> tuple[Any, str, str]:
        runstore.mark_resuming(run_dir, runstore.run_info(run_dir).state)
        job_id = slurm.submit(run_dir, self.options, resume=True)
        return None, "resubmitted", f" (Slurm job {job_id})"

    def submit_array(self, run_dirs: list[Path]) -> list[str]:
        """All of a variants sweep's runs to start, as one job array -> their job ids."""
        return slurm.submit_array(run_dirs, self.options, self.folder, self.parallel)


def make_executor(
    kind: str,
    *,
    parallel: int | None,
    gpus: list[str] | None,
    runs_dir: Path,
    slurm_options: slurm.Options | None = None,
    sweep_dir: Path | None = None,
):
    """The executor `--executor KIND` names, its options checked (ConfigError)."""
    if kind not in KINDS:
        raise ConfigError(f"--executor: {kind!r} is not one of {', '.join(KINDS)}")
    if kind != "local" and gpus:
        raise ConfigError(
            f"--gpus: the {kind} executor picks the GPUs"
            + (" (limit the queue's with `vqatune queue --gpus`)" if kind == "queue" else "")
        )
    if kind == "local":
        return LocalExecutor(make_slots(parallel, gpus))
    if kind == "queue":
        return QueueExecutor(parallel, runs_dir)
    return SlurmExecutor(
        parallel,
        slurm_options or slurm.Options(),
        Path(sweep_dir or runs_dir) / slurm.SLURM_DIR,
    )
