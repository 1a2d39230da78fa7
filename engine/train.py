"""`python -m vqatune.engine.train RUN_DIR [--resume]`: the training process of one run.

Trains RUN_DIR/config.toml and writes only into RUN_DIR (see events.py). Exit codes: 0 done,
1 failed, diverged or out of memory, 130 stopped by SIGINT/SIGTERM, 2 no such run directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import events, exitcodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vqatune.engine.train", description="Train the config of a run directory."
    )
    parser.add_argument("run_dir", type=Path, help="run directory holding config.toml")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from checkpoints/last.pt (from the start if there is none)",
    )
    args = parser.parse_args(argv)
    if not (args.run_dir / events.CONFIG_FILE).is_file():
        print(
            f"error: {args.run_dir}: no {events.CONFIG_FILE} (not a run directory)", file=sys.stderr
        )
        return exitcodes.BAD_INPUT
    from .trainer import Trainer

    trainer = Trainer(args.run_dir, resume=args.resume)
    code = trainer.run()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun, leave without running destructors (the trainer stays referenced):
        # tearing down DDP's gloo process group blocks forever once a peer is gone.
        # Everything is written and closed.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
