"""The one matplotlib setup (headless, no display needed) and the image grid every generative family draws."""
from __future__ import annotations

from pathlib import Path

import torch


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: runs and workers have no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_grid(images: torch.Tensor, path: Path, nrow: int = 10, title: str = "", labels: list[str] | None = None) -> Path:
    """Save ``images`` (N, C, H, W) with values in [0, 1] as one PNG grid of ``nrow`` columns, optional per-image labels."""
    plt = pyplot()
    images = images.detach().float().cpu().clamp(0, 1)
    n, rows = len(images), -(-len(images) // nrow)
    fig, axes = plt.subplots(rows, nrow, figsize=(nrow * 0.9, rows * (1.05 if labels else 0.9)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = images[i].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            if labels:
                ax.set_title(labels[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
