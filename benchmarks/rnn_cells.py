"""Recurrent cells: our written-out cells (``impl: ours``) vs torch's fused kernels, tokens/s forward + backward.

    python benchmarks/rnn_cells.py [--batch 32] [--steps 64] [--inputs 64] [--hidden 128] [--rounds 3] [--threads 2]

Per cell type (rnn, gru, lstm) both sides hold the same weights (ours loads torch's state dict). First a check:
on a padded batch through 2 bidirectional layers, outputs, final states and input gradients must agree within
1e-4 (float32). Then the timing: one layer, a full batch of float32 sequences, ``out.sum()`` back-propagated to
the weights and the input; per round each side's time is the mean of enough calls to last ~1 s, rounds alternate
which side runs first, and the figure is the median of the rounds' ratios. Tokens/s = batch * steps / time.

Goal: ours >= 1/3 of torch's tokens/s for every cell on CPU (within 3x). Ours is eager autograd: per step and
direction one recurrent product forward, two backward (the weight gradient among them: T small products where a
fused kernel does one), plus a dispatched call per gate operation; torch runs its time loop in C++, and its CPU
LSTM is oneDNN's fused RNN primitive. The LSTM is where the goal can fail: each extra dispatched operation per
step costs a few percent there. Exit code 1 when a cell misses it or when the two sides disagree.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL = 1 / 3
TOLERANCE = 1e-4
CELLS = ("rnn", "gru", "lstm")


def pair(cell: str, inputs: int, hidden: int, layers: int = 1, bidirectional: bool = False):
    """(ours, torch's) with torch's weights in both, both behind the same Recurrent interface."""
    from dl_ray.models.rnn import Recurrent, RecurrentConfig

    cfg = RecurrentConfig(cell=cell, hidden_size=hidden, num_layers=layers, bidirectional=bidirectional)
    fused = Recurrent(inputs, cfg.model_copy(update={"impl": "torch"}))
    ours = Recurrent(inputs, cfg)
    ours.load_state_dict(fused.state_dict())
    return ours, fused


def disagreement(cell: str, inputs: int, hidden: int) -> float:
    """Largest difference of outputs, final states and input gradients on a padded 2-layer bidirectional batch."""
    torch.manual_seed(0)
    nets = pair(cell, inputs, hidden, layers=2, bidirectional=True)
    x, lengths = torch.randn(8, 20, inputs), torch.tensor([20, 3, 17, 1, 20, 9, 12, 5])
    results = []
    for net in nets:
        xs = x.clone().requires_grad_()
        out, final = net(xs, lengths=lengths)
        final = final if isinstance(final, tuple) else (final,)
        (out.sum() + sum(f.sum() for f in final)).backward()
        results.append((out, *final, xs.grad))
    return max((a - b).abs().max().item() for a, b in zip(*results))


def step_fn(net: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step():
        xs = x.detach().requires_grad_()
        out, _ = net(xs)
        out.sum().backward()
        net.zero_grad(set_to_none=True)

    return step


def mean_seconds(fn: Callable[[], object], budget_s: float = 1.0) -> float:
    fn()  # warm-up: allocator, first-call dispatch
    start, calls = time.perf_counter(), 0
    while calls == 0 or time.perf_counter() - start < budget_s:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def bench(cell: str, args) -> tuple[float, float, float]:
    """(median ratio ours/torch in tokens/s, ours tokens/s, torch tokens/s), medians over the rounds."""
    torch.manual_seed(1)
    ours, fused = pair(cell, args.inputs, args.hidden)
    x = torch.randn(args.batch, args.steps, args.inputs)
    sides = {"ours": step_fn(ours, x), "torch": step_fn(fused, x)}
    tokens = args.batch * args.steps
    rates: dict[str, list[float]] = {"ours": [], "torch": []}
    for r in range(args.rounds):
        for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            rates[side].append(tokens / mean_seconds(sides[side]))
        print(f"{cell} round {r + 1}: ours {rates['ours'][-1]:,.0f} tokens/s, torch {rates['torch'][-1]:,.0f} tokens/s, "
              f"ratio {rates['ours'][-1] / rates['torch'][-1]:.2f}x", flush=True)
    ratio = statistics.median(o / t for o, t in zip(rates["ours"], rates["torch"]))
    return ratio, statistics.median(rates["ours"]), statistics.median(rates["torch"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch")
    parser.add_argument("--steps", type=int, default=64, help="time steps per sequence")
    parser.add_argument("--inputs", type=int, default=64, help="input features")
    parser.add_argument("--hidden", type=int, default=128, help="hidden units")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median); >= 3")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds: at least 3")
    torch.set_num_threads(args.threads)
    ok = True
    for cell in CELLS:
        diff = disagreement(cell, args.inputs, args.hidden)
        if diff > TOLERANCE:
            print(f"FAILED: {cell}: ours and torch differ by {diff:.2e} (> {TOLERANCE:g})", file=sys.stderr)
            ok = False
        ratio, ours, fused = bench(cell, args)
        met = ratio >= GOAL
        ok &= met
        print(f"{cell}: ours {ours:,.0f} tokens/s, torch {fused:,.0f} tokens/s: ours at {ratio:.2f}x torch's speed "
              f"(median of {args.rounds} rounds; goal >= {GOAL:.2f}x) {'OK' if met else 'MISSED'}; max difference "
              f"{diff:.1e}", flush=True)
    print(f"batch {args.batch} x {args.steps} steps, {args.inputs} inputs, {args.hidden} hidden, float32, "
          f"{args.threads} threads, torch {torch.__version__}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
