"""``dl-ray eval`` of an RL run: the trained agent plays N evaluation episodes again, in this process (no Ray).

DQN: the best evaluation's weights (``best_weights.pt``) or the last checkpoint's, whole games with no-op
starts and the evaluation epsilon, raw rewards, exactly the training run's evaluation protocol; ``--video``
(Atari) records one game as a GIF. Tabular Q-learning: greedy play of ``q_table.npy``. By default with the seed
of the run's own evaluation of those weights (``eval/seed`` in metrics.csv): the figures equal the run's own.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console

from dl_ray.rl.evaluations import eval_seed
from dl_ray.rl.envs import describe_env
from dl_ray.rl.outputs import load_checkpoint
from dl_ray.rl.progress import eval_progress_line
from dl_ray.rl.runner import Weights, evaluate
from dl_ray.rl.spec import RLJobSpec, SpecError, load_rl_spec, parse_rl_spec

def rl_run_dir(target: str | Path) -> Path | None:
    """The run folder of an RL run given as its folder or its job file, else None."""
    path = Path(target)
    spec = path / "spec.yaml" if path.is_dir() else path
    try:
        raw = yaml.safe_load(spec.read_text()) if spec.is_file() else None
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(raw, dict) or raw.get("kind") not in ("dqn", "q_learning"):
        return None
    return path.absolute() if path.is_dir() else load_rl_spec(path).run_dir


def load_weights_file(run_dir: Path, which: str) -> Weights:
    """``best``: the best evaluation's weights; ``last``: the online network of the latest checkpoint; with the env
    step they are from (``env_steps``; absent in best_weights.pt files of older runs)."""
    if which == "best":
        path = run_dir / "best_weights.pt"
        if not path.is_file():
            raise SpecError(f"eval: --weights best: {run_dir} has no best_weights.pt (no evaluation finished yet); use --weights last")
        try:
            return torch.load(path, weights_only=True)
        except pickle.UnpicklingError:  # NumPy arrays: how runs before the tensor format saved them
            raise SpecError(f"eval: {path} holds NumPy arrays (written by an older dl_ray), which a safe load refuses; "
                            "use --weights last, or rerun the job") from None
    saved = load_checkpoint(run_dir, replay=False)
    if saved is None:
        raise SpecError(f"eval: --weights last: {run_dir} has no checkpoint/state.pt yet; run the job first")
    learner = saved["learner"]
    return {"version": learner["updates"], "state": learner["net"], "env_steps": saved["counters"]["env_steps"]}


def evaluate_run(run_dir: str | Path, episodes: int | None, epsilon: float | None, weights: str, video: bool,
                 seed: int | None, console: Console) -> dict[str, Any]:
    """Evaluate one RL run folder; prints one line (two with a video) and writes ``eval_<weights>.json``."""
    run_dir = Path(run_dir)
    if not (run_dir / "spec.yaml").is_file():
        raise SpecError(f"eval: {run_dir} holds no run (no spec.yaml); run it first: dl-ray dqn JOB")
    spec: RLJobSpec = parse_rl_spec(yaml.safe_load((run_dir / "spec.yaml").read_text()))
    if spec.kind == "q_learning":
        seed = spec.seed + 1 if seed is None else seed
        if epsilon is not None or video or weights != "best":
            raise SpecError("eval: --epsilon, --weights and --video are for DQN runs; a Q-learning run plays its greedy table")
        result, what = _play_table(spec, run_dir, episodes or spec.q_learning.eval_episodes, seed)
    else:
        result, what, seed = _play_dqn(spec, run_dir, episodes or spec.evaluation.episodes, seed, epsilon, weights, video,
                                       console)
    out = run_dir / f"eval_{result['weights']}.json"
    out.write_text(json.dumps(result | {"seed": seed}, indent=1))
    line = f"{spec.name}: {what}: return {result['eval/return_mean']:.2f}"
    line += f" ± {result['eval/return_std']:.2f}" if "eval/return_std" in result else ""
    line += f", success rate {result['eval/success_rate']:.3f}" if "eval/success_rate" in result else ""
    console.print(f"{line} over {result['eval/episodes']} episodes (seed {seed}) → {out}", highlight=False, soft_wrap=True)
    if video:
        console.print(f"video of one game (return {result['video/return']:.0f}, {result['video/steps']:,} steps) → "
                      f"{run_dir / f'eval_{weights}.gif'}", highlight=False, soft_wrap=True)
    return result


def _play_table(spec: RLJobSpec, run_dir: Path, episodes: int, seed: int) -> tuple[dict[str, Any], str]:
    from dl_ray.rl.tabular import evaluate_table, make_env

    q_table = run_dir / "q_table.npy"
    if not q_table.is_file():
        raise SpecError(f"eval: {run_dir} has no q_table.npy yet; run the job first")
    return evaluate_table(make_env(spec.env), np.load(q_table), episodes, seed) | {"weights": "q_table"}, "greedy Q-table"


def _play_dqn(spec: RLJobSpec, run_dir: Path, episodes: int, seed: int | None, epsilon: float | None, weights: str,
              video: bool, console: Console) -> tuple[dict[str, Any], str, int]:
    """Play the weights; the default seed is that of the run's evaluation of these weights (the best one, or the
    final one for the last checkpoint), so the figures are that evaluation's. Progress every dqn.progress_every_s."""
    if video and not spec.env.is_atari:
        raise SpecError(f"eval: --video records Atari games (ALE/...); {spec.env.id} has no video here")
    epsilon = spec.evaluation.epsilon if epsilon is None else epsilon
    state, info = load_weights_file(run_dir, weights), describe_env(spec.env)
    if seed is None:
        seed = eval_seed(spec, state["env_steps"]) if "env_steps" in state else spec.seed + 1
    def progress(p: dict[str, float]) -> None:
        console.print(eval_progress_line(f"{spec.name}: evaluating {weights} weights", p), highlight=False, soft_wrap=True)

    result = evaluate(spec, info, state, episodes, epsilon, seed, threads=1,  # one thread, as the run's own evaluations
                      progress=progress)
    result |= {"weights": weights, "eval/epsilon": epsilon}
    if video:
        from dl_ray.rl.video import record_episode

        gif, played = record_episode(spec, info, state, seed, epsilon)
        (run_dir / f"eval_{weights}.gif").write_bytes(gif)
        result |= played
    when = f"at {state['env_steps']:,} env steps" if "env_steps" in state else f"after {state['version']:,} updates"
    return result, f"{weights} weights ({when}), epsilon {epsilon:g}", seed
