"""Differentiable top-k node samplers for the ISubGVQA subgraph: I-MLE and Gumbel top-k.

Both take node scores theta [B, N] and a node mask [B, N] (bool, True = real node) and return
z [B, N]: how much each node is kept (k-hot, or its relaxation), averaged over `nb_samples` draws.
In eval mode both are the exact top-k of theta (no noise).
"""

from __future__ import annotations

import torch

NEG = -1e9  # score of padding nodes: never selected


def topk_khot(scores: torch.Tensor, k: int) -> torch.Tensor:
    """[..., N] -> k-hot of the k largest entries along the last axis."""
    k = min(k, scores.shape[-1])
    idx = scores.topk(k, dim=-1).indices
    return torch.zeros_like(scores).scatter_(-1, idx, 1.0)


def gumbel_noise(shape, *, device, dtype, generator=None) -> torch.Tensor:
    u = torch.rand(shape, device=device, dtype=dtype, generator=generator)
    return -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))


class _IMLETopK(torch.autograd.Function):
    """Forward: mean over samples of top-k(theta + noise_s).
    Backward (Niepert et al. 2021, perturb-and-MAP): with the target theta' = alpha*theta - beta*dL/dz,
    dL/dtheta = mean_s [top-k(theta + noise_s) - top-k(theta' + noise_s)] / beta.
    The 1/beta makes it a finite difference of step beta (as torch-imle): without it each flipped
    node gets a gradient of 1 whatever the loss scale, which swamps every other gradient that
    flows back into the node features (and the backbone under them)."""

    @staticmethod
    def forward(ctx, theta, noise, k, alpha, beta):
        # theta [B,N], noise [S,B,N]
        samples = topk_khot(theta.unsqueeze(0) + noise, k)  # [S,B,N]
        ctx.save_for_backward(theta, noise, samples)
        ctx.k, ctx.alpha, ctx.beta = k, alpha, beta
        return samples.mean(0)

    @staticmethod
    def backward(ctx, grad_z):
        theta, noise, samples = ctx.saved_tensors
        if ctx.beta == 0:  # no step towards the downstream gradient: nothing to learn from
            return torch.zeros_like(theta), None, None, None, None
        target = ctx.alpha * theta - ctx.beta * grad_z  # [B,N]
        target_samples = topk_khot(target.unsqueeze(0) + noise, ctx.k)  # [S,B,N]
        return (samples - target_samples).mean(0) / ctx.beta, None, None, None, None


def imle_topk(
    theta: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    *,
    tau: float,
    nb_samples: int,
    alpha: float,
    beta: float,
    training: bool,
    noise: torch.Tensor | None = None,
):
    """I-MLE top-k: exact k-hot samples of theta + tau * Gumbel noise; gradient as in _IMLETopK."""
    theta = theta.float().masked_fill(~mask, NEG)
    if not training:
        return topk_khot(theta, k) * mask
    if noise is None:
        noise = tau * gumbel_noise(
            (nb_samples,) + tuple(theta.shape), device=theta.device, dtype=theta.dtype
        )
    return _IMLETopK.apply(theta, noise, k, alpha, beta) * mask


def gumbel_topk(
    theta: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    *,
    tau: float,
    nb_samples: int,
    training: bool,
    noise: torch.Tensor | None = None,
):
    """Relaxed Gumbel top-k (Xie & Ermon 2019): k successive softmaxes at temperature tau, each
    down-weighting what was already chosen. As tau -> 0 the relaxation tends to the exact k-hot."""
    theta = theta.float().masked_fill(~mask, NEG)
    if not training:
        return topk_khot(theta, k) * mask
    if noise is None:
        noise = gumbel_noise(
            (nb_samples,) + tuple(theta.shape), device=theta.device, dtype=theta.dtype
        )
    logits = theta.unsqueeze(0) + noise  # [S,B,N]
    khot = torch.zeros_like(logits)
    onehot = torch.zeros_like(logits)
    for _ in range(min(k, theta.shape[-1])):
        logits = logits + torch.log((1.0 - onehot).clamp_min(1e-20))
        onehot = torch.softmax(logits / tau, dim=-1)
        khot = khot + onehot
    return khot.mean(0) * mask


def sample_nodes(kind: str, theta, mask, k, *, tau, nb_samples, alpha, beta, training):
    if kind == "imle":
        return imle_topk(
            theta,
            mask,
            k,
            tau=tau,
            nb_samples=nb_samples,
            alpha=alpha,
            beta=beta,
            training=training,
        )
    if kind == "gumbel":
        return gumbel_topk(theta, mask, k, tau=tau, nb_samples=nb_samples, training=training)
    raise ValueError(f"unknown sampler_type {kind!r}")
