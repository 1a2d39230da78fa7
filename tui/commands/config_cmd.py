"""`vqatune config show|validate|diff|from-cmdline`."""

from __future__ import annotations

from enum import Enum

import typer

from .common import SetOption, console, echo_errors, fail, print_json, user_errors, warn
from .run_cmd import effective_batch_line

config_app = typer.Typer(
    help="Resolve, check, compare and convert configurations.", no_args_is_help=True
)


class Format(str, Enum):
    toml = "toml"
    json = "json"
    cmdline = "cmdline"


@config_app.command("show")
def show(
    source: str | None = typer.Argument(
        None,
        metavar="[PRESET|FILE]",
        help="Preset name or TOML file (default: the guide's defaults).",
    ),
    sets: list[str] | None = SetOption,
    fmt: Format = typer.Option(Format.toml, "--format", "-f", help="Output format."),
    all_flags: bool = typer.Option(
        False, "--all", help="cmdline: print every flag, not only changed ones."
    ),
) -> None:
    """Print the fully resolved configuration."""
    from vqatune.engine import cmdline, config

    with user_errors():
        resolved = config.resolve(source, sets or ())
    cfg = resolved.config
    for w in cfg.warnings():
        warn(w)
    if fmt is Format.json:
        world = cfg.nproc_per_node * cfg.nnodes  # DDP processes
        print_json(
            {
                "source": resolved.source,
                "effective_batch_size": cfg.effective_batch_size * world,
                "world_size": world,
                "overrides": resolved.overrides,
                "warnings": cfg.warnings(),
                "config": cfg.to_dict(),
            }
        )
    elif fmt is Format.cmdline:
        typer.echo(cmdline.to_cmdline(cfg, full=all_flags))
    else:
        header = (
            f"# resolved from {resolved.source or 'the defaults'}"
            f"{' with ' + ', '.join(sets) if sets else ''}\n"
            f"{effective_batch_line(cfg)}\n"
        )
        typer.echo(header + config.dumps(cfg, full=True), nl=False)


@config_app.command("validate")
def validate(
    files: list[str] = typer.Argument(..., metavar="FILE...", help="Config files or preset names."),
) -> None:
    """Check config files: errors exit 2, out-of-range values warn."""
    from vqatune.engine import config

    failed = False
    for source in files:
        try:
            cfg = config.load(source)
        except config.ConfigError as e:
            echo_errors(str(e))
            failed = True
            continue
        warnings = cfg.warnings()
        for w in warnings:
            warn(f"{source}: {w}")
        typer.echo(
            f"{source}: ok"
            + (f" ({len(warnings)} warning{'s' * (len(warnings) != 1)})" if warnings else "")
        )
    if failed:
        raise typer.Exit(2)


@config_app.command("diff")
def diff(
    a: str = typer.Argument(..., metavar="A", help="Preset name or file."),
    b: str = typer.Argument(..., metavar="B", help="Preset name or file."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show only the parameters that differ between two configs."""
    from vqatune.engine import config

    with user_errors():
        rows = config.diff(config.load(a), config.load(b))
    if as_json:
        print_json([{"param": n, "a": x, "b": y} for n, x, y in rows])
        return
    if not rows:
        typer.echo(f"{a} and {b} are identical")
        return
    from rich.table import Table
    from vqatune.engine.cmdline import format_value

    table = Table(box=None, pad_edge=False)
    table.add_column("parameter", style="bold")
    table.add_column(a)
    table.add_column(b)
    for name, x, y in rows:
        table.add_row(name, format_value(x), format_value(y))
    console().print(table)


@config_app.command("from-cmdline")
def from_cmdline(
    line: str = typer.Argument(
        ...,
        metavar='"python main.py --flag value ..."',
        help="A command line of the tuning guide (quoted).",
    ),
    extends: str | None = typer.Option(
        None, "--extends", help="Write `extends = ...` and only what differs from it."
    ),
) -> None:
    """Convert a guide command line to a TOML config (differences from the defaults)."""
    from vqatune.engine import cmdline, config

    with user_errors():
        base = config.load(extends) if extends else config.Config()
        cfg = cmdline.config_from_cmdline(line, base)
    text = config.dumps(cfg, base=base, extends=extends)
    typer.echo(text if text.strip() else "# every parameter at its default\n", nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


__all__ = ["register", "fail"]
