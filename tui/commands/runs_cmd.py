"""`vqatune runs | show | logs | stop | resume | compare`: the run store from the shell.

Runs are named by id, unique id prefix, name, or run directory path. Everything here reads the
run directories (engine/runstore.py, engine/metrics.py); nothing imports torch.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import typer
from vqatune.tui import display

from .common import RunsDirOption, fail, print_json, user_errors, warn

JsonOption = typer.Option(False, "--json", help="Machine-readable output.")
SPARK = "▁▂▃▄▅▆▇█"


def console():
    """Rich console; piped output is not cut to 80 columns (scripts grep the whole rows)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=250)


def _find(query: str, runs_dir: Path | None) -> Path:
    from vqatune.engine import runstore

    with user_errors():
        return runstore.find_run(query, runs_dir)


# ----------------------------------------------------------------------------------------------
# Formatting


def fmt_time(t: float | None) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(t)) if t else "-"


def fmt_progress(info) -> str:
    parts = []
    if info.epoch is not None:
        parts.append(f"ep {info.epoch}/{info.epochs}" if info.epochs else f"ep {info.epoch}")
    if info.step is not None:
        parts.append(f"{info.step}/{info.total_steps}" if info.total_steps else str(info.step))
    return " · ".join(parts) or "-"


def fmt_value(x) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def sparkline(values: list[float], width: int = 48) -> str:
    """Bucket means scaled to eight block heights."""
    if not values:
        return ""
    if len(values) > width:
        n = len(values)
        values = [
            sum(values[n * i // width : n * (i + 1) // width])
            / max(1, n * (i + 1) // width - n * i // width)
            for i in range(width)
        ]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(7, int((v - lo) / span * 7.999))] for v in values)


# ----------------------------------------------------------------------------------------------
# runs


def runs(
    state: str | None = typer.Option(
        None,
        "--state",
        metavar="STATE",
        help="Only runs in this state (running, done, crashed...).",
    ),
    as_json: bool = JsonOption,
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """List the runs: id, name/preset, state, progress, best val accuracy, duration, started."""
    from vqatune.engine import runstore
    from vqatune.engine.events import STATES

    if state is not None and state not in STATES:
        fail(f"--state: unknown state {state!r} (states: {', '.join(STATES)})")
    found = runstore.list_runs(runs_dir)
    if state:
        found = [r for r in found if r.state == state]
    if as_json:
        print_json([r.to_dict() for r in found])
        return
    if not found:
        where = runs_dir or runstore.default_runs_dir()
        typer.echo(f"no runs{' in state ' + state if state else ''} in {where}")
        return
    # Plain padded columns: rich tables take about a second for a thousand rows.
    headers = ("id", "state", "name / preset", "progress", "best acc", "duration", "started")
    right = {3, 4, 5}
    rows = []
    for r in found:
        label = r.name if not r.source or r.source == r.name else f"{r.name} / {r.source}"
        rows.append(
            (
                r.id,
                r.state,
                label,
                fmt_progress(r),
                display.accuracy(r.best_accuracy),
                display.duration(r.duration_s),
                fmt_time(r.started or r.created),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")

    def line(cells, states=False):
        out = []
        for i, cell in enumerate(cells):
            text = cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            if color and states and i == 1:
                text = display.state_ansi(cell, text)
            out.append(text)
        return "  ".join(out).rstrip()

    head = line(headers)
    lines = [f"\x1b[1m{head}\x1b[0m" if color else head]
    lines += [line(row, states=True) for row in rows]
    sys.stdout.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------
# show


def _source_config(info):
    """The config of the run's preset/file as it resolves now (None when it is gone)."""
    from vqatune.engine import config

    if not info.source:
        return config.Config()
    try:
        return config.load(info.source)
    except config.ConfigError:
        return None


def distributed_summary(cfg) -> str:
    """DDP: nproc_per_node x nnodes, this node's rank and the rendezvous endpoint."""
    text = (
        f"{cfg.nproc_per_node * cfg.nnodes} (nproc_per_node {cfg.nproc_per_node} x "
        f"nnodes {cfg.nnodes})"
    )
    if cfg.nnodes > 1:
        text += f", node_rank {cfg.node_rank}, rendezvous {cfg.rdzv_endpoint}"
    return text


def show(
    run: str = typer.Argument(..., metavar="RUN", help="Run id, id prefix, name or directory."),
    as_json: bool = JsonOption,
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """A run: state and progress, summary, loss/accuracy sparklines, resolved config (the
    values that differ from its preset highlighted)."""
    from vqatune.engine import config, metrics, runstore, schema
    from vqatune.engine.events import CONFIG_FILE, METRICS_FILE
    from vqatune.engine.official import breakdown

    run_dir = _find(run, runs_dir)
    info = runstore.run_info(run_dir)
    cfg = None
    with user_errors():
        if (run_dir / CONFIG_FILE).is_file():
            cfg = config.load(str(run_dir / CONFIG_FILE))
    base = _source_config(info)
    changed = cfg.changed_from(base) if cfg is not None and base is not None else {}
    scan = metrics.scan(run_dir / METRICS_FILE, curve_points=200)
    monitor = None
    if info.state == "running" and info.pid:
        from vqatune.engine import gpu

        monitor = gpu.sample(info.pid)
    if as_json:
        print_json(
            {
                "run": info.to_dict(),
                "meta": info.meta,
                "summary": info.summary,
                "config": cfg.to_dict() if cfg else None,
                "changed_from_source": {
                    k: {"source": getattr(base, k), "run": v} for k, v in changed.items()
                },
                "loss": {"step": scan.loss_steps, "value": scan.loss, "sampled": scan.loss_sampled},
                "accuracy": {"step": scan.accuracy_steps, "value": scan.accuracy},
                "monitor": monitor.to_dict() if monitor else None,
            }
        )
        return
    from rich.table import Table
    from rich.text import Text

    con = console()
    style = display.state_style(info.state)
    con.print(
        Text.assemble(
            (info.id, "bold"),
            "  ",
            (info.state, style),
            f"  {info.message}" if info.message else "",
        )
    )
    rows = [
        ("name", info.name),
        ("source", info.source or "(defaults)"),
        ("directory", str(info.path)),
        ("progress", fmt_progress(info)),
        ("best val accuracy", display.accuracy(info.best_accuracy)),
        ("last val accuracy", display.accuracy(info.last_accuracy)),
        ("started", fmt_time(info.started)),
        ("duration", display.duration(info.duration_s)),
    ]
    if info.pid:
        rows.append(("pid", str(info.pid)))
    if cfg is not None and cfg.nproc_per_node * cfg.nnodes > 1:
        rows.append(("processes", distributed_summary(cfg)))
    if monitor is not None:
        rows.extend(monitor_rows(monitor))
    if info.meta.get("argv"):
        rows.append(("command", " ".join(info.meta["argv"])))
    for key in ("samples_per_s", "eta_s"):
        if info.status.get(key) is not None and info.state == "running":
            rows.append((key.replace("_", " "), fmt_value(info.status[key])))
    if info.summary:
        for key, value in info.summary.items():
            if isinstance(value, (int, float, str)) and key not in ("state",):
                rows.append((f"summary: {key}", fmt_value(value)))
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="dim")
    table.add_column()
    for k, v in rows:
        table.add_row(k, v)
    if scan.loss:
        lo, hi = min(scan.loss), max(scan.loss)
        table.add_row(
            "train loss",
            f"{sparkline(scan.loss)}  {scan.loss[-1]:.4g} (min {lo:.4g}, max {hi:.4g})",
        )
    if scan.accuracy:
        table.add_row(
            "val accuracy",
            f"{sparkline(scan.accuracy)}  {display.accuracy(scan.accuracy[-1])} (best {display.accuracy(max(scan.accuracy))})",
        )
    for _, label, value in breakdown(scan.best_eval):  # official per-type figures
        table.add_row(f"best eval: {label}", f"{value:.4f}")
    con.print(table)
    if cfg is None:
        warn(f"{CONFIG_FILE} is missing in {run_dir}")
        return
    if base is None:
        warn(f"its source {info.source!r} no longer resolves; no differences shown")
    con.print()
    note = (
        f"  (* differs from {info.source or 'the defaults'}: {len(changed)})"
        if base is not None
        else ""
    )
    con.print(Text.assemble(("config", "bold"), (note, "dim")))
    values = cfg.to_dict()
    for group, params in schema.iter_groups():
        con.print(Text(f"  [{group}]", style="dim"))
        for p in params:
            if p.name in changed:
                con.print(
                    Text.assemble(
                        f"  * {p.name} = ",
                        (fmt_value(values[p.name]), "bold yellow"),
                        (
                            f"   ({info.source or 'default'}: {fmt_value(getattr(base, p.name))})",
                            "dim",
                        ),
                    )
                )
            else:
                con.print(f"    {p.name} = {fmt_value(values[p.name])}", highlight=False)


def monitor_rows(snap) -> list[tuple[str, str]]:
    gib = 1 << 30
    rows = []
    if snap.rss is not None:
        rows.append(("process memory", f"{snap.rss / (1 << 20):,.0f} MiB RSS"))
    if not snap.gpus:
        rows.append(("gpu", snap.no_gpu or "-"))
    for g in snap.gpus:
        text = f"{g.name}: {g.memory_used / gib:.1f} / {g.memory_total / gib:.1f} GiB"
        if g.utilization is not None:
            text += f", {g.utilization}% busy"
        if g.process_memory is not None:
            text += f"; this run {g.process_memory / gib:.1f} GiB"
        rows.append((f"gpu {g.index}", text))
    return rows


# ----------------------------------------------------------------------------------------------
# logs


def _follow(path: Path, offset: int, is_live, poll_s: float = 0.25) -> None:
    """Copy what is appended to path to stdout until is_live() turns false."""
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    last_check = 0.0
    live = True
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data:
            offset += len(data)
            if out is not None:
                out.write(data)
                out.flush()
            else:
                sys.stdout.write(data.decode("utf-8", "replace"))
                sys.stdout.flush()
        if not live and not data:
            return
        now = time.monotonic()
        if now - last_check > 1.0:
            live, last_check = is_live(), now
        if live or data:
            time.sleep(poll_s if not data else 0)


def logs(
    run: str = typer.Argument(..., metavar="RUN", help="Run id, id prefix, name or directory."),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep printing new lines until the run ends (Ctrl-C leaves the run going).",
    ),
    lines: int = typer.Option(
        0, "--lines", "-n", metavar="N", min=0, help="Only the last N lines (0: the whole log)."
    ),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Print a run's training log (train.log)."""
    from vqatune.engine import runstore
    from vqatune.engine.events import LOG_FILE

    run_dir = _find(run, runs_dir)
    path = run_dir / LOG_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
        if not follow:
            fail(f"run {run_dir.name} has no {LOG_FILE} yet", code=1)
    offset = len(data)
    if lines:
        data = b"\n".join(data.rstrip(b"\n").split(b"\n")[-lines:]) + b"\n" if data else b""
    sys.stdout.write(data.decode("utf-8", "replace"))
    sys.stdout.flush()
    if follow:
        # Until the run is over: a Slurm run by its job's state, a queued one once it ran.
        _follow(path, offset, lambda: runstore.run_info(run_dir).active)


# ----------------------------------------------------------------------------------------------
# stop, resume


def stop(
    run: str = typer.Argument(..., metavar="RUN", help="Run id, id prefix, name or directory."),
    kill: bool = typer.Option(
        False, "--kill", help="SIGKILL now (no final checkpoint) instead of a graceful stop."
    ),
    wait: float = typer.Option(
        60.0,
        "--wait",
        metavar="SECONDS",
        min=0,
        help="How long to wait for a graceful stop to finish.",
    ),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Stop a run: gracefully (it finishes the step, writes a checkpoint, ends as `stopped`)
    or with --kill. `vqatune resume RUN` continues it."""
    from vqatune.engine import runstore

    run_dir = _find(run, runs_dir)
    if not kill:
        typer.echo(
            f"{run_dir.name}: stopping (finishing the step and writing a checkpoint)...", err=True
        )
    with user_errors():
        info = runstore.stop(run_dir, kill=kill, wait_s=wait)
    if info.live:
        typer.echo(
            f"{info.id}: still stopping after {wait:g} s; `vqatune runs` shows when it has stopped"
        )
        return
    typer.echo(f"{info.id}: {info.state}" + (f" ({info.message})" if info.message else ""))


def resume(
    run: str = typer.Argument(..., metavar="RUN", help="Run id, id prefix, name or directory."),
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Return at once; the run goes on in the background."
    ),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Continue a stopped or crashed run from its last checkpoint, in the same run directory
    (metrics are appended; a `resumed` event marks the seam). Followed with a progress bar
    unless --detach; Ctrl-C stops it cleanly again."""
    from vqatune.engine import runstore

    from .run_cmd import follow

    run_dir = _find(run, runs_dir)
    info = runstore.run_info(run_dir)
    checkpoint = runstore.last_checkpoint(run_dir)
    with user_errors():
        # Its own session even when followed: a dropped SSH connection leaves it running.
        proc = runstore.resume(run_dir)
    if checkpoint is None and info.state != "queued":
        warn(f"run {info.id} had no checkpoint yet: it starts again from step 0")
    if isinstance(proc, str):  # a Slurm run: resubmitted as a new job
        typer.echo(f"{info.id}: resubmitted to Slurm as job {proc}", err=True)
        typer.echo(f"follow it with: vqatune logs -f {info.id}", err=True)
        return
    typer.echo(
        f"{info.id}: resumed{' from ' + checkpoint.name if checkpoint else ''} (pid {proc.pid})",
        err=True,
    )
    if detach:
        typer.echo(f"follow it with: vqatune logs -f {info.id}", err=True)
        return
    raise typer.Exit(follow(run_dir, proc))


# ----------------------------------------------------------------------------------------------
# compare


def compare(
    run_names: list[str] | None = typer.Argument(
        None, metavar="RUN RUN...", help="Two or more runs (id, prefix, name or directory)."
    ),
    as_json: bool = JsonOption,
    plot: bool = typer.Option(
        False, "--plot", help="Overlay validation accuracy and training loss curves."
    ),
    smoothing: str = typer.Option(
        "none", "--smooth", metavar="none|ema|window", help="Curve smoothing (with --plot)."
    ),
    factor: float | None = typer.Option(
        None, "--factor", help="EMA weight in [0, 1) (0.6) or window points (5)."
    ),
    x_axis: str = typer.Option("step", "--x", metavar="step|time|samples", help="The x axis."),
    sweep: str | None = typer.Option(
        None,
        "--sweep",
        metavar="ID",
        help="Compare a sweep's runs instead: a row per variant (mean ± std over seeds) or "
        "trial, the winner (id, prefix or plan name).",
    ),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Compare runs: the parameters that differ (only those), best and final metrics side by
    side, runs that differ only in seed as mean ± std."""
    from vqatune.engine import compare as comparing

    if sweep is not None:
        if run_names:
            fail("give runs or --sweep, not both")
        from .sweep_cmd import compare_sweep

        compare_sweep(sweep, runs_dir, as_json=as_json, plot=plot)
        return
    from vqatune.engine import curves

    try:
        factor = curves.check_smoothing(smoothing, factor)
        curves.x_values(x_axis, [], [])  # checks the axis name
    except ValueError as e:
        fail(str(e))
    run_names = run_names or []
    if len(run_names) < 2:
        fail("compare needs at least two runs")
    dirs = [_find(q, runs_dir) for q in run_names]
    if len({d.resolve() for d in dirs}) < len(dirs):
        fail("the same run is given twice")
    with user_errors():
        result = comparing.compare(dirs, curve_points=400 if plot else 50)
    if as_json:
        print_json(result.to_dict())
        return
    _print_comparison(result, comparing.METRICS + tuple(comparing.breakdown_metrics(result.runs)))
    if plot:
        _plot(result, x_axis, smoothing, factor)


def _print_comparison(result, metric_names) -> None:
    from rich.table import Table

    con = console()
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("")
    for r in result.runs:
        table.add_column(f"{r.info.id}\n{r.info.state}", justify="right")
    if result.differing:
        table.add_row("[bold]parameters that differ[/]")
        for name, values in result.differing:
            table.add_row(f"  {name}", *(fmt_value(v) for v in values))
    else:
        table.add_row("[dim]identical parameters[/]")
    table.add_row("[bold]metrics[/]")
    for key, label in metric_names:
        values = [r.metrics.get(key) for r in result.runs]
        best = _best_index(key, values)
        cells = [_metric(key, v) for v in values]
        if best is not None and len(result.runs) > 1:
            cells[best] = f"[bold green]{cells[best]}[/]"
        table.add_row(f"  {label}", *cells)
    con.print(table)
    for g in result.groups:
        con.print()
        con.print(
            f"[bold]{g.label}[/] (seeds {', '.join(map(str, g.seeds))}; "
            f"{', '.join(r.info.id for r in g.runs)})"
        )
        gt = Table(box=None, pad_edge=False, show_header=False)
        gt.add_column()
        gt.add_column(justify="right")
        for key, label in metric_names:
            mean, std = g.mean.get(key), g.std.get(key)
            cell = _metric(key, mean)
            if mean is not None and std is not None:
                cell += f" ± {_metric(key, std)}"
            gt.add_row(f"  {label}", cell)
        con.print(gt)


def _metric(key: str, v) -> str:
    if v is None:
        return "-"
    if key == "duration_s":
        return display.duration(v)
    if key in ("steps", "best_step"):
        return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"
    if "accuracy" in key:
        return display.accuracy(v)
    return f"{v:.4g}"


def _best_index(key: str, values) -> int | None:
    scored = [(v, i) for i, v in enumerate(values) if v is not None]
    if not scored or key not in ("best_accuracy", "final_accuracy", "final_loss"):
        return None
    return (min(scored) if key == "final_loss" else max(scored))[1]


def _plot(result, x_axis: str = "step", smoothing: str = "none", factor: float = 0.0) -> None:
    import shutil

    import plotext as plt
    from vqatune.engine import curves
    from vqatune.engine.metrics import downsample

    width, height = shutil.get_terminal_size((100, 40))
    plain = not sys.stdout.isatty() or bool(os.environ.get("NO_COLOR"))
    sampled = any(r.scan.loss_sampled for r in result.runs)
    per_run = [curves.run_curves(r, x=x_axis, method=smoothing, factor=factor) for r in result.runs]
    charts, stats_lines = [], []
    # One figure per chart: plotext's subplots keep legend state between figures and fail
    # when a second comparison is drawn in the same process.
    for chart_name in ("validation accuracy", "training loss"):
        title = chart_name + (" (window means)" if sampled and "loss" in chart_name else "")
        if smoothing != "none":
            title += f" · {curves.describe(smoothing, factor)}"
        plt.clear_figure()
        plt.plotsize(min(width, 160), max(10, min(height // 2 - 1, 25)))
        plt.title(title)
        plt.xlabel(curves.X_LABELS[x_axis])
        stats_lines.append(f"{chart_name} (raw points):")
        for run_curves in per_run:
            c = run_curves.get(chart_name)
            if c is None:
                continue
            xs, ys = downsample(c.xs, c.ys, 400)
            plt.plot(xs, ys, label=c.label, marker="braille")
            if c.stats:
                stats_lines.append(f"  {c.label}  {c.stats.text()}")
        chart = plt.build()
        charts.append(plt.uncolorize(chart) if plain else chart)
    plt.clear_figure()
    sys.stdout.write("\n".join(charts) + "\n" + "\n".join(stats_lines) + "\n")


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
    app.command("show")(show)
    app.command("logs")(logs)
    app.command("stop")(stop)
    app.command("resume")(resume)
    app.command("compare")(compare)
