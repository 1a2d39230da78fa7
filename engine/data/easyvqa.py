"""easy-VQA (the easy-vqa PyPI package): 64x64 shapes, 13 answers, pixels in, no scene graph.

The PNGs are decoded once into uint8 arrays [images, 3, res, res] under the cache dir (keyed by
the package version and the resolution) and memory-mapped afterwards. Samples carry the uint8
image; `collate` converts and normalises it. Light module: numpy and pillow only.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np

from .common import (
    BatchedDataset,
    DataBundle,
    DataError,
    DataMeta,
    cache_dir,
    limit,
    one_hot,
    save_npy_atomic,
)
from .images import image_res
from .vocab import build_vocab, encode, tfidf_init

NATIVE_RES = 64
ANSWER_TYPES = ["yes/no", "color", "shape"]
SHAPES = ("circle", "rectangle", "triangle")


def answer_type(answer: str) -> int:
    if answer in ("yes", "no"):
        return 0
    return 2 if answer in SHAPES else 1


def _package():
    try:
        import easy_vqa
    except ImportError:  # pragma: no cover - a declared dependency
        raise DataError(
            "dataset easy-vqa needs the easy-vqa package: pip install easy-vqa"
        ) from None
    return easy_vqa


def images_path(split: str, res: int) -> Path:
    version = metadata.version("easy-vqa")
    return cache_dir() / f"easy-vqa-{version}" / f"{split}-images-{res}.npy"


def _decode(paths: dict[int, str], res: int) -> np.ndarray:
    from PIL import Image

    ids = sorted(paths)
    if ids != list(range(len(ids))):
        raise DataError(f"easy-vqa: image ids of {Path(paths[ids[0]]).parent} are not 0..N-1")
    out = np.empty((len(ids), 3, res, res), np.uint8)
    for i in ids:
        with Image.open(paths[i]) as im:
            im = im.convert("RGB")
            if im.size != (res, res):
                im = im.resize((res, res), Image.BILINEAR)
            out[i] = np.asarray(im).transpose(2, 0, 1)
    return out


def load_images(split: str, res: int) -> np.ndarray:
    """uint8 [images, 3, res, res], memory-mapped from the cache (decoded on first use)."""
    path = images_path(split, res)
    if not path.exists():
        pkg = _package()
        paths = pkg.get_train_image_paths() if split == "train" else pkg.get_test_image_paths()
        save_npy_atomic(path, _decode(paths, res))
    return np.load(path, mmap_mode="r")


class EasyVQADataset(BatchedDataset):
    """`images` is the uint8 array or a (split, res) pair, loaded (decoded on first use) when a
    sample is first read: a build for the vocabularies alone (`vqatune model summary`, a dry
    run) decodes no image."""

    def __init__(
        self,
        images: np.ndarray | tuple[str, int],
        image_ids: np.ndarray,
        q_tokens: np.ndarray,
        labels: np.ndarray,
        types: np.ndarray,
        num_answers: int,
        num_stat_word: int,
    ):
        self._images = images  # uint8 [I, 3, H, W] (mmap), or (split, res) until first read
        self.image_ids = image_ids  # int64 [Q]
        self.q_tokens = q_tokens  # int64 [Q, L]
        self.labels = labels  # int64 [Q]
        self.types = types  # int64 [Q]
        self.num_answers = num_answers
        self.num_stat_word = num_stat_word

    @property
    def images(self) -> np.ndarray:
        if isinstance(self._images, tuple):
            self._images = load_images(*self._images)
        return self._images

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, np.int64)
        labels = self.labels[indices]
        target = one_hot(labels, self.num_answers)
        q = self.q_tokens[indices]
        stat = np.zeros((len(indices), self.num_stat_word), np.int64)  # no scene graph
        return {
            "q_tokens": q,
            "q_mask": q != 0,
            "image": np.ascontiguousarray(self.images[self.image_ids[indices]]),
            "stat_words": stat,
            "stat_mask": stat != 0,
            "target": target,
            "score": target.copy(),
            "label": labels,
            "answer_type": self.types[indices],
        }


def _split(split: str, cap: int):
    pkg = _package()
    texts, answers, image_ids = (
        pkg.get_train_questions() if split == "train" else pkg.get_test_questions()
    )
    n = limit(len(texts), cap)
    return texts[:n], answers[:n], np.asarray(image_ids[:n], np.int64)


def build(cfg, eval_split: str | None = None) -> DataBundle:
    if eval_split not in (None, "test"):
        raise DataError(f"--split: easy-vqa has the splits train and test, not {eval_split!r}")
    answers = _package().get_answers()
    index = {a: i for i, a in enumerate(answers)}
    train_q, train_a, train_img = _split("train", cfg.train_limit)
    eval_q, eval_a, eval_img = _split("test", cfg.eval_limit)
    vocab = build_vocab(train_q)

    def dataset(split, texts, ans, img_ids, tokens=None):
        tokens = encode(texts, vocab, cfg.question_len) if tokens is None else tokens
        labels = np.array([index.get(a, -1) for a in ans], np.int64)
        types = np.array([answer_type(a) for a in ans], np.int64)
        ds = EasyVQADataset(
            (split, image_res(cfg)),  # the X-VLM YAML's resolution, as the model's
            img_ids,
            tokens,
            labels,
            types,
            len(answers),
            cfg.num_stat_word,
        )
        ds.texts = texts
        return ds

    full = encode(train_q, vocab, max(cfg.question_len, 32))  # whole questions, for TF-IDF
    train = dataset("train", train_q, train_a, train_img, full[:, : cfg.question_len].copy())
    word_init = tfidf_init(full, len(vocab), seed=cfg.seed) if cfg.tfidf else None
    meta = DataMeta(
        dataset="easy-vqa",
        vocab=vocab,
        answers=list(answers),
        answer_types=list(ANSWER_TYPES),
        soft_targets=False,
        word_init=word_init,
        visual="pixels",
        feature_dim=0,
        counts={
            "train": {
                "split": "train",
                "questions": len(train),
                "images": int(len(np.unique(train_img))),
                "dropped": {},
            },
            "eval": {
                "split": "test",
                "questions": len(eval_q),
                "images": int(len(np.unique(eval_img))),
                "dropped": {},
            },
        },
    )
    return DataBundle(train, dataset("test", eval_q, eval_a, eval_img), meta)
