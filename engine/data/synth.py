"""A synthetic data set written in exactly the official GQA or VQA v2 layouts.

Scenes of 3-8 objects (a name, a colour, sometimes a material and a size, a box) with spatial
relations; questions about attributes, relations, existence (yes/no) and counting; region
features = a fixed random vector per name and attribute, summed, plus noise. `data synth`
writes one; `dataset = "synthetic"` generates one once (cached by seed and size) and reads it
through the GQA reader. Light module: numpy and h5py only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .common import DataBundle, DataError, cache_dir
from .images import write_scene_images

NAMES = [
    "ball",
    "cube",
    "car",
    "tree",
    "dog",
    "cat",
    "chair",
    "table",
    "cup",
    "lamp",
    "book",
    "box",
]
COLORS = ["red", "blue", "green", "yellow", "white", "black"]
MATERIALS = ["metal", "wooden", "plastic"]
SIZES = ["small", "large"]
WIDTH, HEIGHT = 640, 480
BUILTIN_IMAGES = 200  # dataset = "synthetic"
BUILTIN_FEATURE_DIM = 64


def make_scene(rng: np.random.Generator) -> dict:
    """One GQA scene graph: {"width", "height", "objects": {id: {...}}}."""
    n = int(rng.integers(3, 9))
    objects = {}
    for k in range(n):
        w, h = int(rng.integers(40, 200)), int(rng.integers(40, 200))
        attrs = [COLORS[rng.integers(len(COLORS))]]
        if rng.random() < 0.5:
            attrs.append(MATERIALS[rng.integers(len(MATERIALS))])
        if rng.random() < 0.3:
            attrs.append(SIZES[rng.integers(len(SIZES))])
        objects[str(k)] = {
            "name": NAMES[rng.integers(len(NAMES))],
            "x": int(rng.integers(0, WIDTH - w)),
            "y": int(rng.integers(0, HEIGHT - h)),
            "w": w,
            "h": h,
            "attributes": attrs,
            "relations": [],
        }
    ids = list(objects)
    for a in ids:  # each object relates to up to 3 others
        for b in rng.permutation([i for i in ids if i != a])[:3]:
            objects[a]["relations"].append(
                {"object": str(b), "name": relation(objects[a], objects[b])}
            )
    return {"width": WIDTH, "height": HEIGHT, "objects": objects}


def relation(a: dict, b: dict) -> str:
    """Where a is relative to b, by the dominant direction between the centres."""
    dx = (a["x"] + a["w"] / 2) - (b["x"] + b["w"] / 2)
    dy = (a["y"] + a["h"] / 2) - (b["y"] + b["h"] / 2)
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def make_questions(scene: dict, rng: np.random.Generator, count: int) -> list[dict]:
    """Questions about one scene: {question, answer, fullAnswer, types, kind, answer_type}."""
    objs = list(scene["objects"].values())
    names = [o["name"] for o in objs]
    unique = [o for o in objs if names.count(o["name"]) == 1]
    out = []
    for _ in range(count * 4):
        if len(out) == count:
            break
        kind = ["attribute", "relation", "exist", "count", "choose"][rng.integers(5)]
        if kind == "attribute" and unique:
            o = unique[rng.integers(len(unique))]
            q, a, s = f"What color is the {o['name']}?", o["attributes"][0], "query"
            full = f"The {o['name']} is {a}."
        elif kind == "relation" and unique:
            o = unique[rng.integers(len(unique))]
            rels = [
                r for r in o["relations"] if names.count(scene["objects"][r["object"]]["name"]) == 1
            ]
            if not rels:
                continue
            r = rels[rng.integers(len(rels))]
            other = scene["objects"][r["object"]]["name"]
            # o is <rel> other: ask what is <rel> the other (o must be the only such object)
            same = [
                x
                for x in objs
                if any(
                    rr["object"] == r["object"] and rr["name"] == r["name"] for rr in x["relations"]
                )
            ]
            if len(same) != 1:
                continue
            q, a, s = f"What is {r['name']} the {other}?", o["name"], "query"
            full = f"The {o['name']} is {r['name']} the {other}."
        elif kind == "exist":
            color, name = COLORS[rng.integers(len(COLORS))], NAMES[rng.integers(len(NAMES))]
            if rng.random() < 0.5:  # half the time ask about an object that is there
                o = objs[rng.integers(len(objs))]
                color, name = o["attributes"][0], o["name"]
            yes = any(o["name"] == name and o["attributes"][0] == color for o in objs)
            q, a, s = f"Is there a {color} {name}?", "yes" if yes else "no", "verify"
            full = f"{'Yes' if yes else 'No'}, there is {'a' if yes else 'no'} {color} {name}."
        elif kind == "count":
            name = names[rng.integers(len(names))]
            n = names.count(name)
            q, a, s = f"How many {name}s are there?", str(n), "query"
            full = f"There are {n} {name}s."
        elif kind == "choose" and unique:
            o = unique[rng.integers(len(unique))]
            wrong = [c for c in COLORS if c != o["attributes"][0]][rng.integers(len(COLORS) - 1)]
            pair = [o["attributes"][0], wrong]
            rng.shuffle(pair)
            q, a, s = f"Is the {o['name']} {pair[0]} or {pair[1]}?", o["attributes"][0], "choose"
            full = f"The {o['name']} is {a}."
        else:
            continue
        answer_type = "yes/no" if a in ("yes", "no") else "number" if a.isdigit() else "other"
        out.append(
            {
                "question": q,
                "answer": a,
                "fullAnswer": full,
                "kind": kind,
                "types": {
                    "structural": s,
                    "semantic": "attr" if kind != "relation" else "rel",
                    "detailed": kind,
                },
                "answer_type": answer_type,
            }
        )
    return out


def region_features(
    scene: dict, boxes: int, dim: int, rng: np.random.Generator, table: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, int]:
    """[boxes, dim] features (objects first, then background regions) and pixel boxes
    (x1, y1, x2, y2); returns the number of regions written."""
    objs = list(scene["objects"].values())
    n = max(boxes, len(objs)) if boxes else len(objs)
    feats = rng.standard_normal((n, dim), dtype=np.float32) * 0.5
    bb = np.zeros((n, 4), np.float32)
    for k, o in enumerate(objs):
        feats[k] += table[o["name"]] + sum(table[a] for a in o["attributes"])
        bb[k] = (o["x"], o["y"], o["x"] + o["w"], o["y"] + o["h"])
    extra = n - len(objs)
    if extra:  # background regions: random boxes, noise only
        xy = rng.uniform(0, 0.8, (extra, 2)) * (WIDTH, HEIGHT)
        wh = rng.uniform(0.05, 0.2, (extra, 2)) * (WIDTH, HEIGHT)
        bb[len(objs) :] = np.concatenate([xy, xy + wh], 1)
    return feats, bb, n


def _word_table(dim: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 7])
    return {
        w: rng.standard_normal(dim).astype(np.float32) for w in NAMES + COLORS + MATERIALS + SIZES
    }


def _dump(path: Path, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def write(
    out: Path,
    fmt: str = "gqa",
    images: int = 100,
    seed: int = 0,
    questions_per_image: int = 10,
    feature_dim: int = 2048,
    boxes: int = 0,
    dtype: str = "float32",
    features: bool = True,
    graphs: bool = True,
    images_per_file: int = 10000,
    jpegs: bool = False,
) -> dict:
    """Write a synthetic data set into `out` (must be empty or absent); the last fifth of the
    images form the validation split. Written in a temporary folder renamed into place, so a
    failure leaves nothing behind. Returns counts."""
    if fmt not in ("gqa", "vqa"):
        raise DataError(f"--format: expected gqa or vqa, got {fmt!r}")
    if images < 2:
        raise DataError("--images: at least 2 (one train, one validation)")
    if not features and (not graphs or fmt == "vqa"):
        raise DataError("nothing to write: VQA needs features; GQA needs features or scene graphs")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        counts = _write(
            tmp,
            fmt,
            images,
            seed,
            questions_per_image,
            feature_dim,
            boxes,
            dtype,
            features,
            graphs,
            images_per_file,
            jpegs,
        )
        os.rename(tmp, out)  # replaces an empty folder; fails on a non-empty one
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if out.is_dir() and any(out.iterdir()):
            raise DataError(f"{out}: not empty") from None
        raise DataError(f"{out}: cannot write: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


def _write(
    out: Path,
    fmt: str,
    images: int,
    seed: int,
    questions_per_image: int,
    feature_dim: int,
    boxes: int,
    dtype: str,
    features: bool,
    graphs: bool,
    images_per_file: int,
    jpegs: bool,
) -> dict:
    import h5py

    rng = np.random.default_rng(seed)
    table = _word_table(feature_dim, seed)
    n_val = max(1, images // 5)
    splits = {"train": range(images - n_val), "val": range(images - n_val, images)}
    scenes = [make_scene(rng) for _ in range(images)]
    image_ids = [str(2_000_000 + i) for i in range(images)]
    np_dtype = np.dtype(dtype)
    counts = {"format": fmt, "images": images, "questions": {}}
    qid = 0
    if fmt == "gqa":
        for split, rows in splits.items():
            questions = {}
            for r in rows:
                for q in make_questions(scenes[r], rng, questions_per_image):
                    questions[f"{qid:08d}"] = {
                        "imageId": image_ids[r],
                        "question": q["question"],
                        "answer": q["answer"],
                        "fullAnswer": q["fullAnswer"],
                        "types": q["types"],
                        "isBalanced": True,
                    }
                    qid += 1
            _dump(out / f"{split}_balanced_questions.json", questions)
            if graphs:
                _dump(out / f"{split}_sceneGraphs.json", {image_ids[r]: scenes[r] for r in rows})
            counts["questions"][split] = len(questions)
        if features:
            per_image = [region_features(s, boxes, feature_dim, rng, table) for s in scenes]
            width = max(n for _, _, n in per_image)
            info = {}
            for file_no, start in enumerate(range(0, images, images_per_file)):
                chunk = per_image[start : start + images_per_file]
                with h5py.File(out / f"gqa_objects_{file_no}.h5", "w") as f:
                    feats = f.create_dataset("features", (len(chunk), width, feature_dim), np_dtype)
                    bbs = f.create_dataset("bboxes", (len(chunk), width, 4), np.float32)
                    for idx, (x, bb, n) in enumerate(chunk):
                        feats[idx, :n] = x.astype(np_dtype)
                        bbs[idx, :n] = bb
                        info[image_ids[start + idx]] = {
                            "file": file_no,
                            "idx": idx,
                            "objectsNum": n,
                            "width": WIDTH,
                            "height": HEIGHT,
                        }
            _dump(out / "gqa_objects_info.json", info)
    else:
        for split, rows in splits.items():
            sub = f"{split}2014"
            questions, annotations = [], []
            for r in rows:
                for q in make_questions(scenes[r], rng, questions_per_image):
                    questions.append(
                        {
                            "image_id": int(image_ids[r]),
                            "question": q["question"],
                            "question_id": qid,
                        }
                    )
                    annotations.append(
                        {
                            "question_id": qid,
                            "image_id": int(image_ids[r]),
                            "question_type": q["kind"],
                            "answer_type": q["answer_type"],
                            "multiple_choice_answer": q["answer"],
                            "answers": _annotators(q["answer"], rng),
                        }
                    )
                    qid += 1
            _dump(
                out / f"v2_OpenEnded_mscoco_{sub}_questions.json",
                {
                    "task_type": "Open-Ended",
                    "data_type": "mscoco",
                    "data_subtype": sub,
                    "questions": questions,
                },
            )
            _dump(
                out / f"v2_mscoco_{sub}_annotations.json",
                {"data_type": "mscoco", "data_subtype": sub, "annotations": annotations},
            )
            _write_vqa_features(
                out / f"{split}36.hdf5",
                [scenes[r] for r in rows],
                [int(image_ids[r]) for r in rows],
                boxes,
                feature_dim,
                np_dtype,
                rng,
                table,
            )
            counts["questions"][split] = len(questions)
    if jpegs:  # small pictures of the scenes, in the official layout: the X-VLM branch's input
        counts["jpeg_images"] = write_scene_images(out, fmt, scenes, image_ids, splits)
    return counts


def _annotators(answer: str, rng: np.random.Generator) -> list[dict]:
    """Ten answers: most annotators agree, a few say something else."""
    agree = int(rng.integers(6, 11))
    others = COLORS + NAMES + ["yes", "no", "2"]
    given = [answer] * agree + [others[rng.integers(len(others))] for _ in range(10 - agree)]
    return [
        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(given)
    ]


def _write_vqa_features(path: Path, scenes, image_ids, boxes, dim, dtype, rng, table) -> None:
    """The bottom-up layout BAN reads: rows of all images' boxes, pos_boxes [I, 2] = row range."""
    import h5py

    per_image = [region_features(s, boxes, dim, rng, table) for s in scenes]
    total = sum(n for _, _, n in per_image)
    with h5py.File(path, "w") as f:
        feats = f.create_dataset("image_features", (total, dim), dtype)
        spatial = f.create_dataset("spatial_features", (total, 6), np.float32)
        bb_ds = f.create_dataset("image_bb", (total, 4), np.float32)
        pos = np.zeros((len(scenes), 2), np.int64)
        row = 0
        for i, (x, bb, n) in enumerate(per_image):
            feats[row : row + n] = x.astype(dtype)
            bb_ds[row : row + n] = bb
            scale = np.array([WIDTH, HEIGHT, WIDTH, HEIGHT], np.float32)
            norm = bb / scale
            spatial[row : row + n] = np.concatenate(
                [norm, norm[:, 2:3] - norm[:, 0:1], norm[:, 3:4] - norm[:, 1:2]], 1
            )
            pos[i] = (row, row + n)
            row += n
        f.create_dataset("pos_boxes", data=pos)
        f.create_dataset("image_ids", data=np.asarray(image_ids, np.int64))
    _dump(
        path.with_name(path.stem + "_imgid2idx.json"), {str(i): k for k, i in enumerate(image_ids)}
    )


def builtin_root(seed: int, images: int = BUILTIN_IMAGES) -> Path:
    """The cached GQA-format set of dataset = "synthetic" (generated once, atomically)."""
    root = cache_dir() / f"synthetic-gqa-s{seed}-n{images}"
    if not root.is_dir():
        try:
            write(root, "gqa", images=images, seed=seed, feature_dim=BUILTIN_FEATURE_DIM)
        except DataError:
            if not root.is_dir():  # not merely another process finishing first
                raise
    return root


def build(cfg, eval_split: str | None = None) -> DataBundle:
    from . import gqa

    root = Path(cfg.data_root).expanduser() if cfg.data_root else builtin_root(cfg.seed)
    return gqa.build(cfg, eval_split=eval_split, root=root, name="synthetic")
