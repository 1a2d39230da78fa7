"""`vqatune model summary`: parameter counts per branch and which learning rate trains them."""

from __future__ import annotations

import typer

from .common import SetOption, console, print_json, user_errors

model_app = typer.Typer(help="Inspect the VQA model a configuration builds.", no_args_is_help=True)


@model_app.command("summary")
def summary_cmd(
    source: str | None = typer.Argument(
        None,
        metavar="[PRESET|FILE]",
        help="Preset name or TOML file (default: the guide's defaults).",
    ),
    sets: list[str] | None = SetOption,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Parameter counts per branch and in total; which train with lr and which with xvlm_lr."""
    from vqatune.engine import config

    with user_errors():
        cfg = config.load(source, sets or ())
        from vqatune.engine.model import summary

        info = summary(cfg)
    if as_json:
        print_json(info)
        return
    from rich.table import Table

    s = info["backbone_sizes"]
    out = console()
    vocab = (
        f" (nominal vocabulary sizes; no data loaded: {info['nominal_reason']})"
        if info["nominal_vocabulary"]
        else " (vocabularies from the data)"
    )
    out.print(
        f"dataset {info['dataset']}: {info['answers']} answers, {info['visual']} input{vocab}"
    )
    if s["vision_encoder"] == "swin":
        w = s["swin"]
        vision = (
            f"Swin depths {w['depths']} heads {w['num_heads']} embed {w['embed_dim']} window "
            f"{w['window_size']} -> {s['vision_width']}"
        )
    else:
        vision = f"ViT {s['vision_layers']}x{s['vision_width']}"
    out.print(
        f"backbone ({s['source']}): image {s['image_res']}px / patch {s['patch_size']}, "
        f"vision {vision}, text {s['text_layers']}x"
        f"{s['text_width']}, fusion {s['fusion_layers']} layers, {s['heads']} heads; "
        f"attention {info['attn_implementation']}"
        f"{', activation checkpointing' if info['activation_checkpointing'] else ''}"
    )
    if s["given"]:
        out.print(f"given on the command line over the X-VLM YAML: {', '.join(s['given'])}")
    out.print(f"X-VLM branch input: {info['xvlm_input']}; {checkpoint_words(info['checkpoint'])}")
    table = Table(box=None, pad_edge=False)
    table.add_column("branch", style="bold")
    table.add_column("parameters", justify="right")
    table.add_column("learning rate")
    for name, count in info["branches"].items():
        rate = "xvlm_lr" if name == "xvlm_backbone" else "lr"
        label = "  aoa (inside ban)" if name == "aoa" else name
        table.add_row(label, f"{count:,}", rate)
    table.add_row("total", f"{info['total']:,}", "")
    out.print(table)
    out.print(
        f"lr = {info['lr']['value']:g}: {info['lr']['parameters']:,} parameters; "
        f"xvlm_lr = {info['xvlm_lr']['value']:g}: {info['xvlm_lr']['parameters']:,} parameters"
    )


def checkpoint_words(report: dict | None) -> str:
    if not report:
        return "no checkpoint: from scratch"
    words = (
        f"checkpoint {report['path']}: {report['loaded']:,} tensors loaded, "
        f"{report['missing']:,} missing, {report['unexpected']:,} without a counterpart"
    )
    if report["interpolated"]:
        words += f", {report['interpolated']:,} relative position tables interpolated"
    return words


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
