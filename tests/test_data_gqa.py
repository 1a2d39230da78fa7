"""GQA in the official layout, on files `data synth` writes: graphs, features, errors, drops."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from vqatune.engine.config import Config
from vqatune.engine.data import DataError, build, graph, make_loader, synth
from vqatune.engine.data.common import cache_dir


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("gqa")
    synth.write(out, "gqa", images=30, seed=0, feature_dim=16, questions_per_image=6, boxes=9)
    return out


def cfg_for(root, **kw):
    base = dict(
        dataset="gqa",
        data_root=str(root),
        max_boxes=6,
        num_stat_word=7,
        question_len=10,
        batch_size=8,
        tfidf=False,
    )
    base.update(kw)
    return Config().replace(**base)


@pytest.fixture(scope="module")
def bundle(root):
    return build(cfg_for(root))


def test_meta_and_counts(bundle):
    m = bundle.meta
    assert m.dataset == "gqa" and m.visual == "regions" and m.feature_dim == 16 and m.has_graph
    assert m.node_vocab[:2] == ["<pad>", "<unk>"] and m.attr_vocab[0] == "<pad>"
    assert set(m.rel_vocab) <= {"to the left of", "to the right of", "above", "below"}
    assert set(m.answer_types) <= set(["verify", "query", "choose"]) and "verify" in m.answer_types
    assert m.counts["train"]["images"] == 24 and m.counts["eval"]["split"] == "val"
    assert m.counts["sources"] == {
        "regions": "features",
        "graph": "scene graphs",
        "statistics_words": "scene graphs",
    }
    assert len(bundle.train) == m.counts["train"]["questions"] > 100


def test_batch_contract(bundle, root):
    cfg = cfg_for(root)
    batch = next(iter(make_loader(bundle.train, cfg, train=True, seed=0, epoch=0)))
    b, n, m = 8, 6, bundle.meta.max_attrs
    shapes = {
        "q_tokens": (b, 10),
        "q_mask": (b, 10),
        "regions": (b, n, 16),
        "boxes": (b, n, 4),
        "region_mask": (b, n),
        "node_names": (b, n),
        "node_attrs": (b, n, m),
        "node_boxes": (b, n, 4),
        "node_mask": (b, n),
        "edge_rel": (b, n, n),
        "stat_words": (b, 7),
        "stat_mask": (b, 7),
        "target": (b, len(bundle.meta.answers)),
        "score": (b, len(bundle.meta.answers)),
        "label": (b,),
        "answer_type": (b,),
    }
    assert {k: tuple(v.shape) for k, v in batch.items()} == shapes
    import torch

    assert batch["regions"].dtype == torch.float32 and batch["edge_rel"].dtype == torch.long
    assert batch["region_mask"].all()  # 9 regions per image, cut to 6
    assert (batch["boxes"] >= 0).all() and (batch["boxes"] <= 1).all()
    assert torch.equal(batch["target"].argmax(1), batch["label"])


def test_sample_matches_the_official_files(bundle, root):
    graphs = json.loads((root / "train_sceneGraphs.json").read_text())
    questions = json.loads((root / "train_balanced_questions.json").read_text())
    info = json.loads((root / "gqa_objects_info.json").read_text())
    ds, meta = bundle.train, bundle.meta
    i = 17
    s = ds[i]
    q = questions[ds.question_ids[i]]
    assert meta.answers[s["label"]] == q["answer"]
    objs = list(graphs[q["imageId"]]["objects"].items())[:6]
    names = [meta.node_vocab[k] for k in s["node_names"][s["node_mask"]]]
    assert names == [o["name"] for _, o in objs]
    slot = {oid: k for k, (oid, _) in enumerate(objs)}
    expected = np.zeros((6, 6), np.int64)
    for k, (_, o) in enumerate(objs):
        for r in o["relations"]:
            if r["object"] in slot:
                expected[k, slot[r["object"]]] = meta.rel_vocab.index(r["name"]) + 1
    assert (s["edge_rel"] == expected).all()
    o = objs[0][1]
    np.testing.assert_allclose(
        s["node_boxes"][0],
        [o["x"] / 640, o["y"] / 480, (o["x"] + o["w"]) / 640, (o["y"] + o["h"]) / 480],
    )
    attrs = [meta.attr_vocab[a] for a in s["node_attrs"][0] if a]
    assert attrs == o["attributes"][: meta.max_attrs]
    row = info[q["imageId"]]
    with h5py.File(root / f"gqa_objects_{row['file']}.h5") as f:
        np.testing.assert_array_equal(s["regions"], f["features"][row["idx"], :6])
        np.testing.assert_allclose(s["boxes"], f["bboxes"][row["idx"], :6] / [640, 480, 640, 480])


def test_statistics_words_follow_topk(root):
    few = build(cfg_for(root, topk=1, num_stat_word=30)).train
    many = build(cfg_for(root, topk=10, num_stat_word=30)).train
    n_few = (few.stat_words != 0).sum(1)
    n_many = (many.stat_words != 0).sum(1)
    assert (n_few <= n_many).all() and (n_few < n_many).any()
    assert (few.stat_words[:, :30] > 1).sum() == n_few.sum()  # never pad/unk inside


def test_statistics_words_order():
    g = {
        "img": {
            "objects": {
                "1": {
                    "name": "dog",
                    "x": 0,
                    "y": 0,
                    "w": 1,
                    "h": 1,
                    "attributes": ["brown"],
                    "relations": [{"object": "2", "name": "near"}],
                },
                "2": {
                    "name": "cat",
                    "x": 0,
                    "y": 0,
                    "w": 1,
                    "h": 1,
                    "attributes": ["white"],
                    "relations": [{"object": "1", "name": "near"}],
                },
            }
        }
    }
    vocab = ["<pad>", "<unk>", "near", "brown", "white", "dog", "cat"]
    words = graph.statistics_words(["img"], g, {w: i for i, w in enumerate(vocab)}, 5, topk=2)
    # "near" twice, then "brown" (first seen of the ties); then object names
    assert [vocab[i] for i in words[0] if i] == ["near", "brown", "dog", "cat"]


def test_scene_graphs_only(tmp_path):
    synth.write(tmp_path, "gqa", images=10, seed=1, features=False, questions_per_image=4)
    b = build(cfg_for(tmp_path))
    m = b.meta
    assert m.counts["sources"]["regions"] == "scene graphs"
    assert m.feature_dim == len(m.node_vocab) + len(m.attr_vocab)
    s = b.train[0]
    k = np.nonzero(s["node_mask"])[0][0]
    assert s["regions"][k, s["node_names"][k]] == 1.0  # multi-hot of the node's name
    for a in s["node_attrs"][k][s["node_attrs"][k] > 0]:
        assert s["regions"][k, len(m.node_vocab) + a] == 1.0
    assert s["regions"][k].sum() == 1 + (s["node_attrs"][k] > 0).sum()
    assert (s["region_mask"] == s["node_mask"]).all()


def test_features_only_builds_graph_from_boxes(tmp_path):
    synth.write(
        tmp_path, "gqa", images=10, seed=1, graphs=False, feature_dim=8, questions_per_image=4
    )
    b = build(cfg_for(tmp_path))
    m = b.meta
    assert m.counts["sources"]["graph"] == "boxes" and m.rel_vocab == graph.BOX_RELATIONS
    batch = b.train.batch(np.arange(len(b.train)))
    assert (batch["node_mask"] == batch["region_mask"]).all()
    np.testing.assert_allclose(batch["node_boxes"], batch["boxes"], rtol=1e-6)
    s = b.train[0]
    assert (s["node_names"][s["node_mask"]] == 1).all()
    assert (s["edge_rel"] > 0).sum(1)[s["node_mask"]].min() >= 1  # every box has neighbours
    assert not s["stat_mask"].any()


def test_box_relations():
    boxes = np.array(
        [[[0.0, 0.0, 0.2, 0.2], [0.5, 0.0, 0.7, 0.2], [0.05, 0.05, 0.1, 0.1]]], np.float32
    )
    g = graph.box_graphs(boxes, np.ones((1, 3), bool))
    rel = {(a, b): graph.BOX_RELATIONS[r] for a, b, r in zip(g.edge_src, g.edge_dst, g.edge_rel)}
    assert rel[(0, 1)] == "to the left of" and rel[(1, 0)] == "to the right of"
    assert rel[(2, 0)] == "inside" and rel[(0, 2)] == "contains"


def test_missing_file_names_the_official_file(tmp_path):
    with pytest.raises(DataError, match="train_balanced_questions.json: no such file .*official"):
        build(cfg_for(tmp_path))
    with pytest.raises(DataError, match="data_root"):
        build(Config().replace(dataset="gqa"))


def test_no_graphs_and_no_features(tmp_path, root):
    for name in ("train_balanced_questions.json", "val_balanced_questions.json"):
        (tmp_path / name).write_text((root / name).read_text())
    with pytest.raises(DataError, match="train_sceneGraphs.json.*gqa_objects_info.json"):
        build(cfg_for(tmp_path))


def test_malformed_json_gives_file_and_line(tmp_path, root):
    for p in root.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "val_sceneGraphs.json").write_text('{\n  "1": {"objects": {}},\n  "2": oops\n}')
    with pytest.raises(DataError, match=r"val_sceneGraphs.json:3:\d+: malformed JSON"):
        build(cfg_for(tmp_path))


def test_dropped_questions(tmp_path, root):
    for p in root.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    graphs = json.loads((root / "train_sceneGraphs.json").read_text())
    del graphs[next(iter(graphs))]  # one of 24 images: about 4% of the questions
    (tmp_path / "train_sceneGraphs.json").write_text(json.dumps(graphs))
    with pytest.raises(
        DataError,
        match=r"gqa train: \d+ of \d+ questions dropped \(\d+ no scene "
        r"graph\).*allow_dropped",
    ):
        build(cfg_for(tmp_path))
    b = build(cfg_for(tmp_path, allow_dropped=True))
    dropped = b.meta.counts["train"]["dropped"]["no scene graph"]
    assert dropped == 6 and len(b.train) == b.meta.counts["train"]["questions"]


def test_loader_workers_read_hdf5(bundle, root):
    cfg = cfg_for(root)
    here = list(make_loader(bundle.eval, cfg, train=False, seed=0, epoch=0))
    there = list(make_loader(bundle.eval, cfg.replace(num_workers=2), train=False, seed=0, epoch=0))
    assert len(here) == len(there)
    for a, b in zip(here, there):
        assert all((a[k] == b[k]).all() for k in a)


def test_builtin_synthetic_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("VQATUNE_CACHE", str(tmp_path))
    cfg = Config().replace(dataset="synthetic", max_boxes=8, train_limit=50, eval_limit=20)
    b = build(cfg)
    assert b.meta.dataset == "synthetic" and b.meta.has_graph and len(b.train) == 50
    root = synth.builtin_root(cfg.seed)
    assert root.parent == cache_dir() == tmp_path
    stamp = (root / "train_balanced_questions.json").stat().st_mtime_ns
    build(cfg)
    assert (root / "train_balanced_questions.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temp dir left


def _rechunk(path):
    """Rewrite every dataset of an HDF5 file chunked and compressed (not memory-mappable)."""
    with h5py.File(path) as f:
        data = {k: f[k][:] for k in f}
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f.create_dataset(k, data=v, chunks=(1,) + v.shape[1:], compression="gzip")


@pytest.mark.parametrize("fmt", ["gqa", "vqa"])
def test_hdf5_paths_agree(tmp_path, fmt):
    """Memory-mapped gathers (one file, several files) and h5py reads give the same batches."""
    flat, split, chunked = tmp_path / "flat", tmp_path / "split", tmp_path / "chunked"
    kw = dict(images=16, seed=5, feature_dim=6, questions_per_image=3, boxes=5)
    synth.write(flat, fmt, **kw)
    synth.write(split, fmt, images_per_file=5, **kw)
    synth.write(chunked, fmt, **kw)
    for p in [*chunked.glob("*.h5"), *chunked.glob("*.hdf5")]:
        _rechunk(p)
    extra = {"min_answer_count": 1} if fmt == "vqa" else {}
    batches = []
    for root in (flat, split, chunked):
        cfg = cfg_for(root, dataset=fmt, max_boxes=4, **extra)
        b = build(cfg)
        batches.append(b.train.batch(np.arange(len(b.train))[::-1]))
        feats = b.train.visual._arrays(0)[0]
        assert isinstance(feats, np.memmap) == (root != chunked)
    if fmt == "gqa":
        assert len(list(split.glob("gqa_objects_*.h5"))) == 4
    for other in batches[1:]:
        for key in ("regions", "boxes", "region_mask"):
            np.testing.assert_array_equal(batches[0][key], other[key])
    assert batches[0]["region_mask"].all()


def test_synth_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(synth, "region_features", broken)
    with pytest.raises(DataError, match="cannot write: No space left on device"):
        synth.write(tmp_path / "out", "gqa", images=4, feature_dim=4)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()
    monkeypatch.undo()
    synth.write(tmp_path / "empty", "gqa", images=4, feature_dim=4)  # an empty folder is fine
    assert (tmp_path / "empty" / "train_balanced_questions.json").is_file()


def test_wrong_value_types_are_clean_errors(tmp_path, root):
    for p in root.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    graphs = json.loads((root / "val_sceneGraphs.json").read_text())
    image_id = next(iter(graphs))
    graphs[image_id]["objects"]["0"]["x"] = "12"
    (tmp_path / "val_sceneGraphs.json").write_text(json.dumps(graphs))
    with pytest.raises(
        DataError,
        match=rf"val_sceneGraphs.json: image '{image_id}', object '0': "
        r"x must be a number",
    ):
        build(cfg_for(tmp_path))
    questions = json.loads((root / "train_balanced_questions.json").read_text())
    questions[next(iter(questions))]["question"] = None
    (tmp_path / "train_balanced_questions.json").write_text(json.dumps(questions))
    with pytest.raises(DataError, match="train_balanced_questions.json: question '00000000'"):
        build(cfg_for(tmp_path))
