"""easy-VQA through the data contract: shapes, caching, loader order, TF-IDF init."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vqatune.engine.config import Config
from vqatune.engine.data import build, collate, easyvqa, make_loader
from vqatune.engine.data.vocab import base_vectors, build_vocab, encode, tfidf_init, tokenize


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQATUNE_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def cfg(cache):
    return Config().replace(
        train_limit=200, eval_limit=50, image_res=32, question_len=8, num_stat_word=5, batch_size=16
    )


@pytest.fixture(scope="module")
def bundle(cfg):
    return build(cfg)


def test_meta(bundle):
    meta = bundle.meta
    assert meta.dataset == "easy-vqa" and meta.visual == "pixels" and not meta.has_graph
    assert meta.vocab[:2] == ["<pad>", "<unk>"] and "shape" in meta.vocab
    assert len(meta.answers) == 13 and not meta.soft_targets
    assert meta.answer_types == ["yes/no", "color", "shape"]
    assert meta.word_init.shape == (len(meta.vocab), 300) and meta.word_init.dtype == np.float32
    assert len(bundle.train) == 200 and len(bundle.eval) == 50


def test_sample_is_numpy_and_consistent(bundle):
    s = bundle.train[3]
    assert s["q_tokens"].shape == (8,) and s["q_tokens"].dtype == np.int64
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == np.uint8
    assert s["stat_words"].shape == (5,) and not s["stat_mask"].any()
    assert isinstance(s["label"], int) and s["target"][s["label"]] == 1.0
    assert s["target"].sum() == 1.0 and (s["score"] == s["target"]).all()
    answer = bundle.meta.answers[s["label"]]
    assert s["answer_type"] == easyvqa.answer_type(answer)
    with pytest.raises(IndexError):
        bundle.train[200]


def test_answer_types():
    assert [easyvqa.answer_type(a) for a in ("yes", "no", "teal", "circle", "triangle")] == [
        0,
        0,
        1,
        2,
        2,
    ]


def test_collate_matches_fast_path(bundle, cfg):
    loader = make_loader(bundle.eval, cfg, train=False, seed=0, epoch=0)
    first = next(iter(loader))
    by_sample = collate([bundle.eval[i] for i in range(16)])
    assert first.keys() == by_sample.keys()
    for key in first:
        assert torch.equal(first[key], by_sample[key]), key
    assert first["image"].dtype == torch.float32 and first["image"].shape == (16, 3, 32, 32)
    assert -2.5 < first["image"].min() < 0 < first["image"].max() < 2.5  # normalised
    assert first["q_tokens"].dtype == torch.long and first["q_mask"].dtype == torch.bool
    assert torch.equal(first["q_mask"], first["q_tokens"] != 0)
    assert first["label"].dtype == torch.long and first["target"].shape == (16, 13)


def test_loader_order_is_deterministic(bundle, cfg):
    def labels(seed, epoch, train=True):
        batches = make_loader(bundle.train, cfg, train=train, seed=seed, epoch=epoch)
        return torch.cat([b["label"] for b in batches])

    a, b, c = labels(1, 0), labels(1, 0), labels(1, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    in_order = labels(1, 0, train=False)
    assert torch.equal(in_order, torch.from_numpy(bundle.train.labels))
    assert sorted(a.tolist()) == sorted(in_order.tolist())  # a permutation of the whole set


def test_loader_with_workers(bundle, cfg):
    loader = make_loader(
        bundle.eval, cfg.replace(num_workers=1), train=False, seed=0, epoch=0, batch_size=20
    )
    sizes = [len(b["label"]) for b in loader]
    assert sizes == [20, 20, 10]


def test_full_test_split_by_default(cache):
    bundle = build(Config().replace(train_limit=10, image_res=16))
    assert len(bundle.eval) == 9673


def test_images_cached_and_memory_mapped(bundle, cache):
    bundle.train[0]  # decoded on the first read
    path = easyvqa.images_path("train", 32)
    assert path.is_file() and path.is_relative_to(cache)
    assert not list(path.parent.glob(".*tmp"))  # written atomically
    images = easyvqa.load_images("train", 32)
    assert isinstance(images, np.memmap) and images.shape == (4000, 3, 32, 32)


def test_a_build_decodes_no_image_until_a_sample_is_read(cache, cfg, monkeypatch):
    """What only needs the vocabularies (a dry run, `model summary`) costs no decoding: at 480 px
    that was 30 s and 3.5 GB of cache."""
    decoded = []

    def decode(paths, res):
        decoded.append(res)
        return np.zeros((len(paths), 3, res, res), np.uint8)

    monkeypatch.setattr(easyvqa, "_decode", decode)
    lazy = build(cfg.replace(image_res=20))
    assert lazy.meta.vocab and not decoded and not easyvqa.images_path("train", 20).exists()
    assert lazy.train[0]["image"].shape == (3, 20, 20) and decoded == [20]
    assert easyvqa.images_path("train", 20).is_file()


def test_tfidf_off(cache, cfg):
    assert build(cfg.replace(tfidf=False)).meta.word_init is None


def test_tokenize_and_encode():
    assert tokenize("What's the man's Color?") == ["what", "'s", "the", "man", "'s", "color"]
    vocab = build_vocab(["a b b", "c"])
    assert vocab == ["<pad>", "<unk>", "b", "a", "c"]
    assert encode(["b a zz c b", "a"], vocab, 4).tolist() == [[2, 3, 1, 4], [3, 0, 0, 0]]


def test_tfidf_is_cooccurrence_weighted_average():
    base = base_vectors(6, seed=3)
    # word 2 appears with 3 and with 4; 3 only with 2; 5 alone
    tokens = np.array([[2, 3, 0], [2, 4, 1], [5, 0, 0]])
    out = tfidf_init(tokens, 6, seed=3)
    np.testing.assert_allclose(out[2], 0.5 * base[3] + 0.5 * base[4], rtol=1e-5)
    np.testing.assert_allclose(out[3], base[2], rtol=1e-5)
    np.testing.assert_allclose(out[5], base[5])  # never co-occurs: its base vector
    assert not out[0].any()  # <pad>
    # an unknown word (1) inside a text is skipped, not the end of the text
    out = tfidf_init(np.array([[2, 1, 3, 0], [5, 0, 0, 0]]), 6, seed=3)
    np.testing.assert_allclose(out[2], base[3], rtol=1e-5)
    # 1/df weighting: a frequent partner counts less
    out = tfidf_init(np.array([[2, 3, 4], [3, 0, 0], [3, 0, 0]]), 6, seed=3)
    np.testing.assert_allclose(out[2], (base[3] / 3 + base[4]) / (1 / 3 + 1), rtol=1e-5)


def test_image_normalisation_table():
    from vqatune.engine.data.loader import IMAGE_MEAN, IMAGE_STD, normalise_images

    images = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
    expected = (images / 255.0 - IMAGE_MEAN[None, :, None, None]) / IMAGE_STD[None, :, None, None]
    np.testing.assert_allclose(normalise_images(images), expected, rtol=1e-6, atol=1e-6)


def test_loader_rebuilt_from_its_dataset_gives_contract_batches(bundle, cfg):
    """The trainer resumes mid-epoch by building a DataLoader from `loader.dataset` and its own
    index batches: those batches must be finished (normalised float images) like the loader's."""
    from torch.utils.data import DataLoader

    loader = make_loader(bundle.train, cfg, train=True, seed=2, epoch=0)
    batches = list(loader.sampler)
    rebuilt = DataLoader(
        loader.dataset,
        sampler=batches[1:],
        batch_size=None,
        collate_fn=loader.collate_fn,
        num_workers=0,
    )
    original = list(loader)[1:]
    for a, b in zip(original, rebuilt):
        assert b["image"].dtype == torch.float32
        for key in a:
            assert torch.equal(a[key], b[key]), key
