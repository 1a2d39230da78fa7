"""Submission files in the official formats, and which checkpoint of a run predicts them.

    VQA v2 (EvalAI, test-dev / test-std):  [{"question_id": int, "answer": str}, ...]
    GQA (testdev / submission):            [{"questionId": str, "prediction": str}, ...]

Light module: no torch (the CLI checks a run's checkpoints before it starts `engine.predict`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError
from .events import CHECKPOINT_DIR

CHECKPOINTS = {"best": "best.pt", "last": "last.pt"}
FORMATS = {"vqa": ("question_id", "answer"), "gqa": ("questionId", "prediction")}
DATASET_FORMATS = {"vqa": "vqa", "gqa": "gqa", "synthetic": "gqa"}


def format_for(dataset: str) -> str:
    if dataset not in DATASET_FORMATS:
        raise ConfigError(
            f"dataset: {dataset} has no official submission format (gqa, vqa and synthetic do)"
        )
    return DATASET_FORMATS[dataset]


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """best | last (in RUN_DIR/checkpoints) or the path of a checkpoint file."""
    if which in CHECKPOINTS:
        path = Path(run_dir) / CHECKPOINT_DIR / CHECKPOINTS[which]
        if not path.is_file():
            raise ConfigError(
                f"--checkpoint: {Path(run_dir).name} has no {which} checkpoint "
                f"({path} does not exist; a run writes them at its evaluations)"
            )
        return path
    path = Path(which).expanduser()
    if not path.is_file():
        raise ConfigError(f"--checkpoint: {path}: no such file (expected best, last or a path)")
    return path


def records(fmt: str, question_ids: Sequence, answers: Sequence[str]) -> list[dict]:
    id_key, answer_key = FORMATS[fmt]
    convert = int if fmt == "vqa" else str
    return [{id_key: convert(q), answer_key: a} for q, a in zip(question_ids, answers)]


def write(path: Path, rows: list[dict]) -> None:
    """Atomically: a stopped prediction leaves no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(rows, f)
    os.replace(tmp, path)
