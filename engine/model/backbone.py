"""X-VLM backbone from transformers classes: vision encoder, BERT text encoder, cross-attention fusion.

- Vision: ViTModel over image patches (meta.visual == "pixels"), or a BertModel run on region
  embeddings (features + box geometry, with a learned [IMG] token) for region-feature datasets.
- Text: BertModel over [CLS] + question tokens (the question vocabulary of the data module).
- Fusion: `fusion_layers` BertLayers with self-attention over the text and cross-attention to the
  vision tokens (X-VLM's cross encoder: bidirectional, never causal).

Sizes come from the schema knobs, or from an X-VLM YAML given as cfg.config (backbone_sizes).
memory_efficient_attention selects attn_implementation "sdpa" (else "eager") and activation
checkpointing of every backbone layer. Shapes: B batch, L question_len, Nv = 1 + patches/regions,
Wv vision width, Wt text width.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel, ViTConfig, ViTModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.bert.modeling_bert import BertLayer
from vqatune.engine.config import ConfigError

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

    def to_dict(self) -> dict:
        return asdict(self)


def backbone_sizes(cfg) -> BackboneSizes:
    sizes = dict(
        image_res=cfg.image_res,
        patch_size=cfg.patch_size,
        vision_width=cfg.vision_width,
        vision_layers=cfg.vision_layers,
        text_width=cfg.text_width,
        text_layers=cfg.text_layers,
        fusion_layers=cfg.fusion_layers,
        heads=cfg.backbone_heads,
        source="schema",
    )
    if cfg.config:
        sizes.update(read_xvlm_yaml(Path(cfg.config)))
    s = BackboneSizes(**sizes)
    for name in ("vision_width", "text_width"):
        if getattr(s, name) % s.heads:
            raise ConfigError(
                f"backbone_heads: {s.heads} does not divide {name} {getattr(s, name)}"
            )
    if s.image_res % s.patch_size:
        raise ConfigError(f"patch_size: {s.patch_size} does not divide image_res {s.image_res}")
    return s


def _json_beside(yaml_path: Path, ref, key: str) -> dict:
    """X-VLM YAMLs name JSON files relative to the X-VLM repository root (configs/x.json)."""
    if isinstance(ref, dict):
        return ref
    ref = Path(str(ref))
    for candidate in (
        yaml_path.parent / ref,
        yaml_path.parent.parent / ref,
        Path.cwd() / ref,
        yaml_path.parent / ref.name,
    ):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"{candidate}: {key}: cannot read JSON: {e}") from None
    raise ConfigError(
        f"{yaml_path}: {key}: no such file {str(ref)!r} (looked beside the YAML and "
        f"in the X-VLM repository root)"
    )


def read_xvlm_yaml(path: Path) -> dict:
    """Backbone sizes from an X-VLM config (configs/VQA_480.yaml style).

    Keys read: image_res, patch_size, vision_config (JSON: vision_width or hidden_size or
    embed_dim; depths (Swin: summed) or num_hidden_layers or depth), text_config (BERT JSON:
    hidden_size, num_hidden_layers, fusion_layer, num_attention_heads), text_num_hidden_layers and
    text_fusion_start_at (override the JSON). The layers before the fusion start are the text
    encoder, the rest are fusion layers.
    """
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config: no such file {str(path)!r}") from None
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read X-VLM YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not an X-VLM YAML (expected a mapping)")
    out: dict = {"source": str(path)}
    for key in ("image_res", "patch_size"):
        if key in data:
            out[key] = int(data[key])
    if "vision_config" in data:
        v = _json_beside(path, data["vision_config"], "vision_config")
        width = v.get("vision_width") or v.get("hidden_size") or v.get("embed_dim")
        if width:
            out["vision_width"] = int(width)
        if "depths" in v:
            out["vision_layers"] = int(sum(v["depths"]))
        elif "num_hidden_layers" in v or "depth" in v:
            out["vision_layers"] = int(v.get("num_hidden_layers") or v["depth"])
        out.setdefault("image_res", int(v["image_res"]) if "image_res" in v else None)
        out.setdefault("patch_size", int(v["patch_size"]) if "patch_size" in v else None)
    text_total = fusion_start = None
    if "text_config" in data:
        t = _json_beside(path, data["text_config"], "text_config")
        if "hidden_size" in t:
            out["text_width"] = int(t["hidden_size"])
        if "num_attention_heads" in t:
            out["heads"] = int(t["num_attention_heads"])
        text_total = t.get("num_hidden_layers")
        fusion_start = t.get("fusion_layer")
    text_total = data.get("text_num_hidden_layers", text_total)
    if text_total is not None:
        fusion_start = data.get("text_fusion_start_at", fusion_start)
        if fusion_start is None:
            fusion_start = int(text_total) // 2
        if not 0 < int(fusion_start) < int(text_total):
            raise ConfigError(
                f"{path}: text_fusion_start_at {fusion_start} must lie inside "
                f"text_num_hidden_layers {text_total}"
            )
        out["text_layers"] = int(fusion_start)
        out["fusion_layers"] = int(text_total) - int(fusion_start)
    return {k: v for k, v in out.items() if v is not None}


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
    """Convolutional patch embedding (Xiao et al. 2021, "Early convolutions help transformers see
    better"): stride-2 3x3 convolutions halve the image until one patch/2 step is left, then one
    projection to the ViT width. Same token grid as ViT's linear patch projection."""

    def __init__(self, patch_size: int, width: int):
        layers, channels, size = [], 3, patch_size
        while size > 2 and size % 2 == 0:  # [B,3,H,W] -> [B,C,H/2,W/2] ...
            out = max(16, width // (size // 2))
            layers += [
                nn.Conv2d(channels, out, 3, stride=2, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(),
            ]
            channels, size = out, size // 2
        layers.append(nn.Conv2d(channels, width, size, stride=size))  # -> [B,Wv,H/p,W/p]
        super().__init__(*layers)

    @property
    def weight(self) -> torch.Tensor:  # ViTEmbeddings reads projection.weight.dtype
        return self[-1].weight


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
    def __init__(self, cfg, meta, vocab_size: int):
        super().__init__()
        sizes = backbone_sizes(cfg)
        attn = "sdpa" if cfg.memory_efficient_attention else "eager"
        self.attn_implementation = attn
        parts = pretrained_parts(cfg.checkpoint) if _is_folder(cfg.checkpoint) else {}
        self.cls_id = vocab_size  # [CLS] is one past the data vocabulary
        self.pixels = meta.visual == "pixels"

        if self.pixels:
            if "vision" in parts:
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
            vc = self.vision.config
            self.register_buffer(
                "boxes", patch_boxes(vc.image_size // vc.patch_size), persistent=False
            )
        else:
            self.region_embed = RegionEmbedding(meta.feature_dim, sizes.vision_width)
            self.vision = BertModel(
                BertConfig(
                    vocab_size=1,
                    hidden_size=sizes.vision_width,
                    num_hidden_layers=sizes.vision_layers,
                    num_attention_heads=sizes.heads,
                    intermediate_size=4 * sizes.vision_width,
                    max_position_embeddings=cfg.max_boxes + 1,
                    type_vocab_size=1,
                    attn_implementation=attn,
                ),
                add_pooling_layer=False,
            )
            # regions enter as inputs_embeds: the one-row word embedding is never used
            self.vision.embeddings.word_embeddings.weight.requires_grad_(False)
        vision_width = self.vision.config.hidden_size

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
                BertConfig(
                    vocab_size=vocab_size + 1,
                    hidden_size=sizes.text_width,
                    num_hidden_layers=sizes.text_layers,
                    num_attention_heads=sizes.heads,
                    intermediate_size=4 * sizes.text_width,
                    max_position_embeddings=cfg.question_len + 1,
                    type_vocab_size=1,
                    attn_implementation=attn,
                ),
                add_pooling_layer=False,
            )
        tc = self.text.config
        self.text_width = tc.hidden_size
        self.vision_width = vision_width
        self.vision_to_text = (
            nn.Linear(vision_width, tc.hidden_size)
            if vision_width != tc.hidden_size
            else nn.Identity()
        )
        fusion_config = BertConfig(
            hidden_size=tc.hidden_size,
            num_attention_heads=tc.num_attention_heads,
            intermediate_size=tc.intermediate_size,
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
        if cfg.memory_efficient_attention:
            enable_checkpointing(self)
        self.sizes = sizes

    def key_mask(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B,Lk] bool (True = real) -> the 4D mask the attention implementation expects."""
        mask = mask[:, None, None, :]
        if self.attn_implementation == "sdpa":
            return mask
        return (~mask).to(dtype) * MASK_VALUE

    def encode_vision(self, batch):
        """-> tokens [B,Nv,Wv], mask [B,Nv], boxes [B,Nv,4]."""
        if self.pixels:
            image = batch["image"]
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
        regions, boxes = batch["regions"], batch["boxes"]
        B = regions.shape[0]
        mask = torch.cat(
            [torch.ones(B, 1, dtype=torch.bool, device=regions.device), batch["region_mask"]], 1
        )
        embeds = self.region_embed(regions, boxes)
        tokens = self.vision(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        whole = torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device, dtype=boxes.dtype)
        return tokens, mask, torch.cat([whole.expand(B, 1, 4), boxes], 1)

    def forward(self, batch) -> dict:
        vision, v_mask, v_boxes = self.encode_vision(batch)
        q_tokens = batch["q_tokens"]
        B = q_tokens.shape[0]
        cls = torch.full((B, 1), self.cls_id, dtype=q_tokens.dtype, device=q_tokens.device)
        ids = torch.cat([cls, q_tokens], 1)  # [B,1+L]
        t_mask = torch.cat([torch.ones_like(batch["q_mask"][:, :1]), batch["q_mask"]], 1)
        text = self.text(
            input_ids=ids, attention_mask=t_mask.long()
        ).last_hidden_state  # [B,1+L,Wt]
        ctx = self.vision_to_text(vision)  # [B,Nv,Wt]
        self_mask = self.key_mask(t_mask, text.dtype)
        cross_mask = self.key_mask(v_mask, text.dtype)
        fused = text
        for layer in self.fusion:
            fused = layer(fused, self_mask, ctx, encoder_attention_mask=cross_mask)
        return {
            "vision": vision,
            "vision_mask": v_mask,
            "vision_boxes": v_boxes,
            "text": text,
            "text_mask": t_mask,
            "fused": fused,
        }


def _is_folder(path: str) -> bool:
    return bool(path) and Path(path).is_dir()
