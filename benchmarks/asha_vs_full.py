"""ASHA vs running every trial to its full budget: same search space, same seed, same trials.

Both sweeps sample the same configurations (seeded random search) of a small MLP on the real
scikit-learn digits, trials running the generic loop in their trial process (2 at a time). It
prints the compute each spent (trial-epochs) and the best validation accuracy each found.
Goal: ASHA finds a trial within 1 % of the full-budget best with <= 35 % of its compute.

    flock /tmp/dl_ray_cpu.lock python benchmarks/asha_vs_full.py [--samples 27] [--epochs 27]
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
SWEEP = Path(__file__).resolve().parents[1] / "jobs" / "sweeps" / "digits_tiny.yaml"


def sweep(scheduler: str, args: argparse.Namespace, storage: str) -> tuple[list[dict], float]:
    from dl_ray.tune.results import collect
    from dl_ray.tune.spec import load_sweep
    from dl_ray.tune.sweep import run_sweep

    spec = load_sweep(SWEEP, [
        f"name={scheduler}", f"storage.path={storage}", "tracking.wandb=disabled", f"training.epochs={args.epochs}",
        "model.hidden=[64]", f"tune.num_samples={args.samples}", "tune.seed=0", "tune.metric=val/accuracy",
        f"tune.scheduler={{name: {scheduler}, grace_period: 1, reduction_factor: {args.reduction_factor}}}",
        "tune.space.optimizer.lr={loguniform: [1.0e-5, 1.0e-1]}",
        "tune.space.regularization.dropout={uniform: [0.0, 0.6]}",
    ])
    started = time.perf_counter()
    grid, trials = run_sweep(spec, Console(file=io.StringIO()))
    return collect(grid, trials, spec), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=27, help="trials in each sweep")
    parser.add_argument("--epochs", type=int, default=27, help="full budget of a trial, in epochs")
    parser.add_argument("--reduction-factor", type=float, default=3, help="ASHA: keep the best 1/rf at each rung")
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as storage:
        full, full_s = sweep("fifo", args, storage)
        asha, asha_s = sweep("asha", args, storage)
    ray.shutdown()

    same = [(r["optimizer.lr"], r["regularization.dropout"]) for r in full] == \
           [(r["optimizer.lr"], r["regularization.dropout"]) for r in asha]
    cost = {name: sum(int(r["epochs"]) for r in rows) for name, rows in (("full", full), ("asha", asha))}
    best = {name: max(r["val/accuracy"] for r in rows) for name, rows in (("full", full), ("asha", asha))}
    stopped = sum(r["status"] == "stopped" for r in asha)
    within = best["asha"] >= 0.99 * best["full"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, Ray 2 CPUs; "
          f"{args.samples} trials x {args.epochs} epochs, digits MLP [64], same configurations: {same}")
    print(f"full budget (fifo): {cost['full']:5d} trial-epochs  best val/accuracy {best['full']:.4f}  {full_s:6.1f} s")
    print(f"asha (rf={args.reduction_factor:g}):      {cost['asha']:5d} trial-epochs  best val/accuracy {best['asha']:.4f}  "
          f"{asha_s:6.1f} s  ({stopped} of {args.samples} trials stopped early)")
    ratio = cost["asha"] / cost["full"]
    print(f"ASHA compute / full compute = {ratio:.1%} (goal <= 35%); wall clock {asha_s / full_s:.1%}; "
          f"ASHA best within 1% of the full-budget best: {within}")


if __name__ == "__main__":
    main()
