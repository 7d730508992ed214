"""Q-networks for DQN: the Nature CNN (Mnih et al. 2015) for stacked Atari frames and an MLP for vectors.

A Q-network maps an observation to one value per action. Like every model here it owns its loss:
:meth:`QNetwork.td_loss` is the temporal-difference loss against a target network,
``y = r + gamma * (1 - done) * Q'(s', a*)`` with ``a* = argmax_a Q'(s', a)`` (DQN) or
``a* = argmax_a Q(s', a)`` (double DQN), and MSE (as in the course) or Huber between ``Q(s, a)`` and ``y``.
Options: dueling heads (``Q = V + A - mean(A)``). No Ray here.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from dl_ray.models.base import ModelConfig, ModelIO
from dl_ray.registry import register_model


class QNetConfig(ModelConfig):
    double: bool = True
    """Double DQN: the online network picks the next action, the target network values it."""
    dueling: bool = False
    """Dueling heads: a state value plus mean-centred action advantages."""
    loss: Literal["mse", "huber"] = "huber"
    """TD loss: mse (as in the course) or huber (quadratic below 1, linear above; the Nature DQN choice)."""


class NatureCNNConfig(QNetConfig):
    hidden: int = Field(512, ge=1)
    """Units of the fully connected layer after the three convolutions."""


class QMLPConfig(QNetConfig):
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    """Units of each hidden layer."""


class QNetwork(nn.Module):
    """``features`` (a torso) followed by a plain or dueling head with one output per action."""

    def __init__(self, cfg: QNetConfig, features: nn.Module, width: int, hidden: int, num_actions: int, scale: float):
        super().__init__()
        self.cfg, self.features, self.scale = cfg, features, scale

        def head(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, out))

        self.advantage = head(num_actions) if cfg.dueling else None
        self.value = head(1) if cfg.dueling else head(num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.to(self.value[0].weight.dtype)  # float32, or the dtype an actor casts its copy to
        x = self.features(x * self.scale if self.scale != 1 else x)
        if self.advantage is None:
            return self.value(x)
        adv = self.advantage(x)
        return self.value(x) + adv - adv.mean(dim=1, keepdim=True)

    def td_loss(self, batch: dict[str, torch.Tensor], target: QNetwork, gamma: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, |td error| per sample, mean Q(s, a)) for a batch of obs, action, reward, next_obs, done, weight."""
        q = self(batch["obs"]).gather(1, batch["action"].long().unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_target = target(batch["next_obs"])
            if self.cfg.double:
                best = self(batch["next_obs"]).argmax(dim=1, keepdim=True)
                next_q = next_target.gather(1, best).squeeze(1)
            else:
                next_q = next_target.max(dim=1).values
            y = batch["reward"] + gamma * (1.0 - batch["done"].float()) * next_q
        if self.cfg.loss == "mse":
            per_sample = (q - y) ** 2
        else:
            per_sample = F.smooth_l1_loss(q, y, reduction="none")
        loss = (batch["weight"] * per_sample).mean()
        return loss, (q - y).detach().abs(), q.detach().mean()


def stacked_frames(io: ModelIO) -> str | None:
    if len(io.input_shape) != 3:
        return f"model.name: nature_cnn needs image observations (C, H, W), got shape {io.input_shape}; use q_mlp"
    return None


@register_model("nature_cnn", NatureCNNConfig, kind="dqn", accepts=stacked_frames)
def nature_cnn(cfg: NatureCNNConfig, io: ModelIO, dropout: float = 0.0) -> QNetwork:
    """Nature DQN CNN for stacked uint8 frames (C, H, W): 3 convolutions, one hidden layer, one Q per action."""
    if reason := stacked_frames(io):
        raise ValueError(reason)
    channels, height, width = io.input_shape
    torso = nn.Sequential(
        nn.Conv2d(channels, 32, 8, stride=4), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
        nn.Flatten(),
    )
    with torch.no_grad():
        flat = torso(torch.zeros(1, channels, height, width)).shape[1]
    return QNetwork(cfg, torso, flat, cfg.hidden, io.num_outputs, scale=1 / 255)


@register_model("q_mlp", QMLPConfig, kind="dqn")
def q_mlp(cfg: QMLPConfig, io: ModelIO, dropout: float = 0.0) -> QNetwork:
    """MLP Q-network for vector observations (CartPole); the last hidden layer sits in the head."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(io.input_shape)
    for units in cfg.hidden[:-1]:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    return QNetwork(cfg, nn.Sequential(*layers), width, cfg.hidden[-1], io.num_outputs, scale=1.0)
