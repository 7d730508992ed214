"""``dl-ray eval`` of a generative run (kind autoencoder, vae, gan or language_model): its test metrics and its
pictures (a language model's samples) again.

The model is rebuilt from the run's best (or latest) checkpoint, its test split scored with the loop's own
``evaluate``, and the family's ``artifacts`` (reconstructions, samples, interpolations: whatever the family
draws) written again into the run folder, from that checkpoint, in eval mode and without gradients, with the
job's seed (so a sampler draws the same pictures each time). Also written: ``eval_test.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from rich.console import Console

from dl_ray.fmt import file_lines, shown_path


def evaluate_run(run_dir: str | Path, which: Literal["best", "last"] = "best", console: Console | None = None,
                 device: str | torch.device = "cpu") -> dict[str, Any]:
    """Score one generative run folder's test split and redraw its pictures; prints and returns the report."""
    from dl_ray.runs import score_test
    from dl_ray.train import checkpoints

    run_dir = Path(run_dir)
    scored = score_test(run_dir, which, torch.device(device))
    checkpoint, model, spec, data, metrics = scored.checkpoint, scored.model, scored.spec, scored.data, scored.metrics
    match = checkpoints.PATTERN.match(checkpoint.name)
    epoch = int(match.group(1)) if match else int(checkpoints.read(checkpoint)["state"]["epoch"])
    torch.manual_seed(spec.training.seed)
    model.eval()
    with torch.no_grad():
        pictures = [str(p) for p in model.artifacts(run_dir, epoch, data)]
    report = {"run": str(run_dir), "name": spec.name, "kind": spec.kind, "model": spec.model.name,
              "data": spec.data.name, "checkpoint": str(checkpoint), "weights": which, "epoch": epoch, "split": "test",
              "examples": len(data.test), "metrics": metrics, "pictures": pictures}
    (run_dir / "eval_test.json").write_text(json.dumps(report, indent=1))
    console = console or Console()
    console.print(f"[bold]{spec.name}[/]: {spec.model.name} ({spec.kind}) on {spec.data.name}, {len(data.test)} test "
                  f"examples, {checkpoint.name} ({which})", highlight=False)
    console.print("test: " + " · ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in metrics.items()), highlight=False)
    shown = file_lines("pictures", pictures) if pictures else ["pictures: none (this family draws none)"]
    for line in shown + [f"report: {shown_path(Path(run_dir) / 'eval_test.json')}"]:
        console.print(line, highlight=False, soft_wrap=True)
    return report
