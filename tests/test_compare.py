"""One comparison (engine/compare.py) behind `vqatune compare`, the Compare screen and a sweep's
table: the same runs give the same differing parameters, seed groups and mean ± std in all three."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from test_runs_cli import cli, finished_run
from textual.widgets import DataTable
from tui_fixtures import make_store
from typer.testing import CliRunner
from vqatune.engine import compare as comparing
from vqatune.engine import config, plans, sweepstore
from vqatune.engine.events import MetricsWriter, write_json_atomic
from vqatune.tui import services
from vqatune.tui.app import VQATuneApp
from vqatune.tui.cli import app as cli_app

PLAN = """\
title = "lr"
base = "smoke"
seeds = [1, 2]
[variants.base]
[variants.high]
lr = 5e-4
"""
# Best validation accuracy of each run; None: the run ended before its first evaluation.
BEST = {"base/seed1": 0.60, "base/seed2": 0.64, "high/seed1": 0.70, "high/seed2": None}


def finish(run_dir: Path, best: float | None, steps: int = 20) -> None:
    """Eval events rising to `best` (none when None), a done status that agrees with them."""
    w = MetricsWriter(run_dir / "metrics.jsonl")
    for s in range(1, steps + 1):
        w.write("step", step=s, epoch=0, loss=1.0 / s, samples_per_s=50.0)
        if best is not None and s % 10 == 0:
            w.write("eval", step=s, epoch=0, accuracy=best - 0.1 * (steps - s) / steps)
    w.write("end", state="done", step=steps)
    w.close()
    now = time.time()
    status = {"state": "done", "step": steps, "total_steps": steps, "started": now - 30}
    status.update(ended=now, heartbeat=now, best_accuracy=best, last_accuracy=best)
    write_json_atomic(run_dir / "status.json", status)


@pytest.fixture
def swept(tmp_path, monkeypatch):
    """A finished variants sweep, 2 variants x 2 seeds, its runs written by hand."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(services, "gpu_suggestion", lambda: (None, "no NVIDIA GPU"))
    plan_path = tmp_path / "lr.toml"
    plan_path.write_text(PLAN)
    plan = plans.load_plan(str(plan_path))
    sweep = sweepstore.open_sweep(plan, tmp_path / "runs")
    dirs = []
    for p in plans.expand(plan):
        run_dir = sweepstore.create_sweep_run(
            sweep,
            p.config.replace(name=f"lr-{p.variant}-s{p.seed}"),  # an identity parameter
            name=f"lr-{p.variant}-s{p.seed}",
            overrides=p.overrides,
            tags={"sweep_key": p.key, "variant": p.variant, "seed": p.seed},
        )
        finish(run_dir, BEST[p.key])
        dirs.append(run_dir)
    return sweep, dirs


def screen_tables(runs_dir: Path, dirs: list[Path]) -> tuple[list[list[str]], list[list[str]]]:
    async def run():
        tui = VQATuneApp(runs_dir=runs_dir, start="runs")
        async with tui.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            tui.open_compare(dirs)
            await pilot.pause()
            await tui.workers.wait_for_complete()
            await pilot.pause()
            return tuple(
                [[str(c) for c in t.get_row(k)] for k in t.rows]
                for t in (
                    tui.screen.query_one("#compare-params", DataTable),
                    tui.screen.query_one("#compare-metrics", DataTable),
                )
            )

    return asyncio.run(run())


def test_cli_screen_and_sweep_table_agree(swept):
    sweep, dirs = swept
    result = CliRunner().invoke(cli_app, ["compare", *map(str, dirs), "--json"])
    assert result.exit_code == 0, result.stderr
    cli = json.loads(result.stdout)
    params, metrics = screen_tables(sweep.runs_dir, dirs)
    table = comparing.compare_sweep(sweep, curves=False)

    # What differs: lr and seed, never the runs' names (each run has its own).
    assert list(cli["differing"]) == ["lr", "seed"]
    assert [row[0] for row in params] == ["lr", "seed"]
    assert {k for row in table["variants"] for k in row["overrides"]} == {"lr"}

    # The seed groups: one per variant, in all three.
    by_variant = {row["variant"]: row for row in table["variants"]}
    assert [g["seeds"] for g in cli["groups"]] == [[1, 2], [1, 2]]
    base_group, high_group = cli["groups"]
    assert base_group["runs"] == [d.name for d in dirs[:2]]
    for group, variant in ((base_group, "base"), (high_group, "high")):
        row = by_variant[variant]
        assert group["mean"]["best_accuracy"] == pytest.approx(row["best_mean"])
        assert group["mean"]["final_accuracy"] == pytest.approx(row["final_mean"])
        assert group["std"]["best_accuracy"] == pytest.approx(row["best_std"])
    assert base_group["std"]["best_accuracy"] == pytest.approx(0.04 / 2**0.5)
    # One value says nothing about the spread: None, never 0.0, in all three.
    assert high_group["mean"]["best_accuracy"] == pytest.approx(0.70)
    assert high_group["std"]["best_accuracy"] is None
    assert by_variant["high"]["best_std"] is None and by_variant["high"]["n"] == 1
    seed_rows = [row for row in metrics if row[0] == "seeds 1, 2"]
    assert seed_rows[0][1:3] == [f"best 0.6200 ± {0.04 / 2**0.5:.4f}"] * 2
    assert seed_rows[1][3:5] == ["best 0.7000"] * 2

    printed = CliRunner().invoke(cli_app, ["compare", *map(str, dirs)]).stdout
    high = printed[printed.index("(seeds 1, 2; " + dirs[2].name) :]
    best_line = next(line for line in high.splitlines() if "best val accuracy" in line)
    assert best_line.split() == ["best", "val", "accuracy", "0.7000"]  # no "± 0.0000"

    # Every run's best and final accuracy are the same numbers everywhere.
    table_runs = {r["id"]: r for row in table["variants"] for r in row["runs"]}
    best_row = next(row for row in metrics if row[0] == "best val acc")
    for i, run in enumerate(cli["runs"]):
        best = run["metrics"]["best_accuracy"]
        assert table_runs[run["id"]]["best_accuracy"] == best
        assert best_row[i + 1] == ("-" if best is None else f"{best:.4f}")


def test_mean_std_of_one_value_has_no_std():
    assert comparing.mean_std([0.5]) == (0.5, None)
    assert comparing.mean_std([]) == (None, None)
    mean, std = comparing.mean_std([0.5, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.2 / 2**0.5)


def test_compare_lists_differing_params_and_seed_groups(tmp_path):
    make_store(tmp_path / "runs")
    dirs = sorted((tmp_path / "runs").iterdir())[:3]
    c = comparing.compare(dirs)
    assert [name for name, _ in c.differing] == ["lr", "seed"]
    lr = dict(c.differing)["lr"]
    assert lr == [2.8e-4, 2.8e-4, 5e-4]
    assert len(c.groups) == 1
    group = c.groups[0]
    assert [r.info.id for r in group.runs] == [d.name for d in dirs[:2]] and group.seeds == [1, 2]
    bests = [c.runs[0].metrics["best_accuracy"], c.runs[1].metrics["best_accuracy"]]
    assert group.mean["best_accuracy"] == pytest.approx(sum(bests) / 2)
    assert group.std["best_accuracy"] == pytest.approx(abs(bests[0] - bests[1]) / 2**0.5)
    assert len(c.runs[0].curves(400)["val accuracy"][0]) == 4  # evals at 10, 20, 30, 40


# ----------------------------------------------------------------------------------------------
# `vqatune compare`


@pytest.fixture
def runs(tmp_path, monkeypatch):
    d = tmp_path / "runs"
    monkeypatch.setenv("VQATUNE_RUNS", str(d))
    return d


def test_compare_presets_and_seeds(runs):
    a1 = finished_run("smoke", seed=1, accuracy_shift=0.00)
    a2 = finished_run("smoke", seed=2, accuracy_shift=0.02)
    a3 = finished_run("smoke", seed=3, accuracy_shift=0.04)
    b = finished_run("cpu-quick", seed=1, accuracy_shift=0.1, steps=20)
    code, out, err = cli("compare", a1.name, a2.name, a3.name, b.name, "--json")
    assert code == 0, err
    data = json.loads(out)
    differing = data["differing"]
    assert differing["seed"] == [1, 2, 3, 1]
    quick = config.load("cpu-quick").num_hid
    assert quick != 32 and differing["num_hid"] == [32, 32, 32, quick]
    assert "max_boxes" not in differing and "name" not in differing  # only what differs
    assert [r["metrics"]["best_accuracy"] for r in data["runs"]] == pytest.approx(
        [0.8, 0.82, 0.84, 20 / 30 + 0.1]
    )
    assert data["runs"][3]["metrics"]["steps"] == 20
    assert data["runs"][0]["metrics"]["final_loss"] == pytest.approx(2.0 / 40)
    (group,) = data["groups"]
    assert group["runs"] == [a1.name, a2.name, a3.name] and group["seeds"] == [1, 2, 3]
    assert group["mean"]["best_accuracy"] == pytest.approx(0.82)
    assert group["std"]["best_accuracy"] == pytest.approx(0.02)

    code, out, _ = cli("compare", a1.name, a2.name, a3.name, b.name)
    assert code == 0
    assert "parameters that differ" in out and "num_hid" in out and "batch_size" in out
    assert "smoke × 3 seeds" in out and "0.8200 ± 0.0200" in out
    assert "max_boxes" not in out


def test_compare_plot(runs):
    a = finished_run("smoke", seed=1)
    b = finished_run("smoke", seed=2, accuracy_shift=0.05)
    code, out, _ = cli("compare", a.name, b.name, "--plot")
    assert code == 0
    assert "validation accuracy" in out and "training loss" in out
    assert out.count(a.name) >= 3 and "\x1b[" not in out  # legends; plain when piped
    # A second, different comparison in the same process (plotext keeps global state).
    c = finished_run("smoke", seed=3, steps=20, flat=0.25)
    d = finished_run("smoke", seed=4, steps=20, flat=0.03)
    code, out, _ = cli("compare", c.name, d.name, "--plot")
    assert code == 0 and out.count(c.name) >= 3


def test_compare_needs_two_distinct_runs(runs):
    a = finished_run()
    assert cli("compare", a.name)[0] == 2
    code, _, err = cli("compare", a.name, a.name)
    assert code == 2 and "twice" in err
