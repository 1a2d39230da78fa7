"""The VQA model: X-VLM backbone + BAN/AoA branch + ISubGVQA graph branch, fused, with its loss.

batch -> backbone (vision tokens [B,Nv,Wv], fused text [B,1+L,Wt])
      -> xvlm logits  = answer head on the fused [CLS]                      [B,A]
      -> question     = word embeddings ([own 300 ; TF-IDF 300]) -> GRU(num_hid) [B,L,H]
      -> ban logits   = BAN(question, vision tokens -> H, CFRF fusions, AoA) [B,A]
      -> graph logits = ISubGVQA(question, scene graph or region graph)     [B,A]
      -> fused logits = softmax(w) . (xvlm, ban, graph)                     [B,A]
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from vqatune.engine.config import ConfigError

from .backbone import XVLMBackbone
from .ban import BANBranch
from .graph import GraphBranch, match_regions
from .layers import Classifier
from .xvlm_checkpoint import checkpoint_report, is_xvlm_state, load_xvlm_checkpoint, read_state

WORD_DIM = 300  # word embedding size (GloVe-sized, as ban-vqa; TF-IDF initialised when given)
BRANCHES = ("xvlm", "ban", "graph")  # the order of the fusion weights
OUTPUTS = ("fused", *BRANCHES)  # every prediction, each with its loss and accuracy


class VQAModel(nn.Module):
    def __init__(self, cfg, meta, *, load_weights: bool = True):
        super().__init__()
        self.cfg = cfg
        self.soft_targets = bool(meta.soft_targets)
        A, V, H = len(meta.answers), len(meta.vocab), cfg.num_hid
        self.backbone = XVLMBackbone(cfg, meta, V, load_weights=load_weights)
        Wv, Wt = self.backbone.vision_width, self.backbone.text_width
        # X-VLM branch: classification over the answer vocabulary (X-VLM itself generates answers
        # with a decoder; a classifier on the fused [CLS] is what the fusion needs).
        self.xvlm_head = Classifier(Wt, Wt, A, cfg.activation, cfg.dropout)
        # question encoder shared by BAN and the graph branch: each word's own vector (GloVe's
        # place in ban-vqa), and with tfidf its TF-IDF vector beside it (ban-vqa's op "c"). The
        # TF-IDF vector alone cannot tell apart words seen in the same contexts (every colour
        # of easy-VQA: cosine 0.999), which then take thousands of steps to separate.
        self.word_emb = nn.Embedding(V, WORD_DIM, padding_idx=0)
        self.word_init = meta.word_init is not None and cfg.tfidf
        if self.word_init:
            init = torch.as_tensor(meta.word_init, dtype=torch.float32)
            if tuple(init.shape) != (V, WORD_DIM):
                raise ValueError(
                    f"meta.word_init has shape {tuple(init.shape)}, expected {(V, WORD_DIM)}"
                )
            self.word_tfidf = nn.Embedding(V, WORD_DIM, padding_idx=0)
            with torch.no_grad():
                self.word_tfidf.weight.copy_(init)
        word_dim = WORD_DIM * (2 if self.word_init else 1)
        self.gru = nn.GRU(word_dim, H, batch_first=True)
        self.vision_proj = nn.Linear(Wv, H)
        self.has_graph = bool(meta.has_graph)
        if self.has_graph:  # entities for the question-entity fusion: scene-graph object names
            self.entity_emb = nn.Embedding(len(meta.node_vocab) + 1, H, padding_idx=0)
        self.ban = BANBranch(cfg, A, word_dim)
        self.graph = GraphBranch(cfg, meta, A, H, Wv)
        self.fusion_logits = nn.Parameter(torch.zeros(len(BRANCHES)))

    def forward(self, batch: dict) -> dict:
        bb = self.backbone(batch)
        vision, v_mask, v_boxes = bb["vision"], bb["vision_mask"], bb["vision_boxes"]
        xvlm = self.xvlm_head(bb["fused"][:, 0])  # [B,A]

        q_mask = batch["q_mask"]
        lengths = q_mask.sum(1).clamp_min(1).cpu()
        words = self.embed_words(batch["q_tokens"])  # [B,L,word_dim]
        packed = nn.utils.rnn.pack_padded_sequence(
            words, lengths, batch_first=True, enforce_sorted=False
        )
        q, _ = self.gru(packed)
        q, _ = nn.utils.rnn.pad_packed_sequence(
            q, batch_first=True, total_length=words.shape[1]
        )  # [B,L,H]
        v = self.vision_proj(vision)  # [B,Nv,H]
        node_region = None
        if self.has_graph:  # entities: object names, and the appearance of their regions
            node_region = match_regions(batch["node_boxes"], batch["node_mask"], v_boxes, v_mask)
            region, matched = node_region
            seen = v.gather(1, region[..., None].expand(-1, -1, v.shape[-1]))
            entities = self.entity_emb(batch["node_names"]) + seen * matched[..., None].to(v.dtype)
            entity_mask = batch["node_mask"]
        else:
            entities, entity_mask = v, v_mask
        # easy-VQA has no statistics words: their fusion would add zeros at full cost
        has_stats = bool(batch["stat_mask"].any())
        stat = self.embed_words(batch["stat_words"]) if has_stats else None  # [B,S,word_dim]
        ban = self.ban(
            q, q_mask, v, v_mask, v_boxes, entities, entity_mask, stat, batch["stat_mask"]
        )
        graph, node_weights = self.graph(batch, q, q_mask, vision, v_boxes, v_mask, node_region)

        logits = {"xvlm": xvlm, "ban": ban, "graph": graph}
        weights = torch.softmax(self.fusion_logits, 0)
        logits["fused"] = sum(w * logits[b].float() for w, b in zip(weights, BRANCHES))
        return {"logits": logits, "fusion_weights": weights, "node_weights": node_weights}

    def embed_words(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B,L] ids -> [B,L,300] own vectors, or [B,L,600] own and TF-IDF vectors."""
        own = self.word_emb(tokens)
        return torch.cat([own, self.word_tfidf(tokens)], -1) if self.word_init else own

    def branch_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        logits = logits.float()
        if self.soft_targets:  # VQA v2: BCE on soft scores, summed over answers (as ban-vqa)
            target = batch["target"].float()
            return F.binary_cross_entropy_with_logits(logits, target) * target.shape[1]
        label = batch["label"]
        valid = label >= 0
        losses = F.cross_entropy(logits, label.clamp_min(0), reduction="none")
        return (losses * valid).sum() / valid.sum().clamp_min(1)

    def loss(self, out: dict, batch: dict):
        parts = {name: self.branch_loss(out["logits"][name], batch) for name in OUTPUTS}
        total = (
            self.cfg.fusion_ratio * parts["fused"] + parts["ban"] + parts["graph"] + parts["xvlm"]
        )
        return total, parts

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        backbone = list(self.backbone.parameters())
        ids = {id(p) for p in backbone}
        return {"backbone": backbone, "heads": [p for p in self.parameters() if id(p) not in ids]}


def build_model(cfg, meta, *, load_weights: bool = True) -> VQAModel:
    """The model for cfg; a checkpoint file (X-VLM's or vqatune's) is loaded when load_weights,
    else only matched (model summary on the meta device). model.checkpoint_report says what."""
    model = VQAModel(cfg, meta, load_weights=load_weights)
    model.checkpoint_report = None
    if cfg.checkpoint and not Path(cfg.checkpoint).exists():
        raise ConfigError(f"checkpoint: {cfg.checkpoint}: no such file or folder")
    if cfg.checkpoint and Path(cfg.checkpoint).is_file():
        path = Path(cfg.checkpoint)
        if not load_weights:
            model.checkpoint_report = checkpoint_report(model, path)
            return model
        state = read_state(path)
        if is_xvlm_state(state):
            model.checkpoint_report = load_xvlm_checkpoint(model, path, state)
        else:
            load_vqatune_checkpoint(model, path)
            model.checkpoint_report = {
                "path": str(path),
                "loaded": len(model.state_dict()) - len(model.checkpoint_skipped),
                "missing": len(model.checkpoint_skipped),
                "unexpected": 0,
                "interpolated": 0,
                "names": {
                    "missing": model.checkpoint_skipped,
                    "unexpected": [],
                    "interpolated": [],
                },
            }
    return model


def load_vqatune_checkpoint(model: VQAModel, path: Path) -> None:
    """Initialise from a vqatune checkpoint (a .pt with a "model" state dict). Tensors whose name
    and shape match are loaded (a new answer vocabulary keeps fresh classifiers); the names of the
    others are kept in model.checkpoint_skipped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file that is not a checkpoint
        raise ConfigError(
            f"checkpoint: {path}: not a vqatune checkpoint ({type(e).__name__}: {e})"
        ) from None
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint: {path}: no model state dict in it")
    own = model.state_dict()
    usable = {
        k: v
        for k, v in state.items()
        if k in own and isinstance(v, torch.Tensor) and v.shape == own[k].shape
    }
    if not usable:
        raise ConfigError(f"checkpoint: {path}: no parameter matches this model")
    model.load_state_dict(usable, strict=False)
    model.checkpoint_skipped = sorted(set(own) - set(usable))
