"""Style-transfer optimisation steps/s, Adam vs L-BFGS, on the CPU (and the GPU when there is one).

    python benchmarks/style_transfer.py [--rounds 3] [--steps 30] [--size 128] [--threads 2] [--device auto|cpu|cuda]

The shipped job's images and VGG-19 features (jobs/style_transfer.yaml, random weights unless --weights) with the
issue's test setting: content weight alpha = 0, style weight beta = 1, G started from noise. Each round runs both
optimisers for --steps steps from the same G0 (rounds interleave them: adam, lbfgs, adam, lbfgs, ... so a load change
on a shared machine hits both); a step is one Adam update or one L-BFGS iteration (its strong-Wolfe line search
evaluates J more than once: evaluations/s are printed too). Per optimiser: the median steps/s of the rounds.

Exit code 1 when a goal is missed: J_style must fall >= 10x from its start in every round, or on a disagreement:
both optimisers must start from the same J_style, and each optimiser's rounds must end at the same J_style
(rtol 1e-3: the same computation, repeated).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL_DROP = 10.0
OPTIMIZERS = {"adam": {"name": "adam", "lr": 0.05}, "lbfgs": {"name": "lbfgs", "lr": 1.0}}


def problem_for(args, device: torch.device):
    import yaml

    from dl_ray.style.run import prepare
    from dl_ray.style.spec import parse_style

    raw = yaml.safe_load((ROOT / "jobs" / "style_transfer.yaml").read_text())
    raw |= {"size": args.size, "costs": {**raw["costs"], "alpha": 0.0, "beta": 1.0},
            "training": {**raw["training"], "init": "noise"}}
    if args.weights:
        raw["features"] = {**raw["features"], "weights": args.weights}
    spec = parse_style(raw)
    return spec, prepare(spec, device)


def one_round(problem, spec, name: str, steps: int, device: torch.device) -> dict:
    from dl_ray.style.run import initial_image, optimise

    problem.spec = spec.model_copy(update={"optimizer": spec.optimizer.model_validate(OPTIMIZERS[name])})
    g, seen, evals = initial_image(problem), [], [0]
    costs = problem.costs

    def counted(x):
        evals[0] += 1
        return costs(x)

    problem.costs = counted
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    final = optimise(problem, g, steps, lambda step, v: seen.append(v["j_style"]))
    sync()
    seconds = time.perf_counter() - start
    problem.costs = costs
    return {"optimizer": name, "steps_per_s": steps / seconds, "evals_per_s": evals[0] / seconds,
            "evals_per_step": evals[0] / (steps + 1), "j_style_start": seen[0], "j_style_final": final["j_style"],
            "drop": seen[0] / final["j_style"]}


def measure(args, device: torch.device) -> tuple[dict, list[str]]:
    spec, problem = problem_for(args, device)
    one_round(problem, spec, "adam", 2, device)  # warm-up: allocator, kernels, first-call costs
    rounds = {name: [] for name in OPTIMIZERS}
    for r in range(args.rounds):
        for name in OPTIMIZERS:
            result = one_round(problem, spec, name, args.steps, device)
            rounds[name].append(result)
            print(f"{device.type} round {r + 1} {name:5}: {result['steps_per_s']:6.2f} steps/s, {result['evals_per_s']:6.2f} "
                  f"J evaluations/s, J_style {result['j_style_start']:.4e} -> {result['j_style_final']:.4e} "
                  f"({result['drop']:.1f}x)", flush=True)
    problems = []
    starts = {r["j_style_start"] for rs in rounds.values() for r in rs}
    if len(starts) != 1:
        problems.append(f"{device.type}: the optimisers start from different J_style values {sorted(starts)}")
    for name, rs in rounds.items():
        finals = [r["j_style_final"] for r in rs]
        if max(finals) - min(finals) > 1e-3 * max(finals):
            problems.append(f"{device.type} {name}: the rounds end at different J_style values {finals}")
        if (low := min(r["drop"] for r in rs)) < GOAL_DROP:
            problems.append(f"{device.type} {name}: J_style fell only {low:.1f}x in {args.steps} steps (goal >= {GOAL_DROP:g}x)")
    summary = {name: {"median_steps_per_s": statistics.median(r["steps_per_s"] for r in rs),
                      "median_evals_per_s": statistics.median(r["evals_per_s"] for r in rs),
                      "evals_per_step": statistics.median(r["evals_per_step"] for r in rs),
                      "min_drop": min(r["drop"] for r in rs)} for name, rs in rounds.items()}
    return summary, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--weights", help="a torchvision vgg19 state dict file (default: random weights)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []), "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    results, problems = {}, []
    for name in devices:
        summary, found = measure(args, torch.device(name))
        results[name], problems = summary, problems + found
    label = torch.cuda.get_device_name() if "cuda" in devices else f"{args.threads} CPU threads"
    print(f"\nmedian of {args.rounds} rounds, {args.steps} steps each, {args.size} px ({label}, torch {torch.__version__}):")
    for device, summary in results.items():
        for name, s in summary.items():
            print(f"  {device:4} {name:5}: {s['median_steps_per_s']:7.2f} steps/s  {s['median_evals_per_s']:7.2f} "
                  f"J evaluations/s ({s['evals_per_step']:.2f} per step)  J_style fell >= {s['min_drop']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
