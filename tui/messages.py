"""Messages that workers post to screens: the only way results of blocking work reach widgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.message import Message


class PresetsListed(Message):
    """The preset names with titles, and the one suggested for the detected GPU (or None)."""

    def __init__(self, presets: list[tuple[str, str]], suggested: str | None, gpu: str):
        super().__init__()
        self.presets = presets
        self.suggested = suggested
        self.gpu = gpu


class ConfigLoaded(Message):
    """A preset or config file was resolved: it becomes the form's base."""

    def __init__(self, resolved: Any, select_preset: str | None):
        super().__init__()
        self.resolved = resolved
        self.select_preset = select_preset


class UserError(Message):
    """A one-line user mistake (bad file, bad name) to show; nothing was changed."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text


class PresetSaved(Message):
    def __init__(self, name: str, path: Path):
        super().__init__()
        self.name = name
        self.path = path


class RunLaunched(Message):
    """A run was created and started, or queued at `position` (for `reason`)."""

    def __init__(self, run_dir: Path, position: int | None = None, reason: str | None = None):
        super().__init__()
        self.run_dir = run_dir
        self.position = position
        self.reason = reason


class FitJudged(Message):
    """The Configure top bar's fit verdict (a services.FitLine) for `config`."""

    def __init__(self, line: Any, config: Any):
        super().__init__()
        self.line = line
        self.config = config


class RowsListed(Message):
    """A polled table's rows, as its screen's load_rows read them."""

    def __init__(self, rows: list):
        super().__init__()
        self.rows = rows


class QueueListed(Message):
    """The run queue's one-line state (engine.queue.describe; None while the queue is idle)."""

    def __init__(self, line: str | None):
        super().__init__()
        self.line = line


@dataclass
class RunUpdate:
    """What a monitor worker read since its last poll."""

    status: Any  # RunInfo
    new_events: int = 0  # metric lines read
    points: dict = field(default_factory=dict)  # (chart, series) -> (xs, ys)
    steps: int = 0  # step events among them
    log_lines: list[str] = field(default_factory=list)
    gpu: Any = None  # engine.gpu.Snapshot while the run is live
    start: dict | None = None  # the `start` event, when read in this poll
    queue_position: int | None = None  # its place in the run queue while it waits there


class RunUpdated(Message):
    def __init__(self, update: RunUpdate):
        super().__init__()
        self.update = update


class CompareLoaded(Message):
    def __init__(self, comparison: Any):
        super().__init__()
        self.comparison = comparison


class AnalysisLoaded(Message):
    """An engine.analysis.Importance for the Analysis screen (or the one-line error)."""

    def __init__(self, result: Any, error: str | None = None):
        super().__init__()
        self.result = result
        self.error = error


class AlertsArrived(Message):
    def __init__(self, alerts: list[dict]):
        super().__init__()
        self.alerts = alerts
