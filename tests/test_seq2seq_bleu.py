"""BLEU written here (dl_ray.bleu) against sacrebleu's corpus BLEU, the reference implementation."""
from __future__ import annotations

import math

import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st

from dl_ray.bleu import char_bleu, corpus_bleu, modified_precision

WORDS = ["the", "cat", "is", "on", "mat", "a", "there"]
sentence = st.lists(st.sampled_from(WORDS), max_size=12)


@st.composite
def corpora(draw):
    """1-8 hypotheses with 1-3 references each (sacrebleu wants the same number of references per sentence)."""
    refs_per_sentence = draw(st.integers(1, 3))
    size = draw(st.integers(1, 8))
    hyps = [draw(sentence) for _ in range(size)]
    refs = [[draw(sentence) for _ in range(refs_per_sentence)] for _ in range(size)]
    return hyps, refs


def sacre(hyps, refs, smooth):
    streams = [[" ".join(r[k]) for r in refs] for k in range(len(refs[0]))]
    return sacrebleu.corpus_bleu([" ".join(h) for h in hyps], streams, tokenize="none", smooth_method=smooth).score


@settings(max_examples=250, deadline=None, derandomize=True)
@given(corpora(), st.sampled_from(["none", "exp"]))
def test_corpus_bleu_equals_sacrebleu(corpus, smooth):
    hyps, refs = corpus
    assert abs(corpus_bleu(hyps, refs, smooth=smooth) - sacre(hyps, refs, smooth)) <= 1e-9


def test_random_corpora_are_not_all_trivial():
    """The property above must see partial matches, not only 0 and 100."""
    import random

    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        hyps = [[rng.choice(WORDS) for _ in range(rng.randint(4, 12))] for _ in range(5)]
        refs = [[[rng.choice(WORDS) for _ in range(rng.randint(4, 12))]] for _ in range(5)]
        score = corpus_bleu(hyps, refs, smooth="exp")
        assert abs(score - sacre(hyps, refs, "exp")) <= 1e-9
        seen.add(0 < score < 100)
    assert seen == {True}


def test_modified_precision_clips_by_the_references():
    """The course's example: 'the the the the the the the' has modified unigram precision 2/7."""
    hyp = ["the"] * 7
    refs = ["the cat is on the mat".split(), "there is a cat on the mat".split()]
    assert modified_precision(hyp, refs, 1) == (2, 7)
    assert modified_precision("the cat the cat on the mat".split(), refs, 2) == (4, 6)


def test_brevity_penalty_and_perfect_match():
    ref = "the cat is on the mat".split()
    assert corpus_bleu([ref], [[ref]]) == pytest.approx(100.0)
    short = ref[:5]  # all n-grams right, but 5 tokens for 6: BLEU = exp(1 - 6/5)
    assert corpus_bleu([short], [[ref]]) == pytest.approx(100 * math.exp(1 - 6 / 5))
    assert corpus_bleu([[]], [[ref]]) == 0.0


def test_char_bleu_of_iso_dates():
    assert char_bleu(["2006-01-03"], ["2006-01-03"]) == pytest.approx(100.0)
    got = char_bleu(["2006-01-03", "1999-12-31"], ["2006-01-08", "1999-12-31"])
    assert got == pytest.approx(sacrebleu.corpus_bleu(["2 0 0 6 - 0 1 - 0 3", "1 9 9 9 - 1 2 - 3 1"],
                                                      [["2 0 0 6 - 0 1 - 0 8", "1 9 9 9 - 1 2 - 3 1"]],
                                                      tokenize="none", smooth_method="none").score, abs=1e-9)
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        corpus_bleu([["a"], ["b"]], [[["a"]]])
