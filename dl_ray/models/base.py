"""What every supervised model shares: it knows its task, so it owns its loss and metrics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

Task = Literal["regression", "binary", "multiclass"]
Activation = Literal["relu", "leaky_relu", "sigmoid", "tanh"]


class ModelConfig(BaseModel):
    """Fields every model accepts under ``model:``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    name: str


@dataclass(frozen=True)
class ModelIO:
    """What a model must know about its data to size its first and last layers."""

    input_shape: tuple[int, ...]
    num_outputs: int
    task: Task


def activation(name: Activation, negative_slope: float = 0.01) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[name]()


class TaskModel(nn.Module):
    """A network with a task-chosen loss: MSE (regression), BCE (binary), cross-entropy (multiclass).

    Subclasses define ``forward``; outputs are raw scores (logits), shape ``(N,)`` for
    regression/binary and ``(N, C)`` for multiclass.
    """

    def __init__(self, io: ModelIO):
        super().__init__()
        self.task = io.task

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            return F.mse_loss(out, y)
        if self.task == "binary":
            return F.binary_cross_entropy_with_logits(out, y)
        return F.cross_entropy(out, y)

    def num_correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Correct predictions in the batch (classification); 0 for regression."""
        if self.task == "regression":
            return torch.zeros((), device=out.device)
        pred = (out > 0).to(y.dtype) if self.task == "binary" else out.argmax(dim=1)
        return (pred == y).sum()
