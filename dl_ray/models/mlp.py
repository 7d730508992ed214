"""Multilayer perceptron (the course's deep feed-forward network)."""
from __future__ import annotations

import math

from pydantic import Field
from torch import nn

from dl_ray.models.base import Activation, ModelConfig, ModelIO, TaskModel, activation
from dl_ray.registry import register_model


class MLPConfig(ModelConfig):
    hidden: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    """Units of each hidden layer."""
    activation: Activation = "relu"
    """Hidden non-linearity: relu | leaky_relu | sigmoid | tanh."""
    negative_slope: float = Field(0.01, gt=0, lt=1)
    """Slope for x < 0 when activation is leaky_relu."""


class MLP(TaskModel):
    @classmethod
    def accepts(cls, io: ModelIO) -> str | None:
        if "vocab" in io.meta:  # ids of words are not features to weigh: a text family embeds them first
            return "model.name=mlp reads feature vectors, and this data is token ids: use averaged_embeddings or rnn_sentiment"
        return super().accepts(io)

    def __init__(self, cfg: MLPConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__(io)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(io.input_shape)
        for units in cfg.hidden:
            layers += [nn.Linear(width, units), activation(cfg.activation, cfg.negative_slope)]
            layers += [nn.Dropout(dropout)] if dropout else []
            width = units
        layers.append(nn.Linear(width, io.num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        out = self.net(x)
        return out if self.task == "multiclass" else out.squeeze(-1)


@register_model("mlp", MLPConfig, accepts=MLP.accepts)
def mlp(cfg: MLPConfig, io: ModelIO, dropout: float = 0.0) -> MLP:
    """Fully connected network; any task (MSE / BCE / cross-entropy chosen by the data)."""
    return MLP(cfg, io, dropout)
