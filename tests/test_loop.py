"""The generic loop's parts that every task relies on: data per rank and epoch, streaming metrics, load_model."""
from __future__ import annotations

import json

import torch

from dl_ray.cli import main
from dl_ray.data import build_data
from dl_ray.models.task import Ratio
from dl_ray.registry import DATASETS
from tests.conftest import write_job


def test_training_batches_are_dealt_out_like_a_distributed_sampler():
    data = build_data(DATASETS["digits"].config(name="digits"))
    n = len(data.train)
    ranks = [list(data.loader("train", 16, epoch=3, rank=r, world=3, seed=7)) for r in range(3)]
    assert len({len(batches) for batches in ranks}) == 1, "every worker takes the same number of steps"
    seen = torch.cat([b[1] for batches in ranks for b in batches])
    assert len(seen) == n + (-n) % 3  # padded to a multiple of the world size, nothing dropped
    rows = torch.cat([b[0].flatten(1) for batches in ranks for b in batches])
    assert len(torch.unique(rows, dim=0)) == len(torch.unique(data.train.tensors[0].flatten(1), dim=0))
    again = [b[0] for b in data.loader("train", 16, epoch=3, rank=1, world=3, seed=7)]
    assert all(torch.equal(a, b[0]) for a, b in zip(again, ranks[1])), "the same epoch draws the same batches (resume)"
    other = next(iter(data.loader("train", 16, epoch=4, rank=1, world=3, seed=7)))[0]
    assert not torch.equal(other, ranks[1][0][0]), "each epoch is shuffled anew"


def test_evaluation_shards_count_every_example_once():
    data = build_data(DATASETS["digits"].config(name="digits"))
    shards = [torch.cat([b[1] for b in data.loader("test", 50, rank=r, world=4)]) for r in range(4)]
    assert sorted(torch.cat(shards).tolist()) == sorted(data.test.tensors[1].tolist())


def test_ratio_is_the_weighted_mean_over_batches():
    metric = Ratio()
    metric.update(torch.tensor(3.0), 4)  # e.g. 3 right of 4
    metric.update(torch.tensor(1.0), 6)
    metric.update(torch.tensor(0.5))  # a plain value counts once
    assert float(metric.compute()) == (3 + 1 + 0.5) / 11


def test_load_model_rebuilds_a_run_without_its_data(tmp_path):
    """The checkpoint carries the model's I/O facts: no dataset is built to load it, and it scores as the run did."""
    from dl_ray.data import _build
    from dl_ray.runs import load_model
    from dl_ray.train.loop import evaluate

    job = write_job(tmp_path, "m", model={"name": "mlp", "hidden": [32]}, data={"name": "digits"},
                    optimizer={"lr": 0.01}, training={"epochs": 2})
    assert main(["train", str(job)]) == 0
    _build.cache_clear()
    model, spec = load_model(tmp_path / "runs" / "m")
    assert _build.cache_info().currsize == 0
    summary = json.loads((tmp_path / "runs" / "m" / "summary.json").read_text())
    scores = evaluate(model, build_data(spec.data), "test", 0, 1, torch.device("cpu"))
    assert scores["test/accuracy"] == summary["final"]["test/accuracy"]
