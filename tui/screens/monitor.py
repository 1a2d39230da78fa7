"""Monitor: one run live — header, loss / accuracy / memory charts, log tail, stop, kill, resume."""

from __future__ import annotations

import time
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import Footer, Log, Static
from vqatune.engine import config as config_mod
from vqatune.engine import curves, runstore
from vqatune.engine import events as ev
from vqatune.engine.config import ConfigError
from vqatune.tui import display
from vqatune.tui.messages import RunUpdate, RunUpdated, UserError
from vqatune.tui.palette import PaletteBinding
from vqatune.tui.readers import RunWatcher
from vqatune.tui.widgets.charts import MetricChart

POLL_S = 1.0  # how often a live run is read (the charts redraw at most once a second too)
MIB = 1 << 20

STATE_TEXT = {
    "queued": "QUEUED: the training process is starting",
    "running": "RUNNING",
    "done": "DONE: the run finished",
    "stopped": "STOPPED: ended on request after a checkpoint; r resumes it",
    "diverged": "DIVERGED: the loss became NaN or infinite",
    "oom": "OUT OF MEMORY",
    "failed": "FAILED",
    "crashed": "CRASHED: r resumes from the last checkpoint",
}


def pretrained_text(start: dict) -> str | None:
    """What initialised the run's model, from its `start` event (None: a run from before the
    event said so)."""
    if "checkpoint" not in start:
        return None
    report = start["checkpoint"]
    if not report:
        return "from scratch"
    return f"pretrained: {report.get('loaded', 0):,} tensors from {Path(report['path']).name}"


def header_lines(
    info,
    effective_batch: int | None,
    pretrained: str | None = None,
    queue_position: int | None = None,
) -> tuple[str, str]:
    """The two header lines for a RunInfo: what it is doing, and its state in plain words
    (for a run waiting in the queue, its place in line)."""
    st = info.status or {}
    epoch = f"epoch {info.epoch if info.epoch is not None else '-'}/{info.epochs or '-'}"
    step = f"step {info.step if info.step is not None else '-'}/{info.total_steps or '-'}"
    parts = [info.id, info.state.upper(), epoch, step]
    if info.state == "running":
        parts.append(f"ETA {display.duration(st.get('eta_s'))}")
    sps = st.get("samples_per_s")
    parts.append(f"{sps:.1f} samples/s" if isinstance(sps, (int, float)) else "- samples/s")
    if effective_batch is not None:
        world = st.get("world_size") or 1
        parts.append(f"eff. batch {effective_batch * world}")
    if pretrained:
        parts.append(pretrained)
    line1 = "  ".join(parts)
    line2 = STATE_TEXT.get(info.state, info.state.upper())
    if queue_position is not None:
        line2 = (
            f"QUEUED: position {queue_position} in the run queue; it starts when a GPU is free "
            "(F3 lists the line, x there cancels it)"
        )
    if info.state in ("done", "stopped", "diverged", "oom", "failed", "crashed"):
        line2 += f" · {display.duration(info.duration_s)}"
        if info.best_accuracy is not None:
            line2 += f" · best val accuracy {display.accuracy(info.best_accuracy)}"
    if info.message:
        line2 += f" · {info.message}"
    return line1, line2


class MonitorScreen(Screen):
    """Reads the run directory in a worker; never owns the training process."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        PaletteBinding(
            "s", "stop", "Stop", title="Stop run", help="Graceful: checkpoint, then stopped"
        ),
        PaletteBinding("k", "kill", "Kill", title="Kill run", help="SIGKILL the training process"),
        PaletteBinding(
            "r", "resume", "Resume", title="Resume run", help="Continue a stopped or crashed run"
        ),
        PaletteBinding(
            "m",
            "cycle_smoothing",
            "Smooth",
            title="Smooth the charts",
            help="None, EMA, moving window; [ and ] change the factor",
        ),
        Binding("right_square_bracket", "factor(1)", "Factor +", show=False),
        Binding("left_square_bracket", "factor(-1)", "Factor -", show=False),
    ]

    def __init__(self, run_dir: Path):
        super().__init__(id="monitor")
        self.run_dir = Path(run_dir)
        self.info = None
        self.effective_batch: int | None = None
        self.steps_seen = 0
        self.watcher: RunWatcher | None = None  # kept across resumes: offsets, not a re-read
        self.header: tuple[str, str] | None = None
        self.pretrained: str | None = None  # from the start event
        self.smoothing, self.factor = "none", 0.0  # engine.curves method, for every chart

    def compose(self) -> ComposeResult:
        yield Static(self.run_dir.name, id="run-header")
        yield Static("", id="run-state")
        with Grid(id="charts"):
            yield MetricChart("loss", id="chart-loss")
            yield MetricChart("accuracy", id="chart-accuracy")
            yield MetricChart("memory (MiB)", id="chart-memory")
            yield Log(id="log-tail", max_lines=2000)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.watch_run()

    @work(thread=True, exclusive=True, group="watch")
    def watch_run(self) -> None:
        """Poll until the run is final and fully read; the first poll loads the whole history."""
        from textual.worker import get_current_worker

        worker = get_current_worker()
        if self.watcher is None:
            try:
                cfg = config_mod.load(str(self.run_dir / ev.CONFIG_FILE))
                self.effective_batch = cfg.effective_batch_size
            except config_mod.ConfigError:
                self.effective_batch = None
            self.watcher = RunWatcher(self.run_dir)
        while not worker.is_cancelled:
            update = self.watcher.poll()
            self.post_message(RunUpdated(update))
            ended = update.status.state in ev.FINAL_STATES + ("crashed",)
            if ended and not update.new_events:
                break
            time.sleep(POLL_S)
        self.watcher.close()

    def on_run_updated(self, message: RunUpdated) -> None:
        update: RunUpdate = message.update
        self.info = update.status
        if update.start is not None:
            self.pretrained = pretrained_text(update.start)
        lines = header_lines(
            update.status, self.effective_batch, self.pretrained, update.queue_position
        )
        if lines != self.header:  # repaint only what changed: the monitor must stay light
            self.header = lines
            self.query_one("#run-header", Static).update(lines[0])
            state = self.query_one("#run-state", Static)
            state.update(lines[1])
            for s in ev.STATES:
                state.set_class(s == update.status.state, f"-{s}")
        self.steps_seen += update.steps
        for (chart, series), (xs, ys) in update.points.items():
            self.query_one(f"#chart-{chart}", MetricChart).extend(series, xs, ys)
        if update.gpu is not None and update.status.step is not None:
            self.add_gpu_sample(update.status.step, update.gpu)
        if update.log_lines:
            self.query_one("#log-tail", Log).write_lines(update.log_lines)

    def add_gpu_sample(self, step: int, snapshot) -> None:
        """Used and total memory of every GPU, and what this run holds, sampled live."""
        mem = self.query_one("#chart-memory", MetricChart)
        for g in snapshot.gpus:
            mem.add(f"gpu{g.index} used", step, g.memory_used / MIB)
            mem.add(f"gpu{g.index} total", step, g.memory_total / MIB)
            if g.process_memory is not None:
                mem.add(f"gpu{g.index} this run", step, g.process_memory / MIB)

    # Smoothing keys: the charts are redrawn at once, from the points they hold

    def action_cycle_smoothing(self) -> None:
        self.smoothing, self.factor = curves.next_smoothing(self.smoothing)
        self.apply_smoothing()

    def action_factor(self, direction: int) -> None:
        self.factor = curves.next_factor(self.smoothing, self.factor, up=direction > 0)
        self.apply_smoothing()

    def apply_smoothing(self) -> None:
        for chart in self.query(MetricChart):
            chart.smoothing = (self.smoothing, self.factor)
            chart.redraw()

    # ------------------------------------------------------------------------------------------
    # Actions: blocking calls in workers

    def action_stop(self) -> None:
        self.signal_run(kill=False)

    def action_kill(self) -> None:
        self.signal_run(kill=True)

    @work(thread=True, group="control")
    def signal_run(self, kill: bool) -> None:
        try:
            runstore.stop(self.run_dir, kill=kill)
        except ConfigError as e:  # not running (any more)
            self.post_message(UserError(str(e)))
            return
        self.app.call_from_thread(
            self.notify, f"{'killed' if kill else 'stopping'} {self.run_dir.name}"
        )

    def action_resume(self) -> None:
        self.resume_run()

    @work(thread=True, group="control")
    def resume_run(self) -> None:
        try:
            runstore.resume(self.run_dir)  # refuses live runs and runs that ended for good
        except (ConfigError, OSError) as e:
            self.post_message(UserError(f"cannot resume: {e}"))
            return
        self.app.call_from_thread(self.restart_watch)

    def restart_watch(self) -> None:
        self.notify(f"resuming {self.run_dir.name}")
        self.watch_run()

    def on_user_error(self, message: UserError) -> None:
        self.notify(message.text, severity="error", timeout=6)
