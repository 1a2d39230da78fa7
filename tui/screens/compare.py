"""Compare: the parameters that differ (highlighted), metrics side by side, seed groups as
mean ± std, and overlaid validation-accuracy and loss curves."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from vqatune.engine import compare as comparing
from vqatune.engine.config import ConfigError
from vqatune.engine.schema import BY_NAME
from vqatune.tui.display import accuracy, mean_std
from vqatune.tui.form import display
from vqatune.tui.messages import CompareLoaded
from vqatune.tui.widgets.charts import MetricChart

CURVE_POINTS = 400


def short_id(run_id: str) -> str:
    """Drop the date from `YYYYmmdd-HHMMSS-name-abcd` so columns stay narrow."""
    parts = run_id.split("-")
    return "-".join(parts[2:]) if len(parts) > 3 else run_id


def _value_text(name: str, value) -> str:
    if value is None:
        return "-"
    return str(display(BY_NAME[name], value)) if name in BY_NAME else str(value)


class CompareScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, run_dirs: list[Path]):
        super().__init__(id="compare")
        self.run_dirs = [Path(d) for d in run_dirs]
        self.comparison: comparing.Comparison | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"Comparing {len(self.run_dirs)} runs", id="compare-title")
        with VerticalScroll(id="compare-body"):
            yield Static("Parameters that differ", classes="section-title")
            yield DataTable(id="compare-params", cursor_type="row", zebra_stripes=True)
            yield Static("Metrics", classes="section-title")
            yield DataTable(id="compare-metrics", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="compare-charts"):
                yield MetricChart("val accuracy", id="compare-accuracy")
                yield MetricChart("loss", id="compare-loss")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        try:
            comparison = comparing.compare(self.run_dirs, curve_points=CURVE_POINTS)
        except ConfigError as e:
            self.app.call_from_thread(self.notify, str(e), severity="error")
            return
        self.post_message(CompareLoaded(comparison))

    def on_compare_loaded(self, message: CompareLoaded) -> None:
        c: comparing.Comparison = message.comparison
        self.comparison = c
        names = [short_id(r.info.id) for r in c.runs]

        params = self.query_one("#compare-params", DataTable)
        params.clear(columns=True)
        params.add_columns("parameter", *names)
        for name, values in c.differing:
            first = values[0]
            cells = [
                Text(_value_text(name, v), style="bold reverse" if v != first else "")
                for v in values
            ]
            params.add_row(Text(name, style="bold"), *cells, key=name)
        if not c.differing:
            params.add_row("(all parameters equal)", *[""] * len(names))

        metrics = self.query_one("#compare-metrics", DataTable)
        metrics.clear(columns=True)
        metrics.add_columns("", *names)
        metrics.add_row("state", *[r.info.state for r in c.runs])
        metrics.add_row("source", *[r.info.source or "-" for r in c.runs])
        for key, label in (("best_accuracy", "best val acc"), ("final_accuracy", "final val acc")):
            metrics.add_row(label, *[accuracy(r.metrics[key]) for r in c.runs])
        losses = [r.metrics["final_loss"] for r in c.runs]
        metrics.add_row("final loss", *["-" if x is None else f"{x:.4f}" for x in losses])
        for g in c.groups:
            label = f"seeds {', '.join(map(str, g.seeds))}"
            best = mean_std(g.mean["best_accuracy"], g.std["best_accuracy"])
            members = {m.info.id for m in g.runs}
            cells = [f"best {best}" if r.info.id in members else "" for r in c.runs]
            metrics.add_row(label, *cells)

        curves = [r.curves(CURVE_POINTS) for r in c.runs]
        for chart_id, curve in (("#compare-accuracy", "val accuracy"), ("#compare-loss", "loss")):
            chart = self.query_one(chart_id, MetricChart)
            chart.clear()
            for name, run_curves in zip(names, curves):
                if curve in run_curves:
                    chart.extend(name, *run_curves[curve])
