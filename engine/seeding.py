"""Seeds and random-number-generator state: python, numpy, torch (CPU and every CUDA device).

A checkpoint stores `rng_state()`; restoring it with `set_rng_state()` makes the rest of a run draw
exactly the same random numbers (dropout masks, Gumbel noise, shuffles) as an uninterrupted one.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict:
    """Every generator's state as tensors and plain values (a checkpoint loads weights-only)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gaussian],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    # .cpu(): a checkpoint may be loaded onto the GPU; generator states are CPU byte tensors.
    keys = keys.cpu().numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
