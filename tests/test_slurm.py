"""Slurm runs through submitit, against fake sbatch/srun/sacct/scancel/scontrol on PATH
(tests/fake_slurm.py) and the fake trainer (tests/sweep_fake_trainer.py): submit, the state of
every Slurm job state, stop = scancel, resume, and a time limit that requeues and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from polling import wait_for
from typer.testing import CliRunner
from vqatune.engine import runstore, slurm
from vqatune.engine.events import METRICS_FILE, STATUS_FILE, read_json, write_json_atomic
from vqatune.tui.cli import app

HERE = Path(__file__).parent
COMMANDS = ("sbatch", "srun", "sacct", "scancel", "scontrol")


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """Fake Slurm commands first on PATH, the fake trainer, a run store."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    state.mkdir()
    for name in COMMANDS:
        wrapper = bin_dir / name
        wrapper.write_text(
            f"#!/bin/sh\nFAKE_SLURM_COMMAND={name} exec {sys.executable} "
            f'{HERE / "fake_slurm.py"} "$@"\n'
        )
        wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    monkeypatch.setenv("FAKE_DELAY", "0.05")
    monkeypatch.setattr(runstore, "TRAINER", [sys.executable, str(HERE / "sweep_fake_trainer.py")])
    monkeypatch.setattr(slurm, "STATE_CACHE_S", 0.0)
    runs = tmp_path / "runs"
    monkeypatch.setenv("VQATUNE_RUNS", str(runs))
    return state


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def submit(*extra: str, steps: int = 6) -> Path:
    out = cli("run", "smoke", "--slurm", "--set", f"max_steps={steps}", *extra)
    assert out.exit_code == 0, out.output
    assert "submitted as Slurm job" in out.stderr
    return runstore.find_run(out.stdout.strip())


def state(run_dir: Path) -> str:
    return runstore.run_info(run_dir).state


def job(cluster: Path, run_dir: Path) -> dict:
    job_id = read_json(run_dir / "meta.json")["slurm"]["job_id"]
    return json.loads((cluster / "jobs" / f"{job_id}.json").read_text())


def steps_logged(run_dir: Path) -> list[int]:
    path = run_dir / METRICS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    return [r["step"] for r in map(json.loads, lines) if r["event"] == "step"]


def test_submit_writes_the_batch_script_and_the_run_finishes(cluster):
    run_dir = submit(
        "--partition", "gpu", "--time", "00:10:00", "--account", "lab", "--slurm-arg", "qos=high"
    )
    meta = read_json(run_dir / "meta.json")
    assert meta["slurm"]["job_id"] == "1000" and meta["slurm"]["options"]["partition"] == "gpu"
    script = job(cluster, run_dir)["script"]
    text = Path(script).read_text()
    for line in (
        "--partition=gpu",
        "--time=10",
        "--account=lab",
        "--qos=high",
        "--nodes=1",
        "--gpus-per-node=1",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {line}" in text, line
    assert wait_for(lambda: state(run_dir) == "done", timeout=120)
    assert steps_logged(run_dir) == [1, 2, 3, 4, 5, 6]


def test_pending_reads_queued_then_running(cluster, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")
    monkeypatch.setenv("FAKE_DELAY", "0.3")
    run_dir = submit(steps=20)
    info = runstore.run_info(run_dir)
    assert info.state == "queued" and "pending" in info.message and info.pid is None
    (cluster / "jobs" / "1000.release").touch()
    assert wait_for(lambda: state(run_dir) == "running", timeout=120)
    assert runstore.run_info(run_dir).pid is None  # judged by the job, never a local pid
    cli("stop", run_dir.name)
    assert wait_for(lambda: state(run_dir) == "stopped", timeout=120)


@pytest.mark.parametrize(
    ("slurm_state", "expected"),
    [
        ("CANCELLED", "cancelled"),
        ("TIMEOUT", "timeout"),
        ("NODE_FAIL", "node_fail"),
        ("PREEMPTED", "preempted"),
        ("OUT_OF_MEMORY", "oom"),
        ("FAILED", "failed"),
        ("COMPLETED", "crashed"),
        ("PENDING", "queued"),
        ("REQUEUED", "queued"),
    ],
)
def test_every_slurm_state(cluster, tmp_path, slurm_state, expected):
    (cluster / "jobs").mkdir(exist_ok=True)
    (cluster / "jobs" / "77.json").write_text(json.dumps({"state": slurm_state}))
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "meta.json", {"host": "a-gpu-node", "slurm": {"job_id": "77"}})
    # The trainer on the node said running, with a pid that means nothing on this host.
    write_json_atomic(
        run_dir / STATUS_FILE,
        {
            "state": "running" if expected != "queued" else "queued",
            "pid": os.getpid(),
            "pid_start_time": 0,
            "heartbeat": time.time(),
        },
    )
    info = runstore.run_info(run_dir)
    assert info.state == expected and info.pid is None
    if expected not in ("queued",):
        assert "77" in info.message


def test_running_job_with_a_silent_heartbeat_is_crashed(cluster, tmp_path):
    (cluster / "jobs").mkdir(exist_ok=True)
    (cluster / "jobs" / "78.json").write_text(json.dumps({"state": "RUNNING"}))
    run_dir = tmp_path / "runs" / "r2"
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "meta.json", {"slurm": {"job_id": "78"}})
    status = {"state": "running", "heartbeat": time.time()}
    write_json_atomic(run_dir / STATUS_FILE, status)
    assert runstore.run_info(run_dir).state == "running"
    write_json_atomic(run_dir / STATUS_FILE, {**status, "heartbeat": time.time() - 600})
    info = runstore.run_info(run_dir)
    assert info.state == "crashed" and "no heartbeat" in info.message and "RUNNING" in info.message


def test_stop_is_scancel_and_resume_is_a_new_job(cluster, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY", "0.2")
    run_dir = submit(steps=30)
    assert wait_for(lambda: len(steps_logged(run_dir)) >= 3, timeout=120)
    out = cli("stop", run_dir.name)
    assert out.exit_code == 0, out.output
    assert wait_for(lambda: state(run_dir) == "stopped", timeout=60)
    stopped_at = read_json(run_dir / STATUS_FILE)["step"]
    monkeypatch.setenv("FAKE_DELAY", "0.02")
    out = cli("resume", run_dir.name, "--detach")
    assert out.exit_code == 0, out.output
    assert "resubmitted to Slurm as job 1001" in out.stderr
    assert wait_for(lambda: state(run_dir) == "done", timeout=120)
    assert read_json(run_dir / "meta.json")["slurm"]["jobs"] == ["1000", "1001"]
    logged = steps_logged(run_dir)
    assert logged == list(range(1, 31)) and stopped_at in logged  # no step lost or repeated


def test_time_limit_checkpoints_requeues_and_resumes_exactly(cluster, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY", "0.2")
    run_dir = submit(steps=30)
    assert wait_for(lambda: len(steps_logged(run_dir)) >= 3, timeout=120)
    job_id = read_json(run_dir / "meta.json")["slurm"]["job_id"]
    # What Slurm does signal_delay_s before the time limit (`--signal=USR2@120`).
    os.system(f"scancel --signal USR2 {job_id}")
    assert wait_for(lambda: job(cluster, run_dir)["restarts"] == 1, timeout=120)
    monkeypatch.setenv("FAKE_DELAY", "0.02")
    assert wait_for(lambda: state(run_dir) == "done", timeout=120)
    records = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    assert [r["event"] for r in records].count("resumed") == 1
    assert steps_logged(run_dir) == list(range(1, 31))  # resumed where it stopped, exactly
    assert read_json(run_dir / "meta.json")["slurm"]["job_id"] == job_id  # the same job, requeued


def test_bad_slurm_input_creates_nothing(cluster, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    out = cli("run", "smoke", "--partition", "gpu")
    assert out.exit_code == 2 and out.stderr.startswith("error: --partition: a Slurm option")
    out = cli("run", "smoke", "--slurm", "--time", "soon")
    assert out.exit_code == 2 and out.stderr.startswith("error: --time: 'soon'")
    out = cli("run", "smoke", "--slurm", "--slurm-arg", "qos")
    assert out.exit_code == 2 and "--slurm-arg: 'qos' is not KEY=VALUE" in out.stderr
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    out = cli("run", "smoke", "--slurm")
    assert out.exit_code == 2 and "sbatch is not on PATH" in out.stderr
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]


def test_multi_node_job_starts_torchrun_with_slurms_rendezvous(tmp_path, monkeypatch):
    from vqatune.engine import config

    cfg = config.load("smoke").replace(nproc_per_node=4, nnodes=2)
    run_dir = runstore.create_run(cfg, source="smoke", runs_dir=tmp_path)
    for key, value in {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4321",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_PROCID": "1",
        "SLURM_LOCALID": "0",
        "SLURM_NTASKS": "2",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
    }.items():
        monkeypatch.setenv(key, value)
    cmd = slurm.TrainJob(str(run_dir)).command()
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    at = {flag: cmd[cmd.index(flag) + 1] for flag in ("--nnodes", "--node_rank", "--rdzv_endpoint")}
    assert at == {"--nnodes": "2", "--node_rank": "1", "--rdzv_endpoint": "gpu07:29721"}
    assert cmd[cmd.index("--nproc_per_node") + 1] == "4" and cmd[-1] == str(run_dir)


# ----------------------------------------------------------------------------------------------
# Sweeps on Slurm (`vqatune sweep --executor slurm`): an array for a variants sweep, one job per
# trial for a search; attach and logs -f of a run whose job runs elsewhere


def plan_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text('base = "smoke"\n' + body + "\n[set]\nmax_steps = 4\n")
    return path


def sweep_runs(runs: Path) -> dict[str, runstore.RunInfo]:
    return {r.meta["sweep_key"]: r for r in runstore.list_runs(runs) if r.meta.get("sweep")}


def test_variants_sweep_is_one_job_array_and_one_trial_can_be_cancelled(
    cluster, tmp_path, monkeypatch
):
    from vqatune.engine import sweeper, sweepstore

    runs = tmp_path / "runs"
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")  # each task waits for its release
    plan = plan_file(
        tmp_path,
        "seeds = [1]\n[variants.a]\nlr = 1e-4\n[variants.b]\nlr = 2e-4\n[variants.c]\nlr = 5e-4\n",
    )
    out = cli("sweep", str(plan), "--executor", "slurm", "--parallel", "2", "--detach")
    assert out.exit_code == 0, out.output
    assert wait_for(
        lambda: (
            len(sweep_runs(runs)) == 3
            and all(r.meta.get("slurm") for r in sweep_runs(runs).values())
        ),
        timeout=60,
    )
    by_key = sweep_runs(runs)
    ids = {k: r.meta["slurm"]["job_id"] for k, r in by_key.items()}
    assert sorted(ids.values()) == ["1000_0", "1000_1", "1000_2"]
    script = Path(job(cluster, by_key["a/seed1"].path)["script"]).read_text()
    assert "#SBATCH --array=0-2%2" in script
    assert all(r.state == "queued" for r in by_key.values())
    [sw] = sweepstore.list_sweeps(runs)
    assert sweepstore.progress(sw).running == 3  # pending jobs are the sweep's, not over
    out = cli("stop", by_key["b/seed1"].id)  # one trial: scancel of its task alone
    assert out.exit_code == 0, out.output
    for key in ("a/seed1", "c/seed1"):
        (cluster / "jobs" / f"{ids[key]}.release").touch()
    assert wait_for(lambda: not sweeper.is_running(sw), timeout=120)
    states = {k: r.state for k, r in sweep_runs(runs).items()}
    assert states == {"a/seed1": "done", "b/seed1": "cancelled", "c/seed1": "done"}
    assert sweeper.record(sw)["exit_code"] == 0
    log = (sw.path / sweepstore.SWEEP_LOG).read_text()
    assert "submitted a/seed1: run" in log and "(Slurm job 1000_0)" in log
    assert "cancelled b/seed1" in log
    # The same command again keeps the finished runs and resubmits the cancelled one, alone.
    monkeypatch.delenv("FAKE_SLURM_HOLD")
    out = cli("sweep", str(plan), "--executor", "slurm")
    assert out.exit_code == 0, out.output
    b_run = sweep_runs(runs)["b/seed1"]
    assert b_run.state == "done" and b_run.meta["slurm"]["jobs"] == ["1000_1", "1001"]
    assert {r.state for r in sweep_runs(runs).values()} == {"done"}
    [row] = json.loads(cli("sweeps", "--json").stdout)
    assert (row["executor"], row["state"], row["done"], row["total"]) == ("slurm", "finished", 3, 3)


def test_an_interrupted_slurm_sweep_cancels_its_array_with_one_scancel(
    cluster, tmp_path, monkeypatch
):
    import signal

    from vqatune.engine import exitcodes, sweeper, sweepstore

    runs = tmp_path / "runs"
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")  # every task stays PENDING
    plan = plan_file(tmp_path, "seeds = [1, 2]\n[variants.a]\nlr = 1e-4\n")
    out = cli("sweep", str(plan), "--executor", "slurm", "--detach")
    assert out.exit_code == 0, out.output
    [sw] = sweepstore.list_sweeps(runs)
    assert wait_for(
        lambda: "submitted a/seed2" in (sw.path / sweepstore.SWEEP_LOG).read_text(), timeout=60
    )
    os.kill(sweeper.record(sw)["pid"], signal.SIGTERM)  # what Ctrl-C on the follower sends
    assert wait_for(lambda: not sweeper.is_running(sw), timeout=60)
    assert sweeper.record(sw)["exit_code"] == exitcodes.INTERRUPTED
    assert {r.state for r in sweep_runs(runs).values()} == {"cancelled"}
    assert (cluster / "scancel.log").read_text().splitlines() == ["1000_0 1000_1"]


def test_search_on_slurm_submits_one_job_per_trial(cluster, tmp_path):
    from vqatune.engine import search, sweep, sweepstore
    from vqatune.engine.executors import SlurmExecutor

    plan = sweep.load_plan(
        str(
            plan_file(
                tmp_path,
                '[search]\nn_trials = 2\nsampler = "random"\npruner = "none"\n'
                "[search.params.lr]\nlow = 1e-4\nhigh = 5e-4\n",
            )
        )
    )
    sw = sweep.open_sweep(plan, tmp_path / "runs")
    spec = search.parse_search(plan.search, plan.path)
    lines: list[str] = []
    result = search.run_search(
        sw,
        plan,
        spec,
        storage_url=search.default_storage(sw.path),
        study_name=sw.id,
        executor=SlurmExecutor(1, slurm.Options(gpus_per_node=1), sw.path / "slurm"),
        echo=lines.append,
        poll_s=0.05,
    )
    assert sorted(result.ran) == [0, 1] and result.best_value is not None
    jobs = sorted(r.meta["slurm"]["job_id"] for r in sweepstore.sweep_runs(sw))
    assert jobs == ["1000", "1001"]  # separate jobs: the second asked once the first ended
    assert any("submitted run" in line and "(Slurm job 1000)" in line for line in lines), lines


def follower(*args: str) -> subprocess.Popen:
    """`vqatune ARGS` in a child process (the fake trainer and fake Slurm from the env)."""
    code = (
        "import sys; from vqatune.engine import runstore; "
        f"runstore.TRAINER = {runstore.TRAINER!r}; "
        "from vqatune.tui.cli import main; sys.argv = ['vqatune'] + sys.argv[1:]; main()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_attach_follows_a_pending_job_and_ends_when_it_is_cancelled(cluster, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")
    run_dir = submit(steps=6)
    proc = follower("attach", run_dir.name)
    # Pending, no pid anywhere: attach waits for the job instead of ending at once.
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=3)
    write_json_atomic(  # what sacct says once an administrator cancelled it
        cluster / "jobs" / "1000.json", {**job(cluster, run_dir), "state": "CANCELLED"}
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert f"run {run_dir.name}: cancelled (the Slurm job was cancelled" in out


def test_logs_follow_reads_the_shared_log_until_the_job_times_out(cluster, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY", "0.1")
    run_dir = submit(steps=400)
    assert wait_for(lambda: state(run_dir) == "running", timeout=120)
    proc = follower("logs", run_dir.name, "-f")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=2)  # the job is running on its node: logs -f goes on
    # Slurm ends the job at its time limit; the trainer on the node leaves no end record.
    subprocess.run(["scancel", "--signal=KILL", "1000"], check=True)
    write_json_atomic(cluster / "jobs" / "1000.json", {**job(cluster, run_dir), "state": "TIMEOUT"})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "fake trainer start" in out
    assert state(run_dir) == "timeout"


def test_a_job_purged_from_sacct_ends_the_queued_run_as_crashed(cluster, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")
    run_dir = submit()
    (cluster / "jobs" / "1000.json").unlink()  # gone from the accounting database
    # Just submitted: the database may not list it yet, so the run still waits.
    assert state(run_dir) == "queued"
    meta = read_json(run_dir / "meta.json")
    meta["slurm"]["submitted"] -= slurm.PURGED_AFTER_S + 1
    write_json_atomic(run_dir / "meta.json", meta)
    info = runstore.run_info(run_dir)
    assert info.state == "crashed", info
    assert info.message == "Slurm job 1000 is unknown to sacct (purged from its database?)"
    # sacct itself failing says nothing about the job: the run keeps waiting.
    broken = cluster.parent / "bin" / "sacct"
    broken.write_text("#!/bin/sh\necho 'sacct: error: slurmdbd unreachable' >&2\nexit 1\n")
    assert state(run_dir) == "queued"
