"""The training process on the `smoke` preset: events, status, checkpoints, exact resume,
accumulation, clipping, precision, OOM handling, divergence, early stopping, signals."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import polling
import pytest
import torch
from vqatune.engine import checkpoint, config, events, optim
from vqatune.engine.faults import FAULTS_ENV, Faults
from vqatune.engine.trainer import Trainer

# 48 questions in micro-batches of 8 = 6 micro-batches; update_freq 2 -> 3 steps an epoch.
RESUME_SETS = ["epochs=2", "max_steps=0", "train_limit=48", "eval_limit=8", "update_freq=2"]
QUICK = ["eval_limit=8"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_run(root: Path, name: str, sets=()) -> Path:
    run_dir = root / name
    run_dir.mkdir()
    cfg = config.load("smoke", sets)
    (run_dir / events.CONFIG_FILE).write_text(config.dumps(cfg, full=True), encoding="utf-8")
    return run_dir


def train(run_dir: Path, resume=False, faults="", monkeypatch=None) -> int:
    if monkeypatch is not None:
        monkeypatch.setenv(FAULTS_ENV, faults)
    return Trainer(run_dir, resume=resume).run()


class Forked:
    """The trainer in a child forked from this process: a training process of its own (signals,
    exit codes, kill -9) without the ~10 s of a fresh interpreter importing torch and the model
    code. The child never returns into pytest."""

    def __init__(self, run_dir: Path, faults: str = ""):
        sys.stdout.flush()
        sys.stderr.flush()
        self.returncode = None
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.environ[FAULTS_ENV] = faults
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                code = Trainer(run_dir).run()
            finally:
                os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, code = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(code)  # -N: killed by signal N
        return self.returncode

    def wait(self, timeout: float = 60) -> int:
        assert polling.wait_for(lambda: self.poll() is not None, timeout=timeout, every=0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        if self.poll() is None:
            self.send_signal(signal.SIGKILL)
            self.wait()


def read(run_dir: Path) -> list[dict]:
    with open(run_dir / events.METRICS_FILE, encoding="utf-8") as f:
        return [json.loads(line) for line in f]  # every line valid JSON (no NaN)


def curve(run_dir: Path) -> list[dict]:
    """Step and eval events without the timing fields, one per (event, step) (a run resumed
    after a crash repeats the steps after its checkpoint; the later copy wins)."""
    seen = {}
    for e in read(run_dir):
        if e["event"] in ("step", "eval"):
            for key in ("time", "samples_per_s", "memory", "duration_s"):
                e.pop(key, None)
            seen[(e["event"], e["step"])] = e
    return list(seen.values())


def status(run_dir: Path) -> dict:
    return events.read_json(run_dir / events.STATUS_FILE)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of RESUME_SETS."""
    run_dir = make_run(tmp_path_factory.mktemp("ref"), "ref", RESUME_SETS)
    os.environ.pop(FAULTS_ENV, None)
    assert Trainer(run_dir).run() == 0
    return run_dir


# ----------------------------------------------------------------------------------------------
# Schedules


def test_head_schedule_is_ban_vqa():
    factors = [optim.head_lr_factor(e) for e in range(20)]
    assert factors[:4] == [0.5, 1.0, 1.5, 2.0]
    assert factors[4:10] == [2.0] * 6
    assert factors[10] == factors[11] == 0.5 and factors[12] == 0.125 and factors[18] == 2 * 0.25**5


def test_backbone_schedule_warms_up_then_decays():
    total = 100
    factors = [optim.backbone_lr_factor(s, total) for s in range(total)]
    assert factors[0] == 0.1 and factors[9] == 1.0  # 10 warm-up steps
    assert all(a > b for a, b in zip(factors[9:], factors[10:]))
    assert factors[-1] == pytest.approx(1 / 91)


def test_frozen_backbone_gets_no_optimiser():
    backbone, head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    groups = {"backbone": list(backbone.parameters()), "heads": list(head.parameters())}
    opt = optim.build(groups, config.Config().replace(xvlm_lr=0.0), total_steps=10)
    assert set(opt.optimizers) == {"heads"} and opt.lr("backbone") == 0.0
    assert not any(p.requires_grad for p in backbone.parameters())
    opt = optim.build(
        groups | {"backbone": list(torch.nn.Linear(2, 2).parameters())},
        config.Config(),
        total_steps=10,
    )
    assert isinstance(opt.optimizers["backbone"], torch.optim.AdamW)
    assert isinstance(opt.optimizers["heads"], torch.optim.Adamax)


def test_faults_fire_once():
    faults = Faults("oom@3, stop@5")
    assert not faults.fire("oom", 2) and faults.fire("oom", 3) and not faults.fire("oom", 3)
    assert faults.fire("stop", 5)


# ----------------------------------------------------------------------------------------------
# A whole run


def test_a_run_writes_the_run_directory(reference):
    run_dir = reference
    log = read(run_dir)
    kinds = [e["event"] for e in log]
    assert kinds == ["start"] + (["step"] * 3 + ["eval", "checkpoint"]) * 2 + ["end"]
    start, step, ev, end = log[0], log[1], log[9], log[-1]
    assert start["effective_batch_size"] == 16 and start["accumulation"] == 2
    assert start["total_steps"] == 6 and start["steps_per_epoch"] == 3
    assert start["train_size"] == 48 and start["eval_size"] == 8 and start["precision"] == "fp32"
    assert set(step["losses"]) == {"fused", "ban", "graph", "xvlm"} and math.isfinite(step["loss"])
    assert step["memory"]["device"] == "cpu" and step["memory"]["rss_mb"] > 0
    assert step["grad_norm"] > 0 and step["samples_per_s"] > 0 and step["xvlm_lr"] > 0
    # ban-vqa warm-up: 0.5 x lr in epoch 1, 1 x lr in epoch 2
    assert step["lr"] == pytest.approx(0.5 * 2.8e-4) and log[6]["lr"] == pytest.approx(2.8e-4)
    assert ev["epoch"] == 2 and ev["step"] == 6 and ev["questions"] == 8
    assert 0 <= ev["accuracy"] <= 1 and set(ev["accuracy_type"]) == {"yes/no", "color", "shape"}
    assert ev["accuracy"] == ev["accuracy_branch"]["fused"]
    assert end["state"] == "done" and end["best_accuracy"] == max(
        log[4]["accuracy"], ev["accuracy"]
    )
    st = status(run_dir)
    assert st["state"] == "done" and st["pid"] == os.getpid() and st["step"] == 6
    assert st["total_steps"] == 6 and st["ended"] >= st["started"] and st["world_size"] == 1
    summary = events.read_json(run_dir / events.SUMMARY_FILE)
    assert summary["state"] == "done" and summary["final_accuracy"] == ev["accuracy"]
    saved = checkpoint.load(run_dir / "checkpoints/last.pt")
    assert saved["step"] == 6 and {"python", "numpy", "torch"} <= set(saved["rng_ranks"][0])
    best = checkpoint.load(run_dir / "checkpoints/best.pt")
    assert best["step"] == end["best_step"]
    text = (run_dir / events.LOG_FILE).read_text()
    assert "parameters on cpu (fp32), 6 steps, effective batch 16" in text
    assert "step 3/6 epoch 1: loss" in text and "run done" in text


def test_accumulation_and_bf16(tmp_path, monkeypatch):
    run_dir = make_run(
        tmp_path,
        "accum",
        QUICK
        + ["update_freq=2", "gradient_accumulation_steps=2", "max_steps=1", "mixed_precision=true"],
    )
    assert train(run_dir, monkeypatch=monkeypatch) == 0
    log = read(run_dir)
    assert log[0]["effective_batch_size"] == 32 and log[0]["accumulation"] == 4
    assert log[0]["precision"] == "bf16" and math.isfinite(log[1]["loss"])
    assert checkpoint.load(run_dir / "checkpoints/last.pt")["epoch_samples_done"] == 32  # 4 x 8


def test_grad_norm_is_logged_before_clipping(tmp_path, monkeypatch):
    runs = {}
    for clip in ("0", "0.001"):
        run_dir = make_run(tmp_path, f"clip{clip}", QUICK + ["max_steps=2", f"clip_norm={clip}"])
        assert train(run_dir, monkeypatch=monkeypatch) == 0
        runs[clip] = [e for e in read(run_dir) if e["event"] == "step"]
    assert runs["0"][0]["grad_norm"] == runs["0.001"][0]["grad_norm"] > 0.001
    assert runs["0"][1]["loss"] != runs["0.001"][1]["loss"]  # clipping changed the update


# ----------------------------------------------------------------------------------------------
# Exact resume


def test_stop_mid_epoch_then_resume_matches_uninterrupted(tmp_path, monkeypatch, reference):
    run_dir = make_run(tmp_path, "stopped", RESUME_SETS)
    assert train(run_dir, faults="stop@2", monkeypatch=monkeypatch) == 130
    assert status(run_dir)["state"] == "stopped"
    assert [e["event"] for e in read(run_dir)][-2:] == ["checkpoint", "end"]
    assert train(run_dir, resume=True, monkeypatch=monkeypatch) == 0
    resumed = [e for e in read(run_dir) if e["event"] == "resumed"]
    assert resumed[0]["step"] == 2 and resumed[0]["from_checkpoint"].endswith("last.pt")
    assert curve(run_dir) == curve(reference)
    assert len(curve(reference)) == 6 + 2


def test_crash_after_an_eval_checkpoint_then_resume_matches(tmp_path, monkeypatch, reference):
    run_dir = make_run(tmp_path, "crashed", RESUME_SETS)
    assert Forked(run_dir, faults="crash@4").wait() == 3
    assert status(run_dir)["state"] == "running"  # never ended: the run store says crashed
    assert checkpoint.load(run_dir / "checkpoints/last.pt")["step"] == 3  # epoch 1's eval
    assert train(run_dir, resume=True, monkeypatch=monkeypatch) == 0
    assert curve(run_dir) == curve(reference)


def test_sigterm_stops_cleanly_and_resume_matches(tmp_path, monkeypatch, reference):
    run_dir = make_run(tmp_path, "signal", RESUME_SETS)
    proc = Forked(run_dir)
    metrics = run_dir / events.METRICS_FILE
    stepped = lambda: metrics.exists() and '"event": "step"' in metrics.read_text()  # noqa: E731
    try:
        assert polling.wait_for(stepped, timeout=60, every=0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    st = status(run_dir)
    assert st["state"] == "stopped" and st["ended"]
    assert (run_dir / "checkpoints/last.pt").exists()
    if st["step"] < 6:  # stopped before the end: resume finishes it
        assert train(run_dir, resume=True, monkeypatch=monkeypatch) == 0
    assert curve(run_dir) == curve(reference)


def test_kill_9_between_evaluations_loses_at_most_checkpoint_every_min(
    tmp_path, monkeypatch, reference
):
    # 6 ms: shorter than any step, so every step between the evaluations (3 and 6) is saved.
    every_s = 0.0001 * 60
    run_dir = make_run(tmp_path, "timed", RESUME_SETS + ["checkpoint_every_min=0.0001"])
    proc = Forked(run_dir, faults="hold@5")  # hangs after step 5, as if training on
    try:
        log_file = run_dir / events.LOG_FILE
        holding = lambda: log_file.exists() and "holding after step 5" in log_file.read_text()  # noqa: E731
        assert polling.wait_for(holding, timeout=120)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
    log = read(run_dir)
    saves = [e for e in log if e["event"] == "checkpoint"]
    assert [e["step"] for e in saves] == [1, 2, 3, 4, 5]  # 3: the evaluation's alone
    last_step = [e for e in log if e["event"] == "step"][-1]
    assert last_step["step"] == 5 and saves[-1]["time"] >= last_step["time"] - every_s
    saved = checkpoint.load(run_dir / "checkpoints/last.pt")
    assert (saved["step"], saved["epoch"], saved["epoch_samples_done"]) == (5, 1, 32)  # mid-epoch
    assert train(run_dir, resume=True, monkeypatch=monkeypatch) == 0
    assert curve(run_dir) == curve(reference)


def test_resume_refuses_a_checkpoint_that_needs_unpickling(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "foreign", QUICK + ["max_steps=2"])
    assert train(run_dir, faults="stop@1", monkeypatch=monkeypatch) == 130
    last = run_dir / "checkpoints/last.pt"
    marker = tmp_path / "code-ran"
    state = torch.load(last, weights_only=True)
    torch.save({**state, "window": _RunsCode(str(marker))}, last)  # what a foreign file may hold
    assert train(run_dir, resume=True, monkeypatch=monkeypatch) == 1
    st = status(run_dir)
    assert st["state"] == "failed" and not marker.exists()
    assert st["message"].startswith(f"{last}: refused: it holds a pickled Python object (")
    assert "could run code" in st["message"] and "\n" not in st["message"]
    kinds = [e["event"] for e in read(run_dir)]
    assert kinds[kinds.index("end") + 1 :] == ["end"]  # the resume trained nothing


class _RunsCode:
    """Unpickling it calls os.mkdir: any code could run in its place."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


# A SIGTERM while the final records are written (torchrun sends one to every rank when a peer
# exits first) must not cut them short: the run's state stays the final one, not "running".
# In this process: the trainer's handler answers it; the one around it must never see it.
def test_sigterm_while_the_run_ends_keeps_the_final_status(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "ending", QUICK + ["max_steps=1"])
    write = events.write_json_atomic

    def write_then_terminate(path, data):
        if path.name == events.SUMMARY_FILE:
            os.kill(os.getpid(), signal.SIGTERM)
        write(path, data)

    monkeypatch.setattr(events, "write_json_atomic", write_then_terminate)
    outside = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: outside.append(signum))
    try:
        assert train(run_dir, monkeypatch=monkeypatch) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert outside == []  # delivered while the trainer's handler was in place
    monkeypatch.undo()
    assert status(run_dir)["state"] == "done" and status(run_dir)["ended"]
    assert events.read_json(run_dir / events.SUMMARY_FILE)["state"] == "done"
    assert "received SIGTERM" in (run_dir / events.LOG_FILE).read_text()


def test_resume_without_checkpoint_starts_over(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "fresh", QUICK + ["max_steps=1"])
    assert train(run_dir, resume=True, monkeypatch=monkeypatch) == 0
    first = read(run_dir)[0]
    assert first["event"] == "resumed" and first["from_checkpoint"] is None and first["step"] == 0


# ----------------------------------------------------------------------------------------------
# Failures


def test_oom_without_dynamic_batch_ends_as_oom_with_advice(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "oom", QUICK)
    assert train(run_dir, faults="oom@2", monkeypatch=monkeypatch) == 1
    log = read(run_dir)
    oom = next(e for e in log if e["event"] == "oom")
    assert oom["step"] == 2 and oom["batch_size"] == 8 and "--dynamic_batch_size" in oom["advice"]
    st = status(run_dir)
    assert st["state"] == "oom" and "memory-optimized" in st["message"]


def test_dynamic_batch_size_halves_and_keeps_the_effective_batch(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "dyn", QUICK + ["dynamic_batch_size=true", "max_steps=3"])
    assert train(run_dir, faults="oom@2", monkeypatch=monkeypatch) == 0
    log = read(run_dir)
    resized = next(e for e in log if e["event"] == "batch_resized")
    assert resized == {
        **resized,
        "step": 2,
        "old_batch_size": 8,
        "new_batch_size": 4,
        "accumulation": 2,
    }
    steps = [e for e in log if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3]  # step 2 retried, not skipped
    assert [(e["batch_size"], e["accumulation"]) for e in steps] == [(8, 1)] + [(4, 2)] * 2
    assert checkpoint.load(run_dir / "checkpoints/last.pt")["epoch_samples_done"] == 24
    assert status(run_dir)["state"] == "done"


def test_oom_at_batch_size_one_ends_as_oom(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "oom1", QUICK + ["dynamic_batch_size=true", "batch_size=1"])
    assert train(run_dir, faults="oom@1", monkeypatch=monkeypatch) == 1
    assert status(run_dir)["state"] == "oom"


def test_nan_loss_ends_as_diverged_with_the_step(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "nan", QUICK)
    assert train(run_dir, faults="nan@2", monkeypatch=monkeypatch) == 1
    st = status(run_dir)
    assert st["state"] == "diverged" and "step 2" in st["message"]
    assert read(run_dir)[-1]["state"] == "diverged"  # read() parsed every line as JSON


def test_early_stop_after_patience_evaluations(tmp_path, monkeypatch):
    run_dir = make_run(
        tmp_path,
        "early",
        QUICK + ["lr=1e-12", "xvlm_lr=0", "eval_every=1", "patience=2", "max_steps=0"],
    )
    assert train(run_dir, monkeypatch=monkeypatch) == 0
    log = read(run_dir)
    stop = next(e for e in log if e["event"] == "early_stop")
    assert stop["step"] == 3 and stop["patience"] == 2 and stop["best_step"] == 1
    assert status(run_dir)["state"] == "done" and "early stop" in status(run_dir)["message"]


def test_a_broken_config_ends_as_failed_with_the_cause(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "broken")
    with open(run_dir / events.CONFIG_FILE, "a", encoding="utf-8") as f:
        f.write("[training]\nlr = 'fast'\n")
    assert train(run_dir, monkeypatch=monkeypatch) == 1
    st = status(run_dir)
    assert st["state"] == "failed" and "config.toml" in st["message"] and st["ended"]
    assert read(run_dir)[-1]["state"] == "failed"


def test_entry_point_rejects_a_directory_without_config(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vqatune.engine.train", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stderr.startswith("error:")


def test_a_full_disk_at_the_end_still_records_the_final_state(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "full", QUICK + ["max_steps=1"])
    write = events.MetricsWriter.write

    def failing(self, event, **fields):
        if event == "end":
            raise OSError(28, "No space left on device")
        return write(self, event, **fields)

    monkeypatch.setattr(events.MetricsWriter, "write", failing)
    assert train(run_dir, monkeypatch=monkeypatch) == 0
    assert status(run_dir)["state"] == "done"
    assert events.read_json(run_dir / events.SUMMARY_FILE)["state"] == "done"
    assert "No space left" in (run_dir / events.LOG_FILE).read_text()
