"""What a DQN run says while it runs: a progress line and a ``metrics.csv`` row every ``dqn.log_every_env_steps``
env steps and at least every ``dqn.progress_every_s`` seconds (so a one-minute run draws curves, not a dot), the
evaluations' own progress, and the done line. Plain Python: no Ray (the driver feeds it numbers).
"""
from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dl_ray.fmt import count
from dl_ray.rl.outputs import RunFolder
from dl_ray.rl.spec import RLJobSpec


class RunLog:
    """The run's training statistics (recent returns, epsilons, loss) and the lines and rows made of them."""

    def __init__(self, spec: RLJobSpec, console: Console, folder: RunFolder, counters: dict[str, int], updates: int):
        self.spec, self.console, self.folder, self.counters = spec, console, folder, counters
        self.returns: deque[float] = deque(maxlen=100)
        self.epsilons: dict[int, float] = {}
        self.loss, self.q_mean = float("nan"), float("nan")
        self.t0 = time.monotonic()
        self.mark = (self.t0, counters["env_steps"], updates)  # time, env steps, updates of the last row
        self.next_row = self._next(counters["env_steps"])
        self.bar: Progress | None = None

    def start(self) -> None:
        """The loop starts: times and rates count from here (starting the actors is not training)."""
        self.t0 = time.monotonic()
        self.mark = (self.t0, *self.mark[1:])

    def chunk(self, actor: int, stats: dict[str, Any]) -> None:
        """An actor's call came back: its finished episodes and its epsilon."""
        self.returns.extend(ret for ret, _ in stats["episodes"])
        self.epsilons[actor] = stats["epsilon"]

    def due(self) -> bool:
        """A row is due: dqn.log_every_env_steps env steps, or dqn.progress_every_s seconds with new env steps."""
        t, steps, _ = self.mark
        now = self.counters["env_steps"]
        return now >= self.next_row or (time.monotonic() - t >= self.spec.dqn.progress_every_s and now > steps)

    def row(self, updates: int) -> None:
        """Log a metrics.csv row and print its progress line."""
        c, r = self.counters, self._rates(updates)
        row = {"env_steps": c["env_steps"], "updates": updates, "episodes": c["episodes"],
               "episodic_return": self.recent_return(), "loss": self.loss, "q_mean": self.q_mean,
               "sps": r["sps"], "updates_per_s": r["updates_per_s"], "epsilon": self._epsilon(),
               "actor_restarts": c["actor_restarts"], "time_s": time.monotonic() - self.t0}
        self.folder.log({k: v for k, v in row.items() if v is not None and v == v})
        line = f"{count(c['env_steps']):>5} steps  {self.stats_text(updates)}"
        self.mark = (time.monotonic(), c["env_steps"], updates)
        self.next_row = self._next(c["env_steps"])
        self.print(line, soft_wrap=True)

    def stats_text(self, updates: int) -> str:
        r = self._rates(updates)
        recent = f"{np.mean(self.returns):.1f}" if self.returns else "–"
        eps = self._epsilon()
        fps = r["sps"] * (self.spec.env.frame_skip if self.spec.env.is_atari else 1)
        replay = min(self.counters["env_steps"], self.spec.replay.capacity)
        # 80 columns at Atari scale: "2.00M steps  return -20.4  12.3k ep  ε 0.010  12.3k fps  160 upd/s  replay 1.00M"
        return (f"return {recent:>5}  {count(self.counters['episodes']):>5} ep  ε {float('nan') if eps is None else eps:.3f}  "
                f"{count(fps):>5} fps  {count(r['updates_per_s']):>3} upd/s  replay {count(replay)}")

    def recent_return(self) -> float | None:
        return float(np.mean(self.returns)) if self.returns else None

    def eval_progress(self, steps: int, progress: dict[str, float]) -> None:
        self.print(eval_progress_line(f"evaluation at {steps:,} env steps", progress), soft_wrap=True)

    def print(self, line: str, **options: Any) -> None:
        """Print above the live progress bar while there is one."""
        (self.bar.console if self.bar else self.console).print(line, highlight=False, **options)

    def progress_bar(self) -> Progress:
        self.bar = Progress(TextColumn("dqn"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[stats]}"), console=self.console, transient=True,
                            disable=not self.console.is_terminal)  # logs and pipes get the printed lines only
        return self.bar

    def _next(self, now: int) -> int:
        every = self.spec.dqn.log_every_env_steps
        return (now // every + 1) * every

    def _epsilon(self) -> float | None:
        return float(np.mean(list(self.epsilons.values()))) if self.epsilons else None

    def _rates(self, updates: int) -> dict[str, float]:
        now, (t, steps, done) = time.monotonic(), self.mark
        dt = max(now - t, 1e-6)
        return {"sps": (self.counters["env_steps"] - steps) / dt, "updates_per_s": (updates - done) / dt}


def eval_progress_line(label: str, p: dict[str, float]) -> str:
    """``LABEL: 12/30 games done, mean return -20.42 so far, 10 s`` (see :data:`dl_ray.rl.runner.EvalProgress`)."""
    so_far = "" if math.isnan(p["return_mean"]) else f", mean return {p['return_mean']:.2f} so far"
    return f"{label}: {p['done']}/{p['episodes']} games done{so_far}, {p['elapsed_s']:.0f} s"
