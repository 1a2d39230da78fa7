"""The truth on a GPU: throughput, peak memory, the memory cap, OOM recovery, NVML, nccl, fit.

    .venv/bin/python benchmarks/bench_gpu.py [--steps 20] [--presets 8gb,24gb,high-performance]

On a machine without CUDA it says so and exits 0. On a CUDA machine (aim: under 8 minutes) it
prints one table and a few checks:
- for each preset on synthetic GQA-format data (dataset = "synthetic", the preset's model
  sizes), with mixed precision off and on: samples/s over `steps` training steps after two
  warm-up steps, torch's peak allocated memory, NVML's reading of this process beside torch's
  reserved memory, and `vqatune fit`'s predicted peak with its error;
- max_memory_usage honoured: with the fraction set to 0.5, an allocation of 0.6 of the GPU
  must raise torch.cuda.OutOfMemoryError;
- a forced out-of-memory error (VQATUNE_FAULTS=oom@3) under dynamic_batch_size: the run must
  end done with a batch_resized event that keeps the effective batch;
- a 1-process nccl DDP smoke: all_reduce and one DDP forward/backward.
Each check prints PASS or FAIL with what it saw; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 2**20


def train_variant(preset: str, mixed: bool, steps: int) -> dict:
    import torch
    from vqatune.engine import config, data, fit, gpu, optim, precision, seeding
    from vqatune.engine.model import build_model

    cfg = config.load(
        preset,
        [
            "dataset=synthetic",
            "device=cuda",
            f"mixed_precision={str(mixed).lower()}",
            "update_freq=1",
            "gradient_accumulation_steps=1",
            f"train_limit={(steps + 2) * 512}",
            "eval_limit=8",
            "num_workers=0",
        ],
    )
    seeding.seed_everything(cfg.seed)
    device = precision.pick_device(cfg)
    torch.cuda.set_per_process_memory_fraction(1.0, device)
    torch.cuda.empty_cache()
    bundle = data.build(cfg)
    model = build_model(cfg, bundle.meta).to(device).train()
    prec = precision.precision_for(cfg, device)
    scaler = prec.scaler()
    opt = optim.build(model.param_groups(), cfg, steps + 2)
    loader = data.make_loader(bundle.train, cfg, train=True, seed=cfg.seed, epoch=0)
    batches = _forever(loader)  # the synthetic set may hold fewer batches than steps
    torch.cuda.reset_peak_memory_stats(device)
    started = None
    for i in range(steps + 2):
        if i == 2:  # after warm-up (cuDNN/cuBLAS heuristics, allocator growth)
            torch.cuda.synchronize(device)
            started = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        opt.zero_grad()
        with prec.autocast():
            loss, _ = model.loss(model(batch), batch)
        scaler.scale(loss).backward()
        opt.unscale(scaler)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step(scaler)
    torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device)
    reserved = torch.cuda.memory_reserved(device)
    snap = gpu.sample(os.getpid())
    nvml = next((g.process_memory for g in snap.gpus if g.index == device.index), None)
    measured = fit.measure(cfg)
    predicted = fit.peak_bytes(measured, cfg, cfg.batch_size)
    del model, opt, batches, loader
    torch.cuda.empty_cache()
    return {
        "preset": preset,
        "precision": prec.name,
        "batch": cfg.batch_size,
        "samples_per_s": steps * cfg.batch_size / elapsed,
        "peak_mib": peak / MIB,
        "reserved_mib": reserved / MIB,
        "nvml_mib": None if nvml is None else nvml / MIB,
        "fit_mib": predicted / MIB,
        "fit_error": (predicted - peak) / peak,
    }


def _forever(loader):
    while True:
        yield from loader


def check_memory_fraction() -> tuple[bool, str]:
    import torch

    device = torch.device("cuda", torch.cuda.current_device())
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(0.5, device)
    try:
        x = torch.empty(int(0.6 * total), dtype=torch.uint8, device=device)
        del x
        return False, "an allocation of 0.6 of the GPU succeeded under max_memory_usage 0.5"
    except torch.cuda.OutOfMemoryError:
        return True, "an allocation of 0.6 of the GPU failed under max_memory_usage 0.5"
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


def check_oom_recovery() -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as runs:
        env = dict(os.environ, VQATUNE_FAULTS="oom@3")
        cmd = [sys.executable, "-m", "vqatune.tui.cli", "run", "smoke", "--runs-dir", runs]
        cmd += ["--set", "device=cuda", "--set", "dynamic_batch_size=true"]
        cmd += ["--set", "max_steps=6", "--set", "batch_size=8"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        run_dir = next(Path(runs).iterdir(), None)
        if run_dir is None:
            return False, f"no run directory (exit {proc.returncode}): {proc.stderr[-300:]}"
        log = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
        summary = json.loads((run_dir / "summary.json").read_text())
    resized = [e for e in log if e["event"] == "batch_resized"]
    start = log[0]
    ok = (
        summary["state"] == "done"
        and len(resized) == 1
        and resized[0]["new_batch_size"] * resized[0]["accumulation"]
        == start["batch_size"] * start["accumulation"]
    )
    return ok, f"state {summary['state']}, batch_resized {resized}"


def check_nccl() -> tuple[bool, str]:
    import torch
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    device = torch.device("cuda", torch.cuda.current_device())
    dist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1, device_id=device
    )
    try:
        x = torch.ones(4, device=device)
        dist.all_reduce(x)
        model = torch.nn.parallel.DistributedDataParallel(
            torch.nn.Linear(8, 2).to(device), device_ids=[device.index]
        )
        model(torch.randn(3, 8, device=device)).sum().backward()
        torch.cuda.synchronize(device)
        ok = bool((x == 1).all()) and model.module.weight.grad is not None
        return ok, f"all_reduce {x.tolist()}, DDP backward gave gradients: {ok}"
    finally:
        dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--presets", default="8gb,24gb,high-performance")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__}): nothing to measure on this machine")
        return 0
    name = torch.cuda.get_device_name()
    total = torch.cuda.get_device_properties(0).total_memory
    print(f"{name}, {total / 2**30:.1f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
    header = (
        f"{'preset':<17}{'precision':<10}{'batch':>6}{'samples/s':>11}{'peak MiB':>10}"
        f"{'reserved':>10}{'NVML MiB':>10}{'fit MiB':>9}{'fit err':>9}"
    )
    print(header)
    failed = False
    for preset in args.presets.split(","):
        for mixed in (False, True):
            try:
                r = train_variant(preset, mixed, args.steps)
            except torch.cuda.OutOfMemoryError as e:
                print(f"{preset:<17}{'mixed' if mixed else 'fp32':<10} out of memory: {e}")
                torch.cuda.empty_cache()
                continue
            nvml = "-" if r["nvml_mib"] is None else f"{r['nvml_mib']:.0f}"
            print(
                f"{r['preset']:<17}{r['precision']:<10}{r['batch']:>6}{r['samples_per_s']:>11.1f}"
                f"{r['peak_mib']:>10.0f}{r['reserved_mib']:>10.0f}{nvml:>10}"
                f"{r['fit_mib']:>9.0f}{r['fit_error']:>+9.0%}",
                flush=True,
            )
    for label, check in (
        ("max_memory_usage", check_memory_fraction),
        ("OOM recovery", check_oom_recovery),
        ("nccl DDP", check_nccl),
    ):
        try:
            ok, detail = check()
        except Exception as e:  # noqa: BLE001 - a check that crashes is a failed check
            ok, detail = False, f"{type(e).__name__}: {e}"
        failed |= not ok
        print(f"{'PASS' if ok else 'FAIL'} {label}: {detail}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
