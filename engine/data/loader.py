"""Batches as torch tensors: `collate`, and `make_loader` over the data sets' vectorised fast path.

The only data module that imports torch. A loader draws whole index batches (a seeded
permutation per epoch) and asks the data set for each batch at once (`dataset.batch(indices)`),
so indexing and stacking happen in numpy, in the worker processes when num_workers > 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

# X-VLM (CLIP) image normalisation, as a table: normalised value of each uint8 level per channel
IMAGE_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
IMAGE_STD = np.array([0.26862954, 0.26130258, 0.27577711])
_LEVELS = ((np.arange(256)[None, :] / 255.0 - IMAGE_MEAN[:, None]) / IMAGE_STD[:, None]).astype(
    np.float32
)  # [3, 256]


def normalise_images(images: np.ndarray) -> np.ndarray:
    """uint8 [B, 3, H, W] -> normalised float32, by table look-up (cheaper than arithmetic)."""
    return np.stack([_LEVELS[c][images[:, c]] for c in range(3)], axis=1)


_FLOAT_KEYS = ("regions", "boxes", "node_boxes", "target", "score")


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Stacked numpy arrays (stored dtypes: uint8 images, float16 features) -> the contract's
    tensors: images normalised float, features float, ids long."""
    out = {}
    for key, value in batch.items():
        if key == "image":
            t = torch.from_numpy(normalise_images(value))
        else:
            t = torch.from_numpy(np.ascontiguousarray(value))
            if key in _FLOAT_KEYS and t.dtype != torch.float32:
                t = t.float()
            elif t.dtype in (torch.int32, torch.int16, torch.uint8):
                t = t.long()
        out[key] = t
    return out


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """A list of samples (dataset[i]) -> a batch of tensors."""
    keys = samples[0].keys()
    return to_tensors({k: np.stack([np.asarray(s[k]) for s in samples]) for k in keys})


class BatchDataset(torch.utils.data.Dataset):
    """Indexed by an array of sample indices; returns the whole batch, as contract tensors.

    A DataLoader over it takes `sampler=<list of index arrays>, batch_size=None`; the trainer
    rebuilds such loaders (to resume mid-epoch) from `loader.dataset`.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return to_tensors(self.dataset.batch(indices))


def batch_indices(
    n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int
) -> list[np.ndarray]:
    """The batches of one epoch: a permutation seeded by (seed, epoch) when shuffling."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def make_loader(
    dataset, cfg, *, train: bool, seed: int, epoch: int, batch_size: int | None = None
) -> DataLoader:
    """A DataLoader over `dataset`: shuffled (deterministically from seed and epoch) for training,
    in order for evaluation; `num_workers` from cfg; pinned memory when training on CUDA.

    Its sampler yields whole index batches (batch_size=None) and the data set builds each batch
    at once in numpy; with memory-mapped features, num_workers = 0 is usually fastest."""
    size = batch_size or cfg.batch_size
    batches = batch_indices(len(dataset), size, shuffle=train, seed=seed, epoch=epoch)
    workers = cfg.num_workers
    if workers and batches:  # data a set loads on first read (easy-VQA's images): once, here
        dataset.batch(batches[0][:1])
    pin = cfg.device != "cpu" and torch.cuda.is_available()
    return DataLoader(
        BatchDataset(dataset),
        sampler=batches,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
    )
