"""Statistics words of each image (CFRF's image predicates, as MGHR feeds them to BAN).

Where they come from, the first that applies:
1. MGHR's files under data_root, one per split: GQA `{split}_{topk}_stats_words.json`
   (train_6_stats_words.json, val_6_stats_words.json, ...), VQA v2
   `{split}_VQAv2_stats_words.json` (train_VQAv2_stats_words.json, val_...), each
   {"<image id>": "word,phrase,..."}: the phrases split at commas, tokenised, cut to
   num_stat_word (as MGHR reads them);
2. derived: GQA from the scene graph (graph.statistics_words); VQA v2 from the detector's
   class and attribute ids when the feature file carries them (bottom-up attention's
   objects_id / attrs_id [R] in the feature file, ids indexing the lines of objects_vocab.txt /
   attributes_vocab.txt under data_root): the `topk` most
   frequent attributes, then the object names by frequency;
3. none: every statistics word is padding, and omega_v, topk and num_stat_word do nothing
   (the run says so: a warning and the start event's `inactive`).

Light module: numpy only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .common import DataError, load_json
from .vocab import tokenize

FILE = "file"
SCENE_GRAPHS = "scene graphs"
DETECTOR = "detector classes"
NONE = "none"
INACTIVE_WITHOUT = ("omega_v", "topk", "num_stat_word")
OBJECTS_VOCAB, ATTRIBUTES_VOCAB = "objects_vocab.txt", "attributes_vocab.txt"


def gqa_file(root: Path, split: str, topk: int) -> Path:
    return root / f"{split}_{topk}_stats_words.json"


def vqa_file(root: Path, split: str) -> Path:
    return root / f"{split}_VQAv2_stats_words.json"


def read_file(path: Path) -> dict[str, str] | None:
    """An MGHR statistics-word file, or None when there is none."""
    if not path.is_file():
        return None
    data = load_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise DataError(f'{path}: expected {{"<image id>": "word,phrase,..."}}')
    return data


def table_words(table: Mapping[str, str]) -> list[str]:
    """Every phrase of a file, once (fed to the question vocabulary)."""
    return list(dict.fromkeys(p for v in table.values() for p in v.split(",") if p.strip()))


def from_table(
    image_ids: Sequence, table: Mapping[str, str], word_id: Mapping[str, int], num_words: int
) -> np.ndarray:
    """File words -> question-vocabulary ids [I, num_words] (0 = pad); unknown words skipped."""
    out = np.zeros((len(image_ids), num_words), np.int64)
    for row, image_id in enumerate(image_ids):
        ids = [word_id.get(w, 0) for w in tokenize(table.get(str(image_id), "").replace(",", " "))]
        ids = [i for i in ids if i > 1][:num_words]
        out[row, : len(ids)] = ids
    return out


def ranked_ids(
    predicates: Counter, objects: Counter, word_id: Mapping[str, int], num_words: int, topk: int
) -> list[int]:
    """The topk most frequent predicates (ties by first appearance), then the object names by
    frequency; tokenised, de-duplicated, cut to num_words."""
    phrases = [p for p, _ in predicates.most_common(topk)] + [n for n, _ in objects.most_common()]
    ids: list[int] = []
    for phrase in phrases:
        for word in tokenize(phrase):
            i = word_id.get(word, 0)
            if i > 1 and i not in ids:
                ids.append(i)
    return ids[:num_words]


def read_class_names(root: Path) -> tuple[list[str], list[str]] | None:
    """The detector's class and attribute names (one a line; "name,synonym" keeps the name)."""
    paths = root / OBJECTS_VOCAB, root / ATTRIBUTES_VOCAB
    if not paths[0].is_file():
        return None
    names = []
    for path in paths:
        lines = path.read_text().splitlines() if path.is_file() else []
        names.append([line.split(",")[0].strip() for line in lines])
    return names[0], names[1]


def from_detections(
    objects: Sequence[Sequence[int]],
    attributes: Sequence[Sequence[int]] | None,
    class_names: tuple[list[str], list[str]],
    word_id: Mapping[str, int],
    num_words: int,
    topk: int,
) -> np.ndarray:
    """Per image, its boxes' class ids (and attribute ids) -> statistics-word ids [I, S]."""
    object_names, attribute_names = class_names
    out = np.zeros((len(objects), num_words), np.int64)
    for row, ids in enumerate(objects):
        found = Counter(object_names[i] for i in ids if 0 <= i < len(object_names))
        attrs = Counter()
        if attributes is not None:
            attrs.update(
                attribute_names[i] for i in attributes[row] if 0 <= i < len(attribute_names)
            )
        words = ranked_ids(attrs, found, word_id, num_words, topk)
        out[row, : len(words)] = words
    return out


def inactive_params(meta) -> list[str]:
    """The parameters that do nothing for this data (no statistics words)."""
    source = (getattr(meta, "counts", None) or {}).get("sources", {}).get("statistics_words")
    return list(INACTIVE_WITHOUT) if source in (None, NONE) else []
