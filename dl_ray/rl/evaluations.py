"""A DQN run's evaluations: whole games with the evaluation protocol, each logged with its seed, the best one's
weights kept in ``best_weights.pt``, each announcing its progress every ``dqn.progress_every_s`` while it plays.

On a cluster an evaluation is a background Ray task (``self.ray`` is the ``ray`` module): its progress reports come
back through a Ray queue that the driver drains (:meth:`Evaluations.poll`). In one process (``self.ray`` is
:class:`~dl_ray.rl.inline.Inline`) it plays in place and prints its progress itself. Ray appears only on the lines
marked ``# [Ray]``.
"""
from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
import torch

from dl_ray.rl.envs import EnvInfo
from dl_ray.rl.outputs import RunFolder
from dl_ray.rl.progress import RunLog
from dl_ray.rl.runner import EvalProgress, evaluate
from dl_ray.rl.spec import RLJobSpec

POLL_EVERY_S = 0.5  # how often the driver looks for a background evaluation's progress reports


def eval_seed(spec: RLJobSpec, env_steps: int) -> int:
    """The seed of the evaluation at ``env_steps`` (recorded in metrics.csv; ``dl-ray eval`` replays with it)."""
    return spec.seed + 7_777 + env_steps


def _put(queue: Any, steps: int, progress: dict[str, float]) -> None:
    queue.put_nowait((steps, progress))  # [Ray] from the evaluation task to the driver


def best_so_far(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The best evaluation among a run's metrics rows (those a resumed run keeps), as ``best_eval/*`` fields."""
    evaluated = [r for r in rows if "eval/return_mean" in r]
    if not evaluated:
        return {}
    best = max(evaluated, key=lambda r: r["eval/return_mean"])
    seed = {"best_eval/seed": int(best["eval/seed"])} if "eval/seed" in best else {}  # runs before seeds were logged
    return {"best_eval/return_mean": best["eval/return_mean"], "best_eval/env_steps": int(best["env_steps"]), **seed}


class Evaluations:
    def __init__(self, ray: Any, spec: RLJobSpec, info: EnvInfo, folder: RunFolder, log: RunLog):
        self.ray, self.spec, self.info, self.folder, self.log = ray, spec, info, folder, log
        self.play = ray.remote(num_cpus=0)(evaluate)  # [Ray]
        self.pending: dict[Any, tuple[int, Any, float]] = {}  # result ref -> (env steps, weights ref, start time)
        self.best = best_so_far(folder.history.rows)  # a resumed run keeps the best it had: never overwritten by a worse one
        self.last: dict[str, float] = {}
        self.queue: Any = None  # a cluster's progress reports (created with the first evaluation)
        self.polled = 0.0

    def submit(self, steps: int, weights: Any, final: bool = False) -> Any:
        """Start the evaluation of ``weights`` at ``steps`` env steps; its result ref."""
        e = self.spec.evaluation
        seed = eval_seed(self.spec, steps)
        if self.spec.actors.one_process or final:  # the run waits for this one: say so
            self.log.print(f"evaluating at {steps:,} env steps: {e.episodes} episodes, seed {seed}…")
        started = time.monotonic()  # one process: the call below plays the games before it returns
        ref = self.play.remote(self.spec, self.info, weights, e.episodes, e.epsilon, seed,  # [Ray]
                               self.spec.actors.env_threads, self._reporter(steps))
        self.pending[ref] = (steps, weights, started)
        return ref

    def _reporter(self, steps: int) -> EvalProgress:
        if self.spec.actors.one_process:  # it plays here and now: print straight away
            return functools.partial(self.log.eval_progress, steps)
        if self.queue is None:
            from ray.util.queue import Queue  # [Ray]

            self.queue = Queue(actor_options={"num_cpus": 0})  # [Ray]
        return functools.partial(_put, self.queue, steps)

    def poll(self, now: bool = False) -> None:
        """Print the progress reports background evaluations sent (at most every POLL_EVERY_S unless ``now``)."""
        if self.queue is None or not (now or time.monotonic() - self.polled >= POLL_EVERY_S):
            return
        self.polled = time.monotonic()
        for steps, progress in self.queue.get_nowait_batch(self.queue.qsize()):  # [Ray]
            self.log.eval_progress(steps, progress)

    def done(self, ref: Any, final: bool = False) -> None:
        """Log a finished evaluation (with its seed), keep the best weights, print its result."""
        self._wait(ref)
        steps, weights, started = self.pending.pop(ref)
        result = self.ray.get(ref) | {"eval/seed": eval_seed(self.spec, steps)}  # [Ray]
        self.last = result
        self.folder.log({"env_steps": steps, **result})
        if result["eval/return_mean"] > self.best.get("best_eval/return_mean", -np.inf):
            self.best = {"best_eval/return_mean": result["eval/return_mean"], "best_eval/env_steps": steps,
                         "best_eval/seed": result["eval/seed"]}
            torch.save(self.ray.get(weights) | {"env_steps": steps}, self.folder.dir / "best_weights.pt")  # [Ray]
        self.log.print(f"evaluation at {steps:,} env steps: return {result['eval/return_mean']:.2f} "
                       f"± {result['eval/return_std']:.2f} over {result['eval/episodes']} episodes "
                       f"(seed {result['eval/seed']}, {time.monotonic() - started:.0f} s)" + (" (final)" if final else ""))

    def _wait(self, ref: Any) -> None:
        """Wait for ``ref``, printing the progress it reports meanwhile."""
        while self.queue is not None and not self.ray.wait([ref], num_returns=1, timeout=POLL_EVERY_S)[0]:  # [Ray]
            self.poll(now=True)
        self.poll(now=True)

    def final(self, steps: int, weights: Any) -> None:
        """At the end: let the background evaluations finish, then evaluate the final weights."""
        for ref in list(self.pending):
            self.done(ref)
        self.done(self.submit(steps, weights, final=True), final=True)

    def close(self) -> None:
        if self.queue is not None:
            self.queue.shutdown(force=True)  # [Ray] every evaluation has finished

    def video(self, steps: int, weights: Any) -> None:
        from dl_ray.rl.video import record_episode

        task = self.ray.remote(num_cpus=0)(record_episode)  # [Ray]
        gif, result = self.ray.get(task.remote(self.spec, self.info, weights, self.spec.seed + 9_999))  # [Ray]
        path = self.folder.dir / "eval_episode.gif"
        path.write_bytes(gif)
        self.folder.log_video(path, steps, result)
        self.last |= result
        self.log.print(f"video of one evaluation game (return {result['video/return']:.0f}, "
                       f"{result['video/steps']:,} steps) → {path}")
