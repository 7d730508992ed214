"""Every registered model and dataset, through the registry alone (new families are covered automatically)."""
from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel

from dl_ray.data import DataConfig, build_data
from dl_ray.models import ModelIO, TaskModel, build_model
from dl_ray.registry import DATASETS, MODELS, Registry

def examples(supervised: bool):
    """(io, batch) pairs a model may accept: a real batch of every registered dataset, or RL observations."""
    if supervised:
        for name in DATASETS.names():
            data = build_data(DATASETS[name].config(name=name))
            yield data.io, data.example_batch(5)
    else:
        yield ModelIO((4, 84, 84), 6, "q_values"), (torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8),)
        yield ModelIO((4,), 2, "q_values"), (torch.randn(5, 4),)


def test_duplicate_names_are_refused():
    reg = Registry("thing")
    reg.register("a", BaseModel)(lambda: None)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        reg.register("a", BaseModel)(lambda: None)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_forward_backward(name):
    """Each registered model, on every kind of example it accepts: forward, its own loss, backward."""
    entry, built = MODELS[name], 0
    for supervised in (True, False):
        for io, batch in examples(supervised):
            built += exercise(entry, io, batch, supervised)
    assert built, f"{name} accepted none of the example inputs"


def exercise(entry, io, batch, supervised: bool) -> int:
    torch.manual_seed(0)
    try:
        model = build_model(entry.config(name=entry.name), io, dropout=0.1)
    except (ValueError, RuntimeError):
        return 0  # this model does not take this kind of data (e.g. LeNet on tabular data)
    if isinstance(model, TaskModel) != supervised:
        return 0
    if isinstance(model, TaskModel):
        out = model(*model.inputs(batch))
        loss = model.loss(out, batch)
        assert set(model.metrics(out.detach(), batch)) >= {"loss"}
        assert set(model.eval_metrics(batch)) >= {"loss"}
    else:  # e.g. Q-networks: one value per action
        out = model(*batch)
        assert out.shape == (5, io.num_outputs)
        loss = out.pow(2).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    return 1


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
    if a.train.tensors[0].is_floating_point():
        assert abs(float(a.train.tensors[0].mean())) < 0.05  # standardised on train statistics


def test_mnist5k_is_the_real_subset():
    data = build_data(DATASETS["mnist5k"].config(name="mnist5k"))
    assert len(data.train) + len(data.val) + len(data.test) == 5000
    assert data.input_shape == (1, 28, 28) and data.num_outputs == 10
    assert torch.bincount(data.train.tensors[1]).min() > 300  # every digit is there


def test_dataset_config_is_a_dataconfig():
    assert all(issubclass(DATASETS[n].config, DataConfig) for n in DATASETS.names())
