"""Digit canvases: an object-detection set made of real handwritten digits on real textures and photos.

Each canvas (``canvas`` x ``canvas`` pixels, grayscale) is a random crop of a scikit-image texture or photo
(brick, grass, gravel, the cameraman, ...), dimmed to ``[0, background]``, with 1 to ``max_digits`` MNIST-5k
digits pasted as white ink at random sizes (``min_size``..``max_size`` pixels for the 28x28 digit image) and
positions. A digit's *ink* is where its resized image is at least ``INK`` (fainter anti-aliasing is dropped),
so its box is exact: the tightest box around those pixels, ``[x1, y1, x2, y2)`` in pixels (x2, y2 exclusive:
a box of one pixel is ``[x, y, x + 1, y + 1]``). Digits whose ink boxes would overlap by more than
``max_overlap`` IoU are moved (a few tries) or left out, so a canvas may hold fewer digits than drawn.

The MNIST-5k digits are split into train / val / test pools first (``val_fraction``, ``test_fraction``,
``split_seed``, as for classification), and each split's canvases use only its own pool: no digit image is
seen in two splits. Everything follows from ``split_seed``. Canvases are kept as uint8 (a worker holds
4,000 96x96 canvases in 37 MB) and scaled to [0, 1] batch by batch.

Targets are ragged (each canvas has its own number of boxes), so the bundle deals out canvas ids exactly as
:meth:`DataBundle.loader` deals rows, and yields ``(images, boxes, labels)`` batches: ``images`` (n, 1, H, W)
float in [0, 1], ``boxes`` a list of (k_i, 4) float tensors, ``labels`` a list of (k_i,) int64 tensors.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator

from dl_ray.data import DataBundle, DataConfig
from dl_ray.data.images import Mnist5kConfig, mnist5k
from dl_ray.registry import register_dataset

INK = 0.25
"""A resized digit pixel at least this bright (of 1) is ink; fainter anti-aliasing around it is dropped."""
BACKGROUNDS = ("brick", "grass", "gravel", "camera", "moon", "coins", "cell", "clock", "astronaut", "coffee",
               "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
"""scikit-image's bundled textures and photos (no download); colour ones are turned to grayscale."""


class DigitCanvasesConfig(DataConfig):
    train_canvases: int = Field(4000, ge=1)
    """Training canvases (drawn from the training digits)."""
    eval_canvases: int = Field(500, ge=1)
    """Validation canvases, and as many test canvases (each from its own digits)."""
    min_digits: int = Field(1, ge=1)
    """Fewest digits drawn per canvas."""
    max_digits: int = Field(5, ge=1)
    """Most digits drawn per canvas (>= min_digits)."""
    min_size: int = Field(14, ge=4)
    """Smallest digit height in pixels (MNIST's ink is 20 px tall in its 28 px image, which is resized by size / 20)."""
    max_size: int = Field(48, ge=4)
    """Largest digit height in pixels (>= min_size)."""
    canvas: int = Field(96, ge=16)
    """Side of the square canvases in pixels; must hold one ``max_size`` digit and ``max_digits`` of ``min_size``."""
    max_overlap: float = Field(0.1, ge=0, le=1)
    """Largest IoU allowed between two digits' ink boxes on one canvas."""
    background: float = Field(0.5, ge=0, le=1)
    """Brightness of the background crops: they span [0, background]; the ink is white (1)."""
    fresh_train: bool = True
    """Train on ``train_canvases`` new canvases every epoch (the same training digits, drawn anew): no canvas is
    seen twice, so the detector cannot memorise them. The fixed training canvases still give the anchors and the
    train-split evaluation."""

    @field_validator("max_digits", "max_size")
    @classmethod
    def _at_least_the_min(cls, value: int, info: ValidationInfo) -> int:
        least = info.data.get(info.field_name.replace("max", "min"))
        if least is not None and value < least:
            raise ValueError(f"must be >= {info.field_name.replace('max', 'min')} ({least})")
        return value

    @field_validator("canvas")
    @classmethod
    def _digits_fit(cls, value: int, info: ValidationInfo) -> int:
        sizes = [info.data.get(k) for k in ("min_size", "max_size", "max_digits")]
        if None in sizes:
            return value  # an earlier field is already wrong
        small, large, count = sizes
        need = max(patch_side(large), patch_side(small) * int(np.ceil(np.sqrt(count))))
        if value < need:
            raise ValueError(f"too small for digits of up to {large} px and {count} digits of "
                             f"{small} px side by side; allowed: canvas >= {need}")
        return value


def patch_side(height: int) -> int:
    """Side of the resized 28x28 MNIST image whose ink (20 px tall in MNIST) is ``height`` pixels tall."""
    return int(np.ceil(height * 28 / 20))


@dataclass
class Canvases:
    """One split's canvases: uint8 images, exact boxes and classes, and which pool digits each one shows."""

    images: torch.Tensor
    """(N, 1, H, W) uint8."""
    boxes: list[torch.Tensor]
    """Per canvas, (k, 4) float32 ``[x1, y1, x2, y2)`` in pixels."""
    labels: list[torch.Tensor]
    """Per canvas, (k,) int64 digit classes."""
    digits: list[torch.Tensor]
    """Per canvas, (k,) indices into this split's digit pool (``pool``)."""
    pool: torch.Tensor
    """(P, 1, 28, 28) the split's MNIST digits in [0, 1]."""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def tensors(self) -> tuple[torch.Tensor]:
        """The images: the split's rows, as :meth:`DataBundle.loader` and generic code see a split."""
        return (self.images,)

    def batch(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """``(images in [0, 1], boxes, labels)`` of these canvases."""
        idx = ids.tolist()
        return self.images[ids].float() / 255, [self.boxes[i] for i in idx], [self.labels[i] for i in idx]


class CanvasBatches:
    """Batches of canvas ids (chunks of the rows the base loader deals out) turned into image / box / label
    batches: the stored canvases of those ids, or with ``redraw`` canvases drawn anew for them."""

    def __init__(self, chunks: tuple[torch.Tensor, ...], canvases: Canvases,
                 redraw: Callable[[torch.Tensor], Canvases] | None = None):
        self.chunks, self.canvases, self.redraw = list(chunks), canvases, redraw

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self):
        if self.redraw is None:
            for chunk in self.chunks:
                yield self.canvases.batch(chunk)
            return
        chunks = self.chunks
        with ThreadPoolExecutor(1) as drawer:  # draws the next batch while the model trains on this one
            ahead = drawer.submit(self.redraw, chunks[0]) if chunks else None
            for following in chunks[1:] + [None]:
                drawn = ahead.result()
                ahead = drawer.submit(self.redraw, following) if following is not None else None
                yield drawn.batch(torch.arange(len(drawn)))


@dataclass
class DetectionBundle(DataBundle):
    """A bundle whose splits are :class:`Canvases`: ragged targets, so it yields its own batches."""

    redraw: Callable[[torch.Tensor, int], Canvases] | None = None
    """``redraw(ids, epoch)``: that epoch's fresh training canvases of these ids (``fresh_train``), else None."""

    def loader(self, split: str, batch_size: int, *, epoch: int = 0, rank: int = 0, world: int = 1,
               seed: int | None = None, augment=None) -> CanvasBatches:
        if augment is not None and augment.enabled:  # a shifted or rotated canvas would no longer match its boxes
            raise ValueError("regularization.augment: detection canvases take no augmentation; allowed: max_shift 0, max_rotation 0")
        rows = super().loader(split, batch_size, epoch=epoch, rank=rank, world=world, seed=seed)  # this worker's share
        fresh = split == "train" and seed is not None and self.redraw is not None
        return CanvasBatches(rows.index.split(batch_size), getattr(self, split),
                             functools.partial(self.redraw, epoch=epoch) if fresh else None)

    def example_batch(self, n: int = 4):
        return self.train.batch(torch.arange(min(n, len(self.train))))


@functools.lru_cache(maxsize=1)
def backgrounds() -> tuple[np.ndarray, ...]:
    """The background images as float32 grayscale in [0, 1]."""
    import skimage.data
    from skimage.color import rgb2gray

    images = []
    for name in BACKGROUNDS:
        img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        img = rgb2gray(img[..., :3]) if img.ndim == 3 else img / 255.0
        images.append(img.astype(np.float32))
    return tuple(images)


def background_crop(rng: np.random.Generator, side: int, brightness: float) -> np.ndarray:
    """A random square crop (between ``side`` and the image's shorter side) of a random background, resized to
    ``side``, randomly flipped, stretched to span [0, ``brightness``]."""
    import cv2

    img = backgrounds()[rng.integers(len(BACKGROUNDS))]
    h, w = img.shape
    crop = int(rng.integers(min(side, h, w), min(h, w) + 1))
    top, left = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
    out = cv2.resize(img[top: top + crop, left: left + crop], (side, side), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6) * brightness


def ink(digit: np.ndarray, size: int) -> np.ndarray:
    """A 28x28 digit in [0, 1] resized to ``size`` x ``size``, pixels below ``INK`` set to 0 (the alpha of its ink)."""
    import cv2

    method = cv2.INTER_AREA if size < digit.shape[0] else cv2.INTER_LINEAR
    alpha = np.clip(cv2.resize(digit, (size, size), interpolation=method), 0, 1)
    return np.where(alpha >= INK, alpha, 0).astype(np.float32)


def ink_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """``(x1, y1, x2, y2)``, exclusive ends, of the non-zero pixels of ``alpha``."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@dataclass
class Drawn:
    """One canvas as drawn: the image, its background, and each digit's box, class, pool index and ink mask."""

    image: np.ndarray
    background: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    labels: list[int]
    digits: list[int]
    masks: list[np.ndarray]
    """Per digit, a canvas-sized bool array of its ink."""


def draw_canvas(rng: np.random.Generator, pool: np.ndarray, pool_labels: np.ndarray, cfg: DigitCanvasesConfig) -> Drawn:
    """One canvas: a background crop and up to ``max_digits`` pool digits, their boxes exact."""
    side = cfg.canvas
    bg = background_crop(rng, side, cfg.background)
    image, out = bg.copy(), Drawn(bg, bg, [], [], [], [])
    for _ in range(int(rng.integers(cfg.min_digits, cfg.max_digits + 1))):
        j, size = int(rng.integers(len(pool))), patch_side(int(rng.integers(cfg.min_size, cfg.max_size + 1)))
        alpha = ink(pool[j], size)
        if not alpha.any():
            continue
        x1, y1, x2, y2 = ink_box(alpha)
        for _try in range(20):
            top, left = int(rng.integers(side - size + 1)), int(rng.integers(side - size + 1))
            box = (left + x1, top + y1, left + x2, top + y2)
            if all(_iou(box, other) <= cfg.max_overlap for other in out.boxes):
                break
        else:
            continue  # no room left for this digit
        region = image[top: top + size, left: left + size]
        image[top: top + size, left: left + size] = region * (1 - alpha) + alpha  # white ink over the background
        mask = np.zeros((side, side), dtype=bool)
        mask[top: top + size, left: left + size] = alpha > 0
        out.boxes.append(box), out.labels.append(int(pool_labels[j])), out.digits.append(j), out.masks.append(mask)
    out.image = image
    return out


def make_canvases(seeds: list[list[int]], pool: torch.Tensor, pool_labels: torch.Tensor,
                  cfg: DigitCanvasesConfig) -> Canvases:
    """One canvas per seed (its own random stream: a canvas does not depend on how many are drawn, nor on which
    worker draws it), drawing digits from ``pool`` only."""
    digits, labels_np = pool[:, 0].numpy(), pool_labels.numpy()
    images = torch.empty(len(seeds), 1, cfg.canvas, cfg.canvas, dtype=torch.uint8)
    boxes, labels, used = [], [], []
    for i, seed in enumerate(seeds):
        drawn = draw_canvas(np.random.default_rng(seed), digits, labels_np, cfg)
        images[i, 0] = torch.from_numpy(np.rint(drawn.image * 255).astype(np.uint8))
        boxes.append(torch.tensor(drawn.boxes, dtype=torch.float32).reshape(-1, 4))
        labels.append(torch.tensor(drawn.labels, dtype=torch.int64))
        used.append(torch.tensor(drawn.digits, dtype=torch.int64))
    return Canvases(images, boxes, labels, used, pool)


def draw_boxes(images: torch.Tensor, boxes: list[list[tuple[torch.Tensor, tuple[float, float, float]]]]) -> torch.Tensor:
    """RGB copies (N, 3, H, W) of grayscale ``images`` in [0, 1] with, per image, each ``(boxes (k, 4), colour)``
    outlined one pixel wide (so :func:`dl_ray.plots.image_grid` shows them without a plotting layer per box)."""
    rgb = images.expand(-1, 3, -1, -1).clone()
    h, w = rgb.shape[-2:]
    for img, sets in zip(rgb, boxes):
        for box_set, colour in sets:
            c = torch.tensor(colour).view(3, 1)
            for x1, y1, x2, y2 in box_set.round().long().tolist():
                x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(max(x2 - 1, x1), w - 1), min(max(y2 - 1, y1), h - 1)
                img[:, y1, x1: x2 + 1] = img[:, y2, x1: x2 + 1] = c
                img[:, y1: y2 + 1, x1] = img[:, y1: y2 + 1, x2] = c
    return rgb


def draw_examples(canvases: Canvases, path: Path, n: int = 24) -> Path:
    """A PNG of the first ``n`` canvases with their true boxes, each captioned with its digits left to right."""
    from dl_ray.plots import image_grid

    n = min(n, len(canvases))
    images, boxes, labels = canvases.batch(torch.arange(n))
    captions = [" ".join(str(int(c)) for c in lab[b[:, 0].argsort()]) for b, lab in zip(boxes, labels)]
    return image_grid(draw_boxes(images, [[(b, (0.1, 0.9, 0.1))] for b in boxes]), path, nrow=8, labels=captions,
                      title="digit canvases and their true boxes (captions: the digits, left to right)")


@register_dataset("digit_canvases", DigitCanvasesConfig)
def digit_canvases(cfg: DigitCanvasesConfig) -> DetectionBundle:
    """Detection: 1-5 MNIST-5k digits at 14-48 px on scikit-image textures/photos; exact boxes; disjoint digits per split."""
    digits = mnist5k(Mnist5kConfig(name="mnist5k", pixels="unit", val_fraction=cfg.val_fraction,
                                   test_fraction=cfg.test_fraction, split_seed=cfg.split_seed))
    counts = {"train": cfg.train_canvases, "val": cfg.eval_canvases, "test": cfg.eval_canvases}
    splits = {}
    for i, (name, n) in enumerate(counts.items()):
        seeds = [[cfg.split_seed, i, 0, c] for c in range(min(n, cfg.limit or n))]
        splits[name] = make_canvases(seeds, *getattr(digits, name).tensors, cfg)
    train_boxes = torch.cat(splits["train"].boxes)
    meta = {"canvas": cfg.canvas, "box_wh": (train_boxes[:, 2:] - train_boxes[:, :2]) / cfg.canvas,
            "classes": [str(c) for c in range(10)]}
    redraw = functools.partial(_redraw, digits.train.tensors, cfg) if cfg.fresh_train else None
    return DetectionBundle(splits["train"], splits["val"], splits["test"], task="detection",
                           input_shape=(1, cfg.canvas, cfg.canvas), num_outputs=10, meta=meta, redraw=redraw)


def _redraw(pool: tuple[torch.Tensor, torch.Tensor], cfg: DigitCanvasesConfig, ids: torch.Tensor, epoch: int) -> Canvases:
    """Epoch ``epoch``'s training canvases ``ids``: new ones from the training digits, the same on every worker."""
    return make_canvases([[cfg.split_seed, 0, epoch + 1, c] for c in ids.tolist()], *pool, cfg)
