"""Where a run stands: the position in the data, the evaluations so far, the losses since the
last step event. A checkpoint stores `Progress.to_state()` beside the tensors of the model and
the optimisers; `Progress.from_state` reads the same fields back (one field list: the
dataclass's). Plain types and tensors only, so checkpoints load with weights_only=True."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch


class Window:
    """Sums between two step events: mean losses, last grad norm, throughput."""

    def __init__(self, sums: list[float] | None = None, steps=0, samples=0, grad_norm=None):
        self.sums = sums  # total loss, then each of the model's outputs (None: no step yet)
        self.steps, self.samples, self.grad_norm = steps, samples, grad_norm
        self.started = time.time()

    def add(self, losses: list[float], grad_norm: torch.Tensor, samples: int) -> None:
        self.sums = (
            list(losses) if self.sums is None else [s + x for s, x in zip(self.sums, losses)]
        )
        self.steps += 1
        self.samples += samples
        self.grad_norm = float(grad_norm)

    def mean(self, i: int) -> float | None:
        return self.sums[i] / self.steps if self.steps else None

    def samples_per_s(self) -> float:
        return self.samples / max(time.time() - self.started, 1e-9)

    def to_state(self) -> dict:
        return {
            "sums": self.sums,
            "steps": self.steps,
            "samples": self.samples,
            "grad_norm": self.grad_norm,
        }

    @classmethod
    def from_state(cls, s: dict) -> Window:
        sums = None if s["sums"] is None else list(s["sums"])
        return cls(sums, s["steps"], s["samples"], s["grad_norm"])


@dataclass
class Progress:
    step: int = 0  # optimiser steps done
    epoch: int = 0  # the current epoch, 0-based (= epochs done)
    epoch_samples_done: int = 0  # samples of the current epoch done (over every rank)
    order: np.ndarray | None = None  # the current epoch's sample order (None: not drawn yet)
    micro_batch: int = 0  # samples of one rank's micro-batch (dynamic_batch_size halves it)
    accumulation: int = 1  # micro-batches of one optimiser step (doubled when it halves)
    best_accuracy: float | None = None
    best_step: int | None = None
    last_accuracy: float | None = None
    last_eval_step: int | None = None
    evals_since_best: int = 0  # for early stopping (patience)
    window: Window = field(default_factory=Window)

    @property
    def epoch_label(self) -> int:
        """1-based epoch in progress; after an epoch's last step, that epoch."""
        return self.epoch + (self.epoch_samples_done > 0)

    def to_state(self) -> dict:
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["order"] = None if self.order is None else torch.from_numpy(self.order.copy())
        state["window"] = self.window.to_state()
        return state

    @classmethod
    def from_state(cls, state: dict) -> Progress:
        values = {f.name: state[f.name] for f in fields(cls)}
        if values["order"] is not None:
            values["order"] = values["order"].cpu().numpy()  # loaded onto the training device
        values["window"] = Window.from_state(values["window"])
        return cls(**values)
