"""GPU and process monitor: NVML (nvidia-ml-py) for GPUs, psutil for CPU and memory.

Without an NVIDIA driver (or without nvidia-ml-py) a snapshot says so in `no_gpu` and lists no
GPUs; no NVML error ever leaves this module.

Light module: no torch, no textual.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

NO_GPU = "no NVIDIA GPU"
GIB = 1 << 30


@dataclass
class GPUInfo:
    index: int
    name: str
    memory_used: int  # bytes
    memory_total: int
    utilization: int | None  # percent; None where the GPU does not report it
    process_memory: int | None = None  # bytes the watched pid holds on this GPU


@dataclass
class Snapshot:
    time: float
    gpus: list[GPUInfo] = field(default_factory=list)
    no_gpu: str | None = None  # "no NVIDIA GPU (reason)" when NVML is unavailable
    pid: int | None = None
    cpu_percent: float | None = None  # of the watched process (None on its first sample)
    rss: int | None = None  # bytes
    system_cpu_percent: float | None = None
    system_memory_used: int | None = None
    system_memory_total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nvml():
    import pynvml

    return pynvml


class GPUMonitor:
    """Samples GPUs and one process; keep one instance to get CPU percentages between samples."""

    def __init__(self) -> None:
        self._nvml = None
        self._no_gpu: str | None = None
        self._procs: dict[int, Any] = {}
        self._started = False

    def _init(self):
        if self._nvml is None and self._no_gpu is None:
            try:
                nvml = _nvml()
                nvml.nvmlInit()
                self._nvml = nvml
            except ImportError:
                self._no_gpu = f"{NO_GPU} (nvidia-ml-py is not installed)"
            except Exception as e:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
                self._no_gpu = f"{NO_GPU} ({_nvml_reason(e)})"
        return self._nvml

    def gpus(self, pid: int | None = None) -> list[GPUInfo]:
        nvml = self._init()
        if nvml is None:
            return []
        try:
            out = []
            for i in range(nvml.nvmlDeviceGetCount()):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                name = nvml.nvmlDeviceGetName(h)
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                out.append(
                    GPUInfo(
                        index=i,
                        name=name.decode() if isinstance(name, bytes) else str(name),
                        memory_used=int(mem.used),
                        memory_total=int(mem.total),
                        utilization=_optional(
                            lambda h=h: int(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
                        ),
                        process_memory=None if pid is None else _process_memory(nvml, h, pid),
                    )
                )
            return out
        except Exception as e:  # a driver that fails mid-way (GPU lost, reset): report, not raise
            self._no_gpu = f"{NO_GPU} ({_nvml_reason(e)})"
            self.close()
            return []

    def sample(self, pid: int | None = None) -> Snapshot:
        import psutil

        snap = Snapshot(time=time.time(), gpus=self.gpus(pid), pid=pid)
        snap.no_gpu = self._no_gpu if not snap.gpus else None
        if snap.no_gpu is None and not snap.gpus:
            snap.no_gpu = f"{NO_GPU} (the driver reports no devices)"
        if pid is not None:
            try:
                seen = pid in self._procs  # cpu_percent measures since the previous call
                proc = (
                    self._procs[pid] if seen else self._procs.setdefault(pid, psutil.Process(pid))
                )
                with proc.oneshot():
                    snap.rss = proc.memory_info().rss
                    percent = proc.cpu_percent(interval=None)
                snap.cpu_percent = percent if seen else None
            except psutil.Error:
                self._procs.pop(pid, None)
        snap.system_cpu_percent = psutil.cpu_percent(interval=None) if self._started else None
        self._started = True
        vm = psutil.virtual_memory()
        snap.system_memory_used, snap.system_memory_total = (
            int(vm.total - vm.available),
            int(vm.total),
        )
        return snap

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # shutting down a lost driver: nothing left to release
                pass
            self._nvml = None


def _nvml_reason(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _optional(read):
    try:
        return read()
    except Exception:  # NVMLError_NotSupported on some GPUs
        return None


def _process_memory(nvml, handle, pid: int) -> int | None:
    total = None
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        fn = getattr(nvml, getter, None)
        procs = _optional(lambda fn=fn: fn(handle)) if fn else None
        for p in procs or ():
            used = getattr(p, "usedGpuMemory", None)
            if getattr(p, "pid", None) == pid and isinstance(used, int):
                total = (total or 0) + used
    return total


def sample(pid: int | None = None) -> Snapshot:
    """One snapshot (CPU percentages need two samples of one GPUMonitor; here they are None)."""
    monitor = GPUMonitor()
    try:
        return monitor.sample(pid)
    finally:
        monitor.close()


def preset_for_memory(total_bytes: int) -> str:
    """The preset whose memory settings fit a GPU of this size (the guide's 8GB/24GB lines)."""
    gib = total_bytes / GIB
    if gib < 20:
        return "8gb"
    if gib < 36:  # 40 GB cards report a little less
        return "24gb"
    return "high-performance"


def suggest_preset(snapshot: Snapshot | None = None) -> str | None:
    """8gb / 24gb / high-performance from the smallest detected GPU (each DDP process holds a
    full replica); None without an NVIDIA GPU."""
    snapshot = snapshot or sample()
    if not snapshot.gpus:
        return None
    return preset_for_memory(min(g.memory_total for g in snapshot.gpus))


CPU_PRESET = "cpu-quick"


def suggestion(snapshot: Snapshot | None = None) -> tuple[str, str]:
    """(preset, why) for `vqatune presets --suggest`: a GPU preset from the smallest GPU's
    memory, or cpu-quick without an NVIDIA GPU."""
    snapshot = snapshot or sample()
    preset = suggest_preset(snapshot)
    if preset is None:
        return CPU_PRESET, f"{snapshot.no_gpu or NO_GPU}: {CPU_PRESET} trains on CPU"
    smallest = min(snapshot.gpus, key=lambda g: g.memory_total)
    count = f"{len(snapshot.gpus)} GPUs, the smallest " if len(snapshot.gpus) > 1 else ""
    return preset, f"{count}{smallest.name} with {smallest.memory_total / GIB:.0f} GiB"
