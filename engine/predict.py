"""`python -m vqatune.engine.predict RUN_DIR --split SPLIT --out FILE [--checkpoint best|last|PATH]`

Answers every question of an official split with a run's checkpoint and writes the submission
file (engine/submission.py). The data is built as the run built it (its vocabularies and answer
set), with SPLIT as the evaluation split and no eval_limit. Progress goes to stdout as JSON
lines: {"total": N}, then {"done": k} per batch, then {"written": FILE, "questions": N,
"format": ...}. Exit codes: 0 written, 2 a user mistake (one line on stderr: no such split or
no questions in it, no checkpoint, a checkpoint that does not fit the data).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import events, submission
from .config import ConfigError


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def predict(run_dir: Path, split: str, out: Path, which: str = "best") -> int:
    from . import data
    from .config import load as load_config

    cfg = load_config(str(run_dir / events.CONFIG_FILE))
    fmt = submission.format_for(cfg.dataset)
    path = submission.checkpoint_path(run_dir, which)
    cfg = cfg.replace(eval_limit=0, checkpoint="")  # every question; weights from `path`
    bundle = data.build(cfg, eval_split=split)
    questions = bundle.eval
    if len(questions) == 0:
        raise ConfigError(f"--split: {split} has no questions")
    # torch and the model code (~10 s to import) only now: a wrong split is said at once
    import torch

    from . import checkpoint, precision
    from .model import build_model

    device = precision.pick_device(cfg)
    if device.type == "cuda" and not torch.cuda.is_available():
        device = torch.device("cpu")
    model = build_model(cfg, bundle.meta)
    state = checkpoint.load(path, map_location="cpu")["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).split("\n")[1].strip() if "\n" in str(e) else str(e)
        raise ConfigError(
            f"--checkpoint: {path} does not fit the model built for split {split} ({first})"
        ) from None
    model.to(device).eval()
    autocast = precision.precision_for(cfg, device).autocast
    loader = data.make_loader(questions, cfg, train=False, seed=cfg.seed, epoch=0)
    answers: list[str] = [""] * len(questions)
    emit(total=len(questions))
    done = 0
    with torch.no_grad():
        for indices, batch in zip(loader.sampler, loader):
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast():
                predicted = model(batch)["logits"]["fused"].argmax(-1).tolist()
            for i, p in zip(indices.tolist(), predicted):
                answers[i] = bundle.meta.answers[p]
            done += len(indices)
            emit(done=done)
    submission.write(out, submission.records(fmt, questions.question_ids, answers))
    emit(written=str(out), questions=len(questions), format=fmt)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vqatune.engine.predict",
        description="Write a submission file of a run's predictions on an official split.",
    )
    parser.add_argument("run_dir", type=Path, help="run directory holding config.toml")
    parser.add_argument("--split", required=True, help="official split (val, testdev, test, ...)")
    parser.add_argument("--out", type=Path, required=True, help="the submission file to write")
    parser.add_argument("--checkpoint", default="best", help="best, last or a checkpoint file")
    args = parser.parse_args(argv)
    if not (args.run_dir / events.CONFIG_FILE).is_file():
        print(
            f"error: {args.run_dir}: no {events.CONFIG_FILE} (not a run directory)", file=sys.stderr
        )
        return 2
    try:
        return predict(args.run_dir, args.split, args.out, args.checkpoint)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
