"""Real tabular tasks from scikit-learn, so MSE and BCE are exercised on real data."""
from __future__ import annotations

from pydantic import Field

from dl_ray.data import DataBundle, DataConfig, split
from dl_ray.registry import register_dataset


class TabularConfig(DataConfig):
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


@register_dataset("diabetes", TabularConfig)
def diabetes(cfg: TabularConfig) -> DataBundle:
    """Regression: disease progression of 442 patients from 10 features (target standardised)."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    return split(d.data, d.target, cfg, "regression", standardize=True)


@register_dataset("breast_cancer", TabularConfig)
def breast_cancer(cfg: TabularConfig) -> DataBundle:
    """Binary: malignant vs benign from 30 features of 569 breast-mass images."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return split(d.data, d.target, cfg, "binary", standardize=True)
