"""An env runner: a vector of envs, a local copy of the Q-network, epsilon-greedy actions, replay chunks.

The driver turns each runner into a Ray actor and calls :meth:`EnvRunner.collect` with the latest
weights (one object-store put shared by every actor). Each call steps the vector ``num_steps`` times
and returns episode statistics plus a replay chunk (see :data:`dl_ray.rl.replay.Chunk`). Plain Python:
no Ray here.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dl_ray.models import ModelIO, build_model
from dl_ray.rl.envs import EnvInfo, OverlappedVectorEnv, make_vector_env, newest_frames, step_with
from dl_ray.rl.spec import ExplorationSpec, RLJobSpec

Weights = dict[str, Any]
"""``{"version": updates done, "state": {parameter name: CPU tensor}}`` (``torch.load(weights_only=True)`` reads it)."""


def apex_epsilon(i: int, num_actors: int, epsilon: float, alpha: float) -> float:
    """Ape-X: actor i of N explores with eps_i = eps^(1 + alpha * i / (N - 1))."""
    return epsilon ** (1 + alpha * i / (num_actors - 1)) if num_actors > 1 else epsilon


def linear_epsilon(env_steps: int, start: float, end: float, anneal_steps: int) -> float:
    return end + (start - end) * max(0.0, 1.0 - env_steps / anneal_steps)


def actor_epsilon(x: ExplorationSpec, i: int, num_actors: int, env_steps: int) -> float:
    if x.schedule == "apex":
        return apex_epsilon(i, num_actors, x.epsilon, x.alpha)
    return linear_epsilon(env_steps, x.start, x.end, x.anneal_steps)


def build_qnet(spec: RLJobSpec, info: EnvInfo) -> torch.nn.Module:
    return build_model(spec.model, ModelIO(info.obs_shape, info.num_actions, "q_values"))


def load_weights(net: torch.nn.Module, weights: Weights) -> None:
    net.load_state_dict({k: torch.as_tensor(v) for k, v in weights["state"].items()})


def greedy_actions(net: torch.nn.Module, obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """argmax_a Q(obs, a), replaced by a uniformly random action with probability epsilon."""
    device = next(net.parameters()).device
    with torch.inference_mode():
        q = net(torch.from_numpy(obs).to(device))
    actions = q.argmax(dim=1).cpu().numpy()
    explore = rng.random(len(actions)) < epsilon
    actions[explore] = rng.integers(0, q.shape[1], size=int(explore.sum()))
    return actions


class EnvRunner:
    def __init__(self, spec: RLJobSpec, info: EnvInfo, index: int, seed: int, threads: int = 1):
        torch.set_num_threads(threads)
        self.spec, self.info, self.index = spec, info, index
        n, threads = spec.actors.envs_per_actor, spec.actors.env_threads
        overlap = spec.actors.overlap and spec.env.is_atari and n >= 2
        self.env = OverlappedVectorEnv(spec.env, n, threads) if overlap else make_vector_env(spec.env, n, num_threads=threads)
        self.obs, reset_info = self.env.reset(seed=seed)
        self.lives = reset_info.get("lives")
        device = "cuda" if spec.actors.gpus_per_actor > 0 and torch.cuda.is_available() else "cpu"
        self.net = build_qnet(spec, info).eval().to(device, getattr(torch, spec.actors.inference_dtype))
        self.version = -1
        self.rng = np.random.default_rng(seed)
        self.streams = index * n + np.arange(n)
        self.ended = np.zeros(n, dtype=bool)  # the next step returns a reset observation
        self.first_row = True  # the reset observations are not in the replay yet
        self.ep_return = np.zeros(n)
        self.ep_length = np.zeros(n, dtype=np.int64)

    def collect(self, weights: Weights, num_steps: int, env_steps: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if weights["version"] != self.version:
            load_weights(self.net, weights)
            self.version = weights["version"]
        x = self.spec.actors.exploration
        epsilon = actor_epsilon(x, self.index, self.spec.actors.num_actors, env_steps)
        rows: list[tuple] = []
        context: list[np.ndarray] = []
        n = len(self.streams)
        if self.first_row:
            rows.append(self._row(self.obs, np.zeros(n, np.int64), np.zeros(n), np.zeros(n, bool), np.ones(n, bool), context))
            self.first_row = False
        episodes = []
        policy = functools.partial(greedy_actions, self.net, epsilon=epsilon, rng=self.rng)
        for _ in range(num_steps):
            obs, reward, terminated, truncated, info, actions = step_with(self.env, self.obs, policy)
            start = self.ended
            done = terminated.copy()
            if "lives" in info:
                if self.spec.env.terminal_on_life_loss:
                    done |= (info["lives"] < self.lives) & ~start
                self.lives = info["lives"]
            self.ep_return = np.where(start, 0.0, self.ep_return + reward)
            self.ep_length = np.where(start, 0, self.ep_length + 1)
            self.ended = terminated | truncated
            for e in np.flatnonzero(self.ended):
                episodes.append((float(self.ep_return[e]), int(self.ep_length[e])))
            clipped = np.clip(reward, -1, 1) if self.spec.env.clip_rewards else reward
            rows.append(self._row(obs, actions, clipped, done, start, context))
            self.obs = obs
        chunk = {
            "streams": self.streams,
            "frames": np.stack([r[0] for r in rows]), "action": np.stack([r[1] for r in rows]),
            "reward": np.stack([r[2] for r in rows]).astype(np.float32), "done": np.stack([r[3] for r in rows]),
            "start": np.stack([r[4] for r in rows]),
        }
        if context:
            chunk["context"] = np.concatenate(context)
        stats = {"index": self.index, "steps": num_steps * n, "episodes": episodes, "epsilon": epsilon}
        return stats, chunk

    def _row(self, obs, actions, reward, done, start, context: list) -> tuple:
        if self.info.stack > 1 and start.any():
            context.append(obs[start, :-1])
        return newest_frames(obs, self.info.stack).copy(), actions, reward, done, start


EvalProgress = Callable[[dict[str, float]], None]
"""Called while an evaluation plays, every ``dqn.progress_every_s``: ``{"done": games finished, "episodes": games,
"return_mean": mean return of the finished ones (nan before the first), "elapsed_s": seconds}``."""


def evaluate(spec: RLJobSpec, info: EnvInfo, weights: Weights, episodes: int, epsilon: float, seed: int,
             threads: int = 1, progress: EvalProgress | None = None) -> dict[str, float]:
    """Play ``episodes`` whole games at once (one per env, raw rewards, no-op starts); mean/std of returns.
    Runs on ``threads`` torch threads (the same seed gives the same figures) and restores the caller's."""
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _play(spec, info, weights, episodes, epsilon, seed, threads, progress)
    finally:
        torch.set_num_threads(caller_threads)


def _play(spec: RLJobSpec, info: EnvInfo, weights: Weights, episodes: int, epsilon: float, seed: int,
          threads: int, progress: EvalProgress | None) -> dict[str, float]:
    env = make_vector_env(spec.env, episodes, num_threads=threads)
    obs, _ = env.reset(seed=seed)
    net = build_qnet(spec, info).eval()
    load_weights(net, weights)
    rng = np.random.default_rng(seed)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    running = np.ones(episodes, dtype=bool)
    started = last = time.monotonic()
    while running.any():
        obs, reward, terminated, truncated, _ = env.step(greedy_actions(net, obs, epsilon, rng))
        returns += reward * running
        lengths += running
        running &= ~(terminated | truncated)
        if progress is not None and time.monotonic() - last >= spec.dqn.progress_every_s and running.any():
            last = time.monotonic()
            finished = returns[~running]
            progress({"done": int(len(finished)), "episodes": episodes, "elapsed_s": last - started,
                      "return_mean": float(finished.mean()) if len(finished) else float("nan")})
    env.close()
    return {"eval/return_mean": float(returns.mean()), "eval/return_std": float(returns.std()),
            "eval/length_mean": float(lengths.mean()), "eval/episodes": episodes}
