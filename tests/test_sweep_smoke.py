"""Sweeps and searches end to end with the real trainer on the `smoke` preset: the shipped
learning-rate plan as 3 variants x 1 seed given on the command line (interrupted and resumed) and a 4-trial Optuna study
that prunes on the trainer's eval events. Two workers sharing a study, and the mean over several
seeds in a sweep's table, are tested with the stand-in trainer (tests/test_sweep_scheduling.py):
they do not depend on what a run does. Every run here is a training process (~10 s to start)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner
from vqatune.engine import compare as comparing
from vqatune.engine import plans, runstore, search, sweepstore
from vqatune.engine.metrics import read_events
from vqatune.tui.cli import app


def vqatune(args: list[str]) -> subprocess.Popen:
    # SIGINT as in a terminal, even when the tests run from a shell that ignores it.
    return subprocess.Popen(
        [sys.executable, "-m", "vqatune.tui.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def early_in_training(runs: Path) -> bool:
    """Some run has finished and another is training but has steps left."""
    infos = runstore.list_runs(runs)
    if not any(r.state == "done" for r in infos):
        return False
    for r in infos:
        if r.state == "running":
            steps = read_events(r.path / "metrics.jsonl", kinds=("step",))
            if (steps[-1]["step"] if steps else 0) <= 3:
                return True
    return False


def test_learning_rate_plan_3_variants_interrupted_then_resumed(tmp_path):
    runs = tmp_path / "runs"
    args = [
        "sweep",
        "learning-rate",
        "--base",
        "smoke",
        "--seeds",
        "7",  # instead of the plan's seeds
        "--parallel",
        "2",
        "--runs-dir",
        str(runs),
    ]
    first = vqatune(args)
    deadline = time.time() + 240
    while not early_in_training(runs) and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 130, out
    before = {r.meta["sweep_key"]: r for r in runstore.list_runs(runs)}
    assert "stopped" in {r.state for r in before.values()}, out
    assert all(r.state not in ("running", "queued") or not r.live for r in before.values())
    finished = {
        k: (r.path / "summary.json").stat().st_mtime for k, r in before.items() if r.state == "done"
    }
    stopped = [k for k, r in before.items() if r.state == "stopped"]
    assert finished

    second = vqatune(args)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    after = runstore.list_runs(runs)
    keys = sorted(r.meta["sweep_key"] for r in after)
    assert keys == [f"{v}/seed7" for v in ("base", "higher", "lower")]
    assert all(r.state == "done" for r in after)
    by_key = {r.meta["sweep_key"]: r for r in after}
    for key, mtime in finished.items():  # kept as they were
        assert (by_key[key].path / "summary.json").stat().st_mtime == mtime
    for key in stopped:  # continued from their checkpoint, in the same run directory
        assert by_key[key].id == before[key].id
        assert read_events(by_key[key].path / "metrics.jsonl", kinds=("resumed",))
    assert by_key["higher/seed7"].meta["overrides"] == {"lr": 3.5e-4, "xvlm_lr": 7e-5, "seed": 7}
    assert f"{len(finished)} of 3 runs already finished, kept" in out
    assert "winner:" in out

    sweep_id = by_key["base/seed7"].meta["sweep"]
    listed = json.loads(
        CliRunner().invoke(app, ["sweeps", "--runs-dir", str(runs), "--json"]).output
    )
    assert [(s["id"], s["done"], s["total"]) for s in listed] == [(sweep_id, 3, 3)]
    table = comparing.compare_sweep(sweepstore.find_sweep(sweep_id, runs))
    rows = {r["variant"]: r for r in table["variants"]}
    assert set(rows) == {"base", "higher", "lower"} and all(r["n"] == 1 for r in rows.values())
    for row in rows.values():
        assert row["best_mean"] == pytest.approx(row["runs"][0]["best_accuracy"])
        assert row["runs"][0]["best_accuracy"] == by_key[f"{row['variant']}/seed7"].best_accuracy
    assert all(c["accuracy"] for c in table["curves"]) and len(table["curves"]) == 3


PRUNING_PLAN = """
base = "smoke"
[set]
eval_every = 2
[search]
sampler = "grid"
seed = 1
pruner = "median"
pruner_startup_trials = 1
[search.params]
lr = { choices = [1e-9, 3e-3] }
log_every = { choices = [1, 2] }
"""


def test_4_trial_study_prunes_the_hopeless_trials(tmp_path):
    path = tmp_path / "prune.toml"
    path.write_text(PRUNING_PLAN)
    plan = plans.load_plan(str(path))
    spec = plans.parse_search(plan.search, path)
    assert spec.n_trials == 4
    sw = sweepstore.open_sweep(plan, tmp_path / "runs")
    storage = search.default_storage(sw.path)
    lines: list[str] = []
    result = search.run_search(
        sw, plan, spec, storage_url=storage, study_name=sw.id, slots=[None], echo=lines.append
    )
    study = optuna.load_study(study_name=sw.id, storage=search.open_storage(storage))
    runs = {r.meta["trial"]: r for r in sweepstore.sweep_runs(sw)}
    assert sorted(runs) == [0, 1, 2, 3] == sorted(result.ran)
    states = {}
    for t in study.trials:
        run = runs[t.number]
        evals = [e["accuracy"] for e in read_events(run.path / "metrics.jsonl", ("eval",))]
        reported = list(t.intermediate_values.values())
        states[t.number] = t.state.name
        if t.params["lr"] == 1e-9:
            # no learning: below the finished trials' median at its first evaluation
            assert t.state.name == "PRUNED" and run.state == "stopped" and run.meta["pruned"]
            # only the first evaluation is reported; the ones the run makes before the stop
            # reaches it (how many depends on the machine's load) are not
            assert reported == evals[:1]
        else:
            assert t.state.name == "COMPLETE" and t.value == max(evals) and run.state == "done"
            assert reported == evals
    assert sorted(states.values()) == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert result.best_params["lr"] == 3e-3
