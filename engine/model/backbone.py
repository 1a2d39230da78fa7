"""X-VLM backbone from transformers classes: vision encoder, BERT text encoder, cross-attention fusion.

- Vision (vision_encoder): "swin" is X-VLM's Swin transformer (SwinModel at the sizes of X-VLM's
  Swin JSON; tokens = [mean-pooled token ; last-stage grid], as X-VLM's SwinTransformer returns);
  "vit" a ViTModel over image patches sized by the schema knobs. Region-feature data sets without
  images run a BertModel over region embeddings (features + box geometry, a learned [IMG] token).
  With images, the X-VLM branch sees the pixels and BAN/ISubGVQA keep the region embeddings.
- Text: BertModel over [CLS] + question. With the YAML's text_encoder folder (its vocab.txt):
  BERT WordPiece ids ([CLS] q [SEP], max_tokens); otherwise the data set's question vocabulary.
- Fusion: BertLayers with self-attention over the text and cross-attention to the vision tokens
  (X-VLM's layers fusion_layer.. of its text encoder: bidirectional, never causal). With Swin the
  cross-attention keys/values are projected from encoder_width (X-VLM's layout); with ViT a linear
  map brings the vision tokens to the text width first.

Sizes come from the schema knobs, or from X-VLM's own YAML/JSON given as cfg.config
(backbone_sizes). memory_efficient_attention selects attn_implementation "sdpa" (else "eager")
and activation checkpointing of every backbone layer. Shapes: B batch, L question_len,
Nv = 1 + patches/regions, Wv vision width, Wt text width.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel, SwinConfig, SwinModel, ViTConfig, ViTModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.bert.modeling_bert import BertLayer
from vqatune.engine.config import ConfigError
from vqatune.engine.xvlm_files import SWIN_KEYS, XVLMFiles, yaml_values
from vqatune.engine.xvlm_files import read as read_xvlm

from .wordpiece import WordPieces

MASK_VALUE = -1e4  # additive mask for eager attention; safe in fp16/bf16


@dataclass(frozen=True)
class BackboneSizes:
    image_res: int
    patch_size: int
    vision_width: int
    vision_layers: int
    text_width: int
    text_layers: int
    fusion_layers: int
    heads: int
    source: str = "schema"  # or the X-VLM YAML they were read from
    vision_encoder: str = "vit"
    swin: dict | None = None  # X-VLM's Swin JSON fields (embed_dim, depths, num_heads, ...)
    encoder_width: int = 0  # width the cross-attention keys/values are projected from
    max_tokens: int = 0  # WordPiece ids per question ([CLS] and [SEP] included)
    given: tuple[str, ...] = ()  # the YAML's parameters a value given on the command line beats

    def to_dict(self) -> dict:
        return asdict(self)


# X-VLM's Swin-B (configs/config_swinB_*.json) where no YAML names one: window image_res / 32
SWIN_B = {
    "vision_width": 1024,
    "embed_dim": 128,
    "depths": [2, 2, 18, 2],
    "num_heads": [4, 8, 16, 32],
}


SIZE_PARAMS = (
    "image_res",
    "patch_size",
    "vision_width",
    "vision_layers",
    "text_width",
    "text_layers",
    "fusion_layers",
    "backbone_heads",
    "vision_encoder",
)  # the schema parameters BackboneSizes holds (an X-VLM YAML sets some of them)
SIZE_OF = {"backbone_heads": "heads"}  # schema parameter -> BackboneSizes field
# the text encoder's settings its fusion layers share
FUSION_SHARES = (
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "layer_norm_eps",
)


def size_fields(values: dict) -> dict:
    """{schema parameter: value} -> {BackboneSizes field: value}."""
    return {SIZE_OF.get(k, k): v for k, v in values.items()}


def xvlm_files(cfg) -> XVLMFiles | None:
    return read_xvlm(Path(cfg.config).expanduser()) if cfg.config else None


def backbone_sizes(cfg, files: XVLMFiles | None = None) -> BackboneSizes:
    sizes = dict(size_fields({n: getattr(cfg, n) for n in SIZE_PARAMS}), source="schema")
    files = files or xvlm_files(cfg)
    if files is not None:
        applied, overridden = yaml_values(files, cfg)
        sizes.update(size_fields(applied), source=str(files.yaml_path), swin=files.swin)
        sizes["given"] = tuple(overridden)
        if files.max_tokens:
            sizes["max_tokens"] = files.max_tokens
        if files.bert and "encoder_width" in files.bert:
            sizes["encoder_width"] = int(files.bert["encoder_width"])
    if sizes["vision_encoder"] == "swin":
        swin = sizes.get("swin") or dict(
            SWIN_B, image_res=sizes["image_res"], window_size=sizes["image_res"] // 32
        )
        swin = {k: swin[k] for k in SWIN_KEYS}
        sizes["swin"] = swin = given_swin_sizes(swin, cfg)
        if "vision_width" in cfg.given:  # the cross-attention reads the given width
            sizes["encoder_width"] = swin["vision_width"]
        sizes["image_res"], sizes["patch_size"] = int(swin["image_res"]), 32
        sizes["vision_width"] = int(swin["vision_width"])
        sizes["vision_layers"] = int(sum(swin["depths"]))
        check_swin(swin, sizes["source"])
        if sizes.get("encoder_width", sizes["vision_width"]) != sizes["vision_width"]:
            raise ConfigError(
                f"{sizes['source']}: encoder_width {sizes['encoder_width']} differs from the "
                f"Swin vision_width {sizes['vision_width']}"
            )
        sizes["encoder_width"] = sizes["vision_width"]
    s = BackboneSizes(**sizes)
    widths = ("text_width",) if s.vision_encoder == "swin" else ("vision_width", "text_width")
    for name in widths:
        if getattr(s, name) % s.heads:
            raise ConfigError(
                f"backbone_heads: {s.heads} does not divide {name} {getattr(s, name)}"
            )
    if s.image_res % s.patch_size:
        raise ConfigError(f"patch_size: {s.patch_size} does not divide image_res {s.image_res}")
    return s


def given_swin_sizes(swin: dict, cfg) -> dict:
    """Swin sizes with image_res and vision_width given on the command line: the window follows
    the image as in X-VLM's files (image_res / 32), embed_dim the last stage's width."""
    swin = dict(swin)
    if "image_res" in cfg.given:
        swin.update(image_res=cfg.image_res, window_size=cfg.image_res // 32)
    if "vision_width" in cfg.given:
        doublings = 2 ** (len(swin["depths"]) - 1)
        if cfg.vision_width % doublings:
            raise ConfigError(
                f"vision_width: {cfg.vision_width} is not a multiple of {doublings} (Swin "
                f"doubles embed_dim over its {len(swin['depths'])} stages)"
            )
        swin.update(vision_width=cfg.vision_width, embed_dim=cfg.vision_width // doublings)
    return swin


def check_swin(swin: dict, source: str) -> None:
    """X-VLM's Swin: patch 4, each stage halves the grid, which must tile into windows (the
    last stage's grid is the window at X-VLM's sizes: 224/7, 384/12, 480/15)."""
    depths, heads, dim = swin["depths"], swin["num_heads"], int(swin["embed_dim"])
    if len(depths) != len(heads):
        raise ConfigError(f"{source}: Swin depths {depths} and num_heads {heads} differ in length")
    if dim * 2 ** (len(depths) - 1) != int(swin["vision_width"]):
        raise ConfigError(
            f"{source}: Swin vision_width {swin['vision_width']} is not embed_dim {dim} x "
            f"2^{len(depths) - 1} (the last stage's width)"
        )
    grid, window = int(swin["image_res"]) // 4, int(swin["window_size"])
    for i, h in enumerate(heads):
        if (dim * 2**i) % int(h):
            raise ConfigError(f"{source}: Swin num_heads {h} does not divide stage {i}'s width")
        if grid % window or grid < window:
            raise ConfigError(
                f"{source}: window_size {window} does not tile stage {i}'s {grid}x{grid} grid "
                f"(image_res {swin['image_res']})"
            )
        grid //= 2


def swin_encoder(swin: dict) -> SwinModel:
    """X-VLM's SwinTransformer as transformers' SwinModel: patch 4, mlp_ratio 4, qkv bias,
    drop_path 0.1, no absolute position embedding, patch norm, LayerNorm eps 1e-5."""
    return SwinModel(
        SwinConfig(
            image_size=int(swin["image_res"]),
            patch_size=4,
            num_channels=3,
            embed_dim=int(swin["embed_dim"]),
            depths=list(swin["depths"]),
            num_heads=list(swin["num_heads"]),
            window_size=int(swin["window_size"]),
            mlp_ratio=4.0,
            qkv_bias=True,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            drop_path_rate=0.1,
            use_absolute_embeddings=False,
            layer_norm_eps=1e-5,
        ),
        add_pooling_layer=True,  # AdaptiveAvgPool1d: X-VLM's first ("cls") vision token
    )


def pretrained_parts(checkpoint: str) -> dict[str, Path]:
    """A local transformers folder -> {"text": dir, "vision": dir} (either may be missing).
    Layout: DIR/text and/or DIR/vision, or DIR itself with a BERT or ViT config.json."""
    root = Path(checkpoint)
    parts = {}
    for part, model_type in (("text", "bert"), ("vision", "vit")):
        if (root / part / "config.json").is_file():
            parts[part] = root / part
        elif (root / "config.json").is_file():
            try:
                kind = json.loads((root / "config.json").read_text()).get("model_type")
            except (OSError, ValueError) as e:
                raise ConfigError(f"{root / 'config.json'}: cannot read: {e}") from None
            if kind == model_type:
                parts[part] = root
    if not parts:
        raise ConfigError(
            f"checkpoint: {checkpoint}: no text/ or vision/ transformers model "
            f"(config.json) and not a .pt file"
        )
    return parts


def enable_checkpointing(module: nn.Module) -> None:
    """Recompute each transformer layer's activations in backward instead of storing them."""
    fn = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
    for m in module.modules():
        if isinstance(m, GradientCheckpointingLayer):
            m.gradient_checkpointing = True
            m._gradient_checkpointing_func = fn


def patch_boxes(grid: int) -> torch.Tensor:
    """[1 + grid*grid, 4] boxes of the [CLS] token (whole image) and the patches, row-major."""
    i = torch.arange(grid, dtype=torch.float32)
    y1, x1 = torch.meshgrid(i / grid, i / grid, indexing="ij")
    patches = torch.stack([x1, y1, x1 + 1 / grid, y1 + 1 / grid], -1).view(-1, 4)
    return torch.cat([torch.tensor([[0.0, 0.0, 1.0, 1.0]]), patches])


class ConvStem(nn.Sequential):
    """Convolutional patch embedding, a hybrid ViT's (Dosovitskiy et al. 2021; Xiao et al. 2021):
    each stage a 3x3 convolution, batch norm, ReLU and a 2x2 max pool, channels doubling from 16,
    until the patch grid is left; the last stage outputs the ViT width. Max pooling keeps a
    feature wherever it fired in the patch: a shape's corners are found wherever the shape lies."""

    def __init__(self, patch_size: int, width: int):
        layers, channels, size, out = [], 3, patch_size, 16
        while size % 2 == 0:  # [B,C,H,W] -> [B,C',H/2,W/2] ... -> [B,Wv,H/p,W/p]
            out = width if size == 2 else out
            layers += [
                nn.Conv2d(channels, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels, size, out = out, size // 2, out * 2
        if size > 1:  # an odd factor left (patch 14, 24): one projection of that size
            layers.append(nn.Conv2d(channels, width, size, stride=size))
        super().__init__(*layers)

    @property
    def weight(self) -> torch.Tensor:  # ViTEmbeddings reads projection.weight.dtype
        return self[0].weight


class RegionEmbedding(nn.Module):
    """regions [B,N,D] + boxes [B,N,4] -> [B,1+N,Wv] with a learned [IMG] token first."""

    def __init__(self, feature_dim: int, width: int):
        super().__init__()
        self.features = nn.Linear(feature_dim, width)
        self.boxes = nn.Linear(5, width)
        self.norm = nn.LayerNorm(width)
        self.img_token = nn.Parameter(torch.zeros(1, 1, width))

    def forward(self, regions, boxes):
        area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).unsqueeze(-1)
        x = self.norm(self.features(regions) + self.boxes(torch.cat([boxes, area], -1)))
        return torch.cat([self.img_token.expand(x.shape[0], -1, -1).to(x.dtype), x], 1)


class XVLMBackbone(nn.Module):
    def __init__(self, cfg, meta, vocab_size: int, *, load_weights: bool = True):
        super().__init__()
        files = xvlm_files(cfg)
        sizes = backbone_sizes(cfg, files)
        attn = "sdpa" if cfg.memory_efficient_attention else "eager"
        self.attn_implementation = attn
        parts = pretrained_parts(cfg.checkpoint) if _is_folder(cfg.checkpoint) else {}
        self.cls_id = vocab_size  # [CLS] is one past the data vocabulary
        self.swin = sizes.vision_encoder == "swin"
        # the X-VLM branch sees pixels when the data set has them; BAN/ISubGVQA keep regions
        self.pixels = meta.visual == "pixels" or bool(getattr(meta, "images", False))
        self.regions = meta.visual == "regions"
        self.xvlm_input = "images" if self.pixels else "region features"

        if self.pixels:
            if self.swin:
                self.vision = swin_encoder(sizes.swin)
                grid = sizes.image_res // 32
            elif "vision" in parts:
                self.vision = ViTModel.from_pretrained(
                    parts["vision"],
                    add_pooling_layer=False,
                    attn_implementation=attn,
                    local_files_only=True,
                )
            else:
                self.vision = ViTModel(
                    ViTConfig(
                        image_size=sizes.image_res,
                        patch_size=sizes.patch_size,
                        num_channels=3,
                        hidden_size=sizes.vision_width,
                        num_hidden_layers=sizes.vision_layers,
                        num_attention_heads=sizes.heads,
                        intermediate_size=4 * sizes.vision_width,
                        attn_implementation=attn,
                    ),
                    add_pooling_layer=False,
                )
                if cfg.conv_stem:
                    self.vision.embeddings.patch_embeddings.projection = ConvStem(
                        sizes.patch_size, sizes.vision_width
                    )
            if not self.swin:
                vc = self.vision.config
                grid = vc.image_size // vc.patch_size
            self.register_buffer("boxes", patch_boxes(grid), persistent=False)
        if self.regions:
            self.region_embed = RegionEmbedding(meta.feature_dim, sizes.vision_width)
        if not self.pixels:
            # Swin's widths need not divide by the text heads: its last stage's heads do
            heads = int(sizes.swin["num_heads"][-1]) if self.swin else sizes.heads
            self.vision = BertModel(
                BertConfig(
                    vocab_size=1,
                    hidden_size=sizes.vision_width,
                    # Swin's depth (24 for Swin-B) is no region encoder's: the knob's
                    num_hidden_layers=cfg.vision_layers if self.swin else sizes.vision_layers,
                    num_attention_heads=heads,
                    intermediate_size=4 * sizes.vision_width,
                    max_position_embeddings=cfg.max_boxes + 1,
                    type_vocab_size=1,
                    attn_implementation=attn,
                ),
                add_pooling_layer=False,
            )
            # regions enter as inputs_embeds: the one-row word embedding is never used
            self.vision.embeddings.word_embeddings.weight.requires_grad_(False)
        vision_width = sizes.vision_width if self.swin else self.vision.config.hidden_size

        tokenizer = files.text_encoder if files is not None else None
        self.wordpieces = None
        if tokenizer is not None and (tokenizer / "vocab.txt").is_file():
            max_tokens = sizes.max_tokens or cfg.question_len + 2
            self.wordpieces = WordPieces(tokenizer, meta.vocab, max_tokens)
        if "text" in parts:
            self.text = BertModel.from_pretrained(
                parts["text"],
                add_pooling_layer=False,
                attn_implementation=attn,
                local_files_only=True,
            )
            # pretrained word pieces do not match the data vocabulary: new rows, same encoder
            self.text.resize_token_embeddings(vocab_size + 1)
        else:
            self.text = BertModel(
                self.text_config(cfg, sizes, files, vocab_size, attn), add_pooling_layer=False
            )
        tc = self.text.config
        self.text_width = tc.hidden_size
        self.vision_width = vision_width
        # ViT: one linear map to the text width; Swin: X-VLM's cross-attention projects keys
        # and values from encoder_width itself
        self.vision_to_text = (
            nn.Linear(vision_width, tc.hidden_size)
            if vision_width != tc.hidden_size and not self.swin
            else nn.Identity()
        )
        fusion_config = BertConfig(
            **{k: getattr(tc, k) for k in FUSION_SHARES},
            num_hidden_layers=sizes.fusion_layers,
            is_decoder=True,
            add_cross_attention=True,
        )  # BertLayer needs is_decoder for cross-attention
        fusion_config._attn_implementation = attn
        self.fusion = nn.ModuleList(
            BertLayer(fusion_config, layer_idx=i) for i in range(sizes.fusion_layers)
        )
        for layer in self.fusion:  # X-VLM's cross encoder attends both ways over the text
            layer.attention.self.is_causal = False
            if self.swin:
                cross = layer.crossattention.self
                cross.key = nn.Linear(vision_width, cross.key.out_features)
                cross.value = nn.Linear(vision_width, cross.value.out_features)
        if cfg.memory_efficient_attention:
            enable_checkpointing(self)
        self.sizes = sizes
        self.text_encoder_report = None
        if tokenizer is not None and load_weights and has_weights(tokenizer):
            from .xvlm_checkpoint import load_text_encoder

            self.text_encoder_report = load_text_encoder(self, tokenizer, attn)

    def text_config(self, cfg, sizes: BackboneSizes, files, vocab_size: int, attn) -> BertConfig:
        """X-VLM's BERT JSON (Swin) or the schema knobs: the first fusion_layer layers."""
        fields = dict(
            vocab_size=vocab_size + 1,
            hidden_size=sizes.text_width,
            num_hidden_layers=sizes.text_layers,
            num_attention_heads=sizes.heads,
            intermediate_size=4 * sizes.text_width,
            max_position_embeddings=cfg.question_len + 1,
            type_vocab_size=1,
        )
        bert = files.bert if files is not None and files.bert else None
        if self.swin and bert:
            for key in (
                "intermediate_size",
                "hidden_act",
                "hidden_dropout_prob",
                "attention_probs_dropout_prob",
                "layer_norm_eps",
                "type_vocab_size",
                "pad_token_id",
            ):
                if key in bert:
                    fields[key] = bert[key]
        if self.wordpieces is not None:
            fields["vocab_size"] = int((bert or {}).get("vocab_size", self.wordpieces.vocab_size))
            fields["max_position_embeddings"] = int(
                (bert or {}).get("max_position_embeddings", 512)
            )
            if self.wordpieces.max_tokens > fields["max_position_embeddings"]:
                raise ConfigError(
                    f"max_tokens: {self.wordpieces.max_tokens} exceeds the text encoder's "
                    f"max_position_embeddings {fields['max_position_embeddings']}"
                )
        return BertConfig(**fields, attn_implementation=attn)

    def key_mask(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B,Lk] bool (True = real) -> the 4D mask the attention implementation expects."""
        mask = mask[:, None, None, :]
        if self.attn_implementation == "sdpa":
            return mask
        return (~mask).to(dtype) * MASK_VALUE

    def encode_pixels(self, image):
        """-> tokens [B,Nv,Wv], mask [B,Nv], boxes [B,Nv,4]."""
        if self.swin:
            out = self.vision(pixel_values=image)
            tokens = torch.cat([out.pooler_output[:, None], out.last_hidden_state], 1)
        else:
            res = self.vision.config.image_size
            tokens = self.vision(
                pixel_values=image, interpolate_pos_encoding=image.shape[-1] != res
            ).last_hidden_state
        B, Nv = tokens.shape[:2]
        if Nv != self.boxes.shape[0]:
            boxes = patch_boxes(int(round((Nv - 1) ** 0.5))).to(tokens.device)
        else:
            boxes = self.boxes
        mask = torch.ones(B, Nv, dtype=torch.bool, device=tokens.device)
        return tokens, mask, boxes.expand(B, -1, -1)

    def encode_regions(self, batch, *, contextual: bool):
        """-> region tokens [B,1+N,Wv] (through the region encoder when contextual), mask, boxes."""
        regions, boxes = batch["regions"], batch["boxes"]
        B = regions.shape[0]
        mask = torch.cat(
            [torch.ones(B, 1, dtype=torch.bool, device=regions.device), batch["region_mask"]], 1
        )
        tokens = self.region_embed(regions, boxes)
        if contextual:
            tokens = self.vision(inputs_embeds=tokens, attention_mask=mask.long()).last_hidden_state
        whole = torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device, dtype=boxes.dtype)
        return tokens, mask, torch.cat([whole.expand(B, 1, 4), boxes], 1)

    def encode_text(self, batch):
        """-> ids [B,Lt] and mask [B,Lt]: WordPiece [CLS] q [SEP], or [CLS] + data-vocab ids."""
        q_tokens, q_mask = batch["q_tokens"], batch["q_mask"]
        if self.wordpieces is not None:
            return self.wordpieces(q_tokens, q_mask)
        B = q_tokens.shape[0]
        cls = torch.full((B, 1), self.cls_id, dtype=q_tokens.dtype, device=q_tokens.device)
        return torch.cat([cls, q_tokens], 1), torch.cat([torch.ones_like(q_mask[:, :1]), q_mask], 1)

    def forward(self, batch) -> dict:
        if self.pixels:
            image_tokens, image_mask, image_boxes = self.encode_pixels(batch["image"])
        if self.regions:
            vision, v_mask, v_boxes = self.encode_regions(batch, contextual=not self.pixels)
        else:
            vision, v_mask, v_boxes = image_tokens, image_mask, image_boxes
        if not self.pixels:
            image_tokens, image_mask = vision, v_mask
        ids, t_mask = self.encode_text(batch)
        text = self.text(input_ids=ids, attention_mask=t_mask.long()).last_hidden_state
        ctx = self.vision_to_text(image_tokens)  # [B,Nv,Wt] (ViT) or [B,Nv,encoder_width]
        self_mask = self.key_mask(t_mask.bool(), text.dtype)
        cross_mask = self.key_mask(image_mask, text.dtype)
        fused = text
        for layer in self.fusion:
            fused = layer(
                fused,
                attention_mask=self_mask,
                encoder_hidden_states=ctx,
                encoder_attention_mask=cross_mask,
            )
        return {
            "vision": vision,
            "vision_mask": v_mask,
            "vision_boxes": v_boxes,
            "text": text,
            "text_mask": t_mask,
            "fused": fused,
        }


def has_weights(folder: Path) -> bool:
    return any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin"))


def _is_folder(path: str) -> bool:
    return bool(path) and Path(path).is_dir()
