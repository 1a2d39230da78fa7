"""Sweep plans: the shipped designs, loading and checking plans, expansion, sweep ids, the CLI's
dry run and errors. Nothing here trains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner
from vqatune.engine import config, plans
from vqatune.engine.config import ConfigError
from vqatune.tui.cli import app

REPO = Path(__file__).resolve().parents[1]


def write_plan(tmp_path: Path, text: str, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def variant_overrides(plan):
    return {v.name: v.overrides for v in plan.variants}


def test_shipped_designs_are_the_guides_section_3():
    assert variant_overrides(plans.load_plan("learning-rate")) == {
        "base": {"lr": 2.8e-4, "xvlm_lr": 5e-5},
        "higher": {"lr": 3.5e-4, "xvlm_lr": 7e-5},
        "lower": {"lr": 2e-4, "xvlm_lr": 3e-5},
    }
    assert variant_overrides(plans.load_plan("model-complexity")) == {
        "simple": {"AOA_layers": 4, "num_hid": 512},
        "medium": {"AOA_layers": 6, "num_hid": 1024},
        "complex": {"AOA_layers": 8, "num_hid": 2048},
    }
    assert variant_overrides(plans.load_plan("isubgvqa")) == {
        "base": {"mgat_layers": 4, "alpha": 1.0, "beta": 10.0},
        "stronger": {"mgat_layers": 6, "alpha": 1.5, "beta": 15.0},
        "conservative": {"mgat_layers": 3, "alpha": 0.8, "beta": 8.0},
    }
    seeds = plans.load_plan("seeds")
    assert [v.name for v in seeds.variants] == ["base"] and len(seeds.seeds) == 3


def test_every_shipped_plan_loads_and_lists(isolated):
    names = {p.name: p.kind for p in plans.list_plans()}
    assert names == {
        "learning-rate": "variants",
        "model-complexity": "variants",
        "isubgvqa": "variants",
        "seeds": "variants",
        "search": "search",
    }
    for name in names:
        assert plans.load_plan(name).base == "default"


def test_base_option_replaces_the_plans_base_and_expansion_is_variants_by_seeds():
    plan = plans.load_plan("learning-rate", base="smoke", seeds=[1, 2])
    runs = plans.expand(plan)
    assert [r.key for r in runs] == [
        "base/seed1",
        "base/seed2",
        "higher/seed1",
        "higher/seed2",
        "lower/seed1",
        "lower/seed2",
    ]
    smoke = config.load("smoke")
    higher = runs[3].config
    assert (higher.lr, higher.xvlm_lr, higher.seed) == (3.5e-4, 7e-5, 2)
    assert higher.changed_from(smoke) == {"lr": 3.5e-4, "xvlm_lr": 7e-5, "seed": 2}
    assert runs[3].overrides == {"lr": 3.5e-4, "xvlm_lr": 7e-5, "seed": 2}


def test_plan_without_seeds_uses_the_base_seed_and_set_applies_to_all(tmp_path):
    path = write_plan(
        tmp_path,
        'base = "smoke"\n[set]\nepochs = 2\n[variants.a]\nlr = 1e-4\n[variants.b]\nlr = 2e-4\n',
    )
    runs = plans.expand(plans.load_plan(str(path)))
    assert [r.key for r in runs] == ["a/seed1204", "b/seed1204"]
    assert all(r.config.epochs == 2 for r in runs)
    assert runs[1].overrides == {"epochs": 2, "lr": 2e-4, "seed": 1204}
    # what a variant varies wins over an X-VLM YAML, as a value given on the command line
    assert all(r.config.given == {"lr"} for r in runs)


def test_plan_base_file_is_relative_to_the_plan(tmp_path):
    (tmp_path / "mine.toml").write_text('extends = "smoke"\n[training]\nbatch_size = 4\n')
    plan_dir = tmp_path / "plans"
    plan_dir.mkdir()
    path = write_plan(plan_dir, 'base = "../mine.toml"\n')
    runs = plans.expand(plans.load_plan(str(path)))
    assert runs[0].config.batch_size == 4 and runs[0].key == "base/seed1204"


def test_sweep_id_is_stable_and_follows_the_expansion(tmp_path):
    a = plans.load_plan("learning-rate", base="smoke")
    assert plans.make_sweep_id(a) == plans.make_sweep_id(
        plans.load_plan("learning-rate", base="smoke")
    )
    assert plans.make_sweep_id(a).startswith("learning-rate-smoke-")
    assert plans.make_sweep_id(a) != plans.make_sweep_id(
        plans.load_plan("learning-rate", base="smoke", seeds=[1, 2])
    )
    assert plans.make_sweep_id(a) != plans.make_sweep_id(
        plans.load_plan("learning-rate", base="cpu-quick")
    )


def test_search_sweep_id_ignores_n_trials_so_raising_it_adds_trials(tmp_path):
    ids = []
    for n, lr in ((4, "{}"), (8, "{}"), (8, "{ high = 3e-4 }")):
        path = write_plan(
            tmp_path,
            f'base = "smoke"\n[search]\nn_trials = {n}\n[search.params]\nlr = {lr}\n',
            "s.toml",
        )
        ids.append(plans.make_sweep_id(plans.load_plan(str(path))))
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[variants.a]\nlrr = 1e-4\n", "plan.toml:2: unknown parameter 'lrr'; did you mean 'lr'?"),
        ("[variants.a]\nlr = -1.0\n", "plan.toml:2: lr: must be > 0"),
        ('[variants.a]\nepochs = "3"\n', "plan.toml:2: epochs: expected a number"),
        ('seeds = [1, "x"]\n', "plan.toml:1: seeds: expected a list of integers"),
        ("seeds = [1, 1]\n", "seeds: a seed is given twice"),
        ('bases = "smoke"\n', "plan.toml:1: unknown plan key 'bases'"),
        ("[set]\ndropout = 1.5\n", "plan.toml:2: dropout: must be >= 0.0 and < 1.0"),
        ('[variants."a b"]\nlr = 1e-4\n', "variant name 'a b'"),
        ('[variants.a]\nlr = 1e-4\n[search]\nparams = ["lr"]\n', "either [variants.*] or [search]"),
        (
            '[search]\nsampler = "cma"\nparams = ["lr"]\n',
            "plan.toml:2: search.sampler: expected one of",
        ),
        ('seeds = [1, 2]\n[search]\nparams = ["lr"]\n', "seeds are for plans with variants"),
    ],
)
def test_plan_errors_name_the_file_line_and_key(tmp_path, text, message):
    path = write_plan(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        plans.load_plan(str(path))
    assert message in str(e.value)


def test_unknown_plan_name_suggests():
    with pytest.raises(ConfigError, match="did you mean 'learning-rate'"):
        plans.load_plan("learning-rat")


def test_plans_in_the_working_directory_are_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "presets" / "experiments").mkdir(parents=True)
    write_plan(tmp_path / "presets" / "experiments", "[variants.x]\ngamma = 3\n", "mine.toml")
    assert plans.load_plan("mine").variants[0].overrides == {"gamma": 3}
    assert "mine" in {p.name for p in plans.list_plans()}


def test_cli_dry_run_lists_the_runs_and_creates_nothing(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            "model-complexity",
            "--base",
            "smoke",
            "--seeds",
            "1,2",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--dry-run",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["key"] for r in data["runs"]][:2] == ["simple/seed1", "simple/seed2"]
    assert data["runs"][5]["overrides"] == {"AOA_layers": 8, "num_hid": 2048, "seed": 2}
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope"], "error: nope: no such plan"),
        (["seeds", "--seeds", "1,x"], "error: --seeds '1,x': expected integers"),
        (["seeds", "--parallel", "0"], "error: --parallel must be >= 1"),
        (["seeds", "--gpus", "0,0"], "error: --gpus: a GPU is given twice"),
        (["seeds", "--storage", "sqlite:///x.db"], "are for plans with a [search] table"),
        (["search", "--storage", "nonsense"], "error: --storage 'nonsense': expected an Optuna"),
        (["seeds", "--base", "nosuch"], "error: nosuch: no such preset or file"),
    ],
)
def test_cli_user_errors_are_one_line_exit_2_and_write_nothing(tmp_path, args, message):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["sweep", *args, "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not runs.exists()


def test_plans_command_lists_the_shipped_plans(isolated):
    result = CliRunner().invoke(app, ["plans", "--json"])
    assert result.exit_code == 0
    assert {p["name"] for p in json.loads(result.output)} >= {"learning-rate", "seeds", "search"}


def test_cli_and_sweep_engine_import_no_optuna_or_torch():
    code = (
        "import sys; import vqatune.tui.cli, vqatune.engine.sweep, vqatune.engine.search; "
        "bad = [m for m in ('optuna', 'torch', 'textual') if m in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sweep_modules_import_in_layers_without_a_cycle():
    """plans < sweepstore < slots, compare < sweep, search: no module imports one above it,
    not even inside a function (the old sweep.py imported search.py there to dodge a cycle)."""
    import ast
    from pathlib import Path

    import vqatune.engine

    layers = {
        "plans": 0,
        "sweepstore": 1,
        "slots": 1,
        "compare": 2,
        "sweep": 3,
        "search": 3,
    }
    engine_dir = Path(vqatune.engine.__file__).parent
    for name, layer in layers.items():
        tree = ast.parse((engine_dir / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in layers:
                assert layers[node.module] < layer, f"{name}.py imports {node.module}"


def test_package_build_ships_the_experiment_plans(tmp_path):
    """What a wheel would hold: setuptools' build_py of a copy of the source tree."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache"
        ),
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "-d",
            str(out),
        ],
        cwd=src,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Package would be ignored" not in result.stderr
    shipped = {p.name for p in (out / "vqatune" / "presets" / "experiments").glob("*.toml")}
    assert shipped == {
        "learning-rate.toml",
        "model-complexity.toml",
        "isubgvqa.toml",
        "seeds.toml",
        "search.toml",
    }
