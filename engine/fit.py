"""Will a config fit on a GPU? An analytic model of the peak GPU memory of a training step.

    peak = weights + gradients + optimiser states + activations(batch_size) [+ DDP buckets]

- weights: 4 bytes a parameter (fp32 master weights; under mixed precision autocast's half
  copies of the weights are per-forward tensors and land in the activation term);
- gradients: 4 bytes a trainable parameter; with accumulation they live while the next
  micro-batches run forward, so they add to the activations;
- optimiser states: Adamax (heads) and AdamW (backbone) keep two fp32 tensors a parameter;
- DDP (nproc_per_node > 1): its gradient buckets, one more fp32 copy of the gradients;
- activations: what autograd keeps for backward at the end of the forward pass, measured by one
  real forward on CPU at a small batch (the bytes of every tensor saved for backward, each
  storage once, parameters left out), at batch 2 and 4 with the same samples: a + b x batch.
  Mixed precision is measured under bf16 autocast (fp16 has the same size); activation
  checkpointing (memory_efficient_attention) keeps only what the checkpointed layers' inputs
  need; SDPA's saved tensors are what the CPU kernel saves.

The verdict compares the peak with `max_memory_usage` x the GPU's memory: "fits" below 90% of
that limit (room for the allocator's fragmentation), "tight" up to it, else "does not fit".

The measuring part needs torch and runs in its own process (`python -m vqatune.engine.fit
CONFIG [--set k=v]...` prints its JSON); `verdict` and `largest_batch` are light (the CLI and
the TUI call them without importing torch).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

GIB = 1 << 30
GPU_SIZES = {"8GB": 8 * GIB, "24GB": 24 * GIB, "48GB": 48 * GIB, "80GB": 80 * GIB}
MEASURE_BATCHES = (2, 4)
TIGHT_FROM = 0.9  # of the limit: above it the allocator's fragmentation may tip it over
FP32 = 4
OPTIMISER_STATES = 2  # Adamax: exp_avg, exp_inf; AdamW: exp_avg, exp_avg_sq


def measure(cfg) -> dict:
    """Parameter counts and the activation term of `cfg`, from forwards on CPU."""
    import torch

    from . import data, seeding
    from .model import build_model

    small = cfg.replace(device="cpu", train_limit=max(MEASURE_BATCHES), eval_limit=1, num_workers=0)
    seeding.seed_everything(cfg.seed)
    bundle = data.build(small)
    model = build_model(small, bundle.meta)
    model.train()
    loader = data.make_loader(
        bundle.train, small, train=True, seed=cfg.seed, epoch=0, batch_size=MEASURE_BATCHES[0]
    )
    base = next(iter(loader))
    saved = {}
    for size in MEASURE_BATCHES:
        copies = size // MEASURE_BATCHES[0]  # the same samples again: the same padding
        batch = {k: torch.cat([v] * copies) for k, v in base.items()}
        saved[size] = saved_bytes(model, batch, cfg.mixed_precision)
    b1, b2 = MEASURE_BATCHES
    per_sample = max(0.0, (saved[b2] - saved[b1]) / (b2 - b1))
    groups = model.param_groups()
    trainable_heads = sum(p.numel() for p in groups["heads"] if p.requires_grad)
    backbone = sum(p.numel() for p in groups["backbone"])
    trainable = trainable_heads + (backbone if cfg.xvlm_lr > 0 else 0)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": trainable,
        "activation_fixed_bytes": max(0.0, saved[b1] - per_sample * b1),
        "activation_per_sample_bytes": per_sample,
        "measured_at": {str(k): v for k, v in saved.items()},
    }


def saved_bytes(model, batch: dict, mixed_precision: bool) -> int:
    """Bytes autograd keeps for backward after one forward and loss (each storage once, no
    parameters), the forward's graph then dropped."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params and t.device.type != "meta":
            storages[s.data_ptr()] = s.nbytes()
        return t

    # Activation checkpointing saves nothing inside a checkpointed layer (its own hooks take
    # those tensors) but keeps the layer's inputs for the recomputation: count them.
    wrapped = []
    for module in model.modules():
        run = getattr(module, "_gradient_checkpointing_func", None)
        if run is not None:
            wrapped.append((module, run))
            module._gradient_checkpointing_func = _recording(run, pack)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed_precision)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
            out = model(batch)
            loss, _ = model.loss(out, batch)
    finally:
        for module, run in wrapped:
            module._gradient_checkpointing_func = run
    del loss, out
    return sum(storages.values())


def _recording(run, pack):
    import torch

    def checkpointed(function, *args, **kwargs):
        bound = getattr(function, "keywords", {})  # transformers passes a partial
        for a in (*args, *kwargs.values(), *bound.values()):
            if isinstance(a, torch.Tensor):
                pack(a)
        return run(function, *args, **kwargs)

    return checkpointed


def static_bytes(m: dict, cfg) -> float:
    """Weights, gradients, optimiser states and DDP buckets: independent of the batch size."""
    grads = FP32 * m["trainable_params"]
    ddp = grads if cfg.nproc_per_node > 1 or cfg.nnodes > 1 else 0
    return FP32 * m["params"] + grads + OPTIMISER_STATES * grads + ddp


def peak_bytes(m: dict, cfg, batch_size: int) -> float:
    activations = m["activation_fixed_bytes"] + m["activation_per_sample_bytes"] * batch_size
    return static_bytes(m, cfg) + activations


def largest_batch(m: dict, cfg, limit: float) -> int:
    """The largest micro-batch whose peak stays under TIGHT_FROM x limit (0 if none)."""
    room = TIGHT_FROM * limit - static_bytes(m, cfg) - m["activation_fixed_bytes"]
    per = m["activation_per_sample_bytes"]
    if room < per:
        return 0
    return int(room // per) if per > 0 else 1 << 20


def keep_effective(cfg, largest: int) -> tuple[int, int] | None:
    """(batch_size, gradient_accumulation_steps) with the config's effective batch and the
    largest micro-batch <= largest that divides it; None when not even 1 fits."""
    per_update = cfg.batch_size * cfg.gradient_accumulation_steps  # update_freq stays
    for b in range(min(largest, per_update), 0, -1):
        if per_update % b == 0:
            return b, per_update // b
    return None


def verdict(m: dict, cfg, gpu_bytes: int, gpu_name: str) -> dict:
    limit = cfg.max_memory_usage * gpu_bytes
    peak = peak_bytes(m, cfg, cfg.batch_size)
    state = "fits" if peak <= TIGHT_FROM * limit else "tight" if peak <= limit else "does not fit"
    largest = largest_batch(m, cfg, limit)
    suggestion = keep_effective(cfg, largest)
    static = static_bytes(m, cfg)
    parts = {
        "weights": FP32 * m["params"],
        "gradients": FP32 * m["trainable_params"],
        "optimiser": OPTIMISER_STATES * FP32 * m["trainable_params"],
    }
    parts["ddp_buckets"] = static - sum(parts.values())
    parts["activations"] = peak - static
    return {
        "gpu": gpu_name,
        "gpu_bytes": gpu_bytes,
        "limit_bytes": limit,
        "peak_bytes": peak,
        "parts_bytes": parts,
        "verdict": state,
        "largest_batch_size": largest,
        "suggested": (
            {"batch_size": suggestion[0], "gradient_accumulation_steps": suggestion[1]}
            if suggestion
            else None
        ),
    }


def summary_line(v: dict, batch_size: int) -> str:
    """One line: '24GB: 7.9 GiB of 19.2 GiB at batch 32: fits (largest batch 96)'."""
    s = v["suggested"]
    advice = ""
    if v["verdict"] != "fits" and s:
        advice = (
            f"; --batch_size {s['batch_size']} "
            f"--gradient_accumulation_steps {s['gradient_accumulation_steps']} keeps the "
            "effective batch"
        )
    elif not s:
        advice = "; not even batch 1 fits"
    return (
        f"{v['gpu']}: {v['peak_bytes'] / GIB:.2f} GiB of {v['limit_bytes'] / GIB:.1f} GiB "
        f"at batch {batch_size}: {v['verdict']} (largest batch {v['largest_batch_size']}){advice}"
    )


def parse_gpu(text: str) -> int:
    """'24GB' (or '24') -> bytes (GiB, as GPU memory is sold)."""
    key = text.strip().upper()
    if key in GPU_SIZES:
        return GPU_SIZES[key]
    try:
        size = float(key.removesuffix("GB"))
    except ValueError:
        size = math.nan
    if not size > 0:
        raise ValueError(f"--gpu: {text!r} is not one of {', '.join(GPU_SIZES)} or detect")
    return int(size * GIB)


class FitError(Exception):
    """The measurement could not run (a config error, or the measuring process failed)."""


class FitCancelled(FitError):
    """The caller gave up on the measurement (a newer config to judge); its process is gone."""


CANCEL_POLL_S = 0.2

# What only the verdict reads (or measure() replaces): a config that differs from another only
# in these needs no new measurement (the TUI re-judges a batch_size edit at once).
VERDICT_ONLY = (
    "batch_size",
    "gradient_accumulation_steps",
    "update_freq",
    "max_memory_usage",
    "nproc_per_node",
    "nnodes",
    "node_rank",
    "rdzv_endpoint",
    "device",
    "num_workers",
    "epochs",
    "max_steps",
    "name",
    "output",
)


def measure_input(cfg):
    """The config measure() sees: the verdict-only parameters at their defaults, so that two
    configs with equal measure_input have equal measurements (a cache key)."""
    from .config import Config

    defaults = Config()
    return cfg.replace(**{name: getattr(defaults, name) for name in VERDICT_ONLY})


def run_measure(source: str | None, sets=(), timeout: float = 600, cancelled=None) -> dict:
    """measure() in a fresh process (torch stays out of the caller): the CLI's and the TUI's
    way in. Raises FitError with a one-line reason; FitCancelled (the process killed) as soon as
    `cancelled()` holds."""
    import subprocess
    import time

    cmd = [sys.executable, "-m", "vqatune.engine.fit"]
    cmd += [source] if source else []
    for item in sets:
        cmd += ["--set", item]
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=CANCEL_POLL_S)
            break
        except subprocess.TimeoutExpired:
            gave_up = cancelled is not None and cancelled()
            if gave_up or time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                if gave_up:
                    raise FitCancelled("measurement cancelled") from None
                raise FitError(f"measuring the config took over {timeout:.0f} s") from None
    lines = stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        raise FitError(f"measuring the config failed: {tail}") from None
    if "error" in result:
        raise FitError(result["error"])
    return result


def gpu_targets(gpu: str | None) -> list[tuple[str, int]]:
    """(name, bytes) to judge against: a size ("24GB"), the detected GPUs ("detect"), or with
    no choice the detected GPUs, else every size of GPU_SIZES."""
    if gpu is not None and gpu.lower() != "detect":
        return [(gpu.upper(), parse_gpu(gpu))]
    from .gpu import sample

    snapshot = sample()
    found = [(f"GPU {g.index} {g.name}", g.memory_total) for g in snapshot.gpus]
    if found or gpu is None:
        return found or list(GPU_SIZES.items())
    raise ValueError(f"--gpu detect: {snapshot.no_gpu}; name a size: {', '.join(GPU_SIZES)}")


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError, load

    ap = argparse.ArgumentParser(description="Measure a config's memory terms (prints JSON).")
    ap.add_argument("config", nargs="?")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args(argv)
    try:
        cfg = load(args.config, args.sets)
        result = measure(cfg)
    except ConfigError as e:
        print(json.dumps({"error": str(e).splitlines()[0]}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
