"""One-dimensional target distributions with known CDFs: what a GAN learns in the course's inverse-CDF lesson.

``data: {name: distribution, target: exponential}`` (or ``gaussian_mixture``) draws ``size`` real samples, split
into train / validation / test. Batches are ``(x,)`` with x of shape (N, 1). The analytic CDF, inverse CDF and
density travel to the model in ``io.meta["target"]`` (:func:`target_from_meta`), so a generator's samples are
scored against the true distribution (Kolmogorov-Smirnov), not only against the finite sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch.utils.data import TensorDataset

from dl_ray.data import DataBundle, DataConfig
from dl_ray.registry import register_dataset


class DistributionConfig(DataConfig):
    target: Literal["exponential", "gaussian_mixture"] = "exponential"
    """exponential (rate ``rate``) or gaussian_mixture (``weights``, ``means``, ``stds``)."""
    rate: float = Field(1.0, gt=0)
    """exponential: rate lambda (mean 1/lambda); inverse CDF -log(1 - u) / lambda."""
    weights: tuple[float, ...] = (0.5, 0.5)
    """gaussian_mixture: component weights (normalised to sum 1)."""
    means: tuple[float, ...] = (-2.0, 2.0)
    """gaussian_mixture: component means."""
    stds: tuple[float, ...] = (0.5, 1.0)
    """gaussian_mixture: component standard deviations (> 0)."""
    size: int = Field(100_000, ge=100)
    """Real samples drawn in all (train + validation + test); 100,000 gives a 10,000-sample test split."""
    sample_seed: int = 0
    """Seed of the draw (split_seed then shuffles the draw into train / validation / test)."""

    @model_validator(mode="after")
    def _mixture(self):
        if self.target == "gaussian_mixture":
            if not (len(self.weights) == len(self.means) == len(self.stds) >= 1):
                raise ValueError(f"weights, means and stds need one entry per component (got {len(self.weights)}, "
                                 f"{len(self.means)}, {len(self.stds)})")
            if min(self.weights) <= 0 or min(self.stds) <= 0:
                raise ValueError("weights and stds must be > 0")
        return self


@dataclass(frozen=True)
class Target:
    """A 1-D distribution with an analytic CDF (numpy in, numpy out)."""

    name: str
    rate: float = 1.0
    weights: tuple[float, ...] = ()
    means: tuple[float, ...] = ()
    stds: tuple[float, ...] = ()

    def cdf(self, x):
        x = np.asarray(x, dtype=np.float64)
        if self.name == "exponential":
            return -np.expm1(-self.rate * np.clip(x, 0, None))
        from scipy.special import ndtr

        return sum(w * ndtr((x - m) / s) for w, m, s in zip(self.weights, self.means, self.stds))

    def pdf(self, x):
        x = np.asarray(x, dtype=np.float64)
        if self.name == "exponential":
            return np.where(x >= 0, self.rate * np.exp(-self.rate * np.clip(x, 0, None)), 0.0)
        return sum(w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
                   for w, m, s in zip(self.weights, self.means, self.stds))

    def icdf(self, u):
        """The inverse CDF (quantile function): closed form for the exponential, bisection for a mixture."""
        u = np.asarray(u, dtype=np.float64)
        if self.name == "exponential":
            return -np.log1p(-u) / self.rate
        lo = np.full_like(u, min(m - 12 * s for m, s in zip(self.means, self.stds)))
        hi = np.full_like(u, max(m + 12 * s for m, s in zip(self.means, self.stds)))
        for _ in range(80):
            mid = (lo + hi) / 2
            below = self.cdf(mid) < u
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return (lo + hi) / 2

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.name == "exponential":
            return rng.exponential(1.0 / self.rate, n)
        comp = rng.choice(len(self.weights), size=n, p=np.asarray(self.weights))
        return rng.normal(np.asarray(self.means)[comp], np.asarray(self.stds)[comp])

    def describe(self) -> str:
        if self.name == "exponential":
            return f"Exponential(rate={self.rate:g})"
        parts = [f"{w:g}·N({m:g}, {s:g}²)" for w, m, s in zip(self.weights, self.means, self.stds)]
        return " + ".join(parts)

    def to_meta(self) -> dict:
        return {"name": self.name, "rate": self.rate, "weights": list(self.weights), "means": list(self.means),
                "stds": list(self.stds)}


def target_from_meta(meta: dict) -> Target:
    return Target(meta["name"], meta["rate"], tuple(meta["weights"]), tuple(meta["means"]), tuple(meta["stds"]))


def target_of(cfg: DistributionConfig) -> Target:
    total = sum(cfg.weights)
    return Target(cfg.target, cfg.rate, tuple(w / total for w in cfg.weights), tuple(cfg.means), tuple(cfg.stds))


@register_dataset("distribution", DistributionConfig)
def distribution(cfg: DistributionConfig) -> DataBundle:
    """Samples of a 1-D distribution with a known CDF (exponential, Gaussian mixture): the GAN inverse-CDF lesson."""
    target = target_of(cfg)
    x = target.sample(cfg.size, np.random.default_rng(cfg.sample_seed)).astype(np.float32)
    order = np.random.default_rng(cfg.split_seed).permutation(len(x))
    if cfg.limit:
        order = order[: cfg.limit]
    x_t = torch.from_numpy(np.ascontiguousarray(x[order]))[:, None]
    n_val, n_test = int(len(x_t) * cfg.val_fraction), int(len(x_t) * cfg.test_fraction)
    n_train = len(x_t) - n_val - n_test
    parts = [TensorDataset(x_t[:n_train]), TensorDataset(x_t[n_train:n_train + n_val]), TensorDataset(x_t[n_train + n_val:])]
    return DataBundle(*parts, task="distribution", input_shape=(1,), num_outputs=1, meta={"target": target.to_meta()})
