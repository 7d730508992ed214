"""A sweep whose folder lives in a bucket (a local S3 server speaking the real protocol), run as `dl-ray submit` runs
it on a cluster: ``dl-ray tune`` with ``DL_RAY_STORAGE_URI`` set.

On a cluster of several nodes the trials run where Ray places them and the driver cannot read their disks. The test
stands for that on one machine: the driver's folder (its ``storage.path``) is not where the trials write (their
node's scratch folder), so everything the driver reports about a trial had to come through the bucket."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from dl_ray.cluster import storage
from dl_ray.cluster.mirror import STORAGE_ENV
from tests.conftest import ROOT
from tests.buckets import bucket, bucket_tree, s3_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # two sweeps of two short trials
SWEEP = ROOT / "jobs" / "sweeps" / "digits_tiny.yaml"


def tune(driver_folder, uri: str, env: dict[str, str], sweep=SWEEP, *overrides: str) -> subprocess.CompletedProcess:
    settings = ("tune.num_samples=2", "training.epochs=2") if sweep == SWEEP else ()
    args = [a for o in (f"storage.path={driver_folder}", *settings, "tracking.wandb=disabled", *overrides) for a in ("--set", o)]
    env = {**os.environ, **env, STORAGE_ENV: uri, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "dl_ray.cli", "tune", str(sweep), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300, check=False)


def results(tree: dict[str, bytes]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(tree["results.csv"].decode())))


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_a_sweep_in_a_bucket_reads_its_trials_from_there_and_resumes_from_there_on_a_fresh_node(bucket, tmp_path, request):
    uri, env = f"{bucket[0]}/runs", bucket[1]
    trials_folder = storage.scratch_for(uri)  # where the trials write: their node's scratch folder
    request.addfinalizer(lambda: shutil.rmtree(trials_folder, ignore_errors=True))
    first = tune(tmp_path / "driver", uri, env)
    assert first.returncode == 0, first.stdout + first.stderr

    tree = bucket_tree(f"{uri}/digits_tiny")
    summary, rows = json.loads(tree["summary.json"]), results(tree)
    assert summary["status"] == "completed" and summary["outcomes"] == {"completed": 2}, summary
    assert {"sweep.yaml", "curves.png", "best.yaml"} <= set(tree), sorted(tree)
    for row in rows:
        trial = {name.split("/", 1)[1] for name in tree if name.startswith(f"{row['trial']}/")}
        assert {"metrics.csv", "summary.json", "spec.yaml"} <= trial, sorted(trial)
        assert any(name.startswith("checkpoint_") for name in trial), sorted(trial)  # Tune's and the loop's, in the bucket
        assert float(row["val/accuracy"]) > 0.5, row
    driver = tmp_path / "driver" / "digits_tiny"
    for row in rows:  # the trials' histories (curves.png, results) were written elsewhere: read through the bucket
        with (driver / row["trial"] / "metrics.csv").open() as f:
            assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    assert not list(driver.glob("*/checkpoint_*")), "the driver pulled the trials' checkpoints"

    shutil.rmtree(tmp_path / "driver")
    shutil.rmtree(trials_folder)  # the rerun lands on a node that never saw the sweep
    second = tune(tmp_path / "driver", uri, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "(resuming)" in second.stdout, second.stdout
    again = bucket_tree(f"{uri}/digits_tiny")
    assert [(r["trial"], r["val/accuracy"]) for r in results(again)] == [(r["trial"], r["val/accuracy"]) for r in rows]


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_an_evaluate_sweep_in_a_bucket_scores_a_run_trained_into_that_bucket_from_a_node_that_never_saw_it(
        bucket, tmp_path, request):
    from dl_ray.cli import main

    uri, env = f"{bucket[0]}/runs", bucket[1]
    scratch = storage.scratch_for(uri)  # where `dl-ray submit` points a bucket job's storage.path, on every node
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    job = tmp_path / "trained.yaml"
    job.write_text(yaml.safe_dump({"model": {"name": "mlp", "hidden": [32], "activation": "relu"}, "data": {"name": "digits"},
                                   "optimizer": {"lr": 0.01}, "training": {"epochs": 3}, "tracking": {"wandb": "disabled"}}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(STORAGE_ENV, uri)
        assert main(["train", str(job), "--set", f"storage.path={scratch}"]) == 0
    trained = json.loads(bucket_tree(f"{uri}/trained")["summary.json"])["final"]
    shutil.rmtree(scratch)  # the sweep runs on a node that never saw the run: it is only in the bucket

    sweep = tmp_path / "activation.yaml"
    sweep.write_text(yaml.safe_dump({"kind": "sweep", "name": "activation", "tune": {
        "trial": "evaluate", "checkpoint": "trained", "metric": "val/accuracy", "search": "grid", "num_samples": 1,
        "space": {"model.activation": {"grid": ["relu", "tanh"]}}}}))
    done = tune(tmp_path / "driver", uri, env, sweep)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["model.activation"]: r for r in results(bucket_tree(f"{uri}/activation"))}
    assert float(rows["relu"]["val/accuracy"]) == pytest.approx(trained["val/accuracy"], abs=1e-9)
    assert float(rows["tanh"]["val/accuracy"]) < trained["val/accuracy"]

    missing = tune(tmp_path / "driver", uri, env, sweep, "tune.checkpoint=not_trained", "name=missing")
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"error: tune.checkpoint: {uri}/not_trained holds no file (expected a run folder or a checkpoint_epoch_NNNN folder)")
