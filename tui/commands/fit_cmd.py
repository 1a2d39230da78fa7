"""`vqatune fit CONFIG [--gpu 8GB|24GB|48GB|80GB|detect]`: will the config fit on the GPU?"""

from __future__ import annotations

import typer

from .common import SetOption, console, fail, print_json, user_errors


def fit(
    source: str = typer.Argument(..., metavar="PRESET|FILE", help="Preset name or TOML file."),
    sets: list[str] | None = SetOption,
    gpu: str | None = typer.Option(
        None,
        "--gpu",
        help="8GB, 24GB, 48GB, 80GB or detect (default: the detected GPUs, else every size).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the prediction as JSON."),
) -> None:
    """Predicted peak GPU memory of a training step, the verdict at max_memory_usage, and the
    largest batch_size that fits (with the accumulation that keeps the effective batch)."""
    from vqatune.engine import config
    from vqatune.engine import fit as fitting

    with user_errors():
        cfg = config.load(source, sets or ())
    try:
        targets = fitting.gpu_targets(gpu)
        measured = fitting.run_measure(source, sets or ())
    except (ValueError, fitting.FitError) as e:
        fail(str(e))
    verdicts = [fitting.verdict(measured, cfg, size, name) for name, size in targets]
    if as_json:
        print_json({"measured": measured, "verdicts": verdicts})
        return
    out = console()
    out.print(
        f"{measured['params']:,} parameters ({measured['trainable_params']:,} trained); "
        f"activations {measured['activation_per_sample_bytes'] / 2**20:.2f} MiB a sample "
        f"(+ {measured['activation_fixed_bytes'] / 2**20:.1f} MiB), measured on CPU"
    )
    parts = verdicts[0]["parts_bytes"]
    out.print(
        f"at batch_size {cfg.batch_size}: "
        + ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in parts.items() if v)
    )
    for v in verdicts:
        out.print(fitting.summary_line(v, cfg.batch_size))


def warning_for(source: str, sets, cfg) -> str | None:
    """One line when the config will not fit on this machine's GPU, else None (no GPU, CPU
    training, or a failed measurement: the launch goes on)."""
    if cfg.device == "cpu":
        return None
    from vqatune.engine import fit as fitting

    try:
        targets = fitting.gpu_targets("detect")
        measured = fitting.run_measure(source, sets)
    except (ValueError, fitting.FitError):
        return None
    for name, size in targets:
        v = fitting.verdict(measured, cfg, size, name)
        if v["verdict"] == "does not fit":
            return f"this config will not fit: {fitting.summary_line(v, cfg.batch_size)}"
    return None


def register(app: typer.Typer) -> None:
    app.command("fit")(fit)
