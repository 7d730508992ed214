"""``dl-ray eval`` of a supervised run: a classifier's confusion matrix and its most confident mistakes.

The run's model is rebuilt from its best (or latest) checkpoint (:func:`dl_ray.runs.load_model`), its test
split is scored with the loop's own ``evaluate`` (the figures ``summary.json`` holds) and predicted once more
to say where the errors are:

* multiclass / binary: the confusion matrix (rows: true class, columns: predicted) with each class's accuracy
  (its recall: diagonal / row sum), ``confusion.png``, and for images ``mistakes.png``, the wrong predictions
  the model was surest of ("true→pred p=0.97"); binary runs add precision, recall and F1;
* regression: MSE, RMSE, MAE and R² of the (standardised) target, and ``predictions.png`` (predicted vs true).

Everything printed is also written to ``<run>/eval_test.json``. Seq2seq runs have their own evaluation
(:mod:`dl_ray.eval_seq2seq`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from rich.console import Console
from rich.table import Table

from dl_ray.fmt import file_lines, fit_table, pct, shown_path

MAX_MISTAKES_DRAWN = 30
MAX_CLASSES_SHOWN = 20  # wider confusion matrices are drawn, and printed as per-class rows


def evaluate_run(run_dir: str | Path, which: Literal["best", "last"] = "best", console: Console | None = None,
                 device: str | torch.device = "cpu") -> dict[str, Any]:
    """Score one supervised run folder's test split; prints the report, writes ``eval_test.json`` and the PNGs."""
    from dl_ray.runs import score_test

    run_dir, device = Path(run_dir), torch.device(device)
    scored = score_test(run_dir, which, device)
    checkpoint, model, spec, data, metrics = scored.checkpoint, scored.model, scored.spec, scored.data, scored.metrics
    out, y = predict(model, data, "test", device)
    report: dict[str, Any] = {"run": str(run_dir), "name": spec.name, "model": spec.model.name, "data": spec.data.name,
                              "checkpoint": str(checkpoint), "weights": which, "split": "test", "task": data.task,
                              "examples": len(y), "metrics": metrics}
    if data.task in ("multiclass", "binary"):
        report |= classification(out, y, data.task, data.meta.get("classes"))
        pictures = [plot_confusion(report, run_dir / "confusion.png")]
        mistakes_png = run_dir / "mistakes.png"
        mistakes_png.unlink(missing_ok=True)  # never leave an older evaluation's picture beside this one
        if len(data.input_shape) == 3 and report["mistakes"]:
            pictures.append(draw_mistakes(report, data.test.tensors[0], data.meta.get("pixels"), mistakes_png))
    else:
        report |= regression(out, y)
        pictures = [plot_predictions(out, y, report, run_dir / "predictions.png")]
    report["pictures"] = [str(p) for p in pictures]
    (run_dir / "eval_test.json").write_text(json.dumps(report, indent=1))
    print_report(report, console or Console())
    return report


@torch.no_grad()
def predict(model, data, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's raw outputs (logits or values) and the targets over ``split``, in order, on the CPU."""
    from dl_ray.train.loop import EVAL_BATCH, to_device

    model.eval()
    outs, targets = [], []
    for batch in data.loader(split, EVAL_BATCH):
        batch = to_device(batch, device)
        outs.append(model(*model.inputs(batch)).float().cpu())
        targets.append(batch[-1].cpu())
    return torch.cat(outs), torch.cat(targets)


def classification(out: torch.Tensor, y: torch.Tensor, task: str, names: list[str] | None = None) -> dict[str, Any]:
    """Confusion matrix, per-class accuracy and the mistakes, surest first, from logits ``out`` and labels ``y``."""
    if task == "binary":
        p1 = torch.sigmoid(out)
        pred = (out > 0).long()
        confidence = torch.where(pred == 1, p1, 1 - p1)
        classes = 2
    else:
        confidence, pred = torch.softmax(out, dim=1).max(dim=1)
        classes = out.shape[1]
    y = y.long()
    confusion = torch.bincount(y * classes + pred, minlength=classes * classes).view(classes, classes)
    support = confusion.sum(dim=1)
    per_class = [int(confusion[c, c]) / int(support[c]) if support[c] else None for c in range(classes)]
    wrong = (pred != y).nonzero().flatten()
    wrong = wrong[confidence[wrong].argsort(descending=True)]
    names = [str(n) for n in names] if names and len(names) == classes else [str(c) for c in range(classes)]
    result: dict[str, Any] = {
        "classes": names, "confusion": confusion.tolist(), "support": support.tolist(), "per_class_accuracy": per_class,
        "accuracy": int(confusion.diag().sum()) / max(len(y), 1),
        "mistakes": [{"index": int(i), "true": names[int(y[i])], "pred": names[int(pred[i])],
                      "p": float(confidence[i])} for i in wrong[:1000]],
        "mistake_count": len(wrong),
    }
    if task == "binary":
        tp, fp, fn = int(confusion[1, 1]), int(confusion[0, 1]), int(confusion[1, 0])
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        result |= {"precision": precision, "recall": recall,
                   "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}
    return result


def regression(out: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """MSE, RMSE, MAE and R² of predictions ``out`` against targets ``y`` (the run's standardised target)."""
    err = (out.double() - y.double())
    mse = float((err**2).mean())
    total = float(((y.double() - y.double().mean()) ** 2).sum())
    return {"mse": mse, "rmse": mse**0.5, "mae": float(err.abs().mean()),
            "r2": 1 - float((err**2).sum()) / total if total else float("nan")}


# ---------------------------------------------------------------- pictures


def plot_confusion(report: dict[str, Any], path: Path) -> Path:
    """The confusion matrix as a heat map (colour: share of the true class; numbers: counts)."""
    from dl_ray.plots import pyplot

    plt = pyplot()
    confusion = torch.tensor(report["confusion"], dtype=torch.float64)
    share = confusion / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    n, names = len(confusion), report["classes"]
    size = min(max(3.5, 0.45 * n + 1.8), 16)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    image = ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                count = int(confusion[i, j])
                if count:
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(n), names, fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"{report['name']}: test accuracy {100 * report['accuracy']:.2f}% ({report['examples']} examples)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_mistakes(report: dict[str, Any], images: torch.Tensor, pixels: str | None, path: Path) -> Path:
    """The wrong predictions the model was surest of, as an image grid labelled "true→pred p=0.97"."""
    from dl_ray.plots import image_grid

    shown = report["mistakes"][:MAX_MISTAKES_DRAWN]
    picked = images[[m["index"] for m in shown]].float()
    if pixels not in ("unit", "binary"):  # standardised pixels: stretch each image back to [0, 1]
        flat = picked.flatten(1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
        picked = (picked - lo.view(-1, 1, 1, 1)) / (hi - lo).clamp(min=1e-6).view(-1, 1, 1, 1)
    labels = [f"{m['true']}→{m['pred']} p={m['p']:.2f}" for m in shown]
    which = (f"all {len(shown)} test mistakes" if len(shown) == report["mistake_count"]
             else f"the {len(shown)} most confident of {report['mistake_count']} test mistakes")
    title = f"{report['name']}: {which}, surest first (true→predicted, p = predicted probability)"
    return image_grid(picked, path, nrow=min(10, len(shown)), title=title, labels=labels)


def plot_predictions(out: torch.Tensor, y: torch.Tensor, report: dict[str, Any], path: Path) -> Path:
    """Predicted against true values of a regression run's test split."""
    from dl_ray.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(y.numpy(), out.numpy(), s=10, alpha=0.7)
    lo, hi = float(min(y.min(), out.min())), float(max(y.max(), out.max()))
    ax.plot([lo, hi], [lo, hi], color="gray", linewidth=1)
    ax.set(xlabel="true (standardised)", ylabel="predicted", title=f"{report['name']}: test R² {report['r2']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the terminal


def metric_text(name: str, value: float) -> str:
    return f"{name} {100 * value:.2f}%" if name in ("accuracy", "precision", "recall", "f1") else f"{name} {value:.4f}"


def print_report(report: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{report['name']}[/]: {report['model']} on {report['data']} ({report['task']}), "
                  f"{report['examples']} test examples, {Path(report['checkpoint']).name} ({report['weights']})",
                  highlight=False)
    line = [metric_text(k.split("/", 1)[1], v) for k, v in report["metrics"].items()]
    line += [metric_text(k, report[k]) for k in ("precision", "recall", "f1", "mse", "rmse", "mae", "r2") if k in report]
    console.print("test: " + " · ".join(line), highlight=False)
    if "confusion" in report:
        table, note = confusion_table(report, console.width)  # a pipe's width is 80 (or COLUMNS)
        console.print(table)
        if note:
            console.print(f"({note})", highlight=False)
        console.print(surest_mistakes(report, console.width), highlight=False, soft_wrap=True)
    for line in file_lines("pictures", report["pictures"]) + [f"report: {shown_path(Path(report['run']) / 'eval_test.json')}"]:
        console.print(line, highlight=False, soft_wrap=True)


def surest_mistakes(report: dict[str, Any], width: int = 80) -> str:
    """``N mistakes; the surest: 3→5 p=1.00, ...``: up to five, as many as fit ``width`` (at least one)."""
    if not report["mistakes"]:
        return "no mistakes on the test split"
    line = f"{report['mistake_count']} mistakes; the surest:"
    for k, m in enumerate(report["mistakes"][:5]):
        item = f"{',' if k else ''} {m['true']}→{m['pred']} p={m['p']:.2f}"
        if k and len(line) + len(item) > width:
            break
        line += item
    return line


def confusion_table(report: dict[str, Any], width: int = 80) -> tuple[Table, str | None]:
    """Rows: true class; columns: predicted class, examples and the class's accuracy (its recall), fitted to
    ``width``; and a note on what was left out, or None.

    The examples column (each row's sum) goes first when the matrix is too wide; when even the class columns
    would not fit, or there are more than MAX_CLASSES_SHOWN classes, it becomes one row per class: examples,
    accuracy and the class it is most often taken for (confusion.png has the whole matrix)."""
    names, confusion = report["classes"], report["confusion"]
    accuracy = ["-" if acc is None else pct(acc, 2) for acc in report["per_class_accuracy"]]
    if len(names) <= MAX_CLASSES_SHOWN:
        columns = ["true", *names, "examples", "accuracy"]
        rows = [[name, *(str(c) if c else "·" for c in confusion[i]), str(report["support"][i]), accuracy[i]]
                for i, name in enumerate(names)]
        table, dropped = fit_table(columns, rows, width, title="test confusion matrix (rows: true class, columns: "
                                   "predicted)", drop_order=["examples", *names[::-1]], right=columns[1:])
        if dropped == ["examples"]:
            return table, "examples = the row's sum (left out to fit the width)"
        if not dropped:
            return table, None
    columns = ["true", "examples", "accuracy", "most often taken for"]
    rows = [[name, str(report["support"][i]), accuracy[i], _taken_for(confusion[i], i, names)]
            for i, name in enumerate(names)]
    table, dropped = fit_table(columns, rows, width, title="test accuracy by class (confusion.png: the whole matrix)",
                               right=columns[1:3])
    return table, (f"{', '.join(dropped)} left out to fit {width} columns (eval_test.json has it)" if dropped else None)


def _taken_for(row: list[int], i: int, names: list[str]) -> str:
    """The class that true class ``i`` is most often predicted as, with the count: ``7 (12)``."""
    others = [(c, j) for j, c in enumerate(row) if j != i and c]
    return f"{names[max(others)[1]]} ({max(others)[0]})" if others else ""
