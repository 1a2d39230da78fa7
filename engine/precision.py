"""Precision and memory: device choice, autocast, loss scaling, the CUDA memory cap, OOM.

- `mixed_precision`: autocast to bf16 where the device supports it (CPU, CUDA from Ampere on),
  else fp16 with a GradScaler (older CUDA GPUs). Without it, fp32 and a disabled scaler.
- `max_memory_usage`: torch.cuda.set_per_process_memory_fraction on the training device.
- Out-of-memory: `is_oom(exc)` recognises CUDA OOM errors; `oom_advice(cfg)` says what to change.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def pick_device(cfg) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return torch.device("cpu")


@dataclass(frozen=True)
class Precision:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None = fp32
    use_scaler: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.use_scaler)


def precision_for(cfg, device: torch.device) -> Precision:
    if not cfg.mixed_precision:
        return Precision(device, None, False)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return Precision(device, torch.float16, True)
    return Precision(device, torch.bfloat16, False)


def limit_memory(cfg, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(cfg.max_memory_usage, device)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def memory_stats(device: torch.device) -> dict:
    """Memory of this process for a step event: CUDA allocator figures, or RSS on CPU (MiB)."""
    mib = 2**20
    if device.type == "cuda":
        return {
            "device": str(device),
            "allocated_mb": round(torch.cuda.memory_allocated(device) / mib, 1),
            "reserved_mb": round(torch.cuda.memory_reserved(device) / mib, 1),
            "peak_mb": round(torch.cuda.max_memory_allocated(device) / mib, 1),
        }
    import psutil

    return {"device": "cpu", "rss_mb": round(psutil.Process().memory_info().rss / mib, 1)}


def oom_advice(cfg) -> str:
    """What to try after an out-of-memory error, in the guide's terms."""
    tips = []
    if cfg.batch_size > 1:
        half = max(1, cfg.batch_size // 2)
        tips.append(
            f"--batch_size {half} --gradient_accumulation_steps "
            f"{cfg.gradient_accumulation_steps * 2} (same effective batch)"
        )
    if not cfg.dynamic_batch_size:
        tips.append("--dynamic_batch_size")
    if not cfg.mixed_precision:
        tips.append("--mixed_precision")
    if not cfg.memory_efficient_attention:
        tips.append("--memory_efficient_attention")
    return (
        ("try the memory-optimized or 8gb preset, or " + ", ".join(tips))
        if tips
        else "try the memory-optimized or 8gb preset"
    )
