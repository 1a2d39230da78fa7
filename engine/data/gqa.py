"""GQA in its official layout under data_root.

    {split}_balanced_questions.json   {qid: {"imageId", "question", "answer", "fullAnswer",
                                              "types": {"structural", ...}, ...}}
    {split}_sceneGraphs.json          {imageId: {"width", "height", "objects": {...}}}
    gqa_objects_info.json             {imageId: {"file", "idx", "objectsNum", "width", "height"}}
    gqa_objects_{file}.h5             features [images, boxes, D], bboxes [images, boxes, 4]
                                      (x1, y1, x2, y2 in pixels)

Scene graphs and features are each optional, not both. Regions come from the feature files
when present, otherwise from the scene graph (multi-hot names + attributes, as GraphVQA); the
graph comes from the scene graphs when both splits have them, otherwise it is built from the
boxes. Light module: numpy and h5py only.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..official import GQAEvaluator
from . import graph as G
from . import statwords
from .common import (
    DataBundle,
    DataError,
    DataMeta,
    check_dropped,
    limit,
    load_json,
    merged,
    require_file,
    training_splits,
)
from .sample import GraphFeatures, H5Features, QADataset, single_answers
from .vocab import build_vocab, encode, tfidf_init

STRUCTURAL_TYPES = ["verify", "query", "choose", "logical", "compare"]
EVAL_SPLITS = ("val", "testdev", "test")
INFO_FILE = "gqa_objects_info.json"


def questions_file(root: Path, split: str) -> Path:
    return root / f"{split}_balanced_questions.json"


def graphs_file(root: Path, split: str) -> Path:
    return root / f"{split}_sceneGraphs.json"


def choices_file(root: Path, split: str) -> Path:
    return root / f"{split}_choices.json"


def all_questions_file(root: Path, split: str) -> Path:
    return root / f"{split}_all_questions.json"


def evaluator(root: Path, split: str, items: list[tuple[str, dict]]) -> GQAEvaluator:
    """The official evaluation of these questions: validity and plausibility when
    {split}_choices.json is there; consistency from the entailments of
    {split}_all_questions.json, else from the questions' own "entailed" lists."""
    choices = load_json(choices_file(root, split)) if choices_file(root, split).is_file() else None
    source = dict(items)
    if all_questions_file(root, split).is_file():
        source = load_json(all_questions_file(root, split))
    entailed = {
        qid: [str(e) for e in q["entailed"]]
        for qid, q in source.items()
        if isinstance(q, dict) and isinstance(q.get("entailed"), list)
    }
    return GQAEvaluator(items, entailed or None, choices if isinstance(choices, dict) else None)


def default_eval_split(root: Path, trained: str = "train") -> str:
    """The first of val, testdev, test that is there and not among the training splits."""
    trained_on = {s.strip() for s in trained.split(",")}
    for split in EVAL_SPLITS:
        if split not in trained_on and questions_file(root, split).is_file():
            return split
    return "val"  # missing: reported as such when read


def read_questions(root: Path, split: str, cap: int) -> list[tuple[str, dict]]:
    path = questions_file(root, split)
    require_file(path, path.name)
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object keyed by question id")
    items = list(data.items())[: limit(len(data), cap)]
    for qid, q in items:
        if (
            not isinstance(q, dict)
            or not isinstance(q.get("question"), str)
            or not isinstance(q.get("imageId"), (str, int))
            or not isinstance(q.get("answer", ""), str)
        ):
            raise DataError(
                f"{path}: question {qid!r}: expected {{imageId, question, answer, ...}} "
                f"with string values"
            )
        q["imageId"] = str(q["imageId"])
    return items


def read_graphs(root: Path, split: str) -> dict | None:
    path = graphs_file(root, split)
    if not path.is_file():
        return None
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object keyed by image id")
    for image_id, g in data.items():
        objs = g.get("objects") if isinstance(g, dict) else None
        if not isinstance(objs, dict):
            raise DataError(
                f'{path}: image {image_id!r}: expected "objects": {{id: {{name, x, y, '
                f"w, h, attributes, relations}}}}"
            )
        for object_id, o in objs.items():
            problem = _object_problem(o)
            if problem:
                raise DataError(f"{path}: image {image_id!r}, object {object_id!r}: {problem}")
    return data


def _object_problem(o) -> str | None:
    if not isinstance(o, dict) or not isinstance(o.get("name"), str):
        return "expected {name, x, y, w, h, attributes, relations}"
    for k in ("x", "y", "w", "h"):
        if isinstance(o.get(k), bool) or not isinstance(o.get(k), (int, float)):
            return f"{k} must be a number, got {o.get(k)!r}"
    if not all(isinstance(a, str) for a in o.get("attributes", [])):
        return "attributes must be a list of strings"
    rels = o.get("relations", [])
    if not isinstance(rels, list) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) and "object" in r for r in rels
    ):
        return "relations must be a list of {object, name}"
    return None


class FeatureIndex:
    """gqa_objects_info.json + the h5 files it names (checked, opened lazily later)."""

    def __init__(self, root: Path):
        self.root = root
        path = root / INFO_FILE
        self.info = load_json(path)
        if not isinstance(self.info, dict):
            raise DataError(f"{path}: expected an object keyed by image id")
        files = sorted({int(v["file"]) for v in self.info.values()})
        self.paths = {i: root / f"gqa_objects_{i}.h5" for i in files}
        for p in self.paths.values():
            require_file(p, p.name)
        import h5py

        with h5py.File(self.paths[files[0]], "r") as f:
            if "features" not in f or "bboxes" not in f:
                raise DataError(
                    f"{self.paths[files[0]]}: expected datasets 'features' and 'bboxes'"
                )
            self.dim, self.dtype = int(f["features"].shape[-1]), f["features"].dtype

    def reader(self, image_ids: list[str]) -> H5Features:
        numbers = sorted(self.paths)
        position = {n: k for k, n in enumerate(numbers)}
        rows = [self.info[i] for i in image_ids]
        return H5Features(
            [self.paths[n] for n in numbers],
            "gqa",
            np.array([position[int(r["file"])] for r in rows], np.int64),
            np.array([int(r["idx"]) for r in rows], np.int64),
            np.array([int(r["objectsNum"]) for r in rows], np.int64),
            np.array([[r.get("width", 1), r.get("height", 1)] * 2 for r in rows], np.float32),
            self.dim,
            self.dtype,
        )

    def boxes(self, reader: H5Features, max_boxes: int) -> tuple[np.ndarray, np.ndarray]:
        """All boxes of these images (small; features stay on disk): [I, N, 4], mask [I, N]."""
        import h5py

        n_img = len(reader.first)
        boxes = np.zeros((n_img, max_boxes, 4), np.float32)
        mask = np.zeros((n_img, max_boxes), bool)
        for k, path in enumerate(reader.paths):
            sel = np.nonzero(reader.file_no == k)[0]
            if len(sel) == 0:
                continue
            with h5py.File(path, "r") as f:
                rows = np.unique(reader.first[sel])  # h5py reads need increasing indices
                found = f["bboxes"][rows, :max_boxes]
            width = found.shape[1]
            boxes[sel, :width] = found[np.searchsorted(rows, reader.first[sel])]
            mask[sel] = (
                np.arange(max_boxes)[None, :] < np.minimum(reader.count[sel], width)[:, None]
            )
        boxes[~mask] = 0
        return np.clip(boxes / reader.scale[:, None, :], 0, 1), mask


def _type_of(q: dict) -> str:
    types = q.get("types")
    return types.get("structural", "") if isinstance(types, dict) else ""


def build(
    cfg, eval_split: str | None = None, root: Path | None = None, name: str = "gqa"
) -> DataBundle:
    if root is None:
        if not cfg.data_root:
            raise DataError(
                "data_root: dataset gqa needs data_root, the folder with the official "
                "GQA files (train_balanced_questions.json, ...)"
            )
        root = Path(cfg.data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"data_root: {root}: no such directory")
    eval_split = eval_split or cfg.eval_split or default_eval_split(root, cfg.train_splits)
    splits = training_splits(cfg, eval_split)
    train_items = [item for s in splits for item in read_questions(root, s, cfg.train_limit)]
    train_items = train_items[: limit(len(train_items), cfg.train_limit)]
    eval_items = read_questions(root, eval_split, cfg.eval_limit)
    train_graphs = merged([read_graphs(root, s) for s in splits])
    eval_graphs = read_graphs(root, eval_split)
    features = FeatureIndex(root) if (root / INFO_FILE).is_file() else None
    use_graphs = train_graphs is not None and eval_graphs is not None
    if features is None and not use_graphs:
        missing = graphs_file(root, splits[0] if train_graphs is None else eval_split)
        raise DataError(
            f"{missing}: no such file (expected the official scene graphs "
            f"{missing.name}, or the features {INFO_FILE} + gqa_objects_N.h5)"
        )

    def keep(items, graphs, split):
        """Drop questions whose image has no graph / features; count why."""
        dropped = Counter()
        kept = []
        for qid, q in items:
            if use_graphs and q["imageId"] not in graphs:
                dropped["no scene graph"] += 1
            elif features is not None and q["imageId"] not in features.info:
                dropped["no features"] += 1
            else:
                kept.append((qid, q))
        check_dropped(dropped, len(items), cfg.allow_dropped, f"{name} {split}")
        return kept, dict(dropped)

    train_items, train_dropped = keep(train_items, train_graphs, "train")
    eval_items, eval_dropped = keep(eval_items, eval_graphs, eval_split)

    stat_tables = {
        "train": merged(
            [statwords.read_file(statwords.gqa_file(root, s, cfg.topk)) for s in splits]
        ),
        "eval": statwords.read_file(statwords.gqa_file(root, eval_split, cfg.topk)),
    }
    if None in stat_tables.values():  # MGHR's files for both splits, or derived for both
        stat_tables = {"train": None, "eval": None}
    if use_graphs:
        node_vocab, attr_vocab, rel_vocab, max_attrs = G.graph_vocabs(train_graphs)
        extra_words = list(dict.fromkeys(G.graph_words(train_graphs)))  # each phrase once
    else:
        node_vocab, attr_vocab, rel_vocab, max_attrs = (
            ["<pad>", "object"],
            ["<pad>"],
            list(G.BOX_RELATIONS),
            1,
        )
        extra_words = list(G.BOX_RELATIONS)
    if stat_tables["train"] is not None:
        extra_words += statwords.table_words(stat_tables["train"])
    train_texts = [q["question"] for _, q in train_items]
    vocab = build_vocab(train_texts + extra_words)
    word_id = {w: i for i, w in enumerate(vocab)}
    counts = Counter(q.get("answer", "") for _, q in train_items)
    answers = sorted((a for a in counts if a), key=lambda a: (-counts[a], a))
    answer_id = {a: i for i, a in enumerate(answers)}
    seen_types = {_type_of(q) for _, q in train_items + eval_items}
    answer_types = [t for t in STRUCTURAL_TYPES if t in seen_types] + sorted(
        seen_types - set(STRUCTURAL_TYPES) - {""}
    )
    if not answer_types or "" in seen_types:
        answer_types = ["all"]
    type_id = {t: i for i, t in enumerate(answer_types)}

    def dataset(items, graphs, stat_table):
        image_ids = list(dict.fromkeys(q["imageId"] for _, q in items))
        row_of = {i: r for r, i in enumerate(image_ids)}
        tokens = encode([q["question"] for _, q in items], vocab, cfg.question_len)
        labels = np.array([answer_id.get(q.get("answer"), -1) for _, q in items], np.int64)
        types = np.array([type_id.get(_type_of(q), 0) for _, q in items], np.int64)
        if use_graphs:
            graph_arrays = G.scene_graphs(
                image_ids, graphs, node_vocab, attr_vocab, rel_vocab, cfg.max_boxes, max_attrs
            )
            stat = G.statistics_words(image_ids, graphs, word_id, cfg.num_stat_word, cfg.topk)
        if features is not None:
            visual = features.reader(image_ids)
            if not use_graphs:
                graph_arrays = G.box_graphs(*features.boxes(visual, cfg.max_boxes))
                stat = np.zeros((len(image_ids), cfg.num_stat_word), np.int64)
        else:
            visual = GraphFeatures(graph_arrays, len(node_vocab), len(attr_vocab))
        if stat_table is not None:
            stat = statwords.from_table(image_ids, stat_table, word_id, cfg.num_stat_word)
        ds = QADataset(
            tokens,
            np.array([row_of[q["imageId"]] for _, q in items], np.int64),
            single_answers(labels, types),
            len(answers),
            visual,
            cfg.max_boxes,
            stat,
            graph_arrays,
            question_ids=[qid for qid, _ in items],
            image_ids=image_ids,
            texts=[q["question"] for _, q in items],
        )
        return ds, len(image_ids)

    train, train_images = dataset(train_items, train_graphs, stat_tables["train"])
    evaluation, eval_images = dataset(eval_items, eval_graphs, stat_tables["eval"])
    evaluation.official = evaluator(root, eval_split, eval_items)
    word_init = None
    if cfg.tfidf:
        word_init = tfidf_init(
            encode(train_texts + extra_words, vocab, 32), len(vocab), seed=cfg.seed
        )
    meta = DataMeta(
        dataset=name,
        vocab=vocab,
        answers=answers,
        answer_types=answer_types,
        soft_targets=False,
        word_init=word_init,
        visual="regions",
        feature_dim=features.dim if features is not None else len(node_vocab) + len(attr_vocab),
        has_graph=True,
        node_vocab=node_vocab,
        attr_vocab=attr_vocab,
        rel_vocab=rel_vocab,
        max_attrs=max_attrs,
        counts={
            "train": {
                "split": ",".join(splits),
                "questions": len(train),
                "images": train_images,
                "dropped": train_dropped,
            },
            "eval": {
                "split": eval_split,
                "questions": len(evaluation),
                "images": eval_images,
                "dropped": eval_dropped,
            },
            "sources": {
                "regions": "features" if features is not None else "scene graphs",
                "graph": "scene graphs" if use_graphs else "boxes",
                "statistics_words": (
                    f"{statwords.FILE} {statwords.gqa_file(root, splits[0], cfg.topk).name}"
                    if stat_tables["train"] is not None
                    else statwords.SCENE_GRAPHS
                    if use_graphs
                    else statwords.NONE
                ),
            },
        },
    )
    return DataBundle(train, evaluation, meta)
