"""Forward + backward time per batch of the model, on CPU, for a few presets.

    .venv/bin/python benchmarks/model_speed.py [--threads N] [--steps N] [PRESET ...]

Prints, per preset, the median wall time and process CPU time of forward + backward + AdamW step
on a batch of the preset's batch_size (random tensors in the data contract's shapes, easy-VQA
sizes: 13 answers, 28 words), and samples/s. CPU time divided by wall time shows how much of the
machine the run got (other processes share it); samples per CPU-second is the figure that does
not depend on that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from model_batches import make_batch, make_meta  # noqa: E402
from vqatune.engine import config  # noqa: E402
from vqatune.engine.model import build_model  # noqa: E402


def measure(preset: str, steps: int) -> dict:
    cfg = config.load(preset)
    meta = make_meta("pixels", vocab=28, answers=13)
    torch.manual_seed(0)
    model = build_model(cfg, meta)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = make_batch(cfg, meta, batch=cfg.batch_size)
    walls, cpus = [], []
    for step in range(steps + 2):
        w0, c0 = time.perf_counter(), time.process_time()
        out = model(batch)
        loss, _ = model.loss(out, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= 2:  # the first steps warm up allocators and kernels
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {
        "preset": preset,
        "batch": cfg.batch_size,
        "wall_ms": wall * 1e3,
        "cpu_ms": cpu * 1e3,
        "samples_per_s": cfg.batch_size / wall,
        "samples_per_cpu_s": cfg.batch_size / cpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("presets", nargs="*", default=["smoke", "cpu-quick"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}"
    )
    for preset in args.presets:
        r = measure(preset, args.steps)
        print(
            f"{r['preset']:>12}: batch {r['batch']:3d}  fwd+bwd+step {r['wall_ms']:7.1f} ms wall "
            f"({r['cpu_ms']:7.1f} ms CPU)  {r['samples_per_s']:7.0f} samples/s  "
            f"{r['samples_per_cpu_s']:7.0f} samples/CPU-s"
        )


if __name__ == "__main__":
    main()
