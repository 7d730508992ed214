"""Epoch reports of Ray Train workers: dl-ray's controller poll (0.2 s) against Ray's default (2 s).

    python benchmarks/ray_train_reports.py [--rounds 3] [--epochs 15]

A Ray Train worker's result queue holds one report, so each `ray.train.report` waits until the controller's next
poll of the workers takes the one before; Ray polls every 2 s, dl-ray sets `RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2`
(a value the user set wins). The job: a digits MLP on 2 Ray Train workers, one report (and checkpoint) per epoch,
run by `dl-ray train` in a new process with its own local Ray; both sides run the same job, alternating which
goes first. Goal: wall time with dl-ray's poll <= 0.7 x with Ray's (median over rounds), and both runs' metrics
(losses and accuracies of every epoch, final test metrics) identical. Exits 1 when either fails.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = {"name": "reports", "kind": "supervised", "model": {"name": "mlp", "hidden": [32]}, "data": {"name": "digits"},
       "optimizer": {"name": "adam", "lr": 0.01}, "training": {"batch_size": 64}, "tracking": {"wandb": "disabled"},
       "scaling": {"num_workers": 2, "cpus_per_worker": 1}}
SIDES = {"ray": "2", "ours": None}  # the interval each side's process gets (None: dl-ray's default)
GOAL = 0.7


def train(folder: Path, epochs: int, name: str, interval: str | None) -> tuple[float, list[dict], dict]:
    """Wall seconds, metrics.csv rows (timings left out) and final metrics of one `dl-ray train` process."""
    job = folder / "job.yaml"
    job.write_text(json.dumps(JOB | {"training": JOB["training"] | {"epochs": epochs}}))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")}
    if interval is not None:
        env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = interval
    cmd = [sys.executable, "-m", "dl_ray.cli", "train", str(job), "--set", f"storage.path={folder}", "--set",
           f"storage.name={name}"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with (folder / name / "metrics.csv").open() as f:
        rows = [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/"))} for r in csv.DictReader(f)]
    return wall, rows, json.loads((folder / name / "summary.json").read_text())["final"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; digits MLP, 2 Ray Train "
          f"workers, {args.epochs} epochs")
    failed, ratios, outputs = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            walls = {}
            for side in SIDES if r % 2 == 0 else reversed(SIDES):
                walls[side], *outputs[side, r] = train(Path(tmp), args.epochs, f"r{r}_{SIDES[side]}", SIDES[side])
            ray_side, ours = walls["ray"], walls["ours"]
            ratios.append(ours / ray_side)
            print(f"round {r + 1}: Ray's poll {ray_side:5.1f} s, dl-ray's {ours:5.1f} s   ratio {ours / ray_side:.3f}")
    ratio = statistics.median(ratios)
    print(f"dl-ray / Ray default: median wall ratio {ratio:.3f} over {args.rounds} rounds   (goal <= {GOAL})")
    if ratio > GOAL:
        failed.append(f"wall ratio {ratio:.3f} > {GOAL}")
    first = next(iter(outputs.values()))
    if any(output != first for output in outputs.values()):
        failed.append("the runs' metrics differ (they must not: the poll interval only changes when reports are taken)")
    for line in failed:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
