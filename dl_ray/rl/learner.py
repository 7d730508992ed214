"""The DQN learner: TD updates of the online network, a target network copied every C updates.

Plain Python (the driver makes it a Ray actor, on a GPU when there is one). One call of :meth:`train`
takes a replay sample of ``n * batch_size`` transitions and runs ``n`` updates on it.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from dl_ray.rl.envs import EnvInfo
from dl_ray.rl.runner import Weights, build_qnet
from dl_ray.rl.spec import RLJobSpec
from dl_ray.train.optim import make_optimizer


class Learner:
    def __init__(self, spec: RLJobSpec, info: EnvInfo, device: str = "cpu", threads: int = 1):
        torch.set_num_threads(threads)
        torch.manual_seed(spec.seed)
        self.spec, self.device = spec, torch.device(device)
        self.net = build_qnet(spec, info).to(self.device)
        self.target = copy.deepcopy(self.net).requires_grad_(False)
        self.optimizer = make_optimizer(self.net, spec.optimizer, l2=0.0)
        self.updates = 0

    def train(self, sample: dict[str, np.ndarray], num_updates: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """``num_updates`` updates on consecutive slices of ``sample``; metrics, and positions with |td| for priorities."""
        size = len(sample["action"]) // num_updates
        losses, q_means, td_abs = [], [], []
        for i in range(num_updates):
            part = {k: torch.from_numpy(v[i * size:(i + 1) * size]).to(self.device, non_blocking=True)
                    for k, v in sample.items() if k != "position"}
            loss, td, q_mean = self.update(part)
            losses.append(loss)
            q_means.append(q_mean)
            td_abs.append(td)
        metrics = {"loss": torch.stack(losses).mean().item(), "q_mean": torch.stack(q_means).mean().item(),
                   "updates": self.updates}
        return metrics, sample["position"][: size * num_updates], torch.cat(td_abs).cpu().numpy()

    def update(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, td_abs, q_mean = self.net.td_loss(batch, self.target, self.spec.dqn.gamma)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.spec.dqn.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.spec.dqn.grad_clip)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.spec.dqn.target_update_every == 0:
            self.target.load_state_dict(self.net.state_dict())
        return loss.detach(), td_abs, q_mean

    def weights(self) -> Weights:
        return {"version": self.updates, "state": {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}}

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs, on the CPU (the driver may have no GPU)."""
        state = {"net": self.net.state_dict(), "target": self.target.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "updates": self.updates}
        return _to_cpu(state)

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x
