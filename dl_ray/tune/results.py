"""What a sweep leaves behind in its folder, and the table it prints at the end.

* ``results.csv``: one row per trial (status, epochs, swept values, metric, test metrics, time, error);
* ``best.yaml``: the best trial's job, ready for ``dl-ray train``;
* ``params.png``: the metric against each swept value, coloured by trial status;
* ``curves.png``: the metric against epoch for every trial (the best one bold).
"""
from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console
from rich.table import Table

from dl_ray.spec import parse_spec
from dl_ray.tune.progress import fmt, short, trial_outcome
from dl_ray.tune.spec import SETTINGS, Sweep, set_path

FINISHED = ("completed", "early_stopped", "stopped")
COLOURS = {"completed": "tab:green", "early_stopped": "tab:blue", "stopped": "tab:orange", "nonfinite_loss": "tab:purple",
           "error": "tab:red", "running": "tab:gray", "pending": "tab:gray", "paused": "tab:gray", "no_result": "tab:gray"}


def collect(grid, trials: dict[str, Any], sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial, from Tune's results and the trials' statuses (``trials`` by folder name)."""
    rows = []
    for result in grid:
        last = dict(result.metrics or {})
        trial = trials.get(Path(result.path).name)
        status = "ERROR" if result.error else (trial.status if trial is not None else "TERMINATED")
        row = {"trial": Path(result.path).name,
               "status": trial_outcome(status, last, sweep.job.training.epochs, sweep.tune.trial == "evaluate"),
               "epochs": last.get("epoch", "")}
        row |= {key: result.config.get(key) for key in sweep.space}
        row[sweep.tune.metric] = last.get(sweep.tune.metric)
        row |= {k: v for k, v in sorted(last.items()) if k.startswith("test/") and k != sweep.tune.metric}
        row["curve"] = _curve(result, sweep.tune.metric)
        row["train_s"] = round(sum(_column(result, "time/epoch_s")), 1)
        row["error"] = " ".join(str(result.error).split())[:300] if result.error else ""
        rows.append(row)
    return sorted(rows, key=lambda r: r["trial"])


def _column(result, name: str) -> list[float]:
    frame = result.metrics_dataframe
    return [float(v) for v in frame[name] if v == v] if frame is not None and name in frame else []


def _curve(result, metric: str) -> list[tuple[int, float]]:
    """From the trial's own metrics.csv (after a PBT exploit: the donor's epochs, then its own), else Tune's."""
    history = Path(result.path) / "metrics.csv"
    frame = pd.read_csv(history) if history.is_file() else result.metrics_dataframe
    if frame is None or metric not in frame or "epoch" not in frame:
        return []
    per_epoch = frame[frame["train/loss"].notna()] if "train/loss" in frame else frame
    return [(int(e), float(v)) for e, v in zip(per_epoch["epoch"], per_epoch[metric]) if v == v]


def best_row(rows: list[dict[str, Any]], sweep: Sweep) -> dict[str, Any] | None:
    metric, sign = sweep.tune.metric, (1 if sweep.tune.direction == "min" else -1)
    usable = [r for r in rows if r["status"] in FINISHED and isinstance(r[metric], (int, float)) and math.isfinite(r[metric])]
    return min(usable, key=lambda r: sign * r[metric]) if usable else None


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = [c for c in rows[0] if c != "curve"] if rows else []
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_best(best: dict[str, Any], sweep: Sweep, path: Path) -> dict[str, Any]:
    """The base job as the user wrote it, with the best trial's values: a job ``dl-ray train`` runs."""
    raw = copy.deepcopy(sweep.job_raw)
    for key in sweep.space:
        if not key.startswith(SETTINGS):
            set_path(raw, key, best[key])
    raw["name"] = f"{sweep.name}_best"
    raw.get("storage", {}).pop("name", None)
    parse_spec(raw)  # what we write must be a valid job
    settings = {k.removeprefix(SETTINGS): best[k] for k in sweep.space if k.startswith(SETTINGS)}
    header = (f"# Best trial {best['trial']} of sweep {sweep.name}: {sweep.tune.metric} = {fmt(best[sweep.tune.metric])}\n"
              + (f"# Best evaluator settings: {settings}\n" if settings else "")
              + f"# Train it: dl-ray train {path}\n")
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False))
    return raw


def plot_params(rows: list[dict[str, Any]], sweep: Sweep, path: Path) -> None:
    plt = _pyplot()
    metric, keys = sweep.tune.metric, list(sweep.space)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        dist = sweep.space[key]
        categorical = dist.kind in ("choice", "grid") and not all(isinstance(v, (int, float)) for v in dist.args)
        for status in COLOURS:
            pts = [(r[key], r[metric]) for r in rows if r["status"] == status and isinstance(r[metric], (int, float))]
            if not pts:
                continue
            xs = [list(dist.args).index(x) if categorical else x for x, _ in pts]
            ax.scatter(xs, [y for _, y in pts], c=COLOURS[status], label=status, s=28, alpha=0.85)
        if categorical:
            ax.set_xticks(range(len(dist.args)), [str(v) for v in dist.args])
        if dist.log_scale:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set(xlabel=key, ylabel=metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"sweep {sweep.name}: {metric} ({sweep.tune.direction}) per trial")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(rows: list[dict[str, Any]], sweep: Sweep, best: dict[str, Any] | None, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for row in rows:
        if row["curve"]:
            epochs, values = zip(*row["curve"])
            is_best = best is not None and row["trial"] == best["trial"]
            ax.plot(epochs, values, color=COLOURS.get(row["status"], "tab:gray"), lw=2.6 if is_best else 1.0,
                    alpha=1.0 if is_best else 0.55, marker="o", markersize=4 if is_best else 2.5,
                    label=f"best: {row['trial']}" if is_best else None, zorder=3 if is_best else 2)
    handles = [plt.Line2D([], [], color=c, label=s) for s, c in COLOURS.items() if any(r["status"] == s for r in rows)]
    ax.legend(handles=handles + [h for h in ax.get_lines() if h.get_label().startswith("best")], fontsize=8)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=sweep.tune.metric, title=f"sweep {sweep.name}: learning curves of {len(rows)} trials")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def print_results(rows: list[dict[str, Any]], sweep: Sweep, best: dict[str, Any] | None, console: Console, top: int = 10) -> None:
    metric, sign = sweep.tune.metric, (1 if sweep.tune.direction == "min" else -1)
    ranked = sorted(rows, key=lambda r: sign * r[metric] if isinstance(r[metric], (int, float)) and r[metric] == r[metric] else math.inf)
    table = Table(title=f"sweep {sweep.name}: top {min(top, len(rows))} of {len(rows)} trials by {metric} ({sweep.tune.direction})")
    test = "test/" + metric.split("/", 1)[-1]
    columns = ["trial", "status", "epochs", *sweep.space, metric, *([test] if any(test in r for r in rows) else []), "train_s"]
    for col in columns:
        table.add_column(short(col) if col in sweep.space else col, justify="left" if col in ("trial", "status") else "right")
    for r in ranked[:top]:
        style = "bold green" if best is not None and r["trial"] == best["trial"] else None
        cells = [r["trial"].rsplit("_", 1)[-1], *(fmt(r.get(c)) if r.get(c) is not None else "" for c in columns[1:])]
        table.add_row(*cells, style=style)
    console.print(table)
    counts = {s: sum(r["status"] == s for r in rows) for s in COLOURS}
    console.print("trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), highlight=False)
    for r in rows:
        if r["status"] == "error":
            console.print(f"[red]failed[/] {r['trial']} after {sweep.tune.max_failures} retries: {r['error'][:160]} "
                          f"(full error: {sweep.folder / r['trial'] / 'error.txt'})", highlight=False)


def write_outputs(grid, trials: dict[str, Any], sweep: Sweep, console: Console) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    rows = collect(grid, trials, sweep)
    folder = sweep.folder
    write_csv(rows, folder / "results.csv")
    best = best_row(rows, sweep)
    if rows:
        plot_params(rows, sweep, folder / "params.png")
        plot_curves(rows, sweep, best, folder / "curves.png")
    print_results(rows, sweep, best, console)
    if best is not None:
        write_best(best, sweep, folder / "best.yaml")
        console.print(f"best: {best['trial']} {sweep.tune.metric}={fmt(best[sweep.tune.metric])} → {folder / 'best.yaml'}", highlight=False)
    if sweep.tune.compare:
        from dl_ray.experiments import write_comparison

        write_comparison(rows, sweep, console)
    console.print(f"sweep folder: {folder}  (results.csv, best.yaml, params.png, curves.png, one run folder per trial)", highlight=False)
    return rows, best
