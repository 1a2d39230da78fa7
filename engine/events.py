"""The run directory: the only channel between a training process and any UI.

    RUN_DIR/
      config.toml      the resolved config (every parameter), written before training starts
      meta.json        id, name, preset/source, created time, command line, overrides
      launch.json      pid and process start time of the launched process (written by the launcher)
      status.json      rewritten atomically: state, pid, pid_start_time, heartbeat, step, epoch, ...
      metrics.jsonl    append-only, one JSON event a line, flushed after each line
      train.log        human-readable log (stdout/stderr of the process)
      checkpoints/     last.pt, best.pt
      summary.json     written once at the end

Every event in metrics.jsonl has `event` (one of EVENT_TYPES) and `time` (unix seconds).

Light module: no torch, no textual.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.toml"
META_FILE = "meta.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"

# Events (the `event` field of a metrics line):
#   start          config summary: params, effective_batch_size, device, dataset sizes
#   step           step, epoch, loss, losses{fused,ban,graph,xvlm}, lr, xvlm_lr, grad_norm,
#                  samples_per_s, memory{...}
#   eval           step, epoch, accuracy, accuracy_branch{...}, accuracy_type{...}, loss
#   oom            step, batch_size, message, advice
#   batch_resized  step, old_batch_size, new_batch_size, accumulation
#   checkpoint     step, epoch, path, best
#   early_stop     step, epoch, best_accuracy, patience
#   resumed        step, epoch, from_checkpoint
#   end            state, step, epoch, best_accuracy, final_accuracy, duration_s, message
EVENT_TYPES = (
    "start",
    "step",
    "eval",
    "oom",
    "batch_resized",
    "checkpoint",
    "early_stop",
    "resumed",
    "end",
)
# The fields each event carries, in the order exports show them (nested dicts such as
# `losses` become `losses.fused`, ...; fields not listed here follow, sorted).
EVENT_FIELDS = {
    "start": (
        "total_steps", "steps_per_epoch", "epochs", "device", "precision", "batch_size",
        "accumulation", "effective_batch_size", "world_size", "dataset", "train_size",
        "eval_size", "params", "trainable_params",
    ),
    "step": (
        "step", "epoch", "loss", "losses", "lr", "xvlm_lr", "grad_norm", "batch_size",
        "accumulation", "samples_per_s", "memory",
    ),
    "eval": ("step", "epoch", "accuracy", "accuracy_branch", "accuracy_type", "loss"),
    "oom": ("step", "batch_size", "message", "advice"),
    "batch_resized": ("step", "old_batch_size", "new_batch_size", "accumulation"),
    "checkpoint": ("step", "epoch", "path", "best"),
    "early_stop": ("step", "epoch", "best_accuracy", "best_step", "patience"),
    "resumed": ("step", "epoch", "from_checkpoint"),
    "end": ("state", "step", "epoch", "best_accuracy", "final_accuracy", "duration_s", "message"),
}  # fmt: skip

# Run states. `running` and `crashed` are derived by the run store from the pid, its start time
# and the heartbeat; the others are written by the training process when it ends.
STATUS_EVERY_S = 2.0  # the heartbeat: status.json is rewritten this often while training

STATES = ("queued", "running", "done", "stopped", "diverged", "oom", "failed", "crashed")
# What the run store reports for a Slurm run whose job ended without the trainer's end record.
SLURM_STATES = ("cancelled", "timeout", "node_fail", "preempted")
FINAL_STATES = ("done", "stopped", "diverged", "oom", "failed")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


class MetricsWriter:
    """Append-only metrics.jsonl; each line is flushed so tailing readers see it at once."""

    def __init__(self, path: Path):
        self._file = open(path, "a", encoding="utf-8", buffering=1)
        # A process killed mid-line leaves a torn last line; start ours on a fresh one.
        if self._file.tell() > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    self._file.write("\n")

    def write(self, event: str, **fields: Any) -> dict:
        assert event in EVENT_TYPES, event
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self._file.write(json.dumps(record, default=_jsonable, allow_nan=False) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        self._file.close()


class NoMetrics:
    """Ranks other than 0 write no metrics.jsonl; the trainer's calls stay the same."""

    def write(self, event: str, **fields: Any) -> dict:
        return {"event": event, **fields}

    def close(self) -> None:
        pass


class Status:
    """status.json: the fields of the contract, rewritten atomically every STATUS_EVERY_S by a
    thread (the heartbeat) until `close` writes the final fields."""

    def __init__(self, path: Path, enabled: bool = True, **fields: Any):
        self.path, self.enabled = path, enabled  # disabled on ranks other than 0
        self.fields = {
            "state": "running",
            "pid": os.getpid(),
            "pid_start_time": _process_start_time(),
            "heartbeat": time.time(),
            "step": 0,
            "total_steps": 0,
            "epoch": 0,
            "epochs": 0,
            "eta_s": None,
            "samples_per_s": None,
            "best_accuracy": None,
            "last_accuracy": None,
            "started": time.time(),
            "ended": None,
            "message": None,
            "world_size": 1,
            **fields,
        }
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.write()
        self.thread = threading.Thread(target=self._beat, name="status", daemon=True)
        if enabled:
            self.thread.start()

    def update(self, **fields: Any) -> None:
        with self.lock:
            self.fields.update(fields)

    def write(self) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.fields["heartbeat"] = time.time()
            write_json_atomic(self.path, dict(self.fields))

    def _beat(self) -> None:
        while not self.stopped.wait(STATUS_EVERY_S):
            try:
                self.write()
            except OSError as exc:  # a full disk: keep training, try again at the next beat
                logging.getLogger("vqatune.train").error("cannot write %s: %s", self.path.name, exc)

    def close(self, **final: Any) -> None:
        """The final fields, written after the heartbeat has stopped (it cannot overwrite them)."""
        self.stopped.set()
        if self.enabled:
            self.thread.join()
        self.update(**final)
        self.write()


def _process_start_time() -> float:
    import psutil

    return psutil.Process().create_time()


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
