"""Corpus BLEU (Papineni et al. 2002), written out as the course defines it.

``BLEU = BP * exp(1/4 * sum_n log p_n)`` for n = 1..4, where

* ``p_n`` is the modified n-gram precision: each hypothesis n-gram counts at most as often as it
  appears in any one reference (clipping), summed over the corpus and divided by the number
  of hypothesis n-grams;
* ``BP = exp(1 - r/c)`` when the hypotheses are shorter than the references (``c < r``), else 1;
  ``c`` is the total hypothesis length and ``r`` the total length of each sentence's reference closest
  in length (the shorter one on ties).

Scores are on sacrebleu's 0..100 scale and equal ``sacrebleu.corpus_bleu(..., tokenize="none")``
(tested): ``smooth="none"`` gives 0 as soon as one precision is 0, ``smooth="exp"`` is sacrebleu's default
(the k-th zero precision becomes 1 / (2^k * total)).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Literal

Tokens = Sequence[str]


def ngrams(tokens: Tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def modified_precision(hypothesis: Tokens, references: Sequence[Tokens], n: int) -> tuple[int, int]:
    """``(clipped matches, hypothesis n-grams)``: each n-gram counts at most its maximum count in one reference."""
    counts = ngrams(hypothesis, n)
    max_ref = Counter()
    for ref in references:
        max_ref |= ngrams(ref, n)  # element-wise max over the references
    return sum(min(c, max_ref[g]) for g, c in counts.items()), sum(counts.values())


def corpus_bleu(hypotheses: Sequence[Tokens], references: Sequence[Sequence[Tokens]], max_n: int = 4,
                smooth: Literal["none", "exp"] = "none") -> float:
    """BLEU of tokenised ``hypotheses`` against one or more tokenised references each (0..100)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            right, total = modified_precision(hyp, refs, n)
            matches[n - 1] += right
            totals[n - 1] += total
    return bleu_from_counts(matches, totals, hyp_len, ref_len, smooth)


def bleu_from_counts(matches: list[int], totals: list[int], hyp_len: int, ref_len: int,
                     smooth: Literal["none", "exp"] = "none") -> float:
    """BLEU from its sufficient statistics (0..100)."""
    if hyp_len == 0 or not any(matches) or 0 in totals:
        return 0.0
    brevity = math.exp(1 - ref_len / hyp_len) if hyp_len < ref_len else 1.0
    log_precisions, zeros = [], 0
    for m, t in zip(matches, totals):
        if m == 0:
            if smooth == "none":
                return 0.0
            zeros += 1
            log_precisions.append(math.log(100.0 / (2**zeros * t)))
        else:
            log_precisions.append(math.log(100.0 * m / t))
    return brevity * math.exp(sum(log_precisions) / len(log_precisions))


def char_bleu(hypotheses: Sequence[str], references: Sequence[str], smooth: Literal["none", "exp"] = "none") -> float:
    """BLEU over characters (one reference per hypothesis): the natural unit for ISO dates."""
    return corpus_bleu([list(h) for h in hypotheses], [[list(r)] for r in references], smooth=smooth)
