"""Run folders in a bucket, against a local S3 server speaking the real protocol (moto), and the storage checks
made before a job is sent: unreachable bucket, missing credentials, an address that is not a Ray dashboard."""
from __future__ import annotations

import http.server
import os
import socket
import threading
from pathlib import Path

import pytest

import yaml

from dl_ray.cluster import ClusterError, storage
from dl_ray.cluster.client import connect
from dl_ray.cluster.mirror import Mirror
from dl_ray.cluster.submit import entrypoint, prepare
from dl_ray.spec import SpecError, StorageSpec

NO_FILES = "/nonexistent/dl_ray-test"


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on a free port; pyarrow (and Ray Train) reach it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """Environment of a machine whose credentials reach the server; a fresh bucket per test."""
    import secrets

    from pyarrow import fs

    for name, value in s3_env(s3_server).items():
        monkeypatch.setenv(name, value)
    bucket = f"b-{secrets.token_hex(4)}"
    fs.S3FileSystem(endpoint_override=s3_server, allow_bucket_creation=True).create_dir(bucket)
    return bucket


def s3_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def bucket_tree(uri: str) -> dict[str, bytes]:
    """The bucket folder's files; fails on a folder with no file under it (an empty marker left by a delete)."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    tree = {}
    for info in (i for i in infos if i.type == fs.FileType.File):
        with filesystem.open_input_stream(info.path) as f:
            tree[info.path[len(root) + 1:]] = f.read()
    folders = {i.path[len(root) + 1:] for i in infos if i.type == fs.FileType.Directory}
    assert all(any(name.startswith(f"{folder}/") for name in tree) for folder in folders), (folders, sorted(tree))
    return tree


def local_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def write(root: Path, name: str, data: bytes) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)


def test_a_run_folder_goes_to_the_bucket_whole_overwrites_and_deletes_there(s3, tmp_path):
    uri, here = f"s3://{s3}/runs/r1", tmp_path / "node_a" / "r1"
    write(here, "metrics.csv", b"epoch\n1\n")
    write(here, "checkpoint_epoch_0001/state.pt", os.urandom(3 << 20))  # several multipart chunks
    write(here, "checkpoint_epoch_0002/state.pt", b"two")
    write(here, "metrics.tmp", b"half-written")
    mirror = Mirror(uri, here)
    assert mirror.push() == 3 and mirror.push() == 0  # nothing changed: nothing sent again
    assert bucket_tree(uri) == {k: v for k, v in local_tree(here).items() if k != "metrics.tmp"}

    write(here, "metrics.csv", b"epoch\n1\n2\n")  # rewritten
    write(here, "checkpoint_epoch_0003/state.pt", b"three")
    for path in (here / "checkpoint_epoch_0001").iterdir():  # pruned, as persist_local does
        path.unlink()
    (here / "checkpoint_epoch_0001").rmdir()
    assert mirror.push() == 2
    tree = bucket_tree(uri)
    assert tree == {k: v for k, v in local_tree(here).items() if k != "metrics.tmp"}, sorted(tree)  # no folder left


def test_another_node_resumes_from_the_bucket_and_follows_its_pruning(s3, tmp_path):
    from pyarrow import fs

    uri = f"s3://{s3}/runs/r1"
    first = tmp_path / "node_a" / "r1"
    write(first, "spec.yaml", b"name: r1\n")
    write(first, "checkpoint_epoch_0001/state.pt", b"one")
    write(first, "checkpoint_epoch_0002/state.pt", b"two")
    Mirror(uri, first).push()

    second = tmp_path / "node_b" / "r1"
    mirror = Mirror(uri, second)
    assert mirror.pull() == 3 and local_tree(second) == local_tree(first)
    assert mirror.pull() == 0 and mirror.push() == 0  # in step both ways

    filesystem, root = fs.FileSystem.from_uri(uri)
    filesystem.delete_dir(f"{root}/checkpoint_epoch_0001")  # Ray Train prunes a checkpoint in the bucket
    with filesystem.open_output_stream(f"{root}/checkpoint_epoch_0003/state.pt") as out:  # and writes a new one
        out.write(b"three")
    write(second, "spec.yaml", b"name: r1\nepochs: 5\n")  # written here since the last pull: stays
    assert mirror.pull() == 1
    assert local_tree(second) == {"spec.yaml": b"name: r1\nepochs: 5\n", "checkpoint_epoch_0002/state.pt": b"two",
                                  "checkpoint_epoch_0003/state.pt": b"three"}
    assert not (second / "checkpoint_epoch_0001").exists()
    assert mirror.push() == 1 and bucket_tree(uri)["spec.yaml"] == b"name: r1\nepochs: 5\n"


def test_the_driver_never_sends_back_a_checkpoint_pruned_in_the_bucket(s3, tmp_path):
    from pyarrow import fs

    uri, here = f"s3://{s3}/runs/r1", tmp_path / "r1"  # one node's folder, written by rank 0 and by the driver
    rank0, driver = Mirror(uri, here), Mirror(uri, here)
    write(here, "checkpoint_epoch_0001/state.pt", b"one")
    write(here, "metrics.csv", b"epoch\n1\n")
    assert rank0.push() == 2
    filesystem, root = fs.FileSystem.from_uri(uri)
    filesystem.delete_dir(f"{root}/checkpoint_epoch_0001")  # Ray Train prunes it after the next checkpoint
    write(here, "spec.yaml", b"name: r1\n")
    driver.pull()
    assert driver.push(checkpoints=False) == 1  # spec.yaml; metrics.csv is rank 0's, as in the bucket
    assert set(bucket_tree(uri)) == {"metrics.csv", "spec.yaml"}


def test_a_reachable_bucket_passes_and_a_missing_one_is_one_line(s3):
    storage.check_bucket(f"s3://{s3}/runs")
    with pytest.raises(SpecError, match=r"^storage.path: the bucket 'no-such-bucket' of s3://no-such-bucket/runs does not exist"):
        storage.check_bucket("s3://no-such-bucket/runs")


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


def test_a_bucket_training_job_is_told_its_bucket_and_other_jobs_are_mirrored(tmp_path):
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
    assert entrypoint(sub, "_dl_ray_job/s.yaml").startswith(f"python -m dl_ray.cluster.mirror gs://bucket/runs {scratch} s -- ")


def test_autoscaling_clusters_count_as_several_nodes():
    workers = {"scaling": {"num_workers": 2}}
    storage.check_nodes(StorageSpec(path="/data/runs"), "train", workers, nodes=1, address="A")  # fixed, one node
    with pytest.raises(SpecError, match=r"node-local .* has 1 node\(s\) and an autoscaler that adds more and "
                                        r"scaling.num_workers=2 places Ray Train workers"):
        storage.check_nodes(StorageSpec(path="/data/runs"), "train", workers, nodes=1, address="A", autoscaling=True)
    # a bucket holds a training run written from any node (Ray Train writes the checkpoints there itself)
    storage.check_nodes(StorageSpec(path="s3://b/runs"), "train", workers, nodes=3, address="A", autoscaling=True)
    with pytest.raises(SpecError, match="a bucket mirrored from the job's driver node"):
        storage.check_nodes(StorageSpec(path="s3://b/runs"), "tune", {}, nodes=1, address="A", autoscaling=True)


class _Answer(http.server.BaseHTTPRequestHandler):
    """Any web server: ``/api/version`` answered with what the test puts in ``replies``."""

    replies: dict[str, tuple[int, str]] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        code, body = self.replies[self.server.server_address[1]]
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("code,body", [(200, "<html>Grafana</html>"), (200, '{"version": "1.2"}'),
                                       (404, "not found"), (401, "Please log in")])
def test_an_address_that_is_not_a_ray_dashboard_is_one_line(code, body):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    address = f"http://127.0.0.1:{server.server_address[1]}"
    _Answer.replies[server.server_address[1]] = (code, body)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ClusterError) as error:
            connect(address)
    finally:
        server.shutdown()
    assert str(error.value).startswith(f"{address} answered HTTP {code} but is not a Ray dashboard")
    assert "\n" not in str(error.value)


LEGACY_STATUS = """======== Autoscaler status: 2026-12-05 21:28:50.123456 ========
Node status
---------------------------------------------------------------
Active:
 {active}
Pending:
 (no pending nodes)
Recent failures:
 (no failures)

Resources
---------------------------------------------------------------
Usage:
 0.0/2.0 CPU
 0B/1.00GiB memory
"""


def test_a_cluster_started_by_hand_is_not_taken_for_an_autoscaling_one():
    # `ray start` runs Ray's monitor read-only: it reports each node under a type named after its id
    node = "node_" + "2c9e6f3b0e4d4a0f" * 3 + "9c1d2e3f4a5b6c7d"
    fixed = {"autoscalingStatus": LEGACY_STATUS.format(active=f"1 {node}\n 1 node_{'ab' * 28}"),
             "clusterStatus": {"autoscalerReport": {"activeNodes": {"node01A2F3Cd5A34F0934068Bb0021446A60Bfd176Fc9": 1}}}}
    assert not storage.node_types_managed(fixed)
    launched = {"autoscalingStatus": LEGACY_STATUS.format(active="1 ray.head.default"),
                "clusterStatus": {"autoscalerReport": {"activeNodes": {"ray.head.default": 1},
                                                       "pendingLaunches": {"ray.worker.gpu": 1}}}}
    assert storage.node_types_managed(launched)
    assert not storage.node_types_managed({})  # no monitor has reported (yet): nothing says it grows
