"""Distributed training: torchrun with 2 CPU processes (gloo) on the smoke preset.

Each torchrun launch costs a few seconds (two interpreters importing torch), so the runs are
tiny (3-4 steps) and each test checks several things of one run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from vqatune.engine import checkpoint, config, distributed, events, runstore
from vqatune.engine.config import ConfigError
from vqatune.engine.faults import FAULTS_ENV

# 64 questions; global micro-batch 16 (8 per rank x 2, or 16 in one process) -> 4 steps.
# Dropout 0: the only randomness left is the data order, the same in both set-ups.
SETS = ["dropout=0", "max_steps=0", "eval_limit=16"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_run(root: Path, name: str, sets=()) -> Path:
    run_dir = root / name
    run_dir.mkdir()
    cfg = config.load("smoke", [*SETS, *sets])
    (run_dir / events.CONFIG_FILE).write_text(config.dumps(cfg, full=True), encoding="utf-8")
    return run_dir


def start(run_dir: Path, faults: str = "", resume: bool = False):
    """Start the run as `vqatune run` does (runstore.launch); returns the torchrun process."""
    old = os.environ.get(FAULTS_ENV)
    os.environ[FAULTS_ENV] = faults
    try:
        return runstore.launch(run_dir, detach=True, resume=resume)
    finally:
        os.environ.pop(FAULTS_ENV) if old is None else os.environ.__setitem__(FAULTS_ENV, old)


def torchrun(run_dir: Path, faults: str = "", resume: bool = False) -> int:
    return start(run_dir, faults, resume).wait(timeout=120)


def read(run_dir: Path) -> list[dict]:
    with open(run_dir / events.METRICS_FILE, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def step_losses(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records if r["event"] == "step"}


# ------------------------------------------------------------------------------------------------
# Launch command and sharding (no processes)


def test_torchrun_command_single_server_and_several():
    cfg = config.load("smoke", ["nproc_per_node=4"])
    cmd = distributed.torchrun_command(Path("RUN"), cfg)
    assert cmd[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "4",
        "-m",
        "vqatune.engine.train",
        "RUN",
    ]
    cfg = config.load(
        "smoke", ["nproc_per_node=2", "nnodes=3", "node_rank=1", "rdzv_endpoint=gpu0:29500"]
    )
    cmd = distributed.torchrun_command(Path("RUN"), cfg, resume=True)
    assert cmd[3:] == [
        "--nnodes",
        "3",
        "--node_rank",
        "1",
        "--rdzv_endpoint",
        "gpu0:29500",
        "--nproc_per_node",
        "2",
        "-m",
        "vqatune.engine.train",
        "RUN",
        "--resume",
    ]


@pytest.mark.parametrize(
    "sets, message",
    [
        (["nnodes=2"], "rdzv_endpoint: nnodes > 1"),
        (["nnodes=2", "node_rank=2", "rdzv_endpoint=h:1"], "node_rank: 2 is not below nnodes = 2"),
        (["nnodes=2", "rdzv_endpoint=gpu0"], "rdzv_endpoint: 'gpu0' is not HOST:PORT"),
    ],
)
def test_torchrun_command_rejects_bad_combinations(sets, message):
    with pytest.raises(ConfigError, match=message):
        distributed.torchrun_command(Path("RUN"), config.load("smoke", sets))


def test_shard_splits_each_global_batch_between_ranks():
    order = np.random.default_rng(0).permutation(21)
    parts = [distributed.shard(order, 4, 2, rank, drop_last=False) for rank in (0, 1)]
    (b0, sizes), (b1, sizes1) = parts
    assert sizes == sizes1 == [8, 8, 5]
    assert len(b0) == len(b1) == 3  # same number of micro-batches on every rank
    for k in range(2):  # rank 0 then rank 1 = the k-th global micro-batch of one process
        assert np.concatenate([b0[k], b1[k]]).tolist() == order[8 * k : 8 * k + 8].tolist()
    # The short last batch (5 samples) is split 3 + 3, padded from the order's start.
    assert np.concatenate([b0[2], b1[2]]).tolist() == [*order[16:], order[0]]
    dropped, sizes = distributed.shard(order, 4, 2, 1, drop_last=True)
    assert len(dropped) == 2 and sizes == [8, 8]


# ------------------------------------------------------------------------------------------------
# Two processes


# The model draws training noise that no config value turns off (the backbone's BERT dropout,
# the subgraph sampler's Gumbel noise), and rank 1 draws it from its own generator: no longer the
# noise a single process would draw for those samples. For the loss comparison both set-ups run
# with train mode off (exact top-k, no dropout), so what differs is only what DDP changes.
# The one process is this one (the Trainer in-process: a torchrun of one saves nothing to test).
NO_TRAIN_MODE = """
import torch.nn
_train = torch.nn.Module.train
torch.nn.Module.train = lambda self, mode=True: _train(self, False)
"""


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_TRAIN_MODE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    # 2 ranks x micro-batch 4 x 2 accumulated (no_sync on the first) = one process x 16.
    ddp = make_run(tmp_path, "ddp", ["nproc_per_node=2", "batch_size=4", "update_freq=2"])
    proc = start(ddp)
    single = make_run(tmp_path, "single", ["batch_size=16"])
    import torch.nn
    from vqatune.engine.trainer import Trainer

    train = torch.nn.Module.train
    monkeypatch.setattr(torch.nn.Module, "train", lambda self, mode=True: train(self, False))
    assert Trainer(single).run() == 0, (single / events.LOG_FILE).read_text()
    monkeypatch.undo()
    assert proc.wait(timeout=120) == 0, (ddp / events.LOG_FILE).read_text()

    records = read(ddp)
    # Rank 0 alone writes: one start, one end, one step event per step, one checkpoint.
    kinds = [r["event"] for r in records]
    assert kinds.count("start") == kinds.count("end") == 1
    assert [r["step"] for r in records if r["event"] == "step"] == [1, 2, 3, 4]
    began = records[0]
    assert began["world_size"] == 2 and began["effective_batch_size"] == 16
    assert began["batch_size"] == 4 and began["accumulation"] == 2 and began["total_steps"] == 4
    step = next(r for r in records if r["event"] == "step")
    assert len(step["memory_ranks"]) == 2 and all(m["rss_mb"] > 0 for m in step["memory_ranks"])
    status = events.read_json(ddp / events.STATUS_FILE)
    assert status["state"] == "done" and status["world_size"] == 2 and status["step"] == 4
    assert not list(ddp.glob(".rank-*.error"))

    # Same global batch, same data order, no noise: the gradients differ only by the float
    # summation order (DDP averages 2 ranks x 2 micro-batch means of 4 instead of one mean of
    # 16), ~1e-7 relative in fp32; 4 Adam steps at lr 1.4e-4 keep the losses within 1e-5.
    ours, theirs = step_losses(records), step_losses(read(single))
    assert ours.keys() == theirs.keys()
    for s in ours:
        assert ours[s] == pytest.approx(theirs[s], rel=1e-5), s
    # The evaluation is sharded and its sums reduced: the same accuracy over the same questions.
    ev, ev1 = ([r for r in read(d) if r["event"] == "eval"][-1] for d in (ddp, single))
    assert ev["questions"] == ev1["questions"] == 16
    assert ev["accuracy"] == pytest.approx(ev1["accuracy"], abs=1e-9)


def test_stop_on_one_rank_stops_every_rank_and_resume_is_exact(tmp_path):
    full = make_run(tmp_path, "full", ["nproc_per_node=2", "dropout=0.3"])
    stopped = make_run(tmp_path, "stopped", ["nproc_per_node=2", "dropout=0.3"])
    # Both at once (torchrun's start and end are mostly waiting).
    # A stop request reaching rank 1 alone (as SIGTERM would) at step 2: all ranks agree.
    # Every rank exits 130; torchrun calls any non-zero exit a failure (exit 1); our state
    # is in status.json (what `vqatune run` reports).
    procs = [start(full), start(stopped, faults="stop@2:1")]
    assert [p.wait(timeout=120) != 0 for p in procs] == [False, True]
    status = events.read_json(stopped / events.STATUS_FILE)
    assert status["state"] == "stopped" and status["step"] == 2
    ckpt = checkpoint.load(stopped / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2

    assert torchrun(stopped, resume=True) == 0
    # Dropout 0.3 on both ranks: exact only if every rank's RNG state came back.
    assert step_losses(read(stopped)) == step_losses(read(full))


def test_a_failing_rank_fails_the_run_with_its_error_an_oom_on_one_rank_resizes_all(tmp_path):
    error = make_run(tmp_path, "error", ["nproc_per_node=2"])
    killed = make_run(tmp_path, "killed", ["nproc_per_node=2"])
    oom = make_run(tmp_path, "oom", ["nproc_per_node=2", "dynamic_batch_size=true"])
    # A Python error on rank 1 at step 2; rank 1 dying at once after step 2 (as kill -9);
    # an out-of-memory error on rank 1 alone at step 2 (all three at once).
    procs = [
        start(error, faults="error@2:1"),
        start(killed, faults="crash@2:1"),
        start(oom, faults="oom@2:1"),
    ]
    assert [p.wait(timeout=120) != 0 for p in procs] == [True, True, False]

    # Both ranks halve their micro-batch at step 2 and double the accumulation: same global batch.
    records = read(oom)
    resized = [r for r in records if r["event"] == "batch_resized"]
    assert [
        (r["step"], r["old_batch_size"], r["new_batch_size"], r["accumulation"]) for r in resized
    ] == [(2, 8, 4, 2)]
    steps = [r for r in records if r["event"] == "step"]
    assert [(r["step"], r["batch_size"], r["accumulation"]) for r in steps] == [
        (1, 8, 1),
        (2, 4, 2),
        (3, 4, 2),
        (4, 4, 2),
    ]
    assert events.read_json(oom / events.STATUS_FILE)["state"] == "done"

    status = events.read_json(error / events.STATUS_FILE)
    assert status["state"] == "failed"
    assert status["message"] == "rank 1 failed: RuntimeError: injected failure at step 2 (a test)"
    summary = events.read_json(error / events.SUMMARY_FILE)
    assert summary["state"] == "failed" and summary["message"] == status["message"]
    log = (error / events.LOG_FILE).read_text()
    assert "[rank 1] training failed" in log and "injected failure at step 2" in log
    assert runstore.run_info(error).state == "failed"

    status = events.read_json(killed / events.STATUS_FILE)
    assert status["state"] == "failed" and status["step"] == 2
    assert status["message"].startswith("another training process ended abruptly")
    assert "exitcode: 3) local_rank: 1" in (killed / events.LOG_FILE).read_text()  # torchrun's


# ------------------------------------------------------------------------------------------------
# Command line (no training)


def cli(*args):
    from typer.testing import CliRunner
    from vqatune.tui.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nnodes", "2"], "error: rdzv_endpoint: nnodes > 1 needs the HOST:PORT of node 0"),
        (
            ["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "gpu0:29500"],
            "error: node_rank: 2 is not below nnodes = 2",
        ),
        (
            ["--nproc", "2", "--nnodes", "2", "--rdzv-endpoint", "gpu0"],
            "error: rdzv_endpoint: 'gpu0' is not HOST:PORT",
        ),
    ],
)
def test_run_rejects_bad_process_layouts_and_creates_nothing(tmp_path, args, message):
    result = cli("run", "smoke", "--runs-dir", str(tmp_path / "runs"), *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_effective_batch_includes_the_processes_and_show_lists_them(tmp_path):
    result = cli("config", "show", "smoke", "--set", "nproc_per_node=4", "--set", "nnodes=2")
    assert (
        "# effective batch size: 64 (batch_size x update_freq x gradient_accumulation_steps "
        "= 8 per process, x 8 processes: nproc_per_node 4 x nnodes 2)" in result.stdout
    )
    result = cli("config", "show", "smoke", "-f", "json", "--set", "nproc_per_node=4")
    assert '"effective_batch_size": 32' in result.stdout and '"world_size": 4' in result.stdout

    cfg = config.load(
        "smoke", ["nproc_per_node=4", "nnodes=2", "node_rank=1", "rdzv_endpoint=gpu0:29500"]
    )
    run_dir = runstore.create_run(cfg, source="smoke", runs_dir=tmp_path / "runs")
    result = cli("show", run_dir.name, "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert "8 (nproc_per_node 4 x nnodes 2), node_rank 1, rendezvous gpu0:29500" in result.stdout
