"""Foreground commands only follow: `vqatune run` and `vqatune sweep` in a tmux session that is
killed (a dropped SSH connection) leave the run / the sweep going, `vqatune attach` re-opens
the progress, SIGHUP ends a follower quietly. Real processes: the real trainer on `smoke`, the
stand-in trainer (tests/sweep_fake_trainer.py) for sweeps."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from polling import wait_for
from typer.testing import CliRunner
from vqatune.engine import events, runstore, sweeper, sweepstore
from vqatune.tui.cli import app

VQATUNE = [sys.executable, "-m", "vqatune.tui.cli"]
FAKE_TRAINER = [sys.executable, str(Path(__file__).with_name("sweep_fake_trainer.py"))]
SOCKET = f"vqatune-follower-{os.getpid()}"  # a private tmux server, never the user's
# Long enough to still be training when the session is killed, short enough for a test.
SMOKE_LONGER = ["--set", "max_steps=0", "--set", "epochs=5", "--set", "eval_limit=8"]
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models on a shared 2-core machine
    monkeypatch.setenv("VQATUNE_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    yield
    subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True)


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", SOCKET, *args], capture_output=True, text=True, check=True
    ).stdout


def in_tmux(session: str, argv: list[str], env: dict[str, str]) -> int:
    """Start argv in a new tmux session (its own terminal); -> the pid of the command."""
    command = "exec env " + shlex.join([*(f"{k}={v}" for k, v in env.items()), *argv])
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", command)
    return int(tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stepping(runs: Path, name: str) -> Path | None:
    """The run called name once it has logged a training step."""
    for d in runs.glob(f"*-{name}-*"):
        if '"event": "step"' in _text(d / events.METRICS_FILE):
            return d
    return None


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@needs_tmux
def test_foreground_run_survives_its_terminal_and_attach_shows_its_bar(tmp_path):
    runs = tmp_path / "runs"
    env = {"VQATUNE_RUNS": str(runs), "OMP_NUM_THREADS": "1"}
    follower = in_tmux("fg", [*VQATUNE, "run", "smoke", "--name", "fg", *SMOKE_LONGER], env)
    assert wait_for(lambda: stepping(runs, "fg"), timeout=120)
    run_dir = stepping(runs, "fg")
    tmux("kill-session", "-t", "fg")  # what a dropped SSH connection does to a foreground job
    assert wait_for(lambda: gone(follower), timeout=30)
    assert runstore.run_info(run_dir).live  # the run goes on without its terminal

    result = CliRunner().invoke(app, ["attach"])  # the newest running run, followed to its end
    assert result.exit_code == 0, result.output
    assert f"run {run_dir.name}: done" in result.stdout
    total = runstore.run_info(run_dir).total_steps
    assert f"{total}/{total}" in result.stdout  # the same bar, to the last step
    assert runstore.run_info(run_dir).state == "done"
    assert "crashed" not in _text(run_dir / events.LOG_FILE)


def test_sighup_ends_the_follower_quietly_and_the_run_goes_on(tmp_path):
    runs = tmp_path / "runs"
    follower = subprocess.Popen(
        [*VQATUNE, "run", "smoke", "--name", "hup", *SMOKE_LONGER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert wait_for(lambda: stepping(runs, "hup"), timeout=120)
    run_dir = stepping(runs, "hup")
    follower.send_signal(signal.SIGHUP)
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 129 and "Traceback" not in out + err
    info = runstore.run_info(run_dir)
    assert info.live, info
    runstore.stop(run_dir, wait_s=60)  # Ctrl-C's clean stop, from any shell
    assert runstore.run_info(run_dir).state == "stopped"
    # attach on a run that has ended shows its bar and summary and its exit code
    result = CliRunner().invoke(app, ["attach", "hup"])
    assert result.exit_code == 130 and f"run {run_dir.name}: stopped" in result.stdout


def test_attach_errors(tmp_path):
    result = CliRunner().invoke(app, ["attach"])
    assert result.exit_code == 2 and "no run is running" in result.stderr
    result = CliRunner().invoke(app, ["attach", "nothing-like-it"])
    assert result.exit_code == 2 and "no run 'nothing-like-it'" in result.stderr
    result = CliRunner().invoke(app, ["attach", "--sweep", "nope"])
    assert result.exit_code == 2 and "no sweep 'nope'" in result.stderr


@needs_tmux
def test_foreground_sweep_survives_its_terminal_and_attach_follows_it(tmp_path):
    runs = tmp_path / "runs"
    plan = tmp_path / "plan.toml"
    plan.write_text('base = "smoke"\nseeds = [1, 2, 3]\n[set]\nmax_steps = 60\n')
    env = {
        "VQATUNE_RUNS": str(runs),
        runstore.TRAINER_ENV: shlex.join(FAKE_TRAINER),
        "FAKE_DELAY": "0.05",  # 3 s a run
    }
    follower = in_tmux("sweep", [*VQATUNE, "sweep", str(plan)], env)
    assert wait_for(lambda: any(r.state == "running" for r in runstore.list_runs(runs)), 60)
    tmux("kill-session", "-t", "sweep")
    assert wait_for(lambda: gone(follower), timeout=30)
    [sw] = sweepstore.list_sweeps(runs)
    assert sweeper.is_running(sw)  # the scheduler goes on without its terminal

    attached = subprocess.run(
        [*VQATUNE, "attach", "--sweep", sw.id], capture_output=True, text=True, timeout=120
    )
    assert attached.returncode == 0, attached.stdout + attached.stderr
    assert attached.stdout.startswith(f"sweep {sw.id}: running")
    assert f"sweep {sw.id}: " in attached.stdout and "[3/3] done" in attached.stdout
    assert "winner:" in attached.stdout
    assert [r.state for r in runstore.list_runs(runs)] == ["done"] * 3
    assert json.loads((sw.path / sweeper.SCHEDULER_FILE).read_text())["exit_code"] == 0


def test_a_second_ctrl_c_leaves_the_run_going(tmp_path):
    from vqatune.engine import config

    run_dir = runstore.create_run(config.load("smoke"), source="smoke", name="stubborn")
    # A training process that is slow to stop: it ignores SIGTERM (the first Ctrl-C's request).
    trainer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)",
        ]
    )
    try:
        start = psutil.Process(trainer.pid).create_time()
        status = {"state": "running", "pid": trainer.pid, "pid_start_time": start}
        events.write_json_atomic(run_dir / events.STATUS_FILE, {**status, "heartbeat": 2e9})
        out, err = tmp_path / "out", tmp_path / "err"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            follower = subprocess.Popen(
                [*VQATUNE, "attach", "stubborn"],
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        assert wait_for(lambda: "Ctrl-C stops it" in _text(err), timeout=60)
        follower.send_signal(signal.SIGINT)
        assert wait_for(lambda: "stopping:" in _text(out), timeout=30)
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 130
        assert f"left running: `vqatune attach {run_dir.name}`" in _text(out)
        assert runstore.run_info(run_dir).live  # the second Ctrl-C did not end it
    finally:
        trainer.kill()
        trainer.wait()
