"""X-VLM's own config files, read in full: the task YAML (configs/VQA_480.yaml), the Swin JSON it
names as `vision_config`, the BERT JSON it names as `text_config`, the `text_encoder` folder.

Relative paths resolve as X-VLM writes them (`configs/x.json`, `data/bert-base-uncased`: from the
X-VLM repository root, the YAML folder's parent) or beside the YAML. Light module: no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqatune.engine.config import ConfigError

SWIN_KEYS = ("image_res", "window_size", "embed_dim", "depths", "num_heads", "vision_width")
UNSUPPORTED = {
    "use_clip_vit": "CLIP ViT vision encoder",
    "use_roberta": "RoBERTa text encoder",
}


@dataclass(frozen=True)
class XVLMFiles:
    yaml_path: Path
    image_res: int | None = None
    patch_size: int | None = None
    max_tokens: int | None = None
    swin: dict[str, Any] | None = None  # the Swin JSON's SWIN_KEYS (use_swin: True)
    vit: dict[str, Any] | None = None  # a ViT-style vision JSON (width, layers) otherwise
    bert: dict[str, Any] | None = None  # the BERT JSON, fusion_layer and encoder_width included
    text_encoder: Path | None = None  # a local transformers folder (config.json, vocab.txt, ...)
    from_yaml: dict[str, Any] = field(default_factory=dict)  # schema parameters it sets

    @property
    def fusion_layer(self) -> int | None:
        return None if self.bert is None else int(self.bert.get("fusion_layer", 0)) or None


def yaml_values(files: XVLMFiles, cfg) -> tuple[dict[str, Any], dict[str, Any]]:
    """The YAML's parameters split by the rule (applied, overridden): a value given on the
    command line (cfg.given) wins over the YAML, which wins over files, presets and defaults
    (the sizes X-VLM's checkpoints were trained with)."""
    applied = {k: v for k, v in files.from_yaml.items() if k not in cfg.given}
    overridden = {k: v for k, v in files.from_yaml.items() if k in cfg.given}
    return applied, overridden


def resolve_beside(yaml_path: Path, ref: str) -> Path | None:
    """A path named in an X-VLM YAML: beside the YAML, from the repository root, as given."""
    ref_path = Path(str(ref)).expanduser()
    if ref_path.is_absolute():
        return ref_path if ref_path.exists() else None
    for candidate in (
        yaml_path.parent / ref_path,
        yaml_path.parent.parent / ref_path,
        Path.cwd() / ref_path,
        yaml_path.parent / ref_path.name,
    ):
        if candidate.exists():
            return candidate
    return None


def _json_file(yaml_path: Path, ref, key: str) -> dict:
    if isinstance(ref, dict):
        return ref
    found = resolve_beside(yaml_path, ref)
    if found is None or not found.is_file():
        raise ConfigError(
            f"{yaml_path}: {key}: no such file {str(ref)!r} (looked beside the YAML and "
            f"in the X-VLM repository root)"
        )
    try:
        data = json.loads(found.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{found}: {key}: cannot read JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{found}: {key}: expected a JSON object")
    return data


def read(path: Path) -> XVLMFiles:
    """Every field of an X-VLM YAML vqatune uses; a one-line ConfigError naming the file else."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config: no such file {str(path)!r}") from None
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read X-VLM YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not an X-VLM YAML (expected a mapping)")
    for key, what in UNSUPPORTED.items():
        if data.get(key):
            raise ConfigError(f"{path}: {key}: True is not supported ({what}); set it to False")
    out: dict[str, Any] = {"yaml_path": path}
    for key in ("image_res", "patch_size", "max_tokens"):
        if data.get(key) is not None:
            out[key] = int(data[key])
    from_yaml: dict[str, Any] = {}
    if "vision_config" in data:
        v = _json_file(path, data["vision_config"], "vision_config")
        if data.get("use_swin", "depths" in v):
            missing = [k for k in SWIN_KEYS if k not in v]
            if missing:
                raise ConfigError(
                    f"{path}: vision_config: the Swin JSON lacks {', '.join(missing)}"
                )
            swin = {k: v[k] for k in SWIN_KEYS}
            if "image_res" in out and out["image_res"] != int(swin["image_res"]):
                raise ConfigError(
                    f"{path}: image_res {out['image_res']} differs from the Swin JSON's "
                    f"image_res {swin['image_res']} (X-VLM requires them equal)"
                )
            out["swin"] = swin
            out.setdefault("image_res", int(swin["image_res"]))
            from_yaml["vision_encoder"] = "swin"
            from_yaml["vision_width"] = int(swin["vision_width"])
        else:
            width = v.get("vision_width") or v.get("hidden_size") or v.get("embed_dim")
            layers = v.get("num_hidden_layers") or v.get("depth")
            out["vit"] = {"width": width, "layers": layers}
            if width:
                from_yaml["vision_width"] = int(width)
            if layers:
                from_yaml["vision_layers"] = int(layers)
            for key in ("image_res", "patch_size"):
                if key in v:
                    out.setdefault(key, int(v[key]))
    for key in ("image_res", "patch_size"):
        if key in out:
            from_yaml[key] = out[key]
    if "text_config" in data:
        bert = dict(_json_file(path, data["text_config"], "text_config"))
        total = int(data.get("text_num_hidden_layers", bert.get("num_hidden_layers", 0)))
        start = data.get("text_fusion_start_at", bert.get("fusion_layer"))
        start = total // 2 if start is None else int(start)
        if total and not 0 < start < total:
            raise ConfigError(
                f"{path}: fusion_layer {start} must lie inside num_hidden_layers {total}"
            )
        if total:
            bert["num_hidden_layers"], bert["fusion_layer"] = total, start
            from_yaml["text_layers"] = start
            from_yaml["fusion_layers"] = total - start
        if "hidden_size" in bert:
            from_yaml["text_width"] = int(bert["hidden_size"])
        if "num_attention_heads" in bert:
            from_yaml["backbone_heads"] = int(bert["num_attention_heads"])
        out["bert"] = bert
    if data.get("text_encoder"):
        folder = resolve_beside(path, data["text_encoder"])
        if folder is None or not (folder / "config.json").is_file():
            raise ConfigError(
                f"{path}: text_encoder: no transformers folder (config.json) at "
                f"{str(data['text_encoder'])!r} (looked beside the YAML and in the X-VLM "
                f"repository root)"
            )
        out["text_encoder"] = folder
    return XVLMFiles(**out, from_yaml=from_yaml)
