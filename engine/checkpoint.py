"""Checkpoints: one file holding everything needed to continue a run exactly.

RUN_DIR/checkpoints/last.pt (rewritten at each evaluation, every checkpoint_every_min minutes
between them, and when the run stops) and best.pt (a hard link to the last.pt of the best
evaluation so far). A checkpoint is a dict of tensors and plain values (no pickled objects):
  version, config (dict), model, optimisation {optimizers, schedulers}, scaler,
  rng_ranks [each rank's {python, numpy, torch, cuda}], world_size,
  and the fields of progress.Progress: step, epoch, epoch_samples_done, order, micro_batch,
  accumulation, best_accuracy, best_step, last_accuracy, last_eval_step, evals_since_best, window
Files are written to a temporary name and renamed, so a crash never leaves half a checkpoint.
Loading is weights-only: a file that would need unpickling (which can run code) is refused.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

VERSION = 2  # 1: pickled numpy RNG state (refused now)
LAST = "last.pt"
BEST = "best.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message is one line naming the file."""


def state_of(cfg, model, opt, scaler, progress, rng_ranks: list[dict]) -> dict:
    """The checkpoint of a run (the layout above): opt an optim.Optimisation, progress a
    progress.Progress, rng_ranks every rank's seeding.rng_state()."""
    return {
        "config": cfg.to_dict(),
        "model": model.state_dict(),
        "optimisation": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "rng_ranks": rng_ranks,
        "world_size": len(rng_ranks),
        **progress.to_state(),
    }


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
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))  # the global torch refused to import
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: refused: it holds a pickled Python object{what}, which could run code "
            "when loaded; resume takes only checkpoints of tensors and plain values "
            "(this one is old or was not written by this vqatune)"
        ) from None
    except (OSError, RuntimeError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint: {first}") from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        found = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: checkpoint version {found}, expected {VERSION}")
    return state
