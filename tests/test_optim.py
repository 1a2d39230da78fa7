"""engine/optim.py: the heads' lr schedules (ban-vqa per epoch, or linear per step)."""

from __future__ import annotations

import pytest
import torch
from vqatune.engine import config, optim


def build(total_steps=20, **changes):
    torch.manual_seed(0)
    backbone, heads = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
    groups = {"backbone": list(backbone.parameters()), "heads": list(heads.parameters())}
    cfg = config.Config().replace(lr=1e-3, xvlm_lr=1e-4, **changes)
    return optim.build(groups, cfg, total_steps), cfg, (backbone, heads)


def train_steps(opt, cfg, modules, steps, epoch=0):
    """`steps` updates in one epoch; -> the heads' lr used by each update."""
    opt.start_epoch(epoch, cfg.lr)
    used = []
    for _ in range(steps):
        used.append(opt.lr("heads"))
        loss = sum(m(torch.ones(1, 3)).sum() for m in modules)
        opt.zero_grad()
        loss.backward()
        opt.step(torch.amp.GradScaler(enabled=False))
    return used


def test_default_schedule_is_ban_vqa_per_epoch():
    opt, cfg, modules = build()
    assert cfg.lr_schedule == "ban-vqa"
    assert set(train_steps(opt, cfg, modules, 5, epoch=0)) == {0.5e-3}
    assert set(train_steps(opt, cfg, modules, 5, epoch=3)) == {2e-3}


def test_linear_schedule_warms_up_per_step_then_decays_to_zero():
    total = 20
    opt, cfg, modules = build(total, lr_schedule="linear")
    used = train_steps(opt, cfg, modules, 10, epoch=0)
    used += train_steps(opt, cfg, modules, 10, epoch=1)  # a new epoch does not reset it
    expected = [1e-3 * optim.backbone_lr_factor(s, total) for s in range(total)]
    assert used == pytest.approx(expected)
    assert used[0] == pytest.approx(0.5e-3) and used[1] == pytest.approx(1e-3)  # 2 warm-up steps
    assert used[-1] == pytest.approx(1e-3 / 19)
    assert opt.lr("heads") == 0.0  # after the last step


def test_linear_schedule_resumes_from_its_state():
    opt, cfg, modules = build(20, lr_schedule="linear")
    train_steps(opt, cfg, modules, 7)
    state = opt.state_dict()
    again, _, _ = build(20, lr_schedule="linear")
    again.load_state_dict(state)
    again.start_epoch(1, cfg.lr)
    assert again.lr("heads") == pytest.approx(opt.lr("heads"))
    assert again.lr("heads") == pytest.approx(1e-3 * optim.backbone_lr_factor(7, 20))
