"""`vqatune run PRESET|FILE`, `vqatune train [guide flags]` and `vqatune attach [RUN]`.

`run` and `train` create a run directory (engine.runstore.create_run) and start the training
process in its own session (runstore.launch), so that nothing that happens to the terminal
reaches it; unless --detach they then follow it: a progress bar fed by the run's metrics.jsonl
and status.json until the process ends. `attach` is the same follower for a run already going.
Exit codes: 0 done, 1 failed/diverged/oom, 2 bad config (nothing created), 130 interrupted
(Ctrl-C stops the run cleanly: checkpoint, `stopped`; a second Ctrl-C leaves it running), 129
the terminal went away (the run goes on).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from pathlib import Path

import typer
from vqatune.engine import exitcodes
from vqatune.tui import display

from .common import RunsDirOption, SetOption, fail, quiet_on_hangup, user_errors, warn

POLL_S = 0.25

DetachOption = typer.Option(
    False, "--detach", "-d", help="Start the run in the background, print its id and return."
)
QueueOption = typer.Option(
    False, "--queue", "-q", help="Queue the run: it starts when a GPU is free (`vqatune queue`)."
)
SlurmOption = typer.Option(
    False,
    "--slurm",
    help="Submit the run to Slurm (submitit); watch it from here.",
    rich_help_panel="Slurm",
)
PartitionOption = typer.Option(None, "--partition", metavar="P", rich_help_panel="Slurm")
GpusPerNodeOption = typer.Option(
    None,
    "--gpus-per-node",
    min=1,
    metavar="N",
    help="Sets nproc_per_node.",
    rich_help_panel="Slurm",
)
NodesOption = typer.Option(
    None, "--nodes", min=1, metavar="M", help="Sets nnodes.", rich_help_panel="Slurm"
)
TimeOption = typer.Option(None, "--time", metavar="HH:MM:SS", rich_help_panel="Slurm")
AccountOption = typer.Option(None, "--account", metavar="A", rich_help_panel="Slurm")
SlurmArgOption = typer.Option(
    None,
    "--slurm-arg",
    metavar="KEY=VALUE",
    help="Any other sbatch option (qos=high).",
    rich_help_panel="Slurm",
)
NprocOption = typer.Option(
    None,
    "--nproc",
    min=1,
    metavar="N",
    help="Training processes on this server, one per GPU (DDP via torchrun; sets nproc_per_node).",
)
NnodesOption = typer.Option(
    None,
    "--nnodes",
    min=1,
    metavar="M",
    help="Servers in the run; each runs the same command (sets nnodes).",
)
NodeRankOption = typer.Option(
    None,
    "--node-rank",
    min=0,
    metavar="R",
    help="This server's number, 0..M-1; node 0 writes the records.",
)
RdzvOption = typer.Option(
    None,
    "--rdzv-endpoint",
    metavar="HOST:PORT",
    help="Where the servers meet: node 0's address and a free port.",
)


def run(
    source: str = typer.Argument(..., metavar="PRESET|FILE", help="Preset name or TOML file."),
    sets: list[str] | None = SetOption,
    name: str | None = typer.Option(None, "--name", "-n", help="Run name (part of the run id)."),
    runs_dir: Path | None = RunsDirOption,
    detach: bool = DetachOption,
    queued: bool = QueueOption,
    nproc: int | None = NprocOption,
    nnodes: int | None = NnodesOption,
    node_rank: int | None = NodeRankOption,
    rdzv_endpoint: str | None = RdzvOption,
    slurm: bool = SlurmOption,
    partition: str | None = PartitionOption,
    gpus_per_node: int | None = GpusPerNodeOption,
    nodes: int | None = NodesOption,
    time_limit: str | None = TimeOption,
    account: str | None = AccountOption,
    slurm_args: list[str] | None = SlurmArgOption,
) -> None:
    """Train a preset or config file: create a run, start it, follow it to the end."""
    from vqatune.engine import config

    from . import slurm_cmd

    slurm_options = slurm_cmd.options(
        slurm, partition, gpus_per_node, nodes, time_limit, account, slurm_args
    )
    if slurm_options:
        nproc, nnodes = slurm_options.gpus_per_node, slurm_options.nodes

    given = {
        k: v
        for k, v in (
            ("name", name),
            ("nproc_per_node", nproc),
            ("nnodes", nnodes),
            ("node_rank", node_rank),
            ("rdzv_endpoint", rdzv_endpoint),
        )
        if v is not None
    }
    with user_errors():
        resolved = config.resolve(source, sets or ())
        cfg = resolved.config.replace(**given) if given else resolved.config
    report_warnings(
        cfg, resolved.overrides, preset=source if config.find_preset(source) is not None else None
    )
    from .fit_cmd import warning_for  # does not block: a warning only

    if (too_big := warning_for(source, sets or (), cfg)) is not None:
        warn(too_big)
    start(
        cfg,
        source=resolved.source,
        overrides=resolved.overrides,
        runs_dir=runs_dir,
        detach=detach,
        queued=queued,
        slurm=slurm_options,
    )


def train(
    ctx: typer.Context,
    sets: list[str] | None = SetOption,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate, print the config and the model summary; train nothing."
    ),
    runs_dir: Path | None = RunsDirOption,
    detach: bool = DetachOption,
    queued: bool = QueueOption,
) -> None:
    """Train with the tuning guide's `python main.py` flags, verbatim (defaults: the `default`
    preset on easy-vqa). Also: --output DIR, --max_steps N, --name N, --dry-run, --set k=v."""

    with user_errors():
        cfg, overrides = config_from_flags(ctx.args, sets or ())
    report_warnings(cfg, overrides, preset=None)
    if dry_run:
        show_dry_run(cfg)
        return
    start(
        cfg,
        source="default",
        overrides=overrides,
        runs_dir=runs_dir,
        detach=detach,
        queued=queued,
    )


def config_from_flags(words: list[str], sets=()) -> tuple:
    """`vqatune train` words (a guide command line, `python main.py` optional) -> (config, the
    values given). Raises ConfigError."""
    from vqatune.engine import cmdline, config

    given = cmdline.parse_flags(cmdline.strip_program(list(words)))
    cfg, overrides = config.apply_sets(config.load("default").override(**given), sets)
    return cfg, {**given, **overrides}


def report_warnings(cfg, overrides: dict, preset: str | None) -> None:
    """Out-of-range values are warned about one by one, except a preset's own, which may leave
    the guide's ranges on purpose (cpu-quick, smoke): those are counted in one line."""
    from vqatune.engine import schema

    if not preset:
        for w in cfg.warnings():
            warn(w)
        return
    own = [
        w
        for name, value in overrides.items()
        if (w := schema.recommendation_warning(schema.BY_NAME[name], value))
    ]
    for w in own:
        warn(w)
    rest = len(cfg.warnings()) - len(own)
    if rest > 0:
        warn(
            f"{rest} parameter{'s' * (rest != 1)} of preset {preset} outside the guide's "
            f"recommended ranges (`vqatune config show {preset}` lists them)"
        )


def show_dry_run(cfg) -> None:
    from vqatune.engine import config
    from vqatune.engine.model import summary

    typer.echo(effective_batch_line(cfg))
    typer.echo(config.dumps(cfg, full=True), nl=False)
    with user_errors():
        counts = summary(cfg)
    typer.echo("\n# model summary")
    _echo_tree(counts, "# ")


def effective_batch_line(cfg) -> str:
    """The effective batch a config trains with: per process, times the processes under DDP."""
    from vqatune.engine.distributed import world_size_of

    world = world_size_of(cfg)
    if world == 1:
        return (
            f"# effective batch size: {cfg.effective_batch_size} "
            f"(batch_size x update_freq x gradient_accumulation_steps)"
        )
    return (
        f"# effective batch size: {cfg.effective_batch_size * world} "
        f"(batch_size x update_freq x gradient_accumulation_steps = "
        f"{cfg.effective_batch_size} per process, x {world} processes: "
        f"nproc_per_node {cfg.nproc_per_node} x nnodes {cfg.nnodes})"
    )


def _echo_tree(data: dict, prefix: str) -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            typer.echo(f"{prefix}{key}:")
            _echo_tree(value, prefix + "  ")
        elif isinstance(value, int) and not isinstance(value, bool):
            typer.echo(f"{prefix}{key}: {value:,}")
        else:
            typer.echo(
                f"{prefix}{key}: "
                f"{', '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
            )


def start(
    cfg,
    *,
    source: str,
    overrides: dict,
    runs_dir: Path | None,
    detach: bool,
    queued: bool = False,
    slurm=None,
) -> None:
    from vqatune.engine import distributed, runstore

    from . import queue_cmd, slurm_cmd

    with user_errors():
        # A bad combination stops here, nothing created (Slurm gives the rendezvous itself).
        if distributed.world_size_of(cfg) > 1 and not slurm:
            distributed.torchrun_command(Path("RUN_DIR"), cfg)
        run_dir = runstore.create_run(
            cfg,
            source=source,
            name=cfg.name,
            runs_dir=runs_dir,
            overrides=overrides,
            argv=sys.argv,
            output=cfg.output or None,
        )
        if queued:
            queue_cmd.enqueue(run_dir, runs_dir)
            return
        if slurm:
            slurm_cmd.submit(run_dir, slurm)
            return
        proc = runstore.launch(run_dir, detach=detach)
    if detach:
        typer.echo(run_dir.name)
        typer.echo(
            f"started in the background: `vqatune attach {run_dir.name}` to follow it, "
            f"`vqatune stop {run_dir.name}` to stop it",
            err=True,
        )
        return
    raise typer.Exit(follow(run_dir, proc))


def attach(
    run: str | None = typer.Argument(
        None,
        metavar="[RUN]",
        help="Run id, id prefix, name or directory (default: the newest run going).",
    ),
    sweep: str | None = typer.Option(
        None, "--sweep", metavar="ID", help="Follow a sweep instead: its log and its end."
    ),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Follow a run (or a sweep) that is going: the same progress bar as `vqatune run`, with
    everything since it started; Ctrl-C stops it, a second Ctrl-C leaves it running."""
    from vqatune.engine import runstore

    if sweep is not None:
        if run is not None:
            fail("give a RUN or --sweep ID, not both")
        from .sweep_cmd import attach_sweep

        attach_sweep(sweep, runs_dir)
        return
    with user_errors():
        if run is None:
            live = [r for r in runstore.list_runs(runs_dir) if r.active]
            if not live:
                fail("no run is running (`vqatune runs` lists them all)")
            run_dir = live[-1].path
        else:
            run_dir = runstore.find_run(run, runs_dir)
    raise typer.Exit(follow(run_dir))


# ----------------------------------------------------------------------------------------------
# Following a run


def follow(run_dir: Path, proc=None) -> int:
    """Progress bar until the run's process ends (proc: the one we started; None: until the
    run store says the run is over, which for a queued or Slurm run is judged by the queue or
    the job's state and heartbeat, never by a local pid), then a summary. Returns the exit
    code. Reads metrics.jsonl from the start, so a late follower shows what happened
    meanwhile."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from vqatune.engine import events, runstore
    from vqatune.engine.metrics import MetricsTail

    def running() -> bool:
        return proc.poll() is None if proc is not None else runstore.run_info(run_dir).active

    def ask_to_stop() -> None:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
        else:
            with contextlib.suppress(runstore.ConfigError):  # ended meanwhile
                runstore.stop(run_dir)

    tail = MetricsTail(run_dir / events.METRICS_FILE)
    view = _View()
    interrupted = False
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        transient=False,
    )

    def refresh() -> None:
        view.take(tail.read(), events.read_json(run_dir / events.STATUS_FILE))
        progress.update(task, **view.fields())

    with quiet_on_hangup(), progress:
        task = progress.add_task(f"{run_dir.name} starting", total=None, info="")
        try:
            if running():
                typer.echo(
                    f"run {run_dir.name}: Ctrl-C stops it; closing the terminal leaves it "
                    f"running (`vqatune attach {run_dir.name}` to follow it again)",
                    err=True,
                )
            while running():
                refresh()
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            interrupted = True
            progress.console.print(
                "stopping: finishing the step and saving a checkpoint "
                "(Ctrl-C again to leave it running)"
            )
            try:
                ask_to_stop()
                while running():
                    refresh()
                    time.sleep(POLL_S)
            except KeyboardInterrupt:
                progress.console.print(
                    f"left running: `vqatune attach {run_dir.name}` to follow it again, "
                    f"`vqatune stop {run_dir.name}` to stop it"
                )
                return exitcodes.INTERRUPTED
        refresh()
    summary = events.read_json(run_dir / events.SUMMARY_FILE) or {}
    if not summary and proc is None:  # no end record (a cancelled or timed-out Slurm job)
        summary = _summary_from_state(runstore.run_info(run_dir))
    print_summary(run_dir, summary, proc.returncode if proc is not None else None)
    if interrupted:
        return exitcodes.INTERRUPTED
    return exitcodes.for_state(summary.get("state"))


class _View:
    """What the progress bar shows, from the latest events and status."""

    def __init__(self):
        self.step, self.eval, self.status = {}, {}, {}

    def take(self, new_events: list[dict], status: dict | None) -> None:
        for e in new_events:
            if e["event"] == "step":
                self.step = e
            elif e["event"] == "eval":
                self.eval = e
        self.status = status or self.status

    def fields(self) -> dict:
        s = self.status
        total, step = s.get("total_steps") or None, s.get("step") or 0
        parts = []
        if self.step.get("loss") is not None:
            parts.append(f"loss {self.step['loss']:.4f}")
        if self.eval.get("accuracy") is not None:
            parts.append(f"acc {display.accuracy(self.eval['accuracy'])}")
        if s.get("samples_per_s"):
            parts.append(f"{s['samples_per_s']:.0f} samples/s")
        memory = self.step.get("memory") or {}
        mb = memory.get("allocated_mb", memory.get("rss_mb"))
        if mb is not None:
            parts.append(f"mem {mb:,.0f} MiB")
        if s.get("eta_s") and s.get("state") == "running":
            parts.append(f"ETA {display.duration(s['eta_s'])}")
        epoch = f"epoch {s.get('epoch') or 1}/{s['epochs']}" if s.get("epochs") else "starting"
        return {"description": epoch, "total": total, "completed": step, "info": "  ".join(parts)}


def _summary_from_state(info) -> dict:
    """What a summary would say, from the run store's derived state."""
    return {
        "state": info.state,
        "message": info.message,
        "step": info.step,
        "total_steps": info.total_steps,
        "duration_s": info.duration_s,
    }


def print_summary(run_dir: Path, summary: dict, returncode: int | None) -> None:
    state = summary.get("state")
    if state is None:
        code = f" (exit code {returncode})" if returncode is not None else ""
        typer.echo(
            f"run {run_dir.name}: the training process ended{code} "
            f"without a summary; see {run_dir / 'train.log'}",
            err=True,
        )
        return
    line = f"run {run_dir.name}: {state}"
    if summary.get("message"):
        line += f" ({summary['message']})"
    typer.echo(line)

    parts = [f"steps {summary.get('step')}/{summary.get('total_steps')}"]
    if summary.get("best_accuracy") is not None:
        parts.append(
            f"best accuracy {display.percent(summary['best_accuracy'])} "
            f"(step {summary.get('best_step')})"
        )
        parts.append(f"final accuracy {display.percent(summary['final_accuracy'])}")
    parts.append(f"time {display.duration(summary.get('duration_s') or 0)}")
    typer.echo("  " + "  ".join(parts))
    typer.echo(f"  run directory: {run_dir}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("attach")(attach)
    app.command(
        "train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )(train)
