"""tui/display.py (how values read in the CLI and the TUI) and the one --runs-dir option that
every command shares, with $VQATUNE_RUNS."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from rich.text import Text
from tui_fixtures import make_store
from typer.testing import CliRunner
from vqatune.engine import events, exitcodes
from vqatune.tui import display
from vqatune.tui.cli import app

DURATION = re.compile(r"^(?:(\d+)h(\d\d)m|(?:(\d+)m)?(\d\d?)s)$")


@given(st.floats(min_value=0, max_value=10 * 24 * 3600, allow_nan=False))
def test_duration_rounds_to_the_nearest_second(seconds):
    text = display.duration(seconds)
    match = DURATION.match(text)
    assert match, text
    hours, hour_minutes, minutes, secs = match.groups()
    rounded = round(seconds)
    if hours is not None:  # an hour or more: whole minutes, the seconds dropped
        assert rounded >= 3600
        assert int(hours) * 3600 + int(hour_minutes) * 60 == rounded - rounded % 60
        assert int(hour_minutes) < 60
    else:
        assert rounded < 3600
        assert int(minutes or 0) * 60 + int(secs) == rounded
        assert int(secs) < 60
        assert minutes is None or len(secs) == 2  # 1m05s, not 1m5s


def test_duration_examples():
    assert display.duration(59.4) == "59s"
    assert display.duration(59.6) == "1m00s"  # rounded like the others, not truncated to 59s
    assert display.duration(90) == "1m30s"
    assert display.duration(3725) == "1h02m"
    assert display.duration(0) == "0s"
    assert display.duration(None) == display.duration("x") == "-"


@given(st.floats(min_value=0, max_value=1, allow_nan=False))
def test_accuracy_has_four_decimals(x):
    text = display.accuracy(x)
    assert re.fullmatch(r"[01]\.\d{4}", text) and abs(float(text) - x) <= 5e-5
    assert (
        display.percent(x).endswith("%") and abs(float(display.percent(x)[:-1]) - 100 * x) <= 5e-3
    )


def test_missing_values_and_mean_std():
    assert display.accuracy(None) == display.percent(None) == "-"
    assert display.accuracy(True) == "-"  # a flag is not an accuracy
    assert display.mean_std(0.8, 0.01) == "0.8000 ± 0.0100"
    assert display.mean_std(0.8, None) == "0.8000"  # one seed: no spread to show
    assert display.mean_std(None, 0.1) == "-"


# The colours the CLI printed before they were declared once: the same escapes must come out.
ANSI_BEFORE = {
    "running": "\x1b[1;32m",
    "queued": "\x1b[36m",
    "done": "\x1b[32m",
    "stopped": "\x1b[33m",
    "crashed": "\x1b[1;31m",
    "failed": "\x1b[31m",
    "diverged": "\x1b[31m",
    "oom": "\x1b[31m",
}


@pytest.mark.parametrize("state", events.STATES)
def test_every_run_state_has_one_colour_for_rich_and_ansi(state):
    assert display.state_ansi(state, "x ") == f"{ANSI_BEFORE[state]}x \x1b[0m"
    text = display.state_text(state)
    assert isinstance(text, Text) and str(text.style) == display.STATE_STYLES[state]


def test_sweep_states_and_unknown_states():
    assert display.state_style("finished") == "green"
    assert display.state_style("incomplete") == "yellow"
    assert display.state_ansi("unheard-of") == "unheard-of"


def test_exit_codes_by_final_state():
    assert exitcodes.for_state("done") == 0
    assert exitcodes.for_state("stopped") == 130
    for state in ("failed", "diverged", "oom", "crashed", None):
        assert exitcodes.for_state(state) == exitcodes.FAILED == 1


def test_display_imports_neither_textual_nor_rich():
    code = (
        "import sys, vqatune.tui.display; "
        "assert not {'textual', 'rich', 'torch'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------
# --runs-dir and $VQATUNE_RUNS


def _commands(group, prefix: tuple[str, ...] = ()):
    """Every command and group below `group` (a group's own options count: `vqatune queue`)."""
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if getattr(command, "commands", None):  # typer's groups are not all click.Group
            yield from _commands(command, (*prefix, name))


def _runs_dir_commands():
    root = typer.main.get_command(app)
    found = []
    for path, command in _commands(root):
        if any("--runs-dir" in p.opts for p in command.params):
            found.append((path, command))
    return found


def test_commands_with_runs_dir_are_all_found():
    names = {" ".join(path) for path, _ in _runs_dir_commands()}
    assert {"run", "train", "runs", "show", "sweep", "sweeps", "tui", "queue"} <= names, names


@pytest.mark.parametrize(
    "path, command", _runs_dir_commands(), ids=[" ".join(p) for p, _ in _runs_dir_commands()]
)
def test_every_runs_dir_reads_the_environment(path, command, tmp_path, monkeypatch):
    """Parsing alone (no callback runs): the value comes from $VQATUNE_RUNS, and the flag wins."""
    monkeypatch.setenv("VQATUNE_RUNS", str(tmp_path / "from-env"))
    ctx = command.make_context(" ".join(path), [], resilient_parsing=True)
    assert str(ctx.params["runs_dir"]) == str(tmp_path / "from-env")
    ctx = command.make_context(
        " ".join(path), ["--runs-dir", str(tmp_path / "flag")], resilient_parsing=True
    )
    assert str(ctx.params["runs_dir"]) == str(tmp_path / "flag")


def test_runs_and_sweeps_list_the_store_named_by_the_environment(tmp_path, monkeypatch):
    store = tmp_path / "elsewhere"
    make_store(store)
    monkeypatch.setenv("VQATUNE_RUNS", str(store))
    monkeypatch.chdir(tmp_path)  # ./runs does not exist here
    result = CliRunner().invoke(app, ["runs", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 4
    result = CliRunner().invoke(app, ["sweeps", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
