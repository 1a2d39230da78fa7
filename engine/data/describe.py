"""What `vqatune data inspect` reports: counts per split and one decoded example. numpy only."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import DataBundle


def _words(ids, vocab: list[str]) -> list[str]:
    return [vocab[int(i)] for i in ids if int(i) != 0]


def example(bundle: DataBundle, split: str = "train", index: int = 0) -> dict[str, Any]:
    """One sample of `split` ("train" or "eval") decoded back to words."""
    meta = bundle.meta
    dataset = bundle.train if split == "train" else bundle.eval
    if len(dataset) == 0:
        return {}
    s = dataset[index]
    out: dict[str, Any] = {"index": index}
    for attr, key in (("question_ids", "question_id"), ("texts", "question")):
        if getattr(dataset, attr, None) is not None:
            out[key] = getattr(dataset, attr)[index]
    if getattr(dataset, "image_ids", None) is not None:
        row = dataset.image_row[index] if hasattr(dataset, "image_row") else index
        image_id = dataset.image_ids[int(row)]
        out["image_id"] = image_id.item() if isinstance(image_id, np.generic) else image_id
    out["tokens"] = _words(s["q_tokens"], meta.vocab)
    scored = np.nonzero(s["score"])[0]
    out["answer"] = meta.answers[s["label"]] if s["label"] >= 0 else None
    out["answer_type"] = meta.answer_types[s["answer_type"]]
    out["candidates"] = {
        meta.answers[i]: {
            "target": round(float(s["target"][i]), 3),
            "score": round(float(s["score"][i]), 3),
        }
        for i in scored
    }
    if "image" in s:
        out["image"] = list(s["image"].shape)
    if "regions" in s:
        out["regions"] = int(s["region_mask"].sum())
        out["region_shape"] = list(s["regions"].shape)
    if meta.has_graph:
        nodes = []
        for k in np.nonzero(s["node_mask"])[0]:
            attrs = _words(s["node_attrs"][k], meta.attr_vocab)
            nodes.append(
                meta.node_vocab[s["node_names"][k]] + (f" ({', '.join(attrs)})" if attrs else "")
            )
        out["nodes"] = nodes
        src, dst = np.nonzero(s["edge_rel"])
        out["edges"] = [
            f"{nodes[a].split(' (')[0]} -{meta.rel_vocab[s['edge_rel'][a, b] - 1]}-> "
            f"{nodes[b].split(' (')[0]}"
            for a, b in zip(src, dst)
        ]
    out["stat_words"] = _words(s["stat_words"], meta.vocab)
    return out


def describe(bundle: DataBundle, split: str = "train") -> dict[str, Any]:
    meta = bundle.meta
    info: dict[str, Any] = {
        "dataset": meta.dataset,
        "splits": {"train": meta.counts.get("train", {}), "eval": meta.counts.get("eval", {})},
        "answers": len(meta.answers),
        "answer_types": meta.answer_types,
        "soft_targets": meta.soft_targets,
        "vocabulary": len(meta.vocab),
        "word_init": "tfidf" if meta.word_init is not None else "none",
        "visual": meta.visual,
        "feature_dim": meta.feature_dim,
        "has_graph": meta.has_graph,
    }
    if "sources" in meta.counts:
        info["sources"] = meta.counts["sources"]
    if meta.has_graph:
        info["graph"] = {
            "node_names": len(meta.node_vocab),
            "attributes": len(meta.attr_vocab),
            "relations": len(meta.rel_vocab),
            "attribute_slots": meta.max_attrs,
        }
    info["example"] = {
        "split": meta.counts.get(split, {}).get("split", split),
        **example(bundle, split),
    }
    return info
