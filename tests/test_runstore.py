"""Run store: creating run dirs, ids, finding runs, derived states, launching, stopping.

Processes here are real: a small fake trainer (below) that keeps the run directory contract
stands in for `python -m vqatune.engine.train` so these tests stay fast and independent of
the model; tests/test_runstore_train.py drives the real trainer.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import polling
import psutil
import pytest
from vqatune.engine import config, runstore
from vqatune.engine.config import ConfigError
from vqatune.engine.events import write_json_atomic

FAKE_TRAINER = textwrap.dedent('''
    """Keeps the trainer's run directory contract: status.json, metrics.jsonl, checkpoints."""
    import json, os, signal, sys, time
    import psutil

    run_dir = sys.argv[1]
    resume = "--resume" in sys.argv
    steps = int(os.environ.get("FAKE_STEPS", "40"))
    delay = float(os.environ.get("FAKE_DELAY", "0.05"))
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    os.makedirs(ckpt_dir, exist_ok=True)
    ckpt = os.path.join(ckpt_dir, "last.pt")
    metrics = open(os.path.join(run_dir, "metrics.jsonl"), "a", buffering=1)
    start_time = psutil.Process().create_time()
    started = time.time()
    step = 0
    if resume:
        step = int(open(ckpt).read()) if os.path.exists(ckpt) else 0
        metrics.write(json.dumps({"event": "resumed", "time": time.time(), "step": step,
                                  "epoch": 0, "from_checkpoint": ckpt}) + "\\n")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))

    def status(state, **kw):
        data = {"state": state, "pid": os.getpid(), "pid_start_time": start_time,
                "heartbeat": time.time(), "step": step, "total_steps": steps, "epoch": 0,
                "epochs": 1, "started": started, "ended": None, "best_accuracy": step / steps,
                "last_accuracy": step / steps, "message": None, **kw}
        tmp = os.path.join(run_dir, ".status.tmp")
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, os.path.join(run_dir, "status.json"))

    def summary(state):
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump({"state": state, "step": step, "total_steps": steps,
                       "best_accuracy": step / steps, "final_accuracy": step / steps}, f)

    def checkpoint():
        with open(ckpt + ".tmp", "w") as f:
            f.write(str(step))
        os.replace(ckpt + ".tmp", ckpt)

    print("fake trainer", "resume" if resume else "start", step, flush=True)
    status("running")
    while step < steps:
        time.sleep(delay)
        step += 1
        metrics.write(json.dumps({"event": "step", "time": time.time(), "step": step,
                                  "loss": 1.0 / step}) + "\\n")
        if step % 5 == 0:
            checkpoint()
        status("running")
        if stopping:
            checkpoint()
            summary("stopped")
            status("stopped", ended=time.time())
            sys.exit(130)
    checkpoint()
    metrics.write(json.dumps({"event": "end", "time": time.time(), "state": "done",
                              "step": step}) + "\\n")
    summary("done")
    status("done", ended=time.time())
    print("fake trainer done", step, flush=True)
''')


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINER)
    monkeypatch.setattr(runstore, "TRAINER", [sys.executable, str(script)])
    return script


@pytest.fixture
def runs(tmp_path, monkeypatch):
    d = tmp_path / "runs"
    monkeypatch.setenv("VQATUNE_RUNS", str(d))
    return d


def smoke_cfg(**changes):
    return config.load("smoke").replace(**changes)


wait_for = functools.partial(polling.wait_for, timeout=15.0)


def write_status(run_dir: Path, **status):
    write_json_atomic(run_dir / "status.json", status)


def my_start_time():
    return psutil.Process().create_time()


# ----------------------------------------------------------------------------------------------
# default_runs_dir, create_run


def test_default_runs_dir_env_and_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("VQATUNE_RUNS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert runstore.default_runs_dir() == tmp_path / "runs"
    monkeypatch.setenv("VQATUNE_RUNS", str(tmp_path / "elsewhere"))
    assert runstore.default_runs_dir() == tmp_path / "elsewhere"


def test_create_run_writes_config_meta_status(runs):
    cfg = smoke_cfg(lr=1e-3)
    run_dir = runstore.create_run(
        cfg, source="smoke", overrides={"lr": 1e-3}, argv=["vqatune", "run", "smoke"]
    )
    assert run_dir.parent == runs
    assert re.fullmatch(r"\d{8}-\d{6}-smoke-[0-9a-f]{4}", run_dir.name)
    assert config.load(str(run_dir / "config.toml")) == cfg
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["id"] == run_dir.name and meta["source"] == "smoke" and meta["name"] == "smoke"
    assert meta["overrides"] == {"lr": 1e-3} and meta["argv"] == ["vqatune", "run", "smoke"]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "queued"
    assert runstore.run_info(run_dir).state == "queued"
    assert [p.name for p in runs.iterdir()] == [run_dir.name]  # no temp dir left behind


def test_tags_go_into_meta_without_replacing_its_fields(runs):
    run_dir = runstore.create_run(
        smoke_cfg(), name="t", tags={"sweep": "s1", "trial": 3, "id": "forged", "name": "x"}
    )
    meta = json.loads((run_dir / "meta.json").read_text())
    assert (meta["sweep"], meta["trial"]) == ("s1", 3)
    assert meta["id"] == run_dir.name and meta["name"] == "t"
    assert runstore.run_info(run_dir).meta["trial"] == 3


def test_name_priority_and_sanitising(runs):
    assert "-mine-" in runstore.create_run(smoke_cfg(name="mine"), source="smoke").name
    assert "-given-" in runstore.create_run(smoke_cfg(name="mine"), name="given").name
    assert "-exp-" in runstore.create_run(smoke_cfg(), source="/tmp/x/exp.toml").name
    assert "-run-" in runstore.create_run(smoke_cfg()).name
    evil = runstore.create_run(smoke_cfg(), name="../../etc/passwd")
    assert evil.parent == runs and "/" not in evil.name and ".." not in evil.name
    assert runstore.create_run(smoke_cfg(), name="..").parent == runs
    assert runstore.sanitize_name("a b/c\\d") == "a-b-c-d"


def test_twenty_runs_at_once_get_distinct_ids(runs):
    out, errors = [], []

    def create():
        try:
            out.append(runstore.create_run(smoke_cfg(), name="same"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({p.name for p in out}) == 20
    assert sorted(p.name for p in runs.iterdir()) == sorted(p.name for p in out)


def test_twenty_processes_at_once_get_distinct_ids(runs):
    code = (
        "from vqatune.engine import config, runstore;"
        "print(runstore.create_run(config.load('smoke'), name='same'))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(20)
    ]
    paths = [p.communicate()[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(paths)) == 20 and len(list(runs.iterdir())) == 20


def test_id_collision_retries_with_a_new_suffix(runs, monkeypatch):
    suffixes = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(runstore, "_id_suffix", lambda: next(suffixes))
    monkeypatch.setattr(runstore.time, "localtime", lambda *_: time.gmtime(0))
    first = runstore.create_run(smoke_cfg(), name="x")
    second = runstore.create_run(smoke_cfg(), name="x")
    assert first.name.endswith("-x-aaaa") and second.name.endswith("-x-bbbb")
    assert json.loads((second / "meta.json").read_text())["id"] == second.name


def test_create_run_with_output_dir(tmp_path):
    out = tmp_path / "my-run"
    assert runstore.create_run(smoke_cfg(), output=out) == out
    assert (out / "config.toml").is_file()
    with pytest.raises(ConfigError, match="exists and is not an empty directory"):
        runstore.create_run(smoke_cfg(), output=out)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runstore.create_run(smoke_cfg(), output=empty) == empty
    assert runstore.find_run(str(out)) == out


def test_create_run_leaves_nothing_on_failure(runs, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(runstore, "dumps", broken)
    with pytest.raises(RuntimeError):
        runstore.create_run(smoke_cfg())
    assert list(runs.iterdir()) == []


def test_create_run_unwritable_runs_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot create a run directory there"):
        runstore.create_run(smoke_cfg(), runs_dir=blocker / "runs")


def test_two_runs_racing_for_one_output_dir(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_rename = os.rename

    def someone_else_first(src, dst):  # another process fills the directory just before us
        (Path(dst)).mkdir(exist_ok=True)
        (Path(dst) / "config.toml").write_text("")
        return real_rename(src, dst)

    monkeypatch.setattr(runstore.os, "rename", someone_else_first)
    with pytest.raises(ConfigError, match="exists and is not an empty directory"):
        runstore.create_run(smoke_cfg(), output=out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp dir left


# ----------------------------------------------------------------------------------------------
# find_run, list_runs


def test_find_run_by_id_prefix_name(runs):
    a = runstore.create_run(smoke_cfg(), name="alpha")
    b = runstore.create_run(smoke_cfg(), name="beta")
    assert runstore.find_run(a.name) == a
    assert runstore.find_run(b.name[:-2]) == b
    assert runstore.find_run("alpha") == a
    with pytest.raises(ConfigError, match="ambiguous"):
        runstore.find_run(a.name[:8])  # both runs share the date
    with pytest.raises(ConfigError, match="no run 'gamma'"):
        runstore.find_run("gamma")
    runstore.create_run(smoke_cfg(), name="alpha")
    with pytest.raises(ConfigError, match="ambiguous: 2 runs"):
        runstore.find_run("alpha")


def test_find_run_without_store(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        runstore.find_run("x", runs_dir=tmp_path / "none")


def test_list_runs_sorted_and_skips_junk(runs):
    made = [runstore.create_run(smoke_cfg(), name=n) for n in ("one", "two", "three")]
    (runs / ".tmp-half").mkdir()
    (runs / "notes.txt").write_text("x")
    (runs / "empty-dir").mkdir()
    listed = runstore.list_runs()
    assert [r.path for r in listed] == sorted(made)
    assert {r.state for r in listed} == {"queued"}
    assert runstore.list_runs(runs / "missing") == []


# ----------------------------------------------------------------------------------------------
# Derived states


@pytest.fixture
def run_dir(runs):
    return runstore.create_run(smoke_cfg(), name="s")


def test_running_needs_live_pid_matching_start_time_and_fresh_heartbeat(run_dir):
    now = time.time()
    base = dict(state="running", pid=os.getpid(), pid_start_time=my_start_time(), started=now - 5)
    write_status(run_dir, **base, heartbeat=now)
    info = runstore.run_info(run_dir)
    assert info.state == "running" and info.pid == os.getpid() and info.live
    assert 4 < info.duration_s < 60

    write_status(run_dir, **base, heartbeat=now - 31)
    info = runstore.run_info(run_dir)
    assert info.state == "crashed" and "heartbeat" in info.message
    assert info.pid == os.getpid() and not info.live  # hung, not live; kept to be stopped
    with pytest.raises(ConfigError, match="alive but silent"):
        runstore.resume(run_dir)

    # pid reuse: the pid is alive but belongs to a process that started at another time
    write_status(run_dir, **{**base, "pid_start_time": my_start_time() - 500}, heartbeat=now)
    assert runstore.run_info(run_dir).state == "crashed"


def test_dead_pid_is_crashed(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    start = psutil.Process(proc.pid).create_time()
    write_status(
        run_dir,
        state="running",
        pid=proc.pid,
        pid_start_time=start,
        heartbeat=time.time(),
        started=time.time(),
    )
    assert runstore.run_info(run_dir).state == "running"
    proc.kill()
    proc.wait()
    info = runstore.run_info(run_dir)
    assert info.state == "crashed" and str(proc.pid) in info.message and not info.live


def test_stale_status_with_pid_now_used_by_another_process(run_dir):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # the status was written by an earlier process that had this pid
        write_status(
            run_dir,
            state="running",
            pid=other.pid,
            pid_start_time=psutil.Process(other.pid).create_time() - 3600,
            heartbeat=time.time(),
            started=time.time() - 3600,
        )
        assert runstore.run_info(run_dir).state == "crashed"
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("state", ["done", "stopped", "diverged", "oom", "failed"])
def test_final_states_are_kept(run_dir, state):
    write_status(run_dir, state=state, pid=999999, started=10.0, ended=70.0, message="m")
    info = runstore.run_info(run_dir)
    assert (info.state, info.duration_s, info.message, info.live) == (state, 60.0, "m", False)


def test_summary_overrides_status_accuracies(run_dir):
    write_status(run_dir, state="done", best_accuracy=0.5, last_accuracy=0.4)
    write_json_atomic(run_dir / "summary.json", {"best_accuracy": 0.9, "final_accuracy": 0.8})
    info = runstore.run_info(run_dir)
    assert (info.best_accuracy, info.last_accuracy) == (0.9, 0.8)


def test_run_dir_missing_files(run_dir):
    (run_dir / "meta.json").unlink()
    info = runstore.run_info(run_dir)
    assert info.name == "s" and info.state == "queued"  # the name is read from the id
    (run_dir / "status.json").write_text("{not json")
    assert runstore.run_info(run_dir).state == "crashed"
    (run_dir / "status.json").unlink()
    info = runstore.run_info(run_dir)
    assert info.state == "crashed" and "missing" in info.message
    assert info.to_dict()["state"] == "crashed"


def test_launched_but_not_started_is_queued_then_crashed(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    write_json_atomic(
        run_dir / runstore.LAUNCH_FILE,
        {"pid": proc.pid, "pid_start_time": psutil.Process(proc.pid).create_time()},
    )
    info = runstore.run_info(run_dir)
    assert info.state == "queued" and info.live
    proc.kill()
    proc.wait()
    info = runstore.run_info(run_dir)
    assert info.state == "crashed" and "train.log" in info.message


def test_other_host_trusts_the_heartbeat(run_dir):
    meta = json.loads((run_dir / "meta.json").read_text())
    write_json_atomic(run_dir / "meta.json", {**meta, "host": "some-other-host"})
    write_status(run_dir, state="running", pid=999999999, pid_start_time=1.0, heartbeat=time.time())
    assert runstore.run_info(run_dir).state == "running"


# ----------------------------------------------------------------------------------------------
# launch, stop, resume with real processes


def test_launch_detached_runs_to_done(run_dir, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "5")
    proc = runstore.launch(run_dir, detach=True)
    assert proc.wait(timeout=20) == 0
    info = runstore.run_info(run_dir)
    assert info.state == "done" and info.step == 5
    assert "fake trainer done 5" in (run_dir / "train.log").read_text()
    launched = json.loads((run_dir / runstore.LAUNCH_FILE).read_text())
    assert launched["pid"] == proc.pid and launched["detached"] is True


def test_launch_detached_is_its_own_session(run_dir, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "100")
    proc = runstore.launch(run_dir, detach=True)
    try:
        assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
        assert psutil.Process(proc.pid).cmdline()[-1] == str(run_dir)
    finally:
        proc.kill()
        proc.wait()


def test_launch_requires_a_run_dir(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        runstore.launch(tmp_path, detach=True)


def test_stop_is_graceful_then_resume_finishes(run_dir, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "200")
    proc = runstore.launch(run_dir, detach=True)
    assert wait_for(lambda: runstore.run_info(run_dir).state == "running")
    info = runstore.stop(run_dir, wait_s=10)
    assert proc.wait(timeout=10) == 130
    assert info.state == "stopped"
    with pytest.raises(ConfigError, match="not running"):
        runstore.stop(run_dir)
    assert runstore.last_checkpoint(run_dir) is not None
    monkeypatch.setenv("FAKE_DELAY", "0.001")
    assert runstore.launch(run_dir, detach=True, resume=True).wait(timeout=20) == 0
    assert runstore.run_info(run_dir).state == "done"
    events = [json.loads(line)["event"] for line in open(run_dir / "metrics.jsonl")]
    assert events.count("resumed") == 1 and events[-1] == "end"


def test_kill_9_is_crashed_and_resume_finishes(run_dir, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "200")
    proc = runstore.launch(run_dir, detach=True)
    assert wait_for(lambda: (runstore.run_info(run_dir).step or 0) >= 6)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    info = runstore.run_info(run_dir)
    assert info.state == "crashed" and info.ended is None
    (run_dir / "summary.json").write_text("{}")  # left by an earlier process
    monkeypatch.setenv("FAKE_DELAY", "0.001")
    proc = runstore.resume(run_dir)
    assert not (run_dir / "summary.json").exists()
    assert runstore.run_info(run_dir).state in ("queued", "running")  # not crashed any more
    with pytest.raises(ConfigError, match="already"):
        runstore.resume(run_dir)
    assert proc.wait(timeout=30) == 0
    info = runstore.run_info(run_dir)
    assert info.state == "done" and info.step == 200
    with pytest.raises(ConfigError, match="ended as done"):
        runstore.resume(run_dir)


def test_stop_kill_records_stopped(run_dir, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "1000")
    proc = runstore.launch(run_dir, detach=True)
    assert wait_for(lambda: runstore.run_info(run_dir).state == "running")
    info = runstore.stop(run_dir, kill=True)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert info.state == "stopped" and "--kill" in info.message


def test_stop_kill_ends_a_hung_run(run_dir):
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    write_status(
        run_dir,
        state="running",
        pid=proc.pid,
        pid_start_time=psutil.Process(proc.pid).create_time(),
        heartbeat=time.time() - 100,
        started=time.time() - 200,
    )
    assert runstore.run_info(run_dir).state == "crashed"
    info = runstore.stop(run_dir, kill=True)
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert info.state == "stopped" and info.pid is None


def test_stop_while_starting_records_stopped(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    write_json_atomic(
        run_dir / runstore.LAUNCH_FILE,
        {"pid": proc.pid, "pid_start_time": psutil.Process(proc.pid).create_time()},
    )
    assert runstore.run_info(run_dir).state == "queued"
    info = runstore.stop(run_dir, wait_s=10)
    assert proc.wait() == -signal.SIGTERM
    assert info.state == "stopped" and "without an end record" in info.message


def test_sighup_to_the_launching_shell_leaves_the_run_going(run_dir, fake_trainer, tmp_path):
    launcher = tmp_path / "launcher.py"
    launcher.write_text(
        textwrap.dedent(f"""
        import sys
        from vqatune.engine import runstore
        runstore.TRAINER = [sys.executable, {str(fake_trainer)!r}]
        print(runstore.launch(sys.argv[1], detach=True).pid, flush=True)
    """)
    )
    env = dict(os.environ, FAKE_STEPS="30", FAKE_DELAY="0.05")
    # An interactive-like shell in its own session: it launches, then waits as a user would.
    shell = subprocess.Popen(
        ["bash", "-c", f"{sys.executable} {launcher} {run_dir}; sleep 60"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    trainer_pid = int(shell.stdout.readline())
    assert wait_for(lambda: runstore.run_info(run_dir).state == "running")
    os.killpg(shell.pid, signal.SIGHUP)  # what a dropped SSH connection does
    assert shell.wait(timeout=10) == -signal.SIGHUP
    assert psutil.pid_exists(trainer_pid)
    assert wait_for(lambda: runstore.run_info(run_dir).state == "done", timeout=30)


@pytest.mark.parametrize("status_file", ["missing", "unreadable", "stale"])
def test_final_records_win_over_a_missing_unreadable_or_stale_status(run_dir, status_file):
    summary = {"state": "stopped", "message": "stopped by SIGTERM", "step": 7, "total_steps": 9}
    write_json_atomic(run_dir / "summary.json", {**summary, "final_accuracy": 0.6})
    if status_file == "missing":
        (run_dir / "status.json").unlink()
    elif status_file == "unreadable":
        (run_dir / "status.json").write_text("{not json")
    else:  # killed between summary.json and its last status.json
        write_status(run_dir, state="running", pid=999999999, pid_start_time=1.0, step=5)
    info = runstore.run_info(run_dir)
    assert (info.state, info.message, info.step, info.total_steps) == (
        "stopped",
        "stopped by SIGTERM",
        7,
        9,
    )
    assert info.last_accuracy == 0.6 and info.summary is not None and not info.live


def test_a_crashed_run_without_summary_stays_crashed(run_dir):
    (run_dir / "status.json").write_text("{not json")
    info = runstore.run_info(run_dir)
    assert info.state == "crashed" and info.summary is None
