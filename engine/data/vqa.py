"""VQA v2 in its official layout under data_root, with bottom-up region features as BAN reads them.

    v2_OpenEnded_mscoco_{train2014,val2014}_questions.json  {"questions": [{image_id, question,
                                                              question_id}]}
    v2_mscoco_{train2014,val2014}_annotations.json          {"annotations": [{question_id,
                                                              answers[10], multiple_choice_answer,
                                                              answer_type}]}
    {train,val}36.hdf5   image_features [R, D]; spatial_features [R, 6] (x1, y1, x2, y2, w, h,
                         all / image size); pos_boxes [I, 2] (first row, end row of image i);
                         image_ids [I] (or {train,val}36_imgid2idx.json: {"image id": i})

Soft targets 0.3/0.6/0.9/1.0 for 1/2/3/4+ matching annotators; score = the official accuracy,
min(1, matches/3) averaged over the ten leave-one-out subsets of annotators.
Light module: numpy and h5py only.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..official import VQAEvaluator, normalize_vqa_answer
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
from .sample import Answers, H5Features, QADataset
from .vocab import build_vocab, encode, tfidf_init

ANSWER_TYPES = ["yes/no", "number", "other"]
SPLITS = {"train": "train2014", "val": "val2014", "testdev": "test-dev2015", "test": "test2015"}
# the test splits come without annotations (predictions only); test-dev's images are test2015's
TEST_SPLITS = ("testdev", "test")
FEATURE_SPLITS = {"testdev": "test"}
ANNOTATORS = 10


def soft_target(matches: np.ndarray) -> np.ndarray:
    """ban-vqa's training target from the number of matching annotators."""
    return np.select(
        [matches == 0, matches == 1, matches == 2, matches == 3], [0.0, 0.3, 0.6, 0.9], 1.0
    ).astype(np.float32)


def official_accuracy(matches: np.ndarray) -> np.ndarray:
    """min(1, matches/3) averaged over the ten leave-one-annotator-out subsets: leaving out one
    of the `m` annotators who gave it leaves m-1 matches, leaving out another leaves m."""
    m = matches.astype(np.float64)
    acc = m * np.minimum(1.0, (m - 1) / 3) + (ANNOTATORS - m) * np.minimum(1.0, m / 3)
    return (np.where(m > 0, acc, 0.0) / ANNOTATORS).astype(np.float32)


def questions_file(root: Path, sub: str) -> Path:
    return root / f"v2_OpenEnded_mscoco_{sub}_questions.json"


def annotations_file(root: Path, sub: str) -> Path:
    return root / f"v2_mscoco_{sub}_annotations.json"


def features_file(root: Path, split: str) -> Path:
    return root / f"{split}36.hdf5"


def read_split(root: Path, split: str, cap: int) -> list[tuple[dict, dict]]:
    """(question, annotation) pairs in the questions file's order."""
    sub = SPLITS.get(split, split)
    qpath, apath = questions_file(root, sub), annotations_file(root, sub)
    questions = load_json(require_file(qpath, qpath.name))
    if split in TEST_SPLITS and not apath.is_file():
        annotations = {"annotations": []}
    else:
        annotations = load_json(require_file(apath, apath.name))
    if not isinstance(questions, dict) or not isinstance(questions.get("questions"), list):
        raise DataError(f'{qpath}: expected {{"questions": [...]}}')
    if not isinstance(annotations, dict) or not isinstance(annotations.get("annotations"), list):
        raise DataError(f'{apath}: expected {{"annotations": [...]}}')
    by_id = {a.get("question_id"): a for a in annotations["annotations"]}
    qs = questions["questions"]
    out = []
    for q in qs[: limit(len(qs), cap)]:
        if (
            not isinstance(q, dict)
            or not isinstance(q.get("question"), str)
            or not all(
                isinstance(q.get(k), int) and not isinstance(q.get(k), bool)
                for k in ("image_id", "question_id")
            )
        ):
            raise DataError(
                f"{qpath}: expected questions {{image_id: int, question: str, "
                f"question_id: int}}, got {str(q)[:60]}"
            )
        ann = by_id.get(q["question_id"])
        if ann is None and not by_id and split in TEST_SPLITS:
            ann = {"answers": [], "answer_type": None}
        if (
            ann is None
            or not isinstance(ann.get("answers"), list)
            or not all(
                isinstance(x, dict) and isinstance(x.get("answer"), str) for x in ann["answers"]
            )
        ):
            raise DataError(
                f"{apath}: question {q['question_id']}: no annotation with "
                f"answers [{{answer, ...}}]"
            )
        out.append((q, ann))
    return out


class FeatureFile:
    """{split}36.hdf5 and its image-id index; only the small index is read here."""

    def __init__(self, root: Path, split: str):
        import h5py

        split = FEATURE_SPLITS.get(split, split)
        self.path = features_file(root, split)
        require_file(self.path, self.path.name)
        with h5py.File(self.path, "r") as f:
            missing = [k for k in ("image_features", "spatial_features", "pos_boxes") if k not in f]
            if missing:
                raise DataError(
                    f"{self.path}: missing dataset {missing[0]!r} (expected "
                    f"image_features, spatial_features, pos_boxes, image_ids)"
                )
            self.pos = f["pos_boxes"][:].astype(np.int64)
            self.dim, self.dtype = int(f["image_features"].shape[1]), f["image_features"].dtype
            ids = f["image_ids"][:] if "image_ids" in f else None
            # detector class / attribute id of each box, when the extractor kept them
            self.objects_id = f["objects_id"][:] if "objects_id" in f else None
            self.attrs_id = f["attrs_id"][:] if "attrs_id" in f else None
        if ids is None:
            index_path = self.path.with_name(f"{split}36_imgid2idx.json")
            if not index_path.is_file():
                raise DataError(
                    f"{self.path}: no 'image_ids' dataset and no {index_path.name} "
                    f"beside it (convert ban-vqa's {split}36_imgid2idx.pkl to JSON)"
                )
            self.index = {int(k): int(v) for k, v in load_json(index_path).items()}
        else:
            self.index = {int(i): k for k, i in enumerate(ids)}

    def detections(self, image_ids: list[int], max_boxes: int):
        """Per image, the class ids (and attribute ids) of its first max_boxes boxes."""
        rows = [self.index[i] for i in image_ids]
        spans = [(self.pos[r, 0], min(self.pos[r, 1], self.pos[r, 0] + max_boxes)) for r in rows]
        objects = [self.objects_id[a:b].tolist() for a, b in spans]
        attrs = None if self.attrs_id is None else [self.attrs_id[a:b].tolist() for a, b in spans]
        return objects, attrs

    def reader(self, image_ids: list[int]) -> H5Features:
        rows = np.array([self.index[i] for i in image_ids], np.int64)
        first, end = self.pos[rows, 0], self.pos[rows, 1]
        return H5Features(
            [self.path],
            "vqa",
            np.zeros(len(rows), np.int64),
            first,
            end - first,
            np.ones((len(rows), 4), np.float32),
            self.dim,
            self.dtype,
        )


class FeatureFiles:
    """The feature files of several splits read as one (COCO image ids do not repeat)."""

    def __init__(self, root: Path, splits: list[str]):
        self.files = [FeatureFile(root, s) for s in splits]
        self.index = {i: k for k, f in enumerate(self.files) for i in f.index}  # -> file
        self.dim, self.dtype = self.files[0].dim, self.files[0].dtype
        with_ids = all(f.objects_id is not None for f in self.files)
        self.objects_id = self.files[0].objects_id if with_ids else None

    def detections(self, image_ids: list[int], max_boxes: int):
        objects, attrs = [], []
        for i in image_ids:
            o, a = self.files[self.index[i]].detections([i], max_boxes)
            objects += o
            attrs += a if a is not None else [[]]
        return objects, attrs

    def reader(self, image_ids: list[int]) -> H5Features:
        file_no = np.array([self.index[i] for i in image_ids], np.int64)
        first = np.zeros(len(image_ids), np.int64)
        count = np.zeros(len(image_ids), np.int64)
        for k, f in enumerate(self.files):
            sel = np.nonzero(file_no == k)[0]
            if len(sel):
                part = f.reader([image_ids[j] for j in sel])
                first[sel], count[sel] = part.first, part.count
        return H5Features(
            [f.path for f in self.files],
            "vqa",
            file_no,
            first,
            count,
            np.ones((len(image_ids), 4), np.float32),
            self.dim,
            self.dtype,
        )


def build(cfg, eval_split: str | None = None) -> DataBundle:
    if not cfg.data_root:
        raise DataError(
            "data_root: dataset vqa needs data_root, the folder with the official "
            "VQA v2 files (v2_OpenEnded_mscoco_train2014_questions.json, ...)"
        )
    root = Path(cfg.data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"data_root: {root}: no such directory")
    names = {v: k for k, v in SPLITS.items()} | {"test-dev": "testdev", "test-std": "test"}
    eval_split = eval_split or cfg.eval_split or "val"
    eval_split = names.get(eval_split, eval_split)
    splits = training_splits(cfg, eval_split, names)
    train_pairs = [p for s in splits for p in read_split(root, s, cfg.train_limit)]
    train_pairs = train_pairs[: limit(len(train_pairs), cfg.train_limit)]
    eval_pairs = read_split(root, eval_split, cfg.eval_limit)
    train_features = FeatureFiles(root, splits)
    eval_features = FeatureFiles(root, [eval_split])

    counts = Counter(
        normalize_vqa_answer(str(a.get("multiple_choice_answer", ""))) for _, a in train_pairs
    )
    answers = sorted(
        (a for a, n in counts.items() if a and n >= cfg.min_answer_count),
        key=lambda a: (-counts[a], a),
    )
    if not answers:
        raise DataError(
            f"min_answer_count: no answer is given {cfg.min_answer_count} times in "
            f"{annotations_file(root, SPLITS.get(splits[0], splits[0]))}"
        )
    answer_id = {a: i for i, a in enumerate(answers)}
    train_texts = [q["question"] for q, _ in train_pairs]
    stat_tables = {
        "train": merged([statwords.read_file(statwords.vqa_file(root, s)) for s in splits]),
        "eval": statwords.read_file(statwords.vqa_file(root, eval_split)),
    }
    class_names = statwords.read_class_names(root)
    if None not in stat_tables.values():
        stat_source, extra_words = statwords.FILE, statwords.table_words(stat_tables["train"])
        stat_source += f" {statwords.vqa_file(root, splits[0]).name}"
    elif (
        class_names
        and train_features.objects_id is not None
        and eval_features.objects_id is not None
    ):
        stat_source, extra_words = statwords.DETECTOR, class_names[0] + class_names[1]
    else:
        stat_source, extra_words = statwords.NONE, []
    vocab = build_vocab(train_texts + extra_words)
    word_id = {w: i for i, w in enumerate(vocab)}

    def stat_words(image_ids, features, table):
        if stat_source.startswith(statwords.FILE):
            return statwords.from_table(image_ids, table, word_id, cfg.num_stat_word)
        if stat_source == statwords.DETECTOR:
            objects, attrs = features.detections(image_ids, cfg.max_boxes)
            return statwords.from_detections(
                objects, attrs, class_names, word_id, cfg.num_stat_word, cfg.topk
            )
        return np.zeros((len(image_ids), cfg.num_stat_word), np.int64)

    def dataset(pairs, features, split, stat_table):
        dropped = Counter()
        kept = []
        for q, a in pairs:
            if int(q["image_id"]) in features.index:
                kept.append((q, a))
            else:
                dropped["no features"] += 1
        check_dropped(dropped, len(pairs), cfg.allow_dropped, f"vqa {split}")
        image_ids = list(dict.fromkeys(int(q["image_id"]) for q, _ in kept))
        row_of = {i: r for r, i in enumerate(image_ids)}
        ids = np.full((len(kept), ANNOTATORS), -1, np.int64)
        matches = np.zeros((len(kept), ANNOTATORS), np.int64)
        for row, (_, a) in enumerate(kept):
            given = Counter(normalize_vqa_answer(x.get("answer", "")) for x in a["answers"])
            known = [(answer_id[x], n) for x, n in given.most_common() if x in answer_id]
            for k, (i, n) in enumerate(known[:ANNOTATORS]):
                ids[row, k], matches[row, k] = i, n
        label = np.where(matches[:, 0] > 0, ids[:, 0], -1)  # the most given known answer
        types = np.array(
            [
                ANSWER_TYPES.index(a.get("answer_type"))
                if a.get("answer_type") in ANSWER_TYPES
                else 2
                for _, a in kept
            ],
            np.int64,
        )
        answers_ = Answers(ids, soft_target(matches), official_accuracy(matches), label, types)
        ds = QADataset(
            encode([q["question"] for q, _ in kept], vocab, cfg.question_len),
            np.array([row_of[int(q["image_id"])] for q, _ in kept], np.int64),
            answers_,
            len(answers),
            features.reader(image_ids),
            cfg.max_boxes,
            stat_words(image_ids, features, stat_table),
            question_ids=[q["question_id"] for q, _ in kept],
            image_ids=image_ids,
            texts=[q["question"] for q, _ in kept],
        )
        if split != "train" and all(a["answers"] for _, a in kept):
            ds.official = VQAEvaluator([a for _, a in kept])
        return ds, {
            "split": ",".join(SPLITS.get(s, s) for s in (splits if split == "train" else [split])),
            "questions": len(kept),
            "images": len(image_ids),
            "dropped": dict(dropped),
        }

    train, train_counts = dataset(train_pairs, train_features, "train", stat_tables["train"])
    evaluation, eval_counts = dataset(eval_pairs, eval_features, eval_split, stat_tables["eval"])
    word_init = (
        tfidf_init(encode(train_texts, vocab, 32), len(vocab), seed=cfg.seed) if cfg.tfidf else None
    )
    meta = DataMeta(
        dataset="vqa",
        vocab=vocab,
        answers=answers,
        answer_types=list(ANSWER_TYPES),
        soft_targets=True,
        word_init=word_init,
        visual="regions",
        feature_dim=train_features.dim,
        has_graph=False,
        counts={
            "train": train_counts,
            "eval": eval_counts,
            "sources": {"regions": "features", "graph": "none", "statistics_words": stat_source},
        },
    )
    return DataBundle(train, evaluation, meta)
