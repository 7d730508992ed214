"""What a sweep leaves behind in its folder, and the table it prints at the end.

* ``results.csv``: one row per trial (status, epochs, swept values, metric, test metrics, time, error);
* ``best.yaml``: the best trial's job, ready for ``dl-ray train``;
* ``params.png``: the metric against each swept value, coloured by trial status;
* ``curves.png``: the metric against epoch for every trial (the best one bold, PBT exploits starred);
* ``summary.json``: the sweep's status (running, completed, stopped with its stop_reason, failed) and best trial.
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

from dl_ray.fmt import fit_table, num
from dl_ray.tune.progress import short, trial_outcome
from dl_ray.tune.spec import SETTINGS, Sweep, parse_job, set_path

FINISHED = ("completed", "early_stopped", "stopped")
COLOURS = {"completed": "tab:green", "early_stopped": "tab:blue", "stopped": "tab:orange", "nonfinite_loss": "tab:purple",
           "error": "tab:red", "interrupted": "tab:brown", "running": "tab:gray", "pending": "tab:gray", "paused": "tab:gray", "no_result": "tab:gray"}


def collect(grid, trials: dict[str, Any], sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial, from Tune's results and the trials' statuses (``trials`` by folder name)."""
    rows = []
    for result in grid:
        trial = trials.get(Path(result.path).name)
        status = "ERROR" if result.error else (trial.status if trial is not None else "TERMINATED")
        error = " ".join(str(result.error).split())[:300] if result.error else ""
        frame = _history(result, sweep)
        rows.append(trial_row(sweep, Path(result.path).name, status, dict(result.metrics or {}), result.config,
                              frame, _train_s(frame), error))
    if sweep.tune.scheduler.name == "pbt":
        _pbt_columns(rows, sweep)
    return sorted(rows, key=lambda r: r["trial"])


def finished_rows(trials: list[Any], sweep: Sweep) -> list[dict[str, Any]]:
    """Rows of the trials Tune has finished so far, from its Trial objects: results.csv while the sweep runs, so a
    sweep killed mid-way (``dl-ray jobs stop`` sends SIGTERM, then SIGKILL 3 s later) keeps its finished trials."""
    from dl_ray.tune.trial import trial_folder_name

    rows = []
    for t in trials:
        if t.status not in ("TERMINATED", "ERROR"):
            continue
        name = trial_folder_name(sweep.name, t.trial_id)
        history = sweep.folder / name / "metrics.csv"
        frame = pd.read_csv(history) if history.is_file() else None
        error = f"failed: see {t.error_file}" if t.status == "ERROR" else ""
        rows.append(trial_row(sweep, name, t.status, dict(t.last_result or {}), t.config, frame, _train_s(frame), error))
    return sorted(rows, key=lambda r: r["trial"])


def trial_row(sweep: Sweep, name: str, status: str, last: dict[str, Any], config: dict[str, Any],
              frame: pd.DataFrame | None, train_s: float, error: str) -> dict[str, Any]:
    row = {"trial": name, "status": trial_outcome(status, last, sweep.job.training.epochs, sweep.reports_once),
           "epochs": last.get("epoch", "")}
    row |= {key: config.get(key) for key in sweep.space}
    row[sweep.tune.metric] = last.get(sweep.tune.metric)
    row |= {k: v for k, v in sorted(last.items()) if k.startswith("test/") and k != sweep.tune.metric}
    row["curve"], row["exploits"] = _curve(frame, sweep.tune.metric), []
    return row | {"train_s": train_s, "error": error}


def _pbt_columns(rows: list[dict[str, Any]], sweep: Sweep) -> None:
    """PBT, from exploits.csv: each trial's sampled values before any exploit (``start/<field>``) beside its final,
    explored ones, and its own exploits as (epoch, metric on its curve, donor) marks for curves.png (its metrics.csv
    also holds the marks of its donors' exploits, copied with their rows)."""
    from dl_ray.tune.pbt import read_exploits, starting_values

    exploits = read_exploits(sweep.folder)
    first = starting_values(exploits, list(sweep.space))
    for row in rows:
        short_id = row["trial"].rsplit("_", 1)[-1]
        start, curve = first.get(short_id), dict(row["curve"])
        row |= {f"start/{k}": start[k] if start else row[k] for k in sweep.space}
        row["exploits"] = [(int(e["epoch"]), curve[int(e["epoch"])], e["donor"]) for e in exploits
                           if e["trial"] == short_id and int(e["epoch"]) in curve]


def _train_s(frame: pd.DataFrame | None) -> float:
    """Seconds of training epochs, from the trial's history."""
    return round(float(frame["time/epoch_s"].sum()), 1) if frame is not None and "time/epoch_s" in frame else 0.0


def _history(result, sweep: Sweep) -> pd.DataFrame | None:
    """The trial's own metrics.csv (after a PBT exploit: the donor's epochs, then its own), else Tune's. Read in the
    sweep's folder: ``result.path`` is in the bucket for a sweep kept in one."""
    history = sweep.folder / Path(result.path).name / "metrics.csv"
    return pd.read_csv(history) if history.is_file() else result.metrics_dataframe


def _curve(frame: pd.DataFrame | None, metric: str) -> list[tuple[int, float]]:
    if frame is None or metric not in frame or "epoch" not in frame:
        return []
    per_epoch = frame[frame["train/loss"].notna()] if "train/loss" in frame else frame
    return [(int(e), float(v)) for e, v in zip(per_epoch["epoch"], per_epoch[metric]) if v == v]


def best_row(rows: list[dict[str, Any]], sweep: Sweep) -> dict[str, Any] | None:
    metric, sign = sweep.tune.metric, (1 if sweep.tune.direction == "min" else -1)
    usable = [r for r in rows if r["status"] in FINISHED and isinstance(r[metric], (int, float)) and math.isfinite(r[metric])]
    return min(usable, key=lambda r: sign * r[metric]) if usable else None


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = [c for c in rows[0] if c not in ("curve", "exploits")] if rows else []
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_best(best: dict[str, Any], sweep: Sweep, path: Path) -> dict[str, Any]:
    """The base job as the user wrote it, with the best trial's values and a description of them: a job
    ``dl-ray train`` runs. For evaluate sweeps the header says what the settings are for: nothing to train."""
    raw = copy.deepcopy(sweep.job_raw)
    for key in sweep.space:
        if not key.startswith(SETTINGS):
            set_path(raw, key, best[key])
    raw["name"] = f"{sweep.name}_best"
    raw["description"] = winner_description(best, sweep)
    raw.get("storage", {}).pop("name", None)
    parse_job(raw)  # what we write must be a valid job
    header = f"# Best trial {best['trial']} of sweep {sweep.name}: {sweep.tune.metric} = {num(best[sweep.tune.metric])}\n"
    if sweep.tune.trial == "evaluate":
        header += _evaluate_header(best, sweep, path)
    else:
        header += f"# Train it: dl-ray train {path}\n"
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False))
    return raw


def winner_description(best: dict[str, Any], sweep: Sweep) -> str:
    """The base job's description named a schedule or rate the winner may not use: say what the winner is."""
    job = sweep.job
    values = ", ".join(f"{short(k)} {num(best[k])}" for k in sweep.space)
    subject = sweep.own_kind.subject(job) if sweep.own_kind is not None else f"{job.model.name} on {job.data.name}"
    what = f"{subject}, best of sweep {sweep.name} ({sweep.tune.metric} {num(best[sweep.tune.metric])}): {values}"
    if sweep.tune.scheduler.name == "pbt" and any(best.get(f"start/{k}") != best[k] for k in sweep.space):
        starts = ", ".join(f"{short(k)} {num(best[f'start/{k}'])}" for k in sweep.space)
        what += f" (PBT: its values at the end; it started with {starts} and took other trials' weights on the way)"
    if sweep.tune.trial == "evaluate":
        what += f" (evaluated on the trained checkpoint {sweep.checkpoint})"
    return what


def _evaluate_header(best: dict[str, Any], sweep: Sweep, path: Path) -> str:
    """Evaluator settings (beam width, length normalisation) are not training fields: the job is the checkpoint's."""
    settings = {k.removeprefix(SETTINGS): best[k] for k in sweep.space if k.startswith(SETTINGS)}
    fields = [k for k in sweep.space if not k.startswith(SETTINGS)]
    lines = [f"# Scored on the weights of {sweep.checkpoint}: nothing was trained."]
    if settings:
        shown = ", ".join(f"{k}={num(v)}" for k, v in settings.items())
        lines.append(f"# Best settings of the evaluator {sweep.tune.evaluator}: {shown}")
        flags = {"beam_width": "--beam", "length_alpha": "--alpha"}
        if sweep.tune.evaluator.endswith(":decode") and set(settings) <= set(flags):
            run_dir = sweep.checkpoint.parent if sweep.checkpoint.name.startswith("checkpoint_epoch_") else sweep.checkpoint
            lines.append(f"# Decode with them: dl-ray eval {run_dir} " + " ".join(f"{flags[k]} {v}" for k, v in settings.items()))
    if fields:
        lines.append(f"# The job below is the checkpoint's with {', '.join(fields)} as scored; dl-ray train {path} "
                     "would train it from scratch")
    else:
        lines.append("# The job below is the checkpoint's, for reference.")
    return "\n".join(lines) + "\n"


def plot_params(rows: list[dict[str, Any]], sweep: Sweep, path: Path) -> None:
    plt = _pyplot()
    metric, keys = sweep.tune.metric, list(sweep.space)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        dist = sweep.space[key]
        categorical = dist.kind in ("choice", "grid") and not all(isinstance(v, (int, float)) for v in dist.args)
        at = (lambda x: list(dist.args).index(x)) if categorical else (lambda x: x)  # noqa: E731
        scored = [r for r in rows if isinstance(r[metric], (int, float))]
        moved = [r for r in scored if f"start/{key}" in r and r[f"start/{key}"] != r[key]]
        for r in moved:  # PBT: where the trial started (hollow) and the value it ended with, explored after exploits
            ax.plot([at(r[f"start/{key}"]), at(r[key])], [r[metric]] * 2, color="0.6", lw=0.8, zorder=1)
        if moved:
            ax.scatter([at(r[f"start/{key}"]) for r in moved], [r[metric] for r in moved], facecolors="none",
                       edgecolors="0.3", s=28, label="start (before exploits)", zorder=2)
        for status in COLOURS:
            pts = [(r[key], r[metric]) for r in scored if r["status"] == status]
            if not pts:
                continue
            ax.scatter([at(x) for x, _ in pts], [y for _, y in pts], c=COLOURS[status], label=status, s=28, alpha=0.85, zorder=3)
        if categorical:
            ax.set_xticks(range(len(dist.args)), [str(v) for v in dist.args])
        if dist.log_scale:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set(xlabel=key, ylabel=metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    for ax in axes[0][1:]:  # a panel where a PBT trial moved says what its hollow mark is
        if any(label.startswith("start") for label in ax.get_legend_handles_labels()[1]):
            ax.legend(fontsize=8)
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
    marks = [(r["trial"].rsplit("_", 1)[-1], m) for r in rows for m in r.get("exploits", [])]
    for trial, (epoch, value, donor) in marks:  # PBT: here the trial took the donor's checkpoint and explored on
        ax.scatter([epoch], [value], marker="*", s=90, color="black", zorder=4)
        ax.annotate(f"{trial}←{donor.rsplit('_', 1)[-1]}", (epoch, value), textcoords="offset points", xytext=(4, -10), fontsize=7)
    handles = [plt.Line2D([], [], color=c, label=s) for s, c in COLOURS.items() if any(r["status"] == s for r in rows)]
    if marks:
        handles.append(plt.Line2D([], [], color="black", marker="*", ls="", label="exploit: copied ← donor"))
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


def print_results(rows: list[dict[str, Any]], sweep: Sweep, best: dict[str, Any] | None, console: Console, top: int = 10,
                  stopped: str | None = None) -> None:
    """The top trials in a table as wide as the terminal: every value whole, headers the swept fields' short names;
    when it does not fit, the time, test and epoch columns go first (named below it; results.csv has them all)."""
    metric, sign = sweep.tune.metric, (1 if sweep.tune.direction == "min" else -1)
    ranked = sorted(rows, key=lambda r: sign * r[metric] if isinstance(r[metric], (int, float)) and r[metric] == r[metric] else math.inf)
    if sweep.tune.trial == "evaluate":  # the evaluator's other figures (beam_faults, model_faults first), no epochs
        split = metric.split("/", 1)[0] + "/"
        others = sorted({k for r in rows for k in r if k.startswith(split) and k != metric}, key=lambda k: (not k.endswith("faults"), k))
        keys, drop_first = ["trial", "status", *sweep.space, metric, *others], others[::-1]
    else:
        test = "test/" + metric.split("/", 1)[-1]
        tested = [test] if test != metric and any(test in r for r in rows) else []
        keys, drop_first = ["trial", "status", "epochs", *sweep.space, metric, *tested, "train_s"], ["train_s", *tested, "epochs"]
    headers = column_titles(keys, sweep)
    cells = [[r["trial"].rsplit("_", 1)[-1], *(num(r.get(k)) if r.get(k) not in (None, "") else "" for k in keys[1:])]
             for r in ranked[:top]]
    drop = [headers[k] for k in (*drop_first, *reversed(sweep.space))]
    numeric = [headers[k] for i, k in enumerate(keys) if i >= 2 and all(_is_number(c[i]) for c in cells)]
    table, dropped = fit_table([headers[k] for k in keys], cells, console.width, drop_order=drop, right=numeric,
                               title=f"sweep {sweep.name}{f' (stopped: {stopped})' if stopped else ''}: top "
                                     f"{min(top, len(rows))} of {len(rows)} trials by {metric} ({sweep.tune.direction})")
    for row, r in zip(table.rows, ranked[:top]):
        row.style = "bold green" if best is not None and r["trial"] == best["trial"] else None
    console.print(table)
    if dropped:
        console.print(f"not shown: {', '.join(dropped)} (all in results.csv)", highlight=False)
    counts = {s: sum(r["status"] == s for r in rows) for s in COLOURS}
    console.print("trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), highlight=False)
    for r in rows:
        if r["status"] == "error":
            console.print(f"[red]failed[/] {r['trial']} after {sweep.tune.max_failures} retries: {r['error'][:160]} "
                          f"(full error: {sweep.folder / r['trial'] / 'error.txt'})", highlight=False)


def _is_number(text: str) -> bool:
    """A cell of a numeric column (an empty one is a missing number)."""
    try:
        float(text or 0)
    except ValueError:
        return False
    return True


def column_titles(keys: list[str], sweep: Sweep) -> dict[str, str]:
    """A swept field's column is titled by its short name (lr, schedule, dropout) unless two would share one."""
    titles = {k: short(k) if k in sweep.space else k for k in keys}
    clash = {t for t in titles.values() if list(titles.values()).count(t) > 1}
    return {k: k if t in clash else t for k, t in titles.items()}


UNFINISHED = ("pending", "running", "paused")


def write_outputs(grid, trials: dict[str, Any], sweep: Sweep, console: Console, expected: int = 0,
                  stop_reason: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
    """Everything the sweep leaves, and why it ended early (``jobs stop``, ``interrupted``) or None when it ran to the end."""
    from dl_ray.statuses import COMPLETED, FAILED, INTERRUPTED, STOPPED

    rows = collect(grid, trials, sweep)
    reason = None
    if any(r["status"] in UNFINISHED for r in rows) or len(rows) < expected:
        reason = stop_reason or INTERRUPTED
        for r in rows:  # a trial that had started was cut short with the sweep; one that had not stays pending
            r["status"] = "interrupted" if r["status"] in ("running", "paused") else r["status"]
    folder = sweep.folder
    write_csv(rows, folder / "results.csv")
    best = best_row(rows, sweep)
    write_sweep_summary(sweep, rows, STOPPED if reason else COMPLETED if best else FAILED, reason, best)
    if rows:
        plot_params(rows, sweep, folder / "params.png")
    if any(r["curve"] for r in rows):  # evaluate trials report once: no curve to draw
        plot_curves(rows, sweep, best, folder / "curves.png")
    print_results(rows, sweep, best, console, stopped=reason)
    if tie := _all_tie(rows, sweep):
        console.print(tie, highlight=False)
    if best is not None:
        write_best(best, sweep, folder / "best.yaml")
        console.print(f"best{' so far' if reason else ''}: {best['trial']} {sweep.tune.metric}={num(best[sweep.tune.metric])} "
                      f"-> {folder / 'best.yaml'}", highlight=False)
    if sweep.tune.compare:
        from dl_ray.experiments import write_comparison

        write_comparison(rows, sweep, console)
    if sweep.own_kind is not None:
        sweep.own_kind.write_outputs(rows, sweep)
    written = [n for n in ("results.csv", "summary.json", "best.yaml", "params.png", "curves.png", "exploits.csv", "grid.png")
               if (folder / n).is_file()]
    console.print(f"sweep folder: {folder}  ({', '.join(written)}, one run folder per trial)", highlight=False)
    return rows, best, reason


def _all_tie(rows: list[dict[str, Any]], sweep: Sweep) -> str | None:
    """A note when every trial scores the same: nothing was ranked (a decoder sweep on a split the model gets right)."""
    metric = sweep.tune.metric
    values = {r[metric] for r in rows if isinstance(r[metric], (int, float))}
    if len(rows) < 2 or len(values) != 1:
        return None
    split = metric.split("/", 1)[0]
    faults = ", ".join(f"{k.split('/', 1)[1]} {num(rows[0][k])}" for k in (f"{split}/beam_faults", f"{split}/model_faults")
                       if k in rows[0])
    return (f"all {len(rows)} trials tie at {metric} = {num(values.pop())}: the swept values make no difference here"
            + (f" ({faults})" if faults else "") + "; best.yaml takes the first trial")


def save_progress(trials: list[Any], stop_reason: str | None, sweep: Sweep) -> None:
    """results.csv and summary.json as they stand, written at each finished trial (and at SIGTERM)."""
    from dl_ray.statuses import RUNNING, STOPPED

    rows = finished_rows(trials, sweep)
    write_csv(rows, sweep.folder / "results.csv")
    write_sweep_summary(sweep, rows, STOPPED if stop_reason else RUNNING, stop_reason, best_row(rows, sweep))


def write_sweep_summary(sweep: Sweep, rows: list[dict[str, Any]], status: str, stop_reason: str | None,
                        best: dict[str, Any] | None) -> None:
    """``<sweep>/summary.json``: the run-status vocabulary of every kind, the trials' outcomes and the best trial."""
    from collections import Counter

    from dl_ray.statuses import status_fields
    from dl_ray.tracking import write_summary
    from dl_ray.tune.sweep import population

    metric = sweep.tune.metric
    write_summary(sweep.folder, {**status_fields(status, stop_reason), "kind": "sweep", "trials": population(sweep),
                                 "outcomes": dict(Counter(r["status"] for r in rows)), "metric": metric,
                                 "mode": sweep.tune.direction, "best_trial": best["trial"] if best else None,
                                 "best_metric": best[metric] if best else None})
