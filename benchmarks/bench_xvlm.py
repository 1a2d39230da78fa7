"""X-VLM at its published size: the --dry-run build, a real CPU build, and image loading.

    python benchmarks/bench_xvlm.py [--images 64] [--skip-cpu-build]

1. `vqatune train --config VQA_480.yaml ... --dry-run` (the guide's high-performance line) with
   X-VLM's published config files (Swin-B 480/15, BERT-base, fusion from layer 6) and a
   bert-base-sized vocab.txt: wall time, CPU time and peak RSS of the process.
   Goal: < 60 s and < 6 GB.
2. The same model built for real on CPU (allocated and initialised): time and peak RSS.
3. Image loading for the X-VLM branch: 640x480 JPEGs in GQA's layout decoded and resized
   (bicubic) to 384 and 480 px by the training loader, 0 and 2 workers: images/s, and for 0
   workers images per CPU-second (steadier than wall time on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWIN_B_480 = {  # configs/config_swinB_480.json
    "vision_width": 1024,
    "image_res": 480,
    "window_size": 15,
    "embed_dim": 128,
    "depths": [2, 2, 18, 2],
    "num_heads": [4, 8, 16, 32],
}
BERT_BASE = {  # configs/config_bert.json
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30522,
    "fusion_layer": 6,
    "encoder_width": 1024,
}
YAML = """vision_config: 'configs/config_swinB_480.json'
use_clip_vit: False
use_swin: True
image_res: 480
patch_size: 32
use_roberta: False
text_config: 'configs/config_bert.json'
text_encoder: 'data/bert-base-uncased'
max_tokens: 40
"""
LINE = (
    "--config xvlm/configs/VQA_480.yaml --output saved_models/high_performance --lr 3e-4 "
    "--xvlm_lr 6e-5 --batch_size 48 --AOA_layers 8 --num_hid 1536 --general_hidden_dim 512 "
    "--mgat_layers 6 --alpha 1.2 --beta 12.0 --mixed_precision --max_memory_usage 0.9"
)


def write_xvlm(root: Path) -> None:
    configs = root / "xvlm" / "configs"
    configs.mkdir(parents=True)
    (configs / "config_swinB_480.json").write_text(json.dumps(SWIN_B_480))
    (configs / "config_bert.json").write_text(json.dumps(BERT_BASE))
    (configs / "VQA_480.yaml").write_text(YAML)
    bert = root / "xvlm" / "data" / "bert-base-uncased"
    bert.mkdir(parents=True)
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [f"w{i}" for i in range(BERT_BASE["vocab_size"] - len(words))]
    (bert / "vocab.txt").write_text("\n".join(words) + "\n")


def measured(argv: list[str], cwd: Path) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS GB, stdout) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 2**20, out


CPU_BUILD = """
import sys, time
from vqatune.engine import cmdline
from vqatune.engine.model import build_model, nominal_meta
cfg = cmdline.config_from_cmdline("python main.py " + sys.argv[1])
t = time.perf_counter()
model = build_model(cfg, nominal_meta(cfg.dataset))
print(f"{time.perf_counter() - t:.1f}", sum(p.numel() for p in model.parameters()))
"""


def bench_images(count: int) -> None:
    import numpy as np
    from PIL import Image
    from vqatune.engine.config import Config
    from vqatune.engine.data import build, make_loader, synth
    from vqatune.engine.data.images import scene_image

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "gqa"
        synth.write(root, "gqa", images=count, feature_dim=64, questions_per_image=1, jpegs=False)
        scenes = json.loads((root / "train_sceneGraphs.json").read_text())
        scenes.update(json.loads((root / "val_sceneGraphs.json").read_text()))
        (root / "images").mkdir()
        rng = np.random.default_rng(0)
        for image_id, scene in scenes.items():  # full-size, noisy: JPEGs as heavy as GQA's
            pixels = scene_image(scene, scale=1).astype(np.int16) + rng.integers(
                -20, 20, (480, 640, 3)
            )
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
                root / "images" / f"{image_id}.jpg", quality=90
            )
        for res in (384, 480):
            for workers in (0, 2):
                cfg = Config(
                    {
                        "dataset": "gqa",
                        "data_root": str(root),
                        "image_res": res,
                        "num_workers": workers,
                        "batch_size": 16,
                        "device": "cpu",
                    }
                )
                train = build(cfg).train
                loader = make_loader(train, cfg, train=True, seed=0, epoch=0)
                cpu0, t = time.process_time(), time.perf_counter()
                n = sum(len(b["image"]) for b in loader)
                wall, cpu = time.perf_counter() - t, time.process_time() - cpu0
                per_cpu = f", {n / cpu:.0f} images per CPU-s" if workers == 0 else ""
                print(
                    f"images {res}px, {workers} workers: {n / wall:.0f} images/s ({n} in "
                    f"{wall:.1f} s){per_cpu}"
                )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--skip-cpu-build", action="store_true")
    args = parser.parse_args()
    vqatune = str(Path(sys.executable).with_name("vqatune"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_xvlm(root)
        wall, cpu, rss, out = measured([vqatune, "train", *shlex.split(LINE), "--dry-run"], root)
        count = next(line for line in out.splitlines() if "xvlm_backbone:" in line).split(":")[1]
        total = next(
            line
            for line in out.splitlines()
            if line.startswith("#   total:") or line.startswith("# total:")
        ).split(":")[1]
        print(
            f"dry-run VQA_480 (X-VLM encoder {count.strip()}, model {total.strip()} "
            f"parameters): {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss:.2f} GB; "
            f"goal < 60 s and < 6 GB: {wall / 60:.2f} and {rss / 6:.2f} of it"
        )
        if not args.skip_cpu_build:
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", CPU_BUILD, LINE],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            print(
                f"real CPU build of the same model ({int(out[1]):,} parameters): "
                f"{out[0]} s to build, {time.perf_counter() - t:.1f} s process wall, "
                f"{cpu:.1f} s CPU, peak RSS {after.ru_maxrss / 2**20:.2f} GB"
            )
    bench_images(args.images)


if __name__ == "__main__":
    main()
