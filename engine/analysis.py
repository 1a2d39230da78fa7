"""Which parameters mattered: finished runs as trials for Optuna's importance evaluators.

Any set of runs works (a sweep, a filter, runs picked by hand), not only Optuna studies: each
finished run with a value of the metric becomes a completed trial whose parameters are the
parameters that vary among those runs (a parameter that never varies explains nothing and is
left out). Numbers become int/float distributions over the values seen (log scale when they
span two decades or more), booleans and choices categorical distributions.

Optuna is imported only inside importance(): listing and filtering runs stays light.
Light module: no torch, no textual.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from . import config as config_mod
from . import runstore
from .config import ConfigError
from .events import CONFIG_FILE
from .schema import BY_NAME, PARAMS

EVALUATORS = ("ped-anova", "fanova")
# Metrics a run is scored by; `best_accuracy` and `final_accuracy` come from status/summary,
# the others from the run's metrics (engine.compare.load_result).
METRICS = {
    "best_accuracy": True,  # name -> higher is better
    "final_accuracy": True,
    "final_loss": False,
    "duration_s": False,
    "samples_per_s": True,
}
# Parameters that name, place or describe a run rather than change what it learns.
NOT_HYPERPARAMETERS = ("name", "output", "data_root", "checkpoint", "config", "device")
# Below these many runs an evaluator's importances are mostly noise: PED-ANOVA compares the
# top 10% with the rest and needs at least two runs in that top; fANOVA's forest needs a few.
MIN_RUNS = {"ped-anova": 20, "fanova": 10}
SEED = 0  # fANOVA's random forest; PED-ANOVA is deterministic


@dataclass
class Point:
    """One run: its id, directory, state, parameter values and its metric (None: unscored)."""

    id: str
    path: Path
    state: str
    values: dict[str, Any]
    metric: float | None


@dataclass
class Importance:
    metric: str
    higher_is_better: bool
    evaluator: str
    seed: int | None
    n_runs: int  # runs given
    n_used: int  # runs that are finished and have the metric
    params: list[str]  # varying parameters, most important first
    importances: dict[str, float]  # param -> share (sums to 1 when computed)
    constant: list[str] = field(default_factory=list)  # left out: one value in every run
    warning: str | None = None
    points: list[Point] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "evaluator": self.evaluator,
            "seed": self.seed,
            "runs": self.n_runs,
            "runs_used": self.n_used,
            "importances": self.importances,
            "constant_params": self.constant,
            "warning": self.warning,
            "points": [
                {"id": p.id, "state": p.state, "metric": p.metric, **_varying(p, self.params)}
                for p in self.points
            ],
        }


def _varying(point: Point, params: list[str]) -> dict[str, Any]:
    return {"params": {name: point.values.get(name) for name in params}}


# ----------------------------------------------------------------------------------------------
# Picking runs

_FILTER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|>=|<=|=|>|<|~)\s*(.*?)\s*$")
RUN_FIELDS = ("state", "name", "source", "sweep", "id")


@dataclass(frozen=True)
class Filter:
    """`KEY OP VALUE`: KEY a parameter or one of RUN_FIELDS; OP = != < <= > >= or ~ (contains)."""

    key: str
    op: str
    value: str

    def matches(self, point: Point, meta: dict) -> bool:
        if self.key in RUN_FIELDS:
            have: Any = {"state": point.state, "id": point.id}.get(self.key, meta.get(self.key))
        else:
            have = point.values.get(self.key)
        want: Any = self.value
        if self.key in BY_NAME and self.op != "~":
            want = _typed(self.key, self.value)
        if self.op == "~":
            return self.value in str(have)
        if self.op in ("=", "=="):
            return have == want or str(have) == self.value
        if self.op == "!=":
            return not (have == want or str(have) == self.value)
        try:
            a, b = float(have), float(want)
        except (TypeError, ValueError):
            return False
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[self.op]


def _typed(name: str, text: str) -> Any:
    from .schema import coerce

    try:
        return coerce(BY_NAME[name], text)
    except (ValueError, TypeError):
        return text


def parse_filter(text: str) -> Filter:
    m = _FILTER_RE.match(text)
    if not m:
        raise ConfigError(f"--filter {text!r}: expected KEY OP VALUE, e.g. lr>=1e-4 or state=done")
    key, op, value = m.groups()
    if key not in BY_NAME and key not in RUN_FIELDS:
        raise ConfigError(
            f"--filter {text!r}: {key!r} is neither a parameter nor one of {', '.join(RUN_FIELDS)}"
        )
    return Filter(key, op, value)


def select_runs(
    runs: list[str] | None = None,
    *,
    sweep: str | None = None,
    runs_dir: Path | None = None,
) -> list[Path | runstore.RunInfo]:
    """The named runs (directories), else the sweep's runs, else every run in the store (as
    the RunInfo the listing already read, so that nothing is read twice)."""
    if runs:
        dirs = [runstore.find_run(q, runs_dir) for q in runs]
        return list(dict.fromkeys(d.resolve() for d in dirs))
    if sweep:
        from . import sweepstore

        return list(sweepstore.sweep_runs(sweepstore.find_sweep(sweep, runs_dir)))
    return list(runstore.list_runs(runs_dir))


def run_values(run_dir: Path) -> dict[str, Any]:
    """The parameters of a run's config.toml.

    The file is the resolved config the run store wrote (one `key = value` line per
    parameter, in tables): config.load would parse it, look up presets and validate every
    value again, which was most of the time of an analysis over 1,000 runs. So its lines are
    split as text and each distinct value literal is parsed as TOML once (most values repeat
    from run to run). A file of any other shape goes through config.load and its errors."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        text = ""
    pairs: dict[str, str] | None = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, sep, literal = line.partition(" = ")
        if not sep or not key.isidentifier():
            pairs = None
            break
        pairs[key] = literal
    if pairs is not None and all(p.name in pairs for p in PARAMS):
        try:
            return {p.name: _literal(pairs[p.name]) for p in PARAMS}
        except ValueError:
            pass
    return config_mod.load(str(path)).to_dict()


@functools.lru_cache(maxsize=65536)
def _literal(text: str) -> Any:
    return tomllib.loads(f"v = {text}")["v"]


def load_points(
    runs: list[Path | runstore.RunInfo],
    metric: str = "best_accuracy",
    filters: list[Filter] = (),
) -> list[Point]:
    """Every run (finished or not) with its config values and metric, filtered."""
    if metric not in METRICS:
        raise ConfigError(f"--metric {metric!r}: must be one of {', '.join(METRICS)}")
    out = []
    for run in runs:
        info = run if isinstance(run, runstore.RunInfo) else runstore.run_info(run)
        d = info.path
        try:
            values = run_values(d)
        except ConfigError:
            continue  # not a readable run: nothing to analyse
        point = Point(info.id, Path(d), info.state, values, None)
        if filters and not all(f.matches(point, info.meta) for f in filters):
            continue
        point.metric = _metric_of(info, metric)
        out.append(point)
    return out


def _metric_of(info: runstore.RunInfo, metric: str) -> float | None:
    if info.state != "done" and info.state not in ("stopped", "diverged"):
        return None  # running, crashed, oom or failed: not a result of its parameters yet
    if metric == "best_accuracy":
        value: Any = info.best_accuracy
    elif metric == "final_accuracy":
        value = info.last_accuracy
    else:
        from .compare import load_result

        value = load_result(info.path, curve_points=10).metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


# ----------------------------------------------------------------------------------------------
# Importance


def varying_params(points: list[Point]) -> tuple[list[str], list[str]]:
    """(parameters with two or more values among the points, the constant ones), schema order."""
    varying, constant = [], []
    for p in PARAMS:
        if p.name in NOT_HYPERPARAMETERS:
            continue
        values = {repr(pt.values.get(p.name)) for pt in points}
        (varying if len(values) > 1 else constant).append(p.name)
    return varying, constant


def is_log_scale(values: list[float]) -> bool:
    low, high = min(values), max(values)
    return low > 0 and high / low >= 100


def distribution(name: str, values: list[Any]):
    """The Optuna distribution a parameter's observed values come from."""
    import optuna.distributions as d

    param = BY_NAME[name]
    if param.kind in ("int", "float") and all(isinstance(v, (int, float)) for v in values):
        low, high = min(values), max(values)
        if param.kind == "int":
            return d.IntDistribution(int(low), int(high), log=is_log_scale(values))
        return d.FloatDistribution(float(low), float(high), log=is_log_scale(values))
    return d.CategoricalDistribution(sorted({_categorical(v) for v in values}, key=repr))


def _categorical(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, str)) or v is None else str(v)


def analyse(
    points: list[Point],
    *,
    metric: str = "best_accuracy",
    evaluator: str = "ped-anova",
    seed: int = SEED,
) -> Importance:
    """Importances of the varying parameters for the metric over the scored points."""
    if evaluator not in EVALUATORS:
        raise ConfigError(f"--evaluator {evaluator!r}: must be one of {', '.join(EVALUATORS)}")
    higher = METRICS[metric]
    scored = [p for p in points if p.metric is not None]
    params, constant = varying_params(scored)
    result = Importance(
        metric,
        higher,
        evaluator,
        seed if evaluator == "fanova" else None,
        len(points),
        len(scored),
        params,
        {},
        constant,
        points=points,
    )
    if len(scored) < 2 or not params:
        result.warning = (
            f"{len(scored)} finished run{'s' if len(scored) != 1 else ''} with {metric}"
            + ("" if params else " and no parameter that varies")
            + ": nothing to rank"
        )
        return result
    if len({p.metric for p in scored}) < 2:
        result.warning = f"every run has the same {metric}: nothing to rank"
        return result
    result.importances = _evaluate(scored, params, higher, evaluator, seed)
    result.params = sorted(params, key=lambda n: -result.importances.get(n, 0.0))
    if len(scored) < MIN_RUNS[evaluator]:
        result.warning = (
            f"only {len(scored)} runs: {evaluator} needs about {MIN_RUNS[evaluator]} "
            "for importances to mean much"
        )
    return result


def _evaluate(
    points: list[Point], params: list[str], higher: bool, evaluator: str, seed: int
) -> dict[str, float]:
    import optuna

    importance = _optuna_importance(with_sklearn=evaluator == "fanova")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    dists = {n: distribution(n, [p.values.get(n) for p in points]) for n in params}
    trials = [
        optuna.trial.create_trial(
            params={n: _categorical(p.values.get(n)) for n in params},
            distributions=dists,
            value=p.metric,
        )
        for p in points
    ]
    study = optuna.create_study(direction="maximize" if higher else "minimize")
    study.add_trials(trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-API notices, not the user's business
        try:
            if evaluator == "fanova":
                impl = importance.FanovaImportanceEvaluator(seed=seed)
            else:
                impl = importance.PedAnovaImportanceEvaluator()
            found = importance.get_param_importances(
                study, evaluator=impl, params=params, normalize=True
            )
        except ImportError as e:  # fANOVA's forest is scikit-learn's
            raise ConfigError(f"--evaluator {evaluator} needs scikit-learn ({e})") from None
    return {n: float(found.get(n, 0.0)) for n in params}


_SKLEARN_USERS = ("optuna.importance._fanova", "optuna.importance._mean_decrease_impurity")


def _optuna_importance(with_sklearn: bool):
    """optuna.importance, imported without scikit-learn unless fANOVA needs it.

    optuna.importance imports scikit-learn at import time for fANOVA, which costs ~2.8 s of CPU;
    PED-ANOVA needs none of it. So scikit-learn is hidden while it is imported for PED-ANOVA,
    and the modules that use it are imported afresh when fANOVA is asked for later.
    """
    import importlib
    import sys

    if with_sklearn:
        if "optuna.importance" in sys.modules and "sklearn.ensemble" not in sys.modules:
            for name in [m for m in sys.modules if m.startswith(_SKLEARN_USERS)]:
                del sys.modules[name]
            importlib.invalidate_caches()
            fanova = importlib.import_module("optuna.importance._fanova")
            module = importlib.import_module("optuna.importance")
            module.FanovaImportanceEvaluator = fanova.FanovaImportanceEvaluator
            return module
        return importlib.import_module("optuna.importance")
    if "optuna.importance" in sys.modules:
        return sys.modules["optuna.importance"]
    hidden = "sklearn" not in sys.modules
    if hidden:
        sys.modules["sklearn"] = None  # an ImportError that optuna records, lazily
    try:
        return importlib.import_module("optuna.importance")
    finally:
        if hidden:
            del sys.modules["sklearn"]
