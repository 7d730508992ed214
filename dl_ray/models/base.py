"""What every supervised model shares: it knows its task, so it owns its loss and metrics.

The generic loop only ever calls, for a batch (a tuple of tensors, target last):

* ``net(*model.inputs(batch))`` — the forward pass (through DDP when distributed);
* ``model.loss(out, batch)`` — a scalar to minimise;
* ``model.metrics(out, batch)`` — ``{name: (sum, count)}``, summed over workers and divided;
* ``model.eval_metrics(batch)`` — the same for validation/test; a family may decode here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

Task = Literal["regression", "binary", "multiclass"]
Activation = Literal["relu", "leaky_relu", "sigmoid", "tanh"]
Sums = dict[str, tuple[torch.Tensor, torch.Tensor]]


class ModelConfig(BaseModel):
    """Fields every model accepts under ``model:``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    name: str


@dataclass(frozen=True)
class ModelIO:
    """What a model must know about its data to size its first and last layers."""

    input_shape: tuple[int, ...]
    num_outputs: int
    task: str
    meta: dict[str, Any] = field(default_factory=dict)
    """Family-specific facts about the data (vocabularies, sequence lengths, ...)."""


def activation(name: Activation, negative_slope: float = 0.01) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[name]()


class TaskModel(nn.Module):
    """A predictor with a task-chosen loss: MSE (regression), BCE (binary), cross-entropy (multiclass).

    Outputs are raw scores: shape ``(N,)`` for regression/binary, ``(N, C)`` logits for multiclass.
    """

    tasks: tuple[str, ...] = ("regression", "binary", "multiclass")
    """The data tasks this family can learn; building it for another is a clear error."""

    def __init__(self, io: ModelIO):
        super().__init__()
        if io.task not in self.tasks:
            raise ValueError(f"{type(self).__name__} learns {' / '.join(self.tasks)} tasks; this data is {io.task!r}")
        self.task = io.task

    def inputs(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return batch[:-1]

    def loss(self, out: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        y = batch[-1]
        if self.task == "regression":
            return F.mse_loss(out, y)
        if self.task == "binary":
            return F.binary_cross_entropy_with_logits(out, y)
        return F.cross_entropy(out, y)

    def metrics(self, out: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> Sums:
        y = batch[-1]
        n = torch.tensor(float(len(y)), device=out.device)
        sums: Sums = {"loss": (self.loss(out, batch).detach() * n, n)}
        if self.task != "regression":
            pred = (out > 0).to(y.dtype) if self.task == "binary" else out.argmax(dim=1)
            sums["accuracy"] = ((pred == y).sum().float(), n)
        return sums

    @torch.no_grad()
    def eval_metrics(self, batch: tuple[torch.Tensor, ...]) -> Sums:
        return self.metrics(self(*self.inputs(batch)).float(), batch)
