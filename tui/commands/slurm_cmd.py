"""`vqatune run --slurm ...`: the Slurm options of `run`, and submitting a created run."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from .common import fail


def options(
    slurm: bool,
    partition: str | None,
    gpus_per_node: int | None,
    nodes: int | None,
    time_limit: str | None,
    account: str | None,
    slurm_args: list[str] | None,
    switch: str = "--slurm",
):
    """The Slurm options given, or None without --slurm (then none of them may be given);
    switch: the option that asks for Slurm (`sweep --executor slurm`)."""
    from vqatune.engine import slurm as slurm_mod
    from vqatune.engine.config import ConfigError

    given = [
        flag
        for flag, value in (
            ("--partition", partition),
            ("--gpus-per-node", gpus_per_node),
            ("--nodes", nodes),
            ("--time", time_limit),
            ("--account", account),
            ("--slurm-arg", slurm_args),
        )
        if value
    ]
    if not slurm:
        if given:
            fail(f"{given[0]}: a Slurm option; add {switch} to submit to Slurm")
        return None
    try:
        if time_limit:
            slurm_mod.minutes(time_limit)  # checked now: nothing is created on a bad value
        return slurm_mod.Options(
            partition=partition,
            gpus_per_node=gpus_per_node or 1,
            nodes=nodes or 1,
            time=time_limit,
            account=account,
            extra=slurm_mod.parse_slurm_args(slurm_args or []),
        )
    except ConfigError as e:
        fail(str(e))


def submit(run_dir: Path, opts) -> None:
    """Submit a run that was just created; on failure the run directory is removed again."""
    from vqatune.engine import slurm as slurm_mod
    from vqatune.engine.config import ConfigError

    if shutil.which("sbatch") is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        fail("--slurm: sbatch is not on PATH (submit from a Slurm login node)")
    try:
        job_id = slurm_mod.submit(run_dir, opts)
    except ConfigError as e:
        shutil.rmtree(run_dir, ignore_errors=True)
        fail(str(e))
    typer.echo(run_dir.name)
    typer.echo(
        f"submitted as Slurm job {job_id}: `vqatune runs` shows its state, "
        f"`vqatune logs {run_dir.name} -f` follows it, `vqatune stop {run_dir.name}` cancels it",
        err=True,
    )
