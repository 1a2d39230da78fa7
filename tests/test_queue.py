"""The run queue (engine/queue.py, `vqatune queue`, `vqatune run --queue`).

The worker's decisions are driven tick by tick in this process with a fake GPU monitor; the
trainer is tests/sweep_fake_trainer.py (it logs CUDA_VISIBLE_DEVICES), a real process. The last
tests run the real detached worker, kill it with SIGKILL and start it again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from polling import wait_for
from vqatune.engine import config, queue, runstore
from vqatune.engine.events import STATUS_FILE, read_json
from vqatune.engine.gpu import GIB, GPUInfo

HERE = Path(__file__).parent
FAKE_TRAINER = [sys.executable, str(HERE / "sweep_fake_trainer.py")]


class FakeMonitor:
    """GPUs with memory in use by someone else: {id: used GiB} of 80 GiB cards."""

    def __init__(self, used: dict[int, float]):
        self.used = used

    def gpus(self, pid=None):
        return [GPUInfo(i, "NVIDIA H100", int(u * GIB), 80 * GIB, 0) for i, u in self.used.items()]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(runstore, "TRAINER", FAKE_TRAINER)
    monkeypatch.setenv("FAKE_DELAY", "0.02")
    return tmp_path / "runs"


def queued(store: Path, name: str, **values) -> Path:
    # device auto: smoke trains on the CPU, and a CPU run takes no GPU of the queue
    values = {"name": name, "max_steps": 4, "device": "auto", **values}
    cfg = config.load("smoke").replace(**values)
    run_dir = runstore.create_run(cfg, source="smoke", runs_dir=store)
    queue.enqueue(run_dir, store)
    return run_dir


def state(run_dir: Path) -> str:
    return runstore.run_info(run_dir).state


def pinned_to(run_dir: Path) -> str:
    """The CUDA_VISIBLE_DEVICES the fake trainer saw (it prints it first thing)."""
    log = run_dir / "train.log"
    assert wait_for(lambda: "CUDA_VISIBLE_DEVICES=" in log.read_text(), timeout=60)
    return log.read_text().split("CUDA_VISIBLE_DEVICES=")[1].split("\n")[0]


def until_settled(worker: queue.Worker, done, timeout: float = 60.0) -> None:
    """Tick the worker until `done()` holds (the fake trainer needs real time to run)."""

    def ticked():
        worker.tick()
        return done()

    assert wait_for(ticked, timeout=timeout)


def test_one_gpu_runs_the_line_in_order(store):
    a, b, c = (queued(store, n) for n in "abc")
    worker = queue.Worker(store, log=lambda line: None, monitor=FakeMonitor({0: 0.5}))
    worker.tick()
    assert read_json(a / "meta.json")["gpus"] == ["0"]  # started (it may be done already)
    assert [state(b), state(c)] == ["queued", "queued"] and runstore.run_info(b).pid is None
    assert queue.read(store)["order"] == [b.name, c.name]
    until_settled(worker, lambda: state(c) == "done")
    assert [state(r) for r in (a, b, c)] == ["done"] * 3
    # One after another: each started after the previous one ended.
    ended = [read_json(r / STATUS_FILE)["ended"] for r in (a, b)]
    started = [read_json(r / STATUS_FILE)["started"] for r in (b, c)]
    assert started[0] >= ended[0] and started[1] >= ended[1]
    assert {pinned_to(r) for r in (a, b, c)} == {"0"}
    assert read_json(a / "meta.json")["gpus"] == ["0"]


def test_gpus_are_shared_out_and_a_two_gpu_run_waits_for_two(store, monkeypatch):
    # The fake trainer stands in for torchrun too: only the pinning is under test.
    monkeypatch.setattr(
        runstore, "train_command", lambda run_dir, resume=False: [*FAKE_TRAINER, str(run_dir)]
    )
    a = queued(store, "a")
    b = queued(store, "b", nproc_per_node=2)
    c = queued(store, "c")
    worker = queue.Worker(store, log=lambda line: None, monitor=FakeMonitor({0: 0, 1: 0}))
    worker.tick()
    # a takes GPU 0; b needs two GPUs and waits at the head; c waits behind it (strict order).
    assert runstore.run_info(a).pid is not None and pinned_to(a) == "0"
    assert runstore.run_info(b).pid is None and runstore.run_info(c).pid is None
    until_settled(worker, lambda: state(c) == "done")
    assert read_json(b / "meta.json")["gpus"] == ["0", "1"] and pinned_to(b) == "0,1"
    assert read_json(b / STATUS_FILE)["started"] >= read_json(a / STATUS_FILE)["ended"]


def test_a_gpu_busy_with_someone_elses_memory_waits(store):
    a = queued(store, "a")  # smoke: max_memory_usage 0.8 -> needs 64 GiB free of 80
    monitor = FakeMonitor({0: 40.0})
    worker = queue.Worker(store, log=lambda line: None, monitor=monitor)
    worker.tick()
    worker.tick()
    assert runstore.run_info(a).pid is None and state(a) == "queued"
    monitor.used[0] = 2.0  # the other job ended
    until_settled(worker, lambda: state(a) == "done")
    assert pinned_to(a) == "0"


def test_a_local_sweeps_run_holds_the_gpu_its_slot_pinned(store, tmp_path):
    from vqatune.engine import slots, sweepstore

    plan = sweep_plan(tmp_path, "seeds = [1]\n[variants.a]\nlr = 1e-4\n")
    sw = sweepstore.open_sweep(plan, store)
    pinned = sweepstore.create_sweep_run(
        sw,
        config.load("smoke").replace(max_steps=200),
        name="pinned",
        overrides={},
        tags={"sweep_key": "a/seed1", "gpu": "1"},
    )
    proc = slots.launch_in_slot(pinned, "1", resume=False)  # as `sweep --gpus 1` starts it
    try:
        assert wait_for(lambda: state(pinned) == "running", timeout=60)
        assert queue.held_gpus(store) == {"1"}  # not GPU 0, which stays free for the queue
        waiting = queued(store, "waiting")
        queue.Worker(store, log=lambda line: None, monitor=FakeMonitor({0: 0, 1: 0})).tick()
        assert pinned_to(waiting) == "0"
    finally:
        runstore.stop(pinned, kill=True)
        proc.wait()


def test_worker_gpus_limit(store):
    a, b = queued(store, "a"), queued(store, "b")
    queue.set_gpus(store, ["1"])
    worker = queue.Worker(store, log=lambda line: None, monitor=FakeMonitor({0: 0, 1: 0}))
    worker.tick()
    assert pinned_to(a) == "1" and runstore.run_info(b).pid is None
    until_settled(worker, lambda: state(b) == "done")
    assert pinned_to(b) == "1"


def test_move_cancel_pause_resume(store, monkeypatch):
    monkeypatch.setattr(queue, "ensure_worker", lambda runs_dir: None)
    a, b, c = (queued(store, n) for n in "abc")
    assert queue.move(store, c.name, 1) == 1
    assert queue.read(store)["order"] == [c.name, a.name, b.name]
    queue.cancel(store, a.name)
    assert state(a) == "stopped" and "cancelled" in runstore.run_info(a).message
    with pytest.raises(config.ConfigError, match="not in the queue"):
        queue.cancel(store, a.name)
    queue.pause(store)
    worker = queue.Worker(store, log=lambda line: None, monitor=FakeMonitor({0: 0}))
    assert worker.tick() is False  # paused with nothing running: the worker may leave
    assert runstore.run_info(c).pid is None
    queue.resume(store)
    worker.tick()
    assert runstore.run_info(c).pid is not None and runstore.run_info(b).pid is None
    until_settled(worker, lambda: state(b) == "done")
    assert state(a) == "stopped"  # a cancelled run never starts


def test_crash_guard_pauses_the_line(store):
    bad = queued(store, "bad")
    good = queued(store, "good")
    (bad / "config.toml").write_text("this is not toml [")  # the trainer dies at once
    worker = queue.Worker(store, log=lambda line: None, monitor=FakeMonitor({}))  # CPU slots
    until_settled(worker, lambda: queue.read(store)["paused"] is not None)
    reason = queue.read(store)["paused"]["reason"]
    assert reason.startswith(f"run {bad.name} ended failed 0 s after it started")
    assert "invalid TOML" in reason and state(bad) == "failed"
    assert runstore.run_info(good).pid is None and state(good) == "queued"
    assert queue.read(store)["order"] == [good.name]


def test_cpu_slots(store):
    a, b, c = (queued(store, n) for n in "abc")
    queue.set_gpus(store, None, cpu_slots=2)
    worker = queue.Worker(store, log=lambda line: None, monitor=FakeMonitor({}))
    worker.tick()
    assert [runstore.run_info(r).pid is not None for r in (a, b, c)] == [True, True, False]


# ----------------------------------------------------------------------------------------------
# The real worker process


WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, types
    from vqatune.engine import queue, runstore

    runstore.TRAINER = json.loads(os.environ["QUEUE_TEST_TRAINER"])
    nvml = types.ModuleType("pynvml")  # one idle 80 GiB GPU
    nvml.nvmlInit = nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetCount = lambda: 1
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetName = lambda h: "NVIDIA H100"
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=0, total=80 << 30)
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=0)
    sys.modules["pynvml"] = nvml
    sys.exit(queue.main())
    """
)


@pytest.fixture
def real_worker(store, tmp_path, monkeypatch):
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    monkeypatch.setattr(queue, "WORKER", [sys.executable, str(script)])
    monkeypatch.setenv("QUEUE_TEST_TRAINER", json.dumps(FAKE_TRAINER))
    monkeypatch.setenv("VQATUNE_QUEUE_POLL_S", "0.05")
    return store


def worker_pid(store: Path) -> int:
    return read_json(store / ".queue" / "worker.json")["pid"]


def test_worker_killed_and_restarted_loses_nothing_and_starts_nothing_twice(
    real_worker, monkeypatch
):
    store = real_worker
    monkeypatch.setenv("FAKE_DELAY", "0.2")  # each run ~1 s: the kill lands mid-line
    runs = [queued(store, n) for n in "abcd"]
    queue.ensure_worker(store)
    assert wait_for(lambda: queue.worker_alive(store) and state(runs[0]) == "running", timeout=60)
    os.kill(worker_pid(store), signal.SIGKILL)
    assert wait_for(lambda: not queue.worker_alive(store), timeout=30)
    assert state(runs[-1]) == "queued"
    queue.ensure_worker(store)
    assert wait_for(lambda: all(state(r) == "done" for r in runs), timeout=120)
    for r in runs:  # one start each: the fake trainer prints one line per start
        assert (r / "train.log").read_text().count("fake trainer start") == 1, r.name
    assert wait_for(lambda: not queue.worker_alive(store), timeout=30)  # idle: it leaves


def cli(*args: str):
    from typer.testing import CliRunner
    from vqatune.tui.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_run_queue_and_listing(real_worker, monkeypatch):
    store = real_worker
    monkeypatch.setenv("VQATUNE_RUNS", str(store))
    monkeypatch.setenv("FAKE_DELAY", "0.3")
    # Paused first, so that the line stays put while we look at it.
    assert cli("queue", "pause").exit_code == 0
    ids = []
    for n in ("first", "second"):
        out = cli(
            "run", "smoke", "--queue", "--name", n, "--set", "max_steps=3", "--set", "device=auto"
        )
        assert out.exit_code == 0, out.output
        ids.append(out.stdout.strip())
        assert f"queued at position {len(ids)}" in out.stderr
    listing = json.loads(cli("queue", "--json").stdout)
    assert [(r["position"], r["id"]) for r in listing["runs"]] == [(1, ids[0]), (2, ids[1])]
    assert listing["paused"]["reason"].startswith("paused by")
    text = cli("queue").stdout
    assert "2 waiting" in text and "PAUSED" in text and f"  1  {ids[0]}  queued" in text
    moved = cli("queue", "move", ids[1], "--to", "1")
    assert moved.exit_code == 0 and "position 1" in moved.stdout
    bad = cli("queue", "move", ids[1], "--to", "0")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --to:")
    assert cli("queue", "resume").exit_code == 0
    assert wait_for(lambda: all(state(store / i) == "done" for i in ids), timeout=120)
    first, second = (read_json(store / i / STATUS_FILE) for i in ids)
    assert first["started"] >= second["ended"]  # moved to the head: the second ran first


# ----------------------------------------------------------------------------------------------
# Sweeps through the queue (engine/executors.py QueueExecutor)


def sweep_plan(tmp_path: Path, body: str):
    from vqatune.engine import plans

    path = tmp_path / "plan.toml"
    body = body if "[set]" in body else body + "[set]\n"
    path.write_text('base = "smoke"\n' + body.replace("[set]\n", '[set]\ndevice = "auto"\n'))
    return plans.load_plan(str(path))


def test_a_sweeps_runs_wait_in_the_same_line_as_single_runs(real_worker, tmp_path):
    from vqatune.engine import executors, sweep

    store = real_worker
    solo = queued(store, "solo")  # in line before the sweep: it starts first on the one GPU
    plan = sweep_plan(tmp_path, "seeds = [1]\n[variants.a]\nlr = 1e-4\n[variants.b]\nlr = 5e-4\n")
    sw = sweep.open_sweep(plan, store)
    lines: list[str] = []
    result = sweep.run_variants(
        sw, plan, executor=executors.QueueExecutor(None, store), echo=lines.append, poll_s=0.05
    )
    assert result.states == {"a/seed1": "done", "b/seed1": "done"}
    assert any("queued a/seed1" in line and "position" in line for line in lines), lines
    runs = [store / result.run_ids[k] for k in ("a/seed1", "b/seed1")]
    for r in runs:  # started by the queue's worker, on the GPU it picked
        meta = read_json(r / "meta.json")
        assert meta["queued"] and meta["gpus"] == ["0"] and meta["sweep"] == sw.id
    started = [read_json(r / STATUS_FILE)["started"] for r in [solo, *runs]]
    ended = [read_json(r / STATUS_FILE)["ended"] for r in [solo, *runs]]
    assert started[1] >= ended[0] and started[2] >= ended[1]  # one GPU: one run at a time


def test_a_search_keeps_at_most_parallel_trials_in_the_queue(real_worker, tmp_path):
    from vqatune.engine import executors, search, sweep, sweepstore

    store = real_worker
    plan = sweep_plan(
        tmp_path,
        '[search]\nn_trials = 3\nsampler = "random"\npruner = "none"\n'
        "[search.params.lr]\nlow = 1e-4\nhigh = 5e-4\n",
    )
    sw = sweep.open_sweep(plan, store)
    in_flight: list[int] = []

    def echo(line: str) -> None:  # at every trial the sweep queues: how many are unfinished
        if ": queued run" in line:
            in_flight.append(sum(r.active for r in sweepstore.sweep_runs(sw)))

    spec = search.parse_search(plan.search, plan.path)
    result = search.run_search(
        sw,
        plan,
        spec,
        storage_url=search.default_storage(sw.path),
        study_name=sw.id,
        executor=executors.QueueExecutor(2, store),
        echo=echo,
        poll_s=0.05,
    )
    assert sorted(result.ran) == [0, 1, 2] and result.best_value is not None
    assert len(in_flight) == 3 and max(in_flight) <= 2
    assert all(read_json(r.path / "meta.json").get("queued") for r in sweepstore.sweep_runs(sw))


def test_a_finished_job_is_judged_by_state_not_by_a_local_pid(store):
    from vqatune.engine import slots

    run_dir = queued(store, "waiting")
    job = slots.Job(run_dir, "waiting", 0)
    assert not job.finished()  # queued, no process anywhere yet: not over
    queue.cancel(store, run_dir.name)
    assert job.finished()


def test_stop_of_a_queued_run_takes_it_out_of_the_line(store):
    run_dir = queued(store, "waiting")
    info = runstore.stop(run_dir)
    assert info.state == "stopped" and queue.read(store)["order"] == []


def test_sweep_cli_executor_options(store, monkeypatch):
    monkeypatch.setenv("VQATUNE_RUNS", str(store))
    out = cli("sweep", "learning-rate", "--executor", "queue", "--gpus", "0")
    assert out.exit_code == 2 and out.stderr.startswith("error: --gpus: the queue executor")
    out = cli("sweep", "learning-rate", "--queue", "--executor", "slurm")
    assert out.exit_code == 2 and "give one of them" in out.stderr
    out = cli("sweep", "learning-rate", "--partition", "gpu")
    assert out.exit_code == 2 and "add --executor slurm" in out.stderr
    out = cli("sweep", "learning-rate", "--executor", "cloud")
    assert out.exit_code == 2 and "--executor: 'cloud' is not one of" in out.stderr
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    out = cli("sweep", "learning-rate", "--executor", "slurm", "--time", "1:00:00")
    assert out.exit_code == 2 and "sbatch is not on PATH" in out.stderr
    out = cli("sweep", "learning-rate", "--executor", "slurm", "--time", "soon")
    assert out.exit_code == 2 and out.stderr.startswith("error: --time: 'soon'")
    assert not store.exists()  # nothing written for a bad option


def test_sweep_goes_through_the_queue_by_default_while_a_worker_serves_the_store(
    real_worker, tmp_path, monkeypatch
):
    from vqatune.engine import sweeper, sweepstore

    store = real_worker
    monkeypatch.setenv("VQATUNE_RUNS", str(store))
    monkeypatch.setenv("FAKE_DELAY", "0.1")
    long = queued(store, "long", max_steps=300)
    queue.ensure_worker(store)
    assert wait_for(lambda: state(long) == "running", timeout=60)
    monkeypatch.setenv("FAKE_DELAY", "0.02")
    plan = tmp_path / "plan.toml"
    plan.write_text(
        'base = "smoke"\nseeds = [1]\n[variants.a]\nlr = 1e-4\n[set]\nmax_steps = 3\ndevice = "auto"\n'
    )
    out = cli("sweep", str(plan), "--detach")
    assert out.exit_code == 0, out.output
    assert "a queue worker serves this run store" in out.stderr
    [sw] = sweepstore.list_sweeps(store)
    assert wait_for(lambda: len(sweepstore.sweep_runs(sw)) == 1, timeout=60)
    [trial] = sweepstore.sweep_runs(sw)
    assert trial.state == "queued" and trial.meta["queued"]  # behind `long` on the one GPU
    listing = json.loads(cli("queue", "--json").stdout)["runs"]
    assert [(r["id"], r["sweep"]) for r in listing] == [(trial.id, sw.id), (long.name, None)]
    runstore.stop(long)
    assert wait_for(lambda: not sweeper.is_running(sw), timeout=60)
    assert state(trial.path) == "done" and sweeper.record(sw)["exit_code"] == 0


def test_an_interrupted_sweep_takes_its_waiting_runs_out_of_the_line(store):
    from vqatune.engine import slots

    run_dir = queued(store, "waiting")
    stopped: list[str] = []
    slots.stop_jobs([slots.Job(run_dir, "waiting", 0)], stopped.append, wait_s=30)
    assert state(run_dir) == "stopped" and queue.read(store)["order"] == []
    assert stopped == [f"stopped waiting ({run_dir.name})"]


def test_a_cpu_run_takes_no_gpu_and_holds_none(store):
    gpu_run = queued(store, "gpu", max_steps=400)
    cpu_run = queued(store, "cpu", device="cpu", max_steps=400)
    worker = queue.Worker(store, log=lambda line: None, monitor=FakeMonitor({0: 0}))
    try:
        worker.tick()
        # GPU 0 went to the first run; the CPU run behind it starts at once, on no GPU.
        assert pinned_to(gpu_run) == "0" and pinned_to(cpu_run) == ""
        assert read_json(cpu_run / "meta.json")["gpus"] is None
        runstore.stop(gpu_run, kill=True)
        assert wait_for(lambda: runstore.run_info(gpu_run).pid is None, timeout=60)
        assert queue.held_gpus(store) == set()  # the live CPU run holds no GPU
        q, entries = queue.listing(store)
        assert {e.info.id: e.need for e in entries} == {cpu_run.name: 0}
    finally:
        for run_dir in (gpu_run, cpu_run):
            if runstore.run_info(run_dir).pid is not None:
                runstore.stop(run_dir, kill=True)
