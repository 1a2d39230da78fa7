"""The run store with the real trainer (`python -m vqatune.engine.train`), on tiny `smoke` runs:
a detached run survives SIGHUP to the shell that started it; kill -9 makes it `crashed`;
`vqatune resume` finishes it from its checkpoint; compare reads runs of two presets and seeds.

Three training processes in all (about 7 s of CPU each); the second run trains while the first
one's tests go on.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys

import polling
import psutil
import pytest
from typer.testing import CliRunner
from vqatune.engine import config, runstore
from vqatune.engine.metrics import read_events
from vqatune.tui.cli import app

# smoke stops at max_steps = 6; an evaluation and a checkpoint at step 3 and at the end.
SETS = ["eval_every=3"]
TIMEOUT_S = 240


wait_for = functools.partial(polling.wait_for, timeout=TIMEOUT_S, every=0.1)


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("real-runs")


@pytest.fixture(scope="module")
def shared():
    return {}


@pytest.fixture(scope="module")
def other_preset_run(runs_dir, tmp_path_factory):
    """A run of another preset (a file extending smoke) and seed, started in the background."""
    preset = tmp_path_factory.mktemp("presets") / "narrow.toml"
    preset.write_text('extends = "smoke"\n[model]\nnum_hid = 16\n[training]\nseed = 7\n')
    cfg = config.load(str(preset), SETS)
    run_dir = runstore.create_run(cfg, source=str(preset), runs_dir=runs_dir)
    proc = runstore.launch(run_dir, detach=True)
    yield run_dir
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_sighup_leaves_it_running_kill_9_crashes_it_resume_finishes(
    runs_dir, other_preset_run, shared
):
    start = [
        sys.executable,
        "-m",
        "vqatune.tui.cli",
        "run",
        "smoke",
        "--detach",
        "--runs-dir",
        str(runs_dir),
        *(w for s in SETS for w in ("--set", s)),
    ]
    # A login shell over SSH: starts the run, then the connection drops (SIGHUP to its group).
    shell = subprocess.Popen(
        ["bash", "-c", " ".join(start) + "; sleep 120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    run_id = shell.stdout.readline().strip()
    run_dir = runs_dir / run_id
    assert run_dir.is_dir(), run_id
    assert wait_for(lambda: runstore.run_info(run_dir).state == "running")
    os.killpg(shell.pid, signal.SIGHUP)
    assert shell.wait(timeout=10) == -signal.SIGHUP

    # It goes on: a checkpoint lands after the hang-up.
    assert wait_for(lambda: read_events(run_dir / "metrics.jsonl", ["checkpoint"]))
    info = runstore.run_info(run_dir)
    assert info.state == "running", info
    trainer = psutil.Process(info.pid)
    trainer.send_signal(signal.SIGSTOP)  # hold it still while we look, then kill -9
    checkpointed = read_events(run_dir / "metrics.jsonl", ["checkpoint"])[-1]["step"]
    trainer.send_signal(signal.SIGKILL)
    assert wait_for(
        lambda: (
            not psutil.pid_exists(info.pid)
            or psutil.Process(info.pid).status() == psutil.STATUS_ZOMBIE
        ),
        timeout=10,
    )
    info = runstore.run_info(run_dir)
    assert info.state == "crashed" and info.step < 6
    assert '"crashed"' in cli("runs", "--runs-dir", runs_dir, "--json")[1]

    code, out, err = cli("resume", run_id, "--runs-dir", runs_dir)
    assert code == 0, out + err
    info = runstore.run_info(run_dir)
    assert info.state == "done" and info.step == 6
    events = read_events(run_dir / "metrics.jsonl")
    seam = [i for i, e in enumerate(events) if e["event"] == "resumed"]
    assert len(seam) == 1
    resumed = events[seam[0]]
    assert resumed["step"] == checkpointed and resumed["from_checkpoint"].endswith("last.pt")
    after = [e["step"] for e in events[seam[0] :] if e["event"] == "step"]
    assert after[0] == checkpointed + 1 and after[-1] == 6
    shared["resumed"] = run_dir


def test_compare_real_runs_of_two_presets_and_seeds(runs_dir, other_preset_run, shared):
    if "resumed" not in shared:
        pytest.skip("needs the run of the previous test")
    assert wait_for(lambda: runstore.run_info(other_preset_run).state == "done")
    a, b = shared["resumed"], other_preset_run
    code, out, err = cli("compare", a.name, b.name, "--runs-dir", runs_dir, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["differing"] == {"seed": [1204, 7], "num_hid": [32, 16]}
    assert data["groups"] == []  # they differ in more than the seed
    for run, run_dir in zip(data["runs"], (a, b)):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert run["metrics"]["best_accuracy"] == pytest.approx(summary["best_accuracy"])
        assert run["metrics"]["steps"] == 6 and run["state"] == "done"
    code, out, _ = cli("compare", a.name, b.name, "--runs-dir", runs_dir, "--plot")
    assert code == 0, out
    assert "num_hid" in out and "validation accuracy" in out
    code, out, _ = cli("show", a.name, "--runs-dir", runs_dir)
    assert code == 0 and "* eval_every = 3" in out and "val accuracy" in out
