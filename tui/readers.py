"""Incremental readers of a run directory (log tail, chart points, status) and of the run
queue's line, called from the screens' thread workers.

A RunWatcher remembers byte offsets into metrics.jsonl and train.log, so each poll reads only
what was appended since the last one (as toolong tails logs); the first poll reads the whole
history, which is how a restarted TUI re-attaches to a run with its full curves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vqatune.engine import events, queue, runstore
from vqatune.engine.gpu import GPUMonitor
from vqatune.engine.metrics import MetricsTail
from vqatune.engine.official import breakdown
from vqatune.tui.messages import RunUpdate

LOG_BACKLOG_BYTES = 64 * 1024  # how much of an existing log to show when attaching
SMOOTHING = 0.9  # exponential moving average of the loss


class LogTail:
    """New complete lines of a text file since the last read; starts near the end of the file."""

    def __init__(self, path: Path, backlog: int = LOG_BACKLOG_BYTES):
        self.path = path
        self.offset: int | None = None
        self.backlog = backlog
        self._partial = b""

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if self.offset is None or size < self.offset:  # first read, or truncated
                    self.offset = max(0, size - self.backlog)
                    self._partial = b""
                    skip_first = self.offset > 0
                else:
                    skip_first = False
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for its end
        if skip_first and lines:
            lines = lines[1:]  # started mid-line
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]


@dataclass(frozen=True)
class QueuePlace:
    """Where a run stands in the store's queue (engine/queue.py's listing)."""

    position: int | None  # 1-based place in line; None once the queue started it
    gpus: tuple[str, ...] | None  # the GPUs the queue started it on
    need: int  # GPUs it needs (nproc_per_node)

    def text(self) -> str:
        """`#2`, `#2 · 2 GPUs` while waiting; `GPU 0,1` once started (nothing on CPU)."""
        if self.position is not None:
            return f"#{self.position}" + (f" · {self.need} GPUs" if self.need > 1 else "")
        return f"GPU {','.join(self.gpus)}" if self.gpus else ""


def queue_places(runs_dir: Path | None) -> tuple[str | None, dict[str, QueuePlace]]:
    """The queue's one-line state (None while it is idle: nothing waits, started or paused)
    and each of its runs' places, by run id."""
    q, entries = queue.listing(runs_dir)
    places = {
        e.info.id: QueuePlace(e.position, tuple(e.gpus) if e.gpus else None, e.need)
        for e in entries
    }
    idle = not (q["order"] or q["starting"] or q["started"] or q["paused"])
    return (None if idle else queue.describe(q)), places


def queue_position(run_dir: Path) -> int | None:
    """The run's place in its store's line (1 = next to start), None when it is not waiting."""
    order = queue.read(Path(run_dir).parent)["order"]
    return order.index(run_dir.name) + 1 if run_dir.name in order else None


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class ChartPoints:
    """Metric events -> points per (chart, series), with the loss's moving average carried
    across calls. Runs in the worker, so a re-attach to a million-line history costs the UI
    thread one array append per series, not a million dict look-ups."""

    def __init__(self, smoothing: float = SMOOTHING):
        self.smoothing = smoothing
        self.smoothed: float | None = None

    def convert(self, records: list[dict]) -> tuple[dict, int]:
        """-> ({(chart, series): (xs, ys) float arrays}, number of step events)."""
        points: dict[tuple[str, str], tuple[list, list]] = {}
        steps = 0

        def add(chart: str, series: str, x, y) -> None:
            xs, ys = points.setdefault((chart, series), ([], []))
            xs.append(x)
            ys.append(y)

        for r in records:
            kind, step = r.get("event"), r.get("step")
            if not _number(step):
                continue
            if kind == "step":
                steps += 1
                loss = r.get("loss")
                if _number(loss):
                    add("loss", "loss", step, loss)
                    self.smoothed = (
                        loss
                        if self.smoothed is None
                        else (self.smoothing * self.smoothed + (1 - self.smoothing) * loss)
                    )
                    add("loss", "smoothed", step, self.smoothed)
                if _number(r.get("accuracy")):
                    add("accuracy", "train", step, r["accuracy"])
                for key, value in (r.get("memory") or {}).items():
                    if _number(value):
                        add("memory", key, step, value)
            elif kind == "eval":
                if _number(r.get("accuracy")):
                    add("accuracy", "val", step, r["accuracy"])
                for branch, value in (r.get("accuracy_branch") or {}).items():
                    if _number(value) and branch != "fused":  # fused is the overall "val"
                        add("accuracy", f"val {branch}", step, value)
                for _, label, value in breakdown(r):  # official per-type figures
                    add("accuracy", f"val {label}", step, value)
        arrays = {
            key: (np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
            for key, (xs, ys) in points.items()
        }  # here, not on the UI thread
        return arrays, steps


class RunWatcher:
    """Everything new in one run directory: derived status, chart points from new metric
    events, log lines, and for a live run a GPU snapshot (used/total per GPU, the run's share)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.metrics = MetricsTail(self.run_dir / events.METRICS_FILE)
        self.log = LogTail(self.run_dir / events.LOG_FILE)
        self.gpus = GPUMonitor()
        self.has_gpu: bool | None = None  # unknown until the first live sample
        self.charts = ChartPoints()

    def poll(self) -> RunUpdate:
        info = runstore.run_info(self.run_dir)  # before the metrics: no event is missed at the end
        records = self.metrics.read()
        points, steps = self.charts.convert(records)
        snapshot = None
        if info.state == "running" and self.has_gpu is not False:
            snapshot = self.gpus.sample(info.pid)
            self.has_gpu = bool(snapshot.gpus)  # without a GPU there is nothing to chart: stop
            snapshot = snapshot if snapshot.gpus else None
        waiting = info.state == "queued" and info.pid is None and info.meta.get("queued")
        return RunUpdate(
            status=info,
            queue_position=queue_position(self.run_dir) if waiting else None,
            new_events=len(records),
            points=points,
            steps=steps,
            log_lines=self.log.read(),
            gpu=snapshot,
            start=next((r for r in records if r.get("event") == "start"), None),
        )

    def close(self) -> None:
        self.gpus.close()
