"""Run in a fresh process by test_fit.py: one real CPU training forward+backward per config;
prints one JSON line per config with the RSS increase at the end of the forward (where the
step's activations peak) and the activation term vqatune.engine.fit predicts for the same batch
size.

    python tests/fit_rss_probe.py BATCH CONFIG '[["k=v", ...], ...]'

torch and the model code are imported once; each config is measured in a child forked from
that, so every measurement starts from the same fresh heap. Large allocations must go to mmap
and back on free (MALLOC_MMAP_THRESHOLD_ set by the test), so that the resident size follows
the live tensors rather than glibc's cached heap.
"""

from __future__ import annotations

import json
import os
import sys

import psutil
import torch
from vqatune.engine import config, data, fit, seeding
from vqatune.engine.model import build_model


def probe(batch_size: int, source: str, sets: list[str]) -> dict:
    cfg = config.load(source, [*sets, f"batch_size={batch_size}", f"train_limit={batch_size}"])
    seeding.seed_everything(cfg.seed)
    bundle = data.build(cfg)
    model = build_model(cfg, bundle.meta).train()
    loader = data.make_loader(bundle.train, cfg, train=True, seed=cfg.seed, epoch=0)
    batch = next(iter(loader))
    process = psutil.Process()
    before = process.memory_info().rss
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.mixed_precision):
        loss, _ = model.loss(model(batch), batch)
    increase = process.memory_info().rss - before
    loss.backward()
    m = fit.measure(cfg)
    predicted = m["activation_fixed_bytes"] + m["activation_per_sample_bytes"] * batch_size
    return {"sets": sets, "rss_increase": increase, "predicted": predicted}


def main() -> None:
    batch_size, source, all_sets = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    for sets in all_sets:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                print(json.dumps(probe(batch_size, source, sets)), flush=True)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"probe of {sets} failed")


if __name__ == "__main__":
    main()
