"""Every registered model and dataset, through the registry alone (new families are covered automatically)."""
from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel

from dl_ray.data import DataConfig, build_data
from dl_ray.models import ModelIO, build_model
from dl_ray.registry import DATASETS, MODELS, Registry

CANDIDATE_IOS = [  # a model is exercised on every kind of data it accepts
    ModelIO((1, 28, 28), 10, "multiclass"),
    ModelIO((1, 8, 8), 10, "multiclass"),
    ModelIO((30,), 1, "binary"),
    ModelIO((10,), 1, "regression"),
]


def test_duplicate_names_are_refused():
    reg = Registry("thing")
    reg.register("a", BaseModel)(lambda: None)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        reg.register("a", BaseModel)(lambda: None)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_forward_backward(name):
    entry = MODELS[name]
    if getattr(entry.config, "example_io", None) is not None:  # families with their own data (e.g. sequences)
        pytest.skip("covered by the family's own tests")
    built = 0
    for io in CANDIDATE_IOS:
        torch.manual_seed(0)
        try:
            model = build_model(entry.config(name=name), io, dropout=0.1)
        except ValueError:
            continue  # this model does not accept this kind of data (e.g. LeNet on tabular)
        x = torch.randn(5, *io.input_shape)
        y = torch.randint(0, io.num_outputs, (5,)) if io.task == "multiclass" else torch.rand(5).round()
        batch = (x, y)
        out = model(*model.inputs(batch))
        assert out.shape == ((5, io.num_outputs) if io.task == "multiclass" else (5,))
        loss = model.loss(out, batch)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        assert set(model.metrics(out.detach(), batch)) >= {"loss"}
        built += 1
    assert built, f"{name} accepted none of the example inputs"


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_splits_disjointly_and_deterministically(name):
    cfg = DATASETS[name].config(name=name)
    a, b = DATASETS[name].build(cfg), build_data(cfg)
    sizes = [len(a.train), len(a.val), len(a.test)]
    assert min(sizes) > 0 and sizes[0] > sizes[1]
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])  # same seed, same split
    other = DATASETS[name].build(cfg.model_copy(update={"split_seed": 1}))
    assert not torch.equal(a.test.tensors[0], other.test.tensors[0])
    rows = {tuple(r.tolist()) for r in a.train.tensors[0].flatten(1)}
    assert not any(tuple(r.tolist()) in rows for r in a.test.tensors[0].flatten(1)[:50])
    assert tuple(a.train.tensors[0].shape[1:]) == a.input_shape
    assert abs(float(a.train.tensors[0].mean())) < 0.05  # standardised on train statistics


def test_mnist5k_is_the_real_subset():
    data = build_data(DATASETS["mnist5k"].config(name="mnist5k"))
    assert len(data.train) + len(data.val) + len(data.test) == 5000
    assert data.input_shape == (1, 28, 28) and data.num_outputs == 10
    assert torch.bincount(data.train.tensors[1]).min() > 300  # every digit is there


def test_dataset_config_is_a_dataconfig():
    assert all(issubclass(DATASETS[n].config, DataConfig) for n in DATASETS.names())
