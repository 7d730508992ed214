"""The course's two Siamese objectives on L2-normalised embeddings, and the miners that choose what to train on.

* **Triplet loss** (FaceNet): for an anchor A, a positive P (same class) and a negative N (another class),
  L(A, P, N) = max(||f(A) - f(P)||^2 - ||f(A) - f(N)||^2 + alpha, 0), averaged over the mined triplets whose
  loss is > 0 (pytorch-metric-learning's default reduction, so easy triplets do not dilute the gradient).
* **Miners** (the course: "choose triplets that are hard to train on"), with gap = d(A, N) - d(A, P):
  ``all`` (batch-all): every valid triplet with gap <= alpha (the others have zero loss);
  ``hard``: gap <= 0 (the negative is at least as close as the positive);
  ``semihard``: 0 < gap <= alpha (the negative is further, but inside the margin);
  ``batch_hard``: per anchor, its furthest positive and its closest negative (one triplet per anchor).
  These are pytorch-metric-learning's TripletMarginMiner (all / hard / semihard) and BatchHardMiner with
  squared Euclidean distances (``LpDistance(power=2)``); ``tests/test_siamese.py`` holds them equal.
* **Pairs** (the binary-classification route): y_hat = sigmoid(sum_k w_k |f(x1)_k - f(x2)_k| + b) with a logistic
  loss. An anchor has K - 1 matched partners in a P x K batch but ~P K unmatched ones (K matched vs K^2 unmatched
  pairs per class): each anchor gets as many negatives as it has positives, its closest (hardest) ones.
* **NT-Xent** (SimCLR; the Siamese view term's ``view_objective: ntxent``): cross-entropy of picking out each
  row's positives among every other row of the batch by cosine similarity / temperature.

Every function takes distance *rows* (anchors x examples) with the anchors' labels and positions, so that a caller
may score some anchors against a larger set.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F

Miner = Literal["all", "hard", "semihard", "batch_hard"]
MINERS: tuple[str, ...] = ("all", "hard", "semihard", "batch_hard")


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 for unit-norm rows: 2 - 2 a_i . b_j (exact for unit vectors, and a smooth gradient at 0)."""
    return (2 - 2 * a @ b.t()).clamp(min=0)


def masks(anchor_labels: torch.Tensor, labels: torch.Tensor, anchor_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) masks of anchors x examples: same class but not the anchor itself / another class."""
    same = anchor_labels[:, None] == labels[None, :]
    itself = anchor_ids[:, None] == torch.arange(len(labels), device=labels.device)[None, :]
    return same & ~itself, ~same


def mine(dist: torch.Tensor, anchor_labels: torch.Tensor, labels: torch.Tensor, anchor_ids: torch.Tensor,
         miner: Miner, margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchor row, positive, negative) indices of the triplets ``miner`` picks; ``dist`` is anchors x examples."""
    dist = dist.detach()
    pos, neg = masks(anchor_labels, labels, anchor_ids)
    if miner == "batch_hard":
        keep = pos.any(1) & neg.any(1)
        hardest_pos = dist.masked_fill(~pos, float("-inf")).argmax(1)
        hardest_neg = dist.masked_fill(~neg, float("inf")).argmin(1)
        rows = torch.nonzero(keep).squeeze(1)
        return rows, hardest_pos[rows], hardest_neg[rows]
    a, p, n = torch.where(pos[:, :, None] & neg[:, None, :])
    gap = dist[a, n] - dist[a, p]
    keep = gap <= margin
    if miner == "hard":
        keep &= gap <= 0
    elif miner == "semihard":
        keep &= gap > 0
    return a[keep], p[keep], n[keep]


def triplet_terms(dist: torch.Tensor, anchor_labels: torch.Tensor, labels: torch.Tensor, anchor_ids: torch.Tensor,
                  miner: Miner, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, count) of the mined triplets' losses that are > 0: the loss is sum / count (0 when none)."""
    a, p, n = mine(dist, anchor_labels, labels, anchor_ids, miner, margin)
    losses = F.relu(dist[a, p] - dist[a, n] + margin)
    active = losses > 0
    return losses[active].sum(), active.sum().to(losses.dtype)


def hard_pairs(dist: torch.Tensor, anchor_labels: torch.Tensor, labels: torch.Tensor,
               anchor_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchor row, partner, same) of the balanced pairs: every positive of each anchor, and as many of its
    closest negatives."""
    pos, neg = masks(anchor_labels, labels, anchor_ids)
    order = dist.detach().masked_fill(~neg, float("inf")).argsort(1)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(dist.shape[1], device=dist.device).expand_as(order))
    hard_neg = neg & (rank < pos.sum(1, keepdim=True))
    a, j = torch.where(pos | hard_neg)
    return a, j, pos[a, j].to(dist.dtype)


def pair_terms(emb_rows: torch.Tensor, emb: torch.Tensor, anchor_labels: torch.Tensor, labels: torch.Tensor,
               anchor_ids: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, count) of the logistic loss of ``head(|f(x1) - f(x2)|)`` over the balanced hard pairs."""
    a, j, same = hard_pairs(squared_distances(emb_rows, emb), anchor_labels, labels, anchor_ids)
    logits = head((emb_rows[a] - emb[j]).abs()).squeeze(-1)
    losses = F.binary_cross_entropy_with_logits(logits, same, reduction="none")
    return losses.sum(), torch.tensor(float(len(losses)), device=emb.device)


def ntxent_terms(emb: torch.Tensor, ids: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, count) of NT-Xent (SimCLR's normalised temperature-scaled cross-entropy) over unit-norm rows: each row
    must pick out the rows of its own ``ids`` from every other row of the batch by cosine similarity / temperature;
    one term -log(e^{s_ap} / (e^{s_ap} + sum_n e^{s_an})) per positive pair (a, p), the negatives n every row of
    another id (pytorch-metric-learning's NTXentLoss; ``tests/test_siamese.py`` holds them equal)."""
    sim = emb @ emb.t() / temperature
    pos, neg = masks(ids, ids, torch.arange(len(ids), device=ids.device))
    a, p = torch.where(pos)
    negatives = sim.masked_fill(~neg, float("-inf"))[a]
    losses = torch.logsumexp(torch.cat([sim[a, p, None], negatives], 1), 1) - sim[a, p]
    return losses.sum(), torch.tensor(float(len(losses)), device=emb.device)
