"""Failures injected by tests, at named points of the training loop.

VQATUNE_FAULTS="oom@3,nan@5,stop@4,crash@6,hold@5,error@2:1" injects, at optimiser step N
(1-based, each once per process; ":R" only on rank R):

    oom     a CUDA out-of-memory error in the step's first forward pass     (at_forward)
    error   a Python error in the step's first forward pass                 (at_forward)
    nan     a NaN loss in the step's first micro-batch                      (at_loss)
    stop    a stop request, as SIGTERM would make                           (stop_requested)
    crash   a hard exit right after the step, as kill -9 (no final status)  (at_step_end)
    hold    the process hangs after the step (for a test to kill -9 it)     (at_step_end)
"""

from __future__ import annotations

import logging
import os
import time

FAULTS_ENV = "VQATUNE_FAULTS"
CRASH_EXIT = 3


class Faults:
    def __init__(self, spec: str, rank: int = 0):
        self.pending = set()
        for item in filter(None, (s.strip() for s in spec.split(","))):
            kind, _, where = item.partition("@")
            step, _, only_rank = where.partition(":")
            if not only_rank or int(only_rank) == rank:
                self.pending.add((kind, int(step)))

    @classmethod
    def from_env(cls, rank: int) -> Faults:
        return cls(os.environ.get(FAULTS_ENV, ""), rank)

    def fire(self, kind: str, step: int) -> bool:
        if (kind, step) in self.pending:
            self.pending.discard((kind, step))
            return True
        return False

    def at_forward(self, step: int) -> None:
        if self.fire("oom", step):
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected for a test)")
        if self.fire("error", step):
            raise RuntimeError(f"injected failure at step {step} (a test)")

    def at_loss(self, loss, step: int):
        return loss * float("nan") if self.fire("nan", step) else loss

    def stop_requested(self, step: int) -> bool:
        return self.fire("stop", step)

    def at_step_end(self, step: int) -> None:
        if self.fire("crash", step):
            os._exit(CRASH_EXIT)
        if self.fire("hold", step):
            logging.getLogger("vqatune.train").warning("holding after step %d (a test)", step)
            while True:  # until the test kills the process
                time.sleep(1.0)
