"""ResNet (He et al. 2016): residual blocks a[l+2] = g(z[l+2] + a[l]), so a block only learns a correction to
its input and very deep networks still train (the identity path carries the gradient back unchanged).

Basic blocks (two 3x3 convolutions) make ResNet-18/34; bottleneck blocks (1x1 reduce, 3x3, 1x1 expand x4) make
ResNet-50/101/152. Where a block changes the shape (stride 2 or more channels) the shortcut is a projection,
a strided 1x1 convolution with batch norm (the paper's option B). ``size: imagenet`` is torchvision's (ResNet-18:
11,689,512 parameters, ResNet-50: 25,557,032; the stride of a bottleneck sits on its 3x3 convolution, "v1.5"),
with its parameter names (``conv1.weight``, ``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``,
``fc.weight`` ...) for its published weights. ``size: small`` starts with one 3x3 convolution at stride 1 and no
max pooling (as the paper's CIFAR networks) and has ``width``, 2x, 4x, 8x channels in its four stages.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dl_ray.models.base import ModelIO
from dl_ray.models.conv_blocks import ConvClassifier, ConvNetConfig, Op, conv, conv1x1, pool
from dl_ray.registry import register_model

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class ResNetConfig(ConvNetConfig):
    depth: Literal[18, 34, 50, 101, 152] = 18
    """Weight layers: 18 or 34 (basic blocks), 50, 101 or 152 (bottleneck blocks)."""
    residual: bool = True
    """false: the plain network of He et al. 2016 (Fig. 1), the same blocks without shortcuts: a[l+2] = g(z[l+2])."""


def shortcut(c_in: int, c_out: int, stride: int) -> nn.Module | None:
    """None (the identity) when the shape is kept, else the projection W_s a[l] that matches it."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(conv1x1(c_in, c_out, stride, bias=False), nn.BatchNorm2d(c_out))


class Residual(nn.Module):
    """What both blocks share: out = relu(z + a), a being the input or its projection."""

    def add_input(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:  # the plain block: no shortcut, nothing added
            return self.relu(z)
        return self.relu(z + (x if self.downsample is None else self.downsample(x)))


class BasicBlock(Residual):
    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.conv1 = conv(c_in, width, 3, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(width, width, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = shortcut(c_in, width, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.add_input(z, x)


class Bottleneck(Residual):
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.conv1 = conv1x1(c_in, width, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv(width, width, 3, stride, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, width * 4, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(c_in, width * 4, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.relu(self.bn1(self.conv1(x)))
        z = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(z)))))
        return self.add_input(z, x)


class ResNet(ConvClassifier):
    def __init__(self, cfg: ResNetConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__(cfg, io)
        big = cfg.size == "imagenet"
        base = 64 if big else cfg.width
        block = BasicBlock if cfg.depth < 50 else Bottleneck
        self.conv1 = conv(io.input_shape[0], base, 7 if big else 3, 2 if big else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = pool("max", 3, 2, padding=1) if big else nn.Identity()
        c_in = base
        for i, repeats in enumerate(BLOCKS[cfg.depth]):
            width = base * 2**i
            blocks = [block(c_in if j == 0 else width * block.expansion, width, 2 if i and j == 0 else 1, cfg.residual)
                      for j in range(repeats)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            c_in = width * block.expansion
        self.add_pooled_head(c_in, io.num_outputs, dropout)
        self.finish(cfg)

    @classmethod
    def downsampling(cls, cfg: ResNetConfig) -> list[Op]:
        stem = [Op(7, 2, 3), Op(3, 2, 1)] if cfg.size == "imagenet" else []
        return stem + [Op(3, 2, 1)] * 3

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pooled_head(x)


@register_model("resnet", ResNetConfig, accepts=lambda io: ResNet.refuses(ResNetConfig(name="resnet"), io))
def resnet(cfg: ResNetConfig, io: ModelIO, dropout: float = 0.0) -> ResNet:
    """ResNet-18/34/50/101/152: residual blocks with projection shortcuts; size imagenet (torchvision's) or small."""
    return ResNet(cfg, io, dropout)
