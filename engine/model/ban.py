"""BAN branch: CFRF fusions, AoA, bilinear attention with glimpses, the counting module, classifier.

Shapes: B batch, L question tokens, Nv visual tokens, H = num_hid, G = gamma glimpses.
"""

from __future__ import annotations

import torch
from torch import nn

from .aoa import AoAStack
from .layers import Classifier, CrossAttention

COUNTER_OBJECTS = 10  # proposals the counting module looks at (ban-vqa's value)
ATTENTION_RANK = 3  # k of the low-rank bilinear attention (ban-vqa's value)


class FCNet(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))


class BCNet(nn.Module):
    """Low-rank bilinear pooling: v [B,Nv,Dv], q [B,L,Dq] -> H features, rank k."""

    def __init__(self, v_dim: int, q_dim: int, h_dim: int, k: int, dropout: float):
        super().__init__()
        self.h_dim, self.k = h_dim, k
        self.v_net = FCNet(v_dim, h_dim * k, dropout)
        self.q_net = FCNet(q_dim, h_dim * k, dropout)

    def pooled(self, v, q, weights):
        # weights [B,Nv,L] (one glimpse's attention map) -> [B,H]
        v_, q_ = self.v_net(v), self.q_net(q)  # [B,Nv,hk], [B,L,hk]
        joint = torch.einsum("bvd,bvl,bld->bd", v_, weights, q_)  # [B,hk]
        return joint.view(-1, self.h_dim, self.k).sum(-1)  # [B,H]


class BiAttention(nn.Module):
    """Bilinear attention maps: one softmax over all (box, token) pairs per glimpse."""

    def __init__(self, v_dim: int, q_dim: int, h_dim: int, glimpses: int, dropout: float):
        super().__init__()
        self.v_net = FCNet(v_dim, h_dim * ATTENTION_RANK, dropout)
        self.q_net = FCNet(q_dim, h_dim * ATTENTION_RANK, dropout)
        self.h_mat = nn.Parameter(torch.randn(glimpses, h_dim * ATTENTION_RANK) / h_dim**0.5)
        self.h_bias = nn.Parameter(torch.zeros(glimpses))

    def forward(self, v, v_mask, q, q_mask):
        v_, q_ = self.v_net(v), self.q_net(q)  # [B,Nv,hk], [B,L,hk]
        logits = torch.einsum("bvd,gd,bld->bgvl", v_, self.h_mat, q_)  # [B,G,Nv,L]
        logits = logits + self.h_bias[None, :, None, None]
        pair_mask = (v_mask[:, :, None] & q_mask[:, None, :])[:, None]  # [B,1,Nv,L]
        logits = logits.masked_fill(~pair_mask, torch.finfo(logits.dtype).min)
        B, G, Nv, L = logits.shape
        att = torch.softmax(logits.view(B, G, Nv * L).float(), dim=-1).view(B, G, Nv, L)
        return att.to(v.dtype), logits


# ---------------------------------------------------------------------------------------------
# Counting module (Zhang, Hare & Prügel-Bennett, ICLR 2018), with a choice of activation for its
# eight learned functions f1..f8 on [0, 1]:
#   zhang   - the paper's piecewise-linear monotone functions (16 pieces, learned slopes)
#   sigmoid - a learned logistic curve sigmoid(s*(x - c)), smooth and monotone
#   relu    - a learned ramp clamp(s*x + c, 0, 1) (one linear piece, clipped)
# All three start close to the identity, as the paper's functions do.


class PiecewiseLin(nn.Module):
    def __init__(self, n: int = 16):
        super().__init__()
        self.n = n
        self.weight = nn.Parameter(torch.ones(n + 1))
        with torch.no_grad():
            self.weight[0] = 0

    def forward(self, x):
        w = self.weight.abs()
        w = w / w.sum()  # slopes of the n pieces, summing to 1
        csum = w.cumsum(0)
        y = self.n * x.clamp(0, 1)
        idx = y.detach().long().clamp(max=self.n - 1)
        frac = y - idx.to(y.dtype)
        return csum[idx] + frac * w[(idx + 1).clamp(max=self.n)]


class SigmoidFn(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(6.0))
        self.centre = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        return torch.sigmoid(self.scale * (x - self.centre))


class RampFn(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.shift = nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        return torch.clamp(self.scale * x + self.shift, 0.0, 1.0)


COUNTER_FUNCTIONS = {"zhang": PiecewiseLin, "sigmoid": SigmoidFn, "relu": RampFn}


class Counter(nn.Module):
    """boxes [B,N,4] (x1,y1,x2,y2), attention logits [B,N] -> count features [B, objects+1]."""

    def __init__(self, objects: int, act: str = "zhang"):
        super().__init__()
        self.objects = objects
        self.f = nn.ModuleList(COUNTER_FUNCTIONS[act]() for _ in range(8))

    def forward(self, boxes, attention):
        missing = self.objects - attention.shape[1]
        if missing > 0:  # fewer proposals than objects: pad with irrelevant empty boxes
            attention = torch.nn.functional.pad(attention, (0, missing), value=-1e4)
            boxes = torch.nn.functional.pad(boxes, (0, 0, 0, missing))
        attention, idx = attention.float().topk(self.objects, dim=1)  # most relevant proposals
        boxes = boxes.float().gather(1, idx.unsqueeze(-1).expand(-1, -1, 4))  # [B,n,4]
        attention = torch.sigmoid(attention)
        relevancy = attention[:, :, None] * attention[:, None, :]  # [B,n,n]
        distance = 1 - iou(boxes)
        # intra-object deduplication
        score = self.f[0](relevancy) * self.f[1](distance)
        # inter-object deduplication
        dedup_score = self.f[3](relevancy) * self.f[4](distance)
        dedup_per_entry, dedup_per_row = self.deduplicate(dedup_score, attention)
        score = score / dedup_per_entry
        correction = self.f[0](attention * attention) / dedup_per_row
        score = score.sum(2).sum(1, keepdim=True) + correction.sum(1, keepdim=True)
        score = (score + 1e-20).sqrt()
        one_hot = self.to_one_hot(score)  # [B,n+1]
        att_conf = (self.f[5](attention) - 0.5).abs()
        dist_conf = (self.f[6](distance) - 0.5).abs()
        conf = self.f[7](att_conf.mean(1, keepdim=True) + dist_conf.mean(2).mean(1, keepdim=True))
        return one_hot * conf

    def deduplicate(self, dedup_score, att):
        att_diff = (att[:, :, None] - att[:, None, :]).abs()  # [B,n,n]
        score_diff = (dedup_score[:, :, :, None] - dedup_score[:, :, None, :]).abs()  # [B,n,n,n]
        sim = self.f[2](1 - score_diff).prod(1) * self.f[2](1 - att_diff)  # [B,n,n]
        row_sims = sim.sum(2)  # [B,n]
        return row_sims[:, :, None] * row_sims[:, None, :], row_sims

    def to_one_hot(self, scores):
        # a count of 2.3 -> 0.7 on "2" and 0.3 on "3": linear interpolation keeps it differentiable
        scores = scores.clamp(0, self.objects)
        i = scores.detach().long()
        frac = scores - i.to(scores.dtype)
        left = torch.zeros(
            scores.shape[0], self.objects + 1, device=scores.device, dtype=scores.dtype
        ).scatter_(1, i.clamp(max=self.objects), 1.0)
        right = torch.zeros_like(left).scatter_(1, (i + 1).clamp(max=self.objects), 1.0)
        return (1 - frac) * left + frac * right


def iou(boxes):
    # boxes [B,n,4] -> [B,n,n]
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[:, :, 2:] - boxes[:, :, :2]).clamp(min=0).prod(-1)
    return inter / (area[:, :, None] + area[:, None, :] - inter + 1e-12)


# ---------------------------------------------------------------------------------------------


class BANBranch(nn.Module):
    """q [B,L,H] (question GRU states), v [B,Nv,H] (projected vision tokens) -> logits [B,A]."""

    def __init__(self, cfg, num_answers: int, word_dim: int):
        super().__init__()
        H, G = cfg.num_hid, cfg.gamma
        self.omega_q, self.omega_v = cfg.omega_q, cfg.omega_v
        # CFRF fusions: question <- entities (omega_q), visual <- statistics words (omega_v)
        self.entity_attn = CrossAttention(H)
        self.stat_proj = nn.Linear(word_dim, H)
        self.stat_attn = CrossAttention(H)
        self.aoa = AoAStack(cfg.AOA_layers, H, cfg.activation, cfg.dropout)
        self.v_att = BiAttention(H, H, H, G, cfg.dropout)
        self.b_net = nn.ModuleList(BCNet(H, H, H, 1, cfg.dropout) for _ in range(G))
        self.q_prj = nn.ModuleList(FCNet(H, H, cfg.dropout) for _ in range(G))
        self.counter = Counter(COUNTER_OBJECTS, cfg.counter_act) if cfg.use_counter else None
        if self.counter is not None:
            self.c_prj = nn.ModuleList(FCNet(COUNTER_OBJECTS + 1, H) for _ in range(G))
        self.classifier = Classifier(H, H, num_answers, cfg.activation, cfg.dropout)

    def forward(self, q, q_mask, v, v_mask, v_boxes, entities, entity_mask, stat_emb, stat_mask):
        q = q + self.omega_q * self.entity_attn(q, entities, entity_mask)
        if stat_emb is not None:  # None: no statistics words in the batch (nothing to fuse)
            v = v + self.omega_v * self.stat_attn(v, self.stat_proj(stat_emb), stat_mask)
        q, v = self.aoa(q, q_mask, v, v_mask)
        att, logits = self.v_att(v, v_mask, q, q_mask)  # [B,G,Nv,L]
        for g in range(att.shape[1]):
            joint = self.b_net[g].pooled(v, q, att[:, g])  # [B,H]
            q = q + self.q_prj[g](joint).unsqueeze(1)  # residual glimpse update
            if self.counter is not None:
                box_att = logits[:, g].masked_fill(~q_mask[:, None, :], -1e4).amax(2)  # [B,Nv]
                box_att = box_att.masked_fill(~v_mask, -1e4)
                q = q + self.c_prj[g](self.counter(v_boxes, box_att).to(q.dtype)).unsqueeze(1)
        pooled = (q * q_mask.unsqueeze(-1).to(q.dtype)).sum(1)  # [B,H]
        return self.classifier(pooled)
