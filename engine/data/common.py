"""What every data set shares: errors, DataMeta, DataBundle, the cache dir, JSON reading.

Light module: numpy only, no torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from vqatune.engine.config import ConfigError

PAD, UNK = "<pad>", "<unk>"
DROP_LIMIT = 0.01  # more than 1% of questions dropped is an error unless cfg.allow_dropped


class DataError(ConfigError):
    """A problem with the user's data files: one line naming the file (and line)."""


@dataclass
class DataMeta:
    dataset: str
    vocab: list[str]  # question vocabulary; id 0 = <pad>, 1 = <unk>
    answers: list[str]
    answer_types: list[str]
    soft_targets: bool = False  # VQA v2: BCE on soft scores; otherwise cross-entropy
    word_init: np.ndarray | None = None  # [V, 300] float32 TF-IDF init when cfg.tfidf
    visual: str = "pixels"  # "pixels" (batches carry `image`) or "regions"
    feature_dim: int = 0
    has_graph: bool = False
    node_vocab: list[str] = field(default_factory=list)
    attr_vocab: list[str] = field(default_factory=list)
    rel_vocab: list[str] = field(default_factory=list)
    max_attrs: int = 0
    # Not in the trainer contract; reported by `data inspect`.
    counts: dict[str, Any] = field(default_factory=dict)


class BatchedDataset:
    """A map-style data set whose `batch(indices)` builds a whole batch in numpy (the loader's
    fast path); `[i]` is row i of `batch([i])`, so both paths give identical samples."""

    def __len__(self) -> int:
        raise NotImplementedError

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        rows = self.batch(np.array([i % n]))
        return {k: (v[0].item() if v.ndim == 1 else v[0]) for k, v in rows.items()}


@dataclass
class DataBundle:
    train: BatchedDataset
    eval: BatchedDataset
    meta: DataMeta


def cache_dir() -> Path:
    """VQATUNE_CACHE, else $XDG_CACHE_HOME/vqatune, else ~/.cache/vqatune."""
    if os.environ.get("VQATUNE_CACHE"):
        return Path(os.environ["VQATUNE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "vqatune"


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def require_file(path: Path, official: str) -> Path:
    if not path.is_file():
        raise DataError(
            f"{path}: no such file (expected the official file {official} in {path.parent})"
        )
    return path


def load_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error names the file and the line."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: malformed JSON: not UTF-8 ({e.reason})") from None


def check_dropped(dropped: dict[str, int], total: int, allow: bool, what: str) -> None:
    """Questions without a graph/features are dropped; over 1% is an error unless allowed."""
    n = sum(dropped.values())
    if total and n / total > DROP_LIMIT and not allow:
        reasons = ", ".join(f"{v} {k}" for k, v in dropped.items() if v)
        raise DataError(
            f"{what}: {n} of {total} questions dropped ({reasons}); more than 1% "
            f"is an error (set allow_dropped = true to accept it)"
        )


def one_hot(labels: np.ndarray, num_answers: int) -> np.ndarray:
    """labels [B] (-1 = none) -> float32 [B, A]."""
    out = np.zeros((len(labels), num_answers), np.float32)
    hit = labels >= 0
    out[np.nonzero(hit)[0], labels[hit]] = 1.0
    return out


def limit(n: int, cap: int) -> int:
    return min(n, cap) if cap > 0 else n


def training_splits(cfg, eval_split: str, aliases: dict[str, str] | None = None) -> list[str]:
    """cfg.train_splits as a list, checked: not empty, and without the evaluation split
    (`aliases` maps other spellings of a split to one name, as VQA's val2014 -> val)."""
    aliases = aliases or {}
    splits = [aliases.get(s, s) for s in (x.strip() for x in cfg.train_splits.split(",")) if s]
    if not splits:
        raise DataError("train_splits: no split given (for example train, or train,val)")
    if aliases.get(eval_split, eval_split) in splits:
        raise DataError(
            f"train_splits: the evaluation split {eval_split} is among the training splits "
            f"({', '.join(splits)}); set eval_split to another split"
        )
    return list(dict.fromkeys(splits))


def merged(tables: list[dict | None]) -> dict | None:
    """One table from several splits' (image ids do not repeat across the official splits);
    None when a split has none."""
    if any(t is None for t in tables):
        return None
    return tables[0] if len(tables) == 1 else {k: v for t in tables for k, v in t.items()}
