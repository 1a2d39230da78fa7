"""The run store: run directories under runs/, detached training processes, derived states.

    runs/<id>/                 id = YYYYmmdd-HHMMSS-<name>-<4 hex>: sorts by time, unique
      config.toml meta.json status.json metrics.jsonl train.log checkpoints/ summary.json
                               (see events.py), plus
      launch.json              pid and start time of the process `launch` started, so that a
                               process that dies before writing status.json reads as crashed

A status file is never trusted blindly: `running` needs the recorded pid alive, its process
start time equal to the recorded one (pids are reused) and a heartbeat younger than
HEARTBEAT_TIMEOUT_S; a dead process without a final state is `crashed`.

Light module: no torch, no textual.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, dumps
from .events import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FINAL_STATES,
    LOG_FILE,
    META_FILE,
    SLURM_STATES,
    STATUS_FILE,
    SUMMARY_FILE,
    read_json,
    write_json_atomic,
)

LAUNCH_FILE = "launch.json"
HEARTBEAT_TIMEOUT_S = 30.0
# Recorded and measured process start times come from the same clock; allow float noise only.
START_TIME_TOLERANCE_S = 1.0
# The command that trains a run directory; tests swap in a fake trainer. A sweep's scheduler
# (engine/sweeper.py) is its own process: it gets its launcher's command in TRAINER_ENV.
TRAINER_ENV = "VQATUNE_TRAINER"
TRAINER = (
    shlex.split(os.environ[TRAINER_ENV])
    if os.environ.get(TRAINER_ENV)
    else [sys.executable, "-m", "vqatune.engine.train"]
)

_ID_RE = re.compile(r"^(\d{8}-\d{6})-(.+)-([0-9a-f]{4})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def default_runs_dir() -> Path:
    return Path(os.environ.get("VQATUNE_RUNS") or "runs").expanduser().absolute()


def sanitize_name(name: str) -> str:
    """A run name as it may appear in a directory name: no separators, no dots at the ends."""
    safe = _UNSAFE.sub("-", name).strip("-.")[:48].strip("-.")
    return safe or "run"


def name_from_id(run_id: str) -> str:
    m = _ID_RE.match(run_id)
    return m.group(2) if m else run_id


# ----------------------------------------------------------------------------------------------
# Creating and launching


def create_run(
    cfg: Config,
    *,
    source: str = "",
    name: str = "",
    runs_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    argv: Iterable[str] | None = None,
    output: str | Path | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Path:
    """Write a new run directory (config.toml, meta.json, status.json queued) atomically.

    The directory is built under a hidden temporary name and renamed into place, so a reader
    never sees half a run. `output` names the directory explicitly (the guide's --output); it
    must not exist or be empty. `tags` are extra meta.json fields (a sweep's keys, say); they
    cannot replace the store's own fields.
    """
    label = name or cfg.name or (Path(source).stem if source else "") or "run"
    safe = sanitize_name(label)
    if output:
        final = Path(output).expanduser().absolute()
        if final.exists() and (not final.is_dir() or any(final.iterdir())):
            raise ConfigError(f"--output {output}: exists and is not an empty directory")
        parent = final.parent
    else:
        parent = Path(runs_dir).expanduser().absolute() if runs_dir else default_runs_dir()
        final = None
    tmp = parent / f".tmp-{safe}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:
        raise ConfigError(f"{parent}: cannot create a run directory there: {e.strerror}") from None
    try:
        created = time.time()
        (tmp / CONFIG_FILE).write_text(dumps(cfg, full=True), encoding="utf-8")
        meta = {
            "name": label,
            "source": source,
            "created": created,
            "argv": list(argv) if argv is not None else [],
            "overrides": dict(overrides or {}),
            "host": socket.gethostname(),
        }
        while True:
            if final is None:
                stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(created))
                run_id = f"{stamp}-{safe}-{_id_suffix()}"
                target = parent / run_id
            else:
                run_id, target = final.name, final
            write_json_atomic(tmp / META_FILE, {**(tags or {}), "id": run_id, **meta})
            write_json_atomic(tmp / STATUS_FILE, {"state": "queued", "created": created})
            try:
                # rename() refuses a non-empty target, and every finished run dir has files,
                # so two creators can never end up in one directory.
                os.rename(tmp, target)
                return target
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise ConfigError(
                        f"{target}: cannot create the run directory: {e.strerror}"
                    ) from None
                if final is not None:  # another run took the --output directory meanwhile
                    raise ConfigError(
                        f"--output {output}: exists and is not an empty directory"
                    ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _id_suffix() -> str:
    return secrets.token_hex(2)


def train_command(run_dir: Path, resume: bool = False) -> list[str]:
    """The trainer, or torchrun starting one per process when the run's config asks for more
    than one (nproc_per_node x nnodes; see engine/distributed.py)."""
    from . import distributed
    from .config import load

    cfg = load(str(Path(run_dir) / CONFIG_FILE))
    if distributed.world_size_of(cfg) > 1:
        return distributed.torchrun_command(run_dir, cfg, resume)
    return [*TRAINER, str(run_dir), *(["--resume"] if resume else [])]


def launch(
    run_dir: Path, *, detach: bool, resume: bool = False, env: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """Start the training process for run_dir; its output goes to train.log.

    Always in a new session with stdin from /dev/null: no controlling terminal, so neither
    Ctrl-C, SIGHUP nor a closed SSH connection reaches it; only signals sent to its pid do
    (`vqatune stop`, a follower's Ctrl-C). `detach` only records whether the launcher follows
    it (launch.json). `env` adds variables to the child's environment (a GPU pin).
    """
    import psutil

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(run_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            train_command(run_dir, resume),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=os.getcwd(),
        )
    try:
        start_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:  # already gone: run_info will call it crashed
        start_time = None
    write_json_atomic(
        run_dir / LAUNCH_FILE,
        {
            "pid": proc.pid,
            "pid_start_time": start_time,
            "time": time.time(),
            "resume": resume,
            "detached": detach,
            "host": socket.gethostname(),
        },
    )
    from .alerts import start_watcher  # ends, thresholds, silence: see engine/alerts.py

    start_watcher(run_dir)
    return proc


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass
class RunInfo:
    id: str
    path: Path
    name: str
    source: str
    state: str
    created: float | None
    started: float | None
    ended: float | None
    step: int | None
    total_steps: int | None
    epoch: int | None
    epochs: int | None
    best_accuracy: float | None
    last_accuracy: float | None
    message: str | None
    pid: int | None
    status: dict = field(default_factory=dict, repr=False)
    meta: dict = field(default_factory=dict, repr=False)
    summary: dict | None = field(default=None, repr=False)

    @property
    def duration_s(self) -> float | None:
        if self.started is None:
            return None
        end = self.ended
        if end is None:
            end = time.time() if self.state == "running" else self.status.get("heartbeat")
        return None if end is None else max(0.0, float(end) - float(self.started))

    @property
    def live(self) -> bool:
        """A process is working on this run (starting or training). A hung process (crashed
        with a pid) is not live, but still has to be stopped before the run can resume."""
        return self.state in ("running", "queued") and self.pid is not None

    @property
    def active(self) -> bool:
        """The run is not over: a live local process, or no local process yet or ever (it
        waits in the store's queue, or its Slurm job is pending or running elsewhere). A
        follower or a sweep waits for an active run; an inactive one will not change unless
        resumed."""
        if self.live:
            return True
        waiting = self.meta.get("slurm") or (self.meta.get("queued") and self.pid is None)
        return self.state in ("running", "queued") and bool(waiting)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "name": self.name,
            "source": self.source,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
            "duration_s": self.duration_s,
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "best_accuracy": self.best_accuracy,
            "last_accuracy": self.last_accuracy,
            "message": self.message,
            "pid": self.pid,
        }


def process_matches(pid: Any, start_time: Any) -> bool:
    """The process `pid` is alive and is the one that started at `start_time` (pid reuse)."""
    import psutil

    if not isinstance(pid, int) or pid <= 0 or not isinstance(start_time, (int, float)):
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(proc.create_time() - float(start_time)) < START_TIME_TOLERANCE_S
    except psutil.Error:
        return False


def derive_state(
    status: dict | None,
    launch_record: dict | None,
    *,
    same_host: bool = True,
    now: float | None = None,
) -> tuple[str, str | None, int | None]:
    """(state, message, live pid) from what the files say and what the OS says."""
    now = time.time() if now is None else now
    status = status or {}
    written = status.get("state")
    if written in FINAL_STATES:
        return written, status.get("message"), None
    launched = launch_record or {}
    if written == "running":
        pid, start = status.get("pid"), status.get("pid_start_time")
        heartbeat = status.get("heartbeat")
        fresh = isinstance(heartbeat, (int, float)) and now - heartbeat < HEARTBEAT_TIMEOUT_S
        alive = process_matches(pid, start) if same_host else True
        if alive and fresh:
            return "running", status.get("message"), pid
        if alive:  # hung: crashed, but its pid is kept so that `stop --kill` can end it
            silent = f"for {now - heartbeat:.0f} s " if isinstance(heartbeat, (int, float)) else ""
            return "crashed", f"no heartbeat {silent}(pid {pid} is alive but silent)", pid
        return "crashed", f"the training process (pid {pid}) ended without an end record", None
    # queued (or no/garbled status): is a launched process still starting up?
    pid, start = launched.get("pid"), launched.get("pid_start_time")
    if pid is None:
        if written == "queued":
            return "queued", None, None
        return "crashed", f"{STATUS_FILE} is missing or unreadable", None
    if not same_host or process_matches(pid, start):
        return "queued", "starting", pid
    return (
        "crashed",
        f"the training process (pid {pid}) exited before it started training; see {LOG_FILE}",
        None,
    )


def run_info(run_dir: Path) -> RunInfo:
    run_dir = Path(run_dir)
    status = read_json(run_dir / STATUS_FILE)
    meta = read_json(run_dir / META_FILE) or {}
    launch_record = read_json(run_dir / LAUNCH_FILE)
    host = meta.get("host")
    if meta.get("slurm") and (status or {}).get("state") not in FINAL_STATES:
        # A Slurm run is judged by its job and heartbeat, never by a pid of this host.
        from . import slurm

        state, message = slurm.derive_state(status or {}, meta["slurm"], HEARTBEAT_TIMEOUT_S)
        pid = None
    else:
        state, message, pid = derive_state(
            status, launch_record, same_host=not host or host == socket.gethostname()
        )
    status = status or {}
    summary = read_json(run_dir / SUMMARY_FILE) if state in FINAL_STATES or pid is None else None
    if state not in FINAL_STATES and summary and summary.get("state") in FINAL_STATES:
        # Final records win: the trainer writes summary.json just before its last status, so a
        # missing, unreadable or stale status.json (killed in between) must not read as crashed.
        state, message = summary["state"], summary.get("message")
        status = {**status, **_status_from_summary(summary), "state": state}
    elif state not in FINAL_STATES:
        summary = None
    best = status.get("best_accuracy")
    last = status.get("last_accuracy")
    if summary:
        best = summary.get("best_accuracy", best)
        last = summary.get("final_accuracy", last)
    return RunInfo(
        id=run_dir.name,
        path=run_dir,
        name=str(meta.get("name") or name_from_id(run_dir.name)),
        source=str(meta.get("source") or ""),
        state=state,
        created=meta.get("created"),
        started=status.get("started"),
        ended=status.get("ended"),
        step=status.get("step"),
        total_steps=status.get("total_steps"),
        epoch=status.get("epoch"),
        epochs=status.get("epochs"),
        best_accuracy=best,
        last_accuracy=last,
        message=message,
        pid=pid,
        status=status,
        meta=meta,
        summary=summary,
    )


def _status_from_summary(summary: dict) -> dict:
    """The status fields a summary.json also records (the run's final progress)."""
    fields = ("step", "total_steps", "epoch", "epochs", "best_accuracy")
    return {
        **{k: summary[k] for k in fields if k in summary},
        "last_accuracy": summary.get("final_accuracy"),
    }


def _run_dirs(runs_dir: Path) -> list[Path]:
    try:
        entries = list(os.scandir(runs_dir))
    except FileNotFoundError:
        return []
    return sorted(
        Path(e.path)
        for e in entries
        if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
    )


def list_runs(runs_dir: Path | None = None) -> list[RunInfo]:
    """Every run in the store, oldest first (ids sort by time)."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    return [
        run_info(d)
        for d in _run_dirs(runs_dir)
        if (d / STATUS_FILE).exists() or (d / CONFIG_FILE).exists()
    ]


def find_run(query: str, runs_dir: Path | None = None) -> Path:
    """A run by id, unique id prefix, name (unique), or the path of a run directory."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    if not query:
        raise ConfigError("no run given")
    as_path = Path(query).expanduser()
    if ("/" in query or query.startswith(".")) and (as_path / CONFIG_FILE).is_file():
        return as_path.absolute()
    ids = [d.name for d in _run_dirs(runs_dir)]
    if query in ids:
        return runs_dir / query
    matches = [i for i in ids if i.startswith(query)]
    if not matches:
        safe = sanitize_name(query)
        matches = [i for i in ids if name_from_id(i) == safe]
    if len(matches) == 1:
        return runs_dir / matches[0]
    if matches:
        shown = ", ".join(matches[-5:])
        raise ConfigError(f"run {query!r} is ambiguous: {len(matches)} runs match ({shown})")
    if not runs_dir.is_dir():
        raise ConfigError(f"no run {query!r}: {runs_dir} does not exist")
    raise ConfigError(f"no run {query!r} in {runs_dir}")


def last_checkpoint(run_dir: Path) -> Path | None:
    path = Path(run_dir) / CHECKPOINT_DIR / "last.pt"
    return path if path.is_file() else None


# ----------------------------------------------------------------------------------------------
# Stopping


def stop(run_dir: Path, kill: bool = False, wait_s: float = 0.0) -> RunInfo:
    """Ask the run's process to stop: SIGTERM (the trainer finishes the step, checkpoints and
    ends as `stopped`) or, with kill, SIGKILL to its process group. Waits up to wait_s for the
    process to end (always a few seconds after SIGKILL); a process that ended without an end
    record is recorded as `stopped`."""
    run_dir = Path(run_dir)
    info = run_info(run_dir)
    if _cancellable_job(info):
        from . import slurm

        slurm.cancel(info.meta["slurm"], kill=kill)
        return run_info(run_dir)
    if info.active and info.pid is None:  # waiting in the queue: take it out of the line
        from . import queue

        queue.cancel(run_dir.parent, run_dir.name)
        return run_info(run_dir)
    if info.pid is None:
        raise ConfigError(f"run {info.id} is not running (state: {info.state})")
    pid = info.pid
    try:
        if kill:
            # A detached trainer leads its own process group: take its data workers with it.
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return run_info(run_dir)
    deadline = time.time() + max(wait_s, 5.0 if kill else 0.0)
    start = (
        (read_json(run_dir / LAUNCH_FILE) or {}).get("pid_start_time")
        if info.status.get("state") == "queued"
        else info.status.get("pid_start_time")
    )
    while process_matches(pid, start) and time.time() < deadline:
        time.sleep(0.05)
    if not process_matches(pid, start):
        # Ended without an end record (killed, or SIGTERM before the trainer's handler was
        # in place): it was asked to stop, so it is `stopped`, not `crashed`.
        status = read_json(run_dir / STATUS_FILE) or {}
        if status.get("state") not in FINAL_STATES:
            now = time.time()
            write_json_atomic(
                run_dir / STATUS_FILE,
                {
                    **status,
                    "state": "stopped",
                    "ended": now,
                    "heartbeat": now,
                    "message": "killed by `vqatune stop --kill`"
                    if kill
                    else "ended by SIGTERM without an end record (no final checkpoint)",
                },
            )
    return run_info(run_dir)


def _cancellable_job(info: RunInfo) -> bool:
    return bool(info.meta.get("slurm")) and info.state in ("queued", "running", "crashed")


def stop_many(run_dirs: Iterable[Path], kill: bool = False) -> None:
    """Ask several runs to stop at once (an interrupted sweep): the Slurm ones with one scancel
    (a job array's tasks together), the others one by one as `stop` does. Runs that ended
    meanwhile are left alone."""
    jobs = []
    for run_dir in run_dirs:
        info = run_info(run_dir)
        if _cancellable_job(info):
            jobs.append(info.meta["slurm"])
            continue
        with contextlib.suppress(ConfigError, OSError):
            stop(run_dir, kill=kill)
    if jobs:
        from . import slurm

        with contextlib.suppress(ConfigError):  # a job that ended meanwhile
            slurm.cancel_many(jobs, kill=kill)


# ----------------------------------------------------------------------------------------------
# Resuming

RESUMABLE_STATES = ("stopped", "crashed", "queued", *SLURM_STATES)


def mark_resuming(run_dir: Path, was: str) -> None:
    """No process owns the run now and one is about to be started (here, by the queue or by
    Slurm). Mark it queued, so that it reads `queued` (starting) and then `running` rather than
    its old state while the trainer starts; the summary of the earlier process no longer
    describes the run, and the earlier launch record no longer names its process."""
    run_dir = Path(run_dir)
    status = read_json(run_dir / STATUS_FILE) or {}
    write_json_atomic(
        run_dir / STATUS_FILE,
        {**status, "state": "queued", "ended": None, "message": f"resuming ({was})"},
    )
    (run_dir / SUMMARY_FILE).unlink(missing_ok=True)
    (run_dir / LAUNCH_FILE).unlink(missing_ok=True)


def resume(run_dir: Path) -> subprocess.Popen | str:
    """Start the training process again on a stopped or crashed run (detached; the trainer
    continues from checkpoints/last.pt, or from step 0 when there is none yet). A queued run
    that never started is simply started. A Slurm run is submitted again: the new job id is
    returned instead of a process. Raises ConfigError when the run is live or ended
    for good."""
    run_dir = Path(run_dir)
    info = run_info(run_dir)
    if info.live:
        raise ConfigError(f"run {info.id} is already {info.state} (pid {info.pid})")
    if info.pid is not None:
        raise ConfigError(
            f"run {info.id}: its process (pid {info.pid}) is alive but silent; "
            f"end it first with `vqatune stop --kill {info.id}`"
        )
    if info.state not in RESUMABLE_STATES:
        raise ConfigError(
            f"run {info.id} ended as {info.state}; resume continues stopped or crashed runs"
        )
    mark_resuming(run_dir, info.state)
    if info.meta.get("slurm"):  # a new job on the cluster, with the same options
        from . import slurm

        return slurm.resubmit(run_dir)
    return launch(run_dir, detach=True, resume=True)
