"""X-VLM's published checkpoints onto the vqatune model, and the report of what was loaded.

Files read: the 4M/16M pre-training checkpoints (a dict with "model": `vision_encoder.*`,
`text_encoder.bert.*` beside the MLM head `text_encoder.cls.*`, itm_head, bbox_head, ...) and the
VQA fine-tuned ones (`vision_encoder.*`, `text_encoder.*`, `text_decoder.*`). Name mapping:

    vision_encoder.patch_embed.proj / .norm    -> vision.embeddings.patch_embeddings.projection / .norm
    vision_encoder.layers.i.blocks.j.norm1     -> vision.encoder.layers.i.blocks.j.layernorm_before
      .attn.qkv [3C,C] (q, k, v stacked)       -> .attention.self.query / key / value [C,C] each
      .attn.relative_position_bias_table       -> .attention.self.relative_position_bias_table
                                                  (interpolated when the window differs)
      .attn.proj / .norm2 / .mlp.fc1 / .mlp.fc2 -> .attention.output.dense / .layernorm_after /
                                                  .intermediate.dense / .output.dense
    vision_encoder.layers.i.downsample.*       -> vision.encoder.layers.i.downsample.*
    vision_encoder.norm                        -> vision.layernorm
    text_encoder.[bert.]embeddings.*           -> text.embeddings.*
    text_encoder.[bert.]encoder.layer.k.*      -> text.encoder.layer.k.* (k < fusion_layer),
                                                  fusion.(k - fusion_layer).* (the rest)

Buffers X-VLM stores (relative_position_index, attn_mask, position_ids) are rebuilt by the model
and counted as such; every other tensor without a counterpart is reported as unexpected.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from vqatune.engine.config import ConfigError

PREFIX = "backbone."
REBUILT = ("relative_position_index", "attn_mask", "position_ids")
# X-VLM block part -> transformers' SwinLayer names (older releases: the second spelling)
SWIN_BLOCK_PARTS = {
    "norm1": ("layernorm_before",),
    "attn.relative_position_bias_table": (
        "attention.relative_position_bias.relative_position_bias_table",
        "attention.self.relative_position_bias_table",
    ),
    "attn.proj": ("attention.o_proj", "attention.output.dense"),
    "norm2": ("layernorm_after",),
    "mlp.fc1": ("mlp.fc1", "intermediate.dense"),
    "mlp.fc2": ("mlp.fc2", "output.dense"),
}
SWIN_QKV = (("attention.q_proj", "attention.k_proj", "attention.v_proj"),) + (
    ("attention.self.query", "attention.self.key", "attention.self.value"),
)
_BLOCK = re.compile(
    r"layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias|relative_position_bias_table)$"
)
_TEXT_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)$")


def is_xvlm_state(state: dict) -> bool:
    return any(k.startswith(("vision_encoder.", "text_encoder.")) for k in state)


def map_vision(name: str) -> list[tuple[tuple[str, ...], int | None]]:
    """An X-VLM Swin tensor name (without `vision_encoder.`) -> [(our candidate names, which
    third of the tensor's rows or None)]; the first candidate the model has is the target."""
    base = "vision."
    leaf = name.rsplit(".", 1)[-1]
    if name.startswith("patch_embed.proj."):
        return [((base + "embeddings.patch_embeddings.projection." + leaf,), None)]
    if name.startswith("patch_embed.norm."):
        return [((base + "embeddings.norm." + leaf,), None)]
    if name.startswith("norm."):
        return [((base + "layernorm." + leaf,), None)]
    if ".downsample." in name:
        return [((base + "encoder." + name,), None)]
    m = _BLOCK.match(name)
    if not m:
        return []
    stage, block, part, leaf = m.groups()
    prefix = f"{base}encoder.layers.{stage}.blocks.{block}."
    if leaf == "relative_position_bias_table":
        part, leaf = "attn.relative_position_bias_table", ""
    suffix = f".{leaf}" if leaf else ""
    if part == "attn.qkv":  # rows [q; k; v], as X-VLM reshapes qkv to (3, heads, head_dim)
        return [(tuple(prefix + names[i] + suffix for names in SWIN_QKV), i) for i in range(3)]
    if part not in SWIN_BLOCK_PARTS:
        return []
    return [(tuple(prefix + c + suffix for c in SWIN_BLOCK_PARTS[part]), None)]


def map_text(name: str, fusion_layer: int) -> str | None:
    """An X-VLM text-encoder name (without `text_encoder.` / `bert.`) -> our name."""
    if name.startswith("embeddings."):
        return "text." + name
    m = _TEXT_LAYER.match(name)
    if not m:
        return None
    k, rest = int(m.group(1)), m.group(2)
    if k < fusion_layer:
        return f"text.encoder.layer.{k}.{rest}"
    return f"fusion.{k - fusion_layer}.{rest}"


def interpolate_bias_table(table: torch.Tensor, dst_positions: int) -> torch.Tensor:
    """Swin's relative position bias table [(2w-1)^2, heads] resampled to another window, as
    X-VLM's interpolate_relative_pos_embed (from BEiT): the source offsets are spread on a
    geometric progression that reaches the target's extent, and each head's table is sampled
    by an interpolating bicubic spline (not-a-knot, FITPACK's s=0 rectangular-grid spline)."""
    src = int(table.shape[0] ** 0.5)
    dst = int(dst_positions**0.5)
    if src == dst:
        return table
    lo, hi = 1.01, 1.5
    while hi - lo > 1e-6:  # ratio q: 1 + q + ... + q^(src//2 - 1) reaches dst // 2
        q = (lo + hi) / 2
        if (1 - q ** (src // 2)) / (1 - q) > dst // 2:
            hi = q
        else:
            lo = q
    dis, cur = [], 1.0
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    x = np.array([-d for d in reversed(dis)] + [0.0] + dis)
    t = dst // 2
    targets = np.arange(-t, t + 0.1, 1.0)
    weights = spline_weights(x, targets)  # [dst, src]
    grid = table.detach().float().cpu().numpy().reshape(src, src, -1)  # [src, src, heads]
    out = np.einsum("ia,jb,abh->ijh", weights, weights, grid)
    return torch.from_numpy(out.reshape(dst * dst, -1).astype(np.float32)).to(table.dtype)


def spline_weights(x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[len(targets), len(x)]: the not-a-knot cubic spline through (x, y) at targets is W @ y."""
    n = len(x)
    h = np.diff(x)
    # second derivatives M from y: A M = B y
    A, B = np.zeros((n, n)), np.zeros((n, n))
    for i in range(1, n - 1):
        A[i, i - 1 : i + 2] = h[i - 1], 2 * (h[i - 1] + h[i]), h[i]
        B[i, i - 1] += 6 / h[i - 1]
        B[i, i] -= 6 / h[i - 1] + 6 / h[i]
        B[i, i + 1] += 6 / h[i]
    # not-a-knot: the third derivative is continuous at x[1] and x[n-2]
    A[0, :3] = -h[1], h[0] + h[1], -h[0]
    A[-1, -3:] = -h[-1], h[-2] + h[-1], -h[-2]
    M = np.linalg.solve(A, B)  # [n, n]: M = M @ y
    k = np.clip(np.searchsorted(x, targets, side="right") - 1, 0, n - 2)
    a, b = x[k], x[k + 1]
    hk = b - a
    u, v = (b - targets) / hk, (targets - a) / hk
    eye = np.eye(n)
    W = (
        u[:, None] * eye[k]
        + v[:, None] * eye[k + 1]
        + ((u**3 - u) * hk**2 / 6)[:, None] * M[k]
        + ((v**3 - v) * hk**2 / 6)[:, None] * M[k + 1]
    )
    return W


def read_state(path: Path) -> dict:
    """The tensors of a checkpoint file (weights_only; a dict with "model" or the state itself)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # an old (not zip) file cannot be memory-mapped
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(
                f"checkpoint: {path}: not a checkpoint ({type(e).__name__})"
            ) from None
    except Exception as e:  # torch raises many kinds for a file that is not a checkpoint
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(
            f"checkpoint: {path}: not a checkpoint ({type(e).__name__}: {first})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint: {path}: no state dict in it")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def match(state: dict, own: dict, fusion_layer: int, path) -> tuple[dict, dict]:
    """X-VLM tensors -> ({our name: tensor}, report). `own` maps our names (under backbone.) to
    tensors or shapes; a tensor of the wrong shape is a one-line error naming both."""
    loaded: dict[str, torch.Tensor] = {}
    unexpected, interpolated, rebuilt = [], [], 0
    for name, value in state.items():
        if name.endswith(REBUILT):
            rebuilt += 1
            continue
        if name.startswith("vision_encoder."):
            candidates = map_vision(name[len("vision_encoder.") :])
        elif name.startswith("text_encoder."):
            rest = name[len("text_encoder.") :].removeprefix("bert.")
            ours = map_text(rest, fusion_layer)
            candidates = [((ours,), None)] if ours else []
        else:
            candidates = []
        targets = []
        for names, rows in candidates:
            present = [PREFIX + n for n in names if PREFIX + n in own]
            if present:
                targets.append((present[0], rows))
        if not targets:
            unexpected.append(name)
            continue
        for target, rows in targets:
            want = tuple(own[target].shape)
            tensor = value if rows is None else value.chunk(3, 0)[rows]
            if target.endswith("relative_position_bias_table") and tuple(tensor.shape) != want:
                if tensor.shape[1:] == want[1:]:
                    tensor = interpolate_bias_table(tensor, want[0])
                    interpolated.append(name)
            if tuple(tensor.shape) != want:
                raise ConfigError(
                    f"checkpoint: {path}: {name} has shape {tuple(value.shape)}, "
                    f"the model's {target.removeprefix(PREFIX)} has {want}" + word_hint(target)
                )
            loaded[target] = tensor
    encoder = [  # the model's own index buffers are built, not loaded
        k
        for k in own
        if k.startswith(tuple(PREFIX + p for p in ("vision.", "text.", "fusion.")))
        and not k.endswith(REBUILT)
    ]
    missing = sorted(k.removeprefix(PREFIX) for k in encoder if k not in loaded)
    report = {
        "path": str(path),
        "loaded": len(loaded),
        "missing": len(missing),
        "unexpected": len(unexpected),
        "interpolated": len(interpolated),
        "rebuilt_buffers": rebuilt,
        "names": {
            "missing": missing,
            "unexpected": sorted(unexpected),
            "interpolated": sorted(interpolated),
        },
    }
    return loaded, report


def word_hint(target: str) -> str:
    if target.endswith(("word_embeddings.weight", "position_embeddings.weight")):
        return " (give the YAML's text_encoder folder: its vocab.txt sets X-VLM's word pieces)"
    return ""


def own_tensors(model) -> dict:
    """Parameters and persistent buffers of the model, by name (meta tensors are fine)."""
    return dict(model.state_dict(keep_vars=True))


def load_xvlm_checkpoint(model, path: Path, state: dict | None = None) -> dict:
    """Copy every matching X-VLM tensor into model; returns the report (also model.checkpoint)."""
    state = read_state(path) if state is None else state
    loaded, report = match(state, own_tensors(model), fusion_layer(model), path)
    if not loaded:
        raise ConfigError(f"checkpoint: {path}: no X-VLM tensor matches this model")
    model.load_state_dict(loaded, strict=False)
    return report


def checkpoint_report(model, path: Path) -> dict:
    """What loading path would do, without loading (for `model summary` on the meta device)."""
    state = read_state(path)
    if not is_xvlm_state(state):
        own = own_tensors(model)
        usable = [k for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)]
        return {
            "path": str(path),
            "loaded": len(usable),
            "missing": len(own) - len(usable),
            "unexpected": len(state) - len(usable),
            "interpolated": 0,
            "names": {
                "missing": sorted(set(own) - set(usable)),
                "unexpected": sorted(set(state) - set(usable)),
                "interpolated": [],
            },
        }
    return match(state, own_tensors(model), fusion_layer(model), path)[1]


def fusion_layer(model) -> int:
    return len(model.backbone.text.encoder.layer)


def load_text_encoder(backbone, folder: Path, attn: str) -> dict:
    """A local transformers BERT folder (bert-base-uncased, MiniLM, ...) through from_pretrained:
    its embeddings and layers onto the text encoder and the fusion layers (X-VLM's pre-training
    initialisation; the cross-attention stays new)."""
    from transformers import BertModel

    try:
        bert = BertModel.from_pretrained(
            str(folder), add_pooling_layer=False, local_files_only=True, attn_implementation=attn
        )
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"text_encoder: {folder}: cannot load: {first}") from None
    state = {"text_encoder." + k: v for k, v in bert.state_dict().items()}
    own = {PREFIX + k: v for k, v in backbone.state_dict(keep_vars=True).items()}
    loaded, report = match(state, own, len(backbone.text.encoder.layer), folder)
    backbone.load_state_dict({k.removeprefix(PREFIX): v for k, v in loaded.items()}, strict=False)
    return report
