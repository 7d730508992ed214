"""Datasets: each is a registered builder returning a :class:`DataBundle`.

Everything here is small enough to live in memory as tensors, so every Ray
worker builds its own copy from the same seed and gets the same split.
The loop asks a bundle for batches with :meth:`DataBundle.loader` (split, epoch,
rank, world size): a family whose batches are not rows of tensors (pairs made
anew each epoch, ragged targets) subclasses the bundle and yields its own.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import TensorDataset

Task = Literal["regression", "binary", "multiclass"]  # families may add their own (e.g. "seq2seq")


class DataConfig(BaseModel):
    """Fields every dataset accepts under ``data:``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    name: str
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    """Share of the examples held out for validation (early stopping, curves)."""
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    """Share of the examples held out for the final test report."""
    split_seed: int = 0
    """Seed of the train/val/test permutation: fixed so every worker and rerun agree."""
    limit: int | None = Field(None, gt=10)
    """Use only the first N examples after shuffling (tiny smoke runs)."""


@dataclass
class DataBundle:
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    task: str
    input_shape: tuple[int, ...]
    num_outputs: int
    """Classes for multiclass, 1 for binary and regression."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Family-specific facts the model needs (vocabularies, lengths, ...)."""
    batch_transform: Callable[[tuple], tuple] | None = None
    """Applied to every batch of every split (before augmentation): e.g. uint8 images to normalised floats,
    so that a worker holds bytes, not float32 copies."""

    @property
    def io(self):
        from dl_ray.models.base import ModelIO

        return ModelIO(self.input_shape, self.num_outputs, self.task, self.meta)

    def example_batch(self, n: int = 4) -> tuple[torch.Tensor, ...]:
        batch = tuple(t[:n] for t in self.train.tensors)
        return self.batch_transform(batch) if self.batch_transform else batch

    def loader(self, split: str, batch_size: int, *, epoch: int = 0, rank: int = 0, world: int = 1,
               seed: int | None = None, augment: Any = None) -> "Batches":
        """This worker's batches of ``split`` (train, val, test).

        With ``seed`` (training), the split is shuffled by (seed, epoch) identically on every worker, padded to a
        multiple of ``world`` and dealt out ``rank::world`` like a ``DistributedSampler``: every worker takes
        the same number of steps, and a resumed run draws the same batches. Without it (evaluation), each
        worker takes every world-th example, unpadded, so every example counts once.
        ``augment`` (an :class:`~dl_ray.spec.AugmentSpec`) shifts and rotates training images."""
        tensors = getattr(self, split).tensors
        n = len(tensors[0])
        if seed is None:
            index = torch.arange(rank, n, world)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            padded = torch.cat([order, order[: (-n) % world]])
            index = padded[rank::world]
        augmenter = _augmenter(augment) if augment is not None and augment.enabled else None
        return Batches(tensors, index, batch_size, _then(self.batch_transform, augmenter))


class Batches:
    """Batches of rows ``index`` of ``tensors``, gathered a whole batch at a time (no per-sample collate)."""

    def __init__(self, tensors, index: torch.Tensor, batch_size: int, transform=None):
        self.tensors, self.index, self.batch_size, self.transform = tensors, index, batch_size, transform

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch_size)

    def __iter__(self):
        for chunk in self.index.split(self.batch_size):
            batch = tuple(t[chunk] for t in self.tensors)
            yield self.transform(batch) if self.transform else batch


def _then(first, second):
    """The transform ``second(first(batch))``, where either may be None (skipped)."""
    if first is None or second is None:
        return first or second
    return lambda batch: second(first(batch))


def _augmenter(augment):
    from dl_ray.data.augment import shift_rotate

    def transform(batch):
        return (shift_rotate(batch[0], augment.max_shift, augment.max_rotation), *batch[1:])

    return transform


def split(x: np.ndarray, y: np.ndarray, cfg: DataConfig, task: Task, standardize: bool) -> DataBundle:
    """Shuffle by ``cfg.split_seed``, cut into train/val/test, standardise by train statistics."""
    if not np.isfinite(x).all():
        raise ValueError(f"data ({cfg.name}): {int((~np.isfinite(x)).sum())} missing or infinite feature values")
    if len(x) != len(y) or len(x) < 10:
        raise ValueError(f"data ({cfg.name}): need >= 10 examples with one target each, got {len(x)} x {len(y)}")
    order = np.random.default_rng(cfg.split_seed).permutation(len(x))
    if cfg.limit:
        order = order[: cfg.limit]
    x, y = x[order].astype(np.float32), y[order]
    n_val, n_test = int(len(x) * cfg.val_fraction), int(len(x) * cfg.test_fraction)
    n_train = len(x) - n_val - n_test
    if standardize:
        axes = tuple(range(x.ndim)) if x.ndim > 2 else 0  # images: one scalar mean/std
        mean, std = x[:n_train].mean(axis=axes), x[:n_train].std(axis=axes) + 1e-6
        x = (x - mean) / std
    if task == "regression":
        y = y.astype(np.float32)
        y = (y - y[:n_train].mean()) / y[:n_train].std()
        y_t = torch.from_numpy(y)
    elif task == "binary":
        y_t = torch.from_numpy(y.astype(np.float32))
    else:
        y_t = torch.from_numpy(y.astype(np.int64))
    x_t = torch.from_numpy(np.ascontiguousarray(x))
    cuts = [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, len(x))]
    parts = [TensorDataset(x_t[a:b], y_t[a:b]) for a, b in cuts]
    num_outputs = int(y_t.max()) + 1 if task == "multiclass" else 1
    return DataBundle(*parts, task=task, input_shape=tuple(x_t.shape[1:]), num_outputs=num_outputs)


def build_data(cfg: DataConfig) -> DataBundle:
    """Build (once per process: the driver's check and a local-mode run share it) the dataset."""
    return _build(type(cfg), cfg.model_dump_json())


@functools.lru_cache(maxsize=32)  # one per dataset variant a process uses: a test session builds each once
def _build(config: type[DataConfig], json: str) -> DataBundle:
    from dl_ray.registry import DATASETS

    cfg = config.model_validate_json(json)
    return DATASETS[cfg.name].build(cfg)


from dl_ray.data import dates, distributions, images, tabular  # noqa: E402,F401  (register the datasets)
from dl_ray.data import cifar  # noqa: E402,F401  (CIFAR-10 from its python batch files)
from dl_ray.data import detection  # noqa: E402,F401  (digit canvases: ragged detection targets)
from dl_ray.data import text  # noqa: E402,F401  (language-model token streams: wiki_chars, wiki_words)
from dl_ray.data import pairs  # noqa: E402,F401  (P x K class batches: Siamese networks, one-shot digits)
from dl_ray.data import reviews  # noqa: E402,F401  (sentiment: Rotten Tomatoes sentences, 1-5 star review CSVs)
from dl_ray.data import skipgram  # noqa: E402,F401  (word vectors: windows per epoch, co-occurrence counts)
