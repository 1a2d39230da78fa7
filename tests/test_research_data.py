"""GQA and VQA v2 as research data: the graph branch sees region appearance, statistics words
reach the model, official evaluators come with the evaluation splits, training splits."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from vqatune.engine import config
from vqatune.engine.data import build, make_loader, statwords, synth
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


@pytest.fixture()
def vqa_root(tmp_path):
    synth.write(tmp_path, "vqa", images=20, seed=3, feature_dim=12, questions_per_image=4, boxes=5)
    return tmp_path


def image_ids_of(root, sub):
    qs = json.loads((root / f"v2_OpenEnded_mscoco_{sub}_questions.json").read_text())
    return sorted({q["image_id"] for q in qs["questions"]})


def write_stats_files(root):
    """MGHR's {split}_VQAv2_stats_words.json: {image id: "word,phrase,..."}."""
    for split, sub in (("train", "train2014"), ("val", "val2014")):
        table = {str(i): "red,ball,to the left of,tree" for i in image_ids_of(root, sub)}
        (root / f"{split}_VQAv2_stats_words.json").write_text(json.dumps(table))


def test_vqa_without_statistics_words_reports_them_inactive(vqa_root):
    bundle = build(tiny(vqa_root, "vqa", min_answer_count=1))
    assert bundle.meta.counts["sources"]["statistics_words"] == "none"
    assert statwords.inactive_params(bundle.meta) == ["omega_v", "topk", "num_stat_word"]
    assert not bundle.eval.stat_words.any()


def test_vqa_statistics_word_files_reach_the_model(vqa_root):
    write_stats_files(vqa_root)
    cfg = tiny(vqa_root, "vqa", min_answer_count=1)
    bundle = build(cfg)
    meta = bundle.meta
    assert meta.counts["sources"]["statistics_words"] == "file train_VQAv2_stats_words.json"
    assert statwords.inactive_params(meta) == []
    words = [meta.vocab[i] for i in bundle.eval.stat_words[0] if i]
    assert words == ["red", "ball", "to", "the", "left", "of"]  # cut to num_stat_word = 6
    batch = first_batch(bundle, cfg)
    logits = {}
    for omega_v in (0.0, 1.0):
        torch.manual_seed(0)
        model = build_model(cfg.replace(omega_v=omega_v), meta).eval()
        with torch.no_grad():
            logits[omega_v] = model(batch)["logits"]["ban"]
    assert not torch.allclose(logits[0.0], logits[1.0], atol=1e-5)


def test_vqa_statistics_words_from_detector_classes(vqa_root):
    classes = ["ball", "tree", "car", "dog", "cat"]
    (vqa_root / "objects_vocab.txt").write_text("\n".join(classes) + "\n")
    (vqa_root / "attributes_vocab.txt").write_text("red\nblue,navy\n")
    for split in ("train", "val"):
        with h5py.File(vqa_root / f"{split}36.hdf5", "a") as f:
            rows = f["image_features"].shape[0]
            f["objects_id"] = np.arange(rows) % len(classes)
            f["attrs_id"] = np.arange(rows) % 2
    bundle = build(tiny(vqa_root, "vqa", min_answer_count=1, topk=1))
    meta = bundle.meta
    assert meta.counts["sources"]["statistics_words"] == "detector classes"
    words = {meta.vocab[i] for i in bundle.train.stat_words[0] if i}
    # the first image's 5 boxes: classes 0..4, attributes red/blue alternating (red most often)
    assert words == {"red", "ball", "tree", "car", "dog", "cat"}


def test_gqa_statistics_word_files_win_over_the_scene_graph(tmp_path):
    synth.write(tmp_path, "gqa", images=10, seed=4, feature_dim=8, questions_per_image=3)
    graphs = {
        s: json.loads((tmp_path / f"{s}_sceneGraphs.json").read_text()) for s in ("train", "val")
    }
    for split, g in graphs.items():
        (tmp_path / f"{split}_6_stats_words.json").write_text(
            json.dumps({i: "zebra,giraffe" for i in g})
        )
    bundle = build(tiny(tmp_path))
    meta = bundle.meta
    assert meta.counts["sources"]["statistics_words"] == "file train_6_stats_words.json"
    assert [meta.vocab[i] for i in bundle.eval.stat_words[0] if i] == ["zebra", "giraffe"]


def test_train_splits_join_splits_and_guard_the_evaluation_split(tmp_path):
    from vqatune.engine.data import DataError

    synth.write(tmp_path, "gqa", images=10, seed=7, feature_dim=8, questions_per_image=3)
    for kind in ("balanced_questions", "sceneGraphs"):
        shutil.copy(tmp_path / f"val_{kind}.json", tmp_path / f"testdev_{kind}.json")
    one = build(tiny(tmp_path, train_limit=0, eval_limit=0))
    both = build(tiny(tmp_path, train_splits="train,val", train_limit=0, eval_limit=0))
    # train and val are trained on; the evaluation moves to the first split left, testdev
    assert both.meta.counts["train"]["split"] == "train,val"
    assert both.meta.counts["eval"]["split"] == "testdev"
    assert len(both.train) == len(one.train) + len(one.eval)
    with pytest.raises(DataError, match="train_splits: the evaluation split val is among"):
        build(tiny(tmp_path, train_splits="train,val", eval_split="val"))


def test_vqa_train_splits_read_both_feature_files(vqa_root):
    shutil.copy(
        vqa_root / "v2_OpenEnded_mscoco_val2014_questions.json",
        vqa_root / "v2_OpenEnded_mscoco_test-dev2015_questions.json",
    )
    shutil.copy(vqa_root / "val36.hdf5", vqa_root / "test36.hdf5")
    full = dict(min_answer_count=1, train_limit=0, eval_limit=0)
    one = build(tiny(vqa_root, "vqa", **full))
    cfg = tiny(vqa_root, "vqa", train_splits="train,val2014", eval_split="testdev", **full)
    both = build(cfg)
    assert both.meta.counts["train"]["split"] == "train2014,val2014"
    assert len(both.train) == len(one.train) + len(one.eval)
    batch = both.train.batch(np.arange(len(both.train)))  # rows of both files
    assert batch["region_mask"].any(1).all()
    last = both.train.batch(np.array([len(both.train) - 1]))["regions"]
    first_val = one.eval.batch(np.array([len(one.eval) - 1]))["regions"]
    assert np.array_equal(last, first_val)
    with pytest.raises(Exception, match="train_splits"):
        build(tiny(vqa_root, "vqa", min_answer_count=1, train_splits="train,val"))
