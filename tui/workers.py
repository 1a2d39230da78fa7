"""Incremental readers of a run directory, polled from thread workers.

A RunWatcher remembers byte offsets into metrics.jsonl and train.log, so each poll reads only
what was appended since the last one (as toolong tails logs); the first poll reads the whole
history, which is how a restarted TUI re-attaches to a run with its full curves.
"""

from __future__ import annotations

import os
from pathlib import Path

from vqatune.engine import events, runstore
from vqatune.engine.gpu import GPUMonitor
from vqatune.engine.metrics import MetricsTail
from vqatune.tui.messages import RunUpdate

LOG_BACKLOG_BYTES = 64 * 1024  # how much of an existing log to show when attaching


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


class RunWatcher:
    """Everything new in one run directory: derived status, metric events, log lines, and for a
    live run a GPU snapshot (used/total per GPU and the run's share)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.metrics = MetricsTail(self.run_dir / events.METRICS_FILE)
        self.log = LogTail(self.run_dir / events.LOG_FILE)
        self.gpus = GPUMonitor()

    def poll(self) -> RunUpdate:
        info = runstore.run_info(self.run_dir)
        snapshot = self.gpus.sample(info.pid) if info.state == "running" else None
        return RunUpdate(status=info, events=self.metrics.read(), log_lines=self.log.read(),
                         gpu=snapshot)

    def close(self) -> None:
        self.gpus.close()
