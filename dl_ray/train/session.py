"""Where the generic loop meets Ray: the handful of calls at its ``# [Ray]`` lines.

The same loop runs in two places:

* on Ray Train workers (``dl-ray train``, or a sweep trial that needs several workers or
  GPUs and so builds a ``TorchTrainer``): :class:`TrainSession`, i.e. ``ray.train.*``;
* inside a Ray Tune function trial, in the trial's own process (a sweep trial that needs one
  CPU worker; starting a ``TorchTrainer`` there would cost ~35 s per trial): :class:`TuneSession`,
  i.e. ``ray.tune.*``. Ray 2.60 refuses ``ray.train.report`` & co. inside a Tune function.

The loop picks the session named by ``config["session"]`` (default: Ray Train).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class TrainSession:
    """A Ray Train worker (any number of workers, CPU or GPU)."""

    def rank_and_world(self) -> tuple[int, int]:
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size()

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def get_checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def shipped_data(self, ref):
        """The driver's data bundle from the object store (``runner.ship_data``), or None when it sent none."""
        import ray

        return ray.get(ref) if ref is not None else None

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)  # DDP across workers, moves to the device

    def prepare_data_loader(self, loader):
        import ray.train.torch

        return ray.train.torch.prepare_data_loader(loader)  # DistributedSampler + device

    def report(self, metrics: dict[str, Any], checkpoint: Path | None = None, checkpoint_dir_name: str | None = None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint) if checkpoint else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=checkpoint_dir_name)


class TuneSession(TrainSession):
    """The loop inside a Tune function trial: one CPU worker, rank 0 of 1, in this process.

    ``resume`` is a checkpoint folder prepared by the trial (e.g. a PBT exploit with a new
    learning rate); without it the trial resumes from Tune's latest checkpoint, if any.
    ``history`` is the run's ``metrics.csv``: every checkpoint carries a copy of it (the rows
    up to the checkpoint's epoch), so a PBT trial that takes this checkpoint takes its history too.
    """

    def __init__(self, resume: str | Path | None = None, history: Path | None = None):
        self.resume, self.history = resume, history

    def rank_and_world(self) -> tuple[int, int]:
        return 0, 1

    def device(self) -> torch.device:
        return torch.device("cpu")

    def get_checkpoint(self):
        import ray.tune

        return ray.tune.Checkpoint.from_directory(self.resume) if self.resume else ray.tune.get_checkpoint()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def prepare_data_loader(self, loader):
        return loader

    def report(self, metrics: dict[str, Any], checkpoint: Path | None = None, checkpoint_dir_name: str | None = None) -> None:
        import shutil

        import ray.tune

        if checkpoint and self.history and self.history.is_file():
            shutil.copy(self.history, Path(checkpoint) / self.history.name)
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(checkpoint) if checkpoint else None)


def for_config(config: dict[str, Any]) -> TrainSession:
    return config.get("session") or TrainSession()
