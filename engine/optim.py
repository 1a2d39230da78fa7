"""Optimisers and learning-rate schedules: the one place to change how vqatune optimises.

As the original code bases:
- heads (BAN, AoA, ISubGVQA, classifier, fusion): Adamax with `lr` and ban-vqa's schedule, per epoch:
  0.5, 1, 1.5, 2 x lr over the first four epochs (gradual warm-up), 2 x lr after that, and x 0.25
  at epochs 10, 12, 14, 16, 18;
- X-VLM backbone: AdamW with `xvlm_lr` (weight decay 0.01, none on biases and norms), linear
  warm-up over the first 10% of the optimiser steps, then linear decay to 0 at the last step.
  `xvlm_lr = 0` freezes the backbone (no optimiser for it).

The heads' rate is set at the start of each epoch (as ban-vqa does); the backbone's is a LambdaLR
of the optimiser step. With `lr_schedule = "linear"` (short runs, e.g. cpu-quick) the heads follow
the backbone's per-step shape instead, peaking at `lr`: ban-vqa's half rate in the whole first
epoch is most of a three-epoch run. A checkpoint holds both optimisers and the schedulers' counters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HEAD_WARMUP = (0.5, 1.0, 1.5, 2.0)  # x lr in epochs 0..3
HEAD_DECAY_EPOCHS = range(10, 20, 2)
HEAD_DECAY_RATE = 0.25
BACKBONE_WARMUP_FRACTION = 0.1
BACKBONE_WEIGHT_DECAY = 0.01
FUSED_DEVICES = ("cpu", "cuda")  # where torch has a fused AdamW


def head_lr_factor(epoch: int) -> float:
    """ban-vqa's per-epoch multiplier of `lr`."""
    if epoch < len(HEAD_WARMUP):
        return HEAD_WARMUP[epoch]
    decays = sum(1 for e in HEAD_DECAY_EPOCHS if e <= epoch)
    return HEAD_WARMUP[-1] * HEAD_DECAY_RATE**decays


def backbone_lr_factor(step: int, total_steps: int) -> float:
    """Linear warm-up then linear decay towards zero (X-VLM's `linear` scheduler); `step` is the
    number of updates done, so the first update already has a non-zero rate."""
    warmup = max(1, int(BACKBONE_WARMUP_FRACTION * total_steps))
    update = step + 1
    if update <= warmup:
        return update / warmup
    return max(0.0, (total_steps - update + 1) / (total_steps - warmup + 1))


@dataclass
class Optimisation:
    """The optimisers and schedulers of one run, stepped together."""

    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]

    def start_epoch(self, epoch: int, base_lr: float) -> None:
        if "heads" in self.schedulers:  # per-step schedule (lr_schedule = "linear")
            return
        for group in self.optimizers["heads"].param_groups:
            group["lr"] = base_lr * head_lr_factor(epoch)

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self, scaler: torch.amp.GradScaler) -> None:
        for opt in self.optimizers.values():
            scaler.step(opt)
        scaler.update()
        for sched in self.schedulers.values():
            sched.step()

    def unscale(self, scaler: torch.amp.GradScaler) -> None:
        for opt in self.optimizers.values():
            scaler.unscale_(opt)

    def lr(self, name: str) -> float:
        """Current learning rate of a group ("heads" or "backbone"; 0 when frozen)."""
        opt = self.optimizers.get(name)
        return opt.param_groups[0]["lr"] if opt is not None else 0.0

    def state_dict(self) -> dict:
        return {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])


def build(param_groups: dict[str, list[torch.nn.Parameter]], cfg, total_steps: int) -> Optimisation:
    """param_groups: {"heads": [...], "backbone": [...]} as model.param_groups() returns."""
    heads = [p for p in param_groups["heads"] if p.requires_grad]
    optimizers, schedulers = {}, {}
    if cfg.lr_schedule == "linear":
        optimizers["heads"] = torch.optim.Adamax(heads, lr=cfg.lr)
        schedulers["heads"] = torch.optim.lr_scheduler.LambdaLR(
            optimizers["heads"], lambda step: backbone_lr_factor(step, total_steps)
        )
    else:
        optimizers["heads"] = torch.optim.Adamax(heads, lr=cfg.lr * head_lr_factor(0))
    backbone = [p for p in param_groups["backbone"] if p.requires_grad]
    if cfg.xvlm_lr > 0 and backbone:
        decay = [p for p in backbone if p.ndim >= 2]
        no_decay = [p for p in backbone if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": BACKBONE_WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # the fused kernel: the same update in one pass over the parameters (3x faster on CPU)
        fused = all(p.device.type in FUSED_DEVICES for p in backbone)
        backbone_opt = torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=cfg.xvlm_lr, fused=fused
        )
        optimizers["backbone"] = backbone_opt
        schedulers["backbone"] = torch.optim.lr_scheduler.LambdaLR(
            backbone_opt, lambda step: backbone_lr_factor(step, total_steps)
        )
    else:  # frozen backbone: no gradients, no optimiser state
        for p in param_groups["backbone"]:
            p.requires_grad_(False)
    return Optimisation(optimizers, schedulers)
