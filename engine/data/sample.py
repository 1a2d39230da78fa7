"""One sample, whatever the source: question + regions (+ scene graph) + statistics words + answer.

A QADataset keeps per-question arrays (tokens, image row, sparse answers) and per-image sources
(region features, graph arrays, statistics words) and assembles whole batches in numpy.
Light module: numpy and h5py only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import BatchedDataset


@dataclass
class Answers:
    """Per question, up to K candidate answers (sparse): id (-1 = pad), training target, score."""

    ids: np.ndarray  # int64 [Q, K]
    target: np.ndarray  # float32 [Q, K]
    score: np.ndarray  # float32 [Q, K]
    label: np.ndarray  # int64 [Q], -1 if none in the vocabulary
    answer_type: np.ndarray  # int64 [Q]

    def take(self, q: np.ndarray, num_answers: int) -> dict[str, np.ndarray]:
        ids = self.ids[q]
        rows, cols = np.nonzero(ids >= 0)
        target = np.zeros((len(q), num_answers), np.float32)
        score = np.zeros((len(q), num_answers), np.float32)
        target[rows, ids[rows, cols]] = self.target[q][rows, cols]
        score[rows, ids[rows, cols]] = self.score[q][rows, cols]
        return {"target": target, "score": score, "label": self.label[q],
                "answer_type": self.answer_type[q]}

    def subset(self, keep: np.ndarray) -> "Answers":
        return Answers(self.ids[keep], self.target[keep], self.score[keep], self.label[keep],
                       self.answer_type[keep])


def single_answers(labels: np.ndarray, types: np.ndarray) -> Answers:
    """One correct answer per question (GQA, easy-VQA): one-hot target and score."""
    ones = (labels >= 0).astype(np.float32)[:, None]
    return Answers(labels[:, None].copy(), ones, ones.copy(), labels, types)


@dataclass
class Graphs:
    """Scene graphs of all images, padded to N nodes; edges kept sparse (CSR by image)."""

    names: np.ndarray  # int32 [I, N] (0 = pad)
    attrs: np.ndarray  # int32 [I, N, M] (0 = pad)
    boxes: np.ndarray  # float32 [I, N, 4] (x1, y1, x2, y2 in [0, 1])
    edge_offsets: np.ndarray  # int64 [I + 1]
    edge_src: np.ndarray  # int32 [E]
    edge_dst: np.ndarray  # int32 [E]
    edge_rel: np.ndarray  # int32 [E] relation id (stored in batches as 1 + id)

    def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        b, n = len(rows), self.names.shape[1]
        names = self.names[rows].astype(np.int64)
        start, stop = self.edge_offsets[rows], self.edge_offsets[rows + 1]
        counts = stop - start
        which = np.repeat(np.arange(b), counts)  # batch row of each edge
        edge = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) \
            + np.repeat(start, counts)
        edge_rel = np.zeros((b, n, n), np.int64)
        edge_rel[which, self.edge_src[edge], self.edge_dst[edge]] = self.edge_rel[edge] + 1
        return {"node_names": names, "node_attrs": self.attrs[rows].astype(np.int64),
                "node_boxes": self.boxes[rows], "node_mask": names != 0, "edge_rel": edge_rel}


class GraphFeatures:
    """Region features from a scene graph (as GraphVQA): multi-hot of each object's name and
    attributes, D = len(node_vocab) + len(attr_vocab); boxes and mask are the nodes'."""

    def __init__(self, graphs: Graphs, num_names: int, num_attrs: int):
        self.graphs, self.num_names, self.num_attrs = graphs, num_names, num_attrs
        self.dim = num_names + num_attrs

    def take(self, rows: np.ndarray, max_boxes: int) -> dict[str, np.ndarray]:
        names = self.graphs.names[rows]  # [B, N]
        attrs = self.graphs.attrs[rows]  # [B, N, M]
        b, n = names.shape
        regions = np.zeros((b, n, self.dim), np.float32)
        bi, ni = np.nonzero(names)
        regions[bi, ni, names[bi, ni]] = 1.0
        bi, ni, mi = np.nonzero(attrs)
        regions[bi, ni, self.num_names + attrs[bi, ni, mi]] = 1.0
        regions[:, :, 0] = 0.0  # the <pad> name column carries nothing
        return {"regions": regions, "boxes": self.graphs.boxes[rows], "region_mask": names != 0}


class H5Features:
    """Lazy region features from HDF5 files: each image's rows are read when its batch is built.

    `rows_of[i]` = (file number, first row, box count); `layout` is "gqa" (features[idx, :n] in
    gqa_objects_{file}.h5) or "vqa" (image_features[start:start + n] in one file). Files are
    opened on first use in each process (h5py handles must not cross a fork).
    """

    def __init__(self, paths: list[Path], layout: str, file_no: np.ndarray, first: np.ndarray,
                 count: np.ndarray, scale: np.ndarray, dim: int, dtype: np.dtype):
        self.paths, self.layout = paths, layout
        self.file_no, self.first, self.count = file_no, first, count
        self.scale = scale  # float32 [I, 4]: divides pixel boxes into [0, 1] (1 for VQA)
        self.dim, self.dtype = dim, dtype
        self._files: dict[int, object] = {}
        self._pid = None

    def __getstate__(self):  # picklable for DataLoader workers: no open handles
        state = dict(self.__dict__)
        state["_files"], state["_pid"] = {}, None
        return state

    def _datasets(self, file_no: int):
        import h5py

        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        if file_no not in self._files:
            f = h5py.File(self.paths[file_no], "r")
            if self.layout == "gqa":
                self._files[file_no] = (f["features"], f["bboxes"])
            else:
                self._files[file_no] = (f["image_features"], f["spatial_features"])
        return self._files[file_no]

    def take(self, rows: np.ndarray, max_boxes: int) -> dict[str, np.ndarray]:
        b = len(rows)
        regions = np.zeros((b, max_boxes, self.dim), self.dtype)
        boxes = np.zeros((b, max_boxes, 4), np.float32)
        mask = np.zeros((b, max_boxes), bool)
        for k in np.argsort(rows, kind="stable"):  # file order: fewer seeks
            r = rows[k]
            feats, boxes_ds = self._datasets(int(self.file_no[r]))
            n, first = min(int(self.count[r]), max_boxes), int(self.first[r])
            if n == 0:
                continue
            if self.layout == "gqa":
                feats.read_direct(regions, np.s_[first, :n], np.s_[k, :n])
                boxes[k, :n] = boxes_ds[first, :n]
            else:
                feats.read_direct(regions, np.s_[first:first + n], np.s_[k, :n])
                boxes[k, :n] = boxes_ds[first:first + n, :4]
            mask[k, :n] = True
        boxes /= self.scale[rows][:, None, :]
        return {"regions": regions, "boxes": boxes, "region_mask": mask}


class QADataset(BatchedDataset):
    """Questions over images with region features, optionally scene graphs."""

    def __init__(self, q_tokens: np.ndarray, image_row: np.ndarray, answers: Answers,
                 num_answers: int, visual, max_boxes: int, stat_words: np.ndarray,
                 graphs: Graphs | None = None):
        self.q_tokens = q_tokens  # int64 [Q, L]
        self.image_row = image_row  # int64 [Q]: row in the per-image sources
        self.answers = answers
        self.num_answers = num_answers
        self.visual = visual  # H5Features or GraphFeatures
        self.max_boxes = max_boxes
        self.stat_words = stat_words  # int64 [I, S]
        self.graphs = graphs

    def __len__(self) -> int:
        return len(self.image_row)

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        q = np.asarray(indices, np.int64)
        rows = self.image_row[q]
        tokens = self.q_tokens[q]
        stat = self.stat_words[rows]
        out = {"q_tokens": tokens, "q_mask": tokens != 0}
        out.update(self.visual.take(rows, self.max_boxes))
        if self.graphs is not None:
            out.update(self.graphs.take(rows))
        out.update({"stat_words": stat, "stat_mask": stat != 0})
        out.update(self.answers.take(q, self.num_answers))
        return out
