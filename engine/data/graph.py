"""Scene graphs -> padded node/edge arrays, statistics words, and graphs built from boxes alone.

GQA scene graph of one image: {"width", "height", "objects": {id: {"name", "x", "y", "w", "h",
"attributes": [...], "relations": [{"object": id, "name": ...}]}}}. Light module: numpy only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from .common import PAD, UNK
from .sample import Graphs
from .statwords import ranked_ids

MAX_ATTRS_CAP = 8
# Relations of the graph built from boxes alone (features without scene graphs).
BOX_RELATIONS = ["to the left of", "to the right of", "above", "below", "inside", "contains"]
BOX_NEIGHBOURS = 4  # each box links to its nearest boxes


def _objects(graph: Mapping) -> list[tuple[str, dict]]:
    return list(graph.get("objects", {}).items())


def graph_vocabs(graphs: Mapping[str, Mapping]) -> tuple[list[str], list[str], list[str], int]:
    """Node names (<pad>, <unk>, ...), attributes (<pad>, ...), relations (no pad: edges store
    1 + id), and the attribute slots per node."""
    names, attrs, rels, most = Counter(), Counter(), Counter(), 1
    for g in graphs.values():
        for _, o in _objects(g):
            names[o["name"]] += 1
            attrs.update(o.get("attributes", []))
            most = max(most, len(o.get("attributes", [])))
            rels.update(r["name"] for r in o.get("relations", []))

    def ordered(c: Counter) -> list[str]:
        return sorted(c, key=lambda w: (-c[w], w))

    return (
        [PAD, UNK] + ordered(names),
        [PAD] + ordered(attrs),
        ordered(rels),
        min(most, MAX_ATTRS_CAP),
    )


def graph_words(graphs: Mapping[str, Mapping]) -> list[str]:
    """Every name, attribute and relation phrase (fed to the question vocabulary and TF-IDF)."""
    out = []
    for g in graphs.values():
        for _, o in _objects(g):
            out.append(o["name"])
            out.extend(o.get("attributes", []))
            out.extend(r["name"] for r in o.get("relations", []))
    return out


def scene_graphs(
    image_ids: Sequence[str],
    graphs: Mapping[str, Mapping],
    node_vocab: list[str],
    attr_vocab: list[str],
    rel_vocab: list[str],
    max_boxes: int,
    max_attrs: int,
) -> Graphs:
    """The first max_boxes objects of each image; edges among them; boxes / (width, height)."""
    name_id = {w: i for i, w in enumerate(node_vocab)}
    attr_id = {w: i for i, w in enumerate(attr_vocab)}
    rel_id = {w: i for i, w in enumerate(rel_vocab)}
    n_img = len(image_ids)
    names = np.zeros((n_img, max_boxes), np.int32)
    attrs = np.zeros((n_img, max_boxes, max(max_attrs, 1)), np.int32)
    boxes = np.zeros((n_img, max_boxes, 4), np.float32)
    offsets, src, dst, rel = [0], [], [], []
    for row, image_id in enumerate(image_ids):
        g = graphs[image_id]
        objs = _objects(g)[:max_boxes]
        slot = {oid: k for k, (oid, _) in enumerate(objs)}
        w, h = float(g.get("width") or 1), float(g.get("height") or 1)
        for k, (_, o) in enumerate(objs):
            names[row, k] = name_id.get(o["name"], 1)  # 1 = <unk>: still a node
            a = [attr_id[x] for x in o.get("attributes", []) if x in attr_id][:max_attrs]
            attrs[row, k, : len(a)] = a
            boxes[row, k] = (o["x"] / w, o["y"] / h, (o["x"] + o["w"]) / w, (o["y"] + o["h"]) / h)
            for r in o.get("relations", []):
                if r["object"] in slot and r["name"] in rel_id:
                    src.append(k)
                    dst.append(slot[r["object"]])
                    rel.append(rel_id[r["name"]])
        offsets.append(len(src))
    return Graphs(
        names,
        attrs,
        np.clip(boxes, 0.0, 1.0),
        np.asarray(offsets, np.int64),
        np.asarray(src, np.int32),
        np.asarray(dst, np.int32),
        np.asarray(rel, np.int32),
    )


def statistics_words(
    image_ids: Sequence[str],
    graphs: Mapping[str, Mapping],
    word_id: Mapping[str, int],
    num_words: int,
    topk: int,
) -> np.ndarray:
    """CFRF-style image predicates -> question-vocabulary ids [I, num_words] (0 = pad).

    Per image: the `topk` most frequent predicate words (relation names and attributes; ties by
    first appearance), then its object names by frequency; tokenised, de-duplicated, cut.
    """
    out = np.zeros((len(image_ids), num_words), np.int64)
    if num_words == 0:
        return out
    for row, image_id in enumerate(image_ids):
        predicates, objects = Counter(), Counter()
        for _, o in _objects(graphs[image_id]):
            objects[o["name"]] += 1
            predicates.update(o.get("attributes", []))
            predicates.update(r["name"] for r in o.get("relations", []))
        ids = ranked_ids(predicates, objects, word_id, num_words, topk)
        out[row, : len(ids)] = ids
    return out


def box_graphs(boxes: np.ndarray, mask: np.ndarray) -> Graphs:
    """Graphs from boxes alone: every box is an "object" node linked to its BOX_NEIGHBOURS
    nearest boxes by the spatial relation between them (containment first, then the dominant
    direction of the centres). boxes: float32 [I, N, 4] in [0, 1]; mask: bool [I, N]."""
    n_img, n = mask.shape
    names = mask.astype(np.int32)  # node_vocab = [<pad>, object]
    attrs = np.zeros((n_img, n, 1), np.int32)
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # [I, N, 2]
    offsets, src, dst, rel = [0], [], [], []
    for row in range(n_img):
        k = int(mask[row].sum())
        if k > 1:
            c, b = centre[row, :k], boxes[row, :k]
            dist = np.linalg.norm(c[:, None] - c[None], axis=-1)
            np.fill_diagonal(dist, np.inf)
            near = np.argsort(dist, axis=1)[:, : min(BOX_NEIGHBOURS, k - 1)]
            i = np.repeat(np.arange(k), near.shape[1])
            j = near.ravel()
            inside = ((b[i, :2] >= b[j, :2]) & (b[i, 2:] <= b[j, 2:])).all(1)
            contains = ((b[j, :2] >= b[i, :2]) & (b[j, 2:] <= b[i, 2:])).all(1)
            dx, dy = c[j, 0] - c[i, 0], c[j, 1] - c[i, 1]
            # i is left of j when j's centre is to the right
            r = np.where(np.abs(dx) >= np.abs(dy), np.where(dx > 0, 0, 1), np.where(dy > 0, 2, 3))
            r = np.where(contains, 5, np.where(inside, 4, r))
            src.append(i)
            dst.append(j)
            rel.append(r)
        offsets.append(offsets[-1] + (len(src[-1]) if k > 1 else 0))
    return Graphs(
        names,
        attrs,
        boxes.astype(np.float32),
        np.asarray(offsets, np.int64),
        _int32s(src),
        _int32s(dst),
        _int32s(rel),
    )


def _int32s(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
