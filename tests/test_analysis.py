"""`vqatune analyze`: runs as trials for Optuna's importance evaluators, filters, and the
parallel-coordinates picture (positions, brushing, and a property test of the drawing)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from analysis_fixtures import make_search_store
from hypothesis import given, settings
from hypothesis import strategies as st
from tui_fixtures import make_run
from typer.testing import CliRunner
from vqatune.engine import analysis
from vqatune.engine.config import ConfigError
from vqatune.tui import parcoords
from vqatune.tui.cli import app


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    runs = tmp_path_factory.mktemp("analysis") / "runs"
    make_search_store(runs)
    make_run(runs, "20260103-100000-died-dddd", state="running", steps=5)  # crashed: unscored
    return runs


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_lr_matters_most_and_constants_are_left_out(store):
    points = analysis.load_points(analysis.select_runs(runs_dir=store))
    result = analysis.analyse(points)
    assert result.evaluator == "ped-anova" and result.seed is None
    assert (result.n_runs, result.n_used) == (25, 24)
    assert result.params[0] == "lr"
    assert set(result.params) == {"lr", "dropout", "use_counter", "activation"}
    assert "epochs" in result.constant and "seed" in result.constant
    assert sum(result.importances.values()) == pytest.approx(1.0)
    assert result.warning is None  # 24 runs is above PED-ANOVA's minimum


def test_distributions_handle_bool_choice_and_log_scales():
    assert analysis.distribution("use_counter", [True, False]).choices == (False, True)
    assert analysis.distribution("activation", ["swish", "relu"]).choices == ("relu", "swish")
    lr = analysis.distribution("lr", [1e-5, 3e-4, 1e-3])
    assert lr.log and (lr.low, lr.high) == (1e-5, 1e-3)
    assert not analysis.distribution("dropout", [0.1, 0.5]).log


def test_fanova_reports_its_seed_and_few_runs_warn(store):
    points = analysis.load_points(analysis.select_runs(runs_dir=store))[:8]
    result = analysis.analyse(points, evaluator="fanova", seed=3)
    assert result.seed == 3 and result.importances
    assert "only 8 runs" in result.warning


def test_filters(store):
    dirs = analysis.select_runs(runs_dir=store)
    low_lr = analysis.load_points(dirs, filters=[analysis.parse_filter("lr<1e-4")])
    assert low_lr and all(p.values["lr"] < 1e-4 for p in low_lr)
    relu = analysis.load_points(dirs, filters=[analysis.parse_filter("activation=relu")])
    assert relu and all(p.values["activation"] == "relu" for p in relu)
    done = analysis.load_points(dirs, filters=[analysis.parse_filter("state!=crashed")])
    assert len(done) == 24
    with pytest.raises(ConfigError, match="'colour' is neither a parameter"):
        analysis.parse_filter("colour=red")


def test_analyze_cli(store):
    code, out, err = cli("analyze", "--runs-dir", store)
    assert code == 0, err
    assert "ped-anova (deterministic) · 24 of 25 runs used" in out
    assert out.splitlines()[1].split()[0] == "lr"
    code, out, _ = cli("analyze", "--runs-dir", store, "--json", "-f", "lr>=1e-4")
    data = json.loads(out)
    assert data["runs_used"] < 24 and all(p["params"]["lr"] >= 1e-4 for p in data["points"])
    code, out, _ = cli("analyze", "--runs-dir", store, "--plot")
    assert code == 0 and "lr" in out and "best_accuracy" in out
    code, _, err = cli("analyze", "--runs-dir", store, "--metric", "speed")
    assert code == 2 and err.strip().startswith("error: --metric 'speed'")
    code, _, err = cli("analyze", "--runs-dir", store, "-f", "lr>1")
    assert code == 2 and err.strip() == "error: no runs to analyse (the filters keep none)"


def test_analyze_few_runs_warns(store):
    first = sorted(p.name for p in store.iterdir() if p.name.startswith("20260102"))[:3]
    code, out, err = cli("analyze", *first, "--runs-dir", store)
    assert code == 0 and "only 3 runs" in err


# ----------------------------------------------------------------------------------------------
# Parallel coordinates


@st.composite
def run_sets(draw):
    n_runs = draw(st.integers(1, 12))
    n_axes = draw(st.integers(1, 6))
    runs = []
    for _ in range(n_runs):
        v = {f"p{j}": draw(st.floats(1e-4, 1e-1)) for j in range(n_axes)}
        v["act"] = draw(st.sampled_from(["relu", "swish", "gelu"]))
        runs.append({"values": v, "metric": draw(st.floats(0, 1))})
    return runs, [*(f"p{j}" for j in range(n_axes)), "act"]


@settings(max_examples=40, deadline=None)
@given(run_sets(), st.integers(40, 140), st.integers(10, 40))
def test_every_line_crosses_each_axis_at_its_own_value(data, width, height):
    points, params = data
    axes = parcoords.build_axes(points, params, "metric")
    pos = parcoords.positions(points, axes)
    layout = parcoords.Layout(width, height)
    bits, _ = parcoords.draw(pos, pos[:, -1], layout)
    cols = layout.axis_columns(len(axes))
    for i, p in enumerate(points):
        for j, axis in enumerate(axes):
            value = p["metric"] if j == len(axes) - 1 else p["values"][axis.name]
            y = int(layout.dot_y(np.array([axis.position(value)]))[0])
            bit = parcoords._DOT_VALUES[y % 4]  # the dot's left column (x = 2 * col)
            assert bits[y // 4, cols[j]] & bit, (i, axis.name, value)


def test_brushes_select_and_fade():
    points = [{"values": {"x": float(i)}, "metric": i / 10} for i in range(11)]
    axes = parcoords.build_axes(points, ["x"], "acc")
    pos = parcoords.positions(points, axes)
    keep = parcoords.selected(pos, [parcoords.Brush(0, 0.5, 1.0)])
    assert keep.tolist() == [False] * 5 + [True] * 6
    moved = parcoords.Brush(0, 0.5, 1.0).moved(0.2)
    assert (moved.low, moved.high) == (0.5, 1.0)  # stays on the axis
    _, colours = parcoords.draw(pos, pos[:, -1], parcoords.Layout(40, 12), keep)
    assert (colours == 0).any() and (colours > 0).any()  # faded and coloured lines
    text = parcoords.render(points, axes, 40, 12, brushes=[parcoords.Brush(0, 0.5, 1.0)])
    assert text.plain.splitlines()[-2].rstrip().endswith("1")  # max of the metric axis


def test_run_values_read_as_text_equal_the_validated_config(store):
    from vqatune.engine import config

    for d in sorted(store.iterdir())[:3]:
        assert analysis.run_values(d) == config.load(str(d / "config.toml")).to_dict()
