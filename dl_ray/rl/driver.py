"""Driver of ``dl-ray dqn``: Ape-X style DQN on Ray actors, and tabular Q-learning.

The loop reads top to bottom: N env-runner actors play and return replay chunks, which go straight to the
replay shards (actor i -> shard i % S) without passing through the driver; the learner samples a shard
and runs ``updates_per_call`` updates per call (``replay.on_learner``: the learner itself keeps the one
replay, frames on its GPU, and samples it there). The driver owns the replay ratio (sampled transitions per
env step): it submits learner calls as env steps arrive and holds actors back when the learner falls more
than ``max_update_lag`` calls behind. Weights go to the object store once per learner call and every actor
reads that one copy at its next call (every K steps). A dead actor is replaced with the same index
(same epsilon); the learner never waits on it. Ray appears only on the lines marked ``# [Ray]``. What the run
prints and logs as it goes is :class:`~dl_ray.rl.progress.RunLog`'s; its evaluations are
:class:`~dl_ray.rl.evaluations.Evaluations`'; when it stops, and what its summary says of why, is
:class:`~dl_ray.rl.stopping.Stopping`'s.

``actors.num_actors: 0`` runs this same loop in one process: ``self.ray`` is then :class:`~dl_ray.rl.inline.Inline`,
which makes each call when the loop makes it (one env runner, the replay and the learner live in the driver).
"""
from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console

from dl_ray.rl.envs import EnvInfo, describe_env
from dl_ray.rl.evaluations import Evaluations
from dl_ray.rl.learner import Learner
from dl_ray.rl.outputs import RunFolder
from dl_ray.rl.plan import start_plan
from dl_ray.rl.progress import RunLog
from dl_ray.rl.replay import FrameReplay
from dl_ray.rl.runner import EnvRunner, build_qnet
from dl_ray.rl.spec import RLJobSpec, SpecError, parse_rl_spec
from dl_ray.rl.stopping import Stopping
from dl_ray.train.runner import folder_line


def check(spec: RLJobSpec) -> EnvInfo:
    """Everything knowable before starting: the env exists, the Q-network fits it, the run folder agrees."""
    info = describe_env(spec.env)
    if spec.kind == "q_learning":
        if info.num_states is None:
            raise SpecError(f"kind: q_learning needs discrete states (FrozenLake-v1, Taxi-v3); {spec.env.id} has {info.obs_shape}")
    else:
        if info.num_states is not None:
            raise SpecError(f"kind: dqn needs vector or image observations; {spec.env.id} has discrete states (use q_learning)")
        try:
            build_qnet(spec, info)
        except ValueError as e:
            raise SpecError(str(e)) from None
        if spec.replay.shards > spec.actors.runners:
            raise SpecError(f"replay.shards: {spec.replay.shards} shards need >= as many actors (actors.num_actors={spec.actors.num_actors})")
    RunFolder(spec).check()
    return info


def learner_gpus(spec: RLJobSpec, resources: dict[str, float]) -> float:
    """The GPU share the learner takes on a cluster with these resources (0: CPU); CPUs or GPUs the actors and
    the learner ask for but the cluster lacks are a one-line SpecError."""
    a, learner = spec.actors, spec.learner
    want = a.num_actors * a.cpus_per_actor + learner.num_cpus
    if want > resources.get("CPU", 0):
        raise SpecError(f"actors.cpus_per_actor: {a.num_actors} actors x {a.cpus_per_actor} + learner.num_cpus "
                        f"{learner.num_cpus} = {want:g} CPUs, the Ray cluster has {resources.get('CPU', 0):g}; "
                        f"lower actors.num_actors, actors.cpus_per_actor or learner.num_cpus")
    gpus = resources.get("GPU", 0)
    actor_gpus = a.num_actors * a.gpus_per_actor
    if actor_gpus > gpus:
        raise SpecError(f"actors.gpus_per_actor: {a.num_actors} actors x {a.gpus_per_actor:g} GPU, the Ray cluster "
                        f"has {gpus:g} GPUs; use 0 (inference on CPU) or fewer actors")
    free = min(1.0, gpus - actor_gpus)  # the learner shares a single GPU with the actors' inference
    if learner.device == "cuda" and free < 0.5:
        raise SpecError(f"learner.device: cuda, but the Ray cluster has {gpus:g} GPUs ({actor_gpus:g} for the actors); "
                        "allowed: auto, cpu")
    return free if learner.device == "cuda" or (learner.device == "auto" and free >= 0.5) else 0


def run(spec: RLJobSpec, console: Console, verbose: bool = False) -> dict[str, Any]:
    raw = spec.to_dict()
    raw["storage"]["path"] = str(spec.run_dir.parent)
    spec = parse_rl_spec(raw)
    info = check(spec)
    if spec.kind == "q_learning":
        from dl_ray.rl.tabular import run_q_learning

        return run_q_learning(spec, info, console)
    if spec.actors.one_process:
        from dl_ray.rl.inline import Inline

        return DQNRun(spec, info, console, Inline()).run()
    from dl_ray.train.runner import quiet_ray, ensure_ray

    quiet_ray(verbose)
    ensure_ray(verbose)
    import ray  # [Ray]

    try:
        return DQNRun(spec, info, console, ray).run()
    except ray.exceptions.RayError as e:  # [Ray] a learner or replay failure: one line, the rest in error.txt
        from dl_ray.train.runner import RunError, explain_failure

        raise RunError(explain_failure(e, spec.run_dir)) from e


class ReplayInLearner:
    """``replay.on_learner``: the learner's own replay, addressed like a replay shard actor."""

    def __init__(self, learner: Any):
        self.add, self.stats = learner.replay_add, learner.replay_stats
        self.state, self.load_state = learner.replay_state, learner.replay_load_state


class DQNRun:
    def __init__(self, spec: RLJobSpec, info: EnvInfo, console: Console, ray: Any = None):
        if ray is None:
            import ray  # [Ray]
        self.ray, self.spec, self.info, self.console = ray, spec, info, console
        self.gpus = learner_gpus(spec, ray.cluster_resources())  # [Ray] before anything is written
        self.device = "cuda" if self.gpus else "cpu"
        self.threads = max(1, math.ceil(spec.learner.num_cpus))
        self.folder = RunFolder(spec)
        plan = start_plan(spec)  # before open(): it reads the folder as the dry run does
        saved = self.folder.open()
        self.counters = dict(saved["counters"]) if saved else {"env_steps": 0, "episodes": 0, "actor_restarts": 0}
        self.learner = ray.remote(Learner).options(num_cpus=spec.learner.num_cpus, num_gpus=self.gpus).remote(  # [Ray]
            spec, info, self.device, self.threads)
        self.shards = self._replay()
        restored = bool(saved and saved["replay"])
        if saved:
            ray.get([self.learner.load_state.remote(saved["learner"])]  # [Ray]
                    + [s.load_state.remote(state) for s, state in zip(self.shards, saved["replay"])])
        self.updates_done = self.updates_submitted = self.base_updates = saved["learner"]["updates"] if saved else 0
        self.ready_at = self.counters["env_steps"] + (0 if restored else spec.dqn.learning_starts)
        self.weights = self.learner.weights.remote()  # [Ray] one put, read by every actor
        self.log = RunLog(spec, console, self.folder, self.counters, self.updates_done)
        self.evals = Evaluations(ray, spec, info, self.folder, self.log)
        self.actors: dict[int, Any] = {}
        self.collecting: dict[Any, tuple[int, Any]] = {}  # stats ref -> (actor index, chunk ref)
        self.paused: list[int] = []
        self.training: dict[Any, Any] = {}  # metrics ref -> the shard it sampled
        self._header(plan)

    def _replay(self) -> list[Any]:
        r, info = self.spec.replay, self.info
        if r.on_learner:
            return [ReplayInLearner(self.learner)]
        Shard = self.ray.remote(num_cpus=0)(FrameReplay)  # [Ray]
        return [Shard.remote(r.capacity // r.shards, info.frame_shape, info.obs_dtype, info.stack, r.prioritized,
                             r.priority_alpha, self.spec.seed + s) for s in range(r.shards)]

    def _header(self, plan: str) -> None:
        a, spec = self.spec.actors, self.spec
        layout = (f"one process ({a.envs_per_actor} envs, {self.threads} torch threads)" if a.one_process
                  else f"{a.num_actors} actors x {a.envs_per_actor} envs")
        self.console.print(f"[bold]{spec.name}[/]: DQN on {spec.env.id}, {layout}, learner on {self.device}",
                           soft_wrap=True)
        self.console.print(folder_line(self.folder.dir, plan), highlight=False, soft_wrap=True)

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        spec, c = self.spec, self.counters
        total = spec.dqn.total_env_steps
        for i in range(spec.actors.runners):
            self._start_actor(i)
            self._collect(i)
        next_ckpt = self._next(c["env_steps"], spec.checkpoint.every_env_steps)
        every_eval = spec.evaluation.every_env_steps
        next_eval = self._next(c["env_steps"], every_eval) if every_eval else None
        self.t0 = time.monotonic()
        self.log.start()
        self.stopping = Stopping(spec, c)
        with self.log.progress_bar() as bar:
            task = bar.add_task("", total=total, completed=c["env_steps"], stats="")
            while not self.stopping.due(self.evals.best):
                self._submit_updates()
                self._wait_and_handle()
                if self.log.due():
                    self.log.row(self.updates_done)
                if next_eval is not None and total > c["env_steps"] >= next_eval:  # the last one is the final eval
                    next_eval = self._next(c["env_steps"], every_eval)
                    self.evals.submit(c["env_steps"], self.weights)
                if c["env_steps"] >= next_ckpt:
                    next_ckpt = self._next(c["env_steps"], spec.checkpoint.every_env_steps)
                    self._checkpoint()
                bar.update(task, completed=min(c["env_steps"], total), stats=self.log.stats_text(self.updates_done))
        self.stopping.ended(self.evals.best)
        return self._end()

    def _end(self) -> dict[str, Any]:
        """The owed updates, a last row and checkpoint, the final evaluation (and video), the summary."""
        self._catch_up()
        if self.log.mark[1] != self.counters["env_steps"]:
            self.log.row(self.updates_done)
        self._checkpoint()
        self.evals.final(self.counters["env_steps"], self.weights)
        if self.spec.evaluation.video:
            self.evals.video(self.counters["env_steps"], self.weights)
        return self._finish()

    @staticmethod
    def _next(now: int, every: int) -> int:
        return (now // every + 1) * every

    def _wait_and_handle(self) -> None:
        ray = self.ray
        pending = list(self.collecting) + list(self.training) + list(self.evals.pending)
        ready, _ = ray.wait(pending, num_returns=1, timeout=1.0)  # [Ray]
        for ref in ready:
            if ref in self.collecting:
                self._chunk_done(ref)
            elif ref in self.training:
                self._training_done(ref)
            else:
                self.evals.done(ref)
        self.evals.poll()
        if self.paused and not self._learner_behind():
            for i in self.paused:
                self._collect(i)
            self.paused = []

    # ------------------------------------------------------------------ actors

    def _start_actor(self, i: int) -> None:
        a = self.spec.actors
        seed = self.spec.seed + 10_000 * i + 1_000_000 * self.counters["actor_restarts"] + self.counters["env_steps"]
        Actor = self.ray.remote(EnvRunner).options(num_cpus=a.cpus_per_actor, num_gpus=a.gpus_per_actor, max_restarts=0)  # [Ray]
        self.actors[i] = Actor.remote(self.spec, self.info, i, seed, self.threads if a.one_process else 1)

    def _collect(self, i: int) -> None:
        stats, chunk = self.actors[i].collect.options(num_returns=2).remote(  # [Ray]
            self.weights, self.spec.actors.steps_per_call, self.counters["env_steps"])
        self.collecting[stats] = (i, chunk)

    def _chunk_done(self, ref: Any) -> None:
        i, chunk = self.collecting.pop(ref)
        try:
            stats = self.ray.get(ref)  # [Ray]
        except self.ray.exceptions.RayActorError as e:  # [Ray] the actor died: replace it, same index and epsilon
            self.counters["actor_restarts"] += 1
            self.log.print(f"actor {i} died ({type(e).__name__}); restarted it "
                               f"({self.counters['actor_restarts']} restarts so far)")
            self._start_actor(i)
            self._collect(i)
            return
        self.shards[i % len(self.shards)].add.remote(chunk)  # [Ray] the chunk never visits the driver
        self.counters["env_steps"] += stats["steps"]
        self.counters["episodes"] += len(stats["episodes"])
        self.log.chunk(i, stats)
        if self._learner_behind():
            self.paused.append(i)
        else:
            self._collect(i)

    # ------------------------------------------------------------------ learner and replay ratio

    def _updates_due(self) -> int:
        d = self.spec.dqn
        return self.base_updates + int(max(0, self.counters["env_steps"] - self.ready_at) * d.replay_ratio / d.batch_size)

    def _learner_behind(self) -> bool:
        d = self.spec.dqn
        return self._updates_due() - self.updates_done > d.max_update_lag * d.updates_per_call

    def _submit_updates(self) -> None:
        d, r = self.spec.dqn, self.spec.replay
        if self.counters["env_steps"] < self.ready_at:
            return
        while len(self.training) < 2 and self.updates_submitted + d.updates_per_call <= self._updates_due():
            shard = self.shards[(self.updates_submitted // d.updates_per_call) % len(self.shards)]
            beta = r.priority_beta + (1 - r.priority_beta) * min(1.0, self.counters["env_steps"] / d.total_env_steps)
            if r.on_learner:
                metrics = self.learner.train_on_replay.remote(d.updates_per_call, beta)  # [Ray]
            else:
                sample = shard.sample.remote(d.updates_per_call * d.batch_size, beta)  # [Ray]
                metrics, positions, td_abs = self.learner.train.options(num_returns=3).remote(sample, d.updates_per_call)  # [Ray]
                if r.prioritized:
                    shard.update_priorities.remote(positions, td_abs)  # [Ray] straight from learner to replay
            self.training[metrics] = shard
            self.updates_submitted += d.updates_per_call

    def _training_done(self, ref: Any) -> None:
        self.training.pop(ref)
        m = self.ray.get(ref)  # [Ray]
        if m["updates"] <= self.updates_done:  # ray.wait may report two finished calls out of order
            return
        self.updates_done, self.log.loss, self.log.q_mean = m["updates"], m["loss"], m["q_mean"]
        self.weights = self.learner.weights.remote()  # [Ray] fresh weights for the actors' next calls

    def _catch_up(self) -> None:
        """At the end: run the updates still owed by the replay ratio, then let them land."""
        while True:
            self._submit_updates()
            if not self.training:
                return
            ready, _ = self.ray.wait(list(self.training), num_returns=1)  # [Ray]
            self._training_done(ready[0])

    # ------------------------------------------------------------------ checkpoints and the end

    def _checkpoint(self) -> None:
        ray = self.ray
        learner = ray.get(self.learner.state.remote())  # [Ray] queued after the in-flight updates
        replay = ray.get([s.state.remote() for s in self.shards]) if self.spec.replay.save_in_checkpoint else None  # [Ray]
        self.folder.save({"learner": learner, "counters": dict(self.counters), "spec": self.spec.to_dict()}, replay)

    def _finish(self) -> dict[str, Any]:
        replay = self.ray.get([s.stats.remote() for s in self.shards])  # [Ray]
        best = self.evals.best
        summary = {**self.stopping.status(), "kind": "dqn", "env": self.spec.env.id, **self.counters,
                   "updates": self.updates_done, "time_s": time.monotonic() - self.t0,
                   "recent_return": self.log.recent_return(), "replay_frames": sum(s["frames"] for s in replay),
                   "replay_bytes_per_slot": sum(s["bytes"] for s in replay) / self.spec.replay.capacity,
                   **self.evals.last, **best}
        for actor in self.actors.values():
            self.ray.kill(actor)  # [Ray]
        self.evals.close()
        self.folder.finish(summary)
        kept = (f" (best {best['best_eval/return_mean']:.2f} at {best['best_eval/env_steps']:,} env steps: "
                f"best_weights.pt)" if best and best["best_eval/env_steps"] != summary["env_steps"] else "")
        why = f" (stopped: {summary['stop_reason']})" if "stop_reason" in summary else ""
        self.console.print(f"done: {summary['env_steps']:,} env steps{why}, {summary['updates']:,} updates, "
                           f"eval return {summary.get('eval/return_mean', float('nan')):.2f}{kept} → {self.folder.dir}",
                           soft_wrap=True, highlight=False)
        return summary
