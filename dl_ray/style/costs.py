"""The course's costs of neural style transfer, for activations of one image at a layer, ``a`` of shape (nC, nH, nW)
(a leading batch dimension of 1 is accepted).

* content: J_content(C, G) = 1 / (4 nH nW nC) * sum (a(C) - a(G))^2
* Gram matrix: G = A A^T with A the activations unrolled to (nC, nH nW): G[k, k'] correlates channels k and k'
* style at a layer: J_style^[l](S, G) = 1 / (2 nH nW nC)^2 * sum_k sum_k' (G(S)[k, k'] - G(G)[k, k'])^2
* style: J_style(S, G) = sum_l lambda_l J_style^[l](S, G)
* total: J(G) = alpha J_content(C, G) + beta J_style(S, G)
"""
from __future__ import annotations

import torch


def _chw(a: torch.Tensor) -> torch.Tensor:
    if a.dim() == 4:
        if a.shape[0] != 1:
            raise ValueError(f"activations of one image expected, got a batch of {a.shape[0]}")
        a = a[0]
    if a.dim() != 3:
        raise ValueError(f"activations (nC, nH, nW) expected, got shape {tuple(a.shape)}")
    return a


def content_cost(a_c: torch.Tensor, a_g: torch.Tensor) -> torch.Tensor:
    """1 / (4 nH nW nC) * sum (a(C) - a(G))^2."""
    a_c, a_g = _chw(a_c), _chw(a_g)
    n_c, n_h, n_w = a_g.shape
    return ((a_c - a_g) ** 2).sum() / (4 * n_h * n_w * n_c)


def gram_matrix(a: torch.Tensor) -> torch.Tensor:
    """G = A A^T, A the (nC, nH nW) unrolled activations: (nC, nC), symmetric, positive semi-definite."""
    a = _chw(a)
    unrolled = a.reshape(a.shape[0], -1)
    return unrolled @ unrolled.T


def layer_style_cost(a_s: torch.Tensor, a_g: torch.Tensor, gram_s: torch.Tensor | None = None) -> torch.Tensor:
    """1 / (2 nH nW nC)^2 * sum (G(S) - G(G))^2 at one layer; ``gram_s``: G(S) computed once beforehand."""
    a_g = _chw(a_g)
    n_c, n_h, n_w = a_g.shape
    gram_s = gram_matrix(a_s) if gram_s is None else gram_s
    return ((gram_s - gram_matrix(a_g)) ** 2).sum() / (2 * n_h * n_w * n_c) ** 2


def style_cost(grams_s: dict[str, torch.Tensor], acts_g: dict[str, torch.Tensor],
               weights: dict[str, float]) -> torch.Tensor:
    """sum_l lambda_l J_style^[l]: ``grams_s`` G(S) per layer, ``acts_g`` the generated image's activations."""
    return sum(lam * layer_style_cost(None, acts_g[layer], grams_s[layer]) for layer, lam in weights.items())


def total_cost(j_content: torch.Tensor, j_style: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """J(G) = alpha J_content(C, G) + beta J_style(S, G)."""
    return alpha * j_content + beta * j_style
