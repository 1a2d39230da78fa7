"""Train the cpu-quick model on easy-VQA with a plain PyTorch loop; print accuracy and time.

    .venv/bin/python benchmarks/model_easyvqa.py [--preset cpu-quick] [--set k=v]... [--threads N]

Checks that the cpu-quick sizes reach >= 98% test accuracy within the time budget (~5 min on
2 cores). The loop is deliberately minimal (AdamW with lr / xvlm_lr groups, clip_norm, the fused
prediction for accuracy); the trainer adds the rest.
"""

from __future__ import annotations

import argparse
import time

import torch
from vqatune.engine import config, data
from vqatune.engine.model import build_model

BRANCHES = ("fused", "xvlm", "ban", "graph")


def evaluate(model, loader) -> dict[str, float]:
    """Official accuracy of each branch's prediction (the fused one is the model's answer)."""
    model.eval()
    right = dict.fromkeys(BRANCHES, 0.0)
    total = 0
    with torch.no_grad():
        for batch in loader:
            logits = model(batch)["logits"]
            for name in BRANCHES:
                pred = logits[name].argmax(1)
                right[name] += batch["score"].gather(1, pred[:, None]).sum().item()
            total += len(batch["label"])
    model.train()
    return {name: right[name] / max(total, 1) for name in BRANCHES}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu-quick")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config.load(args.preset, args.sets)
    torch.manual_seed(cfg.seed)
    bundle = data.build(cfg)
    model = build_model(cfg, bundle.meta)
    groups = model.param_groups()
    opt = torch.optim.AdamW(
        [
            {"params": groups["backbone"], "lr": cfg.xvlm_lr},
            {"params": groups["heads"], "lr": cfg.lr},
        ]
    )
    steps_per_epoch = -(-len(bundle.train) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[cfg.xvlm_lr, cfg.lr], total_steps=total_steps, pct_start=0.1
    )
    start = time.perf_counter()
    train_time = 0.0
    for epoch in range(cfg.epochs):
        loader = data.make_loader(bundle.train, cfg, train=True, seed=cfg.seed, epoch=epoch)
        t0 = time.perf_counter()
        for step, batch in enumerate(loader):
            out = model(batch)
            loss, parts = model.loss(out, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            sched.step()
            if step % 100 == 0:
                print(
                    f"epoch {epoch} step {step}/{steps_per_epoch} loss {loss.item():.3f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        eval_loader = data.make_loader(
            bundle.eval, cfg, train=False, seed=cfg.seed, epoch=0, batch_size=256
        )
        acc = evaluate(model, eval_loader)
        branches = ", ".join(f"{k} {v:.4f}" for k, v in acc.items())
        print(
            f"epoch {epoch}: {len(bundle.train) / epoch_time:.0f} train samples/s, "
            f"eval accuracy {branches}, elapsed {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    print(
        f"final accuracy {acc['fused']:.4f} after {time.perf_counter() - start:.0f} s "
        f"(training {train_time:.0f} s, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
