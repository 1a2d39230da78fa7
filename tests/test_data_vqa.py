"""VQA v2 in the official layout (synthetic files): soft targets, official accuracy, HDF5 layout."""

from __future__ import annotations

import itertools
import json

import h5py
import numpy as np
import pytest
from vqatune.engine.config import Config
from vqatune.engine.data import DataError, build, make_loader, synth
from vqatune.engine.data.vqa import official_accuracy, soft_target
from vqatune.engine.official import normalize_vqa_answer as normalize_answer


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("vqa")
    synth.write(out, "vqa", images=25, seed=2, feature_dim=12, questions_per_image=6, boxes=7)
    return out


def cfg_for(root, **kw):
    base = dict(dataset="vqa", data_root=str(root), max_boxes=5, min_answer_count=2, batch_size=6)
    base.update(kw)
    return Config().replace(**base)


@pytest.fixture(scope="module")
def bundle(root):
    return build(cfg_for(root))


def brute_force_accuracy(answers: list[str], candidate: str) -> float:
    """The official definition, literally: every subset of 9 of the 10 annotators."""
    subsets = itertools.combinations(range(10), 9)
    return float(np.mean([min(1.0, sum(answers[i] == candidate for i in s) / 3) for s in subsets]))


def test_official_accuracy_and_soft_targets():
    for m in range(11):
        answers = ["x"] * m + ["y"] * (10 - m)
        assert official_accuracy(np.array([m]))[0] == pytest.approx(
            brute_force_accuracy(answers, "x")
        )
    assert soft_target(np.arange(6)).tolist() == pytest.approx([0, 0.3, 0.6, 0.9, 1, 1])


def test_normalize_answer():
    assert normalize_answer(" Two ") == "2"
    assert normalize_answer("the red Car.") == "red car"
    assert normalize_answer("1,000") == "1000" and normalize_answer("3.5") == "3.5"
    assert normalize_answer("yes!") == "yes"


def test_meta(bundle):
    m = bundle.meta
    assert m.dataset == "vqa" and m.soft_targets and not m.has_graph and m.visual == "regions"
    assert m.answer_types == ["yes/no", "number", "other"] and m.feature_dim == 12
    assert m.counts["train"]["split"] == "train2014" and m.counts["eval"]["split"] == "val2014"


def test_targets_scores_labels_match_annotations(bundle, root):
    anns = json.loads((root / "v2_mscoco_train2014_annotations.json").read_text())["annotations"]
    by_id = {a["question_id"]: a for a in anns}
    ds, answers = bundle.train, bundle.meta.answers
    for i in range(0, len(ds), 7):
        s = ds[i]
        given = [normalize_answer(a["answer"]) for a in by_id[ds.question_ids[i]]["answers"]]
        for k, a in enumerate(answers):
            m = given.count(a)
            assert s["target"][k] == pytest.approx(float(soft_target(np.array([m]))[0]))
            assert s["score"][k] == pytest.approx(brute_force_accuracy(given, a), abs=1e-6)
        best = max((a for a in answers), key=given.count)
        assert s["label"] == (answers.index(best) if given.count(best) else -1)


def test_regions_follow_pos_boxes(bundle, root):
    ds = bundle.train
    s = ds[3]
    image_id = ds.image_ids[int(ds.image_row[3])]
    with h5py.File(root / "train36.hdf5") as f:
        row = list(f["image_ids"][:]).index(image_id)
        start, end = f["pos_boxes"][row]
        n = min(end - start, 5)
        np.testing.assert_array_equal(s["regions"][:n], f["image_features"][start : start + n])
        np.testing.assert_allclose(s["boxes"][:n], f["spatial_features"][start : start + n, :4])
    assert s["region_mask"].sum() == n


def test_loader_batches(bundle, root):
    batch = next(iter(make_loader(bundle.train, cfg_for(root), train=True, seed=3, epoch=0)))
    assert tuple(batch["regions"].shape) == (6, 5, 12)
    assert "node_names" not in batch and tuple(batch["stat_words"].shape) == (6, 30)
    assert ((batch["target"] == 0) | (batch["target"] >= 0.3)).all()


def test_image_index_from_json(tmp_path, root):
    for p in root.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    with h5py.File(tmp_path / "val36.hdf5", "a") as f:
        del f["image_ids"]
    b = build(cfg_for(tmp_path))
    assert len(b.eval) == len(build(cfg_for(root)).eval)
    (tmp_path / "val36_imgid2idx.json").unlink()
    with pytest.raises(
        DataError, match="val36.hdf5: no 'image_ids' dataset and no val36_imgid2idx.json"
    ):
        build(cfg_for(tmp_path))


def test_missing_features_and_dropped(tmp_path, root):
    for p in root.iterdir():
        if p.name != "train36.hdf5":
            (tmp_path / p.name).write_bytes(p.read_bytes())
    with pytest.raises(DataError, match="train36.hdf5: no such file .*official file train36.hdf5"):
        build(cfg_for(tmp_path))
    (tmp_path / "train36.hdf5").write_bytes((root / "train36.hdf5").read_bytes())
    index = json.loads((root / "val36_imgid2idx.json").read_text())
    with h5py.File(tmp_path / "val36.hdf5", "a") as f:  # forget one validation image
        ids = f["image_ids"][:]
        del f["image_ids"]
    index.pop(str(ids[0]))
    (tmp_path / "val36_imgid2idx.json").write_text(json.dumps(index))
    with pytest.raises(
        DataError, match=r"vqa val: \d+ of \d+ questions dropped \(\d+ no features\)"
    ):
        build(cfg_for(tmp_path))
    b = build(cfg_for(tmp_path, allow_dropped=True))
    assert b.meta.counts["eval"]["dropped"]["no features"] > 0


def test_min_answer_count(root):
    assert len(build(cfg_for(root, min_answer_count=1)).meta.answers) >= len(
        build(cfg_for(root, min_answer_count=5)).meta.answers
    )
    with pytest.raises(DataError, match="min_answer_count: no answer"):
        build(cfg_for(root, min_answer_count=100000))


def test_wrong_value_types_are_clean_errors(tmp_path, root):
    for p in root.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    path = tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json"
    data = json.loads(path.read_text())
    data["questions"][0]["image_id"] = "123"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="val2014_questions.json: expected questions"):
        build(cfg_for(tmp_path))
    path.write_bytes((root / path.name).read_bytes())
    path = tmp_path / "v2_mscoco_train2014_annotations.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["answers"] = [{"answer": 3}]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="train2014_annotations.json: question 0: no annotation"):
        build(cfg_for(tmp_path))
