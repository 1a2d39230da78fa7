"""GQA and VQA v2 as research data: the graph branch sees region appearance, statistics words
reach the model, official evaluators come with the evaluation splits, training splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vqatune.engine import config
from vqatune.engine.data import build, make_loader, synth
from vqatune.engine.model import build_model


@pytest.fixture(scope="module")
def features_only(tmp_path_factory):
    out = tmp_path_factory.mktemp("gqa-features")
    synth.write(
        out, "gqa", images=20, seed=1, feature_dim=16, questions_per_image=4, boxes=6, graphs=False
    )
    return out


def tiny(root, dataset="gqa", **changes):
    base = dict(
        dataset=dataset,
        data_root=str(root),
        question_len=8,
        max_boxes=6,
        num_stat_word=6,
        batch_size=4,
        tfidf=False,
    )
    base.update(changes)
    return config.load("smoke").replace(**base)


def first_batch(bundle, cfg):
    return next(iter(make_loader(bundle.eval, cfg, train=False, seed=0, epoch=0)))


def test_graph_branch_without_scene_graphs_sees_region_features(features_only):
    cfg = tiny(features_only)
    bundle = build(cfg)
    assert bundle.meta.has_graph and bundle.meta.counts["sources"]["graph"] == "boxes"
    torch.manual_seed(0)
    model = build_model(cfg, bundle.meta).eval()
    batch = first_batch(bundle, cfg)
    changed = dict(batch, regions=batch["regions"] + torch.randn_like(batch["regions"]))
    with torch.no_grad():
        before = model(batch)["logits"]["graph"]
        after = model(changed)["logits"]["graph"]
    assert torch.equal(batch["boxes"], changed["boxes"])
    assert not torch.allclose(before, after, atol=1e-5)
