"""What every supervised model shares: it knows its task, so it owns its loss and metrics.

:class:`TaskModel` is the supervised adapter of the task interface (:mod:`dl_ray.models.task`). A
supervised family only writes, for a batch (a tuple of tensors, target last):

* ``forward(*model.inputs(batch))`` — the prediction (called through DDP when distributed);
* ``model.loss(out, batch)`` — a scalar to minimise;
* ``model.metrics(out, batch)`` — ``{name: (sum, count)}``, summed over batches and workers and divided;
* ``model.eval_metrics(batch)`` — the same for validation/test; a family may decode here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from dl_ray.models.task import Direction, StepContext, Task

DataTask = Literal["regression", "binary", "multiclass"]
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


class TaskModel(Task):
    """A predictor with a task-chosen loss: MSE (regression), BCE (binary), cross-entropy (multiclass).

    Outputs are raw scores: shape ``(N,)`` for regression/binary, ``(N, C)`` logits for multiclass.
    """

    kind = "supervised"

    tasks: tuple[str, ...] = ("regression", "binary", "multiclass")
    """The data tasks this family can learn; building it for another is a clear error."""

    def __init__(self, io: ModelIO):
        super().__init__()
        if reason := self.accepts(io):
            raise ValueError(reason)
        self.task = io.task

    @classmethod
    def accepts(cls, io: ModelIO) -> str | None:
        if io.task not in cls.tasks:
            return f"{cls.__name__} learns {' / '.join(cls.tasks)} tasks; this data is {io.task!r}"
        return None

    @property
    def reports(self) -> dict[str, Direction]:
        names = self.eval_metric_names()
        return {n: "min" if n.endswith("loss") else "max" for n in names}

    @property
    def train_reports(self) -> dict[str, Direction]:
        return {n: d for n, d in self.reports.items() if n in ("loss", "accuracy")}  # what ``metrics`` returns

    def eval_metric_names(self) -> tuple[str, ...]:
        """What ``eval_metrics`` returns: loss, plus accuracy for classification (families add theirs)."""
        return ("loss",) if self.task == "regression" else ("loss", "accuracy")

    # ---- the task interface, in terms of the per-batch methods below
    def training_step(self, batch, ctx: StepContext):
        with ctx.autocast:
            out = ctx.nets["model"](*self.inputs(batch))
        loss = self.loss(out.float(), batch)
        ctx.backward(loss)
        return self.metrics(out.detach().float(), batch)

    def eval_step(self, batch, metrics, nets) -> None:
        for name, (total, count) in self.eval_metrics(batch).items():
            metrics[name].update(total, count)

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
