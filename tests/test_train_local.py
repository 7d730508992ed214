"""The generic loop end to end in Ray Train local mode (``num_workers: 0``): learning, resuming, stopping."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from dl_ray.cli import main
from dl_ray.train import checkpoints
from tests.conftest import ROOT, cli, write_job
from tests.wandb_records import history


def run_dir(job, name=None):
    spec = yaml.safe_load(job.read_text())
    return job.parent / "runs" / (name or spec["name"])


def summary(folder):
    return json.loads((folder / "summary.json").read_text())


def metric_rows(folder):
    import csv

    with (folder / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # the full shipped job, ~40 s
def test_mnist_lenet_job_reaches_98_percent(tmp_path):
    """The acceptance run: the shipped job on its embedded defaults."""
    assert main(["train", str(ROOT / "jobs/mnist_lenet.yaml"), "--set", f"storage.path={tmp_path}", "--set", "tracking.wandb=disabled"]) == 0
    s = summary(tmp_path / "mnist_lenet")
    assert s["final"]["test/accuracy"] >= 0.98, s
    assert (tmp_path / "mnist_lenet" / "curves.png").stat().st_size > 10_000


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_mlp_learns_digits_with_every_activation(tmp_path, act):
    job = write_job(tmp_path, "digits", model={"name": "mlp", "hidden": [64], "activation": act},
                    data={"name": "digits"}, optimizer={"lr": 0.01}, training={"epochs": 8, "batch_size": 32})
    assert main(["train", str(job)]) == 0
    assert summary(run_dir(job))["final"]["test/accuracy"] > 0.9


def test_regression_uses_mse_and_beats_predicting_the_mean(tmp_path, capsys):
    job = write_job(tmp_path, "reg", model={"name": "mlp", "hidden": [32]}, data={"name": "diabetes"},
                    optimizer={"lr": 0.003}, training={"epochs": 30, "batch_size": 32},
                    regularization={"l2": 0.01})
    assert main(["train", str(job)]) == 0
    final = summary(run_dir(job))["final"]
    assert "test/accuracy" not in final
    assert final["test/loss"] < 0.75  # standardised targets: the mean predictor scores ~1.0
    assert "bias/variance: train error" in capsys.readouterr().out


def test_binary_task_uses_bce(tmp_path):
    job = write_job(tmp_path, "bin", model={"name": "mlp", "hidden": [16]}, data={"name": "breast_cancer"},
                    training={"epochs": 10, "batch_size": 16}, optimizer={"lr": 0.003})
    assert main(["train", str(job)]) == 0
    assert summary(run_dir(job))["final"]["test/accuracy"] > 0.93


@pytest.mark.parametrize(("batch_size", "steps_per_epoch"), [("full", 1), (1, 42), (16, 3)])
def test_batch_minibatch_and_online_gd_take_the_right_number_of_steps(tmp_path, batch_size, steps_per_epoch):
    job = write_job(tmp_path, "gd", model={"name": "mlp", "hidden": [8]},
                    data={"name": "breast_cancer", "limit": 60}, optimizer={"name": "adam"},
                    training={"epochs": 2, "batch_size": batch_size})
    assert main(["train", str(job)]) == 0
    state = checkpoints.read(checkpoints.latest(run_dir(job)))
    steps = state["optimizers"]["main"]["state"][0]["step"]
    assert int(steps) == 2 * steps_per_epoch  # 60 examples -> 42 train


def test_early_stopping_keeps_the_best_checkpoint(tmp_path, capsys):
    job = write_job(tmp_path, "es", model={"name": "mlp", "hidden": [256, 256]}, data={"name": "diabetes"},
                    optimizer={"lr": 0.01}, training={"epochs": 60, "batch_size": 16},
                    regularization={"early_stopping": {"patience": 3}})
    assert main(["train", str(job)]) == 0
    out = capsys.readouterr().out
    folder = run_dir(job)
    s = summary(folder)
    rows = metric_rows(folder)
    assert (s["status"], s["stop_reason"]) == ("stopped", "early stopping") and s["epochs_run"] < 60 and len(rows) == s["epochs_run"]
    val = [float(r["val/loss"]) for r in rows]
    assert s["best_epoch"] == len(val) - val[::-1].index(min(val))  # the (last) epoch with the lowest val/loss
    assert s["epochs_run"] - s["best_epoch"] <= 3
    assert s["best_epoch"] in checkpoints.saved(folder)
    assert s["final"]["val/loss"] == pytest.approx(min(val), rel=1e-5)  # final report uses the best weights
    # one story: the table's figures, summary.json's checkpoint and the folders kept (the best and the latest)
    best, last = checkpoints.dir_name(s["best_epoch"]), checkpoints.dir_name(s["epochs_run"])
    assert sorted(checkpoints.saved(folder)) == [s["best_epoch"], s["epochs_run"]]
    assert (Path(s["checkpoint"]).name, Path(s["latest_checkpoint"]).name) == (best, last)
    assert f"weights of best epoch {s['best_epoch']} of {s['epochs_run']} (early stopping " in out and best in out


def test_early_stopping_on_accuracy_ties_keeps_the_checkpoint_it_reports(tmp_path):
    """Validation accuracy ties often: the best epoch named must be one whose checkpoint was kept."""
    job = write_job(tmp_path, "ties", model={"name": "mlp", "hidden": [32]}, data={"name": "breast_cancer"},
                    optimizer={"lr": 0.01}, training={"epochs": 30, "batch_size": 16, "keep_checkpoints": 1},
                    regularization={"early_stopping": {"patience": 4, "metric": "val/accuracy"}})
    assert main(["train", str(job)]) == 0
    s, rows = summary(run_dir(job)), metric_rows(run_dir(job))
    acc = [float(r["val/accuracy"]) for r in rows]
    assert s["best_epoch"] in checkpoints.saved(run_dir(job)) and acc[s["best_epoch"] - 1] == max(acc)
    assert s["final"]["val/accuracy"] == pytest.approx(max(acc))


@pytest.mark.slow  # three runs, one killed in its own process
def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    sections = dict(model={"name": "mlp", "hidden": [32]}, data={"name": "digits"},
                    training={"epochs": 5, "batch_size": 64}, regularization={"dropout": 0.2})
    whole = write_job(tmp_path, "whole", **sections)
    chaos = write_job(tmp_path, "chaos", **sections)
    assert main(["train", str(whole)]) == 0
    monkeypatch.setenv("DL_RAY_FAIL_AT", "chaos:3")
    code, _, _ = cli("train", str(chaos))  # the process dies at the start of epoch 3
    monkeypatch.delenv("DL_RAY_FAIL_AT")
    assert code == 17
    folder = run_dir(chaos)
    assert sorted(checkpoints.saved(folder)) == [2] and not (folder / "summary.json").exists()  # no patience: the latest
    code, out, _ = cli("train", str(chaos))
    assert code == 0 and "resuming from checkpoint_epoch_0002" in out
    rows = metric_rows(folder)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert summary(folder)["final"] == pytest.approx(summary(run_dir(whole))["final"], rel=1e-6)


def test_rerunning_a_finished_run_resumes_and_can_extend_it(tmp_path):
    job = write_job(tmp_path, "again", model={"name": "mlp", "hidden": [16]}, data={"name": "digits"},
                    training={"epochs": 2})
    assert main(["train", str(job)]) == 0
    first = summary(run_dir(job))
    assert main(["train", str(job)]) == 0  # finished: nothing retrained
    assert summary(run_dir(job))["final"] == first["final"] and len(metric_rows(run_dir(job))) == 2
    assert main(["train", str(job), "--set", "training.epochs=4"]) == 0
    assert [int(r["epoch"]) for r in metric_rows(run_dir(job))] == [1, 2, 3, 4]


def test_a_different_spec_under_the_same_name_is_refused(tmp_path, capsys):
    job = write_job(tmp_path, "same", model={"name": "mlp", "hidden": [16]}, data={"name": "digits"}, training={"epochs": 1})
    assert main(["train", str(job)]) == 0
    saved = (run_dir(job) / "spec.yaml").read_text()
    assert main(["train", str(job), "--set", "optimizer.lr=0.5"]) == 2
    assert "holds a run with a different spec (optimizer.lr)" in capsys.readouterr().err
    assert (run_dir(job) / "spec.yaml").read_text() == saved


def test_a_run_saved_before_a_field_existed_resumes_while_the_field_keeps_its_default(tmp_path, capsys):
    job = write_job(tmp_path, "older", model={"name": "mlp", "hidden": [16]}, data={"name": "digits"},
                    training={"epochs": 1})
    assert main(["train", str(job)]) == 0
    saved = yaml.safe_load((run_dir(job) / "spec.yaml").read_text())
    del saved["training"]["memory_format"]  # as written by a dl_ray without that field
    (run_dir(job) / "spec.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert main(["train", str(job), "--set", "training.epochs=2"]) == 0
    assert main(["train", str(job), "--set", "training.memory_format=channels_last"]) == 2
    assert "different spec (training.memory_format)" in capsys.readouterr().err


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    job = write_job(tmp_path, "nan", model={"name": "mlp", "hidden": [64]}, data={"name": "diabetes"},
                    optimizer={"name": "sgd", "lr": 0.13, "momentum": 0.9}, training={"epochs": 10, "batch_size": 16})
    assert main(["train", str(job)]) == 1
    err = capsys.readouterr().err
    assert "the loss became NaN/inf" in err and "last good checkpoint" in err
    folder = run_dir(job)
    good = checkpoints.latest(folder)
    assert good is not None and str(good) in err
    weights = checkpoints.read(good)["model"]
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert all(math.isfinite(float(r["train/loss"])) for r in metric_rows(folder))


def test_wandb_offline_run_holds_the_logged_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    job = write_job(tmp_path, "wb", model={"name": "mlp", "hidden": [16]}, data={"name": "digits"},
                    training={"epochs": 3}, tracking={"wandb": "offline", "project": "tests"})
    assert main(["train", str(job)]) == 0
    files = list((run_dir(job) / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    rows = history(files[0])
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    csv_rows = metric_rows(run_dir(job))
    assert [float(r["val/accuracy"]) for r in rows] == pytest.approx([float(r["val/accuracy"]) for r in csv_rows])


def test_extending_a_finished_cosine_run_replans_the_schedule_instead_of_training_at_lr_0(tmp_path, capsys):
    job = write_job(tmp_path, "longer", model={"name": "mlp", "hidden": [16]}, data={"name": "digits"},
                    optimizer={"lr": 0.01}, schedule={"name": "cosine"}, training={"epochs": 2})
    assert main(["train", str(job)]) == 0
    capsys.readouterr()
    assert main(["train", str(job), "--set", "training.epochs=4"]) == 0
    lrs = [float(r["lr"]) for r in metric_rows(run_dir(job))]
    # epochs 1-2 followed the 2-epoch plan; epochs 3-4 follow a cosine over 4 epochs: 0.01 * (1 + cos(pi * e / 4)) / 2
    assert lrs == pytest.approx([0.01, 0.005, 0.01 * (1 + math.cos(math.pi * 2 / 4)) / 2, 0.01 * (1 + math.cos(math.pi * 3 / 4)) / 2])
    assert "training.epochs 2 -> 4: cosine decay re-planned over 4 epochs; epoch 3 trains at lr 5.0e-03, epoch 4 at 1.5e-03" \
        in capsys.readouterr().out
