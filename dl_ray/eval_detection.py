"""``dl-ray eval`` of a detection run: mAP on the test canvases, AP per class, and the boxes drawn.

The YOLO model is rebuilt from the run's best (or latest) checkpoint (:func:`dl_ray.runs.load_model`), the test
canvases are detected once more through the model's own ``eval_step`` (the same thresholds, NMS and
:class:`~dl_ray.detection.average_precision.MeanAveragePrecision` as training), and the report gives mAP@0.5,
mAP@[.5:.95] and, per class, AP@0.5, AP@[.5:.95] and its true boxes; then mAP@0.5 of only the boxes the detector
outputs (score >= ``score_threshold``, 0.6 in the course). ``detections.png`` draws those boxes (red) and the
true ones (green) on the first test canvases. Everything printed is also in ``<run>/eval_test.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from rich.console import Console
from rich.table import Table

from dl_ray.fmt import file_lines


@torch.no_grad()
def evaluate_run(run_dir: str | Path, which: Literal["best", "last"] = "best", console: Console | None = None,
                 device: str | torch.device = "cpu") -> dict[str, Any]:
    """Score one detection run folder's test canvases; prints the report, writes ``eval_test.json`` and the PNG."""
    from dl_ray.data import build_data
    from dl_ray.detection.average_precision import MeanAveragePrecision
    from dl_ray.models.yolo import draw_detections
    from dl_ray.runs import checkpoint_of, load_model, load_spec_of
    from dl_ray.train.loop import EVAL_BATCH, to_device

    run_dir, device = Path(run_dir), torch.device(device)
    checkpoint = checkpoint_of(run_dir, which)
    model, spec = load_model(checkpoint, spec=load_spec_of(run_dir), device=device)
    data = build_data(spec.data)
    metrics = {name: m.to(device) for name, m in model.evaluation().items()}
    output = MeanAveragePrecision(num_classes=model.classes).to(device)  # of what the detector outputs
    for batch in data.loader("test", EVAL_BATCH):
        x, boxes, labels = to_device(batch, device)
        model.eval_step((x, boxes, labels), metrics, model.networks())
        output.update(model.detect(model.activate(model(x).float())),
                      [{"boxes": b, "labels": c} for b, c in zip(boxes, labels)])
    ap = metrics["map"].source.compute()
    truths = torch.bincount(torch.cat(data.test.labels), minlength=model.classes)
    names = data.meta.get("classes") or [str(c) for c in range(model.classes)]
    report = {"run": str(run_dir), "name": spec.name, "model": spec.model.name, "data": spec.data.name,
              "checkpoint": str(checkpoint), "weights": which, "split": "test", "canvases": len(data.test),
              "metrics": {"test/loss": float(metrics["loss"].compute()), "test/map_50": float(ap["map_50"]),
                          "test/map": float(ap["map"]), "test/map_50_output": float(output.compute()["map_50"])},
              "per_class": [{"class": names[c], "ap_50": float(ap["ap_50_per_class"][c]),
                             "ap": float(ap["ap_per_class"][c]), "true_boxes": int(truths[c])} for c in range(model.classes)],
              "thresholds": {"score": spec.model.score_threshold, "eval_score": spec.model.eval_score_threshold,
                             "iou": spec.model.iou_threshold}}
    report["pictures"] = [str(draw_detections(model, data.test, run_dir / "detections.png", n=32, title=f"({which})"))]
    (run_dir / "eval_test.json").write_text(json.dumps(report, indent=1))
    print_report(report, checkpoint.name, console or Console())
    return report


def print_report(report: dict[str, Any], checkpoint: str, console: Console) -> None:
    m, t = report["metrics"], report["thresholds"]
    console.print(f"[bold]{report['name']}[/]: {report['model']} on {report['data']} (detection), {report['canvases']} test "
                  f"canvases, {checkpoint} ({report['weights']})", highlight=False)
    console.print(f"test: mAP@0.5 {m['test/map_50']:.4f} · mAP@[.5:.95] {m['test/map']:.4f} · loss {m['test/loss']:.4f} "
                  f"(boxes ranked down to score {t['eval_score']}, per-class NMS at IoU {t['iou']})", highlight=False)
    table = Table(title="average precision per class (test canvases)")
    for column in ("class", "AP@0.5", "AP@[.5:.95]", "true boxes"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in report["per_class"]:
        table.add_row(row["class"], *(f"{row[k]:.4f}" if row[k] >= 0 else "n/a" for k in ("ap_50", "ap")), str(row["true_boxes"]))
    console.print(table)
    console.print(f"the detector's output alone (score >= {t['score']}): mAP@0.5 {m['test/map_50_output']:.4f}", highlight=False)
    for line in file_lines("pictures (red: detected, green: true)", report["pictures"]):
        console.print(line, highlight=False, soft_wrap=True)
