"""Job kinds and what the task declares: every mismatch is one line naming the field and the allowed values,
exit 2, and nothing is written."""
from __future__ import annotations

import pytest

from dl_ray.cli import main
from tests.conftest import ROOT, write_job


def run(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert err.count("\n") <= 1, err  # one line
    return code, err


@pytest.mark.parametrize("command, job, says", [
    ("train", "jobs/rl/dqn_cartpole.yaml", "is a dqn job, which `dl-ray dqn` runs; `dl-ray train` takes kind supervised, autoencoder, vae, gan"),
    ("dqn", "jobs/mnist_lenet.yaml", "is a supervised job, which `dl-ray train` runs; `dl-ray dqn` takes kind dqn, q_learning"),
    ("tune", "jobs/mnist_lenet.yaml", "is a supervised job, which `dl-ray train` runs; `dl-ray tune` takes kind sweep"),
    ("train", "jobs/sweeps/digits_tiny.yaml", "is a sweep job, which `dl-ray tune` runs"),
])
def test_a_job_given_to_the_wrong_command_is_one_line(capsys, command, job, says):
    code, err = run(capsys, command, str(ROOT / job), "--dry-run")
    assert code == 2 and err.startswith("error: kind: ") and says in err


def test_a_training_job_given_to_analyze_is_one_line(capsys, tmp_path):
    code, err = run(capsys, "analyze", str(ROOT / "jobs/mnist_lenet.yaml"), "--set", f"storage.path={tmp_path}")
    assert code == 2 and "is a supervised job, which `dl-ray train` runs; `dl-ray analyze` takes kind gradient_flow, debias" in err
    assert not list(tmp_path.iterdir())


def test_an_unknown_kind_lists_the_kinds(capsys, tmp_path):
    code, err = run(capsys, "train", str(ROOT / "jobs/mnist_lenet.yaml"), "--set", "kind=diffusion", "--dry-run")
    assert code == 2 and ("kind: unknown job kind 'diffusion'; allowed: supervised, autoencoder, vae, gan, detection, "
                          "language_model, embedding, metric_learning, dqn, q_learning, sweep, gradient_flow, debias") in err


def test_a_model_of_another_kind_is_refused_by_name(capsys):
    code, err = run(capsys, "train", str(ROOT / "jobs/mnist_lenet.yaml"), "--set", "model.name=nature_cnn", "--dry-run")
    assert code == 2 and "model.name: nature_cnn is a dqn model, and this is a supervised job; allowed: " in err
    assert "lenet5" in err and "nature_cnn" not in err.split("allowed: ")[1].split(" (or")[0]
    code, err = run(capsys, "dqn", str(ROOT / "jobs/rl/dqn_cartpole.yaml"), "--set", "model.name=lenet5", "--dry-run")
    assert code == 2 and "model.name: lenet5 is a supervised model, and this is a dqn job; allowed: nature_cnn, q_mlp" in err


def test_an_early_stopping_metric_the_task_does_not_report_is_refused_before_anything_is_written(capsys, tmp_path):
    job = write_job(tmp_path, "es", model={"name": "mlp", "hidden": [8]}, data={"name": "digits"},
                    regularization={"early_stopping": {"patience": 2, "metric": "val/bleu"}})
    code, err = run(capsys, "train", str(job))
    assert code == 2 and "regularization.early_stopping.metric: 'val/bleu' is not a metric MLP reports; allowed: val/loss, val/accuracy" in err
    assert not (tmp_path / "runs").exists()
    job = write_job(tmp_path, "reg", model={"name": "mlp", "hidden": [8]}, data={"name": "diabetes"},
                    regularization={"early_stopping": {"patience": 2, "metric": "val/accuracy"}})
    code, err = run(capsys, "train", str(job))
    assert code == 2 and "'val/accuracy' is not a metric MLP reports; allowed: val/loss" in err


def test_named_optimizers_on_a_one_optimizer_model_are_refused(capsys, tmp_path):
    job = write_job(tmp_path, "opt", model={"name": "mlp", "hidden": [8]}, data={"name": "digits"},
                    optimizers={"generator": {"lr": 0.001}})
    code, err = run(capsys, "train", str(job))
    assert code == 2 and "optimizers: mlp has one optimizer: configure it under optimizer:" in err
    assert not (tmp_path / "runs").exists()


def test_a_seq2seq_run_may_early_stop_on_what_its_task_reports(tmp_path):
    """Any metric the task reports is allowed, with the task's direction (exact match: higher is better)."""
    from dl_ray.data import build_data
    from dl_ray.models import build_model
    from dl_ray.spec import load_spec
    from dl_ray.train.runner import check_metric

    spec = load_spec(ROOT / "jobs/dates_attention.yaml")
    task = build_model(spec.model, build_data(spec.data).io)
    assert check_metric("m", "val/exact_match", task, ("val",)) == "max"
    assert check_metric("m", "val/loss", task, ("val",)) == "min"
