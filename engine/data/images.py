"""The official images, for the X-VLM branch of GQA and VQA v2 (BAN and ISubGVQA keep regions).

    GQA     IMAGE_DIR/<imageId>.jpg                               (default: data_root/images)
    VQA v2  IMAGE_DIR/{train2014,val2014,test2015}/COCO_<split>_<12-digit id>.jpg
                                                                  (default: data_root)

Each image is decoded and resized to image_res x image_res (bicubic, as X-VLM's and MGHR's
transform) in the DataLoader workers and batched as uint8 [B, 3, R, R]; the loader normalises it
with X-VLM's (CLIP's) mean and std. Without an image folder the data set is left as it is and
the X-VLM branch reads the region features. Light module: numpy and Pillow, no torch.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .common import BatchedDataset, DataBundle, DataError, check_dropped

COCO_SPLITS = {"train": "train2014", "val": "val2014", "test": "test2015", "test-dev": "test2015"}


def image_res(cfg) -> int:
    """The resolution the vision encoder sees: the X-VLM YAML's image_res, else the schema's
    (an image_res given on the command line wins over the YAML's)."""
    if cfg.config:
        from vqatune.engine.xvlm_files import read, yaml_values

        applied, _ = yaml_values(read(Path(cfg.config).expanduser()), cfg)
        return int(applied.get("image_res", cfg.image_res))
    return int(cfg.image_res)


def gqa_paths(folder: Path, image_ids: list) -> list[Path]:
    return [folder / f"{i}.jpg" for i in image_ids]


def coco_paths(folder: Path, split: str, image_ids: list) -> list[Path]:
    sub = COCO_SPLITS.get(split, split)
    return [folder / sub / f"COCO_{sub}_{int(i):012d}.jpg" for i in image_ids]


def gqa_folder(cfg, root: Path) -> Path | None:
    folder = Path(cfg.image_dir).expanduser() if cfg.image_dir else root / "images"
    return _folder(cfg, folder)


def coco_folder(cfg, root: Path) -> Path | None:
    folder = Path(cfg.image_dir).expanduser() if cfg.image_dir else root
    found = any((folder / sub).is_dir() for sub in set(COCO_SPLITS.values()))
    return folder if found else _folder(cfg, None)


def _folder(cfg, folder: Path | None) -> Path | None:
    if folder is not None and folder.is_dir():
        return folder
    if cfg.image_dir:
        raise DataError(f"image_dir: {cfg.image_dir}: no such directory")
    return None


def decode(path: Path, res: int) -> np.ndarray:
    """One image file -> uint8 [3, res, res]; a one-line DataError naming it if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((res, res), Image.Resampling.BICUBIC)
    except FileNotFoundError:
        raise DataError(f"{path}: no such image") from None
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__})") from None
    return np.asarray(rgb, np.uint8).transpose(2, 0, 1)


class ImageDataset(BatchedDataset):
    """A region-feature data set whose batches also carry `image`, the questions whose image
    file is missing left out (counted; only with allow_dropped beyond 1%)."""

    def __init__(self, inner, paths: list[Path], res: int, keep: np.ndarray):
        self.inner, self.paths, self.res, self.keep = inner, paths, res, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getattr__(self, name):  # image_ids, answers, ... of the wrapped data set
        if name == "inner":
            raise AttributeError(name)
        value = getattr(self.inner, name)
        if name in ("question_ids", "texts") and value is not None:
            return [value[i] for i in self.keep]
        return value

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        q = self.keep[np.asarray(indices, np.int64)]
        out = self.inner.batch(q)
        rows = self.inner.image_row[q]
        out["image"] = np.stack([decode(self.paths[r], self.res) for r in rows])
        return out


def attach(bundle: DataBundle, cfg, paths_of, what: str) -> DataBundle:
    """Wrap the train and eval sets with their images; paths_of(split, dataset) -> [Path] per
    image row (None: no image folder, the bundle comes back unchanged)."""
    res = image_res(cfg)
    wrapped = {}
    for part in ("train", "eval"):
        ds = getattr(bundle, part)
        split = bundle.meta.counts.get(part, {}).get("split", part)
        paths = paths_of(split, ds)
        if paths is None:  # the X-VLM branch reads the regions (the start event says so)
            return bundle
        found = np.array([p.is_file() for p in paths], bool)
        present = found[ds.image_row]
        dropped = Counter({"no image": int((~present).sum())})
        if dropped["no image"] and not cfg.allow_dropped:
            first = paths[int(np.nonzero(~found)[0][0])]
            raise DataError(
                f"{first}: no such image ({dropped['no image']} of {len(present)} {what} "
                f"{split} questions lack theirs; set allow_dropped = true to skip them)"
            )
        check_dropped(dropped, len(present), cfg.allow_dropped, f"{what} {split}")
        wrapped[part] = ImageDataset(ds, paths, res, np.nonzero(present)[0])
        counts = bundle.meta.counts.setdefault(part, {})
        counts["images_found"] = int(found.sum())
        counts["images_missing"] = int((~found).sum())
        counts["dropped"] = {**counts.get("dropped", {}), **{k: v for k, v in dropped.items() if v}}
    bundle.meta.images = True
    bundle.meta.counts.setdefault("sources", {})["xvlm"] = f"images at {res}px"
    return DataBundle(wrapped["train"], wrapped["eval"], bundle.meta)


def scene_image(scene: dict, scale: int = 4) -> np.ndarray:
    """A synthetic GQA scene drawn small: each object a filled box of its colour, uint8 HWC."""
    rgb = {
        "red": (200, 30, 30),
        "blue": (30, 60, 200),
        "green": (30, 160, 60),
        "yellow": (230, 210, 40),
        "white": (245, 245, 245),
        "black": (15, 15, 15),
    }
    h, w = scene["height"] // scale, scene["width"] // scale
    image = np.full((h, w, 3), 128, np.uint8)
    for o in scene["objects"].values():
        colour = next((rgb[a] for a in o["attributes"] if a in rgb), (128, 128, 128))
        x, y = o["x"] // scale, o["y"] // scale
        image[y : y + max(1, o["h"] // scale), x : x + max(1, o["w"] // scale)] = colour
    return image


def write_scene_images(out: Path, fmt: str, scenes, image_ids, splits: dict) -> int:
    """JPEGs of the synthetic scenes in the official layout of fmt (gqa or vqa)."""
    from PIL import Image

    n = 0
    for split, rows in splits.items():
        for r in rows:
            if fmt == "gqa":
                path = gqa_paths(out / "images", [image_ids[r]])[0]
            else:
                path = coco_paths(out, split, [image_ids[r]])[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene_image(scenes[r])).save(path, quality=90)
            n += 1
    return n
