"""The storage checks made before a job is sent (a reachable bucket, credentials, the bucket an evaluate sweep reads)
and what a job submitted to a bucket is told, against local S3 and GCS servers (tests/buckets.py)."""
from __future__ import annotations

import os
import socket

import pytest
import yaml

from dl_ray.cluster import storage
from dl_ray.cluster.mirror import STORAGE_ENV
from dl_ray.cluster.submit import entrypoint, prepare
from dl_ray.spec import SpecError
from tests.buckets import bucket, gcs_server, s3, s3_server  # noqa: F401 (fixtures)

NO_FILES = "/nonexistent/dl_ray-test"


def test_a_reachable_bucket_passes_and_a_missing_one_is_one_line(bucket):
    scheme = bucket[0].split(":")[0]
    storage.check_bucket(f"{bucket[0]}/runs")
    with pytest.raises(SpecError, match=rf"^storage.path: the bucket 'no-such-bucket' of {scheme}://no-such-bucket/runs "
                                        "does not exist"):
        storage.check_bucket(f"{scheme}://no-such-bucket/runs")


@pytest.mark.slow  # pyarrow retries the dead address for ~6 s
def test_an_unreachable_bucket_is_one_line(s3, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{s.getsockname()[1]}")
    with pytest.raises(SpecError) as error:
        storage.check_bucket(f"s3://{s3}/runs")
    assert str(error.value).startswith(f"storage.path: s3://{s3}/runs is unreachable: ") and "\n" not in str(error.value)


def test_missing_credentials_are_one_line_before_any_request(s3, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", NO_FILES)
    monkeypatch.setenv("AWS_CONFIG_FILE", NO_FILES)
    with pytest.raises(SpecError, match=r"^storage.path: s3://\S+ needs AWS credentials and none were found on this "
                                        r"machine; set AWS_ACCESS_KEY_ID"):
        storage.check_bucket(f"s3://{s3}/runs")
    monkeypatch.setenv("AWS_PROFILE", "work")  # a profile is credentials as far as this check can tell
    assert storage.credentials_found("s3")


def test_missing_google_credentials_are_one_line_before_any_request(monkeypatch, tmp_path):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # a gcloud folder without application-default credentials
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # not a Google VM: no metadata server to ask
    with pytest.raises(SpecError, match=r"^storage.path: gs://b/runs needs Google Cloud credentials and none were found "
                                        r"on this machine; run `gcloud auth application-default login`"):
        storage.check_bucket("gs://b/runs")


def test_bucket_training_and_sweep_jobs_are_told_their_bucket_and_an_rl_job_is_mirrored(tmp_path):
    job = tmp_path / "j.yaml"
    job.write_text(yaml.safe_dump({"name": "j", "model": {"name": "mlp"}, "data": {"name": "digits"}}))
    sub = prepare(str(job), None, ["storage.path=gs://bucket/runs", "storage.name=r1"], ["train", "tune"])
    scratch = storage.scratch_for("gs://bucket/runs")
    assert entrypoint(sub, "_dl_ray_job/j.yaml") == (
        f"env DL_RAY_STORAGE_URI=gs://bucket/runs dl-ray train _dl_ray_job/j.yaml --set storage.path=gs://bucket/runs "
        f"--set storage.name=r1 --set storage.path={scratch}")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"kind": "sweep", "name": "s", "base": "j.yaml", "tune": {"space": {}}}))
    sub = prepare(str(sweep), None, ["storage.path=gs://bucket/runs"], ["train", "tune"])
    assert entrypoint(sub, "_dl_ray_job/s.yaml") == (
        f"env DL_RAY_STORAGE_URI=gs://bucket/runs dl-ray tune _dl_ray_job/s.yaml --set storage.path=gs://bucket/runs "
        f"--set storage.path={scratch}")
    rl = tmp_path / "rl.yaml"
    rl.write_text(yaml.safe_dump({"kind": "dqn", "name": "rl", "env": {"id": "CartPole-v1"}}))
    sub = prepare(str(rl), None, ["storage.path=gs://bucket/runs"], ["train", "tune", "dqn"])
    assert entrypoint(sub, "_dl_ray_job/rl.yaml").startswith(f"python -m dl_ray.cluster.mirror gs://bucket/runs {scratch} rl -- ")


def test_submitting_an_evaluate_sweep_to_a_bucket_looks_for_its_run_there_and_refuses_one_it_lacks(s3, tmp_path, capsys,
                                                                                                    monkeypatch):
    from dl_ray.cli import main

    sweep = tmp_path / "beam.yaml"
    sweep.write_text(yaml.safe_dump({"kind": "sweep", "name": "beam", "tune": {
        "trial": "evaluate", "checkpoint": "dates_attention", "metric": "val/accuracy",
        "space": {"model.beam_width": {"grid": [1, 3]}}}}))
    monkeypatch.setenv("COLUMNS", "200")
    code = main(["submit", str(sweep), "--set", f"storage.path=s3://{s3}/runs", "--address", "http://127.0.0.1:9"])
    err = capsys.readouterr().err  # the dry run, told the bucket as the cluster will be, found no run there
    assert code == 2 and err == (f"error: tune.checkpoint: s3://{s3}/runs/dates_attention holds no file (expected a run "
                                 "folder or a checkpoint_epoch_NNNN folder)\n")
    assert os.environ.get(STORAGE_ENV) is None
