"""Tabular Q-learning, the course's algorithm, for discrete-state envs (FrozenLake, Taxi).

After each step the Bellman update moves Q(s, a) towards the bootstrapped target by the rate alpha
(an exponentially weighted average of targets):

    Q(s, a) <- Q(s, a) + alpha * (r + gamma * max_a' Q(s', a') - Q(s, a))      (no bootstrap past a terminal)

Exploration vs exploitation: epsilon-greedy, epsilon decaying linearly from ``epsilon_start`` to
``epsilon_end``; ties between equal Q-values are broken at random (a zero table would otherwise always
pick action 0). alpha = 1 is optimal for deterministic envs; a slippery lake needs a small alpha.
"""
from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.progress import Progress

from dl_ray.rl.envs import EnvInfo
from dl_ray.rl.spec import EnvSpec, QLearningSpec, RLJobSpec
from dl_ray.statuses import COMPLETED, status_fields


def greedy(q_row: np.ndarray, rng: np.random.Generator) -> int:
    best = np.flatnonzero(q_row == q_row.max())
    return int(best[0] if len(best) == 1 else rng.choice(best))


def q_learning(env: gym.Env, num_states: int, num_actions: int, cfg: QLearningSpec, seed: int,
               on_episode=None) -> np.ndarray:
    """Train a Q-table; ``on_episode(episode, return, steps)`` is called after every episode."""
    rng = np.random.default_rng(seed)
    q = np.zeros((num_states, num_actions))
    state, _ = env.reset(seed=seed)
    decay = max(1, int(cfg.decay_fraction * cfg.episodes))
    for episode in range(cfg.episodes):
        frac = min(1.0, episode / decay)
        epsilon = cfg.epsilon_start + (cfg.epsilon_end - cfg.epsilon_start) * frac
        alpha = cfg.alpha if cfg.alpha_end is None else cfg.alpha + (cfg.alpha_end - cfg.alpha) * episode / cfg.episodes
        if episode:
            state, _ = env.reset()
        total, steps, done = 0.0, 0, False
        while not done:
            action = int(rng.integers(num_actions)) if rng.random() < epsilon else greedy(q[state], rng)
            nxt, reward, terminated, truncated, _ = env.step(action)
            target = reward + (0.0 if terminated else cfg.gamma * q[nxt].max())
            q[state, action] += alpha * (target - q[state, action])
            state, total, steps, done = nxt, total + reward, steps + 1, terminated or truncated
        if on_episode:
            on_episode(episode, total, steps, epsilon, alpha)
    return q


def evaluate_table(env: gym.Env, q: np.ndarray, episodes: int, seed: int) -> dict[str, float]:
    """Greedy play; success = an episode with a positive return (FrozenLake: the goal was reached)."""
    rng = np.random.default_rng(seed)
    returns = np.zeros(episodes)
    state, _ = env.reset(seed=seed)
    for i in range(episodes):
        if i:
            state, _ = env.reset()
        done = False
        while not done:
            state, reward, terminated, truncated, _ = env.step(greedy(q[state], rng))
            returns[i] += reward
            done = terminated or truncated
    return {"eval/return_mean": float(returns.mean()), "eval/success_rate": float((returns > 0).mean()),
            "eval/episodes": episodes}


def make_env(env: EnvSpec) -> gym.Env:
    return gym.make(env.id, **env.kwargs)


def run_q_learning(spec: RLJobSpec, info: EnvInfo, console: Console) -> dict[str, Any]:
    from dl_ray.rl.outputs import RunFolder

    cfg = spec.q_learning
    folder = RunFolder(spec)
    folder.open()
    folder.history.rows = []  # seconds of work: a rerun trains again from scratch
    console.print(f"[bold]{spec.name}[/]: tabular Q-learning on {spec.env.id} {spec.env.kwargs or ''}, "
                  f"{cfg.episodes:,} episodes → {folder.dir}")
    block = max(1, cfg.episodes // 50)
    window: list[float] = []
    counters = {"env_steps": 0}
    t0 = time.monotonic()
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("q-learning", total=cfg.episodes)

        def on_episode(episode: int, ret: float, steps: int, epsilon: float, alpha: float) -> None:
            counters["env_steps"] += steps
            window.append(ret)
            if (episode + 1) % block == 0:
                folder.log({"env_steps": counters["env_steps"], "episodes": episode + 1,
                            "episodic_return": float(np.mean(window)), "success_rate": float(np.mean(np.array(window) > 0)),
                            "epsilon": epsilon, "alpha": alpha, "time_s": time.monotonic() - t0})
                window.clear()
                bar.update(task, completed=episode + 1)

        env = make_env(spec.env)
        q = q_learning(env, info.num_states, info.num_actions, cfg, spec.seed, on_episode)
    result = evaluate_table(env, q, cfg.eval_episodes, spec.seed + 1)
    folder.log({"env_steps": counters["env_steps"], **result})
    np.save(folder.dir / "q_table.npy", q)
    summary = {**status_fields(COMPLETED), "kind": "q_learning", "env": spec.env.id, "episodes": cfg.episodes,
               "env_steps": counters["env_steps"], "time_s": time.monotonic() - t0, **result}
    folder.finish(summary)
    console.print(f"evaluation: success rate {result['eval/success_rate']:.3f}, return {result['eval/return_mean']:.3f} "
                  f"over {cfg.eval_episodes} greedy episodes → {folder.dir}")
    return summary
