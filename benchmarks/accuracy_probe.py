"""Short easy-VQA training probe: accuracy per branch and per answer type after N steps.

    .venv/bin/python benchmarks/accuracy_probe.py [--set k=v]... [--epochs 1] [--head-lr-factor F]
        [--threads 1] [--name NAME]

Trains `cpu-quick` (plus the --set overrides, e.g. train_limit=12800 eval_limit=2000) with the
engine's own optimisers (engine/optim.py: Adamax heads, AdamW backbone), then prints one RESULT
line: official accuracy of the fused answer and of each branch, the fused accuracy per answer
type (yes/no, color, shape), and samples per CPU-second (the figure that does not depend on how
much of a shared machine the run got). --head-lr-factor replaces ban-vqa's per-epoch warm-up
factor of the heads' lr (0.5 in epoch 0) to test schedule changes without editing optim.py (it
implies lr_schedule = ban-vqa, whose per-epoch rate it overrides).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from vqatune.engine import config, data, optim
from vqatune.engine.model import build_model

BRANCHES = ("fused", "xvlm", "ban", "graph")


def evaluate(model, bundle, cfg) -> tuple[dict[str, float], list[float]]:
    model.eval()
    right = dict.fromkeys(BRANCHES, 0.0)
    by_type = np.zeros((len(bundle.meta.answer_types), 2))  # [types, (right, seen)]
    seen = 0
    with torch.no_grad():
        for batch in data.make_loader(
            bundle.eval, cfg, train=False, seed=0, epoch=0, batch_size=256
        ):
            logits = model(batch)["logits"]
            for name in BRANCHES:
                ok = batch["score"].gather(1, logits[name].argmax(1)[:, None])[:, 0]
                right[name] += ok.sum().item()
                if name == "fused":
                    for t in range(len(by_type)):
                        m = batch["answer_type"] == t
                        by_type[t] += (ok[m].sum().item(), m.sum().item())
            seen += len(batch["label"])
    model.train()
    return (
        {k: v / max(seen, 1) for k, v in right.items()},
        (by_type[:, 0] / np.maximum(by_type[:, 1], 1)).tolist(),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--head-lr-factor", type=float, default=None)
    ap.add_argument("--name", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load("cpu-quick", args.sets)
    if args.head_lr_factor is not None:  # a constant factor replaces the per-epoch schedule
        cfg = cfg.replace(lr_schedule="ban-vqa")
    torch.manual_seed(cfg.seed)
    bundle = data.build(cfg)
    model = build_model(cfg, bundle.meta)
    total = int(-(-len(bundle.train) // cfg.batch_size) * args.epochs)
    opt = optim.build(model.param_groups(), cfg, total)
    scaler = torch.amp.GradScaler(enabled=False)
    step, epoch = 0, 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while step < total:
        opt.start_epoch(epoch, cfg.lr)
        if args.head_lr_factor is not None:
            for group in opt.optimizers["heads"].param_groups:
                group["lr"] = cfg.lr * args.head_lr_factor
        for batch in data.make_loader(bundle.train, cfg, train=True, seed=cfg.seed, epoch=epoch):
            loss, parts = model.loss(model(batch), batch)
            opt.zero_grad()
            loss.backward()
            if cfg.clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step(scaler)
            step += 1
            if step % 100 == 0:
                print(
                    step,
                    f"loss {loss.item():.3f}",
                    {k: round(v.item(), 3) for k, v in parts.items()},
                    flush=True,
                )
            if step >= total:
                break
        epoch += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    acc, types = evaluate(model, bundle, cfg)
    print(
        f"RESULT {args.name} {' '.join(args.sets)} epochs={args.epochs} "
        f"head_lr_factor={args.head_lr_factor} steps={step} "
        f"acc {' '.join(f'{k}={v:.4f}' for k, v in acc.items())} "
        f"types(yes/no,color,shape)={[round(t, 4) for t in types]} "
        f"samples/cpu-s={step * cfg.batch_size / cpu:.0f} cpu={cpu:.0f}s wall={wall:.0f}s",
        flush=True,
    )


if __name__ == "__main__":
    main()
