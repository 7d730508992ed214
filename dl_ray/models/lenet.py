"""LeNet-5 (LeCun et al. 1998) with a modern choice of activation and pooling."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dl_ray.models.base import Activation, ModelConfig, ModelIO, TaskModel, activation
from dl_ray.registry import register_model


class LeNetConfig(ModelConfig):
    channels: tuple[int, int] = (6, 16)
    """Feature maps of the two convolutions (the paper: 6 and 16)."""
    hidden: tuple[int, int] = (120, 84)
    """Units of the two fully connected layers (the paper: 120 and 84)."""
    activation: Activation = "relu"
    """Non-linearity after every layer: relu | leaky_relu | sigmoid | tanh (the paper: tanh)."""
    pooling: Literal["max", "avg"] = "max"
    """Subsampling: max (usually more accurate) or avg (the paper)."""
    downsample: Literal["pool", "stride"] = "pool"
    """pool: stride-1 convolutions, each followed by 2x2 pooling (the paper); stride: stride-2 convolutions and no
    pooling (the same map sizes and parameters, a quarter of the convolutions' multiply-adds)."""
    batch_norm: bool = False
    """Batch normalisation after each convolution (not in the paper)."""


class LeNet5(TaskModel):
    def __init__(self, cfg: LeNetConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__(io)
        pool = nn.MaxPool2d if cfg.pooling == "max" else nn.AvgPool2d
        s = 2 if cfg.downsample == "stride" else 1
        pool = (lambda _: nn.Identity()) if s == 2 else pool
        c1, c2 = cfg.channels
        norm = (lambda c: nn.BatchNorm2d(c)) if cfg.batch_norm else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(io.input_shape[0], c1, 5, stride=s, padding=2), norm(c1), activation(cfg.activation), pool(2),
            nn.Conv2d(c1, c2, 5, stride=s), norm(c2), activation(cfg.activation), pool(2), nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *io.input_shape)).shape[1]
        h1, h2 = cfg.hidden
        self.classifier = nn.Sequential(
            nn.Linear(flat, h1), activation(cfg.activation), nn.Dropout(dropout),
            nn.Linear(h1, h2), activation(cfg.activation), nn.Dropout(dropout),
            nn.Linear(h2, io.num_outputs),
        )

    @classmethod
    def accepts(cls, io: ModelIO) -> str | None:
        if len(io.input_shape) != 3 or min(io.input_shape[1:]) < 12:
            return f"model.name=lenet5 needs images of at least 12x12 (C,H,W), got {io.input_shape}"
        return super().accepts(io)

    def forward(self, x):
        out = self.classifier(self.features(x))
        return out if self.task == "multiclass" else out.squeeze(-1)


@register_model("lenet5", LeNetConfig, accepts=LeNet5.accepts)
def lenet5(cfg: LeNetConfig, io: ModelIO, dropout: float = 0.0) -> LeNet5:
    """LeNet-5: conv5-pool-conv5-pool-fc120-fc84; images of at least 12x12."""
    return LeNet5(cfg, io, dropout)
