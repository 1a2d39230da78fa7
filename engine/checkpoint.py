"""Checkpoints: one file holding everything needed to continue a run exactly.

RUN_DIR/checkpoints/last.pt (rewritten at each evaluation and when the run stops) and best.pt
(a hard link to the last.pt of the best evaluation so far). A checkpoint is a dict:
  version, step, epoch, config (dict), model, optimisation {optimizers, schedulers}, scaler,
  rng {python, numpy, torch, cuda}, data {epoch, order, sample, batch_size, accumulation},
  progress {best_accuracy, best_step, last_accuracy, evals_since_best, window, ...}
Files are written to a temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


def save(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"version": VERSION, **state}, tmp)
    os.replace(tmp, path)


def link(src: Path, dst: Path) -> None:
    """dst becomes the same file as src (a hard link; a copy where links are not possible)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load(path: Path, map_location="cpu") -> dict:
    # Our own file from the run directory: it holds numpy RNG state, so not weights-only.
    state = torch.load(path, map_location=map_location, weights_only=False)
    if state.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {state.get('version')}, expected {VERSION}")
    return state
