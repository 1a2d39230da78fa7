"""`vqatune presets`: the presets found in the package, ./presets and ~/.config/vqatune/presets."""

from __future__ import annotations

import typer

from .common import print_json, print_listing


def presets(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    suggest: bool = typer.Option(
        False,
        "--suggest",
        help="Print the preset that suits the detected GPU memory (8gb, 24gb, high-performance; "
        'cpu-quick without an NVIDIA GPU), e.g. vqatune run "$(vqatune presets --suggest)".',
    ),
) -> None:
    """List the presets: name, title, description."""
    from vqatune.engine.config import list_presets

    if suggest:
        from vqatune.engine import gpu

        snapshot = gpu.sample()
        preset, why = gpu.suggestion(snapshot)
        if as_json:
            print_json(
                {
                    "preset": preset,
                    "reason": why,
                    "no_gpu": snapshot.no_gpu,
                    "gpus": snapshot.to_dict()["gpus"],
                }
            )
        else:
            typer.echo(preset)
            typer.echo(f"({why})", err=True)
        return
    found = list_presets()
    if as_json:
        print_json(
            [
                {
                    "name": p.name,
                    "title": p.title,
                    "description": p.description,
                    "path": str(p.path),
                }
                for p in found
            ]
        )
        return
    print_listing(
        ("name", "title", "description"), ((p.name, p.title, p.description) for p in found)
    )


def register(app: typer.Typer) -> None:
    app.command("presets")(presets)
