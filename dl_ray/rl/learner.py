"""The DQN learner: TD updates of the online network, a target network copied every C updates.

Plain Python (the driver makes it a Ray actor, on a GPU when there is one). One call of :meth:`train`
takes a replay sample of ``n * batch_size`` transitions, moves it to the device in one copy and runs ``n``
updates on it. On a GPU the update (loss, backward, clipping, optimiser step) is captured once as a CUDA
graph and replayed: a Nature-CNN update at batch 32 is bound by kernel launches, not by arithmetic.

With ``replay.on_learner`` the learner also holds the replay, its frames on the learner's device: actors'
chunks arrive through :meth:`replay_add` and :meth:`train_on_replay` samples by an index gather there, so
no batch crosses the object store or the PCIe bus.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from dl_ray.rl.envs import EnvInfo
from dl_ray.rl.replay import Chunk, FrameReplay, split_window
from dl_ray.rl.runner import Weights, build_qnet
from dl_ray.rl.spec import RLJobSpec
from dl_ray.train.optim import make_optimizer


class Learner:
    def __init__(self, spec: RLJobSpec, info: EnvInfo, device: str = "cpu", threads: int = 1):
        torch.set_num_threads(threads)
        torch.manual_seed(spec.seed)
        self.spec, self.stack, self.device = spec, info.stack, torch.device(device)
        self.net = build_qnet(spec, info).to(self.device)
        if self.device.type == "cpu":  # oneDNN prefers NHWC: with fused Adam, a Nature-CNN update ~10 % faster
            self.net.to(memory_format=torch.channels_last)
        self.target = copy.deepcopy(self.net).requires_grad_(False)
        self.graphed = spec.learner.cuda_graph and self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.optimizer = make_optimizer(self.net, spec.optimizer, l2=0.0, capturable=self.graphed,
                                        fused=self.device.type == "cpu")
        self.graph: tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor], tuple] | None = None  # at the 1st update
        self.updates = 0
        r = spec.replay
        self.replay = FrameReplay(r.capacity, info.frame_shape, info.obs_dtype, info.stack, r.prioritized, r.priority_alpha,
                                  spec.seed, device=device) if r.on_learner else None

    def train(self, sample: dict[str, np.ndarray], num_updates: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """``num_updates`` updates on consecutive slices of ``sample``; metrics, and positions with |td| for priorities."""
        size = len(sample["action"]) // num_updates
        data = {k: torch.as_tensor(v).to(self.device) for k, v in sample.items() if k != "position"}
        losses, q_means, td_abs = [], [], []
        for i in range(num_updates):
            loss, td, q_mean = self.update({k: v[i * size:(i + 1) * size] for k, v in data.items()})
            losses.append(loss)
            q_means.append(q_mean)
            td_abs.append(td)
        metrics = {"loss": torch.stack(losses).mean().item(), "q_mean": torch.stack(q_means).mean().item(),
                   "updates": self.updates}
        return metrics, sample["position"][: size * num_updates], torch.cat(td_abs).cpu().numpy()

    def train_on_replay(self, num_updates: int, beta: float) -> dict[str, float]:
        """``replay.on_learner``: sample this learner's own replay, train, update its priorities."""
        metrics, positions, td_abs = self.train(self.replay.sample(num_updates * self.spec.dqn.batch_size, beta), num_updates)
        self.replay.update_priorities(positions, td_abs)
        return metrics

    def replay_add(self, chunk: Chunk) -> int:
        return self.replay.add(chunk)

    def replay_stats(self) -> dict[str, Any]:
        return self.replay.stats()

    def replay_state(self) -> dict[str, np.ndarray]:
        return self.replay.state()

    def replay_load_state(self, state: dict[str, np.ndarray]) -> None:
        self.replay.load_state(state)

    def update(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One TD update on a batch of ``window`` (see :func:`split_window`), action, reward, done, weight."""
        if self.graphed and self.graph is None:
            self.graph = self._capture(batch)
        if self.graph is not None and all(self.graph[1][k].shape == v.shape for k, v in batch.items()):
            graph, static, out = self.graph
            for k, v in batch.items():
                static[k].copy_(v)
            graph.replay()
            loss, td_abs, q_mean = (t.clone() for t in out)
        else:
            loss, td_abs, q_mean = self._step(batch)
        self.updates += 1
        if self.updates % self.spec.dqn.target_update_every == 0:
            self.target.load_state_dict(self.net.state_dict())  # in place: the graph keeps reading it
        return loss, td_abs, q_mean

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        obs, next_obs = split_window(batch["window"], self.stack)
        loss, td_abs, q_mean = self.net.td_loss(batch | {"obs": obs, "next_obs": next_obs}, self.target, self.spec.dqn.gamma)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.spec.dqn.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.spec.dqn.grad_clip)
        self.optimizer.step()
        return loss.detach(), td_abs, q_mean

    def _capture(self, batch: dict[str, torch.Tensor]) -> tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor], tuple]:
        """Capture :meth:`_step` as a CUDA graph (PyTorch's whole-network recipe: warm-up steps on a side
        stream, then capture); the warm-up steps are undone, so the first real update is the first update."""
        tensors = [*self.net.parameters(), *self.net.buffers()]
        saved = [t.detach().clone() for t in tensors]
        saved_state = {p: {k: v.clone() for k, v in st.items() if torch.is_tensor(v)} for p, st in self.optimizer.state.items()}
        static = {k: v.clone() for k, v in batch.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._step(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            out = self._step(static)
        with torch.no_grad():  # undo the warm-up, in place (the graph holds these tensors)
            for t, value in zip(tensors, saved):
                t.copy_(value)
            for p, st in self.optimizer.state.items():
                for k, v in st.items():
                    if torch.is_tensor(v):
                        v.copy_(saved_state[p][k]) if p in saved_state else v.zero_()
        return graph, static, out

    def weights(self) -> Weights:
        """A copy (in one process nothing else copies it, and training goes on changing the network)."""
        return {"version": self.updates,
                "state": {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}}

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
        self.graph = None  # the optimiser's state tensors are new: capture again


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x
