"""Plans: the file that says what a sweep runs, checked, and expanded into runs.

A plan is a TOML file:

    title = "Learning rate"
    base = "default"               # preset name or file (relative to the plan)
    seeds = [1204, 1205]           # optional; default: the base's seed
    [set]                          # optional: overrides for every run
    epochs = 10
    [variants.higher]              # one table per variant, flat parameter names
    lr = 3.5e-4
    [search]                       # instead of variants: an Optuna study

The [search] table (run by search.py):

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

A sweep's id is derived from the plan's name, the base and a digest of every run's resolved
config (make_sweep_id), so running the same plan again finds the same sweep.

Light module: no torch, no optuna.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config as config_mod
from . import runstore
from .config import Config, ConfigError, file_line, parse_toml, unknown_message
from .schema import BY_NAME, Param, ParamError, coerce

PLAN_KEYS = ("title", "description", "base", "seeds", "set", "variants", "search")


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
    search: dict | None = None  # the raw [search] table, checked by parse_search

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
            data = parse_toml(path)
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
    near = difflib.get_close_matches(source, list(paths), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else f" (plans: {', '.join(paths)})"
    raise ConfigError(f"{source}: no such plan{hint}")


def _overrides(path: Path, table: str, data: Any) -> dict[str, Any]:
    """A table of parameter overrides, typed and checked by the schema."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file_line(path, None, table.split('.')[0])}[{table}]: expected a table of parameters"
        )
    out = {}
    for name, value in data.items():
        if name not in BY_NAME:
            if isinstance(value, dict):
                raise ConfigError(
                    f"{file_line(path, table, name)}[{table}.{name}]: expected "
                    f"parameter = value, not a table"
                )
            raise ConfigError(unknown_message(name, file_line(path, table, name)))
        param = BY_NAME[name]
        try:
            if param.kind in ("int", "float") and isinstance(value, str):
                raise ParamError(name, f"expected a number, got the string {value!r}")
            out[name] = coerce(param, value)
        except ParamError as e:
            raise ConfigError(f"{file_line(path, table, name)}{e}") from None
    return out


def load_plan(source: str, *, base: str | None = None, seeds: list[int] | None = None) -> Plan:
    """Read and check a plan; `base` replaces its base, `seeds` its seeds (the CLI options)."""
    path = find_plan(source)
    data = parse_toml(path)
    for key in data:
        if key not in PLAN_KEYS:
            raise ConfigError(
                f"{file_line(path, None, key)}unknown plan key {key!r} "
                f"(plan keys: {', '.join(PLAN_KEYS)})"
            )
    for key in ("title", "description", "base"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{file_line(path, None, key)}{key}: expected a string")
    plan_base = data.get("base", "default")
    if base is None and ("/" in plan_base or plan_base.endswith(".toml")):
        plan_base = str(path.parent / plan_base) if not Path(plan_base).is_absolute() else plan_base
    raw_seeds = data.get("seeds", [])
    if not isinstance(raw_seeds, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw_seeds
    ):
        raise ConfigError(
            f"{file_line(path, None, 'seeds')}seeds: expected a list of integers >= 0"
        )
    if seeds is not None:
        raw_seeds = list(seeds)
    if len(set(raw_seeds)) != len(raw_seeds):
        raise ConfigError(f"{file_line(path, None, 'seeds')}seeds: a seed is given twice")
    common = _overrides(path, "set", data.get("set", {}))
    raw_variants = data.get("variants", {})
    if not isinstance(raw_variants, dict):
        raise ConfigError(
            f"{file_line(path, None, 'variants')}variants: expected [variants.NAME] tables"
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
        parse_search(search, path)  # checked now, before anything runs
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
                    base.override(**variant.overrides).replace(seed=seed),
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
# The search space

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


def _int_option(path, table: dict, key: str, default: int, low: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(
            f"{file_line(path, 'search', key)}search.{key}: expected an integer "
            f">= {low}, got {value!r}"
        )
    return value


def _dimension(path: Path | None, name: str, spec: Any) -> Dimension:
    where = file_line(path, "search.params", name)
    if name not in BY_NAME:
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
        raise ConfigError(f"{file_line(path, '', 'search')}search: expected a [search] table")
    for key in table:
        if key not in SEARCH_KEYS:
            raise ConfigError(
                f"{file_line(path, 'search', key)}unknown search key {key!r} "
                f"(keys: {', '.join(SEARCH_KEYS)})"
            )
    sampler = table.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise ConfigError(
            f"{file_line(path, 'search', 'sampler')}search.sampler: expected one of "
            f"{', '.join(SAMPLERS)}, got {sampler!r}"
        )
    pruner = table.get("pruner", "median")
    if pruner not in PRUNERS:
        raise ConfigError(
            f"{file_line(path, 'search', 'pruner')}search.pruner: expected one of "
            f"{', '.join(PRUNERS)}, got {pruner!r}"
        )
    seed = table.get("seed")
    if seed is not None:
        seed = _int_option(path, table, "seed", 0, 0)
    raw_params = table.get("params")
    if raw_params is None or not raw_params:
        raise ConfigError(
            f"{file_line(path, 'search', 'params')}search.params: name the parameters "
            f'to search, e.g. params = ["lr", "dropout"]'
        )
    if isinstance(raw_params, list):
        if not all(isinstance(n, str) for n in raw_params):
            raise ConfigError(
                f"{file_line(path, 'search', 'params')}search.params: expected parameter names"
            )
        raw_params = {n: {} for n in raw_params}
    elif not isinstance(raw_params, dict):
        raise ConfigError(
            f"{file_line(path, 'search', 'params')}search.params: expected a list of names or a table"
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
