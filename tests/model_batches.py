"""Random batches with the data contract's keys and shapes, and DataMeta-like objects, for the
model tests (they need no data files)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch


def make_meta(
    kind: str = "pixels",
    *,
    vocab: int = 20,
    answers: int = 7,
    soft: bool = False,
    word_init: bool = False,
    feature_dim: int = 16,
    graph: bool | None = None,
):
    has_graph = (kind == "regions") if graph is None else graph
    return SimpleNamespace(
        dataset="easy-vqa" if kind == "pixels" else "gqa",
        vocab=["<pad>", "<unk>"] + [f"w{i}" for i in range(vocab - 2)],
        answers=[f"a{i}" for i in range(answers)],
        answer_types=["yes/no", "number", "other"],
        soft_targets=soft,
        word_init=(
            np.random.default_rng(0).standard_normal((vocab, 300)).astype(np.float32)
            if word_init
            else None
        ),
        visual=kind,
        feature_dim=0 if kind == "pixels" else feature_dim,
        has_graph=has_graph,
        node_vocab=[f"o{i}" for i in range(9)] if has_graph else [],
        attr_vocab=[f"t{i}" for i in range(5)] if has_graph else [],
        rel_vocab=[f"r{i}" for i in range(4)] if has_graph else [],
        max_attrs=3,
    )


def make_batch(cfg, meta, batch: int = 4, seed: int = 0, stat_words: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    B, L, N, S, A = batch, cfg.question_len, cfg.max_boxes, cfg.num_stat_word, len(meta.answers)
    V = len(meta.vocab)
    lengths = torch.randint(2, L + 1, (B,), generator=g)
    q_mask = torch.arange(L)[None] < lengths[:, None]
    out = {"q_tokens": torch.randint(1, V, (B, L), generator=g) * q_mask, "q_mask": q_mask}
    if meta.visual == "pixels":
        out["image"] = torch.randn(B, 3, cfg.image_res, cfg.image_res, generator=g)
    else:
        n_real = torch.randint(max(1, N // 2), N + 1, (B,), generator=g)
        mask = torch.arange(N)[None] < n_real[:, None]
        xy = torch.rand(B, N, 2, generator=g) * 0.7
        wh = torch.rand(B, N, 2, generator=g) * 0.3 + 0.01
        boxes = torch.cat([xy, xy + wh], -1) * mask[..., None]
        out.update(
            regions=torch.randn(B, N, meta.feature_dim, generator=g) * mask[..., None],
            boxes=boxes,
            region_mask=mask,
        )
        if meta.has_graph:
            names = torch.randint(1, len(meta.node_vocab) + 1, (B, N), generator=g) * mask
            attrs = torch.randint(0, len(meta.attr_vocab) + 1, (B, N, meta.max_attrs), generator=g)
            rel = torch.randint(0, len(meta.rel_vocab) + 1, (B, N, N), generator=g)
            rel = rel * (torch.rand(B, N, N, generator=g) < 0.3)
            pair = mask[:, :, None] & mask[:, None, :]
            out.update(
                node_names=names,
                node_attrs=attrs * mask[..., None],
                node_boxes=boxes,
                node_mask=mask,
                edge_rel=rel * pair,
            )
    s_mask = torch.zeros(B, S, dtype=torch.bool)
    if stat_words and meta.has_graph:
        s_mask = torch.arange(S)[None] < torch.randint(1, S + 1, (B,), generator=g)[:, None]
    out.update(stat_words=torch.randint(1, V, (B, S), generator=g) * s_mask, stat_mask=s_mask)
    label = torch.randint(0, A, (B,), generator=g)
    onehot = torch.nn.functional.one_hot(label, A).float()
    if meta.soft_targets:
        target = torch.rand(B, A, generator=g).round() * 0.3 + onehot * 0.7
    else:
        target = onehot
    out.update(
        target=target,
        score=onehot,
        label=label,
        answer_type=torch.randint(0, len(meta.answer_types), (B,), generator=g),
    )
    return out
