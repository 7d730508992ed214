"""Inception v1 (Szegedy et al. 2014): GoogLeNet, nine Inception modules.

A module runs 1x1, 3x3 and 5x5 convolutions and a 3x3 max pooling side by side and stacks their maps; 1x1
convolutions first cut the channels the 3x3 and 5x5 convolutions see (and follow the pooling), which is what
keeps the module affordable: see :func:`module_cost`.

Two variants of the module, both without the auxiliary classifiers (torchvision's published weights drop them too;
their ``aux1.*``/``aux2.*`` entries in a weights file are ignored):

* ``variant: paper`` (default): the paper's module, a 5x5 convolution in the 5x5 branch, convolutions with biases
  and no batch norm (``batch_norm: true`` adds it). The ImageNet network has 6,998,552 parameters.
* ``variant: torchvision``: torchvision's ``googlenet``, kept for its published weights: batch norm after every
  convolution (eps 0.001, no biases) and a 3x3 convolution in the "5x5" branch (pytorch/vision#906). 6,624,904
  parameters at ImageNet size; parameter names such as ``inception3a.branch1.conv.weight``,
  ``inception3a.branch3.1.bn.running_mean``, ``fc.weight``.

Neither has the paper's local response normalisation (no parameters; torchvision omits it as well).
``size: small`` starts with a 3x3 convolution at stride 1 and no first max pooling, and scales every channel count
by ``width / 64``: 28x28 digits reach the modules at 14x14, 7x7 and 4x4.
"""
from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import nn

from dl_ray.models.base import ModelIO
from dl_ray.models.conv_blocks import ConvClassifier, ConvNetConfig, Op, conv, conv1x1, pool, scaled
from dl_ray.registry import register_model


class ModuleSpec(NamedTuple):
    """Output channels of each branch, and the 1x1 reductions before the 3x3 and 5x5 convolutions."""

    c1x1: int
    reduce3: int
    c3x3: int
    reduce5: int
    c5x5: int
    pool_proj: int

    def scaled(self, width: int) -> "ModuleSpec":
        return ModuleSpec(*(scaled(c, width) for c in self))

    @property
    def out_channels(self) -> int:
        return self.c1x1 + self.c3x3 + self.c5x5 + self.pool_proj


# The paper's Table 1 (names as torchvision's attributes); "pool" marks a 3x3/2 max pooling between stages.
LAYOUT: tuple[tuple[str, ModuleSpec], ...] = (
    ("inception3a", ModuleSpec(64, 96, 128, 16, 32, 32)),
    ("inception3b", ModuleSpec(128, 128, 192, 32, 96, 64)),
    ("inception4a", ModuleSpec(192, 96, 208, 16, 48, 64)),
    ("inception4b", ModuleSpec(160, 112, 224, 24, 64, 64)),
    ("inception4c", ModuleSpec(128, 128, 256, 24, 64, 64)),
    ("inception4d", ModuleSpec(112, 144, 288, 32, 64, 64)),
    ("inception4e", ModuleSpec(256, 160, 320, 32, 128, 128)),
    ("inception5a", ModuleSpec(256, 160, 320, 32, 128, 128)),
    ("inception5b", ModuleSpec(384, 192, 384, 48, 128, 128)),
)
POOL_AFTER = {"inception3b": "maxpool3", "inception4e": "maxpool4"}
Variant = Literal["paper", "torchvision"]


class InceptionConfig(ConvNetConfig):
    variant: Variant = "paper"
    """paper: 5x5 convolutions, biases, no batch norm; torchvision: batch norm and a 3x3 convolution in the
    "5x5" branch, as torchvision's googlenet (to load its weights)."""
    batch_norm: bool = False
    """variant paper only: batch normalisation after every convolution (not in the paper)."""
    reduce: bool = True
    """false: the naive modules, without the 1x1 reductions before the 3x3 and 5x5 convolutions and after the
    pooling (many times the parameters and multiply-adds; see module_cost)."""


class ConvUnit(nn.Module):
    """Convolution, optional batch norm, ReLU (torchvision's ``BasicConv2d`` names: ``conv``, ``bn``)."""

    def __init__(self, c_in: int, c_out: int, f: int, stride: int = 1, batch_norm: bool = False):
        super().__init__()
        self.conv = conv(c_in, c_out, f, stride, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001) if batch_norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class InceptionModule(nn.Module):
    """Four branches concatenated along channels: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1.

    ``reduce=False`` drops the 1x1 reductions (3x3 and 5x5 straight on the input, the pooled input passed on
    unprojected): the naive module the course starts from."""

    def __init__(self, c_in: int, spec: ModuleSpec, variant: Variant = "paper", batch_norm: bool = False,
                 reduce: bool = True):
        super().__init__()
        bn = batch_norm or variant == "torchvision"
        f5 = 5 if variant == "paper" else 3
        self.branch1 = ConvUnit(c_in, spec.c1x1, 1, batch_norm=bn)
        self.branch2 = self._reduced(c_in, spec.reduce3, spec.c3x3, 3, bn, reduce)
        self.branch3 = self._reduced(c_in, spec.reduce5, spec.c5x5, f5, bn, reduce)
        project = [ConvUnit(c_in, spec.pool_proj, 1, batch_norm=bn)] if reduce else []
        self.branch4 = nn.Sequential(pool("max", 3, 1, padding=1, ceil=True), *project)
        self.out_channels = spec.out_channels if reduce else spec.c1x1 + spec.c3x3 + spec.c5x5 + c_in

    @staticmethod
    def _reduced(c_in: int, c_mid: int, c_out: int, f: int, bn: bool, reduce: bool) -> nn.Sequential:
        if not reduce:
            return nn.Sequential(ConvUnit(c_in, c_out, f, batch_norm=bn))
        return nn.Sequential(ConvUnit(c_in, c_mid, 1, batch_norm=bn), ConvUnit(c_mid, c_out, f, batch_norm=bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def module_cost(module: nn.Module, c_in: int, side: int) -> tuple[int, int]:
    """(parameters, multiply-adds) of a module on a c_in x side x side input, as ``dl-ray describe`` counts them:
    every convolution's output pixels x its kernel volume (pooling and batch norm cost none)."""
    from dl_ray.layer_summary import summarize  # the one counter of multiply-adds

    summary = summarize(module, (torch.zeros(1, c_in, side, side),))
    return summary.params, summary.macs


class GoogLeNet(ConvClassifier):
    ignored_keys = ("aux1.", "aux2.")

    def __init__(self, cfg: InceptionConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__(cfg, io)
        big = cfg.size == "imagenet"
        bn = cfg.batch_norm or cfg.variant == "torchvision"
        ch = (lambda c: c) if big else (lambda c: scaled(c, cfg.width))
        self.conv1 = ConvUnit(io.input_shape[0], ch(64), 7 if big else 3, 2 if big else 1, batch_norm=bn)
        self.maxpool1 = pool("max", 3, 2, ceil=True) if big else nn.Identity()
        self.conv2 = ConvUnit(ch(64), ch(64), 1, batch_norm=bn)
        self.conv3 = ConvUnit(ch(64), ch(192), 3, batch_norm=bn)
        self.maxpool2 = pool("max", 3, 2, ceil=True)
        c_in = ch(192)
        for name, spec in LAYOUT:
            module = InceptionModule(c_in, spec if big else spec.scaled(cfg.width), cfg.variant, cfg.batch_norm, cfg.reduce)
            setattr(self, name, module)
            c_in = module.out_channels
            if name in POOL_AFTER:
                setattr(self, POOL_AFTER[name], pool("max", 3 if name == "inception3b" else 2, 2, ceil=True))
        self.add_pooled_head(c_in, io.num_outputs, dropout)
        self.finish(cfg)

    @classmethod
    def downsampling(cls, cfg: InceptionConfig) -> list[Op]:
        stem = [Op(7, 2, 3), Op(3, 2, 0, True)] if cfg.size == "imagenet" else []
        return stem + [Op(3, 2, 0, True), Op(3, 2, 0, True), Op(2, 2, 0, True)]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        for name, _ in LAYOUT:
            x = getattr(self, name)(x)
            if name in POOL_AFTER:
                x = getattr(self, POOL_AFTER[name])(x)
        return self.pooled_head(x)


@register_model("googlenet", InceptionConfig,
                accepts=lambda io: GoogLeNet.refuses(InceptionConfig(name="googlenet"), io))
def googlenet(cfg: InceptionConfig, io: ModelIO, dropout: float = 0.0) -> GoogLeNet:
    """GoogLeNet (Inception v1): 9 Inception modules; variant paper or torchvision; size imagenet or small."""
    return GoogLeNet(cfg, io, dropout)
