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


def as_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Zero-copy tensors in the stored dtypes (uint8 images, float16 features): what workers
    ship to the main process, half or a quarter of the bytes of the final batch."""
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in batch.items()}


def finish(batch: dict[str, torch.Tensor], pin: bool = False) -> dict[str, torch.Tensor]:
    """Stored dtypes -> the contract's: images normalised float, features float, ids long.
    With `pin`, every tensor lands in pinned memory (converted ones are written there directly)."""
    out = {}
    for key, t in batch.items():
        if key == "image":
            t = (t.float().div_(255.0) - IMAGE_MEAN) / IMAGE_STD
        elif key in _FLOAT_KEYS and t.dtype != torch.float32:
            if pin:
                t = torch.empty(t.shape, dtype=torch.float32, pin_memory=True).copy_(t)
            else:
                t = t.float()
        elif t.dtype in (torch.int32, torch.int16, torch.uint8) and key != "image":
            t = t.long()
        if pin and not t.is_pinned():
            t = t.pin_memory()
        out[key] = t
    return out


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return finish(as_tensors(batch))


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """A list of samples (dataset[i]) -> a batch of tensors."""
    keys = samples[0].keys()
    return to_tensors({k: np.stack([np.asarray(s[k]) for s in samples]) for k in keys})


class _Batches(torch.utils.data.Dataset):
    """Indexed by an array of sample indices; returns the whole batch (stored dtypes)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return as_tensors(self.dataset.batch(indices))


class BatchLoader(DataLoader):
    """A DataLoader over whole index batches whose dtype conversion (and pinning) happens in the
    main process, so workers pass compact batches."""

    def __init__(self, dataset, batches: list[np.ndarray], *, num_workers: int, pin: bool):
        super().__init__(_Batches(dataset), sampler=batches, batch_size=None,
                         num_workers=num_workers, pin_memory=False,
                         prefetch_factor=4 if num_workers else None)
        self.pin = pin

    def __iter__(self):
        for batch in super().__iter__():
            yield finish(batch, self.pin)


def batch_indices(n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch: a permutation seeded by (seed, epoch) when shuffling."""
    order = (np.random.default_rng([seed, epoch]).permutation(n) if shuffle
             else np.arange(n))
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def make_loader(dataset, cfg, *, train: bool, seed: int, epoch: int,
                batch_size: int | None = None) -> BatchLoader:
    """A DataLoader over `dataset`: shuffled (deterministically from seed and epoch) for training,
    in order for evaluation; `num_workers` from cfg; pinned memory when training on CUDA."""
    size = batch_size or cfg.batch_size
    batches = batch_indices(len(dataset), size, shuffle=train, seed=seed, epoch=epoch)
    pin = cfg.device != "cpu" and torch.cuda.is_available()
    return BatchLoader(dataset, batches, num_workers=cfg.num_workers, pin=pin)
