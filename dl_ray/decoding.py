"""Finding the most likely output sequence: greedy, beam search (batched and per sentence), exhaustive.

All work on any model with ``encode(x) -> (memory, state)`` and ``step(tokens, state, memory) ->
(log_probs, state)`` (see :mod:`dl_ray.models.seq2seq`: memory has one row per sentence, the
state ``g`` grouped rows), ``max_len`` and the ids ``<pad>=0, <sos>=1, <eos>=2``. A hypothesis ends at ``<eos>`` or after ``max_len`` tokens; its score is
``sum log P(y<t> | x, y<1..t-1>)`` over its ``T`` tokens (``<eos>`` included), and beam search and
exhaustive search rank by the length-normalised ``score / T**alpha`` (the course's alpha = 0.7).

Beam search keeps the ``B`` best unfinished prefixes per sentence. Each step it looks at the ``2B``
best one-token extensions: a ``<eos>`` among the first ``B`` finishes a hypothesis, the first ``B``
others go on. A sentence is done at ``max_len``, or once ``B`` hypotheses have finished and the best
finished one scores at least as well as every live prefix (so ``B=1`` is greedy search, and a few
unlikely early ``<eos>`` can't end the search before the likely hypothesis finishes). The best
finished hypothesis by normalised score is returned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

PAD, SOS, EOS = 0, 1, 2  # fixed ids of every target vocabulary (dl_ray.data.dates puts <pad> <sos> <eos> first)


@dataclass
class Decoded:
    tokens: torch.Tensor
    """(N, max_len) ids, ``<eos>`` included, ``<pad>`` after it."""
    scores: torch.Tensor
    """(N,) sum of log-probabilities of the tokens."""
    lengths: torch.Tensor
    """(N,) tokens produced, ``<eos>`` included."""
    attention: torch.Tensor | None = None
    """(N, max_len, Tx) attention weights of each step (greedy, attention models only)."""

    def normalized(self, alpha: float) -> torch.Tensor:
        return normalized(self.scores, self.lengths, alpha)


def normalized(scores: torch.Tensor, lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """The course's length-normalised objective ``(1 / T**alpha) * sum log P``."""
    return scores / lengths.to(scores.dtype).pow(alpha)


def _reorder(state: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[index] for k, v in state.items()}


@torch.no_grad()
def greedy(model, x: torch.Tensor, max_len: int | None = None) -> Decoded:
    """Pick the most probable token at every step until ``<eos>``."""
    max_len = max_len or model.max_len
    memory, state = model.encode(x)
    n = len(x)
    tokens = torch.full((n, max_len), PAD, dtype=torch.long, device=x.device)
    scores = torch.zeros(n, device=x.device)
    lengths = torch.zeros(n, dtype=torch.long, device=x.device)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    prev = torch.full((n,), SOS, dtype=torch.long, device=x.device)
    attention = []
    for t in range(max_len):
        log_probs, state = model.step(prev, state, memory)
        best, prev = log_probs.max(dim=-1)
        prev = prev.masked_fill(done, PAD)
        tokens[:, t] = prev
        scores += best.masked_fill(done, 0.0)
        lengths += (~done).long()
        if "alpha" in state:
            attention.append(state["alpha"])
        done |= prev == EOS
        if done.all():
            break
    return Decoded(tokens, scores, lengths, _attention(attention, max_len))


def _attention(steps: list[torch.Tensor], max_len: int) -> torch.Tensor | None:
    if not steps:
        return None
    alpha = torch.stack(steps, dim=1)
    return torch.nn.functional.pad(alpha, (0, 0, 0, max_len - alpha.shape[1]))


@torch.no_grad()
def beam_search(model, x: torch.Tensor, beam: int = 3, alpha: float = 0.7, max_len: int | None = None) -> Decoded:
    """Beam search over a whole batch of sentences at once: ``N * B`` prefixes per model step."""
    if beam < 1:
        raise ValueError(f"beam width must be >= 1 (got {beam})")
    max_len, n, dev = max_len or model.max_len, len(x), x.device
    memory, state = model.encode(x)
    state = _reorder(state, torch.arange(n, device=dev).repeat_interleave(beam))  # B hypotheses per sentence
    scores = torch.full((n, beam), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # one live hypothesis (the empty prefix) per sentence
    prefixes = torch.zeros(n, beam, 0, dtype=torch.long, device=dev)
    prev = torch.full((n * beam,), SOS, dtype=torch.long, device=dev)
    best = Decoded(torch.full((n, max_len), PAD, dtype=torch.long, device=dev), torch.zeros(n, device=dev),
                   torch.ones(n, dtype=torch.long, device=dev))
    best_norm = torch.full((n,), float("-inf"), device=dev)
    finished = torch.zeros(n, dtype=torch.long, device=dev)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    rows, rank = torch.arange(n, device=dev), torch.arange(2 * beam, device=dev)
    for t in range(1, max_len + 1):
        log_probs, state = model.step(prev, state, memory)
        vocab = log_probs.shape[-1]
        candidates = (scores[:, :, None] + log_probs.view(n, beam, vocab)).view(n, beam * vocab)
        top, index = candidates.topk(min(2 * beam, beam * vocab), dim=1)  # sorted, best first
        parent, token = index // vocab, index % vocab
        valid = torch.isfinite(top) & ~done[:, None]
        ends = token == EOS
        # ---- finish: <eos> within the first B (at max_len: every one of the first B)
        finish = valid & (rank[: top.shape[1]] < beam) & (ends | (t == max_len))
        first = finish.float().argmax(dim=1)  # the best finishing candidate of this step
        norm = top[rows, first] / t**alpha
        better = finish.any(dim=1) & (norm > best_norm)
        if better.any():
            seq = torch.cat([prefixes[rows, parent[rows, first]], token[rows, first, None]], dim=1)
            best.tokens[better] = torch.nn.functional.pad(seq, (0, max_len - t), value=PAD)[better]
            best.scores[better], best.lengths[better], best_norm[better] = top[rows, first][better], t, norm[better]
        finished += finish.sum(dim=1)
        if t == max_len:
            break
        # ---- go on: the first B extensions that don't end
        goes_on = valid & ~ends
        slot = torch.where(goes_on, goes_on.cumsum(dim=1) - 1, beam).clamp(max=beam)
        keep = lambda values, fill: torch.full((n, beam + 1), fill, dtype=values.dtype, device=dev).scatter(  # noqa: E731
            1, slot, torch.where(goes_on, values, torch.full_like(values, fill)))[:, :beam]
        scores, parent, token = keep(top, float("-inf")), keep(parent, 0), keep(token, PAD)
        done |= (finished >= beam) & (best_norm >= scores.max(dim=1).values / t**alpha)
        if bool(done.all()):
            break
        prefixes = torch.cat([prefixes[rows[:, None], parent], token[:, :, None]], dim=2)
        state = _reorder(state, (rows[:, None] * beam + parent).reshape(-1))
        prev = token.reshape(-1)
    return best


@torch.no_grad()
def beam_search_one(model, x: torch.Tensor, beam: int = 3, alpha: float = 0.7, max_len: int | None = None) -> Decoded:
    """The same beam search written for one sentence at a time (the textbook loop; the benchmark's baseline)."""
    max_len = max_len or model.max_len
    results = [_beam_one(model, x[i : i + 1], beam, alpha, max_len) for i in range(len(x))]
    tokens = torch.full((len(x), max_len), PAD, dtype=torch.long, device=x.device)
    for i, (seq, _, _) in enumerate(results):
        tokens[i, : len(seq)] = torch.tensor(seq, device=x.device)
    return Decoded(tokens, torch.tensor([r[1] for r in results], device=x.device),
                   torch.tensor([len(r[0]) for r in results], device=x.device))


def _beam_one(model, x: torch.Tensor, beam: int, alpha: float, max_len: int) -> tuple[list[int], float, float]:
    memory, state = model.encode(x)
    hypotheses: list[tuple[list[int], float]] = [([], 0.0)]
    best: tuple[list[int], float, float] = ([], float("-inf"), float("-inf"))  # tokens, score, normalised
    finished = 0
    for t in range(1, max_len + 1):
        prev = torch.tensor([h[-1] if h else SOS for h, _ in hypotheses], device=x.device)
        log_probs, state = model.step(prev, state, memory)
        scores = torch.tensor([s for _, s in hypotheses], device=x.device)[:, None] + log_probs
        top, index = scores.flatten().topk(min(2 * beam, scores.numel()))
        survivors, parents = [], []
        for r, (score, i) in enumerate(zip(top.tolist(), index.tolist())):
            if score == float("-inf"):
                break
            parent, token = divmod(i, log_probs.shape[1])
            seq = hypotheses[parent][0] + [token]
            if token == EOS or t == max_len:
                if r < beam:
                    finished += 1
                    if score / t**alpha > best[2]:
                        best = (seq, score, score / t**alpha)
            elif len(survivors) < beam:
                survivors.append((seq, score))
                parents.append(parent)
        best_live = max((s for _, s in survivors), default=float("-inf")) / t**alpha
        if t == max_len or not survivors or (finished >= beam and best[2] >= best_live):
            break
        hypotheses = survivors
        state = _reorder(state, torch.tensor(parents, device=x.device))
    return best


@torch.no_grad()
def exhaustive(model, x: torch.Tensor, alpha: float = 0.7, max_len: int | None = None) -> Decoded:
    """Score every possible output (V**max_len of them: tiny vocabularies only) and keep the best."""
    max_len = max_len or model.max_len
    rows = []
    for i in range(len(x)):
        memory, state = model.encode(x[i : i + 1])
        prefixes = torch.zeros(1, 0, dtype=torch.long, device=x.device)
        scores = torch.zeros(1, device=x.device)
        best = (None, float("-inf"), float("-inf"), 0)
        for t in range(1, max_len + 1):
            prev = prefixes[:, -1] if t > 1 else torch.full((1,), SOS, device=x.device)
            log_probs, state = model.step(prev, state, memory)
            total = scores[:, None] + log_probs  # (prefixes, V)
            vocab = total.shape[1]
            ends = torch.zeros_like(total, dtype=torch.bool)
            ends[:, EOS] = True
            complete = torch.isfinite(total) & (ends | (t == max_len))
            if complete.any():
                flat = torch.where(complete.flatten(), total.flatten() / t**alpha, float("-inf"))
                j = int(flat.argmax())
                if flat[j] > best[2]:
                    best = (torch.cat([prefixes[j // vocab], torch.tensor([j % vocab], device=x.device)]),
                            float(total.flatten()[j]), float(flat[j]), t)
            parent, token = (torch.isfinite(total) & ~ends).nonzero(as_tuple=True)
            prefixes = torch.cat([prefixes[parent], token[:, None]], dim=1)
            scores, state = total[parent, token], _reorder(state, parent)
            if len(prefixes) == 0:
                break
        rows.append(best)
    tokens = torch.full((len(x), max_len), PAD, dtype=torch.long, device=x.device)
    for i, (seq, _, _, t) in enumerate(rows):
        tokens[i, :t] = seq
    return Decoded(tokens, torch.tensor([r[1] for r in rows], device=x.device),
                   torch.tensor([r[3] for r in rows], device=x.device))


def in_batches(search, model, x: torch.Tensor, batch_size: int = 512, **options) -> Decoded:
    """``search(model, batch, **options)`` over ``x`` in batches of similar input length (less padding
    to attend over), results back in the original order."""
    order = (x != PAD).sum(dim=1).argsort(stable=True)
    parts = [search(model, x[order[i : i + batch_size]], **options) for i in range(0, len(x), batch_size)]
    undo = order.argsort()
    return Decoded(*(torch.cat([getattr(p, f) for p in parts])[undo] for f in ("tokens", "scores", "lengths")))


@torch.no_grad()
def sequence_log_probs(model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log P(y|x), T)`` for given outputs ``y`` (N, max_len; ``<eos>`` then ``<pad>``), by teacher forcing."""
    logits = model(*model.inputs((x, y)))
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, y[..., None]).squeeze(-1)
    real = _real_tokens(y)
    return log_probs.masked_fill(~real, 0.0).sum(dim=1), real.sum(dim=1)


def _real_tokens(y: torch.Tensor) -> torch.Tensor:
    """Positions up to and including the first ``<eos>`` (all positions of a sequence cut at max_len)."""
    after_eos = (y == EOS).long().cumsum(dim=1) - (y == EOS).long()
    return (after_eos == 0) & (y != PAD)


def char_matches(hypotheses: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(right, total)``: target characters (``<eos>`` excluded) that the output has at the same position."""
    chars = (targets != PAD) & (targets != EOS)
    return ((hypotheses == targets) & chars).sum().float(), chars.sum().float()
