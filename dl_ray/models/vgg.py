"""VGG (Simonyan & Zisserman 2014): stacks of 3x3 "same" convolutions, each stage halved by 2x2 max pooling.

Depths 11/13/16/19 (configurations A, B, D, E of the paper) count the weight layers: convolutions plus the three
dense layers. ``size: imagenet`` is torchvision's (VGG-16: 138,357,544 parameters; ``batch_norm: true`` is its
``vgg16_bn``), with its parameter names (``features.0.weight`` ... ``classifier.6.bias``) for its published
weights. ``size: small`` scales the channels by ``width / 64`` and skips a stage's pooling once the map is
down to one pixel, so 28x28 digits go 28 -> 14 -> 7 -> 3 -> 1.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dl_ray.models.base import ModelIO
from dl_ray.models.conv_blocks import ConvClassifier, ConvNetConfig, Op, conv, out_size, pool, scaled
from dl_ray.registry import register_model

STAGES = (64, 128, 256, 512, 512)
CONVS_PER_STAGE = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
HIDDEN = 4096


class VGGConfig(ConvNetConfig):
    depth: Literal[11, 13, 16, 19] = 16
    """Weight layers: 11, 13, 16 or 19 (the paper's configurations A, B, D, E)."""
    batch_norm: bool = False
    """Batch normalisation after every convolution (not in the paper; torchvision's vgg*_bn)."""


def vgg_features(cfg: VGGConfig, c_in: int, side: int) -> tuple[nn.Sequential, int]:
    """The convolution stages (torchvision's ``features``, same indices) and their output channels.

    Shared with the style-transfer features (dl_ray/models/style_features.py), which take VGG-19's."""
    big, layers = cfg.size == "imagenet", []
    for stage, repeats in zip(STAGES, CONVS_PER_STAGE[cfg.depth]):
        c_out = stage if big else scaled(stage, cfg.width)
        for _ in range(repeats):
            norm = [nn.BatchNorm2d(c_out)] if cfg.batch_norm else []
            layers += [conv(c_in, c_out, 3, bias=True), *norm, nn.ReLU(inplace=True)]
            c_in = c_out
        # A skipped pooling stays as an Identity so later layers keep torchvision's indices.
        layers.append(pool("max", 2) if big or side > 1 else nn.Identity())
        side = out_size(side, 2, 2) if big or side > 1 else side
    return nn.Sequential(*layers), c_in


class VGG(ConvClassifier):
    def __init__(self, cfg: VGGConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__(cfg, io)
        big = cfg.size == "imagenet"
        self.features, c_in = vgg_features(cfg, io.input_shape[0], min(io.input_shape[1:]))
        pooled, hidden = (7, HIDDEN) if big else (1, scaled(HIDDEN, cfg.width))
        self.avgpool = nn.AdaptiveAvgPool2d(pooled)
        self.classifier = nn.Sequential(
            nn.Linear(c_in * pooled * pooled, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, io.num_outputs),
        )
        self.finish(cfg)

    @classmethod
    def downsampling(cls, cfg: VGGConfig) -> list[Op]:
        return [Op(2, 2)] * 5 if cfg.size == "imagenet" else []

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model("vgg", VGGConfig, accepts=lambda io: VGG.refuses(VGGConfig(name="vgg"), io))
def vgg(cfg: VGGConfig, io: ModelIO, dropout: float = 0.0) -> VGG:
    """VGG-11/13/16/19: 3x3 convolutions in 5 stages; size imagenet (torchvision's, >= 32x32) or small."""
    return VGG(cfg, io, dropout)
