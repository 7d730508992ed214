"""ASHA vs running every trial to its full budget: same search space, same seed, same trials.

Both sweeps sample the same configurations (seeded random search) of a small MLP on the real
scikit-learn digits, trials running the generic loop in their trial process (2 at a time). It
prints the compute each spent (trial-epochs) and the best validation accuracy each found, for
``--rounds`` rounds (a new search seed each round; within a round both sweeps sample the same
configurations, and which one runs first alternates), then the median over the rounds.
Goal: ASHA finds a trial within 1 % of the full-budget best with <= 35 % of its compute (medians).
Exit code 1 when a goal is missed or the two sweeps of a round sampled different configurations.

    flock /tmp/dl_ray_cpu.lock python benchmarks/asha_vs_full.py [--samples 27] [--epochs 27] [--rounds 3]
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
SWEEP = Path(__file__).resolve().parents[1] / "jobs" / "sweeps" / "digits_tiny.yaml"


def sweep(scheduler: str, args: argparse.Namespace, storage: str, seed: int) -> tuple[list[dict], float]:
    from dl_ray.tune.results import collect
    from dl_ray.tune.spec import load_sweep
    from dl_ray.tune.sweep import run_sweep

    spec = load_sweep(SWEEP, [
        f"name={scheduler}_{seed}", f"storage.path={storage}", "tracking.wandb=disabled", f"training.epochs={args.epochs}",
        "model.hidden=[64]", f"tune.num_samples={args.samples}", f"tune.seed={seed}", "tune.metric=val/accuracy",
        f"tune.scheduler={{name: {scheduler}, grace_period: 1, reduction_factor: {args.reduction_factor}}}",
        "tune.space.optimizer.lr={loguniform: [1.0e-5, 1.0e-1]}",
        "tune.space.regularization.dropout={uniform: [0.0, 0.6]}",
    ])
    started = time.perf_counter()
    grid, trials = run_sweep(spec, Console(file=io.StringIO()))
    return collect(grid, trials, spec), time.perf_counter() - started


def configurations(rows: list[dict]) -> list[tuple]:
    return [(r["optimizer.lr"], r["regularization.dropout"]) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=27, help="trials in each sweep")
    parser.add_argument("--epochs", type=int, default=27, help="full budget of a trial, in epochs")
    parser.add_argument("--reduction-factor", type=float, default=3, help="ASHA: keep the best 1/rf at each rung")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (full, ASHA) pairs; medians are reported (>= 3)")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error(f"--rounds: {args.rounds} is below 3; a median needs at least 3 rounds")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, Ray 2 CPUs; "
          f"{args.samples} trials x {args.epochs} epochs, digits MLP [64], ASHA rf={args.reduction_factor:g}")
    cost_ratios, wall_ratios, best_ratios, problems = [], [], [], []
    with tempfile.TemporaryDirectory() as storage:
        for seed in range(args.rounds):
            order = ("fifo", "asha") if seed % 2 == 0 else ("asha", "fifo")  # neither always runs on a warmer machine
            ran = {name: sweep(name, args, storage, seed) for name in order}
            (full, full_s), (asha, asha_s) = ran["fifo"], ran["asha"]
            if configurations(full) != configurations(asha):
                problems.append(f"round {seed + 1}: the two sweeps sampled different configurations")
            cost = {name: sum(int(r["epochs"]) for r in rows) for name, rows in (("full", full), ("asha", asha))}
            best = {name: max(r["val/accuracy"] for r in rows) for name, rows in (("full", full), ("asha", asha))}
            cost_ratios.append(cost["asha"] / cost["full"])
            wall_ratios.append(asha_s / full_s)
            best_ratios.append(best["asha"] / best["full"])
            stopped = sum(r["status"] == "stopped" for r in asha)
            print(f"round {seed + 1} (seed {seed}, {order[0]} first): full {cost['full']} trial-epochs, best "
                  f"{best['full']:.4f}, {full_s:.1f} s | asha {cost['asha']} trial-epochs, best {best['asha']:.4f}, "
                  f"{asha_s:.1f} s ({stopped} of {args.samples} stopped early) | compute {cost_ratios[-1]:.1%}")
    ray.shutdown()

    ratio, best_ratio = statistics.median(cost_ratios), statistics.median(best_ratios)
    print(f"median of {args.rounds} rounds: ASHA compute / full compute = {ratio:.1%} (goal <= 35%); "
          f"wall clock {statistics.median(wall_ratios):.1%}; ASHA best / full-budget best = {best_ratio:.4f} (goal >= 0.99)")
    if ratio > 0.35:
        problems.append(f"ASHA used {ratio:.1%} of the full budget's compute (goal <= 35%)")
    if best_ratio < 0.99:
        problems.append(f"ASHA's best is {best_ratio:.4f} of the full-budget best (goal >= 0.99)")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
