"""Alerts: tell the user when a run ends, crosses a threshold, or goes silent.

Settings come from `[alerts]` in ~/.config/vqatune/config.toml ($XDG_CONFIG_HOME respected),
then a sweep's `alerts.toml` (in its sweep directory), then the run's own `RUN_DIR/alerts.toml`;
a later file's keys win:

    [alerts]
    on = ["done", "crashed", "diverged", "oom", "failed"]   # end states that notify
    when = ["accuracy >= 0.9", "loss > 5"]                  # eval accuracy / val_loss, step loss
    silent_min = 30                                         # no new metrics for 30 min (0: off)
    webhook = "https://hooks.slack.com/services/..."        # a JSON POST, Slack-compatible body
    desktop = true                                          # notify-send / osascript if present

Who fires them: a small detached watcher per run (engine/watch.py), started with the training
process when alerts are configured. It reads only the run directory, so it sees a kill -9
(the run turns `crashed`) and silence as well as a clean end, and it never touches the run:
every delivery failure goes to RUN_DIR/alerts.log. Each alert is also appended to
RUNS_DIR/.alerts.jsonl, which an open TUI tails to ring the terminal bell.

Light module: no torch, no textual.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import config as config_mod
from .config import ConfigError
from .events import FINAL_STATES, LOG_FILE, read_json, write_json_atomic

ALERTS_FILE = "alerts.toml"  # in a run or sweep directory
HISTORY_FILE = "alerts.jsonl"  # in a run directory: the alerts fired for it
ERRORS_FILE = "alerts.log"  # in a run directory: deliveries that failed
FEED_FILE = ".alerts.jsonl"  # in the runs store: every alert, for open TUIs
WATCH_FILE = "watch.json"  # in a run directory: the watcher's pid and start time
END_STATES = (*FINAL_STATES, "crashed")
DEFAULT_ON = ("done", "crashed", "diverged", "oom", "failed")
# Metrics a `when` condition can test: name -> (event kind, field).
CONDITION_METRICS = {
    "accuracy": ("eval", "accuracy"),
    "val_loss": ("eval", "loss"),
    "loss": ("step", "loss"),
}
LOG_TAIL_LINES = 15
WEBHOOK_TIMEOUT_S = 10.0
_CONDITION_RE = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")
KEYS = ("on", "when", "silent_min", "webhook", "desktop")


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    value: float

    def holds(self, x: float) -> bool:
        return {">": x > self.value, ">=": x >= self.value, "<": x < self.value}.get(
            self.op, x <= self.value
        )

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass
class Settings:
    on: tuple[str, ...] = DEFAULT_ON
    when: tuple[Condition, ...] = ()
    silent_min: float = 0.0
    webhook: str = ""
    desktop: bool = True
    sources: list[Path] = field(default_factory=list)  # the files they came from

    @property
    def configured(self) -> bool:
        """Some file asked for alerts: a watcher is worth starting."""
        return bool(self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {
            "on": list(self.on),
            "when": [str(c) for c in self.when],
            "silent_min": self.silent_min,
            "webhook": self.webhook,
            "desktop": self.desktop,
            "sources": [str(s) for s in self.sources],
        }


def user_config_file() -> Path:
    return config_mod.user_presets_dir().parent / "config.toml"


def parse_condition(text: str, where: str = "") -> Condition:
    m = _CONDITION_RE.match(str(text))
    if not m or m.group(1) not in CONDITION_METRICS:
        raise ConfigError(
            f"{where}alerts.when: {text!r} is not METRIC OP NUMBER "
            f"(METRIC one of {', '.join(CONDITION_METRICS)}; OP >, >=, <, <=)"
        )
    return Condition(m.group(1), m.group(2), float(m.group(3)))


def apply_table(settings: Settings, table: Any, path: Path | None) -> Settings:
    """Settings with the keys of an [alerts] table applied; a bad key or value is an error
    naming the file, line and key."""

    def where(key: str) -> str:
        return config_mod.file_line(path, "alerts", key)

    if not isinstance(table, dict):
        raise ConfigError(f"{where('alerts')}alerts: must be a table")
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key not in KEYS:
            raise ConfigError(f"{where(key)}alerts.{key}: unknown key (known: {', '.join(KEYS)})")
        if key == "on":
            if not isinstance(value, list) or any(v not in END_STATES for v in value):
                raise ConfigError(
                    f"{where(key)}alerts.on: a list of end states ({', '.join(END_STATES)})"
                )
            changes["on"] = tuple(value)
        elif key == "when":
            items = value if isinstance(value, list) else [value]
            changes["when"] = tuple(parse_condition(v, where(key)) for v in items)
        elif key == "silent_min":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{where(key)}alerts.silent_min: minutes >= 0 (0: off)")
            changes["silent_min"] = float(value)
        elif key == "webhook":
            if not isinstance(value, str) or (
                value and not value.startswith(("http://", "https://"))
            ):
                raise ConfigError(f"{where(key)}alerts.webhook: an http:// or https:// URL")
            changes["webhook"] = value
        elif key == "desktop":
            if not isinstance(value, bool):
                raise ConfigError(f"{where(key)}alerts.desktop: true or false")
            changes["desktop"] = value
    sources = settings.sources + ([path] if path else [])
    return replace(settings, **changes, sources=sources)


def _read_table(path: Path) -> dict | None:
    if not path.is_file():
        return None
    data = config_mod.parse_toml(path)
    if "alerts" not in data:
        return None
    return data["alerts"]


def load_settings(run_dir: Path | None = None, sweep_dir: Path | None = None) -> Settings:
    """The user's settings, then the sweep's, then the run's (a later key wins)."""
    settings = Settings()
    if sweep_dir is None and run_dir is not None:
        sweep_dir = sweep_dir_of(run_dir)
    for path in (
        user_config_file(),
        sweep_dir / ALERTS_FILE if sweep_dir else None,
        Path(run_dir) / ALERTS_FILE if run_dir else None,
    ):
        if path is None:
            continue
        table = _read_table(path)
        if table is not None:
            settings = apply_table(settings, table, path)
    return settings


def sweep_dir_of(run_dir: Path) -> Path | None:
    from .events import META_FILE
    from .sweepstore import SWEEPS_DIR

    sweep = (read_json(Path(run_dir) / META_FILE) or {}).get("sweep")
    if not sweep:
        return None
    return Path(run_dir).parent / SWEEPS_DIR / str(sweep)


def write_settings(directory: Path, table: dict[str, Any]) -> Path:
    """Write (merge into) a run's or sweep's alerts.toml after checking it."""
    import tomli_w

    path = Path(directory) / ALERTS_FILE
    current = _read_table(path) or {}
    merged = {**current, **table}
    apply_table(Settings(), merged, None)  # validate before writing
    config_mod.write_atomic(path, tomli_w.dumps({"alerts": merged}))
    return path


# ----------------------------------------------------------------------------------------------
# Alerts and their delivery


@dataclass
class Alert:
    kind: str  # end, threshold, silent, sweep_end, test
    run: str  # run id (or sweep id)
    text: str
    state: str | None = None
    log_tail: list[str] = field(default_factory=list)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "alert",
            "time": round(self.time, 3),
            "kind": self.kind,
            "run": self.run,
            "state": self.state,
            "text": self.text,
            "log_tail": self.log_tail,
        }

    def webhook_body(self) -> dict[str, Any]:
        """Slack's incoming-webhook shape (`text`), with the details beside it."""
        text = self.text
        if self.log_tail:
            text += "\n```\n" + "\n".join(self.log_tail) + "\n```"
        return {"text": text, "vqatune": self.to_dict()}


def log_tail(run_dir: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last lines of train.log (read from the end: logs can be long)."""
    path = Path(run_dir) / LOG_FILE
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def post_webhook(url: str, body: dict[str, Any], timeout: float = WEBHOOK_TIMEOUT_S) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "vqatune"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if response.status >= 300:
            raise OSError(f"HTTP {response.status}")


def desktop_command(title: str, text: str) -> list[str] | None:
    """notify-send on a Linux desktop session, osascript on macOS; None on a bare server."""
    if platform.system() == "Darwin" and shutil.which("osascript"):
        script = f"display notification {json.dumps(text)} with title {json.dumps(title)}"
        return ["osascript", "-e", script]
    has_session = any(
        os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")
    )
    if has_session and shutil.which("notify-send"):
        return ["notify-send", title, text]
    return None


def deliver(alert: Alert, settings: Settings, run_dir: Path | None, feed: Path | None) -> list[str]:
    """Send the alert on every configured channel; returns the failures (also logged in the
    run's alerts.log). Never raises: an alert must not be able to hurt a run."""
    failures: list[str] = []
    record = alert.to_dict()
    for path in (feed, Path(run_dir) / HISTORY_FILE if run_dir else None):
        if path is not None:
            try:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:
                failures.append(f"{path}: {e}")
    if settings.webhook:
        try:
            post_webhook(settings.webhook, alert.webhook_body())
        except Exception as e:  # any failure of the network or the server is only logged
            failures.append(f"webhook {_redact(settings.webhook)}: {e}")
    if settings.desktop:
        command = desktop_command("vqatune", alert.text)
        if command:
            try:
                subprocess.run(command, timeout=10, capture_output=True, check=True)
            except (OSError, subprocess.SubprocessError) as e:
                failures.append(f"desktop notification: {e}")
    if failures and run_dir is not None:
        try:
            with open(Path(run_dir) / ERRORS_FILE, "a", encoding="utf-8") as f:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                for line in failures:
                    f.write(f"{stamp} {alert.kind} alert not delivered: {line}\n")
        except OSError:
            pass
    return failures


def _redact(url: str) -> str:
    """A webhook URL's path is its secret: show the host only."""
    m = re.match(r"^(https?://[^/]+)", url)
    return (m.group(1) + "/…") if m else "…"


def end_alert(run_dir: Path, info) -> Alert:
    best = info.best_accuracy
    text = f"vqatune run {info.id}: {info.state.upper()}"
    if isinstance(best, (int, float)):
        text += f" · best val accuracy {best:.4f}"
    if info.message:
        text += f" · {info.message}"
    tail = log_tail(run_dir) if info.state in ("crashed", "failed", "oom", "diverged") else []
    return Alert("end", info.id, text, info.state, tail)


def sweep_ended(sweep_id: str, sweep_dir: Path, progress) -> None:
    """The sweep process's own alert when every run of the sweep has ended."""
    try:
        settings = load_settings(sweep_dir=sweep_dir)
    except ConfigError as e:
        print(f"warning: no sweep alert: {e}", file=sys.stderr)
        return
    if not settings.configured or "done" not in settings.on:
        return
    text = f"vqatune sweep {sweep_id}: finished · {progress.done}/{progress.total} runs"
    if progress.failed:
        text += f" · {progress.failed} failed"
    if progress.best_accuracy is not None:
        text += f" · best {progress.best_accuracy:.4f} ({progress.best_label})"
    deliver(
        Alert("sweep_end", sweep_id, text, "done"),
        settings,
        None,
        sweep_dir.parent.parent / FEED_FILE,
    )


# ----------------------------------------------------------------------------------------------
# The watcher process


def watcher_alive(run_dir: Path) -> bool:
    from .runstore import process_matches

    record = read_json(Path(run_dir) / WATCH_FILE) or {}
    return process_matches(record.get("pid"), record.get("pid_start_time"))


def start_watcher(run_dir: Path) -> int | None:
    """A detached watcher for the run, unless alerts are off or one already watches it.
    Never raises: a run starts whether or not its alerts can."""
    try:
        if not load_settings(run_dir).configured or watcher_alive(run_dir):
            return None
        with open(Path(run_dir) / ERRORS_FILE, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "vqatune.engine.watch", str(run_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        return proc.pid
    except (OSError, ConfigError) as e:
        try:
            with open(Path(run_dir) / ERRORS_FILE, "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} no alert watcher: {e}\n")
        except OSError:
            pass
        return None


def claim_watch(run_dir: Path) -> bool:
    """Record this process as the run's watcher; False when another one is alive."""
    import psutil

    if watcher_alive(run_dir):
        return False
    me = psutil.Process()
    write_json_atomic(
        Path(run_dir) / WATCH_FILE, {"pid": me.pid, "pid_start_time": me.create_time()}
    )
    return True
