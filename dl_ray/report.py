"""What a finished run shows: a final metrics table, the bias/variance line and a learning-curve PNG."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def bias_variance(final: dict[str, float], task: str) -> str:
    """The course's diagnosis: train error = bias, (validation - train) error = variance."""
    if "train_eval/accuracy" not in final:
        train, val, unit = final["train_eval/loss"], final["val/loss"], " loss"
        fmt = lambda v: f"{v:.4f}"  # noqa: E731
    else:
        train, val, unit = 1 - final["train_eval/accuracy"], 1 - final["val/accuracy"], ""
        fmt = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    gap = val - train
    if train > 2 * max(gap, 0) and train > (0.05 if "train_eval/accuracy" in final else 0.3):
        verdict = "high bias: train longer, a bigger model or less regularisation"
    elif gap > max(train, 0.01):
        verdict = "high variance: more data, augmentation, L2/dropout or early stopping"
    else:
        verdict = "balanced"
    return f"bias/variance: train error {fmt(train)}{unit} · validation error {fmt(val)}{unit} · gap {fmt(gap)} → {verdict}"


def final_table(summary: dict[str, Any]) -> Table:
    final = summary["final"]
    table = Table(title=f"final metrics ({summary['status']}, {summary['epochs_run']} epochs)")
    table.add_column("split")
    metrics = sorted({k.split("/", 1)[1] for k in final})
    for m in metrics:
        table.add_column(m, justify="right")
    for split, label in (("train_eval", "train (eval mode)"), ("val", "validation"), ("test", "test")):
        table.add_row(label, *(f"{final[f'{split}/{m}']:.4f}" for m in metrics))
    return table


def print_report(summary: dict[str, Any], run_dir: Path, console: Console) -> None:
    console.print(final_table(summary))
    if summary.get("kind", "supervised") == "supervised":
        console.print(bias_variance(summary["final"], summary["task"]))
    if summary.get("best_epoch"):
        console.print(f"best epoch {summary['best_epoch']} (early-stopping metric {summary['best_metric']:.4f})")
    console.print(f"run folder: {run_dir}  (metrics.csv, curves.png, checkpoints, wandb/)")


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
