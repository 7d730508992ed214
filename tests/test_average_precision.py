"""mAP written here against pycocotools' COCOeval (bbox) on the same predictions, and pooled across workers."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dl_ray.detection import MeanAveragePrecision

Image = tuple[dict, dict]  # (prediction, target) of one image


def xywh(boxes: torch.Tensor) -> list[list[float]]:
    return [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes.double().tolist()]


def coco_reference(images: list[Image], num_classes: int) -> dict[str, np.ndarray | float]:
    """COCOeval's stats and per-class AP@0.5 (area all, maxDets 100) on the same boxes, in COCO's xywh."""
    annotations, results = [], []
    for i, (pred, target) in enumerate(images):
        for box, label in zip(xywh(target["boxes"]), target["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": label, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
        for box, score, label in zip(xywh(pred["boxes"]), pred["scores"].tolist(), pred["labels"].tolist()):
            results.append({"image_id": i, "category_id": label, "bbox": box, "score": score})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(len(images))], "annotations": annotations,
                      "categories": [{"id": c} for c in range(num_classes)]}
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    precision = evaluation.eval["precision"][:, :, :, 0, 2]  # (T, R, K) at area "all", maxDets 100
    return {"map": evaluation.stats[0], "map_50": evaluation.stats[1], "map_75": evaluation.stats[2],
            "ap_50_per_class": precision[0].mean(0), "ap_per_class": precision.mean((0, 1))}


def sorted_corners(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])], 1)


def random_boxes(gen: torch.Generator, n: int) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * 80
    return torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=gen) * 30], 1)


def random_image(gen: torch.Generator, num_classes: int, n_targets: int) -> Image:
    """Targets of classes 0..K-2; detections: jittered copies of most targets (a range of IoUs), some twice, mostly
    of the target's class, never of class 0 (a class never predicted), plus false positives of classes 1..K-1
    (class K-1 has no target anywhere)."""
    gt_boxes = random_boxes(gen, n_targets)
    gt_labels = torch.randint(0, num_classes - 1, (n_targets,), generator=gen)
    found = torch.rand(n_targets, generator=gen) < 0.8
    twice = found & (torch.rand(n_targets, generator=gen) < 0.3)
    source = torch.cat([found.nonzero(), twice.nonzero()]).flatten()
    size = (gt_boxes[source, 2:] - gt_boxes[source, :2]).repeat(1, 2)
    copies = sorted_corners(gt_boxes[source] + torch.randn(len(source), 4, generator=gen) * 0.08 * size)
    other_class = torch.randint(1, num_classes, (len(source),), generator=gen)
    keep_class = (gt_labels[source] > 0) & (torch.rand(len(source), generator=gen) < 0.85)
    n_false = int(torch.randint(0, 4, (1,), generator=gen))
    boxes = torch.cat([copies, random_boxes(gen, n_false)])
    labels = torch.cat([torch.where(keep_class, gt_labels[source], other_class),
                        torch.randint(1, num_classes, (n_false,), generator=gen)])
    order = torch.randperm(len(boxes), generator=gen)  # detections in no particular order
    scores = torch.cat([0.3 + 0.7 * torch.rand(len(source), generator=gen), 0.6 * torch.rand(n_false, generator=gen)])
    pred = {"boxes": boxes[order], "scores": scores[order], "labels": labels[order]}
    return pred, {"boxes": gt_boxes, "labels": gt_labels}


def random_images(seed: int, n_images: int = 30, num_classes: int = 5, per_image: int = 6) -> list[Image]:
    """Every 7th image has no targets, every 11th no predictions."""
    gen = torch.Generator().manual_seed(seed)
    images = []
    for i in range(n_images):
        n_targets = 0 if i % 7 == 3 else int(torch.randint(0, per_image + 1, (1,), generator=gen))
        pred, target = random_image(gen, num_classes, n_targets)
        if i % 11 == 5:
            pred = {k: v[:0] for k, v in pred.items()}
        images.append((pred, target))
    return images


def ours(images: list[Image], **kwargs) -> dict[str, torch.Tensor]:
    metric = MeanAveragePrecision(**kwargs)
    for start in range(0, len(images), 4):  # batches of 4 images
        batch = images[start:start + 4]
        metric.update([p for p, _ in batch], [t for _, t in batch])
    return metric.compute()


def assert_equal_to_coco(result: dict[str, torch.Tensor], reference: dict) -> None:
    for key in ("map", "map_50", "map_75"):
        assert abs(float(result[key]) - reference[key]) <= 1e-6, (key, float(result[key]), reference[key])
    for key in ("ap_50_per_class", "ap_per_class"):
        np.testing.assert_allclose(result[key].numpy(), reference[key], rtol=0, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("seed", range(8))
def test_map_equals_cocoeval_on_random_detections(seed):
    images = random_images(seed)
    result, reference = ours(images, num_classes=5), coco_reference(images, 5)
    assert_equal_to_coco(result, reference)
    assert result["ap_50_per_class"][4] == -1 and reference["ap_50_per_class"][4] == -1  # no target of class 4
    assert result["ap_50_per_class"][0] == 0  # class 0 has targets but is never predicted
    assert 0.1 < float(result["map"]) < float(result["map_50"]) < 0.9  # neither trivial nor perfect


@pytest.mark.parametrize("seed", range(3))
def test_map_equals_cocoeval_on_ties_and_crowded_images(seed):
    """Equal scores (ties broken by image, then input order), identical targets (equal IoUs), integer corners
    (IoUs exactly on a threshold) and more than 100 detections of one class in an image (COCO keeps the best 100)."""
    gen = torch.Generator().manual_seed(1000 + seed)
    images = random_images(seed, n_images=12, num_classes=3, per_image=10)
    for pred, target in images:
        pred["scores"] = (pred["scores"] * 5).round() / 5
        pred["boxes"], target["boxes"] = pred["boxes"].round(), target["boxes"].round()
        if len(target["boxes"]):
            target["boxes"] = torch.cat([target["boxes"], target["boxes"][:1]])  # an identical twin
            target["labels"] = torch.cat([target["labels"], target["labels"][:1]])
    crowd = random_boxes(gen, 150).round()
    images.append(({"boxes": crowd, "scores": torch.rand(150, generator=gen), "labels": torch.ones(150, dtype=torch.long)},
                   {"boxes": crowd[::3], "labels": torch.ones(50, dtype=torch.long)}))
    assert_equal_to_coco(ours(images, num_classes=3), coco_reference(images, 3))


def test_simple_cases_by_hand():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    one = torch.ones(1, dtype=torch.long)
    perfect = ours([({"boxes": box, "scores": torch.ones(1), "labels": one}, {"boxes": box, "labels": one})])
    assert perfect["ap_50_per_class"].tolist() == pytest.approx([-1.0, 1.0], abs=1e-12)  # COCO: 1 / (1 + eps)
    assert float(perfect["map"]) == pytest.approx(1.0, abs=1e-12)
    # IoU 70 / 130 = 0.54: a hit at the threshold 0.50 only
    shifted = box + torch.tensor([[3.0, 0.0, 3.0, 0.0]])
    partial = ours([({"boxes": shifted, "scores": torch.ones(1), "labels": one}, {"boxes": box, "labels": one})])
    assert float(partial["map_50"]) == pytest.approx(1.0, abs=1e-12)
    assert float(partial["map"]) == pytest.approx(0.1, abs=1e-12)
    # the first detection overlaps both targets equally and takes the later one (COCOeval's rule), which leaves the
    # earlier one to the second detection: both hit up to IoU 0.8
    targets = {"boxes": torch.tensor([[0.0, 0, 10, 10], [2.0, 0, 12, 10]]), "labels": torch.tensor([1, 1])}
    detections = {"boxes": torch.tensor([[1.0, 0, 11, 10], [-1.0, 0, 9, 10]]), "scores": torch.tensor([0.9, 0.8]),
                  "labels": torch.tensor([1, 1])}
    tie = ours([(detections, targets)], num_classes=2)
    assert float(tie["map"]) == pytest.approx(0.7, abs=1e-12)
    assert_equal_to_coco(tie, coco_reference([(detections, targets)], 2))
    nothing = ours([({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": one[:0]},
                     {"boxes": box, "labels": one})], num_classes=2)
    assert float(nothing["map"]) == 0.0 and nothing["ap_50_per_class"].tolist() == [-1.0, 0.0]
    no_targets = ours([({"boxes": box, "scores": torch.ones(1), "labels": one}, {"boxes": box[:0], "labels": one[:0]})])
    assert float(no_targets["map"]) == -1.0  # COCO's "no class has ground truth"


def merged(images: list[Image], split: int) -> MeanAveragePrecision:
    """Two workers' metrics, combined by torchmetrics' own state merging (dist_reduce_fx="cat")."""
    first, second = MeanAveragePrecision(num_classes=5), MeanAveragePrecision(num_classes=5)
    for metric, part in ((first, images[:split]), (second, images[split:])):
        for pred, target in part:
            metric.update([pred], [target])
    first.merge_state(second)
    return first


def simulated_sync(images: list[Image], split: int) -> MeanAveragePrecision:
    """What Metric.compute does under DDP: torchmetrics' _sync_dist with a gather that hands this worker's state
    and the other worker's (prepared by the same code) in rank order."""
    workers = [MeanAveragePrecision(num_classes=5) for _ in range(2)]
    for metric, part in zip(workers, (images[:split], images[split:])):
        for pred, target in part:
            metric.update([pred], [target])
    other_states: list[torch.Tensor] = []
    workers[1]._sync_dist(lambda tensor, group=None: other_states.append(tensor) or [tensor])  # its flat states
    states = iter(other_states)
    workers[0]._sync_dist(lambda tensor, group=None: [tensor, next(states)])
    return workers[0]


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # split 0: one worker saw no image, as may happen
@pytest.mark.parametrize("split", [0, 11, 29])
def test_two_workers_give_the_mAP_of_one(split):
    images = random_images(7)
    whole = ours(images, num_classes=5)
    for metric in (merged(images, split), simulated_sync(images, split)):
        result = metric.compute()
        for key in ("map", "map_50"):
            assert float(result[key]) == pytest.approx(float(whole[key]), abs=1e-12), key
        torch.testing.assert_close(result["ap_50_per_class"], whole["ap_50_per_class"], rtol=0, atol=1e-12)


def test_images_of_two_workers_do_not_collide():
    """Image 0 of each worker are different images: worker 2's detection must not match worker 1's target."""
    box, one = torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.ones(1, dtype=torch.long)
    empty = {"boxes": box[:0], "labels": one[:0]}
    only_target = ({"boxes": box[:0], "scores": torch.zeros(0), "labels": one[:0]}, {"boxes": box, "labels": one})
    only_detection = ({"boxes": box, "scores": torch.ones(1), "labels": one}, empty)
    metric = merged([only_target, only_detection], 1)
    assert float(metric.compute()["map_50"]) == 0.0


def one_image(boxes: list, scores: list, labels: list) -> tuple[list[dict], list[dict]]:
    """update()'s arguments for one image with these detections and no target."""
    pred = {"boxes": torch.tensor(boxes), "scores": torch.tensor(scores), "labels": torch.tensor(labels)}
    return [pred], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]


@pytest.mark.parametrize("update, message", [
    (lambda m: m.update([{}], []), r"preds, targets: expected one dict per image in each, got 1 and 0"),
    (lambda m: m.update([{"boxes": torch.zeros(1, 4)}], [{}]), r"preds\[0\]: expected a dict with keys boxes, scores, labels"),
    (lambda m: m.update(*one_image([[3.0, 0, 1, 1]], [1.0], [0])),
     r"preds\[0\]\['boxes'\]: box 0 is \[3.0, 0.0, 1.0, 1.0\]; expected finite xyxy with x1 <= x2"),
    (lambda m: m.update(*one_image([[0.0, 0, 1, 1]], [1.0], [5])), r"preds\[0\]\['labels'\]: labels must be 0..4, got 5$"),
    (lambda m: m.update(*one_image([[0.0, 0, 1, 1]], [1.0, 0.5], [1])), r"preds\[0\]\['scores'\]: expected 1 finite scores"),
    (lambda m: m.update(*one_image([[0.0, 0, 1, 1]], [1.0], [1.0])), r"preds\[0\]\['labels'\]: expected 1 integer labels"),
    (lambda m: MeanAveragePrecision(num_classes=0), r"num_classes: must be a positive integer or None, got 0"),
])
def test_bad_input_is_one_line(update, message):
    with pytest.raises(ValueError, match=message) as info:
        update(MeanAveragePrecision(num_classes=5))
    assert "\n" not in str(info.value)


def _gloo_worker(rank: int, port: int, out: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        images = random_images(7)
        for split in (0, 13):  # 0: worker 0 saw no image at all
            metric = MeanAveragePrecision(num_classes=5)
            for pred, target in (images[:split] if rank == 0 else images[split:]):
                metric.update([pred], [target])
            out[rank, split] = {k: v.tolist() for k, v in metric.compute().items()}  # gathers every worker's states
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_two_real_gloo_workers_give_the_mAP_of_one():
    """torch.distributed with two processes, as under Ray Train: every worker's compute() is the pooled mAP."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_gloo_worker, args=(port, out), nprocs=2)
        results = dict(out)
    whole = ours(random_images(7), num_classes=5)
    assert len(results) == 4
    for result in results.values():
        assert result["map"] == pytest.approx(float(whole["map"]), abs=1e-12)
        assert result["ap_50_per_class"] == pytest.approx(whole["ap_50_per_class"].tolist(), abs=1e-12)
