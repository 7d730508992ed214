"""Overhead of the generic Ray Train loop against a plain PyTorch loop, and launch-to-first-step times.

    python benchmarks/train_overhead.py [--epochs 6]

(1) Samples/s over the same LeNet-5, the same MNIST-5k tensors, batch 64, Adam: a plain PyTorch loop in
    this process vs `dl-ray train` on 1 Ray Train worker (2 CPUs, so both use 2 threads), and in
    Ray Train local mode. First epoch dropped as warm-up; median of the rest.
    A Ray Train V2 worker runs the train function in a thread of its actor, so the same plain loop run
    from a Python thread is shown too: on this 2-core box torch's CPU kernels are much slower there.
(2) Seconds from launching `dl-ray train` (a new process) to the first optimiser step, for the local
    default (num_workers 0), 1 and 2 Ray workers (each starts its own local Ray).
Prints ratios; goals: ratio >= 0.95, first step <= 6 s local default, <= 15 s with 1 worker.
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
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
JOB = ROOT / "jobs" / "mnist_lenet.yaml"
PLAIN = ["regularization.augment.max_shift=0", "regularization.augment.max_rotation=0", "regularization.dropout=0",
         "regularization.early_stopping.patience=null", "tracking.wandb=disabled", "schedule.name=constant"]


def plain_pytorch(epochs: int) -> float:
    """The baseline: the loop anyone would write by hand."""
    from dl_ray.data import build_data
    from dl_ray.models import build_model
    from dl_ray.spec import load_spec

    spec = load_spec(JOB, PLAIN)
    data = build_data(spec.data)
    torch.manual_seed(0)
    model = build_model(spec.model, data.io)
    opt = torch.optim.Adam(model.parameters(), lr=spec.optimizer.lr)
    x, y = data.train.tensors
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(x)).split(spec.training.batch_size):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates.append(len(x) / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def dl_ray_train(workers: int, epochs: int, storage: Path, extra: list[str] = ()) -> tuple[float, float, float]:
    """(median train samples/s, seconds from launch to first step, wall seconds) of one `dl-ray train` process."""
    name = f"w{workers}_e{epochs}"
    sets = [*PLAIN, f"training.epochs={epochs}", f"scaling.num_workers={workers}", f"storage.path={storage}",
            f"storage.name={name}", *extra]
    cmd = [sys.executable, "-m", "dl_ray.cli", "train", str(JOB)] + [a for s in sets for a in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    launched = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wall = time.time() - launched
    summary = json.loads((storage / name / "summary.json").read_text())
    with (storage / name / "metrics.csv").open() as f:
        rates = [float(r["perf/train_samples_per_s"]) for r in csv.DictReader(f)]
    return statistics.median(rates[1:]) if len(rates) > 1 else rates[0], summary["first_step_at"] - launched, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp)
        base = plain_pytorch(args.epochs)
        threaded: list[float] = []  # the same loop from a Python thread, as Ray Train V2 runs a worker's train function
        worker = threading.Thread(target=lambda: threaded.append(plain_pytorch(args.epochs)))
        worker.start()
        worker.join()
        one, _, _ = dl_ray_train(1, args.epochs, storage, ["scaling.cpus_per_worker=2"])
        local, _, _ = dl_ray_train(0, args.epochs, storage)
        print(f"plain PyTorch            {base:8.0f} samples/s")
        print(f"plain PyTorch, in a thread {threaded[0]:6.0f} samples/s   ratio {threaded[0] / base:.3f}")
        print(f"dl-ray, 1 Ray worker     {one:8.0f} samples/s   ratio {one / base:.3f}   (goal >= 0.95); "
              f"against the threaded baseline {one / threaded[0]:.3f}")
        print(f"dl-ray, local mode       {local:8.0f} samples/s   ratio {local / base:.3f}")
        for workers, goal in ((0, 6), (1, 15), (2, None)):
            _, first, wall = dl_ray_train(workers, 1, storage)
            label = "local default (0 workers)" if workers == 0 else f"{workers} Ray worker{'s' * (workers > 1)}"
            print(f"launch -> first step, {label:26s} {first:5.1f} s" + (f"   (goal <= {goal} s)" if goal else "") + f"   whole 1-epoch run {wall:5.1f} s")


if __name__ == "__main__":
    main()
