"""Data augmentation for image batches: small random shifts and rotations, done on the whole batch."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def shift_rotate(x: torch.Tensor, max_shift: int, max_rotation: float, generator: torch.Generator | None = None):
    """Randomly translate by up to ``max_shift`` pixels and rotate by up to ``max_rotation`` degrees.

    ``x`` is (N, C, H, W); empty pixels are filled with the image's minimum (the background).
    """
    n, _, h, w = x.shape
    u = torch.rand(n, 3, generator=generator).to(x.device) * 2 - 1
    angle = u[:, 0] * math.radians(max_rotation)
    cos, sin = torch.cos(angle), torch.sin(angle)
    tx, ty = u[:, 1] * (2 * max_shift / w), u[:, 2] * (2 * max_shift / h)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    return warp(x, F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False))


def warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``x`` sampled at ``grid``; pixels from outside take each image's minimum (its background), not 0."""
    background = x.amin(dim=(1, 2, 3), keepdim=True)
    return F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background
