"""The task interface: what the one generic loop (``dl_ray/train/loop.py``) needs from any model family.

A family is a :class:`Task`, an ``nn.Module`` that holds its networks and knows how to train them::

    class MyGAN(Task):
        kind = "gan"
        optimizer_names = ("generator", "discriminator")

        def networks(self):                        # what the loop wraps in DDP, by name
            return {"generator": self.g, "discriminator": self.d}

        def training_step(self, batch, ctx):       # ctx.nets[name] is that network, DDP-wrapped or not
            ...
            ctx.backward(d_loss, "discriminator")  # zero_grad, backward, clipping, step: once, by the loop
            ...
            return {"d_loss": d_loss.detach()}     # logged as train/<name> (mean over the epoch)

        def evaluation(self):                      # fresh streaming metrics for one split
            return {"loss": Ratio()}

        def eval_step(self, batch, metrics, nets):
            metrics["loss"].update(...)

        reports = {"loss": "min"}                  # what early_stopping.metric / tune.metric may name

Today's supervised predictors (:class:`dl_ray.models.base.TaskModel`) are the default adapter: one
network (the module itself), one optimizer (``main``), ``loss``/``metrics``/``eval_metrics`` per batch.

Metrics are torchmetrics ``Metric`` objects: ``update`` per batch, ``compute`` at the end of a split,
which all-reduces their states across Ray Train workers (a mean, exp(mean NLL), a corpus BLEU or a
mAP over every prediction all fit). No Ray in here: a family never sees Ray.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Literal, Protocol

import torch
from torch import nn
from torchmetrics import Metric

Direction = Literal["min", "max"]
StepOutput = dict[str, "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


class Ratio(Metric):
    """``sum of totals / sum of counts`` over batches and workers: a mean loss, an accuracy, a per-token NLL."""

    full_state_update = False
    higher_is_better = None

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, total: torch.Tensor, count: torch.Tensor | float = 1.0) -> None:
        self.total += torch.as_tensor(total).detach().to(self.total)
        self.count += torch.as_tensor(count).detach().to(self.count)

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1.0)


class StepContext(Protocol):
    """What the loop hands ``training_step``: its networks, autocast and the one way to take a step."""

    nets: dict[str, nn.Module]
    """The task's networks by name, as the loop prepared them (DDP across workers, on the device)."""
    device: torch.device
    epoch: int
    """0-based epoch being trained."""
    autocast: AbstractContextManager
    """The loop's autocast (bfloat16 with training.precision: bf16, else a no-op): wrap forward passes in it."""

    def backward(self, loss: torch.Tensor, optimizer: str = "main") -> None:
        """zero_grad, backward, clip (training.grad_clip) and step of the named optimizer."""


class Task(nn.Module):
    """A model family as the generic loop drives it. Subclasses override what differs from these defaults."""

    kind: ClassVar[str] = "supervised"
    """The job kind this family belongs to (``kind:`` of a job file); the registry checks they agree."""
    optimizer_names: ClassVar[tuple[str, ...]] = ("main",)
    """One optimizer (``optimizer:`` in the job) by default; several are named under ``optimizers:``."""
    reports: dict[str, Direction] = {"loss": "min"}
    """Metric names ``evaluation`` computes (reported as val/<name>, test/<name>) and whether lower or higher is better."""

    @classmethod
    def accepts(cls, io: Any) -> str | None:
        """None if this family can learn from data of this shape and task, else the reason it cannot."""
        return None

    @property
    def train_reports(self) -> dict[str, Direction]:
        """What ``training_step`` returns (reported as train/<name>); by default the same names as ``reports``."""
        return self.reports

    def networks(self) -> dict[str, nn.Module]:
        """What the loop wraps for data-parallel training, by name."""
        return {"model": self}

    def parameters_for(self, optimizer: str) -> Iterable[nn.Parameter]:
        """The parameters the named optimizer updates."""
        return self.parameters()

    def training_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        """One training batch: forward, ``ctx.backward`` once per optimizer step; returns what to log.

        Each value is a tensor (averaged over the epoch's steps) or a ``(total, count)`` pair (summed, then divided)."""
        raise NotImplementedError

    def evaluation(self) -> dict[str, Metric]:
        """Fresh streaming metrics for one split (``reports`` names them)."""
        return {name: Ratio() for name in self.reports}

    def eval_step(self, batch: Any, metrics: dict[str, Metric], nets: dict[str, nn.Module]) -> None:
        """Update ``metrics`` with one evaluation batch (already under ``torch.no_grad`` and ``eval()``)."""
        raise NotImplementedError

    def artifacts(self, run_dir: Path, epoch: int, data: Any) -> list[Path]:
        """Pictures of this epoch (samples, reconstructions), written by rank 0 and logged to W&B."""
        return []

    def artifacts_due(self, epoch: int, epochs: int) -> bool:
        """Whether ``artifacts`` also runs after this (1-based) epoch; it always runs once at the end, on the
        best weights. A family that draws progress (a GAN's samples every N epochs) says when here."""
        return False


def directions(task: Task) -> dict[str, Direction]:
    """Every metric a run of this task reports, with its direction: ``val/<name>`` and ``test/<name>``."""
    return {f"{split}/{name}": d for name, d in task.reports.items() for split in ("val", "test")}


Builder = Callable[..., Task]
