"""Batches as torch tensors: `collate`, and `make_loader` over the data sets' vectorised fast path.

The only data module that imports torch. A loader draws whole index batches (a seeded
permutation per epoch) and asks the data set for each batch at once (`dataset.batch(indices)`),
so indexing and stacking happen in numpy, in the worker processes when num_workers > 0.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

# X-VLM (CLIP) image normalisation
IMAGE_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
IMAGE_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
_FLOAT_KEYS = ("regions", "boxes", "node_boxes", "target", "score")


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Stacked numpy arrays -> the contract's tensors (uint8 images normalised, float16 -> float)."""
    out = {}
    for key, value in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(value))
        if key == "image":
            t = (t.float().div_(255.0) - IMAGE_MEAN) / IMAGE_STD
        elif key in _FLOAT_KEYS:
            t = t.float()
        elif t.dtype == torch.int32 or t.dtype == torch.int16:
            t = t.long()
        out[key] = t
    return out


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """A list of samples (dataset[i]) -> a batch of tensors."""
    keys = samples[0].keys()
    return to_tensors({k: np.stack([np.asarray(s[k]) for s in samples]) for k in keys})


class _Batches(torch.utils.data.Dataset):
    """Indexed by an array of sample indices; returns the whole batch."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return to_tensors(self.dataset.batch(indices))


def batch_indices(n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch: a permutation seeded by (seed, epoch) when shuffling."""
    order = (np.random.default_rng([seed, epoch]).permutation(n) if shuffle
             else np.arange(n))
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def make_loader(dataset, cfg, *, train: bool, seed: int, epoch: int,
                batch_size: int | None = None) -> DataLoader:
    """A DataLoader over `dataset`: shuffled (deterministically from seed and epoch) for training,
    in order for evaluation; `num_workers` from cfg; pinned memory when training on CUDA."""
    size = batch_size or cfg.batch_size
    batches = batch_indices(len(dataset), size, shuffle=train, seed=seed, epoch=epoch)
    workers = cfg.num_workers
    pin = cfg.device != "cpu" and torch.cuda.is_available()
    return DataLoader(
        _Batches(dataset), sampler=batches, batch_size=None, num_workers=workers,
        pin_memory=pin, persistent_workers=False, prefetch_factor=4 if workers else None,
    )
