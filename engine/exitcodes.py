"""Exit codes, one table for the training process and every command."""

from __future__ import annotations

DONE = 0
FAILED = 1  # failed, diverged, oom, crashed: anything that did not end as asked
BAD_INPUT = 2  # a user mistake; nothing was started or written
HANGUP = 129  # 128 + SIGHUP: the terminal went away; nobody reads it, but it is honest
INTERRUPTED = 130  # Ctrl-C / SIGTERM: stopped cleanly (as a shell reports SIGINT)

_BY_STATE = {"done": DONE, "stopped": INTERRUPTED}


def for_state(state: str | None) -> int:
    """The exit code of a run that ended in `state`."""
    return _BY_STATE.get(state, FAILED)
