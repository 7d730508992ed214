"""Non-max suppression: the vectorised `dl_ray.detection.nms` vs the course's per-box loop in plain Python.

    python benchmarks/nms_speed.py [--boxes 1000] [--rounds 3] [--threads 1]

Both sides get the same 1,000 boxes, scores and IoU threshold (0.5) and must return the same kept indices in the
same order. The baseline is the algorithm as the course states it, written box by box: take the remaining box
with the highest score, keep it, compare it with every remaining box and drop those with IoU > 0.5, repeat.
Two box sets: "clustered" (50 objects, 20 jittered guesses each: the detector's output before suppression, most
boxes suppressed) and "scattered" (uniform boxes: most kept, the vectorised side's worst case, since its loop
does work per kept box). Per round and box set, each side's time is the mean of enough calls to last ~0.2 s;
rounds alternate which side runs first. Prints the median ratio of the rounds per box set; goal >= 5x on both,
exit code 1 when missed or when the outputs differ.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL = 5.0
THRESHOLD = 0.5


def box_sets(n: int, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(50, 2, generator=gen) * 380 + 18
    sizes = torch.rand(50, 2, generator=gen) * 60 + 16
    pick = torch.arange(n) % 50
    cxcy = centres[pick] + torch.randn(n, 2, generator=gen) * sizes[pick] * 0.1
    wh = sizes[pick] * (1 + torch.randn(n, 2, generator=gen) * 0.1).clamp(min=0.5)
    clustered = torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1)
    xy = torch.rand(n, 2, generator=gen) * 400
    scattered = torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=gen) * 28], 1)
    return {name: (boxes, torch.rand(n, generator=gen)) for name, boxes in
            (("clustered", clustered), ("scattered", scattered))}


def per_box_loop(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """The course's NMS, one box at a time, in plain Python (IoU in double precision, like the vectorised side)."""
    remaining = sorted(range(len(boxes)), key=lambda i: -scores[i].item())  # stable: equal scores keep input order
    b = boxes.tolist()
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        x1, y1, x2, y2 = b[best]
        area = (x2 - x1) * (y2 - y1)
        survivors = []
        for i in remaining:
            u1, v1, u2, v2 = b[i]
            inter = max(0.0, min(x2, u2) - max(x1, u1)) * max(0.0, min(y2, v2) - max(y1, v1))
            union = area + (u2 - u1) * (v2 - v1) - inter
            if (inter / union if union > 0 else 0.0) <= threshold:
                survivors.append(i)
        remaining = survivors
    return keep


def mean_seconds(fn: Callable[[], object], budget_s: float = 0.2) -> float:
    start, calls = time.perf_counter(), 0
    while calls == 0 or time.perf_counter() - start < budget_s:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def main() -> int:
    from dl_ray.detection import nms

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=1000, help="boxes per call")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median of their ratios); >= 3")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds: at least 3")
    torch.set_num_threads(args.threads)
    problems, ok = [], True
    for name, (boxes, scores) in box_sets(args.boxes).items():
        ours, reference = nms(boxes, scores, THRESHOLD).tolist(), per_box_loop(boxes, scores, THRESHOLD)
        if ours != reference:
            problems.append(f"{name}: kept indices differ ({len(ours)} vs {len(reference)} boxes)")
        sides = {"vectorised": lambda: nms(boxes, scores, THRESHOLD),
                 "per-box loop": lambda: per_box_loop(boxes, scores, THRESHOLD)}
        ratios = []
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            t = {side: mean_seconds(sides[side]) for side in order}
            ratios.append(t["per-box loop"] / t["vectorised"])
            print(f"{name} round {r + 1}: vectorised {t['vectorised'] * 1e3:.2f} ms, per-box loop "
                  f"{t['per-box loop'] * 1e3:.1f} ms, ratio {ratios[-1]:.1f}x", flush=True)
        ratio = statistics.median(ratios)
        ok &= ratio >= GOAL
        print(f"{name}: {args.boxes} boxes, {len(ours)} kept: vectorised NMS {ratio:.1f}x faster than the per-box "
              f"loop (median of {args.rounds} rounds; goal >= {GOAL:g}x) {'OK' if ratio >= GOAL else 'MISSED'}")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 0 if ok and not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
