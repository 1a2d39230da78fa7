"""GQA loader throughput: samples/s over 100k synthetic questions, 50 boxes x 2048 float16 features.

    python benchmarks/bench_loader.py [--workers 0 2] [--batches 300] [--root DIR]

Writes the data set once (about 1 GB, official GQA layout) under the vqatune cache, then times
the training loader (shuffled, so HDF5 reads are random) for each worker count.
Goal: at least 2,000 samples/s on 2 cores. Prints samples/s and the ratio to the goal, and for
workers=0 the samples per CPU-second (steadier than wall-clock time on a busy machine).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vqatune.engine.config import Config
from vqatune.engine.data import build, make_loader, synth
from vqatune.engine.data.common import cache_dir

GOAL = 2000.0
IMAGES, QUESTIONS_PER_IMAGE, BOXES, DIM = 5000, 20, 50, 2048


def ensure_data(root: Path) -> Path:
    if not (root / "gqa_objects_info.json").is_file():
        t = time.perf_counter()
        synth.write(
            root,
            "gqa",
            images=IMAGES,
            seed=0,
            questions_per_image=QUESTIONS_PER_IMAGE,
            feature_dim=DIM,
            boxes=BOXES,
            dtype="float16",
        )
        print(f"wrote {root} in {time.perf_counter() - t:.0f} s")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=cache_dir() / "bench-gqa-100k")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=300, help="batches timed per setting")
    args = parser.parse_args()
    root = ensure_data(args.root)
    cfg = Config().replace(
        dataset="gqa",
        data_root=str(root),
        max_boxes=BOXES,
        batch_size=args.batch_size,
        tfidf=False,
        allow_dropped=False,
    )
    t = time.perf_counter()
    bundle = build(cfg)
    n = len(bundle.train) + len(bundle.eval)
    print(
        f"build: {n:,} questions in {time.perf_counter() - t:.1f} s; regions "
        f"{BOXES} x {bundle.meta.feature_dim} float16"
    )
    for workers in args.workers:
        loader = make_loader(
            bundle.train, cfg.replace(num_workers=workers), train=True, seed=0, epoch=0
        )
        it = iter(loader)
        next(it)  # start-up (worker processes, file handles) is not throughput
        samples, t, cpu = 0, time.perf_counter(), time.process_time()
        for _, batch in zip(range(args.batches), it):
            samples += len(batch["label"])
        rate = samples / (time.perf_counter() - t)
        line = (
            f"workers={workers}: {rate:,.0f} samples/s  (goal {GOAL:,.0f}: ratio {rate / GOAL:.2f})"
        )
        if workers == 0:  # CPU time is all in this process: a figure other load disturbs less
            per_cpu = samples / (time.process_time() - cpu)
            line += f"; {per_cpu:,.0f} samples per CPU-second"
        print(line)


if __name__ == "__main__":
    main()
