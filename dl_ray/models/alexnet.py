"""AlexNet (Krizhevsky et al. 2012): five convolutions, overlapping max pooling, three fully connected layers.

``size: imagenet`` is torchvision's single-tower AlexNet (61,100,840 parameters for 3x224x224 and 1,000 classes;
no local response normalisation, as there): its parameter names are torchvision's (``features.0.weight`` ...
``classifier.6.bias``), so its published weights load through ``weights:``. ``size: small`` keeps the layout
(conv-pool-conv-pool-conv-conv-conv-pool, three dense layers) with 3x3/5x5 kernels at stride 1 for small images.
Most parameters sit in the dense layers (the course's point), 58.6 of the 61.1 million at ImageNet size.
"""
from __future__ import annotations

import torch
from torch import nn

from dl_ray.models.base import ModelIO
from dl_ray.models.conv_blocks import ConvClassifier, ConvNetConfig, Op, conv, pool, scaled
from dl_ray.registry import register_model

CHANNELS = (64, 192, 384, 256, 256)
HIDDEN = 4096


class AlexNetConfig(ConvNetConfig):
    pass


class AlexNet(ConvClassifier):
    def __init__(self, cfg: AlexNetConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__(cfg, io)
        big = cfg.size == "imagenet"
        c1, c2, c3, c4, c5 = CHANNELS if big else (scaled(c, cfg.width) for c in CHANNELS)
        hidden, side = (HIDDEN, 6) if big else (scaled(HIDDEN, cfg.width), 3)
        first = conv(io.input_shape[0], c1, 11, stride=4, padding=2) if big else conv(io.input_shape[0], c1, 5)
        self.features = nn.Sequential(
            first, nn.ReLU(inplace=True), self._pool(big),
            conv(c1, c2, 5), nn.ReLU(inplace=True), self._pool(big),
            conv(c2, c3, 3), nn.ReLU(inplace=True),
            conv(c3, c4, 3), nn.ReLU(inplace=True),
            conv(c4, c5, 3), nn.ReLU(inplace=True), self._pool(big),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(side)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(c5 * side * side, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, io.num_outputs),
        )
        self.finish(cfg)

    @staticmethod
    def _pool(big: bool) -> nn.Module:
        # Overlapping 3x3 windows at stride 2, as the paper; small images pad them so 28 -> 14 -> 7 -> 4.
        return pool("max", 3, 2) if big else pool("max", 3, 2, padding=1)

    @classmethod
    def downsampling(cls, cfg: AlexNetConfig) -> list[Op]:
        if cfg.size == "imagenet":
            return [Op(11, 4, 2), Op(3, 2), Op(3, 2), Op(3, 2)]
        return [Op(3, 2, 1)] * 3

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model("alexnet", AlexNetConfig, accepts=lambda io: AlexNet.refuses(AlexNetConfig(name="alexnet"), io))
def alexnet(cfg: AlexNetConfig, io: ModelIO, dropout: float = 0.0) -> AlexNet:
    """AlexNet: 5 convolutions, 3 dense layers; size imagenet (torchvision's, >= 63x63) or small."""
    return AlexNet(cfg, io, dropout)
