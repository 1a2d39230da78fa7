"""Exporting runs: CSV of every event, TensorBoard event files, a self-contained HTML report.

- csv: OUT/<run id>/<event kind>.csv, one row per event; columns follow events.EVENT_FIELDS
  (nested dicts flattened as `losses.fused`), then any other field seen, sorted.
- tensorboard: OUT/<run id>/events.out.tfevents.*: scalars per branch (train/loss/ban, ...,
  val/accuracy/graph, ...) at their step and wall time, and the run's parameters as hparams
  with its best and final accuracy as hparam metrics (TensorBoard's own writer and protos,
  which need neither TensorFlow nor torch).
- html: OUT/report.html: the config diff, metrics side by side, seed statistics, parameter
  importance, curves and parallel coordinates, drawn with plotly; plotly.js is inlined once,
  so the file opens offline.

Light module: tensorboard and plotly are imported only by the exporter that needs them.
"""

from __future__ import annotations

import csv
import html
import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import config as config_mod
from . import runstore
from .config import ConfigError
from .events import CONFIG_FILE, EVENT_FIELDS, EVENT_TYPES, METRICS_FILE
from .metrics import read_events

FORMATS = ("csv", "tensorboard", "html")
REPORT_FILE = "report.html"


def export(run_dirs: list[Path], fmt: str, out: Path) -> list[Path]:
    """Write the runs in `fmt` under `out`; returns the files written."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
    if not run_dirs:
        raise ConfigError("no runs to export")
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create it: {e.strerror}") from None
    if fmt == "csv":
        return [f for d in run_dirs for f in export_csv(Path(d), out / Path(d).name)]
    if fmt == "tensorboard":
        return [export_tensorboard(Path(d), out / Path(d).name) for d in run_dirs]
    return [export_html([Path(d) for d in run_dirs], out / REPORT_FILE)]


# ----------------------------------------------------------------------------------------------
# CSV


def flatten(event: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in event.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def columns(kind: str, rows: list[dict[str, Any]]) -> list[str]:
    """event, time, the documented fields (nested ones as seen), then the rest, sorted."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    ordered = ["event", "time"]
    for name in EVENT_FIELDS.get(kind, ()):
        ordered += [c for c in seen if c == name or c.startswith(name + ".")]
    rest = sorted(c for c in seen if c not in ordered)
    return [c for c in ordered if c in seen or c in ("event", "time")] + rest


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps(value)
    return value


def export_csv(run_dir: Path, out: Path) -> list[Path]:
    events = read_events(run_dir / METRICS_FILE)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_kind.setdefault(e["event"], []).append(flatten(e))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in sorted(by_kind, key=lambda k: EVENT_TYPES.index(k) if k in EVENT_TYPES else 99):
        rows = by_kind[kind]
        path = out / f"{kind}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns(kind, rows), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(v) for k, v in row.items()})
        written.append(path)
    return written


# ----------------------------------------------------------------------------------------------
# TensorBoard

# (event kind, field, tag) of the scalars written; dict fields give one tag per key.
SCALARS = (
    ("step", "loss", "train/loss"),
    ("step", "losses", "train/loss"),
    ("step", "lr", "train/lr"),
    ("step", "xvlm_lr", "train/xvlm_lr"),
    ("step", "grad_norm", "train/grad_norm"),
    ("step", "samples_per_s", "train/samples_per_s"),
    ("eval", "accuracy", "val/accuracy"),
    ("eval", "accuracy_branch", "val/accuracy"),
    ("eval", "accuracy_type", "val/accuracy_type"),
    ("eval", "loss", "val/loss"),
)


def scalars(events: Iterable[dict]) -> Iterable[tuple[str, float, int, float]]:
    """(tag, value, step, wall time) of every scalar the events carry."""
    for e in events:
        step = e.get("step")
        if not isinstance(step, int):
            continue
        for kind, name, tag in SCALARS:
            if e["event"] != kind or name not in e:
                continue
            value = e[name]
            if isinstance(value, dict):
                for key, v in value.items():
                    if _finite(v):
                        yield f"{tag}/{key}", float(v), step, float(e.get("time", 0))
            elif _finite(value):
                yield tag, float(value), step, float(e.get("time", 0))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def hparams(cfg_values: dict[str, Any]) -> dict[str, Any]:
    """Parameters as TensorBoard takes them: numbers, booleans and strings."""
    return {
        k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in cfg_values.items()
    }


def export_tensorboard(run_dir: Path, out: Path) -> Path:
    """One event file per run, written with TensorBoard's own writer and protos (no
    TensorFlow, no torch)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import summary_v2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    info = runstore.run_info(run_dir)
    events = read_events(run_dir / METRICS_FILE)
    out.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(out), flush_secs=3600)
    try:
        try:
            values = config_mod.load(str(run_dir / CONFIG_FILE)).to_dict()
        except ConfigError:
            values = {}
        started = info.started or (events[0]["time"] if events else time.time())
        writer.add_event(
            Event(
                wall_time=started,
                summary=summary_v2.hparams_pb(
                    hparams(values), trial_id=info.id, start_time_secs=int(started)
                ),
            )
        )
        for tag, value, step, wall in scalars(events):
            summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
            writer.add_event(Event(wall_time=wall, step=step, summary=summary))
        # The HParams dashboard's metrics: scalars of the run, one point each.
        last_step = max((e.get("step") or 0 for e in events), default=0)
        for tag, value in (
            ("hparam/best_accuracy", info.best_accuracy),
            ("hparam/final_accuracy", info.last_accuracy),
        ):
            if _finite(value):
                summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])
                writer.add_event(Event(wall_time=time.time(), step=last_step, summary=summary))
        writer.flush()
        return out
    finally:
        writer.close()


# ----------------------------------------------------------------------------------------------
# HTML report


def export_html(run_dirs: list[Path], path: Path) -> Path:
    """One self-contained page about the runs (plotly.js inlined once; no network to view)."""
    from . import analysis
    from . import compare as comparing

    comparison = comparing.compare(run_dirs, curve_points=400)
    points = analysis.load_points(run_dirs)
    importance = analysis.analyse(points)
    parts = [
        _section("Runs", _metrics_table(comparison)),
        _section("Configuration: the parameters that differ", _diff_table(comparison)),
        _section("Seed statistics", _seed_table(comparison)),
        _section("Parameter importance", _importance(importance)),
        _section("Curves", _curves(comparison)),
        _section("Parallel coordinates", _parallel_coordinates(importance)),
    ]
    title = f"vqatune report: {len(run_dirs)} run{'s' if len(run_dirs) != 1 else ''}"
    page = PAGE.format(
        title=html.escape(title),
        created=html.escape(time.strftime("%Y-%m-%d %H:%M")),
        body="\n".join(parts),
        plotly=_plotly_js(),
    )
    path.write_text(page, encoding="utf-8")
    return path


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.75em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
td.best {{ font-weight: bold; color: #1a7f37; }}
td.changed {{ background: #fff4d6; }}
p.note {{ color: #666; }}
</style>
<script>{plotly}</script>
</head><body>
<h1>{title}</h1>
<p class="note">written by vqatune at {created}</p>
{body}
</body></html>
"""


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _td(text: Any, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape(_fmt(text))}</td>"


def _metrics_table(c) -> str:
    from .compare import METRICS

    header = ["run", "state"] + [label for _, label in METRICS]
    rows = []
    for r in c.runs:
        rows.append(
            [_td(r.info.id), _td(r.info.state)] + [_td(r.metrics[key]) for key, _ in METRICS]
        )
    return _table(header, rows)


def _diff_table(c) -> str:
    if len(c.runs) < 2:
        return '<p class="note">one run: nothing to compare.</p>'
    if not c.differing:
        return '<p class="note">every parameter is the same in every run.</p>'
    rows = []
    for name, values in c.differing:
        rows.append([_td(name)] + [_td(v, "changed" if v != values[0] else "") for v in values])
    return _table(["parameter"] + [r.info.id for r in c.runs], rows)


def _seed_table(c) -> str:
    if not c.groups:
        return '<p class="note">no runs that differ only in their seed.</p>'
    rows = []
    for g in c.groups:
        for key in ("best_accuracy", "final_accuracy"):
            mean, std = g.mean.get(key), g.std.get(key)
            text = "-" if mean is None else f"{mean:.4f} ± {std:.4f}"
            rows.append([_td(g.label), _td(", ".join(map(str, g.seeds))), _td(key), _td(text)])
    return _table(["group", "seeds", "metric", "mean ± std"], rows)


def _figure_html(fig) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _importance(result) -> str:
    note = (
        f'<p class="note">{html.escape(result.evaluator)} over {result.n_used} of '
        f"{result.n_runs} runs, metric {html.escape(result.metric)}"
        + (f"; {html.escape(result.warning)}" if result.warning else "")
        + "</p>"
    )
    if not result.importances:
        return note
    import plotly.graph_objects as go

    names = result.params[::-1]
    fig = go.Figure(go.Bar(x=[result.importances[n] for n in names], y=names, orientation="h"))
    fig.update_layout(height=120 + 24 * len(names), margin={"l": 140, "r": 20, "t": 10, "b": 40})
    return note + _figure_html(fig)


def _curves(c) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation accuracy", "training loss"))
    for r in c.runs:
        s = r.scan
        fig.add_trace(
            go.Scatter(x=s.accuracy_steps, y=s.accuracy, name=r.info.id, mode="lines+markers"),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(x=s.loss_steps, y=s.loss, name=r.info.id, showlegend=False),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=420, margin={"t": 40})
    return _figure_html(fig)


def _parallel_coordinates(result) -> str:
    scored = [p for p in result.points if p.metric is not None]
    if not scored or not result.params:
        return '<p class="note">needs finished runs with a parameter that varies.</p>'
    import plotly.graph_objects as go

    dims = []
    for name in result.params:
        values = [p.values.get(name) for p in scored]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            dims.append({"label": name, "values": values})
        else:
            choices = sorted({str(v) for v in values})
            dims.append(
                {
                    "label": name,
                    "values": [choices.index(str(v)) for v in values],
                    "tickvals": list(range(len(choices))),
                    "ticktext": choices,
                }
            )
    metric = [p.metric for p in scored]
    dims.append({"label": result.metric, "values": metric})
    fig = go.Figure(
        go.Parcoords(
            line={"color": metric, "colorscale": "Viridis", "showscale": True}, dimensions=dims
        )
    )
    fig.update_layout(height=460, margin={"l": 60, "r": 60, "t": 60, "b": 30})
    return _figure_html(fig)
