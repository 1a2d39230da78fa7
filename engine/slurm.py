"""Runs on a Slurm cluster, submitted through submitit, watched from the login node.

    vqatune run PRESET --slurm --partition gpu --gpus-per-node 4 --nodes 2 --time 24:00:00

`submit(run_dir, options)` hands submitit a `TrainJob` for the run directory (which lives on the
shared filesystem); submitit writes an sbatch script under `<run_dir>/slurm/`, pickles the job
there and submits it. On each node (one task per node) `TrainJob` starts the ordinary trainer, or
torchrun for several GPUs or nodes, with the rendezvous taken from Slurm's environment (node 0's
hostname, the node's rank). The trainer writes the run directory as always; meta.json records
`slurm: {job_id, folder, parameters}`.

Time limit and preemption: Slurm sends USR2 `signal_delay_s` before the end; submitit calls
`TrainJob.checkpoint`, which stops the trainer the graceful way (SIGTERM: finish the step, write
checkpoints/last.pt) and returns the same job with `resume=True`; submitit requeues it, and the
requeued job resumes exactly from that checkpoint.

From the login node a run whose status is not final is judged by its job (`sacct`), never by a
local pid: PENDING → queued, RUNNING → running (a silent heartbeat → crashed), and CANCELLED,
TIMEOUT, NODE_FAIL, PREEMPTED, OUT_OF_MEMORY are reported as such. `stop` is `scancel`.

Light module: no torch, no textual (submitit is imported only where a job is submitted or run).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import exitcodes
from .config import ConfigError
from .events import CONFIG_FILE, LOG_FILE, META_FILE, STATUS_FILE, read_json, write_json_atomic

SLURM_DIR = "slurm"
RDZV_PORT_BASE = 29400  # + job id % 1000: a port per job, the same on every node
STATE_CACHE_S = 5.0
# sacct's state -> (vqatune state, message). States not listed are read as running or queued.
FINAL_JOB_STATES = {
    "CANCELLED": ("cancelled", "the Slurm job was cancelled (scancel, or by an administrator)"),
    "TIMEOUT": ("timeout", "the Slurm job reached its time limit"),
    "NODE_FAIL": ("node_fail", "a node of the Slurm job failed"),
    "PREEMPTED": ("preempted", "the Slurm job was preempted and not requeued"),
    "OUT_OF_MEMORY": ("oom", "the Slurm job ran out of host memory"),
    "FAILED": ("failed", "the Slurm job failed; see train.log and the job's log under slurm/"),
    "BOOT_FAIL": ("node_fail", "the Slurm job's node failed to boot"),
    "DEADLINE": ("timeout", "the Slurm job reached its deadline"),
    "COMPLETED": ("crashed", "the Slurm job ended without the trainer's end record"),
}
QUEUED_JOB_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING")
# sacct answered and does not list the job: just submitted (the accounting database lags a few
# seconds), or purged from the database (MinJobAge, an administrator). After this long, purged.
ABSENT = "ABSENT"
PURGED_AFTER_S = 600.0


@dataclass
class Options:
    """What `--slurm` and its options ask of the cluster (submitit's SlurmExecutor parameters)."""

    partition: str | None = None
    gpus_per_node: int = 1
    nodes: int = 1
    time: str | None = None  # HH:MM:SS, or D-HH:MM:SS
    account: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # --slurm-arg KEY=VALUE
    signal_delay_s: int = 120
    max_requeues: int = 3

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "nodes": self.nodes,
            "ntasks_per_node": 1,  # one TrainJob per node; torchrun starts the GPU processes
            "gpus_per_node": self.gpus_per_node,
            "signal_delay_s": self.signal_delay_s,
            "job_name": "vqatune",
        }
        if self.partition:
            params["partition"] = self.partition
        if self.account:
            params["account"] = self.account
        if self.time:
            params["time"] = minutes(self.time)
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        return params


def minutes(text: str) -> int:
    """Slurm's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) -> whole minutes,
    rounded up."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", text.strip())
    if not m:
        raise ConfigError(f"--time: {text!r} is not HH:MM:SS (or D-HH:MM:SS)")
    parts = [int(x) for x in m.group(2).split(":")]
    if m.group(1) is not None:
        h, mi, s = (parts + [0, 0])[:3]
        total_s = int(m.group(1)) * 86400 + h * 3600 + mi * 60 + s
    else:
        h, mi, s = ([0, 0] + parts)[-3:] if len(parts) == 3 else (0, *(parts + [0])[:2])
        total_s = h * 3600 + mi * 60 + s
    if total_s <= 0:
        raise ConfigError(f"--time: {text!r} is no time at all")
    return -(-total_s // 60)


def parse_slurm_args(items: list[str]) -> dict[str, str]:
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm-arg: {item!r} is not KEY=VALUE (e.g. qos=high)")
        extra[key.strip().lstrip("-").replace("-", "_")] = value
    return extra


# ----------------------------------------------------------------------------------------------
# Submitting


def executor(folder: Path, options: Options):
    import submitit

    ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=options.max_requeues)
    try:
        ex.update_parameters(**options.parameters())
    except ValueError as e:  # an unknown --slurm-arg
        raise ConfigError(f"--slurm-arg: {str(e).splitlines()[0]}") from None
    return ex


def submit(run_dir: Path, options: Options, resume: bool = False) -> str:
    """Submit the run's job; returns the Slurm job id (also recorded in meta.json)."""
    run_dir = Path(run_dir)
    folder = run_dir / SLURM_DIR
    try:
        job = executor(folder, options).submit(TrainJob(str(run_dir), resume=resume))
    except SUBMIT_ERRORS as e:
        raise ConfigError(f"--slurm: submitting to Slurm failed: {_first_line(e)}") from None
    _record(run_dir, str(job.job_id), folder, options)
    return str(job.job_id)


def submit_array(
    run_dirs: list[Path], options: Options, folder: Path, parallel: int | None = None
) -> list[str]:
    """Submit the runs as one job array (submitit's batch: `sbatch --array=0-N%P`), its
    scripts and pickles in `folder`; each run's meta.json records its task's id JOBID_TASK.
    parallel: at most that many tasks run at once (Slurm's %P)."""
    if not run_dirs:
        return []
    ex = executor(Path(folder), options)
    if parallel:
        ex.update_parameters(array_parallelism=parallel)
    try:
        with ex.batch():
            jobs = [ex.submit(TrainJob(str(d))) for d in run_dirs]
    except SUBMIT_ERRORS as e:
        raise ConfigError(
            f"--executor slurm: submitting to Slurm failed: {_first_line(e)}"
        ) from None
    ids = [str(job.job_id) for job in jobs]
    for run_dir, job_id in zip(run_dirs, ids, strict=True):
        _record(Path(run_dir), job_id, Path(folder), options)
    return ids


SUBMIT_ERRORS = (FileNotFoundError, subprocess.CalledProcessError, RuntimeError)


def _record(run_dir: Path, job_id: str, folder: Path, options: Options) -> None:
    meta = read_json(run_dir / META_FILE) or {}
    record = {
        "job_id": job_id,
        "folder": str(folder),
        "options": {**options.__dict__},
        "submitted": time.time(),
        "jobs": [*((meta.get("slurm") or {}).get("jobs") or []), job_id],
    }
    write_json_atomic(run_dir / META_FILE, {**meta, "slurm": record})
    _cache.pop(job_id, None)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


class TrainJob:
    """What runs on each node of the job. submitit pickles it by reference to this module, so
    the nodes need this same installation (the usual shared filesystem)."""

    def __init__(self, run_dir: str, resume: bool = False, trainer: list[str] | None = None):
        from . import runstore

        self.run_dir = run_dir
        self.resume = resume
        # The trainer command is fixed when the job is submitted (tests submit a fake one).
        self.trainer = list(trainer or runstore.TRAINER)
        self.proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "proc": None}

    def command(self) -> list[str]:
        import submitit

        from . import distributed, runstore
        from .config import load

        run_dir = Path(self.run_dir)
        resume = self.resume or runstore.last_checkpoint(run_dir) is not None
        cfg = load(str(run_dir / CONFIG_FILE))
        env = submitit.JobEnvironment()
        if env.num_nodes > 1 or cfg.nproc_per_node > 1:
            port = RDZV_PORT_BASE + int(re.sub(r"\D", "", env.job_id) or 0) % 1000
            node_cfg = cfg.replace(
                nnodes=env.num_nodes,
                node_rank=env.node,
                rdzv_endpoint=f"{env.hostnames[0]}:{port}" if env.num_nodes > 1 else "",
            )
            return distributed.torchrun_command(run_dir, node_cfg, resume)
        return [*self.trainer, str(run_dir), *(["--resume"] if resume else [])]

    def __call__(self) -> int:
        run_dir = Path(self.run_dir)
        with open(run_dir / LOG_FILE, "ab") as log:
            # Same process group as this task: Slurm's SIGTERM (scancel, the end of the time
            # limit) reaches the trainer, which stops gracefully.
            # USR2 is submitit's warning of the time limit, handled in this process
            # (`checkpoint`); the trainer ignores it and is stopped with SIGTERM instead.
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                cwd=self.run_dir,
                preexec_fn=_ignore_usr2,
            )
        # Polled, not wait(): `checkpoint` runs in a signal handler on this thread and waits
        # for the trainer itself (a wait() in progress here would hold Popen's waitpid lock).
        while (code := self.proc.poll()) is None:
            time.sleep(0.5)
        if code not in (exitcodes.DONE, exitcodes.INTERRUPTED):
            raise RuntimeError(f"the trainer exited with code {code}; see {run_dir / LOG_FILE}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Time limit or preemption (USR2): stop the trainer with a checkpoint, then hand
        submitit the same job resuming from it."""
        import submitit

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait()
        run_dir = Path(self.run_dir)
        status = read_json(run_dir / STATUS_FILE) or {}
        write_json_atomic(
            run_dir / STATUS_FILE,
            {**status, "state": "queued", "ended": None, "message": "requeued by Slurm"},
        )
        (run_dir / "summary.json").unlink(missing_ok=True)
        return submitit.helpers.DelayedSubmission(TrainJob(self.run_dir, True, self.trainer))


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


# ----------------------------------------------------------------------------------------------
# Watching from the login node

_cache: dict[str, tuple[float, str]] = {}


def job_state(job_id: str) -> str:
    """sacct's State of the job: 'ABSENT' when sacct answered without it, 'UNKNOWN' when sacct
    is missing or failed; cached for STATE_CACHE_S so that listing many runs asks Slurm once per
    job. A task of an array (JOBID_TASK) is looked up with its whole array: one sacct call for a
    sweep."""
    hit = _cache.get(job_id)
    if hit and time.time() - hit[0] < STATE_CACHE_S:
        return hit[1]
    asked = job_id.split("_")[0]
    now = time.time()
    states, missing = {}, "UNKNOWN"
    try:
        done = subprocess.run(
            ["sacct", "-j", asked, "-X", "-n", "-P", "-o", "JobID,State"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        missing = ABSENT if done.returncode == 0 else "UNKNOWN"
        for line in done.stdout.splitlines():
            jid, _, st = line.partition("|")
            if st.strip():
                for one in expand_job_ids(jid.strip()):
                    states[one] = st.split()[0].strip()  # "CANCELLED by 1000" -> CANCELLED
    except (OSError, subprocess.TimeoutExpired):
        pass
    for one, st in states.items():
        _cache[one] = (now, st)
    _cache[job_id] = (now, states.get(job_id, missing))
    return _cache[job_id][1]


def expand_job_ids(text: str) -> list[str]:
    """sacct's JobID column -> job ids: `1000`, `1000_3`, and the tasks of an array not yet
    started, `1000_[4-6,9%2]` -> 1000_4, 1000_5, 1000_6, 1000_9."""
    m = re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", text)
    if not m:
        return [text]
    ids = []
    for part in m.group(2).split(","):
        first, _, last = part.partition("-")
        ids += [f"{m.group(1)}_{i}" for i in range(int(first), int(last or first) + 1)]
    return ids


def derive_state(status: dict, job: dict, heartbeat_timeout_s: float, now: float | None = None):
    """(state, message) of a Slurm run whose status.json holds no final state."""
    now = time.time() if now is None else now
    job_id = str(job.get("job_id"))
    slurm = job_state(job_id)
    if slurm in FINAL_JOB_STATES:
        state, why = FINAL_JOB_STATES[slurm]
        return state, f"{why} (job {job_id})"
    submitted = job.get("submitted")
    if (
        slurm == ABSENT
        and status.get("state") != "running"
        and isinstance(submitted, (int, float))
        and now - submitted > PURGED_AFTER_S
    ):
        return "crashed", f"Slurm job {job_id} is unknown to sacct (purged from its database?)"
    unknown = slurm in ("UNKNOWN", ABSENT)
    if slurm in QUEUED_JOB_STATES or (unknown and status.get("state") != "running"):
        message = status.get("message") or f"Slurm job {job_id} is {slurm.lower()}"
        return "queued", message
    heartbeat = status.get("heartbeat")
    if status.get("state") != "running":  # RUNNING, the trainer still starting
        return "queued", f"starting in Slurm job {job_id}"
    if isinstance(heartbeat, (int, float)) and now - heartbeat < heartbeat_timeout_s:
        return "running", status.get("message")
    silent = f"for {now - heartbeat:.0f} s " if isinstance(heartbeat, (int, float)) else ""
    return "crashed", f"no heartbeat {silent}from Slurm job {job_id} ({slurm})"


def cancel(job: dict, kill: bool = False) -> None:
    """scancel the run's job: SIGTERM first (the trainer checkpoints and ends `stopped`), or
    SIGKILL with kill."""
    cancel_many([job], kill)


def cancel_many(jobs: list[dict], kill: bool = False) -> None:
    """One scancel for several runs' jobs (an interrupted sweep's array tasks together)."""
    ids = [str(job["job_id"]) for job in jobs]
    cmd = ["scancel", *(["--signal=KILL"] if kill else []), *ids]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ConfigError(
            "scancel is not on PATH: stop Slurm runs from a Slurm login node"
        ) from None
    except subprocess.CalledProcessError as e:
        raise ConfigError(f"scancel {' '.join(ids)}: {_first_line(e.stderr or e)}") from None
    for job_id in ids:
        _cache.pop(job_id, None)


def resubmit(run_dir: Path) -> str:
    """`vqatune resume` of a Slurm run: a new job with the same options, resuming."""
    meta = read_json(Path(run_dir) / META_FILE) or {}
    options = Options(**(meta.get("slurm") or {}).get("options", {}))
    return submit(run_dir, options, resume=True)
