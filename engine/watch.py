"""The alert watcher of one run: `python -m vqatune.engine.watch RUN_DIR`.

Started detached next to the training process (engine/alerts.py says when). Every POLL_S it
reads the run's derived state and the metrics appended since its last look, and fires:
a threshold alert the first time a `when` condition holds, a silence alert when no metric line
has been written for `silent_min` minutes (again after the run speaks and goes quiet again),
and an end alert when the run reaches an end state, `crashed` included (kill -9, reboot, a hung
process). Then it exits. It only reads the run directory, and writes its own files
(alerts.jsonl, alerts.log, watch.json).

Light module: no torch, no textual.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from . import alerts, runstore
from .events import METRICS_FILE
from .metrics import MetricsTail

POLL_S = float(os.environ.get("VQATUNE_WATCH_POLL_S", "5"))


class Watcher:
    def __init__(self, run_dir: Path, settings: alerts.Settings):
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.feed = self.run_dir.parent / alerts.FEED_FILE
        # From the end: what a resumed run did before was reported by the watcher back then.
        path = self.run_dir / METRICS_FILE
        self.tail = MetricsTail(path, offset=path.stat().st_size if path.exists() else 0)
        self.fired: set[str] = set()  # conditions already reported
        self.silent_reported = False
        self.last_activity = time.time()

    def fire(self, alert: alerts.Alert) -> None:
        alerts.deliver(alert, self.settings, self.run_dir, self.feed)

    def poll(self) -> bool:
        """One look at the run; False when the run has ended (the watcher's work is done)."""
        info = runstore.run_info(self.run_dir)
        events = self.tail.read(kinds=("step", "eval"))
        if events:
            self.last_activity = time.time()
            self.silent_reported = False
        self.check_conditions(info.id, events)
        if info.state in alerts.END_STATES:
            if info.state in self.settings.on:
                self.fire(alerts.end_alert(self.run_dir, info))
            return False
        self.check_silence(info)
        return True

    def check_conditions(self, run_id: str, events: list[dict]) -> None:
        for cond in self.settings.when:
            key = str(cond)
            if key in self.fired:
                continue
            kind, name = alerts.CONDITION_METRICS[cond.metric]
            for e in events:
                value = e.get(name)
                if e["event"] != kind or not isinstance(value, (int, float)):
                    continue
                if cond.holds(float(value)):
                    self.fired.add(key)
                    text = f"vqatune run {run_id}: {cond} (now {value:.4g} at step {e.get('step')})"
                    self.fire(alerts.Alert("threshold", run_id, text))
                    break

    def check_silence(self, info) -> None:
        minutes = self.settings.silent_min
        if not minutes or self.silent_reported or info.state not in ("running", "queued"):
            return
        quiet = time.time() - self.last_activity
        if quiet >= minutes * 60:
            self.silent_reported = True
            text = (
                f"vqatune run {info.id}: silent for {quiet / 60:.0f} min "
                f"(no metrics since step {info.step})"
            )
            self.fire(
                alerts.Alert("silent", info.id, text, info.state, alerts.log_tail(self.run_dir))
            )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    if not alerts.claim_watch(run_dir):
        return 0  # another watcher has this run
    settings = alerts.load_settings(run_dir)
    watcher = Watcher(run_dir, settings)
    while run_dir.is_dir() and watcher.poll():
        time.sleep(POLL_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
