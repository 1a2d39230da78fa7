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
from vqatune.engine import curves
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


CHARTS = (("#compare-accuracy", "validation accuracy"), ("#compare-loss", "training loss"))


class CompareScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("a", "analyse", "Analysis"),
        Binding("m", "cycle_smoothing", "Smoothing"),
        Binding("right_square_bracket", "factor(1)", "Factor +", show=False),
        Binding("left_square_bracket", "factor(-1)", "Factor -", show=False),
        Binding("x", "cycle_x", "X axis"),
    ]

    def __init__(self, run_dirs: list[Path]):
        super().__init__(id="compare")
        self.run_dirs = [Path(d) for d in run_dirs]
        self.comparison: comparing.Comparison | None = None
        self.results: list = []  # engine.compare.RunResult: curves on any x axis
        self.smoothing, self.factor, self.x_axis = "none", 0.0, "step"

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
            yield Static("", id="compare-curve-stats")
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

    def draw_curves(self) -> None:
        """Raw points on the chosen x axis; the charts smooth, the stats are of raw points."""
        per_run = [(short_id(r.info.id), curves.run_curves(r, x=self.x_axis)) for r in self.results]
        lines = []
        for chart_id, name in CHARTS:
            chart = self.query_one(chart_id, MetricChart)
            chart.clear()
            chart.xlabel = curves.X_LABELS[self.x_axis]
            chart.smoothing = (self.smoothing, self.factor)
            for label, found in per_run:
                c = found.get(name)
                if c is not None:
                    chart.extend(label, c.xs, c.ys)
                    if c.stats:
                        lines.append(f"{name[:8]:<8} {label}  {c.stats.text(3)}")
            chart.redraw()
        keys = "m smoothing · [ ] factor · x axis · a analysis"
        self.query_one("#compare-curve-stats", Static).update("\n".join([keys, *lines]))

    def action_cycle_smoothing(self) -> None:
        self.smoothing, self.factor = curves.next_smoothing(self.smoothing)
        self.draw_curves()

    def action_factor(self, direction: int) -> None:
        self.factor = curves.next_factor(self.smoothing, self.factor, up=direction > 0)
        self.draw_curves()

    def action_cycle_x(self) -> None:
        order = curves.X_AXES
        self.x_axis = order[(order.index(self.x_axis) + 1) % len(order)]
        self.draw_curves()

    def action_analyse(self) -> None:
        self.app.open_analysis(self.run_dirs)

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

        self.results = c.runs
        self.draw_curves()
