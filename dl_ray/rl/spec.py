"""The RL job spec: one YAML file (``dl-ray dqn jobs/rl/dqn_pong.yaml``), validated into typed sections.

Same rules as the supervised spec (:mod:`dl_ray.spec`): every field has a docstring, every bad key, value,
override or environment id is one :class:`SpecError` line naming the dotted path and the allowed values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializeAsAny, ValidationError, model_validator

from dl_ray import kinds
from dl_ray.models import ModelConfig
from dl_ray.registry import MODELS
from dl_ray.spec import (OptimizerSpec, RunFolder, Section, SpecError, StorageSpec, TrackingSpec, describe, parse_named,
                          read_job)


class EnvSpec(Section):
    id: str = "ALE/Pong-v5"
    """Gymnasium id: ALE/<Game>-v5 (Atari, pixels), CartPole-v1 (vectors), FrozenLake-v1 / Taxi-v3 (tabular)."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra gymnasium.make arguments for non-Atari envs, e.g. {map_name: 4x4, is_slippery: true}."""
    frame_skip: int = Field(4, ge=1)
    """Atari: emulator frames per agent step (the emulator itself runs frameskip=1); max over the last two."""
    frame_stack: int = Field(4, ge=1)
    """Atari: frames stacked into one observation."""
    screen_size: int = Field(84, ge=16)
    """Atari: grayscale frames are resized to screen_size x screen_size."""
    noop_max: int = Field(30, ge=0)
    """Atari: up to this many no-op actions after each reset (training and evaluation)."""
    fire_reset: bool = True
    """Atari: press FIRE after reset in games that need it to start (Breakout, ...)."""
    terminal_on_life_loss: bool = True
    """Atari: a lost life ends the bootstrap (training only; evaluation plays whole games)."""
    clip_rewards: bool = True
    """Clip training rewards to [-1, 1]; returns are always reported unclipped."""
    sticky_actions: float = Field(0.0, ge=0, lt=1)
    """Atari: probability that the emulator repeats the previous action (Machado et al. use 0.25); 0 = off."""
    max_episode_frames: int = Field(108_000, ge=100)
    """Atari: an episode is truncated after this many emulator frames (30 minutes of play)."""

    @property
    def is_atari(self) -> bool:
        return self.id.startswith("ALE/")


class ExplorationSpec(Section):
    schedule: Literal["apex", "linear"] = "apex"
    """apex: fixed per-actor eps_i = epsilon^(1 + alpha*i/(N-1)); linear: every actor anneals start -> end."""
    epsilon: float = Field(0.4, gt=0, le=1)
    """apex: base epsilon."""
    alpha: float = Field(7.0, ge=0)
    """apex: spread of the per-actor epsilons (actor N-1 gets epsilon^(1+alpha))."""
    start: float = Field(1.0, ge=0, le=1)
    """linear: epsilon at env step 0."""
    end: float = Field(0.01, ge=0, le=1)
    """linear: epsilon after anneal_steps env steps, kept from then on."""
    anneal_steps: int = Field(100_000, ge=1)
    """linear: env steps (all actors together) over which epsilon goes from start to end."""


class ActorsSpec(Section):
    num_actors: int = Field(2, ge=0)
    """Ray actors playing in parallel (each with its own epsilon and Q-network copy). 0 = one process, no Ray:
    one env runner of envs_per_actor envs steps and the learner learns in the driver, torch using
    learner.num_cpus threads for both (a laptop: no object store, no core split between processes)."""
    envs_per_actor: int = Field(8, ge=1)
    """Environments each actor steps as one vector (batched inference)."""
    steps_per_call: int = Field(32, ge=1)
    """K: vector steps per actor call; transitions go to replay in chunks of K x envs_per_actor and the
    actor takes the latest weights (one object-store put shared by all actors) at every call."""
    cpus_per_actor: float = Field(1.0, gt=0)
    """CPUs Ray reserves for each actor (0.5 lets 2 actors and the learner share 2 cores)."""
    env_threads: int = Field(1, ge=1)
    """Atari: C++ threads of each actor's AtariVectorEnv."""
    overlap: bool = False
    """Atari: step half of the envs while the Q-network picks the other half's actions, so inference hides
    behind emulation (each half has env_threads emulator threads). Pays when the actor has a spare core (one
    actor x 8 envs on 2 cores: 1.3-1.4x frames/s); costs when cores are already busy (half-size batches)."""
    gpus_per_actor: float = Field(0.0, ge=0, le=1)
    """GPU share Ray reserves for each actor; > 0 runs the actor's Q-network on that GPU (a 16-core host with
    one GPU: 0.05 frees the cores for the emulators); 0 = inference on the actor's CPUs."""
    inference_dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of the actors' Q-network copies (the learner and evaluation stay float32). bfloat16 halves
    the bytes read per forward pass and, on CPUs with AVX-512 BF16 or AMX, about halves inference time (Nature
    CNN, 2 cores: fleet frames/s 1.3x); older CPUs emulate it (slower). Greedy actions can differ from
    float32's only where two Q-values are within bfloat16 rounding (~0.5 % of their scale)."""
    exploration: ExplorationSpec = ExplorationSpec()

    @property
    def one_process(self) -> bool:
        return self.num_actors == 0

    @property
    def runners(self) -> int:
        """Env runners: the Ray actors, or the one runner of the one-process mode."""
        return max(1, self.num_actors)


class ReplaySpec(Section):
    capacity: int = Field(1_000_000, ge=100)
    """Stored frames over all shards (one 84x84 frame per transition; stacks are rebuilt by index)."""
    shards: int = Field(1, ge=1)
    """Replay Ray actors; actor i writes to shard i % shards, the learner samples them in turn."""
    prioritized: bool = False
    """Prioritized replay (proportional, sum tree) instead of uniform sampling."""
    priority_alpha: float = Field(0.6, ge=0, le=1)
    """prioritized: P(i) ~ |td_error_i|^alpha."""
    priority_beta: float = Field(0.4, ge=0, le=1)
    """prioritized: importance-sampling exponent at the start, annealed linearly to 1 at the last step."""
    on_learner: bool = False
    """Keep the replay inside the learner, its frames on the learner's device (a GPU: 1M frames = 7 GB of its
    memory): sampling is an index gather there and no batch crosses the object store. Needs shards: 1."""
    save_in_checkpoint: bool = False
    """Also checkpoint the replay contents (large); otherwise a resumed run refills it from learning_starts."""


class DQNSpec(Section):
    total_env_steps: int = Field(1_000_000, ge=1)
    """Agent steps over all actors (Atari: one step = frame_skip emulator frames)."""
    gamma: float = Field(0.99, gt=0, le=1)
    """Discount of future rewards."""
    batch_size: int = Field(32, ge=1)
    """Transitions per gradient update."""
    replay_ratio: float = Field(8.0, gt=0)
    """Sampled transitions per env step, enforced by the driver (8 = batch 32 every 4 steps, as in Nature DQN)."""
    learning_starts: int = Field(20_000, ge=1)
    """Env steps collected before the first update."""
    target_update_every: int = Field(2_000, ge=1)
    """C: the target network is a copy of the online network, refreshed every C updates."""
    grad_clip: float | None = Field(10.0, gt=0)
    """Clip the global gradient norm to this value; null = no clipping."""
    updates_per_call: int = Field(32, ge=1)
    """Updates the learner runs per Ray call (with one replay sample of that many batches)."""
    max_update_lag: int = Field(4, ge=1)
    """Learner calls the actors may run ahead of the replay ratio before the driver pauses them."""
    log_every_env_steps: int = Field(10_000, ge=1)
    """A metrics.csv row (and a progress line) every so many env steps."""
    progress_every_s: float = Field(10.0, gt=0)
    """Also a row and a progress line whenever this many seconds passed since the last one (slow envs, large
    log_every_env_steps)."""
    max_time_s: float | None = Field(None, gt=0)
    """Stop collecting after this many seconds of training, counted from the first transitions (actor start-up
    excluded); the owed updates, the checkpoint and the final evaluation still run. null = run to total_env_steps."""


class LearnerSpec(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = a GPU when the Ray cluster has one, else CPU."""
    num_cpus: float = Field(1.0, gt=0)
    """CPUs Ray reserves for the learner (also its torch threads, rounded up); with actors.num_actors: 0, the
    torch threads of the one process (learning and acting)."""
    cuda_graph: bool = True
    """On a GPU, capture the update (loss, backward, clipping, optimiser step) once as a CUDA graph and replay
    it: small Q-networks are bound by kernel launches, not arithmetic. Ignored on CPU."""


class EvalSpec(Section):
    episodes: int = Field(30, ge=1)
    """Episodes per evaluation (whole games: no life-loss terminal, unclipped rewards, no-op starts)."""
    epsilon: float = Field(0.05, ge=0, le=1)
    """Epsilon of the evaluation policy."""
    every_env_steps: int | None = Field(250_000, ge=1)
    """Evaluate in the background every so many env steps (and always at the end); null = only at the end."""
    video: bool = False
    """Atari: at the end, record one evaluation game as ``eval_episode.gif`` in the run folder (and W&B)."""
    stop_at_return: float | None = None
    """Stop once an evaluation's mean return reaches this (CartPole-v1 counts 475 as solved): the run is done
    learning, so the rest of total_env_steps would only cost time; the owed updates, the checkpoint and the final
    evaluation still run. Needs every_env_steps. null = run to total_env_steps."""


class QLearningSpec(Section):
    episodes: int = Field(20_000, ge=1)
    """Training episodes."""
    alpha: float = Field(0.1, gt=0, le=1)
    """Learning rate of the Bellman update Q += alpha * (r + gamma * max Q' - Q); 1 suits deterministic envs."""
    alpha_end: float | None = Field(None, gt=0, le=1)
    """If set, alpha decays linearly to this value over the episodes."""
    gamma: float = Field(0.99, gt=0, le=1)
    """Discount of future rewards."""
    epsilon_start: float = Field(1.0, ge=0, le=1)
    """Exploration at the first episode."""
    epsilon_end: float = Field(0.05, ge=0, le=1)
    """Exploration after decay_fraction of the episodes."""
    decay_fraction: float = Field(0.5, gt=0, le=1)
    """Fraction of the episodes over which epsilon decays linearly."""
    eval_episodes: int = Field(1000, ge=1)
    """Greedy evaluation episodes at the end (success rate = share of episodes with a positive return)."""


class CheckpointSpec(Section):
    every_env_steps: int = Field(100_000, ge=1)
    """Save learner, optimiser, counters (and replay if replay.save_in_checkpoint) every so many env steps."""


class RLJobSpec(RunFolder, Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Job name (letters, digits, '_', '-', '.')."""
    description: str = ""
    kind: Literal["dqn", "q_learning"]
    """dqn (Ray actors, replay, target network) or q_learning (tabular, FrozenLake/Taxi)."""
    seed: int = 0
    """Seeds networks, environments and exploration."""
    env: EnvSpec = EnvSpec()
    model: SerializeAsAny[ModelConfig] | None = None
    """Q-network (nature_cnn for Atari, q_mlp for vectors); dqn only."""
    dqn: DQNSpec = DQNSpec()
    optimizer: OptimizerSpec = OptimizerSpec(name="adam", lr=1e-4)
    replay: ReplaySpec = ReplaySpec()
    actors: ActorsSpec = ActorsSpec()
    learner: LearnerSpec = LearnerSpec()
    evaluation: EvalSpec = EvalSpec()
    q_learning: QLearningSpec = QLearningSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    tracking: TrackingSpec = TrackingSpec()
    storage: StorageSpec = StorageSpec()

    @model_validator(mode="after")
    def _consistent(self):
        if self.kind == "dqn" and self.model is None:
            raise ValueError("dqn needs a model section (name: nature_cnn for Atari, q_mlp for vector observations)")
        if self.evaluation.video and not self.env.is_atari:
            raise ValueError(f"evaluation.video records Atari games (ALE/...); {self.env.id} has no video here: set it false")
        if self.evaluation.stop_at_return is not None and self.evaluation.every_env_steps is None:
            raise ValueError(f"evaluation.stop_at_return: {self.evaluation.stop_at_return:g} is judged by the evaluations "
                             "during the run: set evaluation.every_env_steps, or stop_at_return: null")
        if self.replay.on_learner and self.replay.shards != 1:
            raise ValueError(f"replay.on_learner keeps one replay in the learner: set replay.shards to 1 (got {self.replay.shards})")
        if self.kind == "dqn" and self.actors.one_process:
            _refuse_fleet_only(self)
        if self.replay.capacity < self.replay.shards * 1000:
            raise ValueError(f"replay.capacity must hold >= 1000 frames per shard (got {self.replay.capacity})")
        return self


def _refuse_fleet_only(spec: RLJobSpec) -> None:
    """actors.num_actors: 0 runs without Ray actors: fields that only shape the fleet cannot apply."""
    if spec.actors.gpus_per_actor > 0:
        raise ValueError(f"actors.gpus_per_actor: {spec.actors.gpus_per_actor:g} is a Ray actor's GPU share; with "
                         "actors.num_actors: 0 (one process) set it to 0, or use actors.num_actors >= 1")
    if spec.replay.shards != 1:
        raise ValueError(f"replay.shards: {spec.replay.shards} shards are Ray actors; with actors.num_actors: 0 "
                         "(one process) set it to 1, or use actors.num_actors >= 1")


def load_rl_spec(path: str | Path, overrides: list[str] = ()) -> RLJobSpec:
    raw = read_job(path, overrides)
    kinds.require(raw, "dqn", str(path))
    return parse_rl_spec(raw)


def parse_rl_spec(raw: dict) -> RLJobSpec:
    raw = dict(raw)
    kinds.require(raw, "dqn")
    if raw.get("model") is not None:
        raw["model"] = parse_named(raw["model"], "model", MODELS, "dqn")
    try:
        spec = RLJobSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(describe(e, RLJobSpec, "")) from None
    return spec
