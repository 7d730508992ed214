"""Boxes, IoU and non-max suppression, written here because the course teaches them.

Boxes are float tensors of shape ``(N, 4)`` in ``xyxy`` pixel coordinates: ``x1 <= x2`` and ``y1 <= y2``.
IoU = area(intersection) / area(union), 0 when the union is empty (two zero-area boxes). Every function refuses a
bad box or threshold with a ``ValueError`` of one line; the spec layer turns job fields into ``SpecError``.

Non-max suppression follows the course: take the box with the highest score, drop every remaining box whose IoU
with it is above the threshold (strictly), repeat. Scores that tie keep their input order (the earlier box wins).
"""
from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import Tensor


def check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    """Raise one ValueError line unless ``boxes`` is a finite float ``(N, 4)`` xyxy tensor with x1 <= x2, y1 <= y2."""
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{name}: expected a tensor of shape (N, 4) in xyxy pixels, got {shape}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor, got {boxes.dtype}")
    bad = ~torch.isfinite(boxes).all(1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"{name}: box {i} is {boxes[i].tolist()}; expected finite xyxy with x1 <= x2 and y1 <= y2")


def check_threshold(value: float, name: str) -> None:
    """Raise one ValueError line unless ``value`` is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: must be a number in [0, 1], got {value!r}")


def box_area(boxes: Tensor) -> Tensor:
    """``(N,)`` areas (x2 - x1) * (y2 - y1)."""
    check_boxes(boxes)
    return _area(boxes)


def _area(boxes: Tensor) -> Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes broadcast against each other (``a[..., :, None, :]`` vs ``b[..., None, :, :]``), unchecked.

    The operations come in the order pycocotools' C code uses (union = area_a + area_b - intersection), so in
    float64 the values are bit for bit those of COCOeval and of a plain-Python reference.
    """
    a, b = a[..., :, None, :], b[..., None, :, :]
    w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = w * h
    union = _area(a) + _area(b) - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, 1), 0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """``(N, M)`` IoU of every box of ``a`` with every box of ``b``."""
    check_boxes(a, "boxes a")
    check_boxes(b, "boxes b")
    return _iou(a, b)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(centre x, centre y, width, height) -> (x1, y1, x2, y2)."""
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
        raise ValueError(f"boxes: expected a float tensor of shape (N, 4) in cxcywh, got {getattr(boxes, 'shape', boxes)}")
    bad = ~torch.isfinite(boxes).all(1) | (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"boxes: box {i} is {boxes[i].tolist()}; expected finite cxcywh with width, height >= 0")
    cx, cy, w, h = boxes.unbind(1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) -> (centre x, centre y, width, height)."""
    check_boxes(boxes)
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1)


def _check_scores(boxes: Tensor, scores: Tensor, labels: Tensor | None = None) -> None:
    check_boxes(boxes)
    n = len(boxes)
    if not isinstance(scores, Tensor) or scores.shape != (n,) or not torch.isfinite(scores).all():
        raise ValueError(f"scores: expected {n} finite scores (one per box), got {getattr(scores, 'shape', scores)}")
    if labels is not None and (not isinstance(labels, Tensor) or labels.shape != (n,) or labels.is_floating_point()):
        raise ValueError(f"labels: expected {n} integer labels (one per box), got {getattr(labels, 'shape', labels)}")


def _suppressions(boxes: np.ndarray, labels: np.ndarray | None, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j), i < j, of rows of ``boxes`` (float64, ranked best first) with IoU above the threshold and
    the same label; without forming the N x N matrix.

    IoU <= (x-overlap) / (either box's width), so with boxes sorted by x1, box p can only exceed the threshold with
    the boxes after it whose x1 is below x2 - threshold * width of p: one searchsorted (loosened by 1e-6 relative
    and 1e-9 of the coordinate, far above rounding, so no pair the exact rule needs is lost). Of those, only the
    ones that also overlap in y get an IoU. The work follows the overlaps (many for crowded boxes, few for scattered
    ones; N^2 / 2 at worst). A pair left has a positive intersection, hence a positive union.
    """
    n = len(boxes)
    by_x1 = np.argsort(boxes[:, 0], kind="stable")
    x1, y1, x2, y2 = boxes[by_x1].T.copy()
    reach = x2 - iou_threshold * (1 - 1e-6) * (x2 - x1) + 1e-9 * np.abs(x2)
    counts = np.maximum(np.searchsorted(x1, np.minimum(reach, x2), side="left") - np.arange(1, n + 1), 0)
    p = np.repeat(np.arange(n), counts)
    q = np.arange(len(p)) + np.repeat(np.arange(1, n + 1) - (np.cumsum(counts) - counts), counts)
    h = np.minimum(y2[p], y2[q]) - np.maximum(y1[p], y1[q])
    hit = h > 0
    if labels is not None:
        hit &= labels[by_x1[p]] == labels[by_x1[q]]
    p, q, h = p[hit], q[hit], h[hit]
    inter = (np.minimum(x2[p], x2[q]) - np.maximum(x1[p], x1[q])) * h  # as box_iou: w * h, then a + b - inter
    area = (x2 - x1) * (y2 - y1)
    over = inter / (area[p] + area[q] - inter) > iou_threshold
    p, q = by_x1[p[over]], by_x1[q[over]]
    return np.minimum(p, q), np.maximum(p, q)


def _greedy(n: int, winner: np.ndarray, loser: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 kept by greedy suppression, given the pairs (winner ranked above loser, IoU above threshold).

    The one Python loop visits, best first, only the boxes that could suppress another; each does one vector
    assignment (its losers), and only if it is itself still kept.
    """
    order = np.argsort(winner, kind="stable")
    winner, loser = winner[order], loser[order]
    suppressors, first = np.unique(winner, return_index=True)
    bounds = np.append(first, len(winner))
    removed = np.zeros(n, dtype=bool)
    for i, lo, hi in zip(suppressors.tolist(), bounds[:-1].tolist(), bounds[1:].tolist()):
        if not removed[i]:
            removed[loser[lo:hi]] = True
    return np.flatnonzero(~removed)


def _ranked_nms(boxes: Tensor, scores: Tensor, labels: Tensor | None, iou_threshold: float) -> Tensor:
    order = torch.argsort(scores, descending=True, stable=True)
    ranked = boxes[order].to("cpu", torch.float64).numpy()  # float64: decided exactly as by a double reference
    ranked_labels = labels[order].cpu().numpy() if labels is not None else None
    kept = _greedy(len(ranked), *_suppressions(ranked, ranked_labels, iou_threshold))
    return order[torch.from_numpy(kept).to(order.device)]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-max suppression: indices of the kept boxes, highest score first (LongTensor, on boxes' device).

    Runs on the CPU in float64 (boxes on a GPU are copied): IoUs only for pairs that can exceed the threshold,
    then one pass over the boxes that suppress something.
    """
    check_threshold(iou_threshold, "iou_threshold")
    _check_scores(boxes, scores)
    return _ranked_nms(boxes, scores, None, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Non-max suppression per class: boxes of different labels never suppress each other. Indices, best first."""
    check_threshold(iou_threshold, "iou_threshold")
    _check_scores(boxes, scores, labels)
    return _ranked_nms(boxes, scores, labels, iou_threshold)


def filter_and_nms(boxes: Tensor, scores: Tensor, labels: Tensor, score_threshold: float,
                   iou_threshold: float) -> Tensor:
    """The course's inference for one image: drop boxes with score < score_threshold, then per-class NMS.

    ``scores`` are Pc times the class probability (computed by the caller). Returns indices into the inputs of
    the boxes kept, highest score first.
    """
    check_threshold(score_threshold, "score_threshold")
    check_threshold(iou_threshold, "iou_threshold")
    _check_scores(boxes, scores, labels)
    candidates = torch.nonzero(scores >= score_threshold).flatten()
    kept = _ranked_nms(boxes[candidates], scores[candidates], labels[candidates], iou_threshold)
    return candidates[kept]


def filter_and_nms_images(boxes: Tensor, scores: Tensor, labels: Tensor, score_threshold: float,
                          iou_threshold: float) -> list[Tensor]:
    """:func:`filter_and_nms` for a batch of images at once: ``boxes`` (N, A, 4), ``scores`` and ``labels`` (N, A).

    One suppression over the whole batch, with each (image, class) pair its own label, decides exactly what N
    separate calls would (boxes of other images never meet, and ties keep their order within an image), without
    N rounds of Python overhead. Returns, per image, the indices (into its A boxes) kept, highest score first."""
    check_threshold(score_threshold, "score_threshold")
    check_threshold(iou_threshold, "iou_threshold")
    n, a = scores.shape
    flat_labels = labels + torch.arange(n, device=labels.device)[:, None] * (int(labels.max()) + 1 if labels.numel() else 1)
    flat_boxes, flat_scores, flat_labels = boxes.reshape(-1, 4), scores.reshape(-1), flat_labels.reshape(-1)
    _check_scores(flat_boxes, flat_scores, flat_labels)
    candidates = torch.nonzero(flat_scores >= score_threshold).flatten()
    kept = candidates[_ranked_nms(flat_boxes[candidates], flat_scores[candidates], flat_labels[candidates], iou_threshold)]
    image = kept // a
    by_image = kept[torch.argsort(image, stable=True)]  # stable: each image's boxes stay best first
    return list((by_image % a).split(torch.bincount(image, minlength=n).tolist()))
