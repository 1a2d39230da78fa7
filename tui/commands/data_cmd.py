"""`vqatune data inspect|synth`: look at a data set; write a synthetic one in the official layouts.

Neither command imports torch: data sets index in numpy.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from .common import SetOption, console, print_json, user_errors

data_app = typer.Typer(help="Inspect data sets; write synthetic ones.", no_args_is_help=True)


class SynthFormat(str, Enum):
    gqa = "gqa"
    vqa = "vqa"


@data_app.command("inspect")
def inspect(
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="easy-vqa, gqa, vqa or synthetic (default: the config's)."
    ),
    data_root: str | None = typer.Option(
        None, "--data-root", help="Folder with the official files."
    ),
    split: str = typer.Option(
        "train",
        "--split",
        help="Split of the decoded example: train, or an evaluation split "
        "(val, testdev, test; val2014 for VQA).",
    ),
    source: str | None = typer.Option(
        None, "--config", "-c", metavar="PRESET|FILE", help="Start from this preset or config file."
    ),
    sets: list[str] | None = SetOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Counts (questions, images, answers, questions dropped and why) and one decoded example."""
    from vqatune.engine import config
    from vqatune.engine.data import build, describe
    from vqatune.engine.schema import ParamError

    with user_errors():
        cfg = config.load(source, sets or ())
        changes = {}
        if dataset is not None:
            changes["dataset"] = dataset
        if data_root is not None:
            changes["data_root"] = data_root
        try:
            cfg = cfg.replace(**changes)
        except ParamError as e:  # replace() raises the schema's error, not ConfigError
            raise config.ConfigError(f"--{e.param.replace('_', '-')}: {e.message}") from None
        eval_split = None if split == "train" else split
        bundle = build(cfg, eval_split=eval_split)
        info = describe.describe(bundle, "train" if split == "train" else "eval")
    if as_json:
        print_json(info)
        return
    _print_info(info)


def _count_line(c: dict) -> str:
    dropped = c.get("dropped") or {}
    why = ", ".join(f"{n} {reason}" for reason, n in dropped.items())
    return (
        f"{c.get('questions', 0):,} questions, {c.get('images', 0):,} images, "
        f"{sum(dropped.values()):,} dropped" + (f" ({why})" if why else "")
    )


def _print_info(info: dict) -> None:
    out = console()
    rows = [("dataset", info["dataset"])]
    for key in ("train", "eval"):
        c = info["splits"][key]
        rows.append((f"{key} ({c.get('split', key)})", _count_line(c)))
    rows.append(
        (
            "answers",
            f"{info['answers']:,} ({'soft targets' if info['soft_targets'] else 'one-hot'}; "
            f"types: {', '.join(info['answer_types'])})",
        )
    )
    rows.append(("vocabulary", f"{info['vocabulary']:,} words; word init: {info['word_init']}"))
    visual = (
        "pixels" if info["visual"] == "pixels" else f"regions of {info['feature_dim']} features"
    )
    if "sources" in info:
        visual += f" (from {info['sources']['regions']}; graph from {info['sources']['graph']})"
    rows.append(("visual", visual))
    if "graph" in info:
        g = info["graph"]
        rows.append(
            (
                "graph",
                f"{g['node_names']} node names, {g['attributes']} attributes, "
                f"{g['relations']} relations, {g['attribute_slots']} attribute slots",
            )
        )
    source = info.get("sources", {}).get("statistics_words", "none")
    rows.append(
        (
            "stat words",
            f"from {source}"
            if source != "none"
            else "none (omega_v, topk, num_stat_word inactive)",
        )
    )
    ex = info["example"]
    rows.append(
        (
            "example",
            f"split {ex.get('split')}"
            + (f", question {ex['question_id']}" if "question_id" in ex else "")
            + (f", image {ex['image_id']}" if "image_id" in ex else ""),
        )
    )
    for key in (
        "question",
        "tokens",
        "answer",
        "answer_type",
        "candidates",
        "image",
        "regions",
        "nodes",
        "edges",
        "stat_words",
    ):
        if key in ex:
            value = ex[key]
            if isinstance(value, list):
                value = (
                    " ".join(map(str, value))
                    if key in ("tokens", "image", "stat_words")
                    else "; ".join(map(str, value))
                )
            elif isinstance(value, dict):
                value = ", ".join(f"{k} {v['score']:g}" for k, v in value.items())
            rows.append(("  " + key.replace("_", " "), str(value)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.print(
            f"[bold]{key:<{width}}[/bold]  {value}", highlight=False, markup=True, soft_wrap=True
        )


@data_app.command("synth")
def synth(
    fmt: SynthFormat = typer.Option(
        SynthFormat.gqa, "--format", "-f", help="Official layout to write."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (absent or empty)."),
    images: int = typer.Option(
        100, "--images", "-n", min=2, help="Images (scenes); a fifth are validation."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed."),
    questions: int = typer.Option(10, "--questions-per-image", min=1, help="Questions per image."),
    feature_dim: int = typer.Option(2048, "--feature-dim", min=1, help="Region feature size."),
    boxes: int = typer.Option(
        0, "--boxes", min=0, help="Regions per image, objects then background (0: one per object)."
    ),
    dtype: str = typer.Option("float32", "--dtype", help="Feature dtype: float32 or float16."),
    features: bool = typer.Option(
        True, "--features/--no-features", help="Write the HDF5 region features."
    ),
    graphs: bool = typer.Option(True, "--graphs/--no-graphs", help="GQA: write the scene graphs."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Write a small synthetic data set in exactly the official GQA or VQA v2 layout."""
    from vqatune.engine.data import DataError
    from vqatune.engine.data import synth as synth_module

    with user_errors():
        if dtype not in ("float32", "float16"):
            raise DataError(f"--dtype: expected float32 or float16, got {dtype!r}")
        counts = synth_module.write(
            out,
            fmt.value,
            images=images,
            seed=seed,
            questions_per_image=questions,
            feature_dim=feature_dim,
            boxes=boxes,
            dtype=dtype,
            features=features,
            graphs=graphs,
        )
    files = sorted(p.name for p in out.iterdir())
    if as_json:
        print_json({**counts, "out": str(out), "files": files})
        return
    q = counts["questions"]
    typer.echo(
        f"wrote {fmt.value} data to {out}: {images} images, {q['train']} train and "
        f"{q['val']} validation questions"
    )
    for name in files:
        typer.echo(f"  {name}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
