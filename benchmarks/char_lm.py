"""The character LSTM against the best smoothed character n-gram model on the same split, and LM tokens/s.

Baseline: interpolated modified Kneser-Ney (Chen & Goodman 1999), the strongest of the classic smoothings
(it beats add-k, Witten-Bell and Katz backoff in their comparison). Each order interpolates its discounted
counts with the order below, down to the uniform distribution; the highest order uses raw counts, the lower
ones continuation counts (how many different characters precede a context: "Francisco" is frequent but follows
only "San"). The three discounts per order (for counts 1, 2, 3+) come from the counts of counts
(D_k = k - (k + 1) Y N_{k+1} / N_k, Y = N_1 / (N_1 + 2 N_2)), times one constant tuned on the validation split
for each n. The model is fitted on the training split of the job's data (article-level split) and scored on
validation and test exactly as the LSTM is: every character of the split, starting from an article start.

Prints the n-gram bpc for n = 1..7, the LSTM's validation bpc (from the run folder; trained there first when
it has not finished), their ratio against the goal (<= 0.9), and the training tokens/s of the language model
with our written-out cells and with torch's fused kernel. Exit code 1 when the goal is missed.

    flock /tmp/dl_ray_cpu.lock python benchmarks/char_lm.py               # jobs/lm/char_wiki.yaml, runs/char_wiki
    python benchmarks/char_lm.py --run runs/char_wiki --orders 1 2 3 4 5 6 7 --speed-steps 5
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.9
SCALES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6)


@dataclass
class Level:
    """The statistics of one n-gram length k: each seen k-gram's count and each context's totals."""

    keys: np.ndarray
    """Sorted k-gram codes (base-V digits, the predicted character least significant)."""
    counts: np.ndarray
    contexts: np.ndarray
    """Sorted codes of the (k-1)-character contexts seen."""
    totals: np.ndarray
    """Per context: the sum of its k-grams' counts, and how many of them have count 1, 2 and >= 3."""
    n1: np.ndarray
    n2: np.ndarray
    n3: np.ndarray
    discounts: np.ndarray
    """D for counts 0, 1, 2, 3+ (D_0 = 0)."""

    @classmethod
    def of(cls, keys: np.ndarray, counts: np.ndarray, vocab_size: int) -> "Level":
        contexts, start = np.unique(keys // vocab_size, return_index=True)
        per = lambda mask: np.add.reduceat(mask.astype(np.int64), start)  # noqa: E731
        n = [int((counts == k).sum()) for k in (1, 2, 3, 4)]
        y = n[0] / max(n[0] + 2 * n[1], 1)
        # too few rare n-grams to estimate from (e.g. unigrams of a large text): Ney's usual 0.75
        d = [k - (k + 1) * y * n[k] / n[k - 1] if n[k - 1] and y else 0.75 for k in (1, 2, 3)]
        return cls(keys, counts, contexts, per(counts), per(counts == 1), per(counts == 2), per(counts >= 3),
                   np.clip([0.0, *d], 0.0, [0, 1, 2, 3]))

    def interpolate(self, keys: np.ndarray, lower: np.ndarray, vocab_size: int, scale: float) -> np.ndarray:
        """P_k(w | h) = max(c(hw) - D, 0) / c(h) + gamma(h) P_{k-1}(w | h'), or P_{k-1} where h was never seen."""
        d = np.minimum(self.discounts * scale, [0, 1, 2, 3])  # D(c) <= c keeps every distribution summing to 1
        found, at = lookup(self.keys, keys)
        count = np.where(found, self.counts[at], 0)
        seen, ci = lookup(self.contexts, keys // vocab_size)
        total = np.where(seen, self.totals[ci], 1)
        gamma = (d[1] * self.n1[ci] + d[2] * self.n2[ci] + d[3] * self.n3[ci]) / total
        own = np.maximum(count - d[np.minimum(count, 3)], 0) / total
        return np.where(seen, own + gamma * lower, lower)


def lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys, at


def gram_codes(windows: np.ndarray, k: int, vocab_size: int) -> np.ndarray:
    """Codes of the last ``k`` characters of each row of ``windows`` (M, n)."""
    codes = np.zeros(len(windows), dtype=np.int64)
    for j in range(windows.shape[1] - k, windows.shape[1]):
        codes = codes * vocab_size + windows[:, j]
    return codes


class KneserNey:
    """Interpolated modified Kneser-Ney character n-gram models of every order up to ``max_order``."""

    def __init__(self, train: np.ndarray, vocab_size: int, max_order: int, start: int):
        if vocab_size ** max_order >= 2 ** 62:
            raise ValueError(f"{vocab_size} symbols to the power {max_order} overflow the int64 n-gram codes")
        self.vocab_size, self.max_order, self.start = vocab_size, max_order, start
        windows = self.windows(train)
        raw = [np.unique(gram_codes(windows, k, vocab_size), return_counts=True) for k in range(1, max_order + 1)]
        self.raw = [Level.of(keys, counts, vocab_size) for keys, counts in raw]
        # continuation count of a k-gram: how many distinct characters precede it (its (k+1)-grams' suffixes)
        self.continuation = [Level.of(*np.unique(raw[k][0] % vocab_size ** k, return_counts=True), vocab_size)
                             for k in range(1, max_order)]

    def windows(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), max_order): each character with the ones before it, the text preceded by ``start``."""
        padded = np.concatenate([np.full(self.max_order - 1, self.start), np.asarray(ids, dtype=np.int64)])
        return np.lib.stride_tricks.sliding_window_view(padded, self.max_order)

    def probabilities(self, windows: np.ndarray, order: int, scale: float = 1.0) -> np.ndarray:
        """P(last character of each row | the ``order - 1`` before it)."""
        p = np.full(len(windows), 1.0 / self.vocab_size)
        for k in range(1, order + 1):
            level = self.raw[k - 1] if k == order else self.continuation[k - 1]
            p = level.interpolate(gram_codes(windows, k, self.vocab_size), p, self.vocab_size, scale)
        return p

    def bpc(self, ids: np.ndarray, order: int, scale: float = 1.0) -> float:
        return float(-np.log2(self.probabilities(self.windows(ids), order, scale)).mean())

    def distribution(self, history: list[int], order: int, scale: float = 1.0) -> np.ndarray:
        """P(w | history) for every w of the vocabulary (the last ``max_order - 1`` of history count)."""
        context = ([self.start] * self.max_order + list(history))[-(self.max_order - 1):]
        rows = np.array([context + [w] for w in range(self.vocab_size)], dtype=np.int64)
        return self.probabilities(rows, order, scale)


# ---------------------------------------------------------------- the benchmark


def ngram_table(data, orders: list[int], start: str = "\n", score=KneserNey.bpc, unit: str = "bpc") -> list[dict]:
    """Kneser-Ney fitted on the training split (``start``: the symbol before the text); for each order, the discount
    scale with the lowest ``score(model, ids, order, scale)`` on validation, and that scale's validation and test
    scores: rows {"n", "scale", "val", "test"}, each printed as it comes."""
    vocab = data.meta["vocab"]
    train, val, test = (s.ids.numpy() for s in (data.train, data.val, data.test))
    model = KneserNey(train, len(vocab), max(orders), start=vocab.index(start))
    rows = []
    for n in orders:
        scale = min(SCALES, key=lambda s: score(model, val, n, s))
        rows.append({"n": n, "scale": scale, "val": score(model, val, n, scale), "test": score(model, test, n, scale)})
        print(f"  {n}-gram  discount scale {scale:.1f}  val {unit} {rows[-1]['val']:.4f}  test {unit} {rows[-1]['test']:.4f}",
              flush=True)
    return rows


def lstm_figures(job: Path, run: Path | None) -> dict:
    """The run's final val/test bpc; the job is trained (or resumed) first when the run has not finished."""
    from dl_ray import api

    summary_file = (run or Path()) / "summary.json"
    if run is None or not summary_file.is_file():
        overrides = [] if run is None else [f"storage.path={run.parent}", f"storage.name={run.name}"]
        summary = api.fit(job, overrides)
    else:
        summary = json.loads(summary_file.read_text())
    return summary


def tokens_per_s(spec, data, impl: str, steps: int) -> float:
    """Training tokens/s (forward, backward, Adam step) of the job's model with ``impl``, on training windows."""
    from dl_ray.models import build_model

    model_cfg = spec.model.model_copy(update={"rnn": spec.model.rnn.model_copy(update={"impl": impl})})
    torch.manual_seed(0)
    task = build_model(model_cfg, data.io, spec.regularization.dropout).train()
    opt = torch.optim.Adam(task.parameters(), lr=1e-3)
    windows = iter(data.loader("train", spec.training.batch_size, seed=0))
    state, tokens, started = None, 0, None
    for step in range(steps + 1):  # the first step warms up (allocations) and is not timed
        x, y, _, _ = next(windows)
        if step == 1:
            started, tokens = time.perf_counter(), 0
        logits, state = task(x, state)
        loss = task.nll(logits, y) / y.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        state, tokens = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach(), tokens + y.numel()
    return tokens / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    from dl_ray.data import build_data
    from dl_ray.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=Path, default=ROOT / "jobs" / "lm" / "char_wiki.yaml")
    parser.add_argument("--run", type=Path, default=None, help="the LSTM's run folder (default: the job's own)")
    parser.add_argument("--orders", type=int, nargs="+", default=list(range(1, 8)))
    parser.add_argument("--speed-steps", type=int, default=5, help="timed training steps per impl (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = load_spec(args.job)
    run = args.run or spec.run_dir
    data = build_data(spec.data)
    print(f"{spec.data.name}: {data.meta['tokens']} characters per split, {len(data.meta['vocab'])} symbols; "
          f"{platform.processor() or platform.machine()}, {args.threads} threads")
    print("interpolated modified Kneser-Ney, discounts from counts of counts x a scale tuned on validation:")
    rows = ngram_table(data, args.orders)
    best = min(rows, key=lambda r: r["val"])
    summary = lstm_figures(args.job, run)
    val, test = summary["final"]["val/bpc"], summary["final"]["test/bpc"]
    ratio = val / best["val"]
    print(f"LSTM ({run}): val bpc {val:.4f}, test bpc {test:.4f}")
    print(f"best n-gram: {best['n']}-gram, val bpc {best['val']:.4f}, test bpc {best['test']:.4f}")
    print(f"ratio LSTM / n-gram (validation): {ratio:.3f}; goal <= {GOAL}: {'met' if ratio <= GOAL else 'MISSED'}"
          f" (test: {test / best['test']:.3f})")
    if args.speed_steps:
        speeds = {impl: tokens_per_s(spec, data, impl, args.speed_steps) for impl in ("ours", "torch")}
        print(f"training tokens/s ({spec.model.rnn.cell}, hidden {spec.model.rnn.hidden_size}, batch "
              f"{spec.training.batch_size} x bptt {spec.data.bptt}): ours {speeds['ours']:,.0f}, torch "
              f"{speeds['torch']:,.0f} ({speeds['torch'] / speeds['ours']:.1f}x)")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
