"""Optuna search: a plan's [search] table (parsed by plans.parse_search) run as a study whose
trials are ordinary runs.

The objective is the run's best validation accuracy (maximised). Each eval event of a trial's
run is reported as the n-th intermediate value; when the pruner says so the run is stopped
(checkpointed, `stopped`, tagged `pruned`). Early stopping stays the trainer's.

Storage: an SQLite file in the sweep directory by default, or any Optuna storage URL
(postgresql://, mysql://, sqlite:///...) or `journal:PATH` (a journal file on a shared file
system). Several `vqatune sweep PLAN --storage URL --study NAME` processes, on one machine or
many, are workers of one study: trial numbers come from the storage, each trial is run by the
worker that asked for it, and the study stops at n_trials.

Optuna is imported inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runstore
from .config import ConfigError
from .events import META_FILE, METRICS_FILE
from .executors import LocalExecutor
from .plans import Plan, SearchSpec, base_config
from .plans import parse_search as parse_search  # `vqatune sweep` calls it from here
from .slots import Job, run_in_slots
from .sweepstore import KEPT_STATES, Sweep, create_sweep_run, sweep_lock, tag_run, update_sweep

OVERFLOW_ATTR = "vqatune_overflow"  # a trial asked after the study was full: never run
CLAIM_FILE = ".trial.lock"  # held in a trial's run directory by the worker running it


# ----------------------------------------------------------------------------------------------
# Storage and study


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{Path(sweep_dir).absolute() / 'study.db'}"


def open_storage(url: str):
    """An Optuna storage from a URL: RDB URLs (sqlite, postgresql, mysql) or journal:PATH."""
    import optuna

    if url.startswith("journal:"):
        path = Path(url[len("journal:") :].removeprefix("//")).expanduser()
        if not path.parent.is_dir():
            raise ConfigError(f"--storage {url}: no directory {path.parent}")
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        # An open(O_EXCL) lock works on NFS, where symlink locks may not.
        return optuna.storages.JournalStorage(
            JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        )
    if "://" not in url:
        raise ConfigError(
            f"--storage {url!r}: expected an Optuna storage URL "
            f"(sqlite:///FILE, postgresql://..., mysql://...) or journal:PATH"
        )
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as e:  # a bad URL, a missing driver, an unreachable server
            # Workers starting together on a new database race to create its tables.
            racing = ("already exists", "UNIQUE constraint failed", "duplicate key")
            if any(r in str(e) for r in racing) and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise ConfigError(
                f"--storage {safe_url(url)}: {type(e).__name__}: {str(e).splitlines()[0]}"
            ) from None


def safe_url(url: str) -> str:
    """The URL without its password, for sweep.json and messages."""
    if "://" in url and "@" in url:
        scheme, _, rest = url.partition("://")
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def make_sampler(spec: SearchSpec):
    import optuna

    if spec.sampler == "grid":

        class GridSampler(optuna.samplers.GridSampler):
            """Without the study.stop() after the last grid point, which Optuna allows only
            inside optimize(): the worker loop stops at n_trials, the grid's size."""

            def after_trial(self, study, trial, state, values):
                return None

        return GridSampler(spec.grid(), seed=spec.seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed)


def make_pruner(spec: SearchSpec):
    import optuna

    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_evals
    )


def load_study(spec: SearchSpec, storage_url: str, study_name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=open_storage(storage_url),
        study_name=study_name,
        sampler=make_sampler(spec),
        pruner=make_pruner(spec),
        direction="maximize",
        load_if_exists=True,
    )


# ----------------------------------------------------------------------------------------------
# Trials


class Claim:
    """A lock on a trial's run directory, held by the worker following the trial, so that no
    other worker on this machine resumes or reports it at the same time."""

    def __init__(self, run_dir: Path):
        self._file = open(Path(run_dir) / CLAIM_FILE, "a")

    def acquire(self) -> bool:
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            self.release()
            return False

    def release(self) -> None:
        self._file.close()  # closing drops the lock


@dataclass
class TrialJob(Job):
    """A trial's run in a slot: its Optuna handle, its claim, and the evals reported so far."""

    trial: Any = None  # optuna.trial.Trial
    number: int = 0
    claim: Claim | None = None
    tail: Any = None  # metrics.MetricsTail over the run's metrics.jsonl
    reported: set[int] = field(default_factory=set)  # intermediate steps already in the study
    steps: list[int] = field(default_factory=list)  # distinct eval steps seen, in order
    pruned_at: int | None = None  # the evaluation at which the pruner stopped it

    def watch(self) -> None:
        """Report each new eval event as the trial's next intermediate value; prune if told
        (evaluations the run makes while stopping are not reported)."""
        if self.pruned_at is not None:
            return
        for ev in self.tail.read(kinds=("eval",)):
            acc, step = ev.get("accuracy"), ev.get("step")
            if not isinstance(acc, (int, float)) or not math.isfinite(acc) or step in self.steps:
                continue  # a resumed run may evaluate a step again
            self.steps.append(step)
            ordinal = len(self.steps)
            if ordinal not in self.reported:
                self.trial.report(float(acc), ordinal)
                self.reported.add(ordinal)
            if self.trial.should_prune():
                self.pruned_at = ordinal
                tag_run(self.run_dir, pruned=True, pruned_at_eval=ordinal)
                with contextlib.suppress(ConfigError, OSError):
                    runstore.stop(self.run_dir)
                return

    def release(self) -> None:
        self.claim.release()


@dataclass
class SearchResult:
    ran: list[int]  # trial numbers this worker finished (or pruned)
    best_number: int | None
    best_value: float | None
    best_params: dict


def trial_params(trial, spec: SearchSpec) -> dict[str, Any]:
    if spec.sampler == "grid":  # the grid's own values, exactly as the grid sampler holds them
        return {
            name: trial.suggest_categorical(name, values) for name, values in spec.grid().items()
        }
    return {d.name: d.suggest(trial) for d in spec.dims}


class SearchWorker:
    """One worker of a study: the two hooks of run_in_slots. First it finishes this machine's
    interrupted trials (their runs resumed), then it asks the study for new ones."""

    def __init__(
        self,
        study,
        sweep: Sweep,
        plan: Plan,
        spec: SearchSpec,
        study_name: str,
        executor: LocalExecutor,
        echo: Callable[[str], None],
    ):
        self.study, self.sweep, self.plan, self.spec = study, sweep, plan, spec
        self.study_name, self.executor, self.echo = study_name, executor, echo
        self.slots = executor.window(None)
        self.base = base_config(plan)
        self.host = socket.gethostname()
        self.ran: list[int] = []
        self.pending_resume = self.resumable()

    def resumable(self) -> list:
        """This machine's trials of this run store left open by an interrupted worker."""
        from optuna.trial import TrialState

        out = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run_dir = Path(frozen.user_attrs.get("run_dir", "/nonexistent"))
            if (
                frozen.user_attrs.get("host") == self.host
                and run_dir.parent == self.sweep.runs_dir
                and (run_dir / META_FILE).is_file()
            ):
                out.append((frozen, run_dir))
        return out

    def overflow_count(self, before: int | None = None) -> int:
        return sum(
            1
            for t in self.study.get_trials(deepcopy=False)
            if t.user_attrs.get(OVERFLOW_ATTR) and (before is None or t.number < before)
        )

    def follow(
        self,
        trial,
        number: int,
        run_dir: Path,
        slot_index: int,
        started: tuple[Any, str, str],
        claim: Claim,
    ) -> TrialJob:
        """started: (process, what, where) as the executor's start and restart return it."""
        from .metrics import MetricsTail

        proc, what, where = started
        self.echo(
            f"trial {number}: {what} run {run_dir.name}{where} ({format_params(trial.params)})"
        )
        return TrialJob(
            run_dir,
            f"trial {number}",
            slot_index,
            proc,
            trial=trial,
            number=number,
            claim=claim,
            tail=MetricsTail(run_dir / METRICS_FILE),
        )

    def next_job(self, free: list[int]) -> TrialJob | None:
        while self.pending_resume:
            job = self.start_resumed(*self.pending_resume.pop(0), free[0])
            if job is not None:
                return job
        return self.start_new(free[0])

    def start_resumed(self, frozen, run_dir: Path, slot_index: int) -> TrialJob | None:
        import optuna

        claim = Claim(run_dir)
        if not claim.acquire():
            return None  # another worker on this machine follows it
        info = runstore.run_info(run_dir)
        slot = self.slots[slot_index]
        if info.active:
            started = (None, "following", self.executor.where(slot))
        elif info.state in KEPT_STATES or info.meta.get("pruned"):
            started = (None, "collecting", "")
        else:
            started = self.executor.restart(run_dir, slot)
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        job = self.follow(trial, frozen.number, run_dir, slot_index, started, claim)
        job.reported = set(frozen.intermediate_values)
        job.pruned_at = info.meta.get("pruned_at_eval")
        return job

    def start_new(self, slot_index: int) -> TrialJob | None:
        from optuna.trial import TrialState

        study, spec = self.study, self.spec
        if len(study.get_trials(deepcopy=False)) - self.overflow_count() >= spec.n_trials:
            return None
        trial = study.ask()
        if trial.number - self.overflow_count(before=trial.number) >= spec.n_trials:
            # Another worker asked at the same moment and took the last trial: never run this.
            trial.set_user_attr(OVERFLOW_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            return None
        params = trial_params(trial, spec)
        slot = self.slots[slot_index]
        changes = self.executor.config_changes
        run_dir = create_sweep_run(
            self.sweep,
            self.base.override(**params).replace(**changes),  # params win over a YAML
            name=f"{self.plan.name}-t{trial.number}",
            overrides={**self.plan.common, **params, **changes},
            tags={
                "sweep_key": f"trial{trial.number}",
                "trial": trial.number,
                "study": self.study_name,
                "params": params,
                "gpu": slot,
            },
        )
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("run_id", run_dir.name)
        trial.set_user_attr("host", self.host)
        claim = Claim(run_dir)
        claim.acquire()
        started = self.executor.start(run_dir, slot)
        return self.follow(trial, trial.number, run_dir, slot_index, started, claim)

    def job_finished(self, job: TrialJob) -> None:
        from optuna.trial import TrialState

        job.watch()
        info = runstore.run_info(job.run_dir)
        try:
            if job.pruned_at is not None:
                self.study.tell(job.trial, state=TrialState.PRUNED)
                outcome = f"pruned at evaluation {job.pruned_at}"
            elif info.state == "done" and isinstance(info.best_accuracy, (int, float)):
                self.study.tell(job.trial, float(info.best_accuracy))
                outcome = f"best accuracy {info.best_accuracy:.4f}"
            else:
                self.study.tell(job.trial, state=TrialState.FAIL)
                outcome = f"failed ({info.state}{': ' + info.message if info.message else ''})"
            self.ran.append(job.number)
        except (RuntimeError, ValueError) as e:  # finished already: not ours to record
            outcome = f"not recorded: {e}"
        self.echo(f"trial {job.number}: {outcome}")


def run_search(
    sweep: Sweep,
    plan: Plan,
    spec: SearchSpec,
    *,
    storage_url: str,
    study_name: str,
    slots: list[str | None] | None = None,
    executor: LocalExecutor | None = None,
    echo: Callable[[str], None] = print,
    poll_s: float = 0.25,
) -> SearchResult:
    """Be one worker of the study until it has n_trials: first finish this machine's
    interrupted trials (their runs resumed), then ask for new ones, one per free slot (with
    the queue or Slurm: one per trial in flight). `slots` alone means local slots."""
    executor = executor or LocalExecutor(slots or [None])
    study = load_study(spec, storage_url, study_name)
    update_sweep_search(sweep, spec, storage_url, study_name)
    # Shared with the other workers of this sweep here: tells `vqatune sweeps` it is running.
    with sweep_lock(sweep, shared=True):
        worker = SearchWorker(study, sweep, plan, spec, study_name, executor, echo)
        # Announced once the worker is built: a signal after this line is run_in_slots' own.
        echo(
            f"sweep {sweep.id}: {plan.title} on {plan.base}: study {study_name!r} in "
            f"{safe_url(storage_url)}, {spec.n_trials} trials "
            f"({executor.describe(worker.slots)}; runs in {sweep.runs_dir})"
        )
        run_in_slots(
            worker.slots,
            worker.next_job,
            worker.job_finished,
            echo=echo,
            interrupted=f"sweep {sweep.id} interrupted; its open trials are resumed when the "
            f"same command runs again",
            poll_s=poll_s,
            tick=lambda: executor.tick(echo),
        )
    best = _best_trial(study)
    return SearchResult(
        worker.ran,
        best.number if best else None,
        best.value if best else None,
        dict(best.params) if best else {},
    )


def format_params(params: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _best_trial(study):
    try:
        return study.best_trial
    except ValueError:  # no finished trial yet
        return None


def update_sweep_search(sweep: Sweep, spec: SearchSpec, storage_url: str, study_name: str) -> None:
    search = dict(spec.to_dict(), storage=safe_url(storage_url), study=study_name)
    if sweep.data.get("search") != search:
        update_sweep(sweep, search=search)
