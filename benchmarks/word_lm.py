"""The word-level LSTM against Kneser-Ney word n-gram models on the same split, by perplexity.

Baseline: the interpolated modified Kneser-Ney of ``benchmarks/char_lm.py`` run over word ids instead of
character ids (the same code: a symbol is a symbol), fitted on the training split of the job's data (same
vocabulary, rare words as ``<unk>``, ``<eos>`` ending each article and standing in before the first), one
discount scale per order tuned on validation. Both models are scored on the same targets: every token of a
split but its first, ``<unk>`` and ``<eos>`` included. Perplexity = exp(mean NLL per token) = 2^(bits per token).

Prints the n-gram perplexity for n = 1..4 (4 is the most the int64 n-gram codes hold for a ~7.5 k vocabulary),
the LSTM's (from the run folder; trained there first when it has not finished) and their ratio on validation.

    flock /tmp/dl_ray_cpu.lock python benchmarks/word_lm.py         # jobs/lm/word_wiki.yaml, runs/word_wiki
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.char_lm import KneserNey, lstm_figures, ngram_table  # noqa: E402


def perplexity(model: KneserNey, ids: np.ndarray, order: int, scale: float) -> float:
    """exp of the mean NLL of ids[1:] (the LSTM's targets), each given the words before it."""
    p = model.probabilities(model.windows(ids)[1:], order, scale)
    return float(np.exp(-np.log(p).mean()))


def main(argv: list[str] | None = None) -> int:
    from dl_ray.data import build_data
    from dl_ray.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=Path, default=ROOT / "jobs" / "lm" / "word_wiki.yaml")
    parser.add_argument("--run", type=Path, default=None, help="the LSTM's run folder (default: the job's own)")
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3, 4])
    args = parser.parse_args(argv)
    spec = load_spec(args.job)
    data = build_data(spec.data)
    print(f"{spec.data.name}: {data.meta['tokens']} tokens per split, vocabulary {len(data.meta['vocab'])}")
    print("interpolated modified Kneser-Ney over words, discounts from counts of counts x a scale tuned on validation:")
    rows = ngram_table(data, args.orders, start="<eos>", score=perplexity, unit="perplexity")
    best = min(rows, key=lambda r: r["val"])
    run = args.run or spec.run_dir
    final = lstm_figures(args.job, run)["final"]
    print(f"LSTM ({run}): val perplexity {final['val/perplexity']:.1f}, test perplexity {final['test/perplexity']:.1f}")
    print(f"best n-gram: {best['n']}-gram, val perplexity {best['val']:.1f}, test perplexity {best['test']:.1f}; "
          f"LSTM / n-gram: val {final['val/perplexity'] / best['val']:.3f}, test {final['test/perplexity'] / best['test']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
