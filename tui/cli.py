"""`vqatune`: the command tree.

Start-up must stay light: this module and the command modules import neither torch,
transformers nor textual at module level. Commands that need them import inside the function.
"""

from __future__ import annotations

import sys

import typer
from vqatune.tui.commands import register_all

app = typer.Typer(
    name="vqatune",
    help="A terminal workstation for tuning visual question answering models.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

register_all(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
