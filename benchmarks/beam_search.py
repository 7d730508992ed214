"""Batched beam search vs the per-sentence beam loop, on the dates attention model.

Both decode the same test dates with the same model, width and alpha; the per-sentence loop
(`dl_ray.decoding.beam_search_one`) batches only the B hypotheses of one sentence, the batched
search (`dl_ray.decoding.beam_search`) all N*B hypotheses of a batch (batches of similar input
length, as `dl-ray eval` does). For each width, ``--rounds`` rounds alternate which of the two runs
first; it prints the median sentences/s of each, the median of the rounds' speed-ups, and whether the
outputs are identical. Goal: >= 10x at every width. Exit code 1 when a goal is missed or the two
searches ever return different sequences or scores.

    python benchmarks/beam_search.py                       # trained runs/dates_attention if present
    python benchmarks/beam_search.py --run runs/dates_attention --sentences 400 --beams 1 3 5 10
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from dl_ray.data import build_data
from dl_ray.decoding import beam_search, beam_search_one, in_batches
from dl_ray.models import build_model
from dl_ray.spec import load_spec


def load_model(run: Path | None):
    if run is not None and (run / "spec.yaml").is_file():
        from dl_ray.eval_seq2seq import load_run

        loaded = load_run(run)
        return loaded.model, loaded.data, f"trained ({loaded.checkpoint})"
    spec = load_spec(Path(__file__).parents[1] / "jobs" / "dates_attention.yaml")
    data = build_data(spec.data)
    torch.manual_seed(0)
    return build_model(spec.model, data.io).eval(), data, "untrained (train jobs/dates_attention.yaml for real figures)"


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/dates_attention"), help="trained run folder")
    parser.add_argument("--sentences", type=int, default=1000, help="test dates decoded by each method")
    parser.add_argument("--batch", type=int, default=256, help="sentences per batched beam-search call")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per width; medians are reported (>= 3)")
    parser.add_argument("--goal", type=float, default=10.0, help="speed-up the batched search must reach at every width")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error(f"--rounds: {args.rounds} is below 3; a median needs at least 3 rounds")

    model, data, what = load_model(args.run)
    x = data.test.tensors[0][: args.sentences]
    print(f"model: {type(model).__name__}, {what}")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"{len(x)} test dates, alpha {args.alpha}, batched calls of {args.batch}, median of {args.rounds} rounds\n")
    print(f"{'B':>3} {'per-sentence s/s':>17} {'batched s/s':>12} {'speed-up':>9}  same outputs")
    problems = []
    for beam in args.beams:
        beam_search(model, x[:8], beam, args.alpha)  # warm-up
        t_one, t_batched, same = [], [], True
        for r in range(args.rounds):  # alternate which runs first: neither always meets a warmer (or busier) machine
            for method in (("one", "batched") if r % 2 == 0 else ("batched", "one")):
                if method == "one":
                    one, seconds = timed(beam_search_one, model, x, beam, args.alpha)
                    t_one.append(seconds)
                else:
                    batched, seconds = timed(in_batches, beam_search, model, x, args.batch, beam=beam, alpha=args.alpha)
                    t_batched.append(seconds)
            same &= torch.equal(batched.tokens, one.tokens) and torch.allclose(batched.scores, one.scores, atol=1e-4)
        speedup = statistics.median(a / b for a, b in zip(t_one, t_batched))
        print(f"{beam:>3} {len(x) / statistics.median(t_one):>17.0f} {len(x) / statistics.median(t_batched):>12.0f} "
              f"{speedup:>8.1f}x  {'yes' if same else 'NO'}")
        if not same:
            problems.append(f"B={beam}: the batched search and the per-sentence loop returned different outputs")
        if speedup < args.goal:
            problems.append(f"B={beam}: speed-up {speedup:.1f}x (goal >= {args.goal:g}x)")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
