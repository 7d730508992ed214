"""Population based training, and what it leaves to see: every exploit printed and kept in ``exploits.csv``.

An exploit (a bottom trial takes a top trial's checkpoint and explores its values) is otherwise invisible:
Ray logs it at INFO, which the terminal never shows. The scheduler here prints one line per exploit::

    exploit at epoch 4: 00002 (val/accuracy 0.912) copies 00000 (0.981); lr 0.03 -> 1.2e-02, dropout 0.2 -> 0.24

and appends it to ``<sweep>/exploits.csv`` (epoch, trial, donor, scores, each swept value before and after), from
which ``results.csv`` gets each trial's starting values and ``params.png`` / ``curves.png`` draw the exploits.
"""
from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

from dl_ray.fmt import num
from dl_ray.tune.spec import Sweep

EXPLOITS = "exploits.csv"


def scheduler(sweep: Sweep, epochs: int):
    """Ray's PBT that skips an exploit at a trial's last epoch and records every exploit it makes."""
    from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

    s, folder, metric = sweep.tune.scheduler, sweep.folder, sweep.tune.metric

    class BudgetedPBT(PopulationBasedTraining):
        """Ray's PBT without an exploit at a trial's last epoch: it would turn the finished trial into a copy
        of its donor that never trains with its explored values (Ray's PBT does not know the epoch budget)."""

        def on_trial_result(self, tune_controller, trial, result):
            if result.get("epoch", 0) >= trial.config.get("training.epochs", epochs):
                return TrialScheduler.CONTINUE
            return super().on_trial_result(tune_controller, trial, result)

        def _exploit(self, tune_controller, trial, trial_to_clone):
            before = dict(trial.config)
            mine, donor = self._trial_state[trial].last_result or {}, self._trial_state[trial_to_clone].last_result or {}
            super()._exploit(tune_controller, trial, trial_to_clone)
            record(folder, list(sweep.space), metric, {
                "epoch": donor.get("epoch"), "trial": _short(trial.trial_id), "donor": _short(trial_to_clone.trial_id),
                "score": mine.get(metric), "donor_score": donor.get(metric)}, before, dict(trial.config))

    mutations = {k: list(d.args) if d.kind in ("choice", "grid") else d.to_ray() for k, d in sweep.space.items()}
    return BudgetedPBT(time_attr="epoch", perturbation_interval=s.perturbation_interval,
                       hyperparam_mutations=mutations, quantile_fraction=s.quantile_fraction,
                       resample_probability=s.resample_probability,
                       custom_explore_fn=functools.partial(clip_to_space, sweep.space))


def clip_to_space(space: dict, config: dict) -> dict:
    """PBT's explore multiplies by 0.8/1.2: keep the result inside the swept range (dropout < 1)."""
    for key, dist in space.items():
        if dist.kind in ("uniform", "loguniform", "randint") and key in config:
            low, high = dist.args
            config[key] = type(config[key])(min(max(config[key], low), high))
    return config


def _short(trial_id: str) -> str:
    return trial_id.rsplit("_", 1)[-1]


def record(folder: Path, keys: list[str], metric: str, event: dict[str, Any], before: dict, after: dict) -> None:
    """Print the exploit (on the open sweep display) and append it to exploits.csv."""
    from dl_ray.tune.progress import announce

    row = event | {f"before/{k}": before.get(k) for k in keys} | {f"after/{k}": after.get(k) for k in keys}
    announce(exploit_line(row, keys, metric))
    path = folder / EXPLOITS
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def exploit_line(row: dict[str, Any], keys: list[str], metric: str) -> str:
    from dl_ray.tune.progress import short

    changes = ", ".join(f"{short(k)} {num(row[f'before/{k}'])} -> {num(row[f'after/{k}'])}" for k in keys)
    return (f"exploit at epoch {row['epoch']}: {row['trial']} ({metric} {num(row['score'])}) copies {row['donor']} "
            f"({num(row['donor_score'])}); {changes}")


def read_exploits(folder: Path) -> list[dict[str, str]]:
    path = folder / EXPLOITS
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def starting_values(exploits: list[dict[str, str]], keys: list[str]) -> dict[str, dict[str, Any]]:
    """Each exploited trial's values before its first exploit (by trial id)."""
    first: dict[str, dict[str, Any]] = {}
    for row in exploits:
        first.setdefault(row["trial"], {k: _value(row[f"before/{k}"]) for k in keys})
    return first


def _value(text: str) -> Any:
    """A value as csv wrote it: int, float, else the text (a choice's name)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
