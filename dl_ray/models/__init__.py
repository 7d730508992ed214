"""Model families. Each file registers its builders; importing this package registers them all."""
from __future__ import annotations

from dl_ray.models.base import ModelConfig, ModelIO, TaskModel
from dl_ray.registry import MODELS


def build_model(cfg: ModelConfig, io: ModelIO, dropout: float = 0.0) -> TaskModel:
    return MODELS[cfg.name].build(cfg, io, dropout)


from dl_ray.models import lenet, mlp, seq2seq  # noqa: E402,F401  (register the families)
from dl_ray.models import qnets  # noqa: E402,F401  (Q-networks for dl_ray.rl)

__all__ = ["ModelConfig", "ModelIO", "TaskModel", "build_model"]
