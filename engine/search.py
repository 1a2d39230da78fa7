"""Optuna search: a plan's [search] table run as a study whose trials are ordinary runs.

    [search]
    sampler = "tpe"            # tpe, random or grid
    n_trials = 20              # trials in the whole study, over every worker (grid: its size)
    seed = 0                   # sampler seed (optional)
    pruner = "median"          # median or none: prune on the trainer's eval events
    pruner_startup_trials = 5  # finished trials before pruning starts
    pruner_warmup_evals = 0    # evaluations of a trial before it may be pruned
    grid_points = 3            # grid: points per numeric range without explicit choices
    params = ["lr", "dropout"] # the guide's recommended ranges (log scale for learning rates)
    # or a table, to give ranges or choices:
    # [search.params]
    # lr = { low = 1e-4, high = 5e-4, log = true }
    # num_hid = { choices = [512, 1024] }
    # dropout = {}             # its recommended range

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
from . import sweep as sweep_mod
from .config import ConfigError, _key_line
from .events import METRICS_FILE
from .schema import BY_NAME, Param, ParamError, coerce

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
SEARCH_KEYS = (
    "sampler",
    "n_trials",
    "seed",
    "pruner",
    "pruner_startup_trials",
    "pruner_warmup_evals",
    "grid_points",
    "params",
)
DIMENSION_KEYS = ("low", "high", "log", "step", "choices")
DEFAULT_N_TRIALS = 20
OVERFLOW_ATTR = "vqatune_overflow"  # a trial asked after the study was full: never run
CLAIM_FILE = ".trial.lock"  # held in a trial's run directory by the worker running it


# ----------------------------------------------------------------------------------------------
# The search space


def is_learning_rate(name: str) -> bool:
    return name == "lr" or name.endswith("_lr")


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self, points: int) -> list:
        """The grid sampler's values: the choices, or `points` spaced values of the range."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.step:
            n = int(round((self.high - self.low) / self.step)) + 1
            values = [self.low + i * self.step for i in range(n)]
        else:
            values = []
            for i in range(points):
                t = i / (points - 1) if points > 1 else 0.0
                if self.log:
                    values.append(
                        math.exp(
                            math.log(self.low) + t * (math.log(self.high) - math.log(self.low))
                        )
                    )
                else:
                    values.append(self.low + t * (self.high - self.low))
        if self.kind == "int":
            values = [int(round(v)) for v in values]
        else:
            values = [float(f"{v:.6g}") for v in values]
        return list(dict.fromkeys(values))

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        return (
            f"[{self.low:g}, {self.high:g}]"
            + (" log" if self.log else "")
            + (f" step {self.step:g}" if self.step else "")
        )


def default_dimension(param: Param) -> Dimension:
    """The guide's recommended range (log scale for learning rates), or the choices."""
    if param.kind in ("bool", "int01"):
        return Dimension(
            param.name, "categorical", choices=(False, True) if param.kind == "bool" else (0, 1)
        )
    if param.kind == "choice":
        return Dimension(
            param.name, "categorical", choices=tuple(param.recommended or param.choices)
        )
    if param.kind in ("int", "float") and param.recommended:
        low, high = param.recommended
        return Dimension(
            param.name, param.kind, low=low, high=high, log=is_learning_rate(param.name)
        )
    raise ParamError(
        param.name, "has no recommended range to search; give low and high (or choices)"
    )


@dataclass
class SearchSpec:
    sampler: str = "tpe"
    n_trials: int = DEFAULT_N_TRIALS
    seed: int | None = None
    pruner: str = "median"
    pruner_startup_trials: int = 5
    pruner_warmup_evals: int = 0
    grid_points: int = 3
    dims: list[Dimension] = field(default_factory=list)

    def grid(self) -> dict[str, list]:
        return {d.name: d.grid_values(self.grid_points) for d in self.dims}

    def to_dict(self) -> dict:
        return {
            "sampler": self.sampler,
            "n_trials": self.n_trials,
            "seed": self.seed,
            "pruner": self.pruner,
            "pruner_startup_trials": self.pruner_startup_trials,
            "pruner_warmup_evals": self.pruner_warmup_evals,
            "params": {d.name: d.describe() for d in self.dims},
        }


def _where(path: Path | None, table: str, key: str) -> str:
    if path is None:
        return ""
    line = _key_line(path, table, key)
    return f"{path}:{line}: " if line else f"{path}: "


def _int_option(path, table: dict, key: str, default: int, low: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(
            f"{_where(path, 'search', key)}search.{key}: expected an integer "
            f">= {low}, got {value!r}"
        )
    return value


def _dimension(path: Path | None, name: str, spec: Any) -> Dimension:
    where = _where(path, "search.params", name)
    if name not in BY_NAME:
        from .config import unknown_message

        raise ConfigError(unknown_message(name, where))
    param = BY_NAME[name]
    try:
        if spec is True or spec == {}:
            return default_dimension(param)
        if isinstance(spec, list):
            spec = {"choices": spec}
        if not isinstance(spec, dict):
            raise ParamError(
                name,
                "expected {} (recommended range), {low, high[, log, step]} or {choices = [...]}",
            )
        unknown = [k for k in spec if k not in DIMENSION_KEYS]
        if unknown:
            raise ParamError(
                name, f"unknown key {unknown[0]!r} (keys: {', '.join(DIMENSION_KEYS)})"
            )
        if "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices or len(spec) > 1:
                raise ParamError(name, "choices: expected a non-empty list, alone")
            values = tuple(dict.fromkeys(coerce(param, c) for c in choices))
            return Dimension(name, "categorical", choices=values)
        if param.kind not in ("int", "float"):
            raise ParamError(name, "is not a number: give choices = [...]")
        default = default_dimension(param) if param.recommended else None
        low = spec.get("low", default.low if default else None)
        high = spec.get("high", default.high if default else None)
        if low is None or high is None:
            raise ParamError(name, "has no recommended range to search; give low and high")
        for bound in (low, high):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                raise ParamError(name, f"low and high must be numbers, got {bound!r}")
        low, high = coerce(param, low), coerce(param, high)
        if not low < high:
            raise ParamError(name, f"low ({low}) must be below high ({high})")
        log = spec.get("log", default.log if default else False)
        if not isinstance(log, bool):
            raise ParamError(name, f"log: expected true or false, got {log!r}")
        if log and low <= 0:
            raise ParamError(name, "a log scale needs low > 0")
        step = spec.get("step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
                raise ParamError(name, f"step: expected a positive number, got {step!r}")
            if log:
                raise ParamError(name, "step and log cannot be combined")
        return Dimension(name, param.kind, low=low, high=high, log=log, step=step)
    except ParamError as e:
        raise ConfigError(f"{where}{e}") from None


def parse_search(table: Any, path: Path | None = None) -> SearchSpec:
    """Check a plan's [search] table -> SearchSpec (errors name FILE:LINE and the key)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{_where(path, '', 'search')}search: expected a [search] table")
    for key in table:
        if key not in SEARCH_KEYS:
            raise ConfigError(
                f"{_where(path, 'search', key)}unknown search key {key!r} "
                f"(keys: {', '.join(SEARCH_KEYS)})"
            )
    sampler = table.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise ConfigError(
            f"{_where(path, 'search', 'sampler')}search.sampler: expected one of "
            f"{', '.join(SAMPLERS)}, got {sampler!r}"
        )
    pruner = table.get("pruner", "median")
    if pruner not in PRUNERS:
        raise ConfigError(
            f"{_where(path, 'search', 'pruner')}search.pruner: expected one of "
            f"{', '.join(PRUNERS)}, got {pruner!r}"
        )
    seed = table.get("seed")
    if seed is not None:
        seed = _int_option(path, table, "seed", 0, 0)
    raw_params = table.get("params")
    if raw_params is None or not raw_params:
        raise ConfigError(
            f"{_where(path, 'search', 'params')}search.params: name the parameters "
            f'to search, e.g. params = ["lr", "dropout"]'
        )
    if isinstance(raw_params, list):
        if not all(isinstance(n, str) for n in raw_params):
            raise ConfigError(
                f"{_where(path, 'search', 'params')}search.params: expected parameter names"
            )
        raw_params = {n: {} for n in raw_params}
    elif not isinstance(raw_params, dict):
        raise ConfigError(
            f"{_where(path, 'search', 'params')}search.params: expected a list of names or a table"
        )
    dims = [_dimension(path, name, spec) for name, spec in raw_params.items()]
    spec = SearchSpec(
        sampler=sampler,
        seed=seed,
        pruner=pruner,
        pruner_startup_trials=_int_option(path, table, "pruner_startup_trials", 5, 0),
        pruner_warmup_evals=_int_option(path, table, "pruner_warmup_evals", 0, 0),
        grid_points=_int_option(path, table, "grid_points", 3, 1),
        dims=dims,
    )
    if sampler == "grid":
        size = math.prod(len(v) for v in spec.grid().values())
        spec.n_trials = min(_int_option(path, table, "n_trials", size, 1), size)
    else:
        spec.n_trials = _int_option(path, table, "n_trials", DEFAULT_N_TRIALS, 1)
    return spec


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
class TrialJob:
    """A trial being run: its Optuna handle, its run, and the evals reported so far."""

    trial: Any  # optuna.trial.Trial
    number: int
    job: sweep_mod.Job
    claim: Claim
    tail: Any  # metrics.MetricsTail over the run's metrics.jsonl
    reported: set[int] = field(default_factory=set)  # intermediate steps already in the study
    steps: list[int] = field(default_factory=list)  # distinct eval steps seen, in order
    pruned_at: int | None = None  # the evaluation at which the pruner stopped it


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


def report_new_evals(tj: TrialJob) -> None:
    """Report each new eval event as the trial's next intermediate value; prune if told
    (evaluations the run makes while stopping are not reported)."""
    if tj.pruned_at is not None:
        return
    for ev in tj.tail.read(kinds=("eval",)):
        acc, step = ev.get("accuracy"), ev.get("step")
        if not isinstance(acc, (int, float)) or not math.isfinite(acc) or step in tj.steps:
            continue  # a resumed run may evaluate a step again
        tj.steps.append(step)
        ordinal = len(tj.steps)
        if ordinal not in tj.reported:
            tj.trial.report(float(acc), ordinal)
            tj.reported.add(ordinal)
        if tj.trial.should_prune():
            tj.pruned_at = ordinal
            sweep_mod.tag_run(tj.job.run_dir, pruned=True, pruned_at_eval=ordinal)
            with contextlib.suppress(ConfigError, OSError):
                runstore.stop(tj.job.run_dir)
            return


def run_search(
    sweep: sweep_mod.Sweep,
    plan: sweep_mod.Plan,
    spec: SearchSpec,
    *,
    storage_url: str,
    study_name: str,
    slots: list[str | None],
    echo: Callable[[str], None] = print,
    poll_s: float = 0.25,
) -> SearchResult:
    """Be one worker of the study until it has n_trials: first finish this machine's
    interrupted trials (their runs resumed), then ask for new ones, one per free slot."""
    import optuna
    from optuna.trial import TrialState

    from .metrics import MetricsTail

    study = load_study(spec, storage_url, study_name)
    update_sweep_search(sweep, spec, storage_url, study_name)
    echo(
        f"sweep {sweep.id}: {plan.title} on {plan.base}: study {study_name!r} in "
        f"{safe_url(storage_url)}, {spec.n_trials} trials "
        f"({sweep_mod.describe_slots(slots)}; runs in {sweep.runs_dir})"
    )
    base = sweep_mod.base_config(plan)
    host = socket.gethostname()
    free = list(range(len(slots)))
    active: dict[int, TrialJob] = {}
    ran: list[int] = []

    def follow(
        trial,
        number: int,
        run_dir: Path,
        slot_index: int,
        proc,
        what: str,
        run_claim: Claim,
        reported=(),
    ) -> None:
        slot = slots[slot_index]
        active[slot_index] = TrialJob(
            trial,
            number,
            sweep_mod.Job(run_dir, f"trial {number}", slot, proc),
            run_claim,
            MetricsTail(run_dir / METRICS_FILE),
            reported=set(reported),
        )
        where = f" on GPU {slot}" if slot is not None else ""
        echo(f"trial {number}: {what} run {run_dir.name}{where} ({format_params(trial.params)})")

    def overflow_count(before: int | None = None) -> int:
        return sum(
            1
            for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(OVERFLOW_ATTR) and (before is None or t.number < before)
        )

    def resumable() -> list:
        """This machine's trials of this run store left open by an interrupted worker."""
        out = []
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run_dir = Path(frozen.user_attrs.get("run_dir", "/nonexistent"))
            if (
                frozen.user_attrs.get("host") == host
                and run_dir.parent == sweep.runs_dir
                and (run_dir / "meta.json").is_file()
            ):
                out.append((frozen, run_dir))
        return out

    def start_resumed(frozen, run_dir: Path, slot_index: int) -> bool:
        run_claim = Claim(run_dir)
        if not run_claim.acquire():
            return False  # another worker on this machine follows it
        info = runstore.run_info(run_dir)
        if info.live:
            proc, what = None, "following"
        elif info.state in sweep_mod.KEPT_STATES or info.meta.get("pruned"):
            proc, what = None, "collecting"
        else:
            proc, what = sweep_mod.relaunch(run_dir, slots[slot_index])
        trial = optuna.trial.Trial(study, frozen._trial_id)
        follow(
            trial,
            frozen.number,
            run_dir,
            slot_index,
            proc,
            what,
            run_claim,
            reported=frozen.intermediate_values,
        )
        active[slot_index].pruned_at = info.meta.get("pruned_at_eval")
        return True

    def start_new(slot_index: int) -> bool:
        if len(study.get_trials(deepcopy=False)) - overflow_count() >= spec.n_trials:
            return False
        trial = study.ask()
        if trial.number - overflow_count(before=trial.number) >= spec.n_trials:
            # Another worker asked at the same moment and took the last trial: never run this.
            trial.set_user_attr(OVERFLOW_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            return False
        params = trial_params(trial, spec)
        run_dir = sweep_mod.create_sweep_run(
            sweep,
            base.replace(**params),
            name=f"{plan.name}-t{trial.number}",
            overrides={**plan.common, **params},
            tags={
                "sweep_key": f"trial{trial.number}",
                "trial": trial.number,
                "study": study_name,
                "params": params,
                "gpu": slots[slot_index],
            },
        )
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("run_id", run_dir.name)
        trial.set_user_attr("host", host)
        run_claim = Claim(run_dir)
        run_claim.acquire()
        proc = sweep_mod.launch_in_slot(run_dir, slots[slot_index], resume=False)
        follow(trial, trial.number, run_dir, slot_index, proc, "started", run_claim)
        return True

    def finish(slot_index: int) -> None:
        tj = active.pop(slot_index)
        free.append(slot_index)
        report_new_evals(tj)
        info = runstore.run_info(tj.job.run_dir)
        try:
            if tj.pruned_at is not None:
                study.tell(tj.trial, state=TrialState.PRUNED)
                outcome = f"pruned at evaluation {tj.pruned_at}"
            elif info.state == "done" and isinstance(info.best_accuracy, (int, float)):
                study.tell(tj.trial, float(info.best_accuracy))
                outcome = f"best accuracy {info.best_accuracy:.4f}"
            else:
                study.tell(tj.trial, state=TrialState.FAIL)
                outcome = f"failed ({info.state}{': ' + info.message if info.message else ''})"
            ran.append(tj.number)
        except (RuntimeError, ValueError) as e:  # finished already: not ours to record
            outcome = f"not recorded: {e}"
        finally:
            tj.claim.release()
        echo(f"trial {tj.number}: {outcome}")

    # Shared with the other workers of this sweep here: tells `vqatune sweeps` it is running.
    with sweep_mod.sweep_lock(sweep, shared=True):
        try:
            pending_resume = resumable()
            while True:
                for slot_index in list(active):
                    report_new_evals(active[slot_index])
                    if active[slot_index].job.finished():
                        finish(slot_index)
                while free:
                    free.sort()
                    started = False
                    while pending_resume and not started:
                        started = start_resumed(*pending_resume.pop(0), free[0])
                    if not started and not start_new(free[0]):
                        break
                    free.pop(0)
                if not active:
                    break
                time.sleep(poll_s)
        except KeyboardInterrupt:
            echo(f"interrupted: stopping {len(active)} live trial run(s)")
            sweep_mod.stop_jobs([tj.job for tj in active.values()], echo)
            for tj in active.values():
                tj.claim.release()
            raise sweep_mod.SweepInterrupted(
                f"sweep {sweep.id} interrupted; its open trials are resumed when the same command "
                f"runs again"
            ) from None
    best = _best_trial(study)
    return SearchResult(
        ran,
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


def update_sweep_search(
    sweep: sweep_mod.Sweep, spec: SearchSpec, storage_url: str, study_name: str
) -> None:
    search = dict(spec.to_dict(), storage=safe_url(storage_url), study=study_name)
    if sweep.data.get("search") != search:
        sweep_mod.update_sweep(sweep, search=search)
