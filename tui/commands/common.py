"""Shared CLI helpers: one-line errors with exit codes, warnings, rich output on demand."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import typer
from vqatune.engine.exitcodes import BAD_INPUT, HANGUP


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    echo_errors(message)
    raise typer.Exit(code)


def echo_errors(message: str) -> None:
    """One `error:` line per line of the message (a config file lists all its mistakes)."""
    for line in message.splitlines() or [""]:
        typer.echo(f"error: {line}", err=True)


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a user's mistake into one line on stderr and exit code 2."""
    # Imported here, not at module level: `vqatune --help` need not load the schema (~10 ms).
    from vqatune.engine.config import ConfigError

    try:
        yield
    except ConfigError as e:
        fail(str(e))


class _TerminalGone(BaseException):
    """SIGHUP reached a follower: its terminal is gone."""


@contextlib.contextmanager
def quiet_on_hangup() -> Iterator[None]:
    """A follower whose terminal closes (SIGHUP, a dropped SSH connection, a killed tmux
    session) ends quietly, exit 129: what it follows runs on in its own session. Output goes
    to /dev/null from the signal on, so no later write (a progress bar's refresh thread, the
    interpreter's final flush) can fail on the dead terminal."""

    def silence() -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)

    def hangup(signum, frame):
        silence()
        raise _TerminalGone

    previous = signal.signal(signal.SIGHUP, hangup)
    try:
        yield
    except _TerminalGone:
        raise typer.Exit(HANGUP) from None
    except OSError as e:  # a write to the closed terminal before the signal arrived
        if e.errno not in (errno.EIO, errno.EPIPE):
            raise
        silence()
        raise typer.Exit(HANGUP) from None
    finally:
        signal.signal(signal.SIGHUP, previous)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def console():
    from rich.console import Console

    return Console()


def print_listing(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A borderless table of named things: the first column bold, the last (a description)
    folded to the terminal's width."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for i, name in enumerate(columns):
        table.add_column(
            name,
            style="bold" if i == 0 else None,
            overflow="fold" if i == len(columns) - 1 else "ellipsis",
        )
    for row in rows:
        table.add_row(*row)
    console().print(table)


RUNS_ENV = "VQATUNE_RUNS"

RunsDirOption: Path | None = typer.Option(
    None,
    "--runs-dir",
    metavar="DIR",
    envvar=RUNS_ENV,
    show_envvar=False,
    help=f"The run store (default: ${RUNS_ENV} or ./runs).",
)

SetOption = typer.Option(
    None,
    "--set",
    "-s",
    metavar="NAME=VALUE",
    help="Override a parameter (repeatable), typed by the schema: --set lr=3e-4.",
)
