"""ISubGVQA branch: a question-guided graph network that keeps a sampled top-k subgraph.

Graphs are dense-batched neighbour lists: each of N nodes has K neighbour slots (idx [B,N,K],
nbr_mask [B,N,K], rel [B,N,K]). A scene graph uses K = N (every node, masked by its edges plus a
self-loop); without a scene graph the nodes are the vision tokens and each links to its
REGION_NEIGHBOURS nearest boxes (box centres), itself included. D = general_hidden_dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Classifier, CrossAttention, activation, heads_for, masked_mean
from .samplers import sample_nodes

REGION_NEIGHBOURS = 8
# A scene-graph node takes the appearance of the vision token whose box overlaps its own best,
# when that overlap (IoU) reaches MATCH_IOU: the same box (graphs built from boxes, or regions
# made from the graph) gives 1; a detector box over the object typically more than 0.5.
MATCH_IOU = 0.5


def gather_nodes(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [B,N,D], idx [B,N,K] -> [B,N,K,D]."""
    B, N, K = idx.shape
    return x.gather(1, idx.reshape(B, N * K, 1).expand(-1, -1, x.shape[-1])).view(B, N, K, -1)


def knn_graph(boxes: torch.Tensor, mask: torch.Tensor, k: int):
    """boxes [B,N,4], mask [B,N] -> neighbour idx [B,N,K] and mask [B,N,K] (nearest centres)."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # [B,N,2]
    dist = torch.cdist(centre.float(), centre.float())  # [B,N,N]
    dist = dist.masked_fill(~mask[:, None, :], float("inf"))
    k = min(k, boxes.shape[1])
    idx = dist.topk(k, dim=-1, largest=False).indices  # [B,N,K]
    nbr_mask = mask.gather(1, idx.flatten(1)).view(idx.shape) & mask[:, :, None]
    return idx, nbr_mask


def match_regions(node_boxes, node_mask, vis_boxes, vis_mask):
    """Each node's best-overlapping vision token: index [B,N] and whether it matches [B,N]."""
    nb, vb = node_boxes.float(), vis_boxes.float()
    lo = torch.maximum(nb[:, :, None, :2], vb[:, None, :, :2])
    hi = torch.minimum(nb[:, :, None, 2:], vb[:, None, :, 2:])
    inter = (hi - lo).clamp_min(0).prod(-1)  # [B,N,Nv]
    area_n = (nb[..., 2:] - nb[..., :2]).clamp_min(0).prod(-1)
    area_v = (vb[..., 2:] - vb[..., :2]).clamp_min(0).prod(-1)
    iou = inter / (area_n[:, :, None] + area_v[:, None, :] - inter).clamp_min(1e-9)
    iou = iou.masked_fill(~vis_mask[:, None, :], -1.0)
    best, idx = iou.max(-1)
    return idx, (best >= MATCH_IOU) & node_mask


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    logits = logits.float().masked_fill(~mask, -1e9)
    return torch.softmax(logits, dim=dim) * mask


class GATLayer(nn.Module):
    """Plain graph attention (GAT, Velickovic et al.): static scores a_dst.h_i + a_src.h_j."""

    def __init__(self, dim: int, act: str, dropout: float):
        super().__init__()
        self.w = nn.Linear(dim, dim)
        self.a_dst = nn.Linear(dim, 1, bias=False)
        self.a_src = nn.Linear(dim, 1, bias=False)
        self.act = activation(act)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, idx, nbr_mask, edge, keep):
        # x [B,N,D]; edge [B,N,K,D]; keep [B,N] node weights (1 = kept)
        h = self.w(x)  # [B,N,D]
        h_j = gather_nodes(h, idx)  # [B,N,K,D]
        score = F.leaky_relu(self.a_dst(h)[:, :, None, 0] + self.a_src(h_j)[..., 0], 0.2)  # [B,N,K]
        alpha = masked_softmax(score, nbr_mask, -1).to(h.dtype)
        keep_j = gather_nodes(keep.unsqueeze(-1), idx)[..., 0]  # [B,N,K]
        msg = ((alpha * keep_j).unsqueeze(-1) * (h_j + edge)).sum(2)  # [B,N,D]
        return self.norm(x + self.dropout(self.act(msg)))


class MGATLayer(nn.Module):
    """Masked multi-head GATv2-style attention (Brody et al.): dynamic scores
    a . LeakyReLU(W_i x_i + W_j x_j + W_e e_ij) over the unmasked neighbours, edge-aware messages."""

    def __init__(self, dim: int, act: str, dropout: float):
        super().__init__()
        self.heads = heads_for(dim, 4)
        self.w_dst = nn.Linear(dim, dim)
        self.w_src = nn.Linear(dim, dim)
        self.w_edge = nn.Linear(dim, dim, bias=False)
        self.attn = nn.Parameter(torch.randn(self.heads, dim // self.heads) * 0.1)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.act = activation(act)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, idx, nbr_mask, edge, keep):
        B, N, K = idx.shape
        Hh, d = self.heads, x.shape[-1] // self.heads
        src = gather_nodes(self.w_src(x), idx)  # [B,N,K,D]
        e = self.w_edge(edge)  # [B,N,K,D]
        z = F.leaky_relu(self.w_dst(x)[:, :, None] + src + e, 0.2).view(B, N, K, Hh, d)
        score = (z * self.attn).sum(-1)  # [B,N,K,Hh]
        keep_j = gather_nodes(keep.unsqueeze(-1), idx)  # [B,N,K,1]
        alpha = masked_softmax(score, nbr_mask.unsqueeze(-1), 2).to(x.dtype) * keep_j
        v = (gather_nodes(self.value(x), idx) + e).view(B, N, K, Hh, d)
        msg = (alpha.unsqueeze(-1) * v).sum(2).reshape(B, N, -1)  # [B,N,D]
        return self.norm(x + self.dropout(self.act(self.out(msg))))


class GraphBranch(nn.Module):
    def __init__(self, cfg, meta, num_answers: int, q_dim: int, vis_dim: int):
        super().__init__()
        D = cfg.general_hidden_dim
        self.cfg = cfg
        self.has_graph = bool(meta.has_graph)
        if self.has_graph:
            self.name_emb = nn.Embedding(len(meta.node_vocab) + 1, D, padding_idx=0)
            self.attr_emb = nn.Embedding(len(meta.attr_vocab) + 1, D, padding_idx=0)
        self.node_proj = nn.Linear(vis_dim, D)  # a node's appearance: its region's vision token
        self.box_mlp = nn.Sequential(nn.Linear(5, D), activation(cfg.activation), nn.Linear(D, D))
        # relation ids: 0 = self-loop / none, 1 + i = meta.rel_vocab[i], last = "near" (region graphs)
        self.near_rel = len(getattr(meta, "rel_vocab", []) or []) + 1
        self.rel_emb = nn.Embedding(self.near_rel + 1, D)
        self.q_proj = nn.Linear(q_dim, D)
        self.instr_queries = nn.Parameter(torch.randn(cfg.mgat_layers, D) * 0.02)
        self.instr_attn = CrossAttention(D)
        self.instr_gates = (
            nn.ModuleList(nn.Linear(D, D) for _ in range(cfg.mgat_layers))
            if cfg.use_instruction
            else None
        )
        layer = MGATLayer if cfg.use_mgat else GATLayer
        self.layers = nn.ModuleList(
            layer(D, cfg.activation, cfg.dropout) for _ in range(cfg.mgat_layers)
        )
        self.node_score = (
            nn.Sequential(nn.Linear(2 * D, D), activation(cfg.activation), nn.Linear(D, 1))
            if cfg.use_masking
            else None
        )
        self.readout_gate = nn.Linear(2 * D, 1)
        self.classifier = Classifier(2 * D, D, num_answers, cfg.activation, cfg.dropout)

    def nodes(self, batch, vis, vis_boxes, vis_mask, node_region):
        """-> x [B,N,D], mask [B,N], neighbour idx/mask/rel [B,N,K]."""
        if self.has_graph:
            mask = batch["node_mask"]
            attrs = batch["node_attrs"]  # [B,N,A]
            attr = (self.attr_emb(attrs) * (attrs > 0).unsqueeze(-1)).sum(2)
            attr = attr / (attrs > 0).sum(-1, keepdim=True).clamp_min(1)
            region, matched = node_region
            appearance = self.node_proj(
                vis.gather(1, region[..., None].expand(-1, -1, vis.shape[-1]))
            )
            x = (
                self.name_emb(batch["node_names"])
                + attr
                + appearance * matched[..., None].to(appearance.dtype)
            )
            boxes = batch["node_boxes"]
            B, N = mask.shape
            idx = torch.arange(N, device=mask.device).expand(B, N, N)
            rel = batch["edge_rel"].clamp(max=self.near_rel - 1)
            eye = torch.eye(N, dtype=torch.bool, device=mask.device)
            nbr_mask = ((rel > 0) | eye) & mask[:, :, None] & mask[:, None, :]
        else:
            x, boxes, mask = self.node_proj(vis), vis_boxes, vis_mask
            idx, nbr_mask = knn_graph(boxes, mask, REGION_NEIGHBOURS)
            rel = torch.full_like(idx, self.near_rel)
        area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).unsqueeze(-1)
        x = x + self.box_mlp(torch.cat([boxes, area], -1).to(x.dtype))
        return x * mask.unsqueeze(-1).to(x.dtype), mask, idx, nbr_mask, rel

    def forward(self, batch, q_hidden, q_mask, vis, vis_boxes, vis_mask, node_region=None):
        """node_region: match_regions' (index, matched) of the scene-graph nodes."""
        cfg = self.cfg
        x, mask, idx, nbr_mask, rel = self.nodes(batch, vis, vis_boxes, vis_mask, node_region)
        B = x.shape[0]
        q = self.q_proj(q_hidden)  # [B,L,D]
        q_vec = masked_mean(q, q_mask)  # [B,D]
        instr = self.instr_attn(
            self.instr_queries.expand(B, -1, -1).to(q.dtype), q, q_mask
        )  # [B,layers,D]
        edge = self.rel_emb(rel)  # [B,N,K,D]
        keep = mask.to(x.dtype)  # [B,N]
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            if last and self.node_score is not None:
                theta = self.node_score(torch.cat([x, q_vec[:, None].expand_as(x)], -1))[..., 0]
                keep = sample_nodes(
                    cfg.sampler_type,
                    theta,
                    mask,
                    cfg.sample_k,
                    tau=cfg.tau,
                    nb_samples=cfg.nb_samples,
                    alpha=cfg.alpha,
                    beta=cfg.beta,
                    training=self.training,
                ).to(x.dtype)  # [B,N]
            if self.instr_gates is not None:
                x = x * torch.sigmoid(self.instr_gates[i](instr[:, i]))[:, None, :]
            x = layer(x, idx, nbr_mask, edge, keep) * keep.unsqueeze(-1)
        gate = torch.sigmoid(self.readout_gate(torch.cat([x, q_vec[:, None].expand_as(x)], -1)))
        readout = (gate * x).sum(1) / keep.sum(1, keepdim=True).clamp_min(1e-6)  # [B,D]
        return self.classifier(torch.cat([readout, q_vec], -1)), keep
