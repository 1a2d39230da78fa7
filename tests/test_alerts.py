"""Alerts: settings files, webhook delivery against a local HTTP server, and the watcher
catching a clean end, a kill -9, a threshold and silence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import psutil
import pytest
from polling import wait_for
from tui_fixtures import make_run
from vqatune.engine import alerts, runstore, watch
from vqatune.engine import events as ev
from vqatune.engine.config import ConfigError


@pytest.fixture
def webhook():
    """A webhook receiver on 127.0.0.1: yields (url, received bodies)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    (home / "vqatune").mkdir(parents=True)
    return home / "vqatune" / "config.toml"


def test_settings_merge_user_then_run(tmp_path, config_home):
    config_home.write_text('[alerts]\nsilent_min = 30\nwhen = ["accuracy >= 0.9"]\n')
    run = make_run(tmp_path / "runs", "20260101-100000-a-aaaa")
    alerts.write_settings(run, {"silent_min": 5, "on": ["crashed"]})
    s = alerts.load_settings(run)
    assert s.silent_min == 5 and s.on == ("crashed",)
    assert [str(c) for c in s.when] == ["accuracy >= 0.9"]
    assert s.sources == [config_home, run / alerts.ALERTS_FILE]


def test_bad_settings_name_file_line_and_key(config_home):
    config_home.write_text('[alerts]\nsilent_min = 1\nwhen = ["accuracy => 0.9"]\n')
    with pytest.raises(ConfigError, match=r"config.toml:3: alerts.when: 'accuracy => 0.9'"):
        alerts.load_settings()
    config_home.write_text("[alerts]\nwebhok = 'http://x'\n")
    with pytest.raises(ConfigError, match=r"config.toml:2: alerts.webhok: unknown key"):
        alerts.load_settings()


def test_webhook_gets_a_slack_compatible_body(tmp_path, webhook):
    url, received = webhook
    run = make_run(tmp_path / "runs", "20260101-100000-a-aaaa", state="failed")
    info = runstore.run_info(run)
    failures = alerts.deliver(
        alerts.end_alert(run, info), alerts.Settings(webhook=url, desktop=False), run, None
    )
    assert failures == []
    (body,) = received
    assert body["text"].startswith("vqatune run 20260101-100000-a-aaaa: FAILED")
    assert "log line 29" in body["text"]  # the last lines of train.log
    assert body["vqatune"]["state"] == "failed"


def test_undeliverable_webhook_is_logged_and_leaves_the_run_alone(tmp_path):
    run = make_run(tmp_path / "runs", "20260101-100000-a-aaaa")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    closed = "http://127.0.0.1:9/hook"  # the discard port: nothing listens there
    failures = alerts.deliver(
        alerts.Alert("test", "x", "hello"),
        alerts.Settings(webhook=closed, desktop=False),
        run,
        None,
    )
    assert len(failures) == 1 and "webhook http://127.0.0.1:9/…" in failures[0]
    assert "not delivered" in (run / alerts.ERRORS_FILE).read_text()
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert {k: after[k] for k in before} == before


def _live_run(tmp_path: Path) -> tuple[Path, subprocess.Popen]:
    """A run whose status says running, owned by a real (sleeping) process."""
    run = make_run(tmp_path / "runs", "20260101-100000-live-aaaa", state="running", steps=5)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    status = json.loads((run / ev.STATUS_FILE).read_text())
    status.update(
        pid=proc.pid, pid_start_time=psutil.Process(proc.pid).create_time(), heartbeat=time.time()
    )
    (run / ev.STATUS_FILE).write_text(json.dumps(status))
    return run, proc


def test_watcher_reports_a_kill_minus_9_as_crashed(tmp_path, webhook):
    url, received = webhook
    run, proc = _live_run(tmp_path)
    w = watch.Watcher(run, alerts.Settings(webhook=url, desktop=False))
    assert w.poll() is True and received == []
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert w.poll() is False  # the run ended: the watcher's work is done
    (body,) = received
    assert body["vqatune"]["state"] == "crashed" and "CRASHED" in body["text"]
    feed = (tmp_path / "runs" / alerts.FEED_FILE).read_text().splitlines()
    assert json.loads(feed[-1])["kind"] == "end"


def test_watcher_threshold_once_and_silence(tmp_path, webhook):
    url, received = webhook
    run, proc = _live_run(tmp_path)
    try:
        settings = alerts.Settings(
            webhook=url,
            desktop=False,
            when=(alerts.parse_condition("accuracy >= 0.9"),),
            silent_min=10,
        )
        w = watch.Watcher(run, settings)
        with open(run / ev.METRICS_FILE, "a") as f:
            for acc in (0.5, 0.92, 0.95):
                f.write(
                    json.dumps({"event": "eval", "time": 1.0, "step": 7, "accuracy": acc}) + "\n"
                )
        assert w.poll()
        assert len(received) == 1 and "accuracy >= 0.9 (now 0.92 at step 7)" in received[0]["text"]
        w.last_activity -= 11 * 60  # nothing written for 11 minutes
        assert w.poll()
        assert len(received) == 2 and "silent for 11 min" in received[1]["text"]
        assert w.poll() and len(received) == 2  # reported once per silence
    finally:
        proc.kill()
        proc.wait()


def test_launch_starts_a_detached_watcher_that_reports_the_end(
    tmp_path, config_home, webhook, monkeypatch
):
    """The whole path: config.toml asks for alerts, launching a run starts its watcher, the
    run ends, the webhook hears it, the watcher exits."""
    url, received = webhook
    config_home.write_text(f'[alerts]\nwebhook = "{url}"\ndesktop = false\n')
    monkeypatch.setenv("VQATUNE_WATCH_POLL_S", "0.1")
    run, proc = _live_run(tmp_path)
    try:
        assert alerts.start_watcher(run) is not None
        assert wait_for(lambda: alerts.watcher_alive(run), 30)
        assert alerts.start_watcher(run) is None  # one watcher a run
        status = json.loads((run / ev.STATUS_FILE).read_text())
        (run / ev.STATUS_FILE).write_text(json.dumps({**status, "state": "done"}))
        assert wait_for(lambda: received, 30), (run / alerts.ERRORS_FILE).read_text()
        assert "DONE" in received[0]["text"]
        assert wait_for(lambda: not alerts.watcher_alive(run), 30)
    finally:
        proc.kill()
        proc.wait()


def test_no_watcher_without_settings(tmp_path, config_home):
    run = make_run(tmp_path / "runs", "20260101-100000-a-aaaa")
    assert alerts.start_watcher(run) is None
    assert not (run / alerts.WATCH_FILE).exists()


def test_alerts_cli_sets_a_run_and_tests_the_webhook(tmp_path, config_home, webhook):
    from typer.testing import CliRunner
    from vqatune.tui.cli import app

    url, received = webhook
    runs = tmp_path / "runs"
    run = make_run(runs, "20260101-100000-a-aaaa")
    args = ["alerts", run.name, "--runs-dir", str(runs)]
    result = CliRunner().invoke(app, [*args, "--webhook", url, "--when", "accuracy >= 0.9"])
    assert result.exit_code == 0, result.stderr
    assert "when = ['accuracy >= 0.9']" in result.stdout
    assert alerts.load_settings(run).webhook == url
    result = CliRunner().invoke(app, [*args, "--test", "--no-desktop"])
    assert result.exit_code == 0 and received[-1]["text"] == "vqatune: test alert"
    bad = CliRunner().invoke(app, [*args, "--when", "acc > 1"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: alerts.when: 'acc > 1'")
    assert "acc > 1" not in (run / alerts.ALERTS_FILE).read_text()  # nothing half-written
