"""train.log: the training process's human-readable log (the `vqatune.train` logger)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def setup(path: Path, rank: int = 0) -> None:
    """Log to train.log; echo to stdout too unless stdout already is train.log. Under torchrun,
    lines carry the rank, and ranks other than 0 log only warnings and errors."""
    tag = f"[rank {rank}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    try:
        same = os.path.exists(path) and os.path.samefile(
            path, f"/proc/self/fd/{sys.stdout.fileno()}"
        )
    except (OSError, ValueError, AttributeError):
        same = False
    if not same:
        handlers.append(logging.StreamHandler(sys.stdout))
    for h in handlers:
        h.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {tag}%(message)s", "%H:%M:%S"))
    root = logging.getLogger("vqatune")
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    root.propagate = False
