"""Overhead of the generic loop (the task interface) against a plain PyTorch loop, and launch-to-first-step times.

    python benchmarks/train_overhead.py [--epochs 6] [--rounds 5] [--job jobs/cnn/resnet_mnist.yaml --no-launch]

(1) Samples/s over the same model, data, batch, optimizer (L2 as weight decay) and memory format (LeNet-5 on
    MNIST-5k by default; `--job` another supervised job), in this process and thread:
    a plain PyTorch loop vs `dl-ray train` in Ray Train local mode (the generic loop driving the task through
    training_step / ctx.backward / streaming metrics). Each round runs both, alternating which goes first, each
    after a full garbage collection (so neither collects the other's garbage in its timed epochs); first epoch
    dropped as warm-up, median of the rest; the ratio is the median over rounds.
(2) Seconds from launching `dl-ray train` (a new process) to the first optimiser step, for the local
    default (num_workers 0) and 1 Ray worker (which starts its own local Ray), median over rounds (LeNet-5 only;
    `--no-launch` skips it).
Goals: ratio >= 0.95, first step <= 6 s local default, <= 15 s with 1 worker. Exits 1 when one is missed.
"""
from __future__ import annotations

import argparse
import csv
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
JOB = ROOT / "jobs" / "mnist_lenet.yaml"
PLAIN = ["regularization.augment.max_shift=0", "regularization.augment.max_rotation=0", "regularization.dropout=0",
         "regularization.early_stopping.patience=null", "tracking.wandb=disabled", "schedule.name=constant"]


def plain_pytorch(job: Path, epochs: int) -> float:
    """The baseline: the loop anyone would write by hand (with the job's torch optimizer and memory format)."""
    from dl_ray.data import build_data
    from dl_ray.models import build_model
    from dl_ray.spec import load_spec
    from dl_ray.train.optim import make_optimizer

    spec = load_spec(job, PLAIN)
    data = build_data(spec.data)
    torch.manual_seed(0)
    layout = torch.channels_last if spec.training.memory_format == "channels_last" else torch.contiguous_format
    model = build_model(spec.model, data.io).to(memory_format=layout)
    opt = make_optimizer(model, spec.optimizer, spec.regularization.l2)
    x, y = data.train.tensors
    x = x.to(memory_format=layout)
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


def dl_ray_train(workers: int, epochs: int, storage: Path, name: str) -> tuple[float, float, float]:
    """(median train samples/s, seconds from launch to first step, wall seconds) of one `dl-ray train` process."""
    sets = [*PLAIN, f"training.epochs={epochs}", f"scaling.num_workers={workers}", f"storage.path={storage}",
            f"storage.name={name}"]
    cmd = [sys.executable, "-m", "dl_ray.cli", "train", str(JOB)] + [a for s in sets for a in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    launched = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wall = time.time() - launched
    summary = json.loads((storage / name / "summary.json").read_text())
    with (storage / name / "metrics.csv").open() as f:
        rates = [float(r["perf/train_samples_per_s"]) for r in csv.DictReader(f)]
    return statistics.median(rates[1:]) if len(rates) > 1 else rates[0], summary["first_step_at"] - launched, wall


def dl_ray_in_process(job: Path, epochs: int, storage: Path, name: str) -> float:
    """Median train samples/s of `dl-ray train` in local mode, run here (same process and thread as the baseline)."""
    from rich.console import Console

    from dl_ray.spec import load_spec
    from dl_ray.train.runner import run

    spec = load_spec(job, [*PLAIN, f"training.epochs={epochs}", f"storage.path={storage}", f"storage.name={name}"])
    run(spec, Console(file=open(os.devnull, "w")))
    with (storage / name / "metrics.csv").open() as f:
        rates = [float(r["perf/train_samples_per_s"]) for r in csv.DictReader(f)]
    return statistics.median(rates[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--job", type=Path, default=JOB, help="a supervised job (default: jobs/mnist_lenet.yaml)")
    parser.add_argument("--no-launch", action="store_true", help="skip the launch-to-first-step timings")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; job {args.job.name}")
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp)
        ratios = []
        for r in range(args.rounds):
            sides = {"plain": functools.partial(plain_pytorch, args.job, args.epochs),
                     "ours": functools.partial(dl_ray_in_process, args.job, args.epochs, storage, f"local_{r}")}
            rates = {}
            for side in sides if r % 2 == 0 else reversed(sides):
                gc.collect()
                rates[side] = sides[side]()
            base, ours = rates["plain"], rates["ours"]
            ratios.append(ours / base)
            print(f"round {r + 1}: plain PyTorch {base:7.0f} samples/s, dl-ray local mode {ours:7.0f}  ratio {ours / base:.3f}")
        ratio = statistics.median(ratios)
        print(f"generic loop / plain PyTorch: median ratio {ratio:.3f} over {args.rounds} rounds   (goal >= 0.95)")
        if ratio < 0.95:
            missed.append(f"loop ratio {ratio:.3f} < 0.95")
        for workers, goal in () if args.no_launch else ((0, 6), (1, 15)):
            firsts = [dl_ray_train(workers, 1, storage, f"first_{workers}_{r}")[1] for r in range(args.rounds)]
            first = statistics.median(firsts)
            label = "local default (0 workers)" if workers == 0 else "1 Ray worker"
            print(f"launch -> first step, {label:26s} median {first:5.1f} s   (goal <= {goal} s)")
            if first > goal:
                missed.append(f"first step {first:.1f} s > {goal} s with {workers} workers")
    if missed:
        print("MISSED: " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
