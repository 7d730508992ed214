"""Digit canvases: exact boxes, digits disjoint across splits, determinism, ragged batches, bad sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dl_ray.data.detection import DigitCanvasesConfig, digit_canvases, draw_canvas, ink
from dl_ray.errors import SpecError
from dl_ray.spec import parse_spec

SMALL = dict(name="digit_canvases", train_canvases=60, eval_canvases=30)


@pytest.fixture(scope="module")
def bundle():
    return digit_canvases(DigitCanvasesConfig(**SMALL))


def test_boxes_hold_the_ink_exactly(bundle):
    pool = bundle.train.pool[:, 0].numpy()
    rng = np.random.default_rng(7)
    cfg = DigitCanvasesConfig(**SMALL)
    pool_labels = np.arange(len(pool)) % 10
    for _ in range(40):
        drawn = draw_canvas(rng, pool, pool_labels, cfg)
        assert 1 <= len(drawn.boxes) <= cfg.max_digits
        union = np.zeros_like(drawn.masks[0])
        for box, mask, label, digit in zip(drawn.boxes, drawn.masks, drawn.labels, drawn.digits):
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert box == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)  # tight: the ink touches all four sides
            assert label == pool_labels[digit]
            union |= mask
        assert (drawn.image[~union] == drawn.background[~union]).all()  # nothing drawn outside the ink
        assert (drawn.image[union] > drawn.background[union]).all()  # every ink pixel is drawn (white over darker)


def test_ink_drops_faint_pixels_and_scales_the_digit():
    digit = np.zeros((28, 28), np.float32)
    digit[4:24, 10:18] = 1.0  # ink 20 px tall, as MNIST's
    alpha = ink(digit, 56)
    rows = np.flatnonzero(alpha.any(1))
    assert 38 <= rows[-1] + 1 - rows[0] <= 42 and alpha[alpha > 0].min() >= 0.25


def test_stored_canvases_match_their_boxes(bundle):
    for images, boxes, labels in bundle.loader("val", 7):
        assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1
        for image, box, label in zip(images, boxes, labels):
            assert len(box) == len(label) >= 1 and box.shape[1] == 4
            for x1, y1, x2, y2 in box.long().tolist():
                inside = image[0, y1:y2, x1:x2]
                assert inside.max() > 0.9  # white ink inside every box (the background is at most 0.5)


def test_splits_use_disjoint_digit_images(bundle):
    def used(split):
        canvases = getattr(bundle, split)
        ids = torch.cat(canvases.digits).unique()
        return {canvases.pool[i].numpy().tobytes() for i in ids.tolist()}

    train, val, test = used("train"), used("val"), used("test")
    assert len(train) > 50 and len(val) > 20 and len(test) > 20
    assert not (train & val) and not (train & test) and not (val & test)


def test_fresh_training_canvases_each_epoch_from_the_training_digits_only(bundle):
    def boxes(epoch, rank=0, world=1):
        return [b for _, batch, _ in bundle.loader("train", 16, seed=0, epoch=epoch, rank=rank, world=world) for b in batch]

    key = lambda b: tuple(b.flatten().tolist())  # noqa: E731
    epoch2 = boxes(2)
    assert [key(b) for b in epoch2] == [key(b) for b in boxes(2)]  # a rerun (a resumed run) draws them again
    assert not {key(b) for b in epoch2} & {key(b) for b in boxes(3)}
    assert not {key(b) for b in epoch2} & {key(b) for b in bundle.train.boxes}
    halves = boxes(2, 0, 2) + boxes(2, 1, 2)  # two workers draw the same canvases as one, each its share
    assert sorted(map(key, halves)) == sorted(map(key, epoch2))
    fresh = bundle.redraw(torch.arange(40), epoch=1)
    assert torch.equal(fresh.pool, bundle.train.pool)
    val = {bundle.val.pool[i].numpy().tobytes() for i in torch.cat(bundle.val.digits).tolist()}
    assert not val & {fresh.pool[i].numpy().tobytes() for i in torch.cat(fresh.digits).tolist()}


def test_same_seed_same_canvases_other_seed_others(bundle):
    again = digit_canvases(DigitCanvasesConfig(**SMALL))
    assert torch.equal(again.train.images, bundle.train.images)
    assert all(torch.equal(a, b) for a, b in zip(again.test.boxes, bundle.test.boxes))
    other = digit_canvases(DigitCanvasesConfig(**SMALL, split_seed=1))
    assert not torch.equal(other.train.images, bundle.train.images)


def test_workers_share_out_every_canvas_once(bundle):
    seen = []
    for rank in range(2):
        for _, boxes, _ in bundle.loader("test", 8, rank=rank, world=2):
            seen += [tuple(b.flatten().tolist()) for b in boxes]
    assert sorted(seen) == sorted(tuple(b.flatten().tolist()) for b in bundle.test.boxes)
    epoch0 = [b for _, b, _ in bundle.loader("train", 16, seed=0, epoch=0)]
    epoch1 = [b for _, b, _ in bundle.loader("train", 16, seed=0, epoch=1)]
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(epoch0, epoch1))  # reshuffled each epoch


def job(**data):
    return {"name": "det", "kind": "detection", "model": {"name": "yolo"}, "data": {"name": "digit_canvases", **data}}


@pytest.mark.parametrize("data, field", [({"canvas": 40}, "data.canvas"), ({"max_digits": 0}, "data.max_digits"),
                                         ({"max_digits": 30, "canvas": 96}, "data.canvas"),
                                         ({"min_size": 30, "max_size": 20}, "data.max_size")])
def test_bad_canvas_settings_are_one_line(data, field):
    with pytest.raises(SpecError) as e:
        parse_spec(job(**data))
    assert str(e.value).startswith(field) and "\n" not in str(e.value)
