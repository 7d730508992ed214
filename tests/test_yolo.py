"""YOLO: target assignment, the course's loss, encode/decode, k-means anchors, bad inputs, and a short training."""
from __future__ import annotations

import json
import math

import pytest
import torch

from dl_ray.errors import SpecError
from dl_ray.models.base import ModelIO
from dl_ray.models.yolo import YOLO, YOLOConfig, kmeans_anchors, shape_iou
from dl_ray.spec import parse_spec
from tests.conftest import cli, write_job

ANCHORS = torch.tensor([[0.10, 0.30], [0.30, 0.30], [0.40, 0.15]])  # tall, square, wide (fractions of the canvas)


def model(grid: int = 12, **fields) -> YOLO:
    io = ModelIO((1, 96, 96), 10, "detection", {"box_wh": ANCHORS.repeat(4, 1)})
    yolo = YOLO(YOLOConfig(name="yolo", grid=grid, anchors=3, **fields), io)
    yolo.anchors.copy_(ANCHORS)  # k-means on those boxes gives them back, up to float rounding
    return yolo.eval()


def test_each_object_goes_to_its_centre_cell_and_best_shaped_anchor(one_torch_thread):
    yolo = model()
    boxes = [torch.tensor([[45.0, 6.0, 55.0, 34.0],  # centre (50, 20): cell row 2, column 6; 10x28 px: tall
                           [0.0, 80.0, 38.0, 94.0]]),  # centre (19, 87): row 10, column 2; 38x14: wide
             torch.tensor([[60.0, 60.0, 90.0, 88.0]])]  # centre (75, 74): row 9, column 9; 30x28: square
    target, obj = yolo.encode(boxes, [torch.tensor([3, 7]), torch.tensor([1])])
    assert obj.nonzero().tolist() == [[0, 2, 6, 0], [0, 10, 2, 2], [1, 9, 9, 1]]
    tall = target[0, 2, 6, 0]
    assert tall[:3].tolist() == pytest.approx([1.0, 50 / 8 - 6, 20 / 8 - 2], abs=1e-6)
    assert tall[3:5].tolist() == pytest.approx([math.log(28 / 96 / 0.30), math.log(10 / 96 / 0.10)], abs=1e-6)  # h, w
    assert tall[5:].argmax() == 3 and tall[5:].sum() == 1
    assert target[1, 9, 9, 1, 5:].argmax() == 1


def test_loss_is_zero_at_the_targets_and_weighs_errors_as_the_course_says(one_torch_thread):
    yolo = model(lambda_coord=5.0, lambda_noobj=0.5)
    boxes, labels = [torch.tensor([[10.0, 10.0, 30.0, 40.0]]), torch.zeros(0, 4)], [torch.tensor([4]), torch.zeros(0).long()]
    target, obj = yolo.encode(boxes, labels)
    assert yolo.loss(target, target, obj) == 0
    cases = [((0, 5, 5, 1, 0), 0.5, 0.5 * 0.25 / 2),  # Pc where no object is: lambda_noobj * e^2, per image (2)
             ((0, 5, 5, 1, 3), 0.5, 0.0),  # anything else where no object is: a don't-care
             ((*obj.nonzero()[0].tolist(), 1), 0.1, 5.0 * 0.01 / 2),  # x where the object is: lambda_coord * e^2
             ((*obj.nonzero()[0].tolist(), 7), 0.3, 0.09 / 2)]  # a class probability there: weight 1
    for index, delta, expected in cases:
        pred = target.clone()
        pred[index] += delta
        assert float(yolo.loss(pred, target, obj)) == pytest.approx(expected, rel=1e-5)


def test_encode_then_decode_gives_the_boxes_back(one_torch_thread):
    yolo = model()
    gen = torch.Generator().manual_seed(0)
    boxes, labels = [], []
    for _ in range(6):  # one box per cell row, so no two share a cell and anchor
        rows = torch.randperm(12, generator=gen)[:4]
        centre = torch.stack([torch.rand(4, generator=gen) * 96, (rows + torch.rand(4, generator=gen)) * 8], 1)
        wh = 8 + torch.rand(4, 2, generator=gen) * 30
        xyxy = torch.cat([centre - wh / 2, centre + wh / 2], 1)
        keep = (xyxy[:, :2] >= 0).all(1) & (xyxy[:, 2:] <= 96).all(1)
        boxes.append(xyxy[keep])
        labels.append(torch.randint(10, (int(keep.sum()),), generator=gen))
    target, obj = yolo.encode(boxes, labels)
    decoded, scores, classes = yolo.decode(target)
    for i, (b, c) in enumerate(zip(boxes, labels)):
        found = scores[i] > 0
        assert int(found.sum()) == len(b) and (scores[i][found] == 1).all()
        order = lambda t: t[t[:, 0].argsort()]  # noqa: E731
        torch.testing.assert_close(order(decoded[i][found]), order(b), atol=1e-4, rtol=0)
        assert sorted(classes[i][found].tolist()) == sorted(c.tolist())
    detected = yolo.detect(target)  # the course's inference keeps exactly the true boxes (scores 1 >= 0.6, no overlaps)
    assert [len(d["boxes"]) for d in detected] == [len(b) for b in boxes]


def test_kmeans_with_iou_distance_finds_the_box_shapes():
    gen = torch.Generator().manual_seed(1)
    shapes = torch.tensor([[0.05, 0.2], [0.2, 0.2], [0.4, 0.3]])
    wh = torch.cat([s * (1 + 0.05 * torch.randn(200, 2, generator=gen)) for s in shapes])
    anchors = kmeans_anchors(wh, 3)
    torch.testing.assert_close(anchors, shapes, atol=0.01, rtol=0)  # sorted by area, as the shapes are
    assert shape_iou(shapes, anchors).diagonal().min() > 0.95


def test_shape_iou_of_centred_boxes():
    iou = shape_iou(torch.tensor([[2.0, 4.0]]), torch.tensor([[4.0, 2.0], [2.0, 4.0], [1.0, 1.0]]))
    assert iou[0].tolist() == pytest.approx([4 / 12, 1.0, 1 / 8])


def job(**model_fields):
    return {"name": "det", "kind": "detection", "model": {"name": "yolo", **model_fields}, "data": {"name": "digit_canvases"}}


@pytest.mark.parametrize("fields, name", [({"grid": 0}, "model.grid"), ({"anchors": 0}, "model.anchors"),
                                          ({"score_threshold": 1.5}, "model.score_threshold"),
                                          ({"iou_threshold": -0.1}, "model.iou_threshold")])
def test_bad_grid_anchors_thresholds_are_one_line(fields, name):
    with pytest.raises(SpecError) as e:
        parse_spec(job(**fields))
    assert str(e.value).startswith(name) and "\n" not in str(e.value)


def test_bad_input_exits_2_and_writes_nothing(tmp_path):
    path = write_job(tmp_path, "det", kind="detection", model={"name": "yolo", "grid": 13},
                     data={"name": "digit_canvases", "train_canvases": 20, "eval_canvases": 10})
    code, out, err = cli("train", str(path))
    assert code == 2 and err.strip().count("\n") == 0 and "model.grid" in err and "allowed: 1..12" in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_short_training_detects_digits_and_eval_reports_ap_per_class(tmp_path):
    path = write_job(tmp_path, "yolo_small", kind="detection",
                     model={"name": "yolo", "width": 16, "blocks": [1, 1, 1], "grid": 8, "anchors": 3},
                     data={"name": "digit_canvases", "canvas": 64, "min_size": 16, "max_size": 28, "max_digits": 3,
                           "train_canvases": 1500, "eval_canvases": 200},
                     optimizer={"name": "adam", "lr": 0.003}, schedule={"name": "cosine"},
                     regularization={"early_stopping": {"patience": 8, "metric": "val/map_50"}},
                     training={"epochs": 5, "batch_size": 32, "seed": 0})  # test mAP@0.5 0.71
    code, out, err = cli("train", str(path))
    assert code == 0, err
    run = tmp_path / "runs" / "yolo_small"
    final = json.loads((run / "summary.json").read_text())["final"]
    assert final["test/map_50"] >= 0.6, final
    assert 0 < final["test/map"] < final["test/map_50"]
    assert (run / "examples.png").stat().st_size > 10_000 and (run / "detections.png").is_file()
    code, out, err = cli("eval", str(run))
    assert code == 0, err
    report = json.loads((run / "eval_test.json").read_text())
    assert report["metrics"]["test/map_50"] == pytest.approx(final["test/map_50"], abs=1e-6)
    assert [row["class"] for row in report["per_class"]] == [str(c) for c in range(10)]
    assert "average precision per class" in out and "AP@0.5" in out
