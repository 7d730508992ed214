"""The same loop on 2 real Ray Train workers (DDP over gloo): learning, Ray-managed checkpoints, worker failure."""
from __future__ import annotations

import csv
import json

import pytest

from dl_ray.cli import main
from dl_ray.train import checkpoints
from tests.conftest import write_job

pytestmark = pytest.mark.slow  # Ray Train workers (DDP over gloo)
SECTIONS = dict(model={"name": "mlp", "hidden": [64]}, data={"name": "digits"}, optimizer={"lr": 0.01},
                scaling={"num_workers": 2}, training={"epochs": 4, "batch_size": 64, "max_failures": 1})


def read(folder):
    with (folder / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return json.loads((folder / "summary.json").read_text()), rows


def test_two_workers_train_and_ray_keeps_the_checkpoints(ray_cluster, tmp_path):
    job = write_job(tmp_path, "ddp", **SECTIONS)
    assert main(["train", str(job)]) == 0
    folder = tmp_path / "runs" / "ddp"
    summary, rows = read(folder)
    assert summary["final"]["test/accuracy"] > 0.9
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert (folder / "checkpoint_manager_snapshot.json").is_file()  # Ray Train persisted and tracks them
    assert sorted(checkpoints.saved(folder)) == [4]  # no early stopping: only the latest (keep_checkpoints=1)
    # Each worker scored every other test example; the all-reduced metrics equal one process scoring them all.
    import torch

    from dl_ray.data import build_data
    from dl_ray.runs import load_model
    from dl_ray.train.loop import evaluate

    model, spec = load_model(folder, which="last")
    alone = evaluate(model, build_data(spec.data), "test", 0, 1, torch.device("cpu"))
    assert alone["test/accuracy"] == summary["final"]["test/accuracy"]
    assert abs(alone["test/loss"] - summary["final"]["test/loss"]) < 1e-5


def test_worker_failure_mid_run_resumes_from_the_last_checkpoint(ray_cluster, tmp_path):
    job = write_job(tmp_path, "chaos", **SECTIONS)  # rank 0 of 'chaos' dies once at epoch 3 (conftest)
    assert main(["train", str(job)]) == 0
    folder = tmp_path / "runs" / "chaos"
    assert (folder / ".failed_at_epoch_3").exists()  # the failure really happened
    summary, rows = read(folder)
    assert summary["epochs_run"] == 4 and summary["status"] == "completed"
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]  # epoch 3 redone once, not duplicated
    assert summary["final"]["test/accuracy"] > 0.9
