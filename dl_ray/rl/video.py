"""A video of one evaluation episode (``evaluation.video: true``), written at the end of a DQN run.

The agent plays one whole game with the evaluation epsilon through Gymnasium's own Atari wrappers (the
reference the vector env is tested against), and the emulator's RGB screen after every agent step becomes
one frame of an animated GIF (Pillow: no ffmpeg needed), at the game's pace (60 / frame_skip frames/s).
Plain Python: the driver runs it as a Ray task.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from dl_ray.rl.envs import EnvInfo, make_reference_env
from dl_ray.rl.runner import Weights, build_qnet, greedy_actions, load_weights
from dl_ray.rl.spec import RLJobSpec


def record_episode(spec: RLJobSpec, info: EnvInfo, weights: Weights, seed: int, epsilon: float | None = None,
                   max_steps: int = 5_000) -> tuple[bytes, dict[str, float]]:
    """Play one game (at most ``max_steps`` agent steps) with ``epsilon`` (default: the evaluation's): the GIF's
    bytes, and its raw return and length."""
    epsilon = spec.evaluation.epsilon if epsilon is None else epsilon
    env = make_reference_env(spec.env, noop_max=spec.env.noop_max, render_mode="rgb_array")
    net = build_qnet(spec, info).eval()
    load_weights(net, weights)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    meanings = env.unwrapped.get_action_meanings()
    if spec.env.fire_reset and "FIRE" in meanings:  # as the training envs do: games that wait for FIRE start
        obs, *_ = env.step(meanings.index("FIRE"))
    frames, total, steps = [env.render()], 0.0, 0
    while steps < max_steps:
        action = greedy_actions(net, np.asarray(obs)[None], epsilon, rng)[0]
        obs, reward, terminated, truncated, _ = env.step(int(action))
        total, steps = total + float(reward), steps + 1
        frames.append(env.render())
        if terminated or truncated:
            break
    env.close()
    images = [Image.fromarray(f) for f in frames]
    gif = io.BytesIO()
    images[0].save(gif, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 * spec.env.frame_skip / 60), loop=0)
    return gif.getvalue(), {"video/return": total, "video/steps": steps}
