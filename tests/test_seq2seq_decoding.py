"""Greedy, beam and exhaustive search on tiny untrained models, where every answer can be enumerated."""
from __future__ import annotations

import pytest
import torch

from dl_ray.decoding import (EOS, beam_search, beam_search_one, exhaustive, greedy, in_batches, normalized,
                             sequence_log_probs)
from dl_ray.models.base import ModelIO
from dl_ray.models.seq2seq import AttentionConfig, AttentionSeq2Seq, EncoderDecoder, Seq2SeqConfig

TARGET = ["<pad>", "<sos>", "<eos>", "a", "b"]  # V = 5 (3 can be produced)
MAX_LEN = 4
IO = ModelIO((7,), len(TARGET), "seq2seq", {"source_vocab": list("_?cdefghij"), "target_vocab": TARGET,
                                             "max_source_len": 7, "max_target_len": MAX_LEN})
MODELS = {
    "attention-gru": lambda: AttentionSeq2Seq(AttentionConfig(name="attention_seq2seq", cell="gru"), IO),
    "attention-lstm": lambda: AttentionSeq2Seq(AttentionConfig(name="attention_seq2seq", cell="lstm"), IO),
    "seq2seq-lstm-2layers": lambda: EncoderDecoder(Seq2SeqConfig(name="seq2seq", cell="lstm", layers=2), IO),
}


def tiny(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = MODELS[name]().eval()
    with torch.no_grad():
        model.out.weight.mul_(8)  # peaked distributions, so that greedy, beam and exhaustive disagree
    return model


def sources(n: int = 40, seed: int = 1) -> torch.Tensor:
    """Random inputs of 3..7 characters, right-padded with 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, 10, (n, 7), generator=g)
    lengths = torch.randint(3, 8, (n,), generator=g)
    return x.masked_fill(torch.arange(7) >= lengths[:, None], 0)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("alpha", [0.0, 0.7, 1.0])
def test_wide_beam_equals_exhaustive_search(name, alpha):
    model, x = tiny(name), sources()
    best = exhaustive(model, x, alpha=alpha)
    wide = beam_search(model, x, beam=len(TARGET) ** MAX_LEN, alpha=alpha)  # B >= V^n: nothing is pruned
    assert torch.equal(wide.tokens, best.tokens)
    assert torch.equal(wide.lengths, best.lengths)
    assert torch.allclose(wide.scores, best.scores, atol=1e-5)
    # the search problem is not trivial here: greedy misses the best sequence for some inputs
    assert (greedy(model, x).tokens != best.tokens).any()


@pytest.mark.parametrize("name", MODELS)
def test_beam_of_one_is_greedy(name):
    model, x = tiny(name, seed=3), sources(64, seed=4)
    g, b = greedy(model, x), beam_search(model, x, beam=1, alpha=0.7)
    assert torch.equal(g.tokens, b.tokens)
    assert torch.allclose(g.scores, b.scores, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("beam", [2, 3, 5])
def test_batched_beam_equals_the_per_sentence_loop(name, beam):
    model, x = tiny(name, seed=5), sources(30, seed=6)
    batched, one = beam_search(model, x, beam=beam), beam_search_one(model, x, beam=beam)
    assert torch.equal(batched.tokens, one.tokens)
    assert torch.allclose(batched.scores, one.scores, atol=1e-5)


@pytest.mark.parametrize("beam", [2, 3, 5])
def test_beam_never_beats_exhaustive_and_its_score_is_real(beam):
    model, x = tiny("attention-gru", seed=7), sources(40, seed=8)
    found, best = beam_search(model, x, beam=beam), exhaustive(model, x)
    assert (found.normalized(0.7) <= best.normalized(0.7) + 1e-5).all()
    log_p, length = sequence_log_probs(model, x, found.tokens)  # teacher forcing agrees with the search
    assert torch.allclose(log_p, found.scores, atol=1e-4)
    assert torch.equal(length, found.lengths)


@pytest.mark.parametrize("name", MODELS)
def test_teacher_forcing_equals_step_by_step_decoding(name):
    model, x = tiny(name, seed=9), sources(16, seed=10)
    y = torch.randint(3, 5, (16, MAX_LEN))
    y[:, -1] = EOS
    logits = model(*model.inputs((x, y)))
    memory, state = model.encode(x)
    prev = torch.full((16,), 1)
    for t in range(MAX_LEN):
        log_probs, state = model.step(prev, state, memory)
        assert torch.allclose(log_probs, torch.log_softmax(logits[:, t], dim=-1), atol=1e-5)
        prev = y[:, t]


def test_attention_weights_are_a_distribution_over_real_characters():
    model, x = tiny("attention-gru"), sources(20, seed=11)
    alpha = greedy(model, x).attention  # (N, steps, Tx of this batch)
    real = (x[:, : alpha.shape[2]] != 0)[:, None, :]
    produced = alpha.sum(dim=2) > 0
    assert torch.allclose(alpha.sum(dim=2)[produced], torch.ones(int(produced.sum())), atol=1e-5)
    assert (alpha.masked_select(~real.expand_as(alpha)) == 0).all()


def test_in_batches_keeps_the_order_and_normalisation_is_the_course_formula():
    model, x = tiny("attention-lstm"), sources(50, seed=12)
    whole = beam_search(model, x, beam=3)
    pieces = in_batches(beam_search, model, x, batch_size=7, beam=3)
    assert torch.equal(whole.tokens, pieces.tokens)
    assert torch.allclose(whole.scores, pieces.scores, atol=1e-5)
    assert torch.allclose(normalized(torch.tensor([-2.0]), torch.tensor([4]), 0.7), torch.tensor([-2.0 / 4**0.7]))
    with pytest.raises(ValueError, match="beam width"):
        beam_search(model, x, beam=0)
