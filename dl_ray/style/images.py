"""Content and style images: ``skimage:NAME`` (one of scikit-image's bundled images, no download) or a file path.

Every image becomes RGB in [0, 1] (grey is repeated over three channels, an alpha channel dropped), a float
tensor (3, H, W). The content image is scaled so its longer side is ``size``; the style image is scaled to cover
the content's height and width and cropped at its centre, since the course's style cost compares Gram matrices
of images of one size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dl_ray.errors import SpecError

PREFIX = "skimage:"
# scikit-image's images that ship inside the package (the others are downloaded on first use), 2-D or RGB(A)
BUNDLED = ("astronaut", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock", "coffee", "coins",
           "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
           "microaneurysms", "moon", "page", "retina", "rocket", "text")


def check_source(field: str, source: str) -> str:
    """A source that names an image that exists (a bundled name, or a file); the image is read later."""
    if source.startswith(PREFIX):
        name = source.removeprefix(PREFIX)
        if name not in BUNDLED:
            raise SpecError(f"{field}: unknown scikit-image image {name!r}; allowed: "
                            f"{', '.join(PREFIX + n for n in BUNDLED)}, or an image file path")
    elif not Path(source).is_file():
        raise SpecError(f"{field}: no such image file: {source}; allowed: an image file path (PNG, JPEG, ...) "
                        f"or skimage:NAME (e.g. skimage:astronaut)")
    return source


def read_image(field: str, source: str) -> torch.Tensor:
    """The image as a (3, H, W) float tensor in [0, 1]; a file that is not an image is one SpecError line."""
    check_source(field, source)
    if source.startswith(PREFIX):
        import skimage.data

        pixels = np.asarray(getattr(skimage.data, source.removeprefix(PREFIX))())
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(source) as img:
                pixels = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise SpecError(f"{field}: {source} is not an image PIL can read ({type(e).__name__}); allowed: an image "
                            "file path (PNG, JPEG, ...) or skimage:NAME") from None
    return _rgb01(pixels)


def _rgb01(pixels: np.ndarray) -> torch.Tensor:
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    scale = 255.0 if pixels.dtype == np.uint8 else max(float(pixels.max()), 1.0)
    x = torch.from_numpy(np.ascontiguousarray(pixels)).float() / scale
    if x.dim() == 2:
        x = x[..., None].expand(-1, -1, 3)
    return x[..., :3].permute(2, 0, 1).contiguous().clamp(0, 1)


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(3, H, W) -> (3, height, width), antialiased bilinear."""
    out = F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return out[0].clamp(0, 1)


def content_and_style(content: str, style: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images at the content's size (its longer side ``size``): the style one scaled to cover it, centre-cropped."""
    c, s = read_image("content", content), read_image("style", style)
    h, w = c.shape[1:]
    scale = size / max(h, w)
    height, width = max(1, round(h * scale)), max(1, round(w * scale))
    cover = max(height / s.shape[1], width / s.shape[2])
    sh, sw = max(height, round(s.shape[1] * cover)), max(width, round(s.shape[2] * cover))
    s = resize(s, sh, sw)
    top, left = (sh - height) // 2, (sw - width) // 2
    return resize(c, height, width), s[:, top: top + height, left: left + width].contiguous()
