"""A store of finished runs whose accuracy depends mostly on lr (and a little on dropout),
with a boolean and a choice that vary too: what `analyze` and `export` are tested on."""

from __future__ import annotations

import math
import random
from pathlib import Path

from tui_fixtures import T0, make_run


def make_search_store(runs_dir: Path, n: int = 24, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    dirs = []
    for i in range(n):
        lr = 10 ** rng.uniform(-4.5, -3)
        values = {
            "lr": lr,
            "dropout": round(rng.uniform(0.1, 0.5), 3),
            "use_counter": rng.random() < 0.5,
            "activation": rng.choice(["relu", "swish"]),
            "seed": 1,
        }
        # Best near lr = 3e-4, falling off with |log10(lr / 3e-4)|.
        offset = 0.3 - 0.25 * abs(math.log10(lr / 3e-4)) - 0.02 * values["dropout"]
        dirs.append(
            make_run(
                runs_dir,
                f"20260102-{100000 + i:06d}-t{i}-{i:04x}",
                values=values,
                start=T0 + 60 * i,
                acc_offset=offset,
                steps=20,
                log_lines=3,
            )
        )
    return dirs
