"""What a finished run shows: a final metrics table, the bias/variance line and a learning-curve PNG."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dl_ray.fmt import fit_table, fixed, shown_path
from dl_ray.statuses import describe

WIDTH = 80


def bias_variance(final: dict[str, float], task: str) -> str:
    """The course's diagnosis: train error = bias, (validation - train) error = variance; two lines under 80 columns."""
    if "train_eval/accuracy" not in final:
        train, val, unit = final["train_eval/loss"], final["val/loss"], " (loss)"
        fmt = fixed
    else:
        train, val, unit = 1 - final["train_eval/accuracy"], 1 - final["val/accuracy"], ""
        fmt = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    gap = val - train
    if train > 2 * max(gap, 0) and train > (0.05 if "train_eval/accuracy" in final else 0.3):
        verdict = "high bias: train longer, a bigger model or less regularisation"
    elif gap > max(train, 0.01):
        verdict = "high variance: more data, augmentation, L2/dropout or early stopping"
    else:
        verdict = "balanced"
    return (f"bias/variance: train error {fmt(train)} · val error {fmt(val)} · gap {fmt(gap)}{unit}\n"
            f"  → {verdict}")


SPLITS = (("train_eval", "train (eval mode)"), ("val", "validation"), ("test", "test"))


def final_table(summary: dict[str, Any], width: int = WIDTH) -> tuple[Table, list[str]]:
    """The best weights' metrics per split, and the metrics left out to fit ``width`` (all are in summary.json).

    A metric equal to another on every split is one column (a seq2seq model's ``accuracy`` is its greedy
    ``exact_match``, the name job files may use for early stopping)."""
    final = summary["final"]
    columns: dict[str, str] = {}  # header -> metric shown
    names = dict.fromkeys(k.split("/", 1)[1] for k in final)  # the task's order: its main metrics first
    for m in sorted(names, key=lambda n: (n != "loss", n != "accuracy")):
        twin = next((h for h, shown in columns.items()
                     if all(final.get(f"{s}/{m}") == final.get(f"{s}/{shown}") for s, _ in SPLITS)), None)
        if twin is None:
            columns[m] = m
        else:  # renamed in place, so the column keeps its position
            columns = {f"{h} = {m}" if h == twin else h: shown for h, shown in columns.items()}
    rows = [[label, *(fixed(final.get(f"{split}/{m}")) for m in columns.values())] for split, label in SPLITS]
    title = f"final metrics ({describe(summary)}, {summary['epochs_run']} epochs)"
    return fit_table(["split", *columns], rows, width, title=title, right=list(columns))


def print_report(summary: dict[str, Any], run_dir: Path, console: Console, width: int = WIDTH) -> None:
    table, dropped = final_table(summary, width)
    console.print(table)
    if dropped:
        console.print(f"(left out to fit {width} columns: {', '.join(dropped)}; all are in summary.json)", highlight=False)
    if summary.get("kind", "supervised") == "supervised":
        console.print(bias_variance(summary["final"], summary["task"]), highlight=False)
    if summary.get("best_epoch"):  # the figures above are the best epoch's weights: summary.json's checkpoint
        console.print(f"weights of best epoch {summary['best_epoch']} of {summary['epochs_run']} (early stopping "
                      f"{fixed(summary['best_metric'])}): {Path(summary.get('checkpoint', '')).name}", highlight=False)
    console.print(f"run folder: {shown_path(run_dir)}", highlight=False)
    console.print("  metrics.csv, curves.png, summary.json, checkpoint_epoch_*/, wandb/", highlight=False)


def plot_curves(metrics_csv: Path, out_png: Path, max_panels: int = 4) -> Path | None:
    """The task's first metrics (loss and accuracy first) and the learning rate(s) against epoch, train vs validation."""
    if not metrics_csv.is_file():
        return None
    from dl_ray.plots import pyplot

    plt = pyplot()
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    epochs = [int(r["epoch"]) for r in rows]
    names = {k.split("/", 1)[1] for k in rows[0] if k.startswith(("train/", "val/"))}
    panels = sorted(names, key=lambda n: (n != "loss", n != "accuracy", n))[:max_panels] + ["lr"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "lr":
            series = [(k, k.replace("lr/", "") if k != "lr" else "learning rate") for k in rows[0] if k == "lr" or k.startswith("lr/")]
        else:
            series = [(f"{split}/{panel}", label) for split, label in (("train", "train"), ("val", "validation"))
                      if f"{split}/{panel}" in rows[0]]
        for key, label in series:
            ax.plot(epochs, [float(r[key]) if r.get(key) else float("nan") for r in rows], marker=".", label=label)
        ax.set(title=panel, xlabel="epoch")
        if panel == "loss" and all(float(r[k]) > 0 for r in rows for k, _ in series if r.get(k)):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    test = rows[-1].get("test/accuracy") or rows[-1].get("test/loss")
    fig.suptitle(f"{metrics_csv.parent.name}" + (f" — test {'accuracy' if rows[-1].get('test/accuracy') else 'loss'} {float(test):.4f}" if test else ""))
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
