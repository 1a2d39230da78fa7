"""Data: easy-VQA (built in), GQA and VQA v2 in their official layouts, a synthetic generator.

    bundle = build(cfg)            # .train, .eval (map-style, numpy samples), .meta (DataMeta)
    loader = make_loader(bundle.train, cfg, train=True, seed=cfg.seed, epoch=0)
    for batch in loader: ...       # dict of tensors (see the data/model contract)

Indexing needs numpy only; torch is imported by `collate` and `make_loader` (loader.py).
"""

from __future__ import annotations

from .common import DataBundle, DataError, DataMeta, cache_dir

__all__ = ["DataBundle", "DataError", "DataMeta", "build", "cache_dir", "collate", "make_loader"]


def build(cfg, eval_split: str | None = None) -> DataBundle:
    """The train and eval data sets and their metadata for cfg.dataset; `eval_split` names an
    official split to evaluate on instead of the default (val / testdev / test)."""
    if cfg.dataset == "easy-vqa":
        from . import easyvqa

        return easyvqa.build(cfg, eval_split)
    if cfg.dataset == "gqa":
        from . import gqa

        return gqa.build(cfg, eval_split)
    if cfg.dataset == "vqa":
        from . import vqa

        return vqa.build(cfg, eval_split)
    if cfg.dataset == "synthetic":
        from . import synth

        return synth.build(cfg, eval_split)
    raise DataError(f"dataset: unknown data set {cfg.dataset!r}")


def collate(samples):
    from .loader import collate as _collate

    return _collate(samples)


def make_loader(dataset, cfg, *, train: bool, seed: int, epoch: int, batch_size=None):
    from .loader import make_loader as _make_loader

    return _make_loader(dataset, cfg, train=train, seed=seed, epoch=epoch, batch_size=batch_size)
