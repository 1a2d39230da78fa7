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
        return {
            "target": target,
            "score": score,
            "label": self.label[q],
            "answer_type": self.answer_type[q],
        }


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
        edge = (
            np.arange(counts.sum())
            - np.repeat(np.cumsum(counts) - counts, counts)
            + np.repeat(start, counts)
        )
        edge_rel = np.zeros((b, n, n), np.int64)
        edge_rel[which, self.edge_src[edge], self.edge_dst[edge]] = self.edge_rel[edge] + 1
        return {
            "node_names": names,
            "node_attrs": self.attrs[rows].astype(np.int64),
            "node_boxes": self.boxes[rows],
            "node_mask": names != 0,
            "edge_rel": edge_rel,
        }


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
    """Lazy region features from HDF5 files: only the rows of a batch's images are read.

    `layout` is "gqa" (gqa_objects_{file}.h5: features[idx, :n], bboxes[idx, :n]) or "vqa" (one
    file: image_features[first:first + n], spatial_features[first:first + n, :4]). Contiguous,
    uncompressed datasets (how both official sets are stored) are memory-mapped at their file
    offset, so a batch is one numpy gather from the page cache; chunked or compressed ones are
    read image by image through h5py. Files are opened on first use in each process (handles
    must not cross a fork). Regions keep the stored dtype (float16 stays float16 until collate).
    """

    def __init__(
        self,
        paths: list[Path],
        layout: str,
        file_no: np.ndarray,
        first: np.ndarray,
        count: np.ndarray,
        scale: np.ndarray,
        dim: int,
        dtype: np.dtype,
    ):
        self.paths, self.layout = paths, layout
        self.file_no, self.first, self.count = file_no, first, count
        self.scale = scale  # float32 [I, 4]: divides pixel boxes into [0, 1] (1 for VQA)
        self.dim, self.dtype = dim, dtype
        self._open: dict[int, tuple] = {}
        self._pid = None

    def __getstate__(self):  # picklable for DataLoader workers: no open handles
        state = dict(self.__dict__)
        state["_open"], state["_pid"] = {}, None
        return state

    def _arrays(self, file_no: int) -> tuple:
        """(features, boxes) of one file: memory maps where possible, else h5py datasets."""
        import h5py

        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        if file_no not in self._open:
            path = self.paths[file_no]
            f = h5py.File(path, "r")
            names = (
                ("features", "bboxes")
                if self.layout == "gqa"
                else ("image_features", "spatial_features")
            )
            self._open[file_no] = tuple(_memory_map(path, f[name]) for name in names) + (f,)
        return self._open[file_no]

    def take(self, rows: np.ndarray, max_boxes: int) -> dict[str, np.ndarray]:
        b = len(rows)
        n = np.minimum(self.count[rows], max_boxes)
        mask = np.arange(max_boxes)[None, :] < n[:, None]  # [B, N]
        files = np.unique(self.file_no[rows])
        feats, bbs, _ = self._arrays(int(files[0]))
        if (
            len(files) == 1
            and self.layout == "gqa"
            and _mapped(feats, bbs)
            and feats.shape[1] >= max_boxes
        ):
            # the common case: one gather straight into the batch (no zero-fill, no scatter)
            first = self.first[rows]
            regions, boxes = feats[first, :max_boxes], bbs[first, :max_boxes].astype(np.float32)
            if not mask.all():
                regions[~mask] = 0
                boxes[~mask] = 0
            boxes /= self.scale[rows][:, None, :]
            return {"regions": regions, "boxes": boxes, "region_mask": mask}
        regions = np.zeros((b, max_boxes, self.dim), self.dtype)
        boxes = np.zeros((b, max_boxes, 4), np.float32)
        for file_no in files:
            sel = np.nonzero(self.file_no[rows] == file_no)[0]
            feats, bbs, _ = self._arrays(int(file_no))
            first = self.first[rows[sel]]
            if _mapped(feats, bbs):
                if self.layout == "gqa":  # one gather of whole [N, D] blocks; pad rows zeroed
                    width = min(max_boxes, feats.shape[1])
                    regions[sel, :width] = feats[first, :width]
                    boxes[sel, :width] = bbs[first, :width]
                else:  # rows first..first+n of each image, gathered at once
                    k, slot = np.nonzero(mask[sel])
                    src = first[k] + slot
                    regions[sel[k], slot] = feats[src]
                    boxes[sel[k], slot] = bbs[src, :4]
            else:
                for k, start in zip(sel, first):
                    m = int(n[k])
                    if m == 0:
                        continue
                    if self.layout == "gqa":
                        feats.read_direct(regions, np.s_[start, :m], np.s_[k, :m])
                        boxes[k, :m] = bbs[start, :m]
                    else:
                        feats.read_direct(regions, np.s_[start : start + m], np.s_[k, :m])
                        boxes[k, :m] = bbs[start : start + m, :4]
        regions[~mask] = 0
        boxes[~mask] = 0
        boxes /= self.scale[rows][:, None, :]
        return {"regions": regions, "boxes": boxes, "region_mask": mask}


def _mapped(*arrays) -> bool:
    return all(isinstance(a, np.ndarray) for a in arrays)


def _memory_map(path: Path, dataset):
    """A read-only numpy view of a contiguous, uncompressed HDF5 dataset; else the dataset."""
    offset = dataset.id.get_offset()
    if dataset.chunks is not None or dataset.compression is not None or offset is None:
        return dataset
    return np.memmap(path, dtype=dataset.dtype, mode="r", offset=offset, shape=dataset.shape)


class QADataset(BatchedDataset):
    """Questions over images with region features, optionally scene graphs."""

    def __init__(
        self,
        q_tokens: np.ndarray,
        image_row: np.ndarray,
        answers: Answers,
        num_answers: int,
        visual,
        max_boxes: int,
        stat_words: np.ndarray,
        graphs: Graphs | None = None,
        question_ids: list | None = None,
        image_ids: list | None = None,
        texts: list[str] | None = None,
    ):
        self.q_tokens = q_tokens  # int64 [Q, L]
        self.image_row = image_row  # int64 [Q]: row in the per-image sources
        self.answers = answers
        self.num_answers = num_answers
        self.visual = visual  # H5Features or GraphFeatures
        self.max_boxes = max_boxes
        self.stat_words = stat_words  # int64 [I, S]
        self.graphs = graphs
        # for `data inspect` and error reports: official ids and the question text
        self.question_ids, self.image_ids, self.texts = question_ids, image_ids, texts
        self.official = None  # evaluation splits: the official evaluator (engine/official.py)

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
