"""DQN throughput, all in one run on one machine (``python benchmarks/dqn_throughput.py``).

(a) env frames/s of the actor fleet (Ray actors, Nature-CNN inference in float32 and bfloat16, serial and
    overlapped stepping, epsilon-greedy, replay chunks)
    / frames/s of one raw AtariVectorEnv with random actions over the same number of envs and threads;
    goal >= 0.70 for the best of the four fleet settings;
(b) our DQN vs RLlib 2.60's DQN on the same Pong settings (2 env runners x 4 envs, batch 32, replay ratio 8,
    Nature CNN, double + dueling, 50k replay), uniform replay against uniform and prioritized (same alpha and
    beta) against prioritized, env steps/s once learning has started; goal >= 3x for each replay kind;
(c) replay bytes per stored transition (84x84 frames, uniform and prioritized): exact sizes, no timing;
    goal <= 7.2 KB;
(d) learner updates/s (Nature CNN, batch 32, sampling from the replay included; on a GPU eager and with
    the CUDA-graph update);
(e) Stable-Baselines3 2.9's DQN (a single process) beside ours in one process (``actors.num_actors: 0``) and
    ours as a fleet (2 actors x 4 envs), settings matched field by field and printed side by side (Pong, Nature
    CNN without dueling or double Q, batch 32, replay ratio 8, 8 envs, learning starts at 1,000, Adam 1e-4,
    epsilon 0.01, 2 torch threads); env steps/s over ``--e-seconds`` once learning runs; goals: one process
    >= 1.2x SB3, fleet >= 1.0x (``pip install -e ".[bench]"``). SB3's DQN has neither dueling nor double Q, so
    (e) compares the plain network only. ``--only e``: this part alone, ~9 minutes on 2 cores.

Every timed figure is the median of ``--rounds`` (>= 3) rounds in which ours and its baseline alternate
(a: fleet / raw env; b: ours / RLlib; d on a GPU: eager / CUDA graph / replay on the learner), so neither
side always meets a warmer or busier machine. Exit code 1 when a goal is missed; 2 when (b) cannot run
RLlib (``pip install -e ".[rllib]"``, or ``--skip-rllib``), checked before anything is measured.
About 25 minutes on 2 cores with the defaults (--seconds 5, --steps 5000, --e-seconds 40, 3 rounds).

Defaults fit the 2-core dev machine; on the 16-core GPU host:
``python benchmarks/dqn_throughput.py --actors 6 --envs 16 --env-threads 2 --gpus-per-actor 0.1 --skip-rllib``.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("WANDB_MODE", "disabled")

from dl_ray.rl.envs import describe_env, make_vector_env  # noqa: E402
from dl_ray.rl.learner import Learner  # noqa: E402
from dl_ray.rl.replay import FrameReplay  # noqa: E402
from dl_ray.rl.runner import EnvRunner  # noqa: E402
from dl_ray.rl.spec import parse_rl_spec  # noqa: E402

ACTORS, ENVS, ENV_THREADS, CPUS_PER_ACTOR, GPUS_PER_ACTOR = 2, 4, 1, 0.5, 0.0


def pong_spec(tmp: str, total: int = 6000, cuda_graph: bool = True, overlap: bool = True, on_learner: bool = False,
              inference_dtype: str = "float32", prioritized: bool = False, name: str = "bench_pong"):
    return parse_rl_spec({
        "name": name, "kind": "dqn", "seed": 0, "env": {"id": "ALE/Pong-v5"},
        "model": {"name": "nature_cnn", "double": True, "dueling": True},
        "dqn": {"total_env_steps": total, "batch_size": 32, "replay_ratio": 8, "learning_starts": 1000,
                "updates_per_call": 16, "log_every_env_steps": 500,
                "target_update_every": 250},  # = (b) RLlib's target_network_update_freq: 1000 env steps x 8 / 32
        "replay": {"capacity": 20_000 if on_learner else 50_000, "on_learner": on_learner, "prioritized": prioritized},
        "actors": {"num_actors": ACTORS, "envs_per_actor": ENVS, "steps_per_call": 32, "cpus_per_actor": CPUS_PER_ACTOR,
                   "env_threads": ENV_THREADS, "gpus_per_actor": GPUS_PER_ACTOR, "overlap": overlap,
                   "inference_dtype": inference_dtype},
        "learner": {"num_cpus": 1, "cuda_graph": cuda_graph}, "evaluation": {"episodes": 1, "every_env_steps": None},
        "checkpoint": {"every_env_steps": 10**9}, "tracking": {"wandb": "disabled"}, "storage": {"path": tmp},
    })


def raw_env_fps(seconds: float, threads: int) -> float:
    spec = pong_spec("/tmp")
    env = make_vector_env(spec.env, ACTORS * ENVS, num_threads=threads)
    env.reset(seed=0)
    rng, steps, t0 = np.random.default_rng(0), 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(rng.integers(0, 6, ACTORS * ENVS))
        steps += ACTORS * ENVS
    return steps * 4 / (time.perf_counter() - t0)


def fleet_fps(ray, seconds: float, overlap: bool, inference_dtype: str) -> float:
    spec = pong_spec("/tmp", overlap=overlap, inference_dtype=inference_dtype)
    info = describe_env(spec.env)
    learner = Learner(spec, info)
    weights = ray.put(learner.weights())
    actors = [ray.remote(EnvRunner).options(num_cpus=CPUS_PER_ACTOR, num_gpus=GPUS_PER_ACTOR).remote(spec, info, i, i)
              for i in range(ACTORS)]
    ray.get([a.collect.options(num_returns=2).remote(weights, 4, 0)[0] for a in actors])  # warm up
    steps, t0, pending = 0, time.perf_counter(), {}
    for a in actors:
        stats, _ = a.collect.options(num_returns=2).remote(weights, 32, 0)
        pending[stats] = a
    while time.perf_counter() - t0 < seconds:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        a = pending.pop(ref)
        steps += ray.get(ref)["steps"]
        stats, _ = a.collect.options(num_returns=2).remote(weights, 32, 0)
        pending[stats] = a
    fps = steps * 4 / (time.perf_counter() - t0)
    for a in actors:
        ray.kill(a)
    return fps


def replay_bytes() -> dict[str, float]:
    return {("prioritized" if p else "uniform"): FrameReplay(100_000, (84, 84), "uint8", 4, prioritized=p).nbytes / 100_000
            for p in (False, True)}


def filled_replay() -> FrameReplay:
    spec = pong_spec("/tmp")
    info = describe_env(spec.env)
    runner = EnvRunner(spec, info, 0, 0)
    replay = FrameReplay(20_000, info.frame_shape, info.obs_dtype, info.stack)
    weights = Learner(spec, info).weights()
    while replay.written < 20_000:
        replay.add(runner.collect(weights, 32, 0)[1])
    return replay


def learner_updates_per_s(replay: FrameReplay, seconds: float, device: str = "cpu", cuda_graph: bool = True,
                          on_learner: bool = False) -> float:
    """Updates/s of the learner, sampling included: from a replay in this process (as a shard actor samples),
    or (``on_learner``) from the learner's own replay on its device."""
    spec = pong_spec("/tmp", cuda_graph=cuda_graph, on_learner=on_learner)
    learner = Learner(spec, describe_env(spec.env), device, threads=torch.get_num_threads())
    if on_learner:
        learner.replay_load_state(replay.state())

        def train(n: int) -> None:
            learner.train_on_replay(n, 0.4)
    else:
        def train(n: int) -> None:
            learner.train(replay.sample(32 * n), n)
    train(16)  # warm up (and capture the CUDA graph)
    updates, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        train(64)
        updates += 64
    return updates / (time.perf_counter() - t0)


def ours_sps(tmp: str, total: int, prioritized: bool, name: str) -> tuple[float, dict]:
    from rich.console import Console

    from dl_ray.rl import driver

    spec = pong_spec(tmp, total, prioritized=prioritized, name=name)  # a new run folder: the same one would resume
    summary = driver.run(spec, Console(file=open(os.devnull, "w")))
    import pandas as pd

    rows = pd.read_csv(spec.run_dir / "metrics.csv").dropna(subset=["sps"])
    learning = rows[rows["env_steps"] > spec.dqn.learning_starts + 1000]
    steps = learning["env_steps"].iloc[-1] - learning["env_steps"].iloc[0]
    seconds = learning["time_s"].iloc[-1] - learning["time_s"].iloc[0]
    return steps / seconds, summary


def ours_sps_new_run(tmp: str, total: int, prioritized: bool, runs: itertools.count) -> float:
    """``ours_sps`` in a run folder of its own (the same folder would resume the previous run)."""
    return ours_sps(tmp, total, prioritized, f"bench_pong_{'prioritized' if prioritized else 'uniform'}_{next(runs)}")[0]


def rllib_sps(total: int, prioritized: bool) -> float:
    import gymnasium as gym
    from ray import tune
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.env.wrappers.atari_wrappers import wrap_atari_for_new_api_stack

    tune.register_env("bench-pong", lambda cfg: wrap_atari_for_new_api_stack(gym.make("ale_py:ALE/Pong-v5", **cfg),
                                                                              dim=84, framestack=4))
    config = (
        DQNConfig()
        .environment("bench-pong", env_config={"frameskip": 1, "full_action_space": False,
                                               "repeat_action_probability": 0.0}, clip_rewards=True)
        .env_runners(num_env_runners=ACTORS, num_envs_per_env_runner=ENVS, rollout_fragment_length=32,
                     num_cpus_per_env_runner=CPUS_PER_ACTOR)
        .training(train_batch_size=32, training_intensity=8, num_steps_sampled_before_learning_starts=1000,
                  lr=1e-4, double_q=True, dueling=True, n_step=1, target_network_update_freq=1000,
                  replay_buffer_config=rllib_replay(prioritized))
        .rl_module(model_config=DefaultModelConfig(conv_filters=[(32, 8, 4), (64, 4, 2), (64, 3, 1)],
                                                   conv_activation="relu", head_fcnet_hiddens=[512]))
        .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=256)
    )
    algo = config.build_algo()
    marks = []
    while True:
        result = algo.train()
        steps = result["env_runners"]["num_env_steps_sampled_lifetime"]
        marks.append((time.perf_counter(), steps))
        if steps >= total:
            break
    algo.stop()
    learning = [(t, s) for t, s in marks if s > 2000]
    return (learning[-1][1] - learning[0][1]) / (learning[-1][0] - learning[0][0])


def rllib_replay(prioritized: bool) -> dict:
    """RLlib's replay of the same kind and size as ours (prioritized: our alpha and initial beta)."""
    if not prioritized:
        return {"type": "EpisodeReplayBuffer", "capacity": 50_000}
    r = pong_spec("/tmp", prioritized=True).replay
    return {"type": "PrioritizedEpisodeReplayBuffer", "capacity": 50_000, "alpha": r.priority_alpha, "beta": r.priority_beta}


def rllib_missing() -> str | None:
    """Why RLlib's DQN cannot be imported here (its extra is not installed), or None."""
    try:
        from ray.rllib.algorithms.dqn import DQNConfig  # noqa: F401
    except ImportError as e:
        return f"{type(e).__name__}: {e}"
    return None


E_ENVS, E_THREADS, E_REPLAY, E_WARMUP = 8, 2, 20_000, 1_000  # (e): the matched settings both sides share

# (e) side by side: the field of each system that carries one setting.
E_MATCHED = [
    ("env", "ALE/Pong-v5, frameskip 4 (max of 2), 84x84 gray, 4 stacked, 30 no-ops, FIRE reset, life loss ends",
     "AtariVectorEnv (ale-py)", "make_atari_env + AtariWrapper + VecFrameStack(4)"),
    ("envs", f"{E_ENVS}", f"actors.envs_per_actor {E_ENVS} (one process) / 2 actors x 4 (fleet)", f"n_envs {E_ENVS} (DummyVecEnv)"),
    ("network", "Nature CNN, no dueling, no double Q, Huber loss", "nature_cnn double false dueling false loss huber",
     "CnnPolicy (NatureCNN), smooth L1"),
    ("batch", "32", "dqn.batch_size 32", "batch_size 32"),
    ("replay ratio", "8 sampled transitions per env step", "dqn.replay_ratio 8",
     f"train_freq 1 vector step ({E_ENVS} env steps), gradient_steps 2"),
    ("learning starts", "1,000 env steps", "dqn.learning_starts 1000", "learning_starts 1000"),
    ("target copy", "every 1,000 env steps = 250 updates", "dqn.target_update_every 250", "target_update_interval 1000"),
    ("optimiser", "Adam 1e-4, gradient norm clipped at 10", "optimizer adam lr 1e-4, dqn.grad_clip 10",
     "Adam learning_rate 1e-4, max_grad_norm 10"),
    ("exploration", "epsilon 0.01 throughout", "exploration linear 0.01 -> 0.01", "exploration eps 0.01 -> 0.01"),
    ("replay size", f"{E_REPLAY:,} transitions, uniform", f"replay.capacity {E_REPLAY}", f"buffer_size {E_REPLAY}"),
    ("threads", f"{E_THREADS} torch threads",
     f"learner.num_cpus {E_THREADS} (one process) / {E_THREADS - 0.5:g} ({E_THREADS} threads) + 2 actors x 0.25 (fleet)",
     f"torch.set_num_threads({E_THREADS})"),
]


def matched_spec(tmp: str, name: str, seconds: float, one_process: bool):
    """Our DQN at (e)'s settings; it stops ``seconds`` after its first transitions (then evaluates 1 game)."""
    actors = ({"num_actors": 0, "envs_per_actor": E_ENVS} if one_process else
              {"num_actors": 2, "envs_per_actor": E_ENVS // 2, "cpus_per_actor": 0.25})
    return parse_rl_spec({
        "name": name, "kind": "dqn", "seed": 0, "env": {"id": "ALE/Pong-v5"},
        "model": {"name": "nature_cnn", "double": False, "dueling": False, "loss": "huber"},
        "optimizer": {"name": "adam", "lr": 1e-4},
        "dqn": {"total_env_steps": 10**7, "batch_size": 32, "replay_ratio": 8, "learning_starts": 1000,
                "target_update_every": 250, "grad_clip": 10, "log_every_env_steps": 256, "max_time_s": seconds},
        "replay": {"capacity": E_REPLAY},
        "actors": actors | {"steps_per_call": 32, "env_threads": 1,
                            "exploration": {"schedule": "linear", "start": 0.01, "end": 0.01}},
        "learner": {"num_cpus": E_THREADS if one_process else E_THREADS - 0.5}, "evaluation": {"episodes": 1, "every_env_steps": None},
        "checkpoint": {"every_env_steps": 10**9}, "tracking": {"wandb": "disabled"}, "storage": {"path": tmp},
    })


def ours_matched_sps(tmp: str, seconds: float, one_process: bool, runs: itertools.count) -> float:
    """Env steps/s of our DQN from the first log row past learning starts + warm-up to the last one."""
    from rich.console import Console

    from dl_ray.rl import driver

    name = f"matched_{'one' if one_process else 'fleet'}_{next(runs)}"  # a new folder: the same one would resume
    spec = matched_spec(tmp, name, seconds + 10, one_process)  # + the time to fill learning_starts and warm up
    threads = torch.get_num_threads()
    try:
        driver.run(spec, Console(file=open(os.devnull, "w")))
    finally:
        torch.set_num_threads(threads)
    import pandas as pd

    rows = pd.read_csv(spec.run_dir / "metrics.csv").dropna(subset=["sps"])
    learning = rows[rows["env_steps"] >= spec.dqn.learning_starts + E_WARMUP]
    return (learning["env_steps"].iloc[-1] - learning["env_steps"].iloc[0]) / (learning["time_s"].iloc[-1] - learning["time_s"].iloc[0])


def sb3_sps(seconds: float) -> float:
    """Env steps/s of Stable-Baselines3's DQN over ``seconds``, from learning starts + warm-up on."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    threads = torch.get_num_threads()
    torch.set_num_threads(E_THREADS)
    env = VecFrameStack(make_atari_env("ALE/Pong-v5", n_envs=E_ENVS, seed=0,
                                       env_kwargs={"frameskip": 1, "repeat_action_probability": 0.0}), n_stack=4)
    model = DQN("CnnPolicy", env, learning_rate=1e-4, buffer_size=E_REPLAY, learning_starts=1000, batch_size=32,
                gamma=0.99, train_freq=1, gradient_steps=2, target_update_interval=1000, max_grad_norm=10,
                exploration_initial_eps=0.01, exploration_final_eps=0.01, seed=0, device="cpu")

    class Clock(BaseCallback):
        marks: list[tuple[float, int]] = []

        def _on_step(self) -> bool:
            if self.num_timesteps >= 1000 + E_WARMUP:
                self.marks.append((time.perf_counter(), self.num_timesteps))
            return not self.marks or self.marks[-1][0] - self.marks[0][0] < seconds

    clock = Clock()
    try:
        model.learn(total_timesteps=10**8, callback=clock)
    finally:
        env.close()
        torch.set_num_threads(threads)
    (t0, s0), (t1, s1) = clock.marks[0], clock.marks[-1]
    return (s1 - s0) / (t1 - t0)


def sb3_missing() -> str | None:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError as e:
        return f"{type(e).__name__}: {e}"
    return None


def part_e(seconds: float, rounds: int) -> list[str]:
    """(e): SB3 / ours in one process / ours as a fleet, interleaved; the goals missed."""
    import tempfile

    print("(e) matched settings:")
    for what, value, ours, sb3 in E_MATCHED:
        print(f"  {what}: {value}\n    ours: {ours}\n    SB3:  {sb3}")
    median = statistics.median
    with tempfile.TemporaryDirectory() as tmp:
        runs = itertools.count()
        sb3, one, fleet = alternating(rounds, functools.partial(sb3_sps, seconds),
                                      functools.partial(ours_matched_sps, tmp, seconds, True, runs),
                                      functools.partial(ours_matched_sps, tmp, seconds, False, runs))
    print(f"(e) env steps/s once learning, rounds: SB3 {[round(x) for x in sb3]}, ours one process "
          f"{[round(x) for x in one]}, ours fleet {[round(x) for x in fleet]}")
    one_ratio, fleet_ratio = median(o / s for o, s in zip(one, sb3)), median(f / s for f, s in zip(fleet, sb3))
    print(f"(e) medians: SB3 DQN {median(sb3):,.1f}, ours one process {median(one):,.1f} ({one_ratio:.2f}x, goal >= 1.2x), "
          f"ours fleet {median(fleet):,.1f} ({fleet_ratio:.2f}x, goal >= 1.0x) env steps/s")
    problems = []
    if one_ratio < 1.2:
        problems.append(f"(e) one process / SB3 = {one_ratio:.2f}x (goal >= 1.2x)")
    if fleet_ratio < 1.0:
        problems.append(f"(e) fleet / SB3 = {fleet_ratio:.2f}x (goal >= 1.0x)")
    return problems


def alternating(rounds: int, *measures):
    """Run each of ``measures`` once per round, the order rotating every round; returns one list of results per measure."""
    results: list[list] = [[] for _ in measures]
    for r in range(rounds):
        for i in (list(range(len(measures))) if r % 2 == 0 else list(reversed(range(len(measures))))):
            results[i].append(measures[i]())
    return results


def part_d(args: argparse.Namespace) -> None:
    """(d): learner updates/s on the CPU (and on a GPU: eager, CUDA graph, replay on the learner)."""
    median = statistics.median
    replay = filled_replay()
    [cpu] = alternating(args.rounds, functools.partial(learner_updates_per_s, replay, args.seconds))
    print(f"(d) learner on CPU: {median(cpu):,.1f} updates/s (Nature CNN, batch 32, sampling included)")
    if torch.cuda.is_available():
        updates = functools.partial(learner_updates_per_s, replay, args.seconds, "cuda")
        eager, graphed, on_gpu = alternating(args.rounds, functools.partial(updates, cuda_graph=False),
                                             functools.partial(updates, cuda_graph=True),
                                             functools.partial(updates, cuda_graph=True, on_learner=True))
        print(f"(d) learner on {torch.cuda.get_device_name()}: eager {median(eager):,.0f}, CUDA graph {median(graphed):,.0f} "
              f"updates/s ({median(g / e for g, e in zip(graphed, eager)):.2f}x; batch 32, sampling included); CUDA graph "
              f"+ replay on the GPU (replay.on_learner) {median(on_gpu):,.0f} updates/s "
              f"({median(o / e for o, e in zip(on_gpu, eager)):.2f}x)")


def main() -> None:
    global ACTORS, ENVS, ENV_THREADS, CPUS_PER_ACTOR, GPUS_PER_ACTOR  # noqa: PLW0603 (the command line sets them)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="measuring time of one round of (a) and (d)")
    parser.add_argument("--steps", type=int, default=5000, help="env steps of each DQN run in (b)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per figure; medians are reported (>= 3)")
    parser.add_argument("--replay", nargs="+", choices=["uniform", "prioritized"], default=["uniform", "prioritized"],
                        help="(b): the replay kinds compared (each with the same kind on both sides)")
    parser.add_argument("--skip-rllib", action="store_true", help="(b): ours only, no comparison (no goal)")
    parser.add_argument("--skip-ours", action="store_true", help="skip (b) entirely")
    parser.add_argument("--actors", type=int, default=ACTORS, help="(a), (b): Ray actors")
    parser.add_argument("--envs", type=int, default=ENVS, help="(a), (b): envs per actor")
    parser.add_argument("--env-threads", type=int, default=ENV_THREADS, help="(a), (b): emulator threads per actor")
    parser.add_argument("--cpus-per-actor", type=float, default=CPUS_PER_ACTOR)
    parser.add_argument("--gpus-per-actor", type=float, default=GPUS_PER_ACTOR, help="> 0: actors infer on the GPU")
    parser.add_argument("--only", nargs="+", choices=list("abcde"), default=list("abcde"), help="the parts to run")
    parser.add_argument("--e-seconds", type=float, default=40, help="(e): measured seconds of each run once learning")
    args = parser.parse_args()
    parts = set(args.only)
    if "b" not in parts:
        args.skip_ours = True
    if args.rounds < 3:
        parser.error(f"--rounds: {args.rounds} is below 3; a median needs at least 3 rounds")
    if not (args.skip_ours or args.skip_rllib) and (why := rllib_missing()):
        print(f"error: (b) needs RLlib's DQN ({why}): pip install -e \".[rllib]\", or pass --skip-rllib / --skip-ours",
              file=sys.stderr)
        sys.exit(2)
    if "e" in parts and (why := sb3_missing()):
        print(f"error: (e) needs Stable-Baselines3 ({why}): pip install -e \".[bench]\", or leave e out of --only",
              file=sys.stderr)
        sys.exit(2)
    ACTORS, ENVS, ENV_THREADS = args.actors, args.envs, args.env_threads
    CPUS_PER_ACTOR, GPUS_PER_ACTOR = args.cpus_per_actor, args.gpus_per_actor
    import tempfile

    import ray

    median = statistics.median
    problems: list[str] = []
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"ray {ray.__version__}, GPU: {gpu}; medians of {args.rounds} interleaved rounds")
    # the raw baseline gets as many emulator threads as the fleet creates (overlapped actors: two halves each)
    threads = min(ACTORS * ENV_THREADS * 2, os.cpu_count())
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    best_fleet = 0.0
    for overlap, dtype in itertools.product((True, False), ("bfloat16", "float32")) if "a" in parts else ():
        fleet, raw = alternating(args.rounds, functools.partial(fleet_fps, ray, args.seconds, overlap, dtype),
                                 functools.partial(raw_env_fps, args.seconds, threads))
        ratio = median(f / r for f, r in zip(fleet, raw))
        best_fleet = max(best_fleet, ratio)
        print(f"(a) fleet of {ACTORS} actors x {ENVS} envs x {ENV_THREADS} threads, {dtype} inference on "
              f"{'GPU' if GPUS_PER_ACTOR else 'CPU'}, {'overlapped' if overlap else 'serial'} stepping: {median(fleet):,.0f} "
              f"frames/s / raw AtariVectorEnv ({ACTORS * ENVS} envs, {threads} threads) {median(raw):,.0f} frames/s; "
              f"ratio {ratio:.2f}")
    if "a" in parts and best_fleet < 0.70:
        problems.append(f"(a) the best fleet setting reached {best_fleet:.2f} of the raw env frames/s (goal >= 0.70)")
    for kind, b in replay_bytes().items() if "c" in parts else ():
        print(f"(c) replay {kind}: {b:,.0f} bytes per stored transition = {b / 1024:.2f} KB (goal <= 7.2 KB)")
        if b / 1024 > 7.2:
            problems.append(f"(c) replay {kind}: {b / 1024:.2f} KB per transition (goal <= 7.2 KB)")
    if "d" in parts:
        part_d(args)
    if not args.skip_ours:
        with tempfile.TemporaryDirectory() as tmp:
            for kind in args.replay:
                prioritized = kind == "prioritized"
                ours = functools.partial(ours_sps_new_run, tmp, args.steps, prioritized, itertools.count())
                if args.skip_rllib:
                    [mine] = alternating(args.rounds, ours)
                    print(f"(b) ours, {kind} replay: {median(mine):,.1f} env steps/s after learning starts")
                    continue
                mine, theirs = alternating(args.rounds, ours, functools.partial(rllib_sps, args.steps, prioritized))
                ratio = median(m / t for m, t in zip(mine, theirs))
                print(f"(b) {kind} replay on both: ours {median(mine):,.1f}, RLlib DQN {median(theirs):,.1f} env steps/s "
                      f"after learning starts; ours / RLlib = {ratio:.2f}x (goal >= 3x)")
                if ratio < 3:
                    problems.append(f"(b) {kind} replay: ours / RLlib = {ratio:.2f}x (goal >= 3x)")
    if "e" in parts:
        problems += part_e(args.e_seconds, args.rounds)
    ray.shutdown()
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)

if __name__ == "__main__":
    main()
