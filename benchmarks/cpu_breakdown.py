"""Where a training step's time goes: per-component CPU time of a preset, in this process.

    .venv/bin/python benchmarks/cpu_breakdown.py [--preset cpu-quick] [--steps 80] [--set k=v]...

Trains `steps` steps on the preset's real data (the engine's loader, model and optimisers, as
bench_engine_overhead's plain loop) and times each component with module hooks: data loading,
backbone (vision + text + fusion), question encoder (embeddings + GRU), BAN without its AoA, AoA,
graph branch, the rest of the forward (heads, fusion), loss, backward, optimiser (with gradient
clipping). Then one evaluation pass over `eval` questions at the trainer's evaluation batch. The
first 10 steps are left out (warm-up). Prints ms per sample of each and its share of a step.
bench_cpu_quick.py calls `breakdown` for its report.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import torch
from vqatune.engine import config, data, optim, seeding
from vqatune.engine.model import build_model
from vqatune.engine.trainer import EVAL_BATCH_FACTOR

WARMUP_STEPS = 10


class Timer:
    """Accumulates process CPU time per label; module hooks open and close nested spans."""

    def __init__(self):
        self.spent = defaultdict(float)
        self.open: dict[str, float] = {}
        self.counting = False

    def start(self, label: str) -> None:
        self.open[label] = time.process_time()

    def stop(self, label: str) -> None:
        began = self.open.pop(label)
        if self.counting:
            self.spent[label] += time.process_time() - began

    def hook(self, module: torch.nn.Module, label: str) -> None:
        module.register_forward_pre_hook(lambda *_: self.start(label))
        module.register_forward_hook(lambda *_: self.stop(label))


def epochs_of_batches(dataset, cfg):
    """Training batches, epoch after epoch (a small preset's epoch is shorter than the steps)."""
    epoch = 0
    while True:
        yield from data.make_loader(dataset, cfg, train=True, seed=cfg.seed, epoch=epoch)
        epoch += 1


def breakdown(cfg, steps: int, eval_questions: int = 2000) -> list[tuple[str, float]]:
    """[(component, CPU ms per training sample)], evaluation per evaluated question last."""
    seeding.seed_everything(cfg.seed)
    bundle = data.build(cfg)
    model = build_model(cfg, bundle.meta)
    opt = optim.build(model.param_groups(), cfg, total_steps=steps)
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    timer = Timer()
    timer.hook(model.backbone, "backbone")
    timer.hook(model.gru, "question encoder")
    timer.hook(model.ban, "BAN")
    timer.hook(model.ban.aoa, "AoA")
    timer.hook(model.graph, "graph")
    timer.hook(model, "forward")
    loader = epochs_of_batches(bundle.train, cfg)
    samples = 0
    model.train()
    for step in range(1, steps + WARMUP_STEPS + 1):
        timer.counting = step > WARMUP_STEPS
        timer.start("data")
        batch = next(loader)
        timer.stop("data")
        out = model(batch)
        timer.start("loss")
        loss, _ = model.loss(out, batch)
        timer.stop("loss")
        timer.start("backward")
        loss.backward()
        timer.stop("backward")
        timer.start("optimiser")
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        opt.step(scaler)
        opt.zero_grad()
        loss.item()
        timer.stop("optimiser")
        samples += len(batch["label"]) if timer.counting else 0
    s = timer.spent
    rows = [
        ("data", s["data"]),
        ("backbone", s["backbone"]),
        ("question encoder", s["question encoder"]),
        ("BAN (without AoA)", s["BAN"] - s["AoA"]),
        ("AoA", s["AoA"]),
        ("graph", s["graph"]),
        (
            "heads and fusion",
            s["forward"] - s["backbone"] - s["question encoder"] - s["BAN"] - s["graph"],
        ),
        ("loss", s["loss"]),
        ("backward", s["backward"]),
        ("optimiser", s["optimiser"]),
    ]
    rows = [(name, spent * 1e3 / samples) for name, spent in rows]
    rows.append(("evaluation (per question)", evaluation_ms(model, bundle, cfg, eval_questions)))
    return rows


def evaluation_ms(model, bundle, cfg, questions: int) -> float:
    """CPU ms per evaluated question, as the trainer evaluates (inference_mode, its larger batch)."""
    loader = data.make_loader(
        bundle.eval,
        cfg,
        train=False,
        seed=cfg.seed,
        epoch=0,
        batch_size=EVAL_BATCH_FACTOR * cfg.batch_size,
    )
    model.eval()
    done = 0
    began = time.process_time()
    with torch.inference_mode():
        for batch in loader:
            model(batch)["logits"]["fused"].argmax(1)
            done += len(batch["label"])
            if done >= questions:
                break
    model.train()
    return (time.process_time() - began) * 1e3 / done


def print_breakdown(rows: list[tuple[str, float]]) -> None:
    train = sum(ms for name, ms in rows if not name.startswith("evaluation"))
    print(f"per training sample: {train:.2f} CPU ms")
    for name, ms in rows:
        share = "" if name.startswith("evaluation") else f"  {ms / train:6.1%}"
        print(f"  {name:<28} {ms:7.3f} ms{share}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-quick")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    cfg = config.load(args.preset, args.sets)
    print(f"preset {args.preset}: batch {cfg.batch_size}, {torch.get_num_threads()} threads")
    print_breakdown(breakdown(cfg, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
