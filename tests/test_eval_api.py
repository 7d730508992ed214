"""`dl-ray eval` of a supervised run (confusion matrix, mistakes) and the Python API (dl_ray.api) it is built on."""
from __future__ import annotations

import json

import pytest
import torch

import dl_ray
from dl_ray import api
from dl_ray.cli import main
from dl_ray.errors import SpecError
from tests.conftest import write_job

EPOCHS = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """LeNet-5 on 1,000 real MNIST digits for 2 epochs, trained through the API (in this process)."""
    folder = tmp_path_factory.mktemp("eval_api")
    job = write_job(folder, "lenet_small", model={"name": "lenet5"}, data={"name": "mnist5k", "limit": 1000},
                    optimizer={"name": "adam", "lr": 0.003}, training={"epochs": EPOCHS, "batch_size": 64, "seed": 0},
                    regularization={"early_stopping": {"patience": 5, "metric": "val/loss"}})
    summary = api.fit(job, quiet=True)
    return job, folder / "runs" / "lenet_small", summary


def test_train_returns_the_summary_it_writes(trained):
    _, run_dir, summary = trained
    assert summary == json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == EPOCHS and "test/accuracy" in summary["final"]


def test_load_gives_the_model_spec_and_history_of_the_run(trained):
    from dl_ray.train.loop import evaluate

    _, run_dir, summary = trained
    run = api.load(run_dir)
    assert run.kind == "supervised" and run.spec.model.name == "lenet5" and run.summary == summary
    assert not run.model.training and run.checkpoint.name == f"checkpoint_epoch_{summary['best_epoch']:04d}"
    test = evaluate(run.model, run.data(), "test", 0, 1, torch.device("cpu"))
    assert test["test/accuracy"] == pytest.approx(summary["final"]["test/accuracy"], abs=1e-6)
    assert test["test/loss"] == pytest.approx(summary["final"]["test/loss"], abs=1e-6)
    assert [row["epoch"] for row in run.history] == list(range(1, EPOCHS + 1))
    assert list(run.metrics["epoch"]) == list(range(1, EPOCHS + 1)) and "val/loss" in run.metrics.columns


def test_eval_of_a_classifier_prints_and_writes_its_confusion_matrix(trained, capsys, monkeypatch):
    from sklearn.metrics import confusion_matrix

    from dl_ray.eval_supervised import predict
    from dl_ray.fmt import pct

    monkeypatch.setenv("COLUMNS", "200")
    _, run_dir, summary = trained
    assert main(["eval", str(run_dir)]) == 0
    out = capsys.readouterr().out
    report = json.loads((run_dir / "eval_test.json").read_text())
    assert (run_dir / "confusion.png").stat().st_size > 0 and (run_dir / "mistakes.png").stat().st_size > 0
    confusion = torch.tensor(report["confusion"])
    assert confusion.shape == (10, 10) and int(confusion.sum()) == report["examples"] == 100
    assert report["accuracy"] == pytest.approx(summary["final"]["test/accuracy"], abs=1e-9)
    assert report["metrics"]["test/accuracy"] == pytest.approx(summary["final"]["test/accuracy"], abs=1e-6)
    assert report["mistake_count"] == round(100 * (1 - report["accuracy"])) == len(report["mistakes"]) > 0
    assert [m["p"] for m in report["mistakes"]] == sorted((m["p"] for m in report["mistakes"]), reverse=True)
    printed = {}  # class -> the accuracy its table row shows
    for line in out.splitlines():
        cells = [c.strip() for c in line.replace("|", "│").split("│")[1:-1]]
        if cells and cells[0].isdigit() and cells[-1].endswith("%"):
            printed[int(cells[0])] = cells[-1]
    assert sorted(printed) == list(range(10))
    for c in range(10):  # per-class accuracy = diagonal / row sum, as printed
        accuracy = int(confusion[c, c]) / int(confusion[c].sum())
        assert printed[c] == pct(accuracy, 2).strip() and report["per_class_accuracy"][c] == pytest.approx(accuracy)
    # independently: the loaded model's predictions, counted by scikit-learn
    run = api.load(run_dir)
    logits, y = predict(run.model, run.data(), "test", torch.device("cpu"))
    expected = confusion_matrix(y.numpy(), logits.argmax(dim=1).numpy(), labels=list(range(10)))
    assert expected.tolist() == report["confusion"]
    assert "test confusion matrix" in out and "→" in out and "mistakes.png" in out


def test_eval_options_that_do_not_fit_and_folders_without_a_run_are_one_line(trained, tmp_path, capsys):
    _, run_dir, _ = trained
    assert main(["eval", str(run_dir), "--beam", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--beam and --alpha decode seq2seq runs" in err
    assert "lenet_small is a supervised (multiclass) run, which takes --weights" in err
    assert main(["eval", str(run_dir), "--episodes", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--episodes is for RL runs" in err
    assert main(["eval", str(tmp_path)]) == 2  # a folder, but no run in it
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no run (no spec.yaml)" in err
    with pytest.raises(SpecError, match="no such run folder or job file"):
        api.evaluate(tmp_path / "nowhere")


def test_eval_of_the_job_file_and_the_last_checkpoint(trained):
    job, run_dir, summary = trained
    report = api.evaluate(job, weights="last", quiet=True)  # a job file finds its run folder
    assert report["weights"] == "last" and report["checkpoint"].endswith(f"checkpoint_epoch_{EPOCHS:04d}")
    assert report["run"] == str(run_dir)


def test_registered_lists_models_by_kind_and_datasets():
    names = api.registered()
    assert "lenet5" in names["supervised"] and "nature_cnn" in names["dqn"] and "mnist5k" in names["datasets"]
    assert "lenet5" not in names["dqn"]
    assert api.registered("dqn") == {"dqn": names["dqn"], "datasets": names["datasets"]}
    with pytest.raises(SpecError, match="unknown kind"):
        api.registered("nope")


def test_the_package_exports_the_api():
    assert dl_ray.fit is api.fit and dl_ray.load is api.load and dl_ray.evaluate is api.evaluate and dl_ray.registered is api.registered
    with pytest.raises(SpecError, match="training.epoch"):
        dl_ray.fit({"name": "x", "model": {"name": "lenet5"}, "data": {"name": "mnist5k"}}, ["training.epoch=3"])
