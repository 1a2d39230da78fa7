"""Attention on Attention (Huang et al. 2019) blocks of width num_hid, with padding masks."""

from __future__ import annotations

import torch
from torch import nn

from .layers import CrossAttention, activation


class AoA(nn.Module):
    """AoA(x, ctx): attend, then gate the attended vector by an "information" and a "gate" vector
    computed from [attended, query]: i * sigmoid(g) (a GLU over a 2D -> 2D projection)."""

    def __init__(self, dim: int, dropout: float, cross: bool = False):
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(dim) if cross else None
        self.attn = CrossAttention(dim, project_out=False)
        self.aoa = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.GLU(dim=-1))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, x_mask, ctx=None, ctx_mask=None):
        # x [B,Lx,D], ctx [B,Lc,D] (self-attention when ctx is None)
        xn = self.norm_x(x)
        if ctx is None:
            ctx_n, ctx_mask = xn, x_mask
        else:
            ctx_n = self.norm_ctx(ctx)
        att = self.attn.attend(xn, ctx_n, ctx_mask)  # [B,Lx,D]
        out = self.aoa(torch.cat([att, xn], dim=-1))  # [B,Lx,D]
        return self.dropout(out) * x_mask.unsqueeze(-1).to(out.dtype)


class FeedForward(nn.Module):
    def __init__(self, dim: int, act: str, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, 2 * dim),
            activation(act),
            nn.Dropout(dropout),
            nn.Linear(2 * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class AoABlock(nn.Module):
    """q = AoA(q)+q, v = AoA(v)+v, v = AoA(v, context=q)+v, then a feed-forward on each."""

    def __init__(self, dim: int, act: str, dropout: float):
        super().__init__()
        self.q_self = AoA(dim, dropout)
        self.v_self = AoA(dim, dropout)
        self.v_guided = AoA(dim, dropout, cross=True)
        self.q_ff = FeedForward(dim, act, dropout)
        self.v_ff = FeedForward(dim, act, dropout)

    def forward(self, q, q_mask, v, v_mask):
        q = q + self.q_self(q, q_mask)
        v = v + self.v_self(v, v_mask)
        v = v + self.v_guided(v, v_mask, q, q_mask)
        return q + self.q_ff(q), v + self.v_ff(v)


class AoAStack(nn.Module):
    def __init__(self, layers: int, dim: int, act: str, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(AoABlock(dim, act, dropout) for _ in range(layers))

    def forward(self, q, q_mask, v, v_mask):
        for block in self.blocks:
            q, v = block(q, q_mask, v, v_mask)
        return q, v
