"""Waiting in tests for another process (a trainer, a sweep) to reach a state."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float, every: float = 0.05) -> bool:
    """Poll `predicate` every `every` s: True as soon as it holds, False after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False
