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


def image_grid(images: torch.Tensor, path: Path, nrow: int = 10, title: str = "", labels: list[str] | None = None,
               pad: int = 2, size: float | None = None, axes: tuple[str, str, list[tuple[int, str]]] | None = None) -> Path:
    """Save ``images`` (N, C, H, W) in [0, 1] as one PNG of ``nrow`` columns: one canvas, one imshow (fast).

    ``labels``: a caption above each image; ``axes``: (x label, y label, [(cell index, tick label)]) for a grid
    of latent values (row 0 at the top); ``size``: the figure's width in inches."""
    plt = pyplot()
    images = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = images.shape
    rows, gap = -(-n // nrow), pad + (10 if labels else 0)  # room for a caption above each row
    canvas = torch.full((rows * (h + gap) + pad, nrow * (w + pad) + pad, c), 0.5)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        top, left = gap + r * (h + gap), pad + col * (w + pad)
        canvas[top: top + h, left: left + w] = img.permute(1, 2, 0)
    width = size or nrow * (0.9 if labels else 0.6)
    fig, ax = plt.subplots(figsize=(width, width * canvas.shape[0] / canvas.shape[1] + 0.4))
    ax.imshow(canvas[..., 0].numpy() if c == 1 else canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for i, text in enumerate(labels or []):
        r, col = divmod(i, nrow)
        ax.text(pad + col * (w + pad) + w / 2, gap + r * (h + gap) - 2, text, ha="center", va="bottom", fontsize=6)
    if axes:
        xlabel, ylabel, ticks = axes
        ax.set_xticks([pad + i * (w + pad) + w / 2 for i, _ in ticks], [t for _, t in ticks])
        ax.set_yticks([gap + (rows - 1 - i) * (h + gap) + h / 2 for i, _ in ticks], [t for _, t in ticks])
        ax.set(xlabel=xlabel, ylabel=ylabel)
    else:
        ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
