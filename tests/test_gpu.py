"""GPU monitor: a fake pynvml stands in for a driver; the no-driver path never raises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest
from vqatune.engine import gpu

GIB = 1 << 30


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    def __str__(self):
        return "NVML Shared Library Not Found"


class NVMLError_NotSupported(NVMLError):
    pass


def fake_nvml(devices=(), init_error=None, count_error=None):
    """devices: (name, used, total, util or None, {pid: bytes})."""
    m = types.ModuleType("pynvml")
    m.shutdowns = 0

    def init():
        if init_error:
            raise init_error

    def count():
        if count_error:
            raise count_error
        return len(devices)

    def util(h):
        if devices[h][3] is None:
            raise NVMLError_NotSupported()
        return SimpleNamespace(gpu=devices[h][3], memory=0)

    def shutdown():
        m.shutdowns += 1

    m.nvmlInit = init
    m.nvmlShutdown = shutdown
    m.nvmlDeviceGetCount = count
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: devices[h][0]
    m.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(
        used=devices[h][1], total=devices[h][2], free=devices[h][2] - devices[h][1]
    )
    m.nvmlDeviceGetUtilizationRates = util
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in devices[h][4].items()
    ]
    m.nvmlDeviceGetGraphicsRunningProcesses = lambda h: [SimpleNamespace(pid=1, usedGpuMemory=None)]
    return m


def test_no_driver_is_one_clear_state(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(init_error=NVMLError_LibraryNotFound()))
    snap = gpu.sample(os.getpid())
    assert snap.gpus == []
    assert snap.no_gpu == "no NVIDIA GPU (NVML Shared Library Not Found)"
    assert snap.rss > 0 and snap.system_memory_total > 0
    assert gpu.suggest_preset(snap) is None


def test_without_nvidia_ml_py(monkeypatch):
    def missing():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(gpu, "_nvml", missing)
    assert gpu.sample().no_gpu == "no NVIDIA GPU (nvidia-ml-py is not installed)"


def test_this_machine_never_raises():
    snap = gpu.sample(os.getpid())
    assert bool(snap.gpus) != bool(snap.no_gpu)
    assert snap.to_dict()["pid"] == os.getpid()


def test_gpus_memory_utilisation_and_process_memory(monkeypatch):
    me = os.getpid()
    fake = fake_nvml(
        [
            (b"NVIDIA A100-SXM4-80GB", 10 * GIB, 80 * GIB, 55, {me: 3 * GIB, 99: GIB}),
            ("NVIDIA GeForce RTX 3090", 1 * GIB, 24 * GIB, None, {}),
        ]
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monitor = gpu.GPUMonitor()
    snap = monitor.sample(me)
    a100, rtx = snap.gpus
    assert (a100.name, a100.memory_used, a100.memory_total, a100.utilization) == (
        "NVIDIA A100-SXM4-80GB",
        10 * GIB,
        80 * GIB,
        55,
    )
    assert a100.process_memory == 3 * GIB and rtx.process_memory is None
    assert rtx.name == "NVIDIA GeForce RTX 3090" and rtx.utilization is None
    assert snap.no_gpu is None and snap.cpu_percent is None  # first sample primes psutil
    assert isinstance(monitor.sample(me).cpu_percent, float)
    monitor.close()
    assert fake.shutdowns == 1
    assert gpu.suggest_preset(snap) == "24gb"  # the smallest GPU decides


def test_driver_failing_mid_way_is_reported_not_raised(monkeypatch):
    fake = fake_nvml(count_error=NVMLError("GPU is lost"))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    snap = gpu.sample()
    assert snap.gpus == [] and snap.no_gpu == "no NVIDIA GPU (GPU is lost)"


def test_driver_without_devices(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([]))
    assert gpu.sample().no_gpu == "no NVIDIA GPU (the driver reports no devices)"


@pytest.mark.parametrize(
    "total_gib, preset",
    [
        (6, "8gb"),
        (8, "8gb"),
        (16, "8gb"),
        (24, "24gb"),
        (32, "24gb"),
        (40, "high-performance"),
        (80, "high-performance"),
        (141, "high-performance"),
    ],
)
def test_suggest_preset_by_memory(monkeypatch, total_gib, preset):
    fake = fake_nvml([("GPU", 0, total_gib * GIB - 300 * (1 << 20), 0, {})])  # as drivers report
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert gpu.suggest_preset() == preset


def test_dead_process_has_no_rss():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    snap = gpu.sample(proc.pid)
    assert snap.rss is None and snap.cpu_percent is None


def test_suggestion_explains_itself(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(init_error=NVMLError_LibraryNotFound()))
    assert gpu.suggestion() == (
        "cpu-quick",
        "no NVIDIA GPU (NVML Shared Library Not Found): cpu-quick trains on CPU",
    )
    monkeypatch.setitem(
        sys.modules,
        "pynvml",
        fake_nvml(
            [("NVIDIA A100 80GB", 0, 80 * GIB, 0, {}), ("NVIDIA RTX 4090", 0, 24 * GIB, 0, {})]
        ),
    )
    assert gpu.suggestion() == ("24gb", "2 GPUs, the smallest NVIDIA RTX 4090 with 24 GiB")


def test_presets_suggest_cli(monkeypatch):
    from typer.testing import CliRunner
    from vqatune.tui.cli import app

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(init_error=NVMLError_LibraryNotFound()))
    result = CliRunner().invoke(app, ["presets", "--suggest"])
    assert result.exit_code == 0 and result.stdout == "cpu-quick\n"
    assert "no NVIDIA GPU (NVML Shared Library Not Found)" in result.stderr

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([("NVIDIA L4", 0, 22 * GIB, 0, {})]))
    result = CliRunner().invoke(app, ["presets", "--suggest"])
    assert result.stdout == "24gb\n" and "NVIDIA L4 with 22 GiB" in result.stderr
    data = json.loads(CliRunner().invoke(app, ["presets", "--suggest", "--json"]).stdout)
    assert data["preset"] == "24gb" and data["gpus"][0]["memory_total"] == 22 * GIB
