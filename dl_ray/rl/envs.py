"""Environments: checked ids, ale-py's AtariVectorEnv for speed, Gymnasium's wrappers as the reference.

Atari preprocessing (both paths): the emulator runs every frame (frameskip=1); the preprocessing repeats
each action ``frame_skip`` times and max-pools the last two frames, converts to 84x84 grayscale, stacks 4
frames (zeros before the first frame of an episode), takes up to 30 no-ops after reset and presses FIRE
where the game needs it. Sticky actions are off unless ``env.sticky_actions`` > 0. Rewards come back
unclipped and life losses are only reported (``info["lives"]``): the env runner clips rewards and ends the
bootstrap on a lost life for training, while evaluation plays whole games with raw scores.

Both vector envs autoreset in Gymnasium's NEXT_STEP mode: the step after a terminal or truncated step
ignores its action and returns the first observation of a new episode.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from dl_ray.rl.spec import EnvSpec, SpecError

_registered = False


def _registry() -> dict:
    global _registered
    if not _registered:
        import ale_py

        gym.register_envs(ale_py)
        _registered = True
    return gym.registry


@dataclass(frozen=True)
class EnvInfo:
    """What the Q-network, the replay and the tabular code need to know about an environment."""

    obs_shape: tuple[int, ...]
    """One observation: (stack, H, W) uint8 for Atari, (d,) float32 for vectors, () int for tabular."""
    frame_shape: tuple[int, ...]
    """What the replay stores once per step: one (H, W) frame, or the whole vector observation."""
    stack: int
    """Frames per observation (1 when observations are not stacked)."""
    num_actions: int
    obs_dtype: str
    num_states: int | None = None
    """Tabular envs: the number of discrete states."""


def describe_env(env: EnvSpec) -> EnvInfo:
    """Check ``env.id`` and build one env to read its spaces; any problem is a one-line SpecError."""
    registry = _registry()
    if env.id not in registry:
        hint = difflib.get_close_matches(env.id, list(registry), n=1, cutoff=0.7)
        maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise SpecError(f"env.id: unknown environment {env.id!r}{maybe}; allowed: any Gymnasium id, "
                        f"e.g. ALE/Pong-v5, ALE/Breakout-v5, CartPole-v1, FrozenLake-v1, Taxi-v3")
    if env.is_atari:
        if env.kwargs:
            raise SpecError(f"env.kwargs: Atari envs are set by env.frame_skip, env.sticky_actions, ...; got {env.kwargs}")
        vec = make_vector_env(env, 1)
        info = EnvInfo((env.frame_stack, env.screen_size, env.screen_size), (env.screen_size, env.screen_size),
                       env.frame_stack, int(vec.single_action_space.n), "uint8")
        vec.close()
        return info
    try:
        one = gym.make(env.id, **env.kwargs)
    except (TypeError, ValueError, gym.error.Error) as e:
        raise SpecError(f"env.kwargs: {env.id} refused {env.kwargs}: {str(e).splitlines()[0]}") from None
    obs_space, act_space = one.observation_space, one.action_space
    one.close()
    if not isinstance(act_space, gym.spaces.Discrete):
        raise SpecError(f"env.id: {env.id} has {type(act_space).__name__} actions; DQN and Q-learning need Discrete actions")
    if isinstance(obs_space, gym.spaces.Discrete):
        return EnvInfo((), (), 1, int(act_space.n), "int64", num_states=int(obs_space.n))
    if isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1:
        return EnvInfo(obs_space.shape, obs_space.shape, 1, int(act_space.n), "float32")
    raise SpecError(f"env.id: {env.id} observations are {obs_space}; supported: Atari (ALE/...), 1-D Box vectors, Discrete states")


def atari_game(env_id: str) -> str:
    """``ALE/Pong-v5`` -> ``pong`` (the ROM name ale-py's vector env takes)."""
    return _registry()[env_id].kwargs["game"]


def make_vector_env(env: EnvSpec, num_envs: int, num_threads: int = 1, noop_max: int | None = None):
    """A vector of ``num_envs`` envs (NEXT_STEP autoreset); ``reset(seed=s)`` seeds them s, s+1, ..."""
    if env.is_atari:
        from ale_py.vector_env import AtariVectorEnv

        vec = AtariVectorEnv(
            atari_game(env.id), num_envs, num_threads=min(num_threads, num_envs),
            frameskip=env.frame_skip, stack_num=env.frame_stack, img_height=env.screen_size, img_width=env.screen_size,
            grayscale=True, maxpool=True, noop_max=env.noop_max if noop_max is None else noop_max,
            use_fire_reset=env.fire_reset, episodic_life=False, reward_clipping=False,
            repeat_action_probability=env.sticky_actions, max_num_frames_per_episode=env.max_episode_frames,
        )
    else:
        vec = gym.vector.SyncVectorEnv([lambda: gym.make(env.id, **env.kwargs) for _ in range(num_envs)],
                                       autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    return vec


Policy = Callable[[np.ndarray], np.ndarray]
"""Observations of some envs -> their actions."""


class OverlappedVectorEnv:
    """Two halves of an Atari vector env, stepped so that one half emulates (ale-py's C++ threads, ``send``)
    while the policy picks the other half's actions: inference hides behind emulation.

    Env i sees exactly what it would in ``make_vector_env(env, num_envs)`` with the same seed (the halves
    are seeded ``seed...`` and ``seed + num_envs // 2...``), only the second half's step is in flight
    between two calls of :meth:`step`, with actions from the weights of that moment.
    """

    def __init__(self, env: EnvSpec, num_envs: int, num_threads: int = 1):
        self.split = num_envs // 2
        self.halves = (make_vector_env(env, self.split, num_threads), make_vector_env(env, num_envs - self.split, num_threads))
        self.obs: list[np.ndarray] = []
        self.in_flight: np.ndarray | None = None  # the second half's actions, sent, result not received yet

    def reset(self, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        (first, info_a), (second, info_b) = self.halves[0].reset(seed=seed), self.halves[1].reset(seed=seed + self.split)
        self.obs, self.in_flight = [first, second], None
        return np.concatenate(self.obs), _join(info_a, info_b)

    def step(self, policy: Policy) -> tuple[np.ndarray, ...]:
        """One step of every env: (obs, reward, terminated, truncated, info, the actions that led there)."""
        a, b = self.halves
        if self.in_flight is None:
            self.in_flight = policy(self.obs[1])
            b.send(self.in_flight)
        actions_a = policy(self.obs[0])  # while b emulates
        a.send(actions_a)
        *result_b, info_b = b.recv()
        actions_b, self.in_flight = self.in_flight, policy(result_b[0])  # while a emulates
        b.send(self.in_flight)
        *result_a, info_a = a.recv()
        self.obs = [result_a[0], result_b[0]]
        joined = [np.concatenate(pair) for pair in zip(result_a, result_b)]
        return (*joined, _join(info_a, info_b), np.concatenate([actions_a, actions_b]))


def _join(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: np.concatenate([a[k], b[k]]) for k in a if isinstance(a[k], np.ndarray) and k in b}


def step_with(env, obs: np.ndarray, policy: Policy) -> tuple[np.ndarray, ...]:
    """One step of a vector env (plain or overlapped): (obs, reward, terminated, truncated, info, actions)."""
    if isinstance(env, OverlappedVectorEnv):
        return env.step(policy)
    actions = policy(obs)
    return (*env.step(actions), actions)


def make_reference_env(env: EnvSpec, noop_max: int = 0, render_mode: str | None = None) -> gym.Env:
    """One Atari env built only from Gymnasium's own wrappers (the reference the vector env is tested against).

    Gymnasium's AtariPreprocessing has no FIRE reset, so compare with ``env.fire_reset: false`` (or games
    without FIRE); its no-op count comes from a different random stream than ale-py's, so compare with 0.
    """
    base = gym.make(env.id, frameskip=1, repeat_action_probability=env.sticky_actions,
                    max_num_frames_per_episode=env.max_episode_frames, render_mode=render_mode)
    pre = gym.wrappers.AtariPreprocessing(base, noop_max=noop_max, frame_skip=env.frame_skip,
                                          screen_size=env.screen_size, terminal_on_life_loss=False, grayscale_obs=True)
    return gym.wrappers.FrameStackObservation(pre, env.frame_stack, padding_type="zero")


def newest_frames(obs: np.ndarray, stack: int) -> np.ndarray:
    """The part of a batch of observations that is new at each step: the last frame, or the whole vector."""
    return obs[:, -1] if stack > 1 else obs
