"""Mean average precision (COCO's definition) as a streaming torchmetrics metric, written here.

The definition is COCOeval's for boxes, with area range "all", at most ``max_detections`` (100) per image and
class, no crowd boxes; :class:`MeanAveragePrecision` equals pycocotools' ``COCOeval(iouType="bbox")`` on the same
predictions (tested to 1e-6):

- per image and class, detections sorted by score (ties: input order) claim, in turn, the unmatched ground-truth
  box of highest IoU among those with IoU >= t (ties: the later box), for each t in 0.50:0.05:0.95;
- per class, all images' detections ranked by score; precision made monotone from the right, read at the 101
  recall points 0:0.01:1 (0 beyond the last recall reached) and averaged: the class's AP at t;
- classes with no ground truth in any image get -1 and are left out of the means; -1 when no class has any.

States are flat lists concatenated across workers (``dist_reduce_fx="cat"``): rows of detections, rows of ground
truth, and per image the pair (number of detections, number of ground-truth boxes). All three are gathered in the
same worker order, so the per-image counts cut the gathered rows back into images: predictions are pooled over
every image of every worker, never averaged per worker.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from dl_ray.detection.boxes import _iou, check_boxes

# pycocotools' own float values (np.linspace): a recall of exactly 0.07 must compare with 0.07 as COCOeval's does.
IOU_THRESHOLDS = torch.from_numpy(np.linspace(0.5, 0.95, 10))
RECALL_THRESHOLDS = torch.from_numpy(np.linspace(0.0, 1.0, 101))
_DET, _GT = 6, 5  # row widths: x1 y1 x2 y2 score label | x1 y1 x2 y2 label


class MeanAveragePrecision(Metric):
    """mAP@0.5 and mAP@[0.5:0.95] over every image seen, on every worker.

    ``update(preds, targets)``: one dict per image, ``{"boxes": (N, 4) xyxy, "scores": (N,), "labels": (N,)}`` and
    ``{"boxes": (M, 4), "labels": (M,)}``. ``compute()`` returns ``map_50``, ``map_75``, ``map`` (mean over IoU
    0.50:0.05:0.95), and ``ap_50_per_class`` / ``ap_per_class`` (length ``num_classes``, or the largest label seen
    + 1; -1 for a class without ground truth). Values are kept at the metric's dtype (float32 unless
    ``set_dtype``); the evaluation runs in float64.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, num_classes: int | None = None, max_detections: int = 100, **kwargs: Any):
        super().__init__(**kwargs)
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"num_classes: must be a positive integer or None, got {num_classes!r}")
        if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
            raise ValueError(f"max_detections: must be a positive integer, got {max_detections!r}")
        self.num_classes, self.max_detections = num_classes, max_detections
        self.add_state("detections", [], dist_reduce_fx="cat")
        self.add_state("ground_truth", [], dist_reduce_fx="cat")
        self.add_state("counts", [], dist_reduce_fx="cat")

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"preds, targets: expected one dict per image in each, got {len(preds)} and {len(targets)}")
        for i, (pred, target) in enumerate(zip(preds, targets)):
            boxes, labels = self._checked(pred, f"preds[{i}]", with_scores=True)
            gt_boxes, gt_labels = self._checked(target, f"targets[{i}]", with_scores=False)
            columns = (boxes, pred["scores"][:, None], labels[:, None])
            self._keep(self.detections, torch.cat([c.to(self.dtype) for c in columns], 1))
            self._keep(self.ground_truth, torch.cat([gt_boxes.to(self.dtype), gt_labels[:, None].to(self.dtype)], 1))
            self._keep(self.counts, torch.tensor([len(boxes), len(gt_boxes)]))

    def _keep(self, state: list[Tensor], rows: Tensor) -> None:
        state.append(rows.detach().to(device=self.device, dtype=self.dtype).flatten())

    def _checked(self, item: dict[str, Tensor], name: str, with_scores: bool) -> tuple[Tensor, Tensor]:
        keys = ("boxes", "scores", "labels") if with_scores else ("boxes", "labels")
        if not isinstance(item, dict) or any(k not in item for k in keys):
            raise ValueError(f"{name}: expected a dict with keys {', '.join(keys)}")
        boxes, labels = item["boxes"], item["labels"]
        check_boxes(boxes, f"{name}['boxes']")
        n = len(boxes)
        if not isinstance(labels, Tensor) or labels.shape != (n,) or labels.is_floating_point():
            raise ValueError(f"{name}['labels']: expected {n} integer labels, got {getattr(labels, 'shape', labels)}")
        top = self.num_classes
        bad = (labels < 0) | (labels >= top) if top is not None else labels < 0
        if bad.any():
            allowed = f"0..{top - 1}" if top is not None else ">= 0"
            raise ValueError(f"{name}['labels']: labels must be {allowed}, got {int(labels[bad][0])}")
        if with_scores:
            scores = item["scores"]
            if not isinstance(scores, Tensor) or scores.shape != (n,) or not torch.isfinite(scores).all():
                raise ValueError(f"{name}['scores']: expected {n} finite scores, got {getattr(scores, 'shape', scores)}")
        return boxes, labels

    def compute(self) -> dict[str, Tensor]:
        det, gt, counts = (_rows(s, w) for s, w in ((self.detections, _DET), (self.ground_truth, _GT), (self.counts, 2)))
        counts = counts.long()
        images = torch.arange(len(counts))
        det_image = images.repeat_interleave(counts[:, 0])
        gt_image = images.repeat_interleave(counts[:, 1])
        det_label, gt_label = det[:, 5].long(), gt[:, 4].long()
        seen = torch.cat([det_label, gt_label])
        num_classes = self.num_classes if self.num_classes is not None else int(seen.max()) + 1 if len(seen) else 0
        det, det_image, det_label = _rank_detections(det, det_image, det_label, len(counts), self.max_detections)
        det_tp = _match(det, det_image, det_label, gt, gt_image, gt_label, len(counts))
        per_class = [_precision_at_recalls(det_tp[det_label == c], det[det_label == c, 4], int((gt_label == c).sum()))
                     for c in range(num_classes)]
        empty = torch.empty(len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), 0, dtype=torch.float64)
        return _summary(torch.stack(per_class, 2) if per_class else empty)


def _rows(state: list[Tensor] | Tensor, width: int) -> Tensor:
    """A flat state (a list before a sync, one tensor after it) as float64 rows on the CPU."""
    if isinstance(state, list) and not state:
        return torch.zeros(0, width, dtype=torch.float64)
    return dim_zero_cat(state).to("cpu", torch.float64).reshape(-1, width)


def _group_ranks(keys: Tensor) -> Tensor:
    """Position of each element within its run of equal keys (keys sorted)."""
    _, sizes = torch.unique_consecutive(keys, return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes
    return torch.arange(len(keys)) - starts.repeat_interleave(sizes)


def _rank_detections(det: Tensor, image: Tensor, label: Tensor, n_images: int, max_det: int):
    """Detections ordered by class, image, then score (ties: input order), each image's top ``max_det`` per class."""
    order = torch.argsort(-det[:, 4], stable=True)
    order = order[torch.argsort(image[order], stable=True)]
    order = order[torch.argsort(label[order], stable=True)]
    det, image, label = det[order], image[order], label[order]
    top = _group_ranks(label * n_images + image) < max_det
    return det[top], image[top], label[top]


def _padded(groups: Tensor, all_groups: Tensor, values: Tensor, fill: float) -> tuple[Tensor, Tensor]:
    """Rows grouped (sorted by group) into a ``(len(all_groups), longest group, ...)`` tensor and its mask."""
    slot, rank = torch.searchsorted(all_groups, groups), _group_ranks(groups)
    width = int(rank.max()) + 1 if len(rank) else 0
    out = torch.full((len(all_groups), width, *values.shape[1:]), fill, dtype=values.dtype)
    mask = torch.zeros(len(all_groups), width, dtype=torch.bool)
    out[slot, rank], mask[slot, rank] = values, True
    return out, mask


def _match(det: Tensor, det_image: Tensor, det_label: Tensor, gt: Tensor, gt_image: Tensor, gt_label: Tensor,
           n_images: int) -> Tensor:
    """``(D, T)``: whether each detection is a true positive at each IoU threshold (COCO's greedy matching).

    All (image, class) groups advance together: step d lets the d-th best detection of every group claim its
    ground truth at every threshold at once, so the loop runs at most ``max_detections`` times.
    """
    det_group = det_label * n_images + det_image
    gt_order = torch.argsort(gt_label * n_images + gt_image, stable=True)  # keeps input order within a group
    gt_group = (gt_label * n_images + gt_image)[gt_order]
    groups = torch.unique(torch.cat([det_group, gt_group]))
    det_boxes, det_mask = _padded(det_group, groups, det[:, :4], 0.0)
    gt_boxes, gt_mask = _padded(gt_group, groups, gt[gt_order, :4], 0.0)
    iou = torch.where(gt_mask[:, None, :], _iou(det_boxes, gt_boxes), -1.0)  # (G, D, M); padding never matches
    thresholds = IOU_THRESHOLDS.clamp(max=1 - 1e-10)[None, :, None]
    n_gt = gt_boxes.shape[1]
    if n_gt == 0:
        return torch.zeros(len(det), len(IOU_THRESHOLDS), dtype=torch.bool)
    claimed = torch.zeros(len(groups), len(thresholds[0]), n_gt, dtype=torch.bool)
    tp = torch.zeros(len(groups), det_boxes.shape[1], len(thresholds[0]), dtype=torch.bool)
    for d in range(det_boxes.shape[1]):
        row = iou[:, d, None, :]  # (G, 1, M)
        free = (row >= thresholds) & ~claimed & det_mask[:, d, None, None]
        best = n_gt - 1 - torch.where(free, row, -1.0).flip(-1).argmax(-1)  # the last of equal IoUs, as COCOeval
        found = free.any(-1)
        claimed |= F.one_hot(best, n_gt).bool() & found[..., None]
        tp[:, d] = found
    return tp[det_mask]  # back to the detections' order (groups are sorted the way the detections are)


def _precision_at_recalls(tp: Tensor, scores: Tensor, n_gt: int) -> Tensor:
    """``(T, R)`` interpolated precision of one class at the 101 recall points; -1 without ground truth."""
    T, R = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    if n_gt == 0:
        return torch.full((T, R), -1.0, dtype=torch.float64)
    if len(scores) == 0:
        return torch.zeros(T, R, dtype=torch.float64)
    tp = tp[torch.argsort(-scores, stable=True)].T  # (T, D), all images' detections by score
    tp_sum = tp.cumsum(1).double()
    fp_sum = (~tp).cumsum(1).double()
    recall = tp_sum / n_gt
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    envelope = precision.flip(1).cummax(1).values.flip(1)  # best precision at this recall or beyond
    at = torch.searchsorted(recall.contiguous(), RECALL_THRESHOLDS.expand(T, R).contiguous(), right=False)
    reached = at < recall.shape[1]
    return torch.where(reached, envelope.gather(1, at.clamp(max=recall.shape[1] - 1)), 0.0)


def _mean_valid(precision: Tensor) -> Tensor:
    valid = precision[precision > -1]
    return valid.mean() if len(valid) else torch.tensor(-1.0, dtype=torch.float64)


def _summary(precision: Tensor) -> dict[str, Tensor]:
    """COCOeval.summarize's means (entries of -1 left out) of the ``(T, R, K)`` precision table."""
    per_class = precision.mean(1)  # (T, K); a class without ground truth stays -1
    return {
        "map": _mean_valid(precision),
        "map_50": _mean_valid(precision[0]),
        "map_75": _mean_valid(precision[5]),
        "ap_50_per_class": per_class[0],
        "ap_per_class": per_class.mean(0),
    }
