"""Experiments: sweeps whose point is a comparison, not a best trial (``tune.compare: true``).

The course's claims (max vs average pooling, stride-2 convolution vs stride 1 + pooling, 1x1 reductions in an
Inception module, plain vs residual networks at growing depth) are sweep files under ``jobs/experiments/``: a grid
over a model switch, and over ``training.seed`` to repeat each setting. Besides the sweep's own files, such a sweep
writes into its folder:

* ``comparison.csv``: one row per setting of the swept fields, repeats over ``training.seed`` averaged: parameters and
  multiply-adds per example (:mod:`dl_ray.layer_summary`), the training error of the last epoch (the curve's end), the
  validation and test error of the final report (best weights), the spread of the test error over the seeds;
* ``comparison.png``: error against epoch, solid training and dashed validation, one colour per setting; with two
  fields besides the seed, one panel per value of the first (He et al. 2016, Fig. 1: a panel for plain and one
  for residual networks, a colour per depth).

Errors are ``1 - accuracy`` for classifiers, else the loss itself. Everything is read from the trial folders.
"""
from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from dl_ray.fmt import num
from dl_ray.plots import pyplot
from dl_ray.tune.progress import short
from dl_ray.tune.spec import SETTINGS, Sweep

REPEAT = "training.seed"
"""The swept field whose values repeat a setting instead of making a new one."""
FINISHED = ("completed", "early_stopped")
HEADERS = {"params": "params", "macs": "mult-adds", "train_error": "train err", "val_error": "val err",
           "test_error": "test err", "test_error_sd": "± sd", "train_s": "train s"}


def compared_keys(sweep: Sweep) -> list[str]:
    """The swept fields that make the settings compared (the seed only repeats them)."""
    return [k for k in sweep.space if k != REPEAT and not k.startswith(SETTINGS)]


def settings(rows: list[dict[str, Any]], sweep: Sweep) -> dict[tuple, list[dict[str, Any]]]:
    """Finished trials grouped by their values of the compared fields, in the order the sweep file lists them."""
    keys, groups = compared_keys(sweep), {}
    for row in rows:
        if row["status"] in FINISHED:
            groups.setdefault(tuple(_hashable(row[k]) for k in keys), []).append(row)

    def order(setting: tuple) -> tuple:
        return tuple(_position(sweep, k, v) for k, v in zip(keys, setting))

    return {s: groups[s] for s in sorted(groups, key=order)}


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value  # a swept list, e.g. model.hidden: [32, 16]


def _position(sweep: Sweep, key: str, value: Any) -> Any:
    args = [_hashable(a) for a in sweep.space[key].args]
    return args.index(value) if sweep.space[key].kind in ("grid", "choice") and value in args else value


def measure(run_dir: Path) -> tuple[str, pd.DataFrame]:
    """(what the errors are, a frame of epoch, train and val error) from a trial's metrics.csv."""
    frame = pd.read_csv(run_dir / "metrics.csv")
    name = "accuracy" if "train/accuracy" in frame and "val/accuracy" in frame else "loss"
    frame = frame[frame[f"train/{name}"].notna()]
    return name, pd.DataFrame({"epoch": frame["epoch"].astype(int), "train": _error(name, frame[f"train/{name}"]),
                               "val": _error(name, frame[f"val/{name}"])})


def _error(name: str, value: Any) -> Any:
    return 1.0 - value if name == "accuracy" else value


def final_errors(run_dir: Path, name: str) -> dict[str, float]:
    """Validation and test error of the trial's final report (its best weights), from summary.json."""
    from dl_ray.tracking import read_summary

    final = (read_summary(run_dir) or {}).get("final", {})
    return {split: _error(name, final[f"{split}/{name}"]) for split in ("val", "test") if f"{split}/{name}" in final}


def counts(sweep: Sweep, setting: dict[str, Any]) -> tuple[int, int]:
    """(parameters, multiply-adds per example) of the setting's model on the job's data, as ``dl-ray describe``."""
    from dl_ray.describe import job_summaries

    _, _, summaries = job_summaries(sweep.trial_spec(setting))
    return sum(s.params for s in summaries), sum(s.macs for s in summaries)


def compare(rows: list[dict[str, Any]], sweep: Sweep) -> tuple[str, list[dict[str, Any]], dict[tuple, pd.DataFrame]]:
    """(error name, one table row per setting, its mean error curve over the seeds)."""
    keys, table, curves, name = compared_keys(sweep), [], {}, "accuracy"
    for setting, trials in settings(rows, sweep).items():
        measured = [measure(sweep.folder / t["trial"]) for t in trials]
        name = measured[0][0]
        curve = pd.concat([m[1] for m in measured]).groupby("epoch", as_index=False).mean()
        finals = [final_errors(sweep.folder / t["trial"], name) for t in trials]
        tests = [f["test"] for f in finals if "test" in f]
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in zip(keys, setting)}
        params, macs = counts(sweep, values)
        table.append({**values, "params": params, "macs": macs,
                      "train_error": statistics.mean(m[1]["train"].iloc[-1] for m in measured),
                      "val_error": _mean([f["val"] for f in finals if "val" in f]), "test_error": _mean(tests),
                      "test_error_sd": statistics.stdev(tests) if len(tests) > 1 else None, "trials": len(trials),
                      "train_s": round(statistics.mean(float(t["train_s"] or 0) for t in trials), 1)})
        curves[setting] = curve
    return name, table, curves


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def plot(curves: dict[tuple, pd.DataFrame], sweep: Sweep, name: str, path: Path) -> None:
    """Error against epoch: solid training, dashed validation; a panel per value of the first of two fields."""
    plt, keys = pyplot(), compared_keys(sweep)
    split = len(keys) > 1
    panels = list(dict.fromkeys(s[0] for s in curves)) if split else [None]
    lines = list(dict.fromkeys(s[1:] if split else s for s in curves))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.2 * len(panels), 7.5), 4.4), sharey=True, squeeze=False)
    scale = 100 if name == "accuracy" else 1
    for setting, curve in curves.items():
        line = setting[1:] if split else setting
        ax, colour = axes[0][panels.index(setting[0]) if split else 0], f"C{lines.index(line) % 10}"
        label = ", ".join(f"{short(k)}={list(v) if isinstance(v, tuple) else v}" for k, v in zip(keys[1:] if split else keys, line))
        ax.plot(curve["epoch"], scale * curve["train"], color=colour, lw=1.8, label=label)
        ax.plot(curve["epoch"], scale * curve["val"], color=colour, lw=1.8, ls="--")
    for ax, panel in zip(axes[0], panels):
        ax.set(xlabel="epoch", title=f"{short(keys[0])}={panel}" if split else "")
        # logarithmic above 0.1 (errors of 30 % and 0.3 % alike), linear below it: a training error of 0 stays drawn
        ax.set_yscale("symlog", linthresh=0.1, linscale=0.5)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(alpha=0.3, which="both")
        handles = ax.get_legend_handles_labels()[0]
        ax.legend(handles=handles + [plt.Line2D([], [], color="k", label="training"),
                                     plt.Line2D([], [], color="k", ls="--", label="validation")], fontsize=8)
    axes[0][0].set_ylabel("error (%)" if name == "accuracy" else "loss")
    fig.suptitle(f"{sweep.name}: {'error' if name == 'accuracy' else 'loss'} against epoch\n(solid: training, dashed: "
                 f"validation; mean over {_seeds(sweep)})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _seeds(sweep: Sweep) -> str:
    n = len(sweep.space[REPEAT].args) if REPEAT in sweep.space else 1
    return f"{n} seed{'s' if n > 1 else ''}"


def write_csv(table: list[dict[str, Any]], name: str, path: Path) -> None:
    """The table with errors in percent for classifiers (columns ``*_error_pct``), else as losses."""
    pct = name == "accuracy"
    renamed = [{(f"{k}_pct" if pct and k.startswith(("train_error", "val_error", "test_error")) else k):
                (round(100 * v, 3) if pct and isinstance(v, float) and "error" in k else v) for k, v in row.items()}
               for row in table]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(renamed[0]))
        writer.writeheader()
        writer.writerows(renamed)


def print_table(table: list[dict[str, Any]], sweep: Sweep, name: str, console: Console) -> None:
    keys, pct = compared_keys(sweep), name == "accuracy"
    shown = Table(title=f"{sweep.name}: {'error (%)' if pct else 'loss'} per setting, mean over {_seeds(sweep)}")
    columns = [*keys, "params", "macs", "train_error", "val_error", "test_error", "test_error_sd", "train_s"]
    for col in columns:
        shown.add_column(short(col) if col in keys else HEADERS[col], justify="right")
    for row in table:
        cells = [row[c] for c in columns]
        shown.add_row(*("" if v is None else f"{100 * v:.2f}" if pct and "error" in c else
                        f"{v:,}" if c in ("params", "macs") else num(v) for c, v in zip(columns, cells)))
    console.print(shown)


def write_comparison(rows: list[dict[str, Any]], sweep: Sweep, console: Console) -> list[Path]:
    """comparison.csv and comparison.png in the sweep's folder (nothing when no trial finished)."""
    name, table, curves = compare(rows, sweep)
    if not table:
        console.print("[yellow]comparison[/]: no finished trial to compare")
        return []
    paths = [sweep.folder / "comparison.csv", sweep.folder / "comparison.png"]
    write_csv(table, name, paths[0])
    plot(curves, sweep, name, paths[1])
    print_table(table, sweep, name, console)
    console.print(f"comparison: {paths[0]}, {paths[1]}", highlight=False)
    return paths
