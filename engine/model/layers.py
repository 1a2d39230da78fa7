"""Small building blocks shared by the branches: activations, the classifier, masked attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "swish": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def heads_for(width: int, preferred: int = 8) -> int:
    """The largest head count <= preferred that divides width."""
    for h in range(min(preferred, width), 0, -1):
        if width % h == 0:
            return h
    return 1


def ensure_one(mask: torch.Tensor) -> torch.Tensor:
    """A key mask with no all-False row (an empty row would make softmax NaN): such rows keep
    their first position, whose value is then zeroed by the caller's mask where it matters."""
    empty = ~mask.any(-1, keepdim=True)
    first = torch.zeros_like(mask)
    first[..., 0] = True
    return mask | (empty & first)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x [B,N,D], mask [B,N] -> [B,D] (zeros where nothing is unmasked)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class Classifier(nn.Module):
    """in -> 2*hid -> answers, with the configured activation and dropout (ban-vqa's SimpleClassifier)."""

    def __init__(self, in_dim: int, hid: int, out_dim: int, act: str, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, 2 * hid),
            activation(act),
            nn.Dropout(dropout),
            nn.Linear(2 * hid, out_dim),
        )

    def forward(self, x):
        return self.net(x)


class CrossAttention(nn.Module):
    """Multi-head attention of x [B,Lx,D] over ctx [B,Lc,D] with a key mask [B,Lc] (True = real).
    Rows whose context is entirely padding get zeros. `attend` skips the output projection (AoA
    gates the raw attended vectors instead); only modules that call forward own one."""

    def __init__(
        self, dim: int, heads: int | None = None, dropout: float = 0.0, project_out: bool = True
    ):
        super().__init__()
        self.heads = heads or heads_for(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim) if project_out else None
        self.dropout = dropout

    def attend(self, x, ctx, ctx_mask):
        B, Lx, D = x.shape
        h = self.heads
        q = self.q(x).view(B, Lx, h, D // h).transpose(1, 2)  # [B,h,Lx,d]
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, h, D // h).permute(2, 0, 3, 1, 4)  # [B,h,Lc,d]
        attn_mask = ensure_one(ctx_mask)[:, None, None, :]  # [B,1,1,Lc]
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return o.transpose(1, 2).reshape(B, Lx, D)  # [B,Lx,D]

    def forward(self, x, ctx, ctx_mask):
        has_ctx = ctx_mask.any(-1).to(x.dtype)[:, None, None]  # [B,1,1]
        return self.out(self.attend(x, ctx, ctx_mask)) * has_ctx
