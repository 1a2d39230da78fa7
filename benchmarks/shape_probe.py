"""How many images the ViT of cpu-quick needs to tell easy-VQA's three shapes apart.

    .venv/bin/python benchmarks/shape_probe.py [--set k=v]... [--steps 300] [--lr 5e-4]

Builds the backbone's vision encoder of `cpu-quick` (plus the --set overrides; compare
`--set conv_stem=false`), puts a linear head on its [CLS] token and trains it on one label per
image: the answer to the image's "what shape" question (3,107 training images, 763 test images).
Prints the test accuracy every 25 steps of 64 images and the samples it took to reach 90%: the
figure that tells how fast the backbone can learn shapes, apart from the rest of the model and
from how rare the shape questions are (13% of easy-VQA's questions).
"""

from __future__ import annotations

import argparse
import time

import easy_vqa
import numpy as np
import torch
from torch import nn
from vqatune.engine import config, data
from vqatune.engine.data.easyvqa import SHAPES, load_images
from vqatune.engine.data.loader import IMAGE_MEAN, IMAGE_STD
from vqatune.engine.model.backbone import XVLMBackbone

BATCH = 64


def shape_images(split: str, res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images [N,3,res,res] of the split that have a shape question, and its answer."""
    _, answers, image_ids = (
        easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions()
    )
    label = {i: SHAPES.index(a) for a, i in zip(answers, image_ids) if a in SHAPES}
    ids = np.array(sorted(label))
    pixels = torch.from_numpy(np.asarray(load_images(split, res))[ids]).float() / 255
    mean = torch.as_tensor(IMAGE_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGE_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels - mean) / std, torch.tensor([label[i] for i in ids])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=5e-4)
    args = ap.parse_args()
    cfg = config.load("cpu-quick", args.sets)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(1)
    meta = data.build(cfg).meta
    vit = XVLMBackbone(cfg, meta, len(meta.vocab)).vision  # ViTModel, with the stem if conv_stem
    model = nn.ModuleDict({"vit": vit, "head": nn.Linear(vit.config.hidden_size, len(SHAPES))})
    x_train, y_train = shape_images("train", cfg.image_res)
    x_test, y_test = shape_images("test", cfg.image_res)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return model["head"](model["vit"](pixel_values=x).last_hidden_state[:, 0])  # [B,3]

    print(
        f"conv_stem={cfg.conv_stem} image_res={cfg.image_res} patch_size={cfg.patch_size}: "
        f"{len(y_train)} training and {len(y_test)} test images, AdamW lr {args.lr}"
    )
    started, reached, step = time.time(), None, 0
    while step < args.steps:
        for b in torch.randperm(len(y_train)).split(BATCH):
            model.train()
            loss = nn.functional.cross_entropy(predict(x_train[b]), y_train[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 25 == 0:
                model.eval()
                with torch.inference_mode():
                    acc = (predict(x_test).argmax(1) == y_test).float().mean().item()
                print(f"step {step:4d}  {step * BATCH:6d} images  test accuracy {acc:.3f}")
                if reached is None and acc >= 0.9:
                    reached = step * BATCH
            if step == args.steps:
                break
    took = f"{reached} images" if reached else f"not within {args.steps * BATCH} images"
    print(f"90% test accuracy: {took} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
