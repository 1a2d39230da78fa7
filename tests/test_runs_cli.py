"""`vqatune runs | show | logs | stop | resume` on run dirs written here and runs of the fake
trainer (tests/test_runstore.py); `vqatune compare` is in tests/test_compare.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_runstore import FAKE_TRAINER, wait_for
from typer.testing import CliRunner
from vqatune.engine import config, runstore
from vqatune.engine.events import MetricsWriter, write_json_atomic
from vqatune.tui.cli import app


@pytest.fixture
def runs(tmp_path, monkeypatch):
    d = tmp_path / "runs"
    monkeypatch.setenv("VQATUNE_RUNS", str(d))
    return d


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINER)
    monkeypatch.setattr(runstore, "TRAINER", [sys.executable, str(script)])
    return script


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def finished_run(
    source="smoke", seed=1, name="", accuracy_shift=0.0, steps=40, flat=None, **changes
):
    cfg = config.load(source).replace(seed=seed, **changes)
    run_dir = runstore.create_run(cfg, source=source, name=name)
    w = MetricsWriter(run_dir / "metrics.jsonl")
    for s in range(1, steps + 1):
        w.write("step", step=s, epoch=0, loss=2.0 / s, samples_per_s=50.0)
        if s % 10 == 0:
            w.write(
                "eval",
                step=s,
                epoch=0,
                accuracy=flat if flat is not None else s / (steps + 10) + accuracy_shift,
            )
    w.write("end", state="done", step=steps)
    w.close()
    now = time.time()
    write_json_atomic(
        run_dir / "status.json",
        {
            "state": "done",
            "step": steps,
            "total_steps": steps,
            "epoch": 1,
            "epochs": 1,
            "started": now - 90,
            "ended": now,
            "best_accuracy": steps / (steps + 10) + accuracy_shift,
            "last_accuracy": steps / (steps + 10) + accuracy_shift,
            "heartbeat": now,
        },
    )
    (run_dir / "train.log").write_text("".join(f"line {i}\n" for i in range(1, 6)))
    return run_dir


# ----------------------------------------------------------------------------------------------
# runs


def test_runs_table_filter_and_json(runs):
    done = finished_run(name="first")
    queued = runstore.create_run(config.load("cpu-quick"), source="cpu-quick", name="second")
    code, out, _ = cli("runs")
    assert code == 0
    assert done.name in out and queued.name in out
    assert "second / cpu-quick" in out and "0.8000" in out and "1m30s" in out
    assert "ep 1/1 · 40/40" in out
    code, out, _ = cli("runs", "--state", "queued")
    assert queued.name in out and done.name not in out
    code, out, _ = cli("runs", "--json")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == sorted([done.name, queued.name])
    assert {r["state"] for r in rows} == {"done", "queued"}


def test_runs_errors_and_empty(runs, tmp_path):
    code, out, err = cli("runs", "--state", "finished")
    assert code == 2 and err.startswith("error: --state: unknown state 'finished'")
    assert len(err.strip().splitlines()) == 1
    code, out, _ = cli("runs", "--runs-dir", tmp_path / "nothing")
    assert code == 0 and "no runs" in out


# ----------------------------------------------------------------------------------------------
# show


def test_show_highlights_differences_from_the_preset(runs):
    run_dir = finished_run(lr=2e-3)
    code, out, _ = cli("show", run_dir.name)
    assert code == 0
    assert "done" in out and "smoke" in out
    assert "* lr = 0.002" in out and "(smoke: 0.00028)" in out
    assert "  batch_size = 8" in out  # unchanged values are listed, not starred
    assert "differs from smoke: 2" in out  # lr and seed
    assert "train loss" in out and "▁" in out and "val accuracy" in out


def test_show_json(runs):
    run_dir = finished_run(seed=7)
    code, out, _ = cli("show", run_dir.name[:-1], "--json")
    data = json.loads(out)
    assert data["run"]["id"] == run_dir.name and data["config"]["seed"] == 7
    assert data["changed_from_source"] == {"seed": {"source": 1204, "run": 7}}
    assert data["accuracy"]["step"] == [10, 20, 30, 40]
    assert data["loss"]["value"][0] == 2.0 and not data["loss"]["sampled"]


def test_show_unknown_run_is_one_line_error(runs):
    finished_run()
    code, out, err = cli("show", "nope")
    assert code == 2 and err.startswith("error: no run 'nope'") and "Traceback" not in err


def test_show_survives_missing_files(runs):
    run_dir = finished_run()
    for name in ("config.toml", "metrics.jsonl", "meta.json"):
        (run_dir / name).unlink()
    code, out, err = cli("show", run_dir.name)
    assert code == 0 and "config.toml is missing" in err


def test_show_running_run_samples_gpu_and_process(runs, monkeypatch):
    import psutil
    from test_gpu import GIB, fake_nvml

    run_dir = finished_run()
    write_json_atomic(
        run_dir / "status.json",
        {
            "state": "running",
            "pid": os.getpid(),
            "pid_start_time": psutil.Process().create_time(),
            "heartbeat": time.time(),
            "started": time.time() - 5,
            "step": 3,
            "total_steps": 40,
        },
    )
    fake = fake_nvml([("NVIDIA H100", 20 * GIB, 80 * GIB, 90, {os.getpid(): 6 * GIB})])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    code, out, _ = cli("show", run_dir.name)
    assert code == 0 and "running" in out
    assert "NVIDIA H100: 20.0 / 80.0 GiB, 90% busy; this run 6.0 GiB" in out
    assert "MiB RSS" in out
    data = json.loads(cli("show", run_dir.name, "--json")[1])
    assert data["monitor"]["gpus"][0]["process_memory"] == 6 * GIB

    monkeypatch.delitem(sys.modules, "pynvml")
    monkeypatch.setattr("vqatune.engine.gpu._nvml", lambda: (_ for _ in ()).throw(ImportError()))
    assert "no NVIDIA GPU" in cli("show", run_dir.name)[1]


def test_show_when_the_source_file_is_gone(runs, tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text('extends = "smoke"\n[training]\nlr = 0.002\n')
    run_dir = runstore.create_run(config.load(str(preset), ["seed=5"]), source=str(preset))
    out = cli("show", run_dir.name)[1]
    assert "* seed = 5" in out and "  lr = 0.002" in out  # differs from the file: the --set
    preset.unlink()
    code, out, err = cli("show", run_dir.name)
    assert code == 0 and "no longer resolves" in err and "  seed = 5" in out
    assert "differs from" not in out


# ----------------------------------------------------------------------------------------------
# logs


def test_logs_whole_and_last_lines(runs):
    run_dir = finished_run()
    assert cli("logs", run_dir.name)[1] == "".join(f"line {i}\n" for i in range(1, 6))
    assert cli("logs", run_dir.name, "-n", "2")[1] == "line 4\nline 5\n"
    assert cli("logs", run_dir.name, "-f")[0] == 0  # a finished run: prints and returns


def test_logs_follow_until_the_run_ends(runs, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "30")
    run_dir = runstore.create_run(config.load("smoke"), source="smoke")
    proc = runstore.launch(run_dir, detach=True)
    assert wait_for(lambda: runstore.run_info(run_dir).state == "running")
    code, out, _ = cli("logs", "-f", run_dir.name)
    assert code == 0 and "fake trainer start" in out and "fake trainer done 30" in out
    proc.wait()


def test_logs_follow_ctrl_c_leaves_quietly(runs):
    import psutil

    run_dir = finished_run()
    write_json_atomic(
        run_dir / "status.json",
        {
            "state": "running",
            "pid": os.getpid(),
            "pid_start_time": psutil.Process().create_time(),
            "heartbeat": time.time() + 3600,
        },
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vqatune.tui.cli", "logs", "-f", run_dir.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "line 1\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    # 130, or (rarely, by timing) killed by the SIGINT itself: a shell reads both as 130
    assert proc.returncode in (130, -signal.SIGINT) and "Traceback" not in err, err


# ----------------------------------------------------------------------------------------------
# stop, resume


def test_stop_then_resume(runs, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "300")
    run_dir = runstore.create_run(config.load("smoke"), source="smoke")
    proc = runstore.launch(run_dir, detach=True)
    assert wait_for(lambda: runstore.run_info(run_dir).state == "running")
    code, out, _ = cli("stop", run_dir.name)
    assert code == 0 and f"{run_dir.name}: stopped" in out
    proc.wait()
    code, _, err = cli("stop", run_dir.name)
    assert code == 2 and "is not running (state: stopped)" in err

    monkeypatch.setenv("FAKE_DELAY", "0.001")
    code, out, err = cli("resume", run_dir.name)
    assert code == 0, err
    assert "resumed from last.pt" in err and f"run {run_dir.name}: done" in out
    assert "fake trainer resume" in (run_dir / "train.log").read_text()
    assert runstore.run_info(run_dir).state == "done"
    code, _, err = cli("resume", run_dir.name)
    assert code == 2 and "ended as done" in err


def test_kill_9_then_resume_detached(runs, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "300")
    run_dir = runstore.create_run(config.load("smoke"), source="smoke")
    proc = runstore.launch(run_dir, detach=True)
    assert wait_for(lambda: (runstore.run_info(run_dir).step or 0) >= 6)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert '"crashed"' in cli("runs", "--json")[1]
    monkeypatch.setenv("FAKE_DELAY", "0.001")
    code, _, err = cli("resume", run_dir.name, "--detach")
    assert code == 0 and "vqatune logs -f" in err
    assert runstore.run_info(run_dir).state in ("queued", "running", "done")
    launched = json.loads((run_dir / runstore.LAUNCH_FILE).read_text())
    assert wait_for(lambda: runstore.run_info(run_dir).state == "done", timeout=30)
    assert wait_for(lambda: not psutil_alive(launched["pid"]))
    events = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert sum(e["event"] == "resumed" for e in events) == 1


def psutil_alive(pid):
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_resume_without_checkpoint_warns_and_starts_over(runs, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "3")
    run_dir = runstore.create_run(config.load("smoke"), source="smoke")
    write_json_atomic(
        run_dir / "status.json",
        {"state": "running", "pid": 2**22 - 3, "pid_start_time": 1.0, "heartbeat": 1.0},
    )
    code, out, err = cli("resume", run_dir.name)
    assert code == 0 and "no checkpoint yet: it starts again from step 0" in err
    assert runstore.run_info(run_dir).state == "done"


def test_stop_kill(runs, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "1000")
    run_dir = runstore.create_run(config.load("smoke"), source="smoke")
    proc = runstore.launch(run_dir, detach=True)
    assert wait_for(lambda: runstore.run_info(run_dir).state == "running")
    code, out, _ = cli("stop", "--kill", run_dir.name)
    assert code == 0 and "stopped (killed by `vqatune stop --kill`)" in out
    assert proc.wait(timeout=5) == -signal.SIGKILL


def test_commands_do_not_import_heavy_modules():
    code = (
        "import sys; from vqatune.tui import cli; "
        "from vqatune.engine import runstore, metrics, gpu, compare; "
        "heavy = [m for m in ('torch', 'transformers', 'textual') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
