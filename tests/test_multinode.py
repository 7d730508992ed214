"""Training on a real 2-node Ray cluster on this machine with a shared run folder: one worker per node writes one
run folder, and when a node is lost mid-run (``training.max_failures: 1``) the job resumes from the last checkpoint
on the node left; a ``storage.shared`` path a node does not see stops the job before anything trains; a run kept in
a bucket (a local GCS server every node reaches) trains with one worker per node and a rerun on a node that never
saw it resumes from the bucket.

The head has 2 CPUs and the second node 1; while a job holds one head CPU (a "blocker" entrypoint), a 2-worker job
(1 CPU each) can only run one worker per node, and once the blocker is gone the head alone fits both again.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import socket
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from dl_ray.cluster import local, storage
from tests.conftest import write_job
from tests.test_cluster_jobs import Cluster
from tests.buckets import bucket_tree, gcs_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow  # a 2-node Ray cluster, Ray Jobs, Ray Train on both nodes
DIGITS = {"model": {"name": "mlp", "hidden": [32]}, "data": {"name": "digits"}, "optimizer": {"name": "adam", "lr": 0.01},
          "tracking": {"wandb": "disabled"}, "scaling": {"num_workers": 2, "cpus_per_worker": 1}}
BLOCKER = "import sys; print('holding a head CPU', flush=True); open(sys.argv[1]).read()"  # until the test writes
# A lost node is marked dead after 5 failed health checks; Ray's 10 s timeout per check makes that ~50 s for a
# killed node, 2 s makes it ~10 s (a live raylet answers in milliseconds, even on a busy 2-core machine).
NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "2000"}


@pytest.fixture(scope="module")
def cluster(gcs_server) -> Iterator[Cluster]:
    """The 2 nodes, started with the credentials and endpoint of the GCS server (as cloud nodes have their own)."""
    folder = Path(tempfile.mkdtemp(prefix="dlray-mn-", dir="/tmp"))  # short: Ray's socket paths live under it
    nodes_env = {**gcs_server, **NODE_DEATH}
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", *nodes_env)}
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(folder / "auth_token")
    try:
        os.environ.update(nodes_env)  # the nodes' environment, not this process's: its tests say what they send
        state = local.up(folder, nodes=2, cpus=[2, 1], port=0, dashboard_port=0, temp_dir=folder / "ray")
        restore(saved, keys=nodes_env)
        yield Cluster(folder, state.address, state.token_path)
    finally:
        local.down(folder, timeout_s=5)  # after its jobs the head takes ~30 s to end on SIGTERM; the test needs no grace
        shutil.rmtree(folder, ignore_errors=True)
        restore(saved)


def restore(saved: dict[str, str | None], keys=None) -> None:
    for key in keys or saved:
        os.environ.pop(key, None) if saved[key] is None else os.environ.__setitem__(key, saved[key])


@contextmanager
def holding_a_head_cpu(cluster: Cluster, tmp_path: Path) -> Iterator[callable]:
    """A job whose entrypoint holds one CPU of the head until released (the yielded function)."""
    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    job_id = cluster.client().submit_job(entrypoint=shlex.join(["python", "-c", BLOCKER, str(fifo)]),
                                         entrypoint_num_cpus=1, entrypoint_resources={"node:__internal_head__": 0.001})
    cluster.wait_for_log(job_id, "holding a head CPU")

    def release():
        if fifo.exists():
            with open(fifo, "w"):  # the blocker has it open for reading: this returns at once
                pass
            fifo.unlink()

    try:
        yield release
    finally:
        release()
        cluster.wait_until("the blocker ends", lambda: str(cluster.client().get_job_status(job_id)) != "RUNNING")


def train_workers(cluster: Cluster, job_id: str) -> list[dict]:
    """The Ray Train worker actors a job ran (alive or dead), with their node ids."""
    driver = cluster.client().get_job_info(job_id).job_id
    params = [("filter_keys", "job_id"), ("filter_predicates", "="), ("filter_values", driver), ("detail", "true")]
    token = Path(cluster.token_path).read_text().strip()
    reply = requests.get(f"{cluster.address}/api/v0/actors", params=params, headers={"Authorization": f"Bearer {token}"},
                         timeout=10)
    return [a for a in reply.json()["data"]["result"]["result"] if a["class_name"] == "RayTrainWorker"]


def nodes(cluster: Cluster) -> dict[str, bool]:
    """Node id -> is head."""
    token = Path(cluster.token_path).read_text().strip()
    reply = requests.get(f"{cluster.address}/api/v0/nodes", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return {n["node_id"]: n["is_head_node"] for n in reply.json()["data"]["result"]["result"]}


def latest_held(run: Path) -> int:
    """The epoch of the newest checkpoint in Ray Train's record of those it registered (written once every worker
    reported it; a shared run folder is Ray's storage folder), 0 before the first."""
    path = run / "checkpoint_manager_snapshot.json"
    return max(map(int, re.findall(r"checkpoint_epoch_(\d+)", path.read_text() if path.is_file() else "")), default=0)


def metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_shared_path_one_node_does_not_see_stops_the_job_before_training(cluster, tmp_path):
    # /proc/self/cwd is each process's own working folder: on each node, the job's copy of the project
    job = write_job(tmp_path, "not_shared", **DIGITS, training={"epochs": 2, "batch_size": 128},
                    storage={"path": "/proc/self/cwd/runs", "shared": True})
    code, out, err = cluster.cli("submit", str(job), "--follow")
    assert code == 1, out + err
    lines = [line for line in out.splitlines() if line.startswith("error: storage.path")]
    assert len(lines) == 1 and re.search(r"is not one folder on every node: node \S+ \([0-9a-f]{8}\) does not see the "
                                         r"probe files node\(s\) [0-9a-f]{8} wrote there", lines[0]), out
    assert "epoch   1/" not in out  # stopped before training


def test_a_bucket_unreachable_or_without_credentials_is_refused_before_upload(cluster, tmp_path):
    job = write_job(tmp_path, "to_bucket", **DIGITS, training={"epochs": 1})
    before = cluster.submission_ids()
    with socket.socket() as s:  # an S3 endpoint nobody answers at
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    no_files = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
                "AWS_EC2_METADATA_DISABLED": "true"}
    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for env, start in (({**no_files, **keys, "AWS_ENDPOINT_URL": dead}, "error: storage.path: s3://b/runs is unreachable: "),
                       (no_files, "error: storage.path: s3://b/runs needs AWS credentials and none were found")):
        code, _, err = cluster.cli("submit", str(job), "--set", "storage.path=s3://b/runs", **env)
        assert code == 2 and err.startswith(start) and len(err.strip().splitlines()) == 1, err
    assert cluster.submission_ids() == before


def test_a_run_kept_in_a_bucket_trains_one_worker_per_node_and_a_rerun_elsewhere_resumes(cluster, gcs_server, tmp_path,
                                                                                        monkeypatch, request):
    import secrets

    from pyarrow import fs

    for name, value in gcs_server.items():  # this process reaches the bucket too (to make it, to read it)
        monkeypatch.setenv(name, value)
    name = f"mn-{secrets.token_hex(4)}"
    fs.GcsFileSystem().create_dir(name)
    uri = f"gs://{name}/runs"
    request.addfinalizer(lambda: shutil.rmtree(storage.scratch_for(uri), ignore_errors=True))
    job = write_job(tmp_path, "in_bucket", **DIGITS, training={"epochs": 2, "batch_size": 128, "keep_checkpoints": 1})
    with holding_a_head_cpu(cluster, tmp_path):
        job_id = submit_and_wait(cluster, job, f"storage.path={uri}")
    assert len({w["node_id"] for w in train_workers(cluster, job_id)}) == 2  # one worker on each node
    tree = bucket_tree(f"{uri}/in_bucket")
    summary = json.loads(tree["summary.json"])
    assert summary["status"] == "completed" and summary["final"]["test/accuracy"] > 0.8, summary
    assert {"metrics.csv", "spec.yaml", "checkpoint_epoch_0002/state.pt"} <= set(tree), sorted(tree)

    shutil.rmtree(storage.scratch_for(uri))  # the rerun lands on nodes that never saw the run
    submit_and_wait(cluster, job, f"storage.path={uri}", "training.epochs=3")
    again = bucket_tree(f"{uri}/in_bucket")
    rows = list(csv.DictReader(again["metrics.csv"].decode().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["train/loss"] == list(csv.DictReader(tree["metrics.csv"].decode().splitlines()))[0]["train/loss"]
    assert "checkpoint_epoch_0003/state.pt" in again and "checkpoint_epoch_0002/state.pt" not in again, sorted(again)


def submit_and_wait(cluster: Cluster, job: Path, *overrides: str) -> str:
    """``dl-ray submit`` the job (with this process's environment: it reaches the bucket), wait until it succeeded."""
    code, out, err = cluster.cli("submit", str(job), *[a for o in overrides for a in ("--set", o)])
    assert code == 0, err
    job_id = out.strip()
    cluster.wait_until("the job ends", lambda: str(cluster.client().get_job_status(job_id)) in ("SUCCEEDED", "FAILED"),
                       timeout_s=180)
    assert str(cluster.client().get_job_status(job_id)) == "SUCCEEDED", cluster.client().get_job_logs(job_id)[-3000:]
    return job_id


def test_a_node_lost_mid_run_resumes_from_the_last_checkpoint_on_the_node_left(cluster, tmp_path):
    # last in this module: the cluster keeps one node after it
    runs = tmp_path / "runs"
    run = runs / "node_lost"
    # 40 epochs of ~0.3 s (a report per epoch, taken at the controller's 0.2 s polls): the run is still going when
    # the test, polling every 0.5 s, sees checkpoint 2 or later held and kills the node
    job = write_job(tmp_path, "node_lost", **DIGITS, training={"epochs": 40, "batch_size": 64, "max_failures": 1},
                    storage={"path": str(runs), "shared": True})
    with holding_a_head_cpu(cluster, tmp_path) as release:
        code, out, err = cluster.cli("submit", str(job))
        assert code == 0, err
        job_id = out.strip()
        cluster.wait_until("Ray Train holds checkpoint 2 or later", lambda: latest_held(run) >= 2)
        before = metrics(run)[:2]
        release()  # the head can hold both workers from now on
        local.stop_node(cluster.folder, 1)
    cluster.wait_until("the job ends", lambda: str(cluster.client().get_job_status(job_id)) in ("SUCCEEDED", "FAILED"),
                       timeout_s=240)
    logs = cluster.client().get_job_logs(job_id)
    assert str(cluster.client().get_job_status(job_id)) == "SUCCEEDED", logs[-3000:]
    head = next(node for node, is_head in nodes(cluster).items() if is_head)
    on_head = sorted(w["node_id"] == head for w in train_workers(cluster, job_id))
    assert on_head == [False, True, True, True], on_head  # one per node, then both of the new group on the head
    after = metrics(run)
    assert [r["epoch"] for r in after] == [str(e) for e in range(1, 41)]
    kept = [{k: row[k] for k in first} for row, first in zip(after, before)]
    assert kept == before  # epochs 1-2 as first written (timings too): resumed from a checkpoint, not started over
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 40 and summary["final"]["test/accuracy"] > 0.8
    assert (run / "checkpoint_epoch_0040" / "state.pt").is_file()
    assert not list(runs.glob(".dl_ray_probe*")) and not (run / ".dl_ray_probe").exists()  # the probe cleaned up
