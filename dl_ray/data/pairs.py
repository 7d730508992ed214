"""Data for Siamese networks: P x K batches drawn anew each epoch, the one-shot digit split, and real face /
character folders (LFW, Omniglot) for users who have them.

* :class:`ClassBatches` deals each training epoch as groups of K images of one class (every image once, in a
  random order set by (seed, epoch)), P groups a batch, so every anchor has K - 1 positives and the miners find
  hard triplets and pairs inside the batch. Worker ``rank`` of ``world`` takes every world-th batch; all take the
  same number of steps.
* ``mnist5k_oneshot``: MNIST-5k split as ``mnist5k`` is, with training and validation keeping only
  ``train_classes`` (digits 0-6 by default): the other digits are never seen, and the test split keeps every
  digit, so one-shot recognition of the unseen ones measures what the embedding learnt about digits in general.
* ``omniglot``: the background / evaluation folders of Omniglot (``<alphabet>/<character>/<image>.png``): train
  and validation from background characters, test from the evaluation alphabets (new characters).
* :func:`read_lfw_pairs`: the pairs of LFW's ``pairs.txt`` (the verification protocol) from its image folders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, field_validator
from torch.utils.data import TensorDataset

from dl_ray.data import Batches, DataBundle, DataConfig, _augmenter, _then
from dl_ray.data.images import Mnist5kConfig, mnist5k
from dl_ray.errors import SpecError
from dl_ray.registry import register_dataset


def class_batches(labels: torch.Tensor, batch_size: int, per_class: int, seed: int, rank: int = 0,
                  world: int = 1) -> torch.Tensor:
    """This worker's batches of an epoch as rows of indices (steps x batch_size): groups of ``per_class`` images of
    one class (a class's last group borrows from its first), ``batch_size // per_class`` groups a batch, enough steps
    to deal every group once (groups are repeated from the start to fill the last batches)."""
    g = torch.Generator().manual_seed(seed)
    groups = []
    for c in labels.unique():
        members = torch.nonzero(labels == c).squeeze(1)
        members = members[torch.randperm(len(members), generator=g)]
        cut = math.ceil(len(members) / per_class) * per_class
        members = members.repeat(math.ceil(cut / len(members)))[:cut]  # the last group borrows from the start
        groups.append(members.view(-1, per_class))
    groups = torch.cat(groups)[torch.randperm(sum(len(x) for x in groups), generator=g)]
    per_batch = max(batch_size // per_class, 1)
    steps = math.ceil(len(groups) / (per_batch * world))  # every group at least once
    needed = steps * world * per_batch
    groups = groups.repeat(math.ceil(needed / len(groups)), 1)[:needed]
    return groups.view(steps, world, per_batch * per_class)[:, rank]


@dataclass
class ClassBatches(DataBundle):
    """A bundle whose training batches are P x K class groups (:func:`class_batches`); evaluation as usual."""

    per_class: int = 4

    def loader(self, split: str, batch_size: int, *, epoch: int = 0, rank: int = 0, world: int = 1,
               seed: int | None = None, augment=None) -> Batches:
        if split != "train" or seed is None:
            return super().loader(split, batch_size, epoch=epoch, rank=rank, world=world, seed=seed, augment=augment)
        tensors = self.train.tensors
        rows = class_batches(tensors[-1], batch_size, self.per_class, seed * 100_003 + epoch, rank, world)
        augmenter = _augmenter(augment) if augment is not None and augment.enabled else None
        return Batches(tensors, rows.flatten(), rows.shape[1], _then(self.batch_transform, augmenter))


class MetricDataConfig(DataConfig):
    per_class: int = Field(4, ge=2)
    """K: images of one class in a group of a training batch (a batch holds batch_size // K classes' groups)."""


class OneShotDigitsConfig(Mnist5kConfig, MetricDataConfig):
    train_classes: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    """Digits that training and validation keep; the others appear only in the test split (unseen classes)."""

    @field_validator("train_classes")
    @classmethod
    def _digits(cls, classes: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(classes)) < 2 or not set(classes) <= set(range(10)):
            raise ValueError("give at least two distinct digits among 0-9")
        return tuple(sorted(set(classes)))


@register_dataset("mnist5k_oneshot", OneShotDigitsConfig)
def mnist5k_oneshot(cfg: OneShotDigitsConfig) -> ClassBatches:
    """MNIST-5k with training and validation on ``train_classes`` only (0-6); test: every digit."""
    full = mnist5k(cfg)
    keep = torch.tensor(cfg.train_classes)
    seen = lambda part: TensorDataset(*(t[torch.isin(part.tensors[1], keep)] for t in part.tensors))  # noqa: E731
    meta = full.meta | {"train_classes": list(cfg.train_classes)}
    return ClassBatches(seen(full.train), seen(full.val), full.test, full.task, full.input_shape, full.num_outputs,
                        meta, full.batch_transform, per_class=cfg.per_class)


# ---------------------------------------------------------------- folders of real images


def read_image(path: Path, size: int, invert: bool = False) -> np.ndarray:
    """A grayscale image as floats in [0, 1], resized to size x size; one line naming the file if it is not one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise SpecError(f"data.path: {path} is not an image ({e.__class__.__name__})") from None
    return 1.0 - pixels if invert else pixels


def class_folders(root: Path, depth: int, size: int, invert: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images N x 1 x size x size, class ids, class names) of a tree whose folders ``depth`` levels down are the
    classes (LFW: person/; Omniglot: alphabet/character/)."""
    if not root.is_dir():
        raise SpecError(f"data.path: no such folder: {root}")
    classes = sorted(p for p in root.glob("/".join(["*"] * depth)) if p.is_dir())
    images, labels = [], []
    for c, folder in enumerate(classes):
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
            images.append(read_image(path, size, invert))
            labels.append(c)
    if not images:
        raise SpecError(f"data.path: no .png/.jpg images in class folders {depth} level(s) under {root}")
    names = [str(p.relative_to(root)) for p in classes]
    return np.stack(images)[:, None], np.asarray(labels, dtype=np.int64), names


class OmniglotConfig(MetricDataConfig):
    path: Path
    """Folder holding Omniglot's images_background/ and images_evaluation/ (each <alphabet>/<character>/*.png)."""
    size: int = Field(28, ge=12)
    """Images are resized to size x size (105 x 105 on disk) and inverted: strokes 1, paper 0. The test split is
    the evaluation folder (``test_fraction`` is not used)."""


@register_dataset("omniglot", OmniglotConfig)
def omniglot(cfg: OmniglotConfig) -> ClassBatches:
    """Omniglot: background characters for training and validation, the evaluation alphabets (new) for test."""
    x, y, names = class_folders(Path(cfg.path) / "images_background", 2, cfg.size, invert=True)
    xt, yt, test_names = class_folders(Path(cfg.path) / "images_evaluation", 2, cfg.size, invert=True)
    order = np.random.default_rng(cfg.split_seed).permutation(len(x))[: cfg.limit]
    n_val = int(len(order) * cfg.val_fraction)
    rows = lambda a, b: TensorDataset(torch.from_numpy(a), torch.from_numpy(b))  # noqa: E731
    train, val = rows(x[order[n_val:]], y[order[n_val:]]), rows(x[order[:n_val]], y[order[:n_val]])
    test = rows(xt, yt + len(names))  # the evaluation characters are new classes
    return ClassBatches(train, val, test, "multiclass", tuple(x.shape[1:]), len(names) + len(test_names),
                        {"pixels": "unit", "classes": names + test_names}, per_class=cfg.per_class)


@dataclass
class VerificationPairs:
    """Image pairs and whether each shows the same person (LFW's protocol), with each pair's fold."""

    x1: torch.Tensor
    x2: torch.Tensor
    same: torch.Tensor
    fold: torch.Tensor


def read_lfw_pairs(pairs_file: str | Path, images: str | Path, size: int = 64) -> VerificationPairs:
    """LFW's ``pairs.txt``: a header "folds pairs_per_fold" (or one count), then per line ``name i j`` (same
    person) or ``name1 i name2 j`` (two people); image i of a person is ``images/name/name_000i.jpg``."""
    pairs_file, images = Path(pairs_file), Path(images)
    if not pairs_file.is_file():
        raise SpecError(f"pairs: no such file: {pairs_file}")
    lines = [line.split() for line in pairs_file.read_text().splitlines() if line.strip()]
    header, rows = lines[0], lines[1:]
    per_fold = int(header[-1]) * (2 if len(header) == 2 else 1)  # each fold holds that many matched and mismatched
    path = lambda name, i: images / name / f"{name}_{int(i):04d}.jpg"  # noqa: E731
    x1, x2, same = [], [], []
    for n, row in enumerate(rows, 2):
        if len(row) == 3:
            a, b = path(row[0], row[1]), path(row[0], row[2])
        elif len(row) == 4:
            a, b = path(row[0], row[1]), path(row[2], row[3])
        else:
            raise SpecError(f"pairs: {pairs_file} line {n}: expected 'name i j' or 'name1 i name2 j', got {' '.join(row)!r}")
        for p in (a, b):
            if not p.is_file():
                raise SpecError(f"pairs: {pairs_file} line {n}: no such image: {p}")
        x1.append(read_image(a, size))
        x2.append(read_image(b, size))
        same.append(len(row) == 3)
    t = lambda arrays: torch.from_numpy(np.stack(arrays)[:, None])  # noqa: E731
    return VerificationPairs(t(x1), t(x2), torch.tensor(same), torch.arange(len(rows)) // per_fold)
