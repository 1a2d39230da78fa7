"""Analysis: which parameters mattered, and where the good runs are.

Parallel coordinates of the runs (one axis per varying parameter, most important first, the
metric last; lines coloured by the metric) over the importances that ordered them. Keyboard
brushing: pick an axis, brush a range, move or resize it; runs outside fade, and the selection
opens in Compare.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static
from vqatune.engine import analysis
from vqatune.engine.config import ConfigError
from vqatune.tui import parcoords
from vqatune.tui.messages import AnalysisLoaded
from vqatune.tui.widgets.parcoords import ParallelCoordinates

BRUSH_STEP = 0.05


class AnalysisScreen(Screen):
    BINDINGS = [
        Binding("left", "axis(-1)", "Axis ←", show=False),
        Binding("right", "axis(1)", "Axis →", show=False),
        Binding("b", "brush", "Brush"),
        Binding("up", "move_brush(1)", "Brush ↑", show=False),
        Binding("down", "move_brush(-1)", "Brush ↓", show=False),
        Binding("plus,equals_sign", "size_brush(1)", "Wider", show=False),
        Binding("minus", "size_brush(-1)", "Narrower", show=False),
        Binding("x", "clear_brushes", "Clear"),
        Binding("c", "compare", "Compare"),
        Binding("e", "switch_evaluator", "Evaluator"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self, run_dirs: list[Path] | None = None, *, sweep: str | None = None, title: str = ""
    ):
        super().__init__(id="analysis")
        self.run_dirs = run_dirs
        self.sweep = sweep
        self.label = title or (f"sweep {sweep}" if sweep else "all runs")
        self.evaluator = "ped-anova"
        self.result: analysis.Importance | None = None
        self.scored: list[analysis.Point] = []

    def compose(self) -> ComposeResult:
        yield Static(f"Analysis · {self.label}", id="analysis-title")
        yield ParallelCoordinates(id="analysis-plot")
        yield Static("", id="analysis-importance")
        yield Static("loading…", id="analysis-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(ParallelCoordinates).focus()
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        runs_dir = getattr(self.app, "runs_dir", None)
        try:
            dirs = self.run_dirs
            if dirs is None:
                dirs = analysis.select_runs(sweep=self.sweep, runs_dir=runs_dir)
            points = analysis.load_points(dirs)
            self.post_message(AnalysisLoaded(analysis.analyse(points, evaluator=self.evaluator)))
        except ConfigError as e:
            self.post_message(AnalysisLoaded(None, str(e)))

    def on_analysis_loaded(self, message: AnalysisLoaded) -> None:
        if message.error:
            self.query_one("#analysis-status", Static).update(f"✗ {message.error}")
            return
        r = message.result
        self.result = r
        self.scored = [p for p in r.points if p.metric is not None]
        plot_points = [{"values": p.values, "metric": p.metric} for p in self.scored]
        axes = (
            parcoords.build_axes(plot_points, r.params, r.metric, r.importances) if r.params else []
        )
        self.query_one(ParallelCoordinates).set_data(plot_points, axes)
        shares = " · ".join(f"{n} {r.importances[n]:.2f}" for n in r.params if n in r.importances)
        head = f"{r.evaluator}, {r.n_used} of {r.n_runs} runs"
        warning = f"  ! {r.warning}" if r.warning else ""
        self.query_one("#analysis-importance", Static).update(
            f"importance ({head}): {shares or '-'}{warning}"
        )
        self.show_status()

    def show_status(self) -> None:
        plot = self.query_one(ParallelCoordinates)
        if not plot.axes:
            self.query_one("#analysis-status", Static).update("nothing to draw yet")
            return
        axis = plot.axes[plot.current]
        brush = plot.brushes.get(plot.current)
        where = f"{axis.label_at(brush.low)} – {axis.label_at(brush.high)}" if brush else "no brush"
        chosen = int(plot.selected().sum())
        self.query_one("#analysis-status", Static).update(
            f"axis {axis.name}: {where} · {chosen} of {len(plot.points)} runs selected · "
            "←/→ axis  b brush  ↑/↓ move  +/- size"
        )

    # ------------------------------------------------------------------------------------------

    def action_axis(self, delta: int) -> None:
        self.query_one(ParallelCoordinates).move_axis(delta)
        self.show_status()

    def action_brush(self) -> None:
        self.query_one(ParallelCoordinates).toggle_brush()
        self.show_status()

    def action_move_brush(self, direction: int) -> None:
        self.query_one(ParallelCoordinates).change_brush(move=direction * BRUSH_STEP)
        self.show_status()

    def action_size_brush(self, direction: int) -> None:
        self.query_one(ParallelCoordinates).change_brush(grow=direction * BRUSH_STEP)
        self.show_status()

    def action_clear_brushes(self) -> None:
        self.query_one(ParallelCoordinates).clear_brushes()
        self.show_status()

    def action_switch_evaluator(self) -> None:
        self.evaluator = "fanova" if self.evaluator == "ped-anova" else "ped-anova"
        self.query_one("#analysis-status", Static).update(f"computing {self.evaluator}…")
        self.load()

    def action_compare(self) -> None:
        keep = self.query_one(ParallelCoordinates).selected()
        paths = [p.path for p, k in zip(self.scored, keep) if k]
        if len(paths) < 2:
            self.notify("brush a range that holds two runs or more", severity="warning")
            return
        self.app.open_compare(paths)

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
