"""A training job whose run folder lives in a bucket (local S3 and GCS servers speaking the real protocols), run as
`dl-ray submit` runs it on a cluster: the command with a scratch folder and ``DL_RAY_STORAGE_URI``."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from dl_ray.cluster import storage
from dl_ray.cluster.mirror import STORAGE_ENV
from tests.conftest import ROOT, write_job
from tests.buckets import bucket, bucket_tree, gcs_server, s3_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # two short training runs each
DIGITS = {"model": {"name": "mlp", "hidden": [32]}, "data": {"name": "digits"},
          "optimizer": {"name": "adam", "lr": 0.01}, "tracking": {"wandb": "disabled"}}


def train(job, bucket_uri: str, bucket_env: dict[str, str], *overrides: str) -> subprocess.CompletedProcess:
    """The command a submitted bucket job runs on the cluster (see dl_ray.cluster.submit.entrypoint)."""
    scratch = storage.scratch_for(bucket_uri)
    args = [a for o in (f"storage.path={scratch}", *overrides) for a in ("--set", o)]
    env = {**os.environ, **bucket_env, STORAGE_ENV: bucket_uri, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "dl_ray.cli", "train", str(job), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300, check=False)


def rows(tree: dict[str, bytes]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(tree["metrics.csv"].decode())))


# Local mode on S3 here; Ray Train workers on GCS run in tests/test_multinode.py (one per node, and a rerun that
# resumes), and the mirror tests in test_storage_mirror.py run both schemes: a Ray Train run costs ~60 s of CI.
@pytest.mark.parametrize("workers, bucket", [(0, "s3")], indirect=["bucket"], ids=["local_mode-s3"])
def test_a_bucket_run_writes_its_folder_there_and_a_rerun_on_a_fresh_node_resumes(workers, bucket, tmp_path, request):
    uri, env = f"{bucket[0]}/runs", bucket[1]
    request.addfinalizer(lambda: shutil.rmtree(storage.scratch_for(uri), ignore_errors=True))
    job = write_job(tmp_path, "bucket_run", **DIGITS, scaling={"num_workers": workers},
                    training={"epochs": 2, "batch_size": 128, "keep_checkpoints": 1})
    first = train(job, uri, env)
    assert first.returncode == 0, first.stdout + first.stderr
    tree = bucket_tree(f"{uri}/bucket_run")
    summary = json.loads(tree["summary.json"])
    assert summary["status"] == "completed" and summary["final"]["test/accuracy"] > 0.8, summary
    assert {"spec.yaml", "curves.png", "checkpoint_epoch_0002/state.pt"} <= set(tree), sorted(tree)
    assert not any(name.startswith("checkpoint_epoch_0001/") for name in tree)  # pruned (keep 1): deleted there too
    assert [r["epoch"] for r in rows(tree)] == ["1", "2"]

    shutil.rmtree(storage.scratch_for(uri))  # the rerun lands on a node that never saw the run
    second = train(job, uri, env, "training.epochs=3")
    assert second.returncode == 0, second.stdout + second.stderr
    again = bucket_tree(f"{uri}/bucket_run")
    assert [r["epoch"] for r in rows(again)] == ["1", "2", "3"]
    assert rows(again)[:2][0]["train/loss"] == rows(tree)[0]["train/loss"]  # epochs 1-2 kept, not redone
    assert json.loads(again["summary.json"])["epochs_run"] == 3
    assert "checkpoint_epoch_0003/state.pt" in again and "checkpoint_epoch_0002/state.pt" not in again, sorted(again)
