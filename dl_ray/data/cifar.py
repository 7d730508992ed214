"""CIFAR-10 from its official python batch files: 60,000 32x32 colour images of 10 classes.

The files (``data_batch_1`` .. ``data_batch_5``, ``test_batch``) are pickled dicts holding ``b"data"``, an
N x 3072 uint8 array (the red, then green, then blue 32x32 plane of each image), and ``b"labels"``. They are
read from ``data.path`` (their folder or ``cifar-10-python.tar.gz``), or downloaded once into ``data.cache``.
Images stay uint8 in every worker's memory (150 MB for the training set; float32 would be 600 MB) and are
normalised per channel, by the training split's mean and std, one batch at a time in the loader.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator
from torch.utils.data import TensorDataset

from dl_ray.data import DataBundle, DataConfig
from dl_ray.registry import register_dataset

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class Cifar10Config(DataConfig):
    path: Path | None = None
    """Folder holding data_batch_1..5 and test_batch (or its cifar-10-batches-py folder), or
    cifar-10-python.tar.gz; default: downloaded from the official site into ``cache`` on first use."""
    cache: Path = Path("~/.cache/dl_ray")
    """Where the download is kept when ``path`` is not given."""
    test_fraction: float = 0.0
    """Not used: the test split is CIFAR-10's own test_batch (10,000 images)."""
    limit: int | None = Field(None, gt=10)
    """Use only N training images and N test images, drawn by split_seed (smoke runs)."""

    @field_validator("test_fraction")
    @classmethod
    def _own_test_split(cls, value: float) -> float:
        if value:
            raise ValueError("CIFAR-10's test split is its own test_batch; leave test_fraction unset")
        return value


class Normalize:
    """uint8 images -> float32, per channel ``(x - mean) / std``; the batch's other tensors pass through."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return ((batch[0].float() - self.mean) / self.std, *batch[1:])


@register_dataset("cifar10", Cifar10Config)
def cifar10(cfg: Cifar10Config) -> DataBundle:
    """CIFAR-10, 50,000 + 10,000 real 32x32 colour images, 10 classes (path or download)."""
    source = cfg.path if cfg.path is not None else download(Path(cfg.cache).expanduser())
    files = read_batches(Path(source))
    x, y = _stack(files, TRAIN_FILES)
    x_test, y_test = _stack(files, (TEST_FILE,))
    shuffle = torch.Generator().manual_seed(cfg.split_seed)
    order = torch.randperm(len(x), generator=shuffle)[: cfg.limit]
    x, y = x[order], y[order]
    test_order = torch.randperm(len(x_test), generator=shuffle)[: cfg.limit]  # with limit: a random subset
    n_val = int(len(x) * cfg.val_fraction)
    x_train, y_train = x[n_val:], y[n_val:]
    mean, std = channel_stats(x_train)
    bundle = DataBundle(TensorDataset(x_train, y_train), TensorDataset(x[:n_val], y[:n_val]),
                        TensorDataset(x_test[test_order], y_test[test_order]), task="multiclass",
                        input_shape=(3, 32, 32), num_outputs=len(CLASSES),
                        meta={"classes": list(CLASSES), "pixels": "standardized", "mean": mean.tolist(), "std": std.tolist()},
                        batch_transform=Normalize(mean, std))
    return bundle


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images (N, C, H, W), exactly, from a 256-bin histogram (no float copy)."""
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].flatten(), minlength=256).double()
        mean = (counts * values).sum() / counts.sum()
        means.append(mean)
        stds.append(((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt().clamp(min=1e-6))
    return torch.stack(means).float(), torch.stack(stds).float()


def read_batches(path: Path) -> dict[str, dict]:
    """Every batch file by name, from a folder (or its cifar-10-batches-py) or the .tar.gz."""
    wanted = (*TRAIN_FILES, TEST_FILE)
    try:
        if path.is_file():
            with tarfile.open(path) as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile() and Path(m.name).name in wanted}
                raw = {name: tar.extractfile(m).read() for name, m in members.items()}
        elif path.is_dir():
            folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
            raw = {name: (folder / name).read_bytes() for name in wanted if (folder / name).is_file()}
        else:
            raise ValueError(f"data.path: no such file or folder: {path}")
    except (OSError, tarfile.TarError, EOFError) as e:
        raise ValueError(f"data.path: {path} is not a readable folder or cifar-10-python.tar.gz ({e})") from None
    if missing := [name for name in wanted if name not in raw]:
        raise ValueError(f"data.path: {path} lacks the CIFAR-10 python batch files {', '.join(missing)} "
                         f"(from {URL}; or leave data.path unset to download it)")
    return {name: _unpickle(blob, path / name) for name, blob in raw.items()}


def _unpickle(blob: bytes, where: Path) -> dict[str, Any]:
    try:
        batch = _NumpyOnly(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:  # a truncated or foreign file raises any of a dozen types from pickle
        raise ValueError(f"data.path: {where} is not a CIFAR-10 batch file ({type(e).__name__}: {e})") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = np.asarray(batch.get(b"labels", [])) if isinstance(batch, dict) else np.empty(0)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"data.path: {where}: b'data' must be an N x 3072 uint8 array")
    if labels.shape != (len(data),) or not np.isin(labels, np.arange(len(CLASSES))).all():
        raise ValueError(f"data.path: {where}: b'labels' must hold one class 0-9 per image")
    return {"data": data, "labels": labels}


class _NumpyOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a batch file cannot run code when it is read."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # protocol 2 stores bytes via encode

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _stack(files: dict[str, dict], names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.concatenate([files[n]["data"] for n in names]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([files[n]["labels"] for n in names]).astype(np.int64)
    return torch.from_numpy(data), torch.from_numpy(labels)


def download(cache: Path) -> Path:
    """``cifar-10-python.tar.gz`` in ``cache``, fetched once and checked against its published MD5."""
    target = cache / "cifar-10-python.tar.gz"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".part{os.getpid()}")  # several workers may fetch at once: each writes its own
    try:
        urllib.request.urlretrieve(URL, partial)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise ValueError(f"data.path: not given, and downloading {URL} failed ({e}); download it and set data.path") from None
    if hashlib.md5(partial.read_bytes()).hexdigest() != MD5:
        partial.unlink()
        raise ValueError(f"data.path: not given, and the download of {URL} does not match its MD5 {MD5}")
    os.replace(partial, target)
    return target
