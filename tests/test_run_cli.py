"""`vqatune run` and `vqatune train`: real training processes on `smoke`, exit codes, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner
from vqatune.engine import cmdline, config, events, runstore
from vqatune.tui.cli import app
from vqatune.tui.commands import run_cmd

# Every command line of the tuning guide (shared/tuning-guide.md), verbatim.
GUIDE_LINES = [
    "python main.py --lr 2.8e-4 --xvlm_lr 5e-5 --batch_size 32 --epochs 20",
    "python main.py --AOA_layers 6 --num_hid 1024 --dropout 0.45",
    "python main.py --general_hidden_dim 300 --mgat_layers 4 --alpha 1.0 --beta 10.0",
    "python main.py --batch_size 16 --gradient_accumulation_steps 2 --mixed_precision \\\n"
    "  --memory_efficient_attention --max_memory_usage 0.7",
    "python main.py --batch_size 64 --update_freq 2 --dynamic_batch_size --max_memory_usage 0.9",
    "python main.py --dataset GQA --lr 2.8e-4 --batch_size 32 --AOA_layers 6 "
    "--general_hidden_dim 300 --mgat_layers 4",
    "python main.py --dataset VQA --lr 3e-4 --batch_size 24 --AOA_layers 8 "
    "--general_hidden_dim 512 --mgat_layers 6",
    "python main.py --batch_size 16 --gradient_accumulation_steps 4 --mixed_precision "
    "--max_memory_usage 0.7",
    "python main.py --batch_size 48 --gradient_accumulation_steps 1 --max_memory_usage 0.9",
    "python main.py --lr 2.8e-4 --xvlm_lr 5e-5",
    "python main.py --lr 3.5e-4 --xvlm_lr 7e-5",
    "python main.py --lr 2e-4 --xvlm_lr 3e-5",
    "python main.py --AOA_layers 4 --num_hid 512",
    "python main.py --AOA_layers 6 --num_hid 1024",
    "python main.py --AOA_layers 8 --num_hid 2048",
    "python main.py --mgat_layers 4 --alpha 1.0 --beta 10.0",
    "python main.py --mgat_layers 6 --alpha 1.5 --beta 15.0",
    "python main.py --mgat_layers 3 --alpha 0.8 --beta 8.0",
    "python main.py --checkpoint pretrained/model --config xvlm/configs/VQA_480.yaml \\\n"
    "  --output saved_models/high_performance --lr 3e-4 --xvlm_lr 6e-5 --batch_size 48 \\\n"
    "  --AOA_layers 8 --num_hid 1536 --general_hidden_dim 512 --mgat_layers 6 --alpha 1.2 "
    "--beta 12.0 \\\n  --mixed_precision --max_memory_usage 0.9",
    "python main.py --checkpoint pretrained/model --config xvlm/configs/VQA_480.yaml \\\n"
    "  --output saved_models/memory_optimized --lr 2.5e-4 --xvlm_lr 4e-5 --batch_size 16 \\\n"
    "  --gradient_accumulation_steps 4 --AOA_layers 4 --num_hid 768 --general_hidden_dim 256 \\\n"
    "  --mgat_layers 3 --alpha 0.8 --beta 8.0 --mixed_precision --memory_efficient_attention \\\n"
    "  --max_memory_usage 0.7",
]
QUICK = ["--set", "max_steps=2", "--set", "eval_limit=8"]


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models on a shared 2-core machine
    monkeypatch.setenv("VQATUNE_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)


def invoke(*args):
    return CliRunner().invoke(app, list(args))


def wait_final(run_dir: Path, timeout=90.0) -> runstore.RunInfo:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = runstore.run_info(run_dir)
        if info.state in events.FINAL_STATES or info.state == "crashed":
            return info
        time.sleep(0.1)
    raise AssertionError(f"{run_dir} did not finish")


# ----------------------------------------------------------------------------------------------
# Parsing and validation (no training)


@pytest.mark.parametrize("line", GUIDE_LINES)
def test_every_guide_command_line_is_accepted(line):
    words = cmdline.split(line)
    cfg, given = run_cmd.config_from_flags(words[2:])
    assert given == cmdline.parse(line)
    assert all(getattr(cfg, k) == v for k, v in given.items())
    assert cfg.dataset == given.get("dataset", "easy-vqa")


def test_train_dry_run_prints_config_and_model_summary_and_creates_nothing(tmp_path):
    smoke_sizes = cmdline.to_flags(config.load("smoke"))  # a small model to summarise
    result = invoke(
        "train",
        "--dry-run",
        "python",
        "main.py",
        *smoke_sizes,
        "--batch_size",
        "16",
        "--update_freq",
        "4",
        "--gradient_accumulation_steps",
        "4",
        "--mixed_precision",
        "--max_memory_usage",
        "0.7",
        "--max_steps",
        "5",
    )
    assert result.exit_code == 0, result.output
    assert "effective batch size: 256" in result.stdout  # 16 x update_freq 4 x 4
    assert "mixed_precision = true" in result.stdout and "max_steps = 5" in result.stdout
    assert "# model summary" in result.stdout and "# total:" in result.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "smoke", "--set", "lr=-1"], "lr"),
        (["run", "no-such-preset"], "no-such-preset"),
        (["train", "--lr", "fast"], "--lr"),
        (["train", "--learning_rate", "3e-4"], "--learning_rate"),
        (["train", "--set", "epochs=0"], "epochs"),
    ],
)
def test_bad_config_exits_2_with_one_line_and_creates_nothing(tmp_path, args, needle):
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert not (tmp_path / "runs").exists()


def test_bad_config_file_names_file_and_line(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('extends = "smoke"\n[training]\nbatch_size = 0\n')
    result = invoke("run", str(path))
    assert result.exit_code == 2 and f"{path}:3:" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_follow_exit_code_follows_the_final_state(tmp_path):
    for state, code in [("done", 0), ("diverged", 1), ("oom", 1), ("failed", 1), ("stopped", 130)]:
        run_dir = tmp_path / state
        run_dir.mkdir()
        events.write_json_atomic(run_dir / events.SUMMARY_FILE, {"state": state, "step": 1})
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        assert run_cmd.follow(run_dir, proc) == code
    run_dir = tmp_path / "nosummary"  # the process died before writing anything
    run_dir.mkdir()
    assert run_cmd.follow(run_dir, subprocess.Popen([sys.executable, "-c", "exit(3)"])) == 1


# ----------------------------------------------------------------------------------------------
# Real runs. Each costs a training process (~10 s to start), so the two finished runs below are
# made once per module and read by every test that only reads a finished run.


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A runs directory (and cwd) of the module's finished runs."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("VQATUNE_RUNS", str(root / "runs"))
        mp.chdir(root)
        yield root


@pytest.fixture(scope="module")
def first(store):
    """`vqatune run smoke` in the foreground, to the end (tfidf on, smoke's default)."""
    result = invoke("run", "smoke", "--name", "first", *QUICK)
    return result, runstore.find_run("first")


@pytest.fixture(scope="module")
def detached(store):
    """`vqatune train --detach` with the guide's flags, --output and tfidf off."""
    smoke_flags = cmdline.to_flags(config.load("smoke"))  # sizes small enough for a test
    out = store / "saved_models" / "tiny"
    result = invoke(
        "train",
        "--detach",
        *smoke_flags,
        "--output",
        str(out),
        "--max_steps",
        "1",
        "--eval_limit",
        "8",
        "--set",
        "tfidf=false",
    )
    info = wait_final(out) if result.exit_code == 0 else None
    return result, out, info


def test_run_trains_to_the_end_with_progress_and_summary(first, store):
    result, run_dir = first
    assert result.exit_code == 0, result.output
    assert run_dir.parent == store / "runs"
    assert f"run {run_dir.name}: done" in result.stdout and "best accuracy" in result.stdout
    assert "2/2" in result.stdout  # the progress bar reached the last step
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "parameters of preset smoke outside" in warnings[0]
    assert runstore.run_info(run_dir).state == "done"
    meta = events.read_json(run_dir / events.META_FILE)
    assert meta["source"] == "smoke" and meta["overrides"] == {"max_steps": 2, "eval_limit": 8}


def test_train_detach_with_guide_flags_and_output(detached):
    result, out, info = detached
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "tiny"
    assert info.state == "done"
    saved = config.load(str(out / events.CONFIG_FILE))
    assert saved.max_steps == 1 and saved.tfidf is False


def test_ctrl_c_stops_the_run_cleanly(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vqatune.tui.cli",
            "run",
            "smoke",
            "--name",
            "interrupted",
            "--set",
            "max_steps=0",
            "--set",
            "epochs=50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        runs = list((tmp_path / "runs").glob("*-interrupted-*"))
        if (
            runs
            and (runs[0] / events.METRICS_FILE).exists()
            and '"event": "step"' in (runs[0] / events.METRICS_FILE).read_text()
        ):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    info = runstore.run_info(runs[0])
    assert info.state == "stopped" and "stopped" in out
    assert (runs[0] / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("tfidf", ["true", "false"])
def test_model_summary_counts_the_model_a_run_trains(tfidf, first, detached):
    # the runs: `first` (tfidf on) and `detached` (tfidf off), both smoke's sizes
    sets = ["--set", f"tfidf={tfidf}"]
    result = invoke("model", "summary", "smoke", *sets, "--json")
    assert result.exit_code == 0, result.output
    counted = json.loads(result.stdout)
    assert not counted["nominal_vocabulary"]
    result, run_dir = first if tfidf == "true" else detached[:2]
    assert result.exit_code == 0, result.output
    assert config.load(str(run_dir / events.CONFIG_FILE)).tfidf == (tfidf == "true")
    metrics = run_dir / events.METRICS_FILE
    start = next(
        e for e in map(json.loads, metrics.read_text().splitlines()) if e["event"] == "start"
    )
    assert counted["total"] == start["params"]  # sum(p.numel()) of the model the trainer built
