"""Time and size of one checkpoint (checkpoints/last.pt) on CPU, per preset.

    .venv/bin/python benchmarks/bench_checkpoint.py [--repeat N] [PRESET ...]   (cpu-quick 24gb)

Builds the preset's model (nominal vocabulary of its data set), its optimisers with their moments
filled (one step on zero gradients), a data order of 100,000 samples and the RNG states, then
times what the trainer does at a checkpoint: collect the state (checkpoint.state_of) and write it
(checkpoint.save, temporary file + rename), and checkpoint.load (weights-only) of the file.
Prints the file size, the median wall and process CPU time of a save and of a load, and the ratio
that matters for checkpoint_every_min: how much of the default 15-minute interval one save takes
(the loop stands still for the save, nothing more). The 24gb model needs about 7 GB of memory.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from vqatune.engine import checkpoint, config, optim, precision, schema, seeding
from vqatune.engine.model import build_model, nominal_meta
from vqatune.engine.progress import Progress


def timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def measure_saves(preset: str, repeat: int, path: Path) -> tuple[int, list]:
    """The model's parameter count and the times of `repeat` checkpoints written to path."""
    cfg = config.load(preset, ["device=cpu"])
    torch.manual_seed(0)
    model = build_model(cfg, nominal_meta(cfg.dataset))
    opt = optim.build(model.param_groups(), cfg, total_steps=100)
    scaler = precision.precision_for(cfg, torch.device("cpu")).scaler()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    opt.step(scaler)  # the optimisers' moments exist, as in any checkpoint after step 1
    opt.zero_grad()
    progress = Progress(step=1, order=np.arange(100_000, dtype=np.int64), micro_batch=8)

    def save():
        state = checkpoint.state_of(cfg, model, opt, scaler, progress, [seeding.rng_state()])
        checkpoint.save(state, path)

    return sum(p.numel() for p in model.parameters()), [timed(save) for _ in range(repeat)]


def measure(preset: str, repeat: int, folder: Path) -> dict:
    path = folder / f"{preset}.pt"
    params, saves = measure_saves(preset, repeat, path)
    gc.collect()  # the model and optimisers are gone before the loads
    loads = [timed(lambda: checkpoint.load(path)) for _ in range(repeat)]
    size = path.stat().st_size
    path.unlink()
    return {
        "params": params,
        "size_mb": size / 2**20,
        "save_wall": statistics.median(w for w, _ in saves),
        "save_cpu": statistics.median(c for _, c in saves),
        "load_wall": statistics.median(w for w, _ in loads),
        "load_cpu": statistics.median(c for _, c in loads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", default=["cpu-quick", "24gb"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    interval_s = schema.DEFAULTS["checkpoint_every_min"] * 60
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(
        f"{'preset':<10} {'params':>12} {'size MB':>9} {'save s':>8} {'(cpu)':>7} "
        f"{'MB/s':>6} {'load s':>8} {'(cpu)':>7} {'save / 15 min':>14}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as folder:
        for preset in args.presets:
            r = measure(preset, args.repeat, Path(folder))
            print(
                f"{preset:<10} {r['params']:>12,} {r['size_mb']:>9.1f} {r['save_wall']:>8.3f} "
                f"{r['save_cpu']:>7.3f} {r['size_mb'] / r['save_wall']:>6.0f} "
                f"{r['load_wall']:>8.3f} {r['load_cpu']:>7.3f} "
                f"{r['save_wall'] / interval_s:>13.2%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
