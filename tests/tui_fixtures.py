"""Run directories written by hand (the run directory contract), with fixed ids and times so that
snapshots are stable, and a tiny fake trainer for live-monitor tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

from vqatune.engine import config as config_mod
from vqatune.engine import events as ev

T0 = 1_790_000_000.0  # a fixed creation time


def screen_store(tmp_path: Path, monkeypatch, fill) -> Path:
    """A runs store filled by fill(runs_dir) in a stable environment for screens: no user
    config, UTC times, a fixed GPU suggestion and no GPU to fit on."""
    from vqatune.tui import services

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(services, "gpu_suggestion", lambda: ("24gb", "NVIDIA A10 (24 GB)"))
    monkeypatch.setattr(services, "fit_gpus", lambda: [])  # the same picture on a GPU machine
    runs = tmp_path / "runs"
    fill(runs)
    return runs


async def settle(pilot) -> None:
    """Until the screen is still: workers done, charts drawn, no blinking cursor."""
    from textual.widgets import Input
    from vqatune.tui.widgets.charts import MetricChart

    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False  # a blinking cursor makes two pictures differ
    await pilot.pause()
    while getattr(pilot.app.screen, "fit_timer", None) is not None:  # Configure's fit debounce
        await pilot.pause(0.05)
    await pilot.app.workers.wait_for_complete()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    for chart in pilot.app.screen.query(MetricChart):
        chart.redraw_if_dirty()  # what the throttle would draw within a second
    await pilot.pause()


def make_run(
    runs_dir: Path,
    run_id: str,
    *,
    state: str = "done",
    source: str = "smoke",
    values: dict | None = None,
    steps: int = 40,
    eval_every: int = 10,
    start: float = T0,
    acc_offset: float = 0.0,
    log_lines: int = 30,
) -> Path:
    """A finished run directory with step and eval events shaped like the trainer's."""
    run_dir = Path(runs_dir) / run_id
    run_dir.mkdir(parents=True)
    cfg = config_mod.load(source).replace(**(values or {}))
    (run_dir / ev.CONFIG_FILE).write_text(config_mod.dumps(cfg, full=True))
    name = run_id.split("-", 2)[2].rsplit("-", 1)[0]
    (run_dir / ev.META_FILE).write_text(
        json.dumps(
            {
                "id": run_id,
                "name": name,
                "source": source,
                "created": start,
                "argv": [],
                "overrides": values or {},
            }
        )
    )
    lines, best, last = [], None, None
    lines.append({"event": "start", "time": start, "params": 1234, "device": "cpu"})
    for step in range(1, steps + 1):
        loss = 2.0 * math.exp(-step / 15) + 0.05 * math.sin(step)
        lines.append(
            {
                "event": "step",
                "time": start + step,
                "step": step,
                "epoch": 1 + step // 20,
                "loss": loss,
                "losses": {"fused": loss, "ban": loss, "graph": loss, "xvlm": loss},
                "lr": 2.8e-4,
                "samples_per_s": 100.0,
                "memory": {"device": "cpu", "rss_mb": 500.0 + step},
            }
        )
        if step % eval_every == 0:
            last = min(1.0, 0.3 + step / (steps * 2) + acc_offset)
            best = last if best is None else max(best, last)
            lines.append(
                {
                    "event": "eval",
                    "time": start + step,
                    "step": step,
                    "epoch": 1 + step // 20,
                    "accuracy": last,
                    "accuracy_branch": {
                        "fused": last,
                        "ban": last - 0.05,
                        "graph": last - 0.1,
                        "xvlm": last - 0.02,
                    },
                }
            )
    end = start + steps + 1
    if state in ev.FINAL_STATES:
        lines.append(
            {
                "event": "end",
                "time": end,
                "state": state,
                "step": steps,
                "best_accuracy": best,
                "final_accuracy": last,
                "duration_s": steps + 1,
            }
        )
    (run_dir / ev.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines))
    (run_dir / ev.LOG_FILE).write_text("".join(f"log line {i}\n" for i in range(log_lines)))
    status = {
        "state": state,
        "pid": 999_999,
        "pid_start_time": start,
        "heartbeat": end,
        "step": steps,
        "total_steps": steps,
        "epoch": 1 + steps // 20,
        "epochs": cfg.epochs,
        "eta_s": 0,
        "samples_per_s": 100.0,
        "best_accuracy": best,
        "last_accuracy": last,
        "started": start,
        "ended": end if state != "running" else None,
        "message": None,
        "world_size": 1,
    }
    if state == "running":  # a process that died: the run store derives `crashed`
        status["heartbeat"] = start
    (run_dir / ev.STATUS_FILE).write_text(json.dumps(status))
    if state in ev.FINAL_STATES:
        (run_dir / ev.SUMMARY_FILE).write_text(
            json.dumps({"state": state, "best_accuracy": best, "final_accuracy": last})
        )
    return run_dir


def make_store(runs_dir: Path) -> list[Path]:
    """Three finished runs: two seeds of smoke and one smoke with another learning rate, plus a
    crashed one."""
    return [
        make_run(runs_dir, "20260101-100000-base-aaaa", values={"seed": 1}),
        make_run(
            runs_dir,
            "20260101-110000-base-bbbb",
            values={"seed": 2},
            start=T0 + 3600,
            acc_offset=0.02,
        ),
        make_run(
            runs_dir,
            "20260101-120000-hilr-cccc",
            values={"lr": 5e-4, "seed": 1},
            start=T0 + 7200,
            acc_offset=0.05,
        ),
        make_run(
            runs_dir, "20260101-130000-died-dddd", state="running", start=T0 + 10800, steps=12
        ),
    ]


FAKE_TRAINER = r"""
import json, os, sys, time
from pathlib import Path
import psutil
run = Path(sys.argv[1])
steps = int(os.environ.get("FAKE_STEPS", "20"))
start = time.time()
me = psutil.Process()
def status(state, step, **kw):
    tmp = run / ".status.tmp"
    tmp.write_text(json.dumps({"state": state, "pid": me.pid, "pid_start_time": me.create_time(),
        "heartbeat": time.time(), "step": step, "total_steps": steps, "epoch": 1, "epochs": 1,
        "eta_s": 0.1 * (steps - step), "samples_per_s": 80.0, "best_accuracy": None,
        "last_accuracy": None, "started": start, "ended": kw.get("ended"), "message": None,
        "world_size": 1}))
    os.replace(tmp, run / "status.json")
m = open(run / "metrics.jsonl", "a", buffering=1)
log = open(run / "train.log", "a", buffering=1)
for step in range(1, steps + 1):
    m.write(json.dumps({"event": "step", "time": time.time(), "step": step, "epoch": 1,
                        "loss": 1.0 / step, "memory": {"device": "cpu", "rss_mb": 100.0}}) + "\n")
    log.write(f"step {step}\n")
    status("running", step)
    time.sleep(float(os.environ.get("FAKE_STEP_S", "0.1")))
m.write(json.dumps({"event": "eval", "time": time.time(), "step": steps, "accuracy": 0.5}) + "\n")
m.write(json.dumps({"event": "end", "time": time.time(), "state": "done", "step": steps}) + "\n")
status("done", steps, ended=time.time())
"""
