"""When a DQN run stops collecting, and how its summary says why: at dqn.total_env_steps (completed), after
dqn.max_time_s of training, or at the first evaluation that reaches evaluation.stop_at_return (stopped)."""
from __future__ import annotations

import math
import time
from typing import Any

from dl_ray.rl.spec import RLJobSpec
from dl_ray.statuses import COMPLETED, STOPPED, status_fields


class Stopping:
    def __init__(self, spec: RLJobSpec, counters: dict[str, int]):
        self.spec, self.counters = spec, counters
        self.start_steps = counters["env_steps"]
        self.collecting_since: float | None = None  # dqn.max_time_s counts from here
        self.reached: dict[str, Any] | None = None  # the evaluation that met stop_at_return, once the loop ends

    def due(self, best: dict[str, Any]) -> bool:
        """True once the loop should stop; ``best``: the best evaluation so far (``best_eval/*`` fields)."""
        return (self.counters["env_steps"] >= self.spec.dqn.total_env_steps or self._out_of_time()
                or self._goal_met(best))

    def ended(self, best: dict[str, Any]) -> None:
        """The loop is over: keep the evaluation that met the goal, if one did (the final evaluation may beat it,
        too late to stop anything)."""
        self.reached = dict(best) if self._goal_met(best) else None

    def status(self) -> dict[str, str]:
        """completed when the run reached dqn.total_env_steps; else stopped, saying by what (its return goal or
        max_time_s) and how far it got."""
        steps, total = self.counters["env_steps"], self.spec.dqn.total_env_steps
        if steps >= total:
            return status_fields(COMPLETED)
        share = f"{100 * steps / total:.1f} % of {total:,}"
        if self.reached:
            return status_fields(STOPPED, f"evaluation.stop_at_return ({self.spec.evaluation.stop_at_return:g}) reached: "
                                          f"return {self.reached['best_eval/return_mean']:.2f} at "
                                          f"{self.reached['best_eval/env_steps']:,} env steps, {share}")
        return status_fields(STOPPED, f"max_time_s ({self.spec.dqn.max_time_s:g} s) at {share} env steps")

    def _out_of_time(self) -> bool:
        """dqn.max_time_s counts from the first transitions this run collects: starting actors is not training."""
        limit = self.spec.dqn.max_time_s
        if limit is None:
            return False
        if self.collecting_since is None:
            if self.counters["env_steps"] > self.start_steps:
                self.collecting_since = time.monotonic()
            return False
        return time.monotonic() - self.collecting_since >= limit

    def _goal_met(self, best: dict[str, Any]) -> bool:
        """evaluation.stop_at_return: an evaluation (of this run or, resumed, of the run before) reached it."""
        goal = self.spec.evaluation.stop_at_return
        return goal is not None and best.get("best_eval/return_mean", -math.inf) >= goal
