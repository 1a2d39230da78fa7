"""The model as a whole: contract shapes, losses, parameter groups, precision, backbone options."""

from __future__ import annotations

import json

import pytest
import torch
from model_batches import make_batch, make_meta
from vqatune.engine import config
from vqatune.engine.config import ConfigError
from vqatune.engine.model import build_model, summary
from vqatune.engine.model.backbone import ConvStem, backbone_sizes


def tiny(**changes):
    base = dict(question_len=6, max_boxes=8, num_stat_word=4)
    base.update(changes)
    return config.load("smoke").replace(**base)


def run(model, batch):
    out = model(batch)
    return out, model.loss(out, batch)


@pytest.mark.parametrize("kind", ["pixels", "regions"])
def test_forward_backward_contract(kind):
    cfg, meta = tiny(), make_meta(kind)
    torch.manual_seed(0)
    model = build_model(cfg, meta)
    batch = make_batch(cfg, meta)
    out, (total, parts) = run(model, batch)
    assert set(out["logits"]) == {"fused", "ban", "graph", "xvlm"}
    for logits in out["logits"].values():
        assert logits.shape == (4, len(meta.answers))
    assert set(parts) == {"fused", "ban", "graph", "xvlm"}
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    # every branch gets gradient
    assert model.backbone.text.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.gru.weight_hh_l0.grad.abs().sum() > 0
    assert model.graph.classifier.net[-1].weight.grad.abs().sum() > 0
    assert model.fusion_logits.grad.abs().sum() > 0


def test_region_graph_without_scene_graph():
    cfg, meta = tiny(), make_meta("regions", graph=False)
    model = build_model(cfg, meta)
    out, (total, _) = run(model, make_batch(cfg, meta))
    assert not hasattr(model.graph, "name_emb") and hasattr(model.graph, "node_proj")
    assert torch.isfinite(total)


def test_loss_is_fusion_ratio_weighted_sum():
    meta = make_meta("pixels")
    for ratio in (0.0, 0.1, 2.0):
        cfg = tiny(fusion_ratio=ratio)
        torch.manual_seed(0)
        model = build_model(cfg, meta).eval()
        _, (total, parts) = run(model, make_batch(cfg, meta))
        expected = ratio * parts["fused"] + parts["ban"] + parts["graph"] + parts["xvlm"]
        assert torch.allclose(total, expected)


def test_soft_targets_use_bce_and_hard_use_cross_entropy():
    cfg = tiny()
    for soft in (False, True):
        meta = make_meta("regions", soft=soft)
        model = build_model(cfg, meta).eval()
        batch = make_batch(cfg, meta)
        logits = model(batch)["logits"]["ban"]
        got = model.branch_loss(logits, batch)
        if soft:
            want = (
                torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["target"])
                * logits.shape[1]
            )
        else:
            want = torch.nn.functional.cross_entropy(logits, batch["label"])
        assert torch.allclose(got, want)


def test_unknown_labels_are_ignored_by_cross_entropy():
    cfg, meta = tiny(), make_meta("pixels")
    model = build_model(cfg, meta).eval()
    batch = make_batch(cfg, meta)
    logits = model(batch)["logits"]["ban"]
    batch["label"][:2] = -1
    want = torch.nn.functional.cross_entropy(logits[2:], batch["label"][2:])
    assert torch.allclose(model.branch_loss(logits, batch), want)
    batch["label"][:] = -1
    assert model.branch_loss(logits, batch).item() == 0.0


def test_param_groups_split_backbone_from_heads():
    model = build_model(tiny(), make_meta("regions"))
    groups = model.param_groups()
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in groups["backbone"]} == backbone_ids
    assert not backbone_ids & {id(p) for p in groups["heads"]}
    assert len(groups["backbone"]) + len(groups["heads"]) == len(list(model.parameters()))
    assert any(p is model.xvlm_head.net[0].weight for p in groups["heads"])


@pytest.mark.parametrize("kind", ["pixels", "regions"])
def test_bf16_autocast_has_no_nan(kind):
    cfg, meta = tiny(use_counter=True), make_meta(kind)
    torch.manual_seed(0)
    model = build_model(cfg, meta)
    batch = make_batch(cfg, meta)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (total, parts) = run(model, batch)
    assert all(torch.isfinite(v).all() for v in out["logits"].values())
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_fully_padded_statistics_words_and_empty_questions_stay_finite():
    cfg, meta = tiny(), make_meta("regions")
    model = build_model(cfg, meta)
    batch = make_batch(cfg, meta, stat_words=False)
    batch["q_mask"][0] = False
    batch["q_tokens"][0] = 0
    out, (total, _) = run(model, batch)
    assert torch.isfinite(total)


# ---- memory_efficient_attention ------------------------------------------------------------


def test_memory_efficient_attention_selects_sdpa(monkeypatch):
    meta = make_meta("pixels")
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    from transformers.integrations import sdpa_attention

    monkeypatch.setattr(sdpa_attention.torch.nn.functional, "scaled_dot_product_attention", spy)
    counts = {}
    for flag in (False, True):
        cfg = tiny(memory_efficient_attention=flag)
        model = build_model(cfg, meta)
        assert model.backbone.attn_implementation == ("sdpa" if flag else "eager")
        assert model.backbone.text.config._attn_implementation == ("sdpa" if flag else "eager")
        model.backbone.eval()
        calls.clear()
        model.backbone(make_batch(cfg, meta))
        counts[flag] = len(calls)
    assert counts[False] == 0
    # vision layer + text layer + fusion self- and cross-attention
    assert counts[True] == 4


def test_memory_efficient_attention_checkpoints_backbone_layers():
    meta = make_meta("pixels")
    recomputed = {}
    for flag in (False, True):
        cfg = tiny(memory_efficient_attention=flag)
        model = build_model(cfg, meta)
        runs = []
        model.backbone.fusion[0].intermediate.register_forward_hook(
            lambda *a, runs=runs: runs.append(1)
        )
        out, (total, _) = run(model, make_batch(cfg, meta))
        total.backward()
        recomputed[flag] = len(runs)
    assert recomputed == {False: 1, True: 2}  # the layer's forward runs again in backward


def test_sdpa_and_eager_agree():
    meta = make_meta("regions")
    cfg = tiny()
    torch.manual_seed(0)
    eager = build_model(cfg, meta).eval()
    sdpa = build_model(cfg.replace(memory_efficient_attention=True), meta).eval()
    sdpa.load_state_dict(eager.state_dict())
    batch = make_batch(cfg, meta)
    a, b = eager(batch)["logits"]["xvlm"], sdpa(batch)["logits"]["xvlm"]
    assert torch.allclose(a, b, atol=1e-4)


# ---- backbone sizes, X-VLM YAML, checkpoints -----------------------------------------------


def test_backbone_sizes_follow_schema_knobs():
    meta = make_meta("pixels")
    cfg = tiny(
        image_res=32,
        patch_size=8,
        vision_width=24,
        vision_layers=2,
        text_width=16,
        text_layers=3,
        fusion_layers=2,
        backbone_heads=4,
    )
    model = build_model(cfg, meta)
    bb = model.backbone
    assert bb.vision.config.hidden_size == 24 and bb.vision.config.num_hidden_layers == 2
    assert bb.text.config.hidden_size == 16 and bb.text.config.num_hidden_layers == 3
    assert len(bb.fusion) == 2 and bb.text.config.num_attention_heads == 4
    out = bb(make_batch(cfg, meta))
    assert out["vision"].shape == (4, 1 + (32 // 8) ** 2, 24)
    assert out["fused"].shape == (4, 1 + cfg.question_len, 16)
    cfg16 = cfg.replace(patch_size=16)
    assert build_model(cfg16, meta).backbone(make_batch(cfg16, meta))["vision"].shape[1] == 1 + 4


@pytest.mark.parametrize("patch_size", [4, 8, 16])
def test_conv_stem_replaces_the_patch_projection_on_the_same_grid(patch_size):
    meta = make_meta("pixels")
    cfg = tiny(image_res=32, patch_size=patch_size, vision_width=24, backbone_heads=4)
    torch.manual_seed(0)
    plain = build_model(cfg, meta)
    hybrid = build_model(cfg.replace(conv_stem=True), meta)
    assert isinstance(plain.backbone.vision.embeddings.patch_embeddings.projection, torch.nn.Conv2d)
    stem = hybrid.backbone.vision.embeddings.patch_embeddings.projection
    assert isinstance(stem, ConvStem)
    convs = [m for m in stem if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in stem if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convs) == len(pools) == {4: 2, 8: 3, 16: 4}[patch_size]  # a stage per halving
    channels = {4: [16, 24], 8: [16, 32, 24], 16: [16, 32, 64, 24]}[patch_size]
    assert [c.out_channels for c in convs] == channels  # doubling from 16, the width last
    batch = make_batch(cfg, meta)
    out, (loss, _) = run(hybrid.train(), batch)
    assert out["logits"]["xvlm"].shape == (4, len(meta.answers))
    assert (
        hybrid.backbone(batch)["vision"].shape
        == plain.backbone(batch)["vision"].shape
        == (4, 1 + (32 // patch_size) ** 2, 24)
    )
    loss.backward()
    assert stem[0].weight.grad.abs().sum() > 0  # trained as part of the backbone
    assert {id(p) for p in stem.parameters()} <= {id(p) for p in hybrid.param_groups()["backbone"]}


@pytest.mark.parametrize(("image_res", "patch_size"), [(28, 14), (48, 24)])
def test_conv_stem_keeps_the_grid_of_a_patch_with_an_odd_factor(image_res, patch_size):
    meta = make_meta("pixels")
    cfg = tiny(image_res=image_res, patch_size=patch_size, vision_width=24, backbone_heads=4)
    model = build_model(cfg.replace(conv_stem=True), meta)
    grid = image_res // patch_size
    assert model.backbone(make_batch(cfg, meta))["vision"].shape == (4, 1 + grid**2, 24)


def test_backbone_heads_must_divide_widths():
    with pytest.raises(ConfigError, match="backbone_heads"):
        backbone_sizes(tiny(vision_width=30, backbone_heads=4))


def write_xvlm(tmp_path, **yaml_extra):
    (tmp_path / "configs").mkdir(parents=True)
    (tmp_path / "configs" / "config_vit.json").write_text(
        json.dumps({"vision_width": 48, "image_res": 64, "patch_size": 16, "num_hidden_layers": 2})
    )
    (tmp_path / "configs" / "config_bert.json").write_text(
        json.dumps(
            {"hidden_size": 32, "num_hidden_layers": 5, "fusion_layer": 3, "num_attention_heads": 4}
        )
    )
    lines = [
        "vision_config: 'configs/config_vit.json'",
        "image_res: 32",
        "patch_size: 8",
        "text_config: 'configs/config_bert.json'",
    ]
    lines += [f"{k}: {v}" for k, v in yaml_extra.items()]
    path = tmp_path / "configs" / "VQA_tiny.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_xvlm_yaml_gives_backbone_sizes(tmp_path):
    path = write_xvlm(tmp_path)
    s = backbone_sizes(tiny(config=str(path)))
    assert (s.image_res, s.patch_size, s.vision_width, s.vision_layers) == (32, 8, 48, 2)
    assert (s.text_width, s.text_layers, s.fusion_layers, s.heads) == (32, 3, 2, 4)
    s = backbone_sizes(
        tiny(
            config=str(write_xvlm(tmp_path / "b", text_num_hidden_layers=6, text_fusion_start_at=4))
        )
    )
    assert (s.text_layers, s.fusion_layers) == (4, 2)
    model = build_model(tiny(config=str(path)), make_meta("pixels"))
    assert len(model.backbone.fusion) == 2 and model.backbone.vision.config.hidden_size == 48


def test_xvlm_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        backbone_sizes(tiny(config=str(tmp_path / "missing.yaml")))
    bad = tmp_path / "bad.yaml"
    bad.write_text("vision_config: 'configs/nope.json'\n")
    with pytest.raises(ConfigError, match="nope.json"):
        backbone_sizes(tiny(config=str(bad)))


def test_checkpoint_folder_loads_pretrained_text_and_vision(tmp_path):
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    torch.manual_seed(1)
    BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=16,
        ),
        add_pooling_layer=False,
    ).save_pretrained(tmp_path / "text")
    ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        ),
        add_pooling_layer=False,
    ).save_pretrained(tmp_path / "vision")
    cfg, meta = tiny(checkpoint=str(tmp_path)), make_meta("pixels")
    model = build_model(cfg, meta)
    saved = BertModel.from_pretrained(tmp_path / "text")
    bb = model.backbone
    assert bb.text.config.num_hidden_layers == 2
    assert torch.equal(
        bb.text.encoder.layer[1].output.dense.weight, saved.encoder.layer[1].output.dense.weight
    )
    assert bb.text.embeddings.word_embeddings.num_embeddings == len(meta.vocab) + 1
    assert bb.vision.config.hidden_size == 16
    out, (total, _) = run(model, make_batch(cfg, meta))
    assert torch.isfinite(total)


def test_checkpoint_vqatune_file_initialises_matching_tensors(tmp_path):
    cfg, meta = tiny(), make_meta("pixels")
    torch.manual_seed(0)
    source = build_model(cfg, meta)
    torch.save({"model": source.state_dict(), "step": 3}, tmp_path / "best.pt")
    loaded = build_model(cfg.replace(checkpoint=str(tmp_path / "best.pt")), meta)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    other = build_model(
        cfg.replace(checkpoint=str(tmp_path / "best.pt")), make_meta("pixels", answers=5)
    )  # new answer vocabulary
    assert "xvlm_head.net.3.weight" in other.checkpoint_skipped
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pt"):
        build_model(cfg.replace(checkpoint=str(tmp_path / "junk.pt")), meta)


def test_checkpoint_folder_without_model_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint"):
        build_model(tiny(checkpoint=str(tmp_path)), make_meta("pixels"))


# ---- summary ------------------------------------------------------------------------------


def test_summary_counts_match_the_built_model():
    cfg, meta = tiny(), make_meta("regions")
    s = summary(cfg, meta)
    model = build_model(cfg, meta)
    assert s["total"] == sum(p.numel() for p in model.parameters())
    assert s["xvlm_lr"]["parameters"] == sum(p.numel() for p in model.backbone.parameters())
    assert s["lr"]["parameters"] + s["xvlm_lr"]["parameters"] == s["total"]
    assert s["branches"]["xvlm_backbone"] == s["xvlm_lr"]["parameters"]
    assert sum(s["backbone_parts"].values()) == s["branches"]["xvlm_backbone"]


def test_summary_without_meta_uses_nominal_vocabularies():
    s = summary(config.load("gqa"))
    assert s["nominal_vocabulary"] and s["answers"] == 1842 and s["visual"] == "regions"
    assert "data_root" in s["nominal_reason"]  # why no data was loaded
    # the TF-IDF word embeddings are counted with tfidf, as a run builds them
    assert summary(config.load("gqa", ["tfidf=false"]))["total"] < s["total"]
    assert summary(config.load("default"))["total"] > summary(config.load("cpu-quick"))["total"]


# ---- vqatune model summary ------------------------------------------------------------------


def test_model_summary_command_json_and_table():
    from typer.testing import CliRunner
    from vqatune.tui.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["model", "summary", "smoke", "--set", "num_hid=48", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total"] == summary(config.load("smoke", ["num_hid=48"]))["total"]
    assert data["xvlm_lr"]["value"] == config.load("smoke").xvlm_lr
    result = runner.invoke(app, ["model", "summary", "smoke"])
    assert result.exit_code == 0 and "xvlm_backbone" in result.stdout and "total" in result.stdout


def test_model_summary_command_user_errors_exit_2():
    from typer.testing import CliRunner
    from vqatune.tui.cli import app

    runner = CliRunner()
    for args in (
        ["model", "summary", "no-such-preset"],
        ["model", "summary", "smoke", "--set", "vision_width=30", "--set", "backbone_heads=4"],
        ["model", "summary", "smoke", "--set", "config=/nonexistent/VQA.yaml"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.output
