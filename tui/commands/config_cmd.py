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
    from vqatune.engine.cmdline import format_value

    with user_errors():
        resolved = config.resolve(source, sets or ())
        cfg = resolved.config
        from_yaml = xvlm_report(cfg, resolved.origins)
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
                "origins": resolved.origins,
                "from_xvlm_yaml": from_yaml,
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
        if from_yaml:
            typer.echo(
                f"# from the X-VLM YAML {cfg.config}: its values win over the file's and the "
                f"defaults, a value given on the command line wins over it"
            )
        for name, row in from_yaml.items():
            shown = f"{name} = {format_value(row['value'])}"
            if row["applies"]:
                typer.echo(
                    f"#   {shown}: applies (over {format_value(cfg.to_dict()[name])} from "
                    f"{row['origin']})"
                )
            else:
                typer.echo(
                    f"#   {shown}: overridden by {row['overridden_by']} "
                    f"{name}={format_value(row['given'])}"
                )


def xvlm_report(cfg, origins: dict[str, str]) -> dict[str, dict]:
    """What cfg.config (an X-VLM YAML) sets, per parameter: its value and whether it applies or
    a value given on the command line overrides it. Read without torch; empty while the file is
    not on this machine (a config is shown wherever it is)."""
    from pathlib import Path

    from vqatune.engine.xvlm_files import read, yaml_values

    path = Path(cfg.config).expanduser()
    if not (cfg.config and path.is_file()):
        return {}
    files = read(path)
    applied, _ = yaml_values(files, cfg)
    report = {}
    for name, value in files.from_yaml.items():
        origin = origins.get(name, "the defaults")
        if name in applied:
            report[name] = {"value": value, "applies": True, "origin": origin}
        else:
            given = cfg.to_dict()[name]
            report[name] = {
                "value": value,
                "applies": False,
                "overridden_by": origin,
                "given": given,
            }
    return report


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
