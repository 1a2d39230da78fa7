"""The [search] table: default ranges from the guide, explicit ranges and choices, grids,
samplers and pruners, storage URLs. Nothing here trains."""

from __future__ import annotations

import optuna
import pytest
from vqatune.engine import plans, search
from vqatune.engine.config import ConfigError


def dims(table: dict) -> dict[str, plans.Dimension]:
    return {d.name: d for d in plans.parse_search(table).dims}


def test_defaults_are_the_guides_recommended_ranges_with_log_learning_rates():
    d = dims(
        {
            "params": [
                "lr",
                "xvlm_lr",
                "dropout",
                "AOA_layers",
                "activation",
                "use_counter",
                "use_mgat",
            ]
        }
    )
    assert (d["lr"].low, d["lr"].high, d["lr"].log) == (1e-4, 5e-4, True)
    assert (d["xvlm_lr"].low, d["xvlm_lr"].high, d["xvlm_lr"].log) == (1e-5, 1e-4, True)
    assert (d["dropout"].kind, d["dropout"].low, d["dropout"].high, d["dropout"].log) == (
        "float",
        0.3,
        0.6,
        False,
    )
    assert (d["AOA_layers"].kind, d["AOA_layers"].low, d["AOA_layers"].high) == ("int", 4, 8)
    assert d["activation"].choices == ("relu", "swish")
    assert d["use_counter"].choices == (False, True)
    assert d["use_mgat"].choices == (0, 1)


def test_spec_defaults():
    spec = plans.parse_search({"params": ["lr"]})
    assert (spec.sampler, spec.n_trials, spec.pruner, spec.pruner_startup_trials) == (
        "tpe",
        plans.DEFAULT_N_TRIALS,
        "median",
        5,
    )


def test_explicit_ranges_choices_and_steps():
    d = dims(
        {
            "params": {
                "lr": {"low": 1e-5, "high": 1e-3},
                "dropout": {"high": 0.5},
                "num_hid": {"choices": [512, 1024]},
                "gamma": [1, 2],
                "topk": {"low": 3, "high": 9, "step": 3},
                "epochs": {"low": 5, "high": 10},
            }
        }
    )
    assert (d["lr"].low, d["lr"].high, d["lr"].log) == (1e-5, 1e-3, True)
    assert (d["dropout"].low, d["dropout"].high) == (0.3, 0.5)
    assert d["num_hid"].choices == (512, 1024) and d["gamma"].choices == (1, 2)
    assert d["topk"].grid_values(3) == [3, 6, 9]
    assert (d["epochs"].low, d["epochs"].high) == (5, 10)


def test_grid_values_and_grid_size_bounds_n_trials():
    spec = plans.parse_search(
        {
            "sampler": "grid",
            "grid_points": 3,
            "n_trials": 100,
            "params": {"lr": {}, "activation": {}},
        }
    )
    grid = spec.grid()
    assert grid["lr"] == [1e-4, pytest.approx(2.23607e-4), 5e-4]  # log-spaced
    assert grid["activation"] == ["relu", "swish"]
    assert spec.n_trials == 6
    assert (
        plans.parse_search(
            {"sampler": "grid", "n_trials": 2, "params": ["activation", "use_mgat"]}
        ).n_trials
        == 2
    )


@pytest.mark.parametrize(
    "table, message",
    [
        ({"params": ["seed"]}, "seed: has no recommended range to search"),
        ({"params": ["nosuch"]}, "unknown parameter 'nosuch'"),
        ({"params": {"lr": {"low": 5e-4, "high": 1e-4}}}, "low (0.0005) must be below high"),
        ({"params": {"lr": {"low": -1.0, "high": 1.0}}}, "lr: must be > 0"),
        ({"params": {"alpha": {"low": 0.0, "high": 1.0, "log": True}}}, "log scale needs low > 0"),
        ({"params": {"lr": {"lo": 1e-4}}}, "unknown key 'lo'"),
        ({"params": {"activation": {"choices": ["relu", "mish"]}}}, "activation: expected one of"),
        ({"params": {"activation": {"low": 1, "high": 2}}}, "is not a number: give choices"),
        ({"params": []}, "search.params: name the parameters"),
        ({"params": ["lr"], "n_trials": 0}, "search.n_trials: expected an integer >= 1"),
        ({"params": ["lr"], "pruner": "hyperband"}, "search.pruner: expected one of median, none"),
        ({"params": ["lr"], "trials": 3}, "unknown search key 'trials'"),
    ],
)
def test_search_errors(table, message):
    with pytest.raises(ConfigError) as e:
        plans.parse_search(table)
    assert message in str(e.value)


def test_search_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text(
        'base = "smoke"\n[search]\nn_trials = 4\n[search.params]\nlr = {}\n'
        "dropout = { low = 0.9, high = 0.1 }\n"
    )
    with pytest.raises(ConfigError, match=r"plan.toml:6: dropout: low \(0.9\) must be below"):
        plans.load_plan(str(path))


def test_samplers_and_pruners():
    spec = plans.parse_search({"params": ["lr"], "seed": 3})
    assert isinstance(search.make_sampler(spec), optuna.samplers.TPESampler)
    spec.sampler = "random"
    assert isinstance(search.make_sampler(spec), optuna.samplers.RandomSampler)
    spec.sampler = "grid"
    assert isinstance(search.make_sampler(spec), optuna.samplers.GridSampler)
    assert isinstance(search.make_pruner(spec), optuna.pruners.MedianPruner)
    spec.pruner = "none"
    assert isinstance(search.make_pruner(spec), optuna.pruners.NopPruner)


def test_suggested_values_stay_in_range_and_grid_trials_cover_the_grid(tmp_path):
    spec = plans.parse_search(
        {"sampler": "grid", "params": {"lr": {}, "use_mgat": {}}, "grid_points": 2}
    )
    study = search.load_study(spec, search.default_storage(tmp_path), "grid")
    seen = set()
    for _ in range(spec.n_trials):
        trial = study.ask()
        params = search.trial_params(trial, spec)
        seen.add((params["lr"], params["use_mgat"]))
        study.tell(trial, 0.5)  # the grid sampler would call study.stop() here: must not raise
    assert seen == {(1e-4, 0), (1e-4, 1), (5e-4, 0), (5e-4, 1)}

    tpe = plans.parse_search({"params": ["lr", "AOA_layers"], "seed": 0})
    study = search.load_study(tpe, f"journal:{tmp_path / 'j.log'}", "tpe")
    for _ in range(5):
        trial = study.ask()
        p = search.trial_params(trial, tpe)
        assert 1e-4 <= p["lr"] <= 5e-4 and 4 <= p["AOA_layers"] <= 8
        study.tell(trial, p["lr"])
    # A second process opening the same journal sees the same study.
    again = search.load_study(tpe, f"journal:{tmp_path / 'j.log'}", "tpe")
    assert len(again.trials) == 5


def test_storage_urls(tmp_path):
    assert search.default_storage(tmp_path) == f"sqlite:///{tmp_path / 'study.db'}"
    assert isinstance(
        search.open_storage(f"sqlite:///{tmp_path / 'a.db'}"), optuna.storages.RDBStorage
    )
    with pytest.raises(ConfigError, match="expected an Optuna storage URL"):
        search.open_storage("study.db")
    with pytest.raises(ConfigError, match="no directory"):
        search.open_storage(f"journal:{tmp_path / 'missing' / 'j.log'}")
    with pytest.raises(ConfigError, match=r"--storage postgresql://me:\*\*\*@db/x"):
        search.open_storage("postgresql://me:secret@db/x")
    assert search.safe_url("mysql://u:pw@h:3306/db") == "mysql://u:***@h:3306/db"
