"""`vqatune predict RUN --split SPLIT --out FILE [--checkpoint best|last|PATH]`: a submission file.

The predictions are made by `python -m vqatune.engine.predict` (this process imports no torch);
its JSON progress lines on stdout feed a progress bar.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import typer

from .common import fail, user_errors
from .runs_cmd import RunsDirOption


def predict(
    run: str = typer.Argument(..., metavar="RUN", help="Run id, id prefix, name or directory."),
    split: str = typer.Option(
        ...,
        "--split",
        help="Official split: GQA val / testdev / test, VQA v2 val / testdev / test.",
    ),
    out: Path = typer.Option(..., "--out", "-o", metavar="FILE", help="The file to write."),
    checkpoint: str = typer.Option(
        "best", "--checkpoint", help="best, last, or the path of a checkpoint file."
    ),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Predict every question of SPLIT with a run's checkpoint and write the official submission
    format: VQA v2 [{question_id, answer}], GQA [{questionId, prediction}]."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from vqatune.engine import runstore, submission

    with user_errors():
        run_dir = runstore.find_run(run, runs_dir)
        submission.checkpoint_path(run_dir, checkpoint)  # before a process starts
    command = [sys.executable, "-m", "vqatune.engine.predict", str(run_dir)]
    command += ["--split", split, "--out", str(out), "--checkpoint", checkpoint]
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        result = {}
        with Progress(  # transient: what stays is the one result (or error) line
            TextColumn(f"{run_dir.name} {split}"),
            BarColumn(),
            MofNCompleteColumn(),
            transient=True,
        ) as progress:
            task = progress.add_task("predict", total=None)
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if "total" in event:
                    progress.update(task, total=event["total"])
                elif "done" in event:
                    progress.update(task, completed=event["done"])
                elif "written" in event:
                    result = event
        code = proc.wait()
        if code:
            errors.seek(0)
            lines = [x for x in errors.read().splitlines() if x.strip()]
            message = lines[-1] if lines else f"the prediction process exited with {code}"
            fail(message.removeprefix("error: "), code=code if code == 2 else 1)
    typer.echo(
        f"{result['written']}: {result['questions']:,} predictions ({result['format']} format)"
    )


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
