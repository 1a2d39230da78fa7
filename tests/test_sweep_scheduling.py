"""Sweep and search scheduling with a fast stand-in trainer (tests/sweep_fake_trainer.py):
slots and GPU pinning, tags, keep/resume/wait on re-runs, pruning decisions, interrupted
studies, trial numbers shared by two workers. tests/test_sweep_smoke.py runs the real trainer."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
import polling
import psutil
import pytest
from vqatune.engine import compare as comparing
from vqatune.engine import config, plans, runstore, search, slots, sweep, sweeper, sweepstore

FAKE = Path(__file__).with_name("sweep_fake_trainer.py")
FAKE_TRAINER = [sys.executable, str(FAKE)]

# Runs `vqatune` in a child process with the stand-in trainer.
CLI_WITH_FAKE = (
    "import sys; from vqatune.engine import runstore; "
    f"runstore.TRAINER = {FAKE_TRAINER!r}; "
    "from vqatune.tui.cli import main; sys.argv = ['vqatune'] + sys.argv[1:]; main()"
)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(runstore, "TRAINER", FAKE_TRAINER)
    monkeypatch.setenv("FAKE_DELAY", "0.01")


def plan_file(tmp_path: Path, body: str, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text('base = "smoke"\n' + body)
    return path


def default_sigint() -> None:
    """As in a terminal: a shell running the tests in the background ignores SIGINT, and
    children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def vqatune(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLI_WITH_FAKE, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )


wait_for = functools.partial(polling.wait_for, timeout=30.0)


def exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def runs_by_key(sw: sweepstore.Sweep) -> dict[str, list[runstore.RunInfo]]:
    out: dict[str, list] = {}
    for r in sweepstore.sweep_runs(sw):
        out.setdefault(r.meta["sweep_key"], []).append(r)
    return out


def test_variants_x_seeds_run_once_each_tagged_and_compared(tmp_path, fake, capsys):
    plan = plans.load_plan(
        str(
            plan_file(
                tmp_path, "seeds = [1, 2]\n[variants.slow]\nlr = 1e-4\n[variants.fast]\nlr = 5e-4\n"
            )
        )
    )
    sw = sweepstore.open_sweep(plan, tmp_path / "runs")
    lines: list[str] = []
    result = sweep.run_variants(
        sw, plan, slots=slots.make_slots(2, None), echo=lines.append, poll_s=0.02
    )
    assert result.states == {
        k: "done" for k in ("slow/seed1", "slow/seed2", "fast/seed1", "fast/seed2")
    }
    by_key = runs_by_key(sw)
    assert {k: len(v) for k, v in by_key.items()} == {k: 1 for k in result.states}
    run = by_key["fast/seed2"][0]
    assert (run.meta["sweep"], run.meta["variant"], run.meta["seed"]) == (sw.id, "fast", 2)
    assert run.meta["overrides"] == {"lr": 5e-4, "seed": 2}
    assert "seed = 2" in (run.path / "config.toml").read_text()

    table = comparing.compare_sweep(sw)
    rows = {r["variant"]: r for r in table["variants"]}
    assert table["winner"] == "fast"
    assert rows["fast"]["best_mean"] == pytest.approx(0.5) and rows["fast"]["n"] == 2
    assert rows["slow"]["best_mean"] == pytest.approx(0.1)
    assert rows["slow"]["best_std"] == pytest.approx(0.0)
    assert rows["fast"]["overrides"] == {"lr": 5e-4}
    curve = next(c for c in table["curves"] if c["run"] == run.id)
    assert curve["accuracy"] == [0.5] and curve["steps"] == [6]
    progress = sweepstore.progress(sw)
    assert (progress.total, progress.done, progress.best_accuracy) == (4, 4, 0.5)
    assert progress.best_label.startswith("fast/")
    assert [s.id for s in sweepstore.list_sweeps(tmp_path / "runs")] == [sw.id]
    assert sweepstore.find_sweep("plan", tmp_path / "runs").id == sw.id
    [(listed, listed_progress)] = sweepstore.overview(tmp_path / "runs")
    assert listed.id == sw.id and listed_progress == progress

    from typer.testing import CliRunner
    from vqatune.tui.cli import app
    from vqatune.tui.commands import sweep_cmd

    out = CliRunner().invoke(app, ["sweeps", "--runs-dir", str(tmp_path / "runs"), "--json"])
    [row] = json.loads(out.output)
    assert (row["id"], row["state"], row["done"], row["total"], row["best_accuracy"]) == (
        sw.id,
        "finished",
        4,
        4,
        0.5,
    )
    sweep_cmd.compare_sweep(sw.id[:8], tmp_path / "runs", plot=True)
    text = capsys.readouterr().out
    assert "winner: fast" in text and "0.5000 ± 0.0000" in text and "validation accuracy" in text
    compare = ["compare", "--runs-dir", str(tmp_path / "runs")]
    out = CliRunner().invoke(app, [*compare, "--sweep", sw.id, "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["winner"] == "fast"
    out = CliRunner().invoke(app, [*compare, "--sweep", "nosuch"])
    assert out.exit_code == 2 and out.output.startswith("error: no sweep 'nosuch'")
    out = CliRunner().invoke(app, [*compare, "a", "b", "--sweep", sw.id])
    assert out.exit_code == 2 and "give runs or --sweep, not both" in out.output

    # The same command again finds every run finished and keeps them.
    lines.clear()
    again = sweep.run_variants(
        sweepstore.open_sweep(plan, tmp_path / "runs"),
        plan,
        slots=[None],
        echo=lines.append,
        poll_s=0.02,
    )
    assert again.kept == 4 and again.run_ids == result.run_ids
    assert lines[1:] == [f"sweep {sw.id}: 4 of 4 runs already finished, kept"]


@dataclass
class CountdownJob(slots.Job):
    """A job that finishes at its `polls`-th look, and counts how often it was released."""

    polls: int = 2
    released: int = 0

    def finished(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    def release(self) -> None:
        self.released += 1


def test_run_in_slots_fills_free_slots_and_hands_back_each_finished_job(tmp_path):
    made: list[CountdownJob] = []
    live: set[int] = set()
    most_live = 0
    finished: list[str] = []

    def next_job(free: list[int]) -> CountdownJob | None:
        nonlocal most_live
        if len(made) == 5:
            return None
        assert not live & set(free)  # a slot offered is never one in use
        job = CountdownJob(
            tmp_path / f"run{len(made)}", f"job {len(made)}", free[0], polls=len(made)
        )
        made.append(job)
        live.add(job.slot_index)
        most_live = max(most_live, len(live))
        return job

    def job_finished(job: slots.Job) -> None:
        live.discard(job.slot_index)
        finished.append(job.label)

    slots.run_in_slots(
        [None, None], next_job, job_finished, echo=print, interrupted="", poll_s=0.001
    )
    assert sorted(finished) == [f"job {i}" for i in range(5)] and most_live == 2
    assert [job.released for job in made] == [1] * 5


def test_run_in_slots_stops_the_live_jobs_on_ctrl_c(tmp_path):
    made: list[CountdownJob] = []

    def next_job(free: list[int]) -> CountdownJob | None:
        if len(made) == 2:
            raise KeyboardInterrupt
        made.append(CountdownJob(tmp_path / f"run{len(made)}", "job", free[0], polls=3))
        return made[-1]

    lines: list[str] = []
    with pytest.raises(slots.SweepInterrupted, match="run it again"):
        slots.run_in_slots(
            [None, None, None],
            next_job,
            lambda job: None,
            echo=lines.append,
            interrupted="run it again",
            poll_s=0.001,
        )
    assert lines[0] == "interrupted: stopping 2 live run(s)"
    assert [job.released for job in made] == [1, 1] and all(job.polls < 0 for job in made)


def test_gpus_get_one_run_each_at_a_time(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY", "0.05")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    plan = plans.load_plan(str(plan_file(tmp_path, "seeds = [1, 2, 3, 4, 5]\n")))
    sw = sweepstore.open_sweep(plan, tmp_path / "runs")
    sweep.run_variants(
        sw, plan, slots=slots.make_slots(None, ["2", "5"]), echo=lambda _: None, poll_s=0.02
    )
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"  # the sweep's own env is untouched
    spans: dict[str, list[tuple[float, float]]] = {}
    for r in sweepstore.sweep_runs(sw):
        log = (r.path / "train.log").read_text()
        assert f"CUDA_VISIBLE_DEVICES={r.meta['gpu']}" in log
        spans.setdefault(r.meta["gpu"], []).append((r.status["started"], r.status["ended"]))
    assert set(spans) == {"2", "5"} and sum(map(len, spans.values())) == 5
    for gpu_spans in spans.values():
        gpu_spans.sort()
        for (_, end), (start, _) in zip(gpu_spans, gpu_spans[1:]):
            assert start >= end  # never two runs on one GPU


def test_a_slot_pins_the_child_and_leaves_this_process_alone(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    seen: list[str | None] = []  # this process's CUDA_VISIBLE_DEVICES while it launches
    real_launch = runstore.launch

    def watched_launch(run_dir, **kwargs):
        seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
        return real_launch(run_dir, **kwargs)

    monkeypatch.setattr(runstore, "launch", watched_launch)
    run_dir = runstore.create_run(config.load("smoke"), source="smoke", runs_dir=tmp_path / "runs")
    assert slots.launch_in_slot(run_dir, "3", resume=False).wait(timeout=60) == 0
    assert seen == ["7"]
    assert "CUDA_VISIBLE_DEVICES=3" in (run_dir / "train.log").read_text()


def test_a_run_left_going_on_a_gpu_keeps_that_gpu(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY", "0.05")
    plan = plans.load_plan(str(plan_file(tmp_path, "seeds = [1, 2, 3]\n")))
    sw = sweepstore.open_sweep(plan, tmp_path / "runs")
    p = plans.expand(plan)[0]
    with monkeypatch.context() as m:  # as an earlier sweep process that died did it
        m.setenv("CUDA_VISIBLE_DEVICES", "5")
        left = sweepstore.create_sweep_run(
            sw,
            p.config,
            name="left",
            overrides=p.overrides,
            tags={"sweep_key": p.key, "variant": p.variant, "seed": p.seed, "gpu": "5"},
        )
        proc = runstore.launch(left, detach=True)
    assert wait_for(lambda: runstore.run_info(left).state == "running")
    lines: list[str] = []
    sweep.run_variants(sw, plan, slots=["2", "5"], echo=lines.append, poll_s=0.02)
    proc.wait()
    assert any(f"waiting for {p.key}: run {left.name} on GPU 5" in line for line in lines)
    spans = sorted(
        (r.status["started"], r.status["ended"])
        for r in sweepstore.sweep_runs(sw)
        if r.meta["gpu"] == "5"
    )
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end


def test_rerun_resumes_stopped_restarts_crashed_and_waits_for_running(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY", "0.05")
    plan = plans.load_plan(
        str(
            plan_file(
                tmp_path,
                "[set]\nmax_steps = 40\neval_every = 10\n[variants.a]\nlr = 1e-4\n[variants.b]\nlr = 2e-4\n"
                "[variants.c]\nlr = 3e-4\n[variants.d]\nlr = 4e-4\n",
            )
        )
    )
    sw = sweepstore.open_sweep(plan, tmp_path / "runs")
    planned = {p.key: p for p in plans.expand(plan)}

    def make(key: str) -> Path:
        p = planned[key]
        return sweepstore.create_sweep_run(
            sw,
            p.config,
            name=key.replace("/", "-"),
            overrides=p.overrides,
            tags={"sweep_key": key, "variant": p.variant, "seed": p.seed},
        )

    # a: finished; b: stopped half way (a checkpoint); c: crashed before any checkpoint;
    # d: still running, started by an earlier sweep process that died.
    done = make("a/seed1204")
    runstore.launch(done, detach=True).wait()
    stopped = make("b/seed1204")
    proc = runstore.launch(stopped, detach=True)
    assert wait_for(lambda: (stopped / "checkpoints" / "last.pt").exists())
    runstore.stop(stopped, wait_s=10)
    proc.wait()
    crashed = make("c/seed1204")
    (crashed / "status.json").write_text(
        json.dumps({"state": "running", "pid": 999999, "pid_start_time": 1.0, "heartbeat": 1.0})
    )
    running = make("d/seed1204")
    other = runstore.launch(running, detach=True)
    assert wait_for(lambda: runstore.run_info(running).state == "running")
    done_mtime = (done / "summary.json").stat().st_mtime
    monkeypatch.setenv("FAKE_DELAY", "0.01")

    lines: list[str] = []
    result = sweep.run_variants(sw, plan, slots=[None], echo=lines.append, poll_s=0.02)
    other.wait()
    assert result.kept == 1 and set(result.states.values()) == {"done"}
    assert {k: len(v) for k, v in runs_by_key(sw).items()} == {k: 1 for k in planned}
    assert (done / "summary.json").stat().st_mtime == done_mtime
    text = "\n".join(lines)
    assert "resumed b/seed1204" in text and "restarted c/seed1204" in text
    assert "waiting for d/seed1204" in text
    # The waited-for run was not started a second time.
    assert (running / "train.log").read_text().count("fake trainer") == 1
    resumed_log = (stopped / "train.log").read_text()
    assert (
        "fake trainer resume at step" in resumed_log
        and "fake trainer resume at step 0" not in resumed_log
    )


def test_sighup_ends_the_follower_and_the_sweep_goes_on(tmp_path):
    plan = plan_file(tmp_path, "seeds = [1, 2]\n[set]\nmax_steps = 400\n")
    runs = tmp_path / "runs"
    proc = vqatune(["sweep", str(plan), "--runs-dir", str(runs)], env={"FAKE_DELAY": "0.05"})
    assert wait_for(lambda: any(r.state == "running" for r in runstore.list_runs(runs)))
    proc.stdout.close()  # the SSH connection is gone: writing the progress fails
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=60) == 129
    [sw] = sweepstore.list_sweeps(runs)
    assert sweeper.is_running(sw) and any(r.live for r in runstore.list_runs(runs))
    os.kill(sweeper.record(sw)["pid"], signal.SIGTERM)  # what a follower's Ctrl-C sends
    assert wait_for(lambda: not sweeper.is_running(sw), timeout=60)
    assert [r.state for r in runstore.list_runs(runs)] == ["stopped"]
    assert sweeper.record(sw)["exit_code"] == 130


def test_a_second_process_on_a_running_sweep_is_refused(tmp_path, fake):
    plan = plans.load_plan(str(plan_file(tmp_path, "")))
    sw = sweepstore.open_sweep(plan, tmp_path / "runs")
    args = ["sweep", str(plan.path), "--runs-dir", str(tmp_path / "runs")]
    assert not sweepstore.is_active(sw)
    with sweepstore.sweep_lock(sw):
        assert sweepstore.is_active(sw) and sweepstore.progress(sw).state == "running"
        second = vqatune(args)
        out, _ = second.communicate(timeout=60)
        detached = vqatune([*args, "--detach"])
        detached_out, _ = detached.communicate(timeout=60)
    assert sweepstore.progress(sw).state == "incomplete"
    refused = f"error: sweep {sw.id} is already running (`vqatune attach --sweep {sw.id}`)"
    assert second.returncode == 2 and out.strip() == refused
    assert detached.returncode == 2 and detached_out.strip() == refused
    assert runstore.list_runs(tmp_path / "runs") == []


SEARCH = """
[set]
eval_every = 2
[search]
sampler = "random"
seed = {seed}
n_trials = {n}
pruner = "median"
pruner_startup_trials = 1
[search.params]
lr = {{ choices = [1e-4, 9e-4] }}
"""


def trial_table(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=search.open_storage(storage)).trials


def test_search_prunes_on_the_trainers_evals(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY", "0.25")  # time to see an eval before the run ends
    plan = plans.load_plan(str(plan_file(tmp_path, SEARCH.format(seed=0, n=4))))
    spec = plans.parse_search(plan.search, plan.path)
    sw = sweepstore.open_sweep(plan, tmp_path / "runs")
    storage = search.default_storage(sw.path)
    lines: list[str] = []
    result = search.run_search(
        sw,
        plan,
        spec,
        storage_url=storage,
        study_name="s",
        slots=[None],
        echo=lines.append,
        poll_s=0.02,
    )
    trials = trial_table(storage, "s")
    assert len(trials) == 4 and sorted(result.ran) == list(range(4))
    states = [t.state.name for t in trials]
    assert "PRUNED" in states and "COMPLETE" in states
    runs = {r.meta["trial"]: r for r in sweepstore.sweep_runs(sw)}
    assert sorted(runs) == list(range(4))
    for t in trials:
        run = runs[t.number]
        assert t.user_attrs["run_id"] == run.id and run.meta["params"] == t.params
        # a trial's values count as given: they win over an X-VLM YAML, as a variant's do
        assert config.load(str(run.path / "config.toml")).given >= {"lr"}
        evals = [
            json.loads(line)["accuracy"]
            for line in (run.path / "metrics.jsonl").read_text().splitlines()
            if '"eval"' in line
        ]
        reported = list(t.intermediate_values.values())
        if t.state.name == "PRUNED":
            # Worse than the median of finished trials at its first eval: stopped there.
            assert t.params["lr"] == 1e-4 and len(evals) < 3 and run.state == "stopped"
            assert run.meta["pruned"] is True and run.meta["pruned_at_eval"] == 1
            assert reported == evals[:1]
        else:
            assert run.state == "done" and t.value == max(evals)
            assert reported == evals  # every eval, in order
    assert result.best_params == {"lr": 9e-4} and result.best_value == pytest.approx(0.9)
    table = comparing.compare_sweep(sw)
    assert table["kind"] == "search" and table["winner"] in {f"trial {n}" for n in runs}
    assert sweepstore.progress(sw).done == 4
    assert any("pruned at evaluation 1" in line for line in lines)


def test_interrupted_search_resumes_its_open_trial(tmp_path):
    plan = plan_file(
        tmp_path,
        SEARCH.format(seed=0, n=3).replace("eval_every = 2", "eval_every = 10\nmax_steps = 40"),
    )
    runs = tmp_path / "runs"
    args = ["sweep", str(plan), "--runs-dir", str(runs)]
    first = vqatune(args, env={"FAKE_DELAY": "0.05"})
    assert wait_for(
        lambda: any(
            r.state == "running" and (r.path / "checkpoints").exists()
            for r in runstore.list_runs(runs)
        ),
        timeout=60,
    )
    [sw] = sweepstore.list_sweeps(runs)
    assert sweepstore.is_active(sw)  # the worker holds the sweep's (shared) lock
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 130, out
    assert not sweepstore.is_active(sw)
    storage = search.default_storage(sw.path)
    open_trials = [t for t in trial_table(storage, sw.id) if t.state.name == "RUNNING"]
    assert len(open_trials) == 1

    second = vqatune(args, env={"FAKE_DELAY": "0.01"})
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0, out
    assert f"trial {open_trials[0].number}: resumed run" in out
    trials = trial_table(storage, sw.id)
    assert len(trials) == 3 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert sorted(r.meta["trial"] for r in runstore.list_runs(runs)) == [0, 1, 2]


@pytest.mark.parametrize("storage_kind", ["sqlite", "journal"])
def test_two_workers_share_one_study_without_duplicates(tmp_path, storage_kind):
    plan = plan_file(tmp_path, SEARCH.format(seed=0, n=6).replace("random", "tpe"))
    storage = (
        f"sqlite:///{tmp_path / 'study.db'}"
        if storage_kind == "sqlite"
        else f"journal:{tmp_path / 'study.log'}"
    )
    workers = [
        vqatune(
            [
                "sweep",
                str(plan),
                "--runs-dir",
                str(tmp_path / f"runs{i}"),
                "--storage",
                storage,
                "--study",
                "shared",
            ],
            env={"FAKE_DELAY": "0.03"},
        )
        for i in (1, 2)
    ]
    outs = [w.communicate(timeout=90)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    trials = [
        t for t in trial_table(storage, "shared") if not t.user_attrs.get(search.OVERFLOW_ATTR)
    ]
    assert [t.number for t in trials] == list(range(6))
    run_ids = [t.user_attrs["run_id"] for t in trials]
    assert len(set(run_ids)) == 6
    local = [
        sorted(r.meta["trial"] for r in runstore.list_runs(tmp_path / f"runs{i}")) for i in (1, 2)
    ]
    assert sorted(local[0] + local[1]) == list(range(6)) and local[0] and local[1]


def test_detach_runs_the_sweep_in_its_own_session_with_a_log(tmp_path):
    from typer.testing import CliRunner
    from vqatune.tui.cli import app

    plan = plan_file(tmp_path, "seeds = [1, 2]\n")
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["sweep", str(plan), "--runs-dir", str(runs), "--detach"])
    assert result.exit_code == 0, result.output
    pid = int(result.output.split("(pid ")[1].split(")")[0])
    [sw] = sweepstore.list_sweeps(runs)
    log = sw.path / "sweep.log"
    try:
        assert os.getsid(pid) == pid  # its own session: a closed SSH connection won't reach it
        assert wait_for(lambda: f"sweep {sw.id}:" in log.read_text(), timeout=60)
    finally:
        os.kill(pid, signal.SIGTERM)  # like Ctrl-C: it stops its runs and exits
        assert wait_for(lambda: exited(pid), timeout=60)
    assert "interrupted" in log.read_text()
    assert not any(r.live for r in runstore.list_runs(runs))
