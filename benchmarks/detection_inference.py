"""Detection inference images/s of a trained YOLO run, and what the post-processing costs.

    python benchmarks/detection_inference.py [--run runs/yolo_digits] [--rounds 3] [--seconds 3]

Over the run's test canvases, in this process with 2 torch threads, interleaved rounds:
(1) images/s of the network's forward pass alone (the baseline) and of the whole inference (forward, decode, the
    score threshold, per-class non-max suppression) at batch 64; the ratio whole / forward is the share of the time
    left to the network. Goal >= 0.8: the course's post-processing must not dominate inference.
(2) images/s of the whole inference at batch 1 (one camera frame at a time).
The detections of batch 1 and batch 64 must agree (same boxes, scores and labels): exits 1 when they differ or
the goal is missed.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rate(step, images: torch.Tensor, batch: int, seconds: float) -> float:
    """Images/s of ``step`` over chunks of ``batch`` images, repeated for at least ``seconds``."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for chunk in images.split(batch):
            step(chunk)
            done += len(chunk)
    return done / (time.perf_counter() - start)


def detections(model, images: torch.Tensor, batch: int) -> list[dict[str, torch.Tensor]]:
    return [d for chunk in images.split(batch) for d in model.detect(model.activate(model(chunk)))]


def agree(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(
        x["labels"].equal(y["labels"]) and torch.allclose(x["boxes"], y["boxes"], atol=1e-4)
        and torch.allclose(x["scores"], y["scores"], atol=1e-5) for x, y in zip(a, b))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "yolo_digits")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if not (args.run / "summary.json").is_file():
        print(f"error: --run: {args.run} holds no finished run; train jobs/detection/yolo_digits.yaml first", file=sys.stderr)
        return 2
    from dl_ray.data import build_data
    from dl_ray.runs import load_model

    torch.set_num_threads(2)
    model, spec = load_model(args.run)
    images = build_data(spec.data).test.batch(torch.arange(spec.data.eval_canvases))[0]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"{len(images)} test canvases of {tuple(images.shape[1:])} from {args.run}")
    whole = lambda x: model.detect(model.activate(model(x)))  # noqa: E731
    ratios, failed = [], []
    with torch.no_grad():
        for r in range(args.rounds):
            pair = [("forward", model), ("whole", whole)]
            timed = dict((name, rate(step, images, 64, args.seconds)) for name, step in (pair if r % 2 == 0 else pair[::-1]))
            ratios.append(timed["whole"] / timed["forward"])
            print(f"round {r + 1}: batch 64: forward only {timed['forward']:6.0f} images/s, whole inference "
                  f"{timed['whole']:6.0f} images/s, ratio {ratios[-1]:.3f}")
        single = rate(whole, images, 1, args.seconds)
        same = agree(detections(model, images, 1), detections(model, images, 64))
    ratio = statistics.median(ratios)
    print(f"whole inference / forward only, batch 64: median ratio {ratio:.3f}   (goal >= 0.8)")
    print(f"whole inference, batch 1: {single:.0f} images/s; detections at batch 1 and 64 agree: {same}")
    if ratio < 0.8:
        failed.append(f"post-processing takes {1 - ratio:.0%} of inference (goal: ratio >= 0.8)")
    if not same:
        failed.append("detections differ between batch 1 and batch 64")
    for line in failed:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
