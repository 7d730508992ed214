"""Datasets: each is a registered builder returning a :class:`DataBundle`.

Everything here is small enough to live in memory as tensors, so every Ray
worker builds its own copy from the same seed and gets the same split.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

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

    @property
    def io(self):
        from dl_ray.models.base import ModelIO

        return ModelIO(self.input_shape, self.num_outputs, self.task, self.meta)

    def example_batch(self, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train.tensors[0][:n], self.train.tensors[1][:n]


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


@functools.lru_cache(maxsize=4)
def _build(config: type[DataConfig], json: str) -> DataBundle:
    from dl_ray.registry import DATASETS

    cfg = config.model_validate_json(json)
    return DATASETS[cfg.name].build(cfg)


from dl_ray.data import dates, images, tabular  # noqa: E402,F401  (register the datasets)
