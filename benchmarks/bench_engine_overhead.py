"""P1: the engine's training throughput divided by a plain hand-written PyTorch loop's.

    .venv/bin/python benchmarks/bench_engine_overhead.py [--preset cpu-quick] [--steps 60]
        [--repeats 3] [--set k=v]...

Both train the same model (same config and seed) on the same data in this process, one after the
other, `repeats` times each (the best of each counts: the least disturbed by other load):
- engine: vqatune.engine.trainer.Trainer on a fresh run directory with max_steps = steps; its
  throughput is taken from its own step events, between the first and the last one (the steps
  before the first event, which include warm-up, are left out);
- plain: what one writes by hand: the data module's loader, Adamax for the heads and AdamW for the
  backbone, autocast when mixed_precision, backward, clip_grad_norm_, step, loss.item(); timed
  over the same steps.
Prints samples/s of each and the ratio (target: >= 0.97).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from vqatune.engine import config, data, events, optim, precision, seeding
from vqatune.engine.model import build_model
from vqatune.engine.trainer import Trainer


def engine_samples_per_s(cfg, root: Path, index: int) -> float:
    run_dir = root / f"engine-{index}"
    run_dir.mkdir()
    (run_dir / events.CONFIG_FILE).write_text(config.dumps(cfg, full=True), encoding="utf-8")
    assert Trainer(run_dir).run() == 0
    with open(run_dir / events.METRICS_FILE, encoding="utf-8") as f:
        log = [json.loads(line) for line in f]
    effective = log[0]["effective_batch_size"]
    steps = [e for e in log if e["event"] == "step"]
    first, last = steps[0], steps[-1]
    return (last["step"] - first["step"]) * effective / (last["time"] - first["time"])


def plain_samples_per_s(cfg) -> float:
    seeding.seed_everything(cfg.seed)
    device = precision.pick_device(cfg)
    bundle = data.build(cfg)
    model = build_model(cfg, bundle.meta).to(device)
    groups = model.param_groups()
    heads = torch.optim.Adamax(groups["heads"], lr=cfg.lr)
    backbone = torch.optim.AdamW(
        groups["backbone"],
        lr=cfg.xvlm_lr,
        weight_decay=0.01,
        fused=device.type in optim.FUSED_DEVICES,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    dtype = torch.bfloat16 if cfg.mixed_precision else None
    loader = data.make_loader(bundle.train, cfg, train=True, seed=cfg.seed, epoch=0)
    warmup = cfg.log_every  # the engine's first step event comes after log_every steps
    started = None
    model.train()
    for step, batch in enumerate(loader, 1):
        if device.type != "cpu":
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(batch)
            loss, _ = model.loss(out, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        heads.step()
        backbone.step()
        heads.zero_grad(set_to_none=True)
        backbone.zero_grad(set_to_none=True)
        loss.item()
        if step == warmup:
            started = time.time()
        if step == cfg.max_steps:
            return (step - warmup) * cfg.batch_size / (time.time() - started)
    raise SystemExit("not enough training data for --steps")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-quick")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    # One micro-batch per step (the plain loop has no accumulation), a short final evaluation.
    cfg = config.load(
        args.preset,
        [
            f"max_steps={args.steps}",
            "update_freq=1",
            "gradient_accumulation_steps=1",
            "eval_limit=64",
            "eval_every=0",
            f"log_every={max(1, args.steps // 3)}",
            *args.sets,
        ],
    )
    print(
        f"preset {args.preset}: batch {cfg.batch_size}, {args.steps} steps, "
        f"{torch.get_num_threads()} threads, repeats {args.repeats}",
        flush=True,
    )
    engine, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            engine.append(engine_samples_per_s(cfg, Path(tmp), i))
            plain.append(plain_samples_per_s(cfg))
            print(
                f"  repeat {i + 1}: engine {engine[-1]:.1f} samples/s, "
                f"plain {plain[-1]:.1f} samples/s",
                flush=True,
            )
    ratio = max(engine) / max(plain)
    print(
        f"engine {max(engine):.1f} samples/s, plain loop {max(plain):.1f} samples/s, "
        f"ratio {ratio:.3f} (target >= 0.97)"
    )


if __name__ == "__main__":
    sys.exit(main())
