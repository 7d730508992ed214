"""Convolution building blocks of the course's CNN case studies, and what the families share.

* ``padding: same | valid | N``: "same" keeps the size at stride 1 (p = (f - 1) / 2, odd f), "valid" is no padding.
* :func:`out_size`: floor((n + 2p - f) / s) + 1 (pooling's ``ceil_mode`` rounds up instead).
* :func:`conv1x1`: channel reduction (Inception's bottlenecks) and :func:`linear_as_conv`, the course's
  "fully connected layer as a convolution" (a kernel the size of the map, then 1x1 convolutions).
* :class:`ConvNetConfig` / :class:`ConvClassifier`: the fields and the adapter every family shares: ImageNet
  or small-input size, the smallest input a network takes, and ``weights:`` (a torchvision-keyed state dict).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from pydantic import Field, field_validator
from torch import nn

from dl_ray.errors import SpecError
from dl_ray.models.base import ModelConfig, ModelIO, TaskModel

Padding = Literal["same", "valid"] | int
Size = Literal["imagenet", "small"]


def padding_amount(padding: Padding, f: int) -> int:
    """Pixels added on each side: "same" keeps n at stride 1 (needs an odd kernel), "valid" adds none."""
    if padding == "valid":
        return 0
    if padding == "same":
        if f % 2 == 0:
            raise ValueError(f"padding: 'same' needs an odd kernel size, got {f}; give the padding as a number")
        return (f - 1) // 2
    if padding < 0:
        raise ValueError(f"padding: must be same, valid or a number >= 0, got {padding}")
    return padding


def out_size(n: int, f: int, s: int = 1, p: int = 0, ceil: bool = False) -> int:
    """Output size of a convolution or pooling over n pixels: floor((n + 2p - f) / s) + 1 (<= 0: too small).

    With ``ceil`` (pooling's ``ceil_mode``) the division rounds up, but a last window that would start in
    the right padding is dropped, as PyTorch does."""
    span = n + 2 * p - f
    out = (span + s - 1 if ceil else span) // s + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def conv(c_in: int, c_out: int, f: int, stride: int = 1, padding: Padding = "same", bias: bool = True) -> nn.Conv2d:
    """An f x f convolution with the course's padding names."""
    return nn.Conv2d(c_in, c_out, f, stride=stride, padding=padding_amount(padding, f), bias=bias)


def conv1x1(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """A 1x1 convolution: a fully connected layer applied at every pixel, changing only the channel count."""
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=bias)


def pool(kind: Literal["max", "avg"], f: int, stride: int | None = None, padding: Padding = "valid",
         ceil: bool = False) -> nn.Module:
    """Max pooling (keeps the strongest response) or average pooling over f x f windows (stride f by default)."""
    cls = nn.MaxPool2d if kind == "max" else nn.AvgPool2d
    return cls(f, stride=stride or f, padding=padding_amount(padding, f), ceil_mode=ceil)


def linear_as_conv(linear: nn.Linear, in_shape: tuple[int, int, int]) -> nn.Conv2d:
    """The same layer as a convolution whose kernel covers the whole (C, H, W) input it flattened.

    On a larger image it slides: each output pixel is the layer applied to one window (the course's
    sliding windows computed at once, sharing the work of overlapping windows). A Linear that follows
    becomes ``linear_as_conv(next, (units, 1, 1))``, a 1x1 convolution."""
    c, h, w = in_shape
    if linear.in_features != c * h * w:
        raise ValueError(f"the layer takes {linear.in_features} inputs, not {c}x{h}x{w}")
    out = nn.Conv2d(c, linear.out_features, (h, w), bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(linear.weight.view(linear.out_features, c, h, w))
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    return out


class Op(NamedTuple):
    """One layer that changes the spatial size, for :func:`smallest_input`."""

    f: int
    s: int = 1
    p: int = 0
    ceil: bool = False


def smallest_input(ops: list[Op], largest: int = 4096) -> int:
    """The smallest square input for which every layer still has at least one output pixel."""
    for n in range(1, largest + 1):
        size = n
        for op in ops:
            size = out_size(size, op.f, op.s, op.p, op.ceil)
            if size < 1:
                break
        else:
            return n
    raise ValueError(f"no input up to {largest} pixels fits this network")


def init_conv_weights(module: nn.Module) -> None:
    """He initialisation for ReLU convolutions, batch norm at identity.

    Fan-in keeps the forward activations' scale, which networks without batch norm need (the paper's GoogLeNet,
    AlexNet, VGG): with fan-out, Inception's 1x1 reductions (many inputs, few outputs) blow the logits up."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def load_weights(model: nn.Module, path: Path, field: str = "model.weights", ignore: tuple[str, ...] = ()) -> None:
    """Load a state dict file into ``model``; a file that does not fit is one SpecError naming the first mismatch.

    Keys starting with one of ``ignore`` are dropped first (parts of the published network this one leaves out)."""
    if not path.is_file():
        raise SpecError(f"{field}: no such file: {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError) as e:  # not a (safe) tensor file
        raise SpecError(f"{field}: {path} is not a PyTorch state dict file ({type(e).__name__})") from None
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise SpecError(f"{field}: {path} does not hold a state dict (a mapping of names to tensors)")
    saved = {k: v for k, v in saved.items() if not k.startswith(ignore)}
    if problem := first_mismatch(model.state_dict(), saved):
        raise SpecError(f"{field}: {path} does not fit model {type(model).__name__}: {problem}")
    model.load_state_dict(saved)


def first_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str | None:
    """The first key (in the model's order) missing from ``given`` or of another shape, else the first extra key."""
    for key, tensor in expected.items():
        if key not in given:
            return f"missing key {key}"
        if given[key].shape != tensor.shape:
            return f"{key} has shape {tuple(given[key].shape)} in the file, {tuple(tensor.shape)} in the model"
    extra = [k for k in given if k not in expected]
    return f"unexpected key {extra[0]}" if extra else None


class ConvNetConfig(ModelConfig):
    """Fields every CNN family (alexnet, vgg, resnet, googlenet) accepts under ``model:``."""

    size: Size = "small"
    """imagenet: the published network, layer for layer, with torchvision's parameter names (for its weights);
    small: the same design for small images (e.g. MNIST 28x28): a 3x3 stem at stride 1 instead of the early
    downsampling, and ``width / 64`` of the channels."""
    width: int = Field(16, ge=1)
    """small only: channels of the first stage (the ImageNet networks have 64); later stages scale with it."""
    weights: Path | None = None
    """A state dict file to start from (e.g. torchvision's published weights, with size: imagenet); its keys and
    shapes must match the model's."""

    @field_validator("weights")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        return v.absolute() if v is not None else None  # Ray workers may start in another folder


class ConvClassifier(TaskModel):
    """A CNN predictor: ``logits(x)`` from the family, the supervised loss and metrics from :class:`TaskModel`."""

    ignored_keys: tuple[str, ...] = ()
    """Prefixes of weights-file keys this family leaves out (GoogLeNet's auxiliary classifiers)."""

    def __init__(self, cfg: ConvNetConfig, io: ModelIO):
        super().__init__(io)
        if reason := self.too_small(cfg, io):
            raise ValueError(reason)

    @classmethod
    def downsampling(cls, cfg: ConvNetConfig) -> list[Op]:
        """The layers that shrink the map, in order (they decide the smallest input)."""
        raise NotImplementedError

    @classmethod
    def too_small(cls, cfg: ConvNetConfig, io: ModelIO) -> str | None:
        where = f"model.name={cfg.name} (size: {cfg.size})"
        if len(io.input_shape) != 3:
            return f"{where} needs images (C,H,W), got data of shape {io.input_shape}"
        least = smallest_input(cls.downsampling(cfg))
        if min(io.input_shape[1:]) < least:
            return f"{where} needs images of at least {least}x{least}, got {io.input_shape[1]}x{io.input_shape[2]}"
        return None

    @classmethod
    def refuses(cls, cfg: ConvNetConfig, io: ModelIO) -> str | None:
        """Why this configuration cannot learn from this data (the registry's ``accepts``), or None."""
        return cls.too_small(cfg, io) or cls.accepts(io)

    def finish(self, cfg: ConvNetConfig) -> None:
        """Initialise, then load ``weights`` if the job names a file: the last step of every builder."""
        init_conv_weights(self)
        if cfg.weights is not None:
            load_weights(self, cfg.weights, ignore=self.ignored_keys)

    def add_pooled_head(self, c_in: int, num_outputs: int, dropout: float) -> None:
        """Global average pooling, dropout, one dense layer (torchvision's ``avgpool``/``fc`` names): the head of
        ResNet and GoogLeNet. It keeps their dense parameters few: 15% of GoogLeNet's, where AlexNet's three dense
        layers hold 96% of its parameters."""
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_outputs)

    def pooled_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits(x)
        return out if self.task == "multiclass" else out.squeeze(-1)


def scaled(channels: int, width: int) -> int:
    """An ImageNet channel count (designed for a first stage of 64) for a first stage of ``width``."""
    return max(1, round(channels * width / 64))
