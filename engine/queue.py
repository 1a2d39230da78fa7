"""The run queue: runs wait in line and start, one GPU (or `nproc_per_node` GPUs) each, as GPUs
free up on a shared server.

    <runs_dir>/.queue/
      queue.json     {"order": [run ids], "paused": null | {"reason", "time"}, "gpus": null | ["0", "2"],
                      "cpu_slots": 1, "starting": {id: time}, "started": {id: time}}
      queue.lock     flock guarding every read-modify-write of queue.json
      worker.lock    flock held by the live worker for its lifetime (one worker per run store)
      worker.log     what the worker did, one line per decision

A queued run is an ordinary run directory whose status is `queued` and which no process owns yet;
its meta.json says `"queued": true`. The worker (`python -m vqatune.engine.queue RUNS_DIR`, started
detached on demand by `ensure_worker`, so it survives SSH) starts the head of the line when enough
GPUs are free: a GPU is free when no live run of this store holds it and NVML shows at least the
run's memory need free (its `max_memory_usage` share of the card). It pins the run with CUDA_VISIBLE_DEVICES and records the
GPU ids in meta.json (`gpus`). Without GPUs the line runs `cpu_slots` runs at a time.

Crash guard: a run that fails within CRASH_GUARD_S of its start pauses the queue with a one-line
reason, instead of burning through the rest of the line with the same mistake.

A worker killed at any moment leaves a consistent queue: a run is marked `starting` before its
process is started and moved to `started` once its launch record exists; a restarted worker that
finds a `starting` run without a launch record waits STARTUP_GRACE_S for the process to show
itself before it starts the run again, so no run is started twice.

Light module: no torch, no textual.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runstore
from .config import ConfigError
from .events import CONFIG_FILE, META_FILE, STATUS_FILE, read_json, write_json_atomic

QUEUE_DIR = ".queue"
QUEUE_FILE = "queue.json"
CRASH_GUARD_S = 60.0
STARTUP_GRACE_S = 20.0
POLL_S = 1.0
FAILED_STATES = ("failed", "crashed", "oom", "diverged")


def queue_dir(runs_dir: Path | None) -> Path:
    return (Path(runs_dir) if runs_dir else runstore.default_runs_dir()) / QUEUE_DIR


def _empty() -> dict[str, Any]:
    return {
        "order": [],
        "paused": None,
        "gpus": None,
        "cpu_slots": 1,
        "starting": {},
        "started": {},
    }


@contextlib.contextmanager
def edit(runs_dir: Path | None) -> Iterator[dict[str, Any]]:
    """queue.json under its lock: the dict yielded is written back when the block ends."""
    qdir = queue_dir(runs_dir)
    qdir.mkdir(parents=True, exist_ok=True)
    with open(qdir / "queue.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = {**_empty(), **(read_json(qdir / QUEUE_FILE) or {})}
        yield state
        write_json_atomic(qdir / QUEUE_FILE, state)


def read(runs_dir: Path | None) -> dict[str, Any]:
    return {**_empty(), **(read_json(queue_dir(runs_dir) / QUEUE_FILE) or {})}


# ----------------------------------------------------------------------------------------------
# What users do: enqueue, move, cancel, pause, resume


def enqueue(run_dir: Path, runs_dir: Path | None = None) -> int:
    """Put a freshly created run at the end of the line; returns its position (1-based)."""
    run_dir = Path(run_dir)
    meta = read_json(run_dir / META_FILE) or {}
    write_json_atomic(run_dir / META_FILE, {**meta, "queued": True, "enqueued": time.time()})
    with edit(runs_dir or run_dir.parent) as q:
        q["order"].append(run_dir.name)
        return len(q["order"])


def submit(run_dir: Path, runs_dir: Path | None = None) -> int:
    """`vqatune run --queue` and the TUI's queued Launch: put the new run in line and make sure a
    worker serves the store. Returns its position."""
    position = enqueue(run_dir, runs_dir)
    ensure_worker(runs_dir or Path(run_dir).parent)
    return position


def requeue(run_dir: Path, runs_dir: Path | None = None) -> int:
    """Put an unfinished run (stopped, crashed) back at the end of the line; the worker
    starts it again from its last checkpoint. Returns its position."""
    run_dir = Path(run_dir)
    runstore.mark_resuming(run_dir, runstore.run_info(run_dir).state)
    with edit(runs_dir or run_dir.parent) as q:  # its earlier start, if the worker missed its end
        q["started"].pop(run_dir.name, None)
    return enqueue(run_dir, runs_dir)


def _position(q: dict[str, Any], run_id: str) -> int:
    try:
        return q["order"].index(run_id)
    except ValueError:
        raise ConfigError(f"run {run_id} is not in the queue") from None


def move(runs_dir: Path | None, run_id: str, to: int) -> int:
    """Move a queued run to position `to` (1-based; past the end means last)."""
    if to < 1:
        raise ConfigError(f"--to: {to} is not a position (1 is the head of the line)")
    with edit(runs_dir) as q:
        q["order"].pop(_position(q, run_id))
        q["order"].insert(to - 1, run_id)
        return q["order"].index(run_id) + 1


def cancel(runs_dir: Path | None, run_id: str) -> None:
    """Take a run out of the line; it ends `stopped` (resume would still start it)."""
    runs_dir = Path(runs_dir) if runs_dir else runstore.default_runs_dir()
    with edit(runs_dir) as q:
        if run_id in q["starting"] or run_id in q["started"]:
            raise ConfigError(f"run {run_id} has already started: stop it with `vqatune stop`")
        q["order"].pop(_position(q, run_id))
        run_dir = runs_dir / run_id
        status = read_json(run_dir / STATUS_FILE) or {}
        now = time.time()
        write_json_atomic(
            run_dir / STATUS_FILE,
            {
                **status,
                "state": "stopped",
                "ended": now,
                "message": "cancelled in the queue before it started",
            },
        )


def pause(runs_dir: Path | None, reason: str = "paused by `vqatune queue pause`") -> None:
    with edit(runs_dir) as q:
        q["paused"] = {"reason": reason, "time": time.time()}


def resume(runs_dir: Path | None) -> None:
    with edit(runs_dir) as q:
        q["paused"] = None
    ensure_worker(runs_dir)


def set_gpus(runs_dir: Path | None, gpus: list[str] | None, cpu_slots: int | None = None) -> None:
    """Limit the worker to these GPU ids (None: every GPU NVML reports)."""
    if gpus is not None and len(set(gpus)) != len(gpus):
        raise ConfigError(f"--gpus: a GPU is given twice ({','.join(gpus)})")
    with edit(runs_dir) as q:
        q["gpus"] = gpus
        if cpu_slots is not None:
            q["cpu_slots"] = cpu_slots


@dataclass
class Entry:
    position: int | None  # 1-based place in line; None once started
    info: runstore.RunInfo
    gpus: list[str] | None
    need: int  # GPUs the run needs


def listing(runs_dir: Path | None) -> tuple[dict[str, Any], list[Entry]]:
    """The line (in order) and the runs the queue started that are still live."""
    runs_dir = Path(runs_dir) if runs_dir else runstore.default_runs_dir()
    q = read(runs_dir)
    entries = []
    for i, run_id in enumerate(q["order"]):
        if (runs_dir / run_id).is_dir():
            info = runstore.run_info(runs_dir / run_id)
            entries.append(Entry(i + 1, info, None, gpus_needed(runs_dir / run_id)))
    for run_id in [*q["starting"], *q["started"]]:
        if (runs_dir / run_id).is_dir():
            info = runstore.run_info(runs_dir / run_id)
            if info.state in ("queued", "running"):
                entries.append(Entry(None, info, info.meta.get("gpus"), gpus_needed(info.path)))
    return q, entries


def worker_alive(runs_dir: Path | None) -> bool:
    path = queue_dir(runs_dir) / "worker.lock"
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def ensure_worker(runs_dir: Path | None) -> None:
    """Start the store's worker (detached, its own session) unless one is alive. Two callers at
    once may both start one: the second fails to take worker.lock and leaves at once."""
    runs_dir = Path(runs_dir) if runs_dir else runstore.default_runs_dir()
    if worker_alive(runs_dir):
        return
    qdir = queue_dir(runs_dir)
    qdir.mkdir(parents=True, exist_ok=True)
    with open(qdir / "worker.log", "ab") as log:
        subprocess.Popen(
            [*WORKER, str(runs_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )


# The worker's command; tests may swap it, as runstore.TRAINER.
WORKER = [sys.executable, "-m", "vqatune.engine.queue"]


# ----------------------------------------------------------------------------------------------
# GPUs


def gpus_needed(run_dir: Path) -> int:
    """GPUs the run takes: none for `device = "cpu"`, else one per process (nproc_per_node)."""
    from .config import load

    try:
        cfg = load(str(Path(run_dir) / CONFIG_FILE))
    except ConfigError:
        return 1
    return 0 if cfg.device == "cpu" else max(1, int(cfg.nproc_per_node))


def memory_need(run_dir: Path, total_bytes: int) -> int:
    """Bytes the run needs free on each of its GPUs: the share of the card it may take
    (max_memory_usage). A `vqatune fit` prediction would be tighter, but costs a measuring
    subprocess per run."""
    from .config import load

    return int(load(str(Path(run_dir) / CONFIG_FILE)).max_memory_usage * total_bytes)


def held_gpus(runs_dir: Path) -> set[str]:
    """GPU ids that processes of this store's runs hold: those recorded in their meta (`gpus` by
    the queue, `gpu` by a local sweep's slot), else the first nproc_per_node devices (a run
    started without CUDA_VISIBLE_DEVICES uses cuda:0 up)."""
    held: set[str] = set()
    for info in runstore.list_runs(runs_dir):
        if info.pid is None:  # no process: neither live nor hung
            continue
        gpus = info.meta.get("gpus")
        if gpus is None and info.meta.get("gpu") is not None:
            gpus = [info.meta["gpu"]]
        if gpus is None:
            gpus = [str(i) for i in range(gpus_needed(info.path))]
        held.update(str(g) for g in gpus)
    return held


def free_gpus(run_dir: Path, devices: list, allowed: list[str] | None, held: set[str]) -> list[str]:
    """The GPU ids (of NVML's `devices`) the run may start on now."""
    by_id = {str(d.index): d for d in devices}
    free = []
    for g in allowed or by_id:
        dev = by_id.get(g)
        if dev is None or g in held:
            continue
        if dev.memory_total - dev.memory_used >= memory_need(run_dir, dev.memory_total):
            free.append(g)
    return free


# ----------------------------------------------------------------------------------------------
# The worker


class Worker:
    """One pass (`tick`) starts what can start, then notices what the started runs did."""

    def __init__(self, runs_dir: Path, log: Callable[[str], None] = print, monitor=None) -> None:
        from .gpu import GPUMonitor

        self.runs_dir = Path(runs_dir)
        self.log = log
        self.monitor = monitor or GPUMonitor()

    def tick(self) -> bool:
        """Returns whether there is anything left to do (a line, or runs to watch)."""
        with edit(self.runs_dir) as q:
            self._settle(q)
            self._guard(q)
            if not q["paused"]:
                self._start_what_fits(q)
            return bool(q["order"] or q["starting"] or q["started"]) and not (
                q["paused"] and not (q["starting"] or q["started"])
            )

    def _settle(self, q: dict[str, Any]) -> None:
        """Drop runs that left the line by other means; confirm or retry `starting` ones."""
        for run_id in list(q["order"]):
            info = self._info(run_id)
            if info is None or info.state != "queued" or info.pid is not None:
                q["order"].remove(run_id)
                self.log(f"{run_id}: left the line ({info.state if info else 'deleted'})")
        for run_id, since in list(q["starting"].items()):
            run_dir = self.runs_dir / run_id
            if (run_dir / runstore.LAUNCH_FILE).exists():
                q["started"][run_id] = q["starting"].pop(run_id)
            elif time.time() - since > STARTUP_GRACE_S:
                # The worker died between marking and starting it: the run never started.
                del q["starting"][run_id]
                q["order"].insert(0, run_id)
                self.log(f"{run_id}: its start was interrupted; back at the head of the line")

    def _guard(self, q: dict[str, Any]) -> None:
        for run_id, since in list(q["started"].items()):
            info = self._info(run_id)
            if info is None:
                del q["started"][run_id]
                continue
            if info.state in ("queued", "running"):
                continue
            del q["started"][run_id]
            lasted = (info.ended or time.time()) - since
            if info.state in FAILED_STATES and lasted < CRASH_GUARD_S:
                reason = (
                    f"run {run_id} ended {info.state} {lasted:.0f} s after it started"
                    f" ({info.message or 'see its train.log'})"
                )
                q["paused"] = {"reason": reason, "time": time.time()}
                self.log(f"queue paused: {reason}")
            else:
                self.log(f"{run_id}: ended {info.state}")

    def _start_what_fits(self, q: dict[str, Any]) -> None:
        if not q["order"]:
            return
        devices = self.monitor.gpus()
        held = held_gpus(self.runs_dir) if devices else set()
        while q["order"]:
            run_id = q["order"][0]
            run_dir = self.runs_dir / run_id
            if not devices:  # no GPUs: CPU slots
                live = len(q["starting"]) + len(q["started"])
                if live >= max(1, int(q.get("cpu_slots") or 1)):
                    return
                gpus: list[str] | None = None
            elif (need := gpus_needed(run_dir)) == 0:  # a CPU run beside the GPU runs: it sees
                gpus = []  # no GPU at all (CUDA_VISIBLE_DEVICES empty)
            else:
                try:
                    free = free_gpus(run_dir, devices, q["gpus"], held)
                except ConfigError as e:  # its config no longer loads: it cannot run
                    q["order"].pop(0)
                    _mark_failed(run_dir, str(e))  # out of the line: nobody waits for it
                    self.log(f"{run_id}: not started: {e}")
                    continue
                if len(free) < need:
                    return
                gpus = free[:need]
                held.update(gpus)
            q["order"].pop(0)
            q["starting"][run_id] = time.time()
            # queue.json says `starting` before the process exists (see the module docstring).
            write_json_atomic(self.runs_dir / QUEUE_DIR / QUEUE_FILE, q)
            try:
                self._launch(run_dir, gpus)
            except ConfigError as e:  # it cannot start: a failure at second 0 (crash guard)
                _mark_failed(run_dir, str(e))
            q["started"][run_id] = q["starting"].pop(run_id)

    def _launch(self, run_dir: Path, gpus: list[str] | None) -> None:
        """gpus: the GPU ids to pin, [] for none visible, None on a machine without GPUs."""
        meta = read_json(run_dir / META_FILE) or {}
        write_json_atomic(run_dir / META_FILE, {**meta, "gpus": gpus or None})
        env = {"CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus is not None else None
        # A run put back in line (a sweep's interrupted trial) continues from its checkpoint.
        resume = runstore.last_checkpoint(run_dir) is not None
        runstore.launch(run_dir, detach=True, resume=resume, env=env)
        where = f"GPU {','.join(gpus)}" if gpus else "CPU"
        self.log(f"{run_dir.name}: started on {where}")

    def _info(self, run_id: str) -> runstore.RunInfo | None:
        run_dir = self.runs_dir / run_id
        return runstore.run_info(run_dir) if run_dir.is_dir() else None


def _mark_failed(run_dir: Path, message: str) -> None:
    status = read_json(run_dir / STATUS_FILE) or {}
    write_json_atomic(
        run_dir / STATUS_FILE,
        {**status, "state": "failed", "ended": time.time(), "message": message},
    )


def work(runs_dir: Path, poll_s: float = POLL_S) -> None:
    """The worker's life: hold worker.lock, tick until nothing is left, leave."""
    qdir = queue_dir(runs_dir)
    qdir.mkdir(parents=True, exist_ok=True)
    with open(qdir / "worker.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another worker serves this store

        def log(line: str) -> None:
            print(time.strftime("%Y-%m-%d %H:%M:%S"), line, flush=True)

        write_json_atomic(qdir / "worker.json", {"pid": os.getpid(), "started": time.time()})
        log(f"worker {os.getpid()} serving {runs_dir}")
        worker = Worker(runs_dir, log)
        while worker.tick():
            time.sleep(poll_s)
        log("nothing left to do; worker leaves")


def describe(q: dict[str, Any]) -> str:
    """One line on the line's state, for `vqatune queue` and the TUI."""
    parts = [f"{len(q['order'])} waiting", f"{len(q['starting']) + len(q['started'])} started"]
    if q["gpus"]:
        parts.append(f"GPUs {','.join(q['gpus'])}")
    if q["paused"]:
        parts.append(f"PAUSED: {q['paused']['reason']}")
    return " · ".join(parts)


def as_json(q: dict[str, Any], entries: list[Entry]) -> dict[str, Any]:
    return {
        "paused": q["paused"],
        "gpus": q["gpus"],
        "runs": [
            {
                "position": e.position,
                "id": e.info.id,
                "state": e.info.state,
                "gpus": e.gpus,
                "gpus_needed": e.need,
                "sweep": e.info.meta.get("sweep"),
            }
            for e in entries
        ],
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vqatune.engine.queue RUNS_DIR", file=sys.stderr)
        return 2
    work(Path(args[0]).absolute(), float(os.environ.get("VQATUNE_QUEUE_POLL_S", POLL_S)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
