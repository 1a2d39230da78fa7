"""The blocking work behind the screens (files, GPU query, processes), as plain functions.

Screens call these from thread workers only; they talk to the engine's torch-free modules and
never to widgets, so they are tested without an app.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vqatune.engine import config as config_mod
from vqatune.engine.config import Config, ConfigError

PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def presets() -> list[tuple[str, str]]:
    """(name, title) of every preset, built-in order first."""
    return [(p.name, p.title) for p in config_mod.list_presets()]


def gpu_suggestion() -> tuple[str | None, str]:
    """The preset suggested for this machine's GPUs (cpu-quick without one) and why."""
    from vqatune.engine import gpu

    return gpu.suggestion()


def resolve(source: str) -> config_mod.Resolved:
    """A preset name or a TOML path -> its resolved config (ConfigError on a user mistake)."""
    return config_mod.resolve(source)


def save_preset(cfg: Config, name: str, title: str = "", directory: Path | None = None) -> Path:
    """Write cfg as a standalone preset (its differences from the defaults) in the user's presets."""
    name = name.strip()
    if name.endswith(config_mod.PRESET_SUFFIX):
        name = name[: -len(config_mod.PRESET_SUFFIX)]
    if not PRESET_NAME.match(name):
        raise ConfigError(f"preset name {name!r}: use letters, digits, '.', '_' or '-'")
    directory = directory or config_mod.user_presets_dir()
    path = directory / (name + config_mod.PRESET_SUFFIX)
    if path.exists():
        raise ConfigError(f"{path}: already exists; choose another name")
    directory.mkdir(parents=True, exist_ok=True)
    config_mod.write_atomic(path, config_mod.dumps(cfg, title=title.strip()))
    return path


def _create_run(cfg: Config, source: str, overrides: dict, runs_dir: Path | None) -> Path:
    from vqatune.engine import runstore

    return runstore.create_run(
        cfg,
        source=source,
        name=cfg.name,
        runs_dir=runs_dir,
        overrides=overrides,
        argv=["vqatune", "tui"],
        output=cfg.output or None,
    )


def launch(cfg: Config, source: str, overrides: dict, runs_dir: Path | None = None) -> Path:
    """Create the run directory and start training detached; the run outlives the TUI."""
    from vqatune.engine import runstore

    run_dir = _create_run(cfg, source, overrides, runs_dir)
    runstore.launch(run_dir, detach=True)
    return run_dir


# ----------------------------------------------------------------------------------------------
# The run queue (engine/queue.py)


def enqueue(
    cfg: Config, source: str, overrides: dict, runs_dir: Path | None = None
) -> tuple[Path, int]:
    """`vqatune run --queue`: create the run `queued`, put it at the end of the store's line and
    make sure a queue worker serves the store. Returns (run directory, its position)."""
    from vqatune.engine import queue

    run_dir = _create_run(cfg, source, overrides, runs_dir)
    return run_dir, queue.submit(run_dir, runs_dir)


def queue_reason(cfg: Config, runs_dir: Path | None = None) -> str | None:
    """Why a launch of cfg should wait in the queue rather than start now: the GPUs it would
    take (cuda:0 up, one a process) are held by a live run of the store, or runs already wait in
    line for a GPU (starting now would jump it). None: start it now (also on CPU)."""
    from vqatune.engine import gpu, queue, runstore

    if cfg.device == "cpu" or not gpu.sample().gpus:
        return None
    store = Path(runs_dir) if runs_dir else runstore.default_runs_dir()
    waiting = len(queue.read(store)["order"])
    if waiting:
        return f"{waiting} run{'s' * (waiting > 1)} already wait{'s' * (waiting == 1)} for a GPU"
    wanted = {str(i) for i in range(max(1, cfg.nproc_per_node))}
    busy = sorted(wanted & queue.held_gpus(store), key=int)
    if busy:
        return f"GPU {','.join(busy)} {'is' if len(busy) == 1 else 'are'} held by another run"
    return None


# ----------------------------------------------------------------------------------------------
# Will it fit? (engine/fit.py)


@dataclass(frozen=True)
class FitLine:
    text: str  # the Configure top bar's few words
    detail: str  # its tooltip: one line per GPU judged, or the whole reason
    verdict: str | None = None  # fits / tight / does not fit (engine/fit.py), None: not judged


def _size(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def fit_gpus() -> list[tuple[str, int]]:
    """(name, bytes) of the detected GPUs, as `vqatune fit --gpu detect` names them; [] when
    there is none."""
    from vqatune.engine import fit as fitting

    try:
        return fitting.gpu_targets("detect")
    except ValueError:
        return []


def measure_fit(cfg: Config, cancelled: Callable[[], bool] | None = None) -> dict:
    """engine/fit.py's measurement of cfg in its own process (cfg travels as a TOML file)."""
    from vqatune.engine import fit as fitting

    with tempfile.TemporaryDirectory(prefix="vqatune-fit-") as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(config_mod.dumps(cfg, full=True))
        return fitting.run_measure(str(path), cancelled=cancelled)


def judge_fit(
    cfg: Config,
    cache: dict[str, dict],
    cancelled: Callable[[], bool] | None = None,
    measuring: Callable[[], None] = lambda: None,
) -> FitLine:
    """The top bar's verdict for cfg on the GPU it would train on: the detected GPU (the
    smallest of the first nproc_per_node), or without one and device = cuda the smallest of
    8/24/48/80 GB that fits. A CPU run is not judged. `cache` (measure_input TOML -> measured)
    spares the measuring process when only the batch or memory settings changed; `measuring`
    is called before that process starts. Raises FitCancelled once `cancelled()` holds."""
    from vqatune.engine import fit as fitting

    if cfg.device == "cpu":
        return FitLine("fit: trains on CPU", "device = cpu: GPU memory does not matter")
    gpus = fit_gpus()
    if not gpus and cfg.device == "auto":
        return FitLine(
            "fit: trains on CPU (no GPU)",
            "device = auto finds no NVIDIA GPU here, so the run trains on CPU; "
            "with device = cuda the bar judges it for 8, 24, 48 and 80 GB GPUs",
        )
    inputs = fitting.measure_input(cfg)
    key = config_mod.dumps(inputs, full=True)
    if key not in cache:
        measuring()
        try:
            cache[key] = measure_fit(inputs, cancelled)
        except fitting.FitCancelled:
            raise
        except fitting.FitError as e:
            return FitLine(f"fit: ✗ {e}", str(e))
    measured = cache[key]
    if gpus:
        used = gpus[: max(1, cfg.nproc_per_node)]  # each process holds a full replica
        index = min(range(len(used)), key=lambda i: used[i][1])
        judged = [fitting.verdict(measured, cfg, used[index][1], used[index][0])]
        label = f"GPU {index}"  # the full name is in the tooltip
    else:
        judged = [fitting.verdict(measured, cfg, b, n) for n, b in fitting.GPU_SIZES.items()]
        label = None
    shown = next(
        (v for state in ("fits", "tight") for v in judged if v["verdict"] == state), judged[-1]
    )
    largest = shown["largest_batch_size"]
    text = (
        f"fit {label or shown['gpu']}: {shown['verdict']} · {_size(shown['peak_bytes'])} of "
        f"{_size(shown['limit_bytes'])}"
        + (f" · batch ≤ {largest}" if largest else " · not even batch 1")
    )
    lines = [fitting.summary_line(v, cfg.batch_size) for v in judged]
    return FitLine(text, "\n".join(lines), shown["verdict"])
