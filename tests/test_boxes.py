"""IoU and non-max suppression against a brute-force plain-Python reference, on random boxes and on edge cases."""
from __future__ import annotations

import pytest
import torch

from dl_ray.detection import batched_nms, box_area, box_iou, cxcywh_to_xyxy, filter_and_nms, nms, xyxy_to_cxcywh
from dl_ray.detection.boxes import filter_and_nms_images


def iou_reference(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None, thr: float) -> list[int]:
    """The course's loop: take the best remaining box, drop the ones overlapping it by more than thr, repeat."""
    b, s = boxes.tolist(), scores.tolist()
    lab = labels.tolist() if labels is not None else [0] * len(b)
    remaining = sorted(range(len(b)), key=lambda i: -s[i])  # sorted() is stable: equal scores keep input order
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        remaining = [i for i in remaining if lab[i] != lab[best] or iou_reference(b[best], b[i]) <= thr]
    return keep


def random_boxes(gen: torch.Generator, n: int, integer: bool = False) -> torch.Tensor:
    """Crowded boxes (many overlaps); integer corners make IoUs such as exactly 0.5 common."""
    if n and integer and torch.rand(1, generator=gen) < 0.5:
        # strips of one height: IoU is the x-overlap over the x-union, and nested strips sharing an edge have
        # IoU = (narrow width) / (wide width), the largest IoU an x-overlap allows (what NMS prunes pairs by)
        x = torch.randint(0, 31, (n, 2), generator=gen).sort(1).values.float()
        return torch.stack([x[:, 0], torch.zeros(n), x[:, 1], torch.ones(n)], 1)
    xy = torch.rand(n, 2, generator=gen) * 60
    wh = torch.rand(n, 2, generator=gen) * 30
    boxes = torch.cat([xy, xy + wh], 1)
    return boxes.round() if integer else boxes


@pytest.mark.parametrize("seed", range(40))
def test_iou_and_nms_match_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(0, 60, (1,), generator=gen))
    boxes = random_boxes(gen, n, integer=seed % 2 == 0)
    other = random_boxes(gen, 7)
    scores = torch.rand(n, generator=gen)
    if seed % 3 == 0:
        scores = (scores * 4).round() / 4  # many equal scores
    labels = torch.randint(0, 3, (n,), generator=gen)
    expected = torch.tensor([[iou_reference(a, b) for b in other.tolist()] for a in boxes.tolist()], dtype=torch.float64)
    expected = expected.reshape(n, 7)
    torch.testing.assert_close(box_iou(boxes.double(), other.double()), expected, rtol=0, atol=0)
    torch.testing.assert_close(box_iou(boxes, other), expected.float())
    for thr in (0.0, 0.3, 0.5, 0.7, 1.0):
        assert nms(boxes, scores, thr).tolist() == nms_reference(boxes, scores, None, thr)
        assert batched_nms(boxes, scores, labels, thr).tolist() == nms_reference(boxes, scores, labels, thr)


@pytest.mark.parametrize("seed", range(10))
def test_filter_and_nms_is_threshold_then_per_class_nms(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    boxes = random_boxes(gen, 80)
    scores = (torch.rand(80, generator=gen) * 10).round() / 10  # some scores equal the threshold exactly
    labels = torch.randint(0, 4, (80,), generator=gen)
    passing = [i for i, s in enumerate(scores.tolist()) if s >= scores.new_tensor(0.6).item()]
    idx = torch.tensor(passing, dtype=torch.long)
    expected = [passing[i] for i in nms_reference(boxes[idx], scores[idx], labels[idx], 0.5)]
    assert filter_and_nms(boxes, scores, labels, 0.6, 0.5).tolist() == expected


@pytest.mark.parametrize("seed", range(6))
def test_a_batch_of_images_is_decided_as_each_image_alone(seed):
    gen = torch.Generator().manual_seed(200 + seed)
    boxes = torch.stack([random_boxes(gen, 50, integer=seed % 2 == 0) for _ in range(7)])
    scores = (torch.rand(7, 50, generator=gen) * 8).round() / 8  # ties within and across images
    scores[3] = 0.0  # an image with no box over the threshold
    labels = torch.randint(0, 3, (7, 50), generator=gen)
    kept = filter_and_nms_images(boxes, scores, labels, 0.5, 0.45)
    assert [k.tolist() for k in kept] == [filter_and_nms(b, s, c, 0.5, 0.45).tolist()
                                          for b, s, c in zip(boxes, scores, labels)]
    assert kept[3].numel() == 0


def test_iou_of_known_boxes():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0],   # overlap 1 of union 7
                      [2.0, 0.0, 4.0, 2.0],   # touching edges: 0
                      [0.5, 0.5, 1.5, 1.5],   # nested: 1 / 4
                      [0.0, 0.0, 2.0, 2.0],   # identical: 1
                      [5.0, 5.0, 5.0, 5.0]])  # a point: 0
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 0.25, 1.0, 0.0]]))
    assert box_iou(torch.zeros(0, 4), b).shape == (0, 5) and box_iou(b, torch.zeros(0, 4)).shape == (5, 0)
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert box_iou(point, point).item() == 0.0  # empty union: 0, not NaN
    torch.testing.assert_close(box_area(b), torch.tensor([4.0, 4.0, 1.0, 4.0, 0.0]))


def test_box_format_conversions():
    xyxy = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 0.0, 0.0]])
    cxcywh = torch.tensor([[20.0, 40.0, 20.0, 40.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), cxcywh)
    torch.testing.assert_close(cxcywh_to_xyxy(cxcywh), xyxy)
    boxes = random_boxes(torch.Generator().manual_seed(0), 50)
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)


def test_nms_edge_cases():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.long and empty.tolist() == []
    assert filter_and_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.6, 0.5).tolist() == []
    box = [0.0, 0.0, 10.0, 10.0]
    # identical boxes: only the best survives; equal scores: the first one
    assert nms(torch.tensor([box] * 3), torch.tensor([0.2, 0.9, 0.5]), 0.5).tolist() == [1]
    assert nms(torch.tensor([box] * 3), torch.tensor([0.7, 0.7, 0.7]), 0.5).tolist() == [0]
    # touching boxes overlap by 0, which is not above even a threshold of 0
    touching = torch.tensor([box, [10.0, 0.0, 20.0, 10.0]])
    assert nms(touching, torch.tensor([0.9, 0.8]), 0.0).tolist() == [0, 1]
    # nested: IoU 0.04 survives 0.5, not 0.03
    nested = torch.tensor([box, [2.0, 2.0, 4.0, 4.0]])
    assert nms(nested, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(nested, torch.tensor([0.9, 0.8]), 0.03).tolist() == [0]
    # IoU exactly 0.5 is not "above 0.5": kept
    half = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert nms(half, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(half, torch.tensor([0.9, 0.8]), 0.49).tolist() == [0]
    # overlapping boxes of different classes never suppress each other; of the same class they do
    pair, scores = torch.tensor([box, [1.0, 1.0, 11.0, 11.0]]), torch.tensor([0.8, 0.9])
    assert batched_nms(pair, scores, torch.tensor([0, 1]), 0.5).tolist() == [1, 0]
    assert batched_nms(pair, scores, torch.tensor([2, 2]), 0.5).tolist() == [1]
    assert nms(pair, scores, 0.5).tolist() == [1]
    # nested boxes sharing an edge: IoU = 5.1 / 10 is above 0.5, 4.9 / 10 is not
    wide, scores = [0.0, 0.0, 10.0, 1.0], torch.tensor([0.9, 0.8])
    assert nms(torch.tensor([wide, [4.9, 0.0, 10.0, 1.0]]), scores, 0.5).tolist() == [0]
    assert nms(torch.tensor([wide, [5.1, 0.0, 10.0, 1.0]]), scores, 0.5).tolist() == [0, 1]
    assert nms(torch.tensor([wide, [0.0, 0.0, 5.1, 1.0]]), scores.flip(0), 0.5).tolist() == [1]
    # a chain: 0 suppresses 1, so 1 cannot suppress 2
    chain = torch.tensor([[0.0, 0, 10, 10], [3.0, 0, 13, 10], [6.0, 0, 16, 10]])
    assert nms(chain, torch.tensor([0.9, 0.8, 0.7]), 0.4).tolist() == [0, 2]


@pytest.mark.parametrize("call, message", [
    (lambda: box_iou(torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 0.0, 4.0, 1.0]]), torch.zeros(0, 4)),
     r"boxes a: box 1 is \[5.0, 0.0, 4.0, 1.0\]; expected finite xyxy with x1 <= x2 and y1 <= y2"),
    (lambda: nms(torch.tensor([[0.0, 3.0, 1.0, 1.0]]), torch.ones(1), 0.5), r"boxes: box 0 .* y1 <= y2"),
    (lambda: nms(torch.tensor([[0.0, float("nan"), 1.0, 1.0]]), torch.ones(1), 0.5), r"boxes: box 0 .*finite"),
    (lambda: nms(torch.zeros(2, 3), torch.ones(2), 0.5), r"boxes: expected a tensor of shape \(N, 4\)"),
    (lambda: nms(torch.zeros(2, 4, dtype=torch.long), torch.ones(2), 0.5), r"boxes: expected a float tensor"),
    (lambda: nms(torch.zeros(2, 4), torch.ones(3), 0.5), r"scores: expected 2 finite scores"),
    (lambda: nms(torch.zeros(1, 4), torch.ones(1), 1.5), r"iou_threshold: must be a number in \[0, 1\], got 1.5"),
    (lambda: batched_nms(torch.zeros(1, 4), torch.ones(1), torch.zeros(1, dtype=torch.long), -0.1), r"iou_threshold"),
    (lambda: batched_nms(torch.zeros(1, 4), torch.ones(1), torch.zeros(1), 0.5), r"labels: expected 1 integer labels"),
    (lambda: filter_and_nms(torch.zeros(1, 4), torch.ones(1), torch.zeros(1, dtype=torch.long), 2.0, 0.5),
     r"score_threshold: must be a number in \[0, 1\], got 2.0"),
    (lambda: cxcywh_to_xyxy(torch.tensor([[5.0, 5.0, -1.0, 2.0]])), r"boxes: box 0 .*width, height >= 0"),
])
def test_bad_input_is_one_line(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
