"""The sweep's progress: a live table of trials in a terminal, one line per finished trial in logs.

Tune pickles its callbacks with the experiment (``Tuner.restore`` brings them back), so the
callback holds nothing: it forwards to the display the driver has open right now.
"""
from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table

from dl_ray.fmt import num
from dl_ray.tune.spec import Sweep

_ACTIVE: "SweepDisplay | None" = None


def trial_outcome(status: str, last: dict[str, Any] | None, epochs: int, evaluate: bool = False) -> str:
    """What happened to a trial, in words: completed, early_stopped (patience), stopped (by the
    scheduler or the time budget), nonfinite_loss, error, or still pending/running/paused."""
    if status == "ERROR":
        return "error"
    if status in ("PENDING", "RUNNING", "PAUSED"):
        return status.lower()
    if not last:
        return "no_result"
    if evaluate:
        return "completed"
    if any(k.startswith("test/") for k in last):
        return "completed" if last.get("epoch", 0) >= epochs else "early_stopped"
    if any(k.endswith("/loss") and last[k] != last[k] for k in last):  # NaN
        return "nonfinite_loss"
    return "stopped"


def short(key: str) -> str:
    """A column title for a dotted path: its last part, or the section for a ``name`` (``schedule.name``: schedule)."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def announce(text: str) -> None:
    """A line above the live table, or in the log (PBT exploits): the sweep's own events, as they happen."""
    if _ACTIVE is not None:
        _ACTIVE.console.print(text, highlight=False)


class SweepDisplay:
    def __init__(self, sweep: Sweep, console: Console, refresh_s: float = 1.0, save=None):
        self.sweep, self.console, self.refresh_s = sweep, console, refresh_s
        self.save = save  # save(trials, stop_reason): results.csv and summary.json so far, at every finished trial
        self.stop_reason: str | None = None  # why the sweep stops before its end (jobs stop), set on SIGTERM
        self.trials: list[Any] = []
        self.reported: set[str] = set()
        self._last = 0.0
        self.live = Live(console=console, auto_refresh=False, transient=True) if console.is_terminal else None

    def __enter__(self) -> "SweepDisplay":
        global _ACTIVE
        _ACTIVE = self
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        global _ACTIVE
        _ACTIVE = None
        if self.live:
            self.live.stop()

    def update(self, trials: list[Any], force: bool = False) -> None:
        self.trials = list(trials)
        now = time.monotonic()
        if self.live and (force or now - self._last >= self.refresh_s):
            self._last = now
            self.live.update(self.table(), refresh=True)

    def finished(self, trial: Any, error: bool = False) -> None:
        if trial.trial_id in self.reported:
            return
        self.reported.add(trial.trial_id)
        if self.save is not None:
            self.save(self.trials, self.stop_reason)
        if self.live is None:
            tune, last = self.sweep.tune, trial.last_result or {}
            how = trial_outcome("ERROR" if error else "TERMINATED", last,
                                self.sweep.job.training.epochs, self.sweep.reports_once)
            params = " ".join(f"{short(k)}={num(v)}" for k, v in trial.config.items())
            value = last.get(tune.metric)
            shown = f"{tune.metric}={num(value)}" if value is not None else ""
            epoch = f"epoch {last['epoch']}" if "epoch" in last else ""
            self.console.print(f"trial {trial.trial_id.rsplit('_', 1)[-1]} {how:<14} {epoch:<9} {shown:<24} {params}", highlight=False)

    def table(self) -> Table:
        """The live table: as wide as the terminal, values whole (swept columns go from the right if need be)."""
        from dl_ray.fmt import fit_table

        tune, keys = self.sweep.tune, list(self.sweep.space)
        done = sum(t.status in ("TERMINATED", "ERROR") for t in self.trials)
        columns = ["trial", "status", *(short(k) for k in keys), "epoch", tune.metric]
        rows = []
        for t in self.trials:
            last = t.last_result or {}
            status = trial_outcome(t.status, last, self.sweep.job.training.epochs, self.sweep.reports_once)
            rows.append([t.trial_id.rsplit("_", 1)[-1], status, *(num(t.config.get(k, "")) for k in keys),
                         str(last.get("epoch", "")), num(last[tune.metric]) if tune.metric in last else ""])
        table, _ = fit_table(columns, rows, self.console.width, right=columns[2:],
                             drop_order=["epoch", *columns[2:-2][::-1]],
                             title=f"sweep {self.sweep.name}: {done}/{len(self.trials)} trials done "
                                   f"({tune.scheduler.name}, {tune.search} search, {tune.metric} {tune.direction})")
        return table


class ProgressCallback(Callback):
    """Forwards Tune's trial events to the open :class:`SweepDisplay` (if any)."""

    def __getstate__(self) -> dict:
        return {}

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if _ACTIVE:
            _ACTIVE.update(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        if _ACTIVE:
            _ACTIVE.update(trials, force=True)
            _ACTIVE.finished(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        if _ACTIVE:
            _ACTIVE.update(trials, force=True)
            _ACTIVE.finished(trial, error=True)
