"""How values read on screen, one way for the CLI and the TUI alike.

Textual-free and torch-free: every CLI command imports it, so rich is imported only where a
style is rendered.
"""

from __future__ import annotations

MISSING = "-"

# Run states (engine.events.STATES) and sweep states (engine.sweep) as rich styles.
STATE_STYLES = {
    "running": "bold green",
    "queued": "cyan",
    "done": "green",
    "finished": "green",
    "stopped": "yellow",
    "incomplete": "yellow",
    "crashed": "bold red",
    "failed": "red",
    "diverged": "red",
    "oom": "red",
}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def duration(seconds: float | None) -> str:
    """Whole seconds, rounded: 59.6 -> `1m00s`, 3725 -> `1h02m` (seconds stop mattering)."""
    if not _number(seconds):
        return MISSING
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def accuracy(x: float | None) -> str:
    """An accuracy in [0, 1] with four decimals, as every table and bar shows it."""
    return f"{x:.4f}" if _number(x) else MISSING


def percent(x: float | None) -> str:
    """An accuracy in [0, 1] as a percentage with two decimals, for sentences."""
    return f"{100 * x:.2f}%" if _number(x) else MISSING


def mean_std(mean: float | None, std: float | None) -> str:
    """`mean ± std` of accuracies over seeds; the mean alone when there is no spread to show."""
    if not _number(mean):
        return MISSING
    return f"{accuracy(mean)} ± {accuracy(std)}" if _number(std) else accuracy(mean)


def state_style(state: str) -> str:
    return STATE_STYLES.get(state, "")


def state_text(state: str):
    """The state as rich Text in its colour (tables, the Runs screen)."""
    from rich.text import Text

    return Text(state, style=state_style(state))


def state_ansi(state: str, text: str | None = None) -> str:
    """`text` (default: the state) wrapped in the state's colour as ANSI escapes, for plain
    padded output that does not go through rich."""
    text = state if text is None else text
    style = state_style(state)
    if not style:
        return text
    from rich.color import ColorSystem
    from rich.style import Style

    return Style.parse(style).render(text, color_system=ColorSystem.STANDARD)
