"""Run folders in a bucket, against a local S3 server speaking the real protocol (moto), and the storage checks
made before a job is sent: unreachable bucket, missing credentials, an address that is not a Ray dashboard."""
from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from dl_ray.cluster import ClusterError, storage
from dl_ray.cluster.client import connect
from dl_ray.cluster.mirror import STORAGE_ENV, Mirror, delete_folder
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


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory):
    """A GCS server on a free port (gcp-storage-emulator, the JSON API): pyarrow's Google client (and so Ray Train)
    goes there when CLOUD_STORAGE_EMULATOR_ENDPOINT says so. It signs its requests with a service-account key made
    for the test, as on a machine with credentials (without any, the client waits on the metadata server)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from gcp_storage_emulator.server import create_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    key = tmp_path_factory.mktemp("gcs") / "service_account.json"
    key.write_text(json.dumps({"type": "service_account", "project_id": "test", "private_key_id": "k1",
                               "private_key": pem, "client_email": "dl-ray-test@test.iam.gserviceaccount.com",
                               "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"}))
    yield gcs_env(f"http://127.0.0.1:{port}", key)
    server.stop()


def gcs_env(endpoint: str, key: Path) -> dict[str, str]:
    return {"CLOUD_STORAGE_EMULATOR_ENDPOINT": endpoint, "GOOGLE_APPLICATION_CREDENTIALS": str(key),
            "GOOGLE_CLOUD_PROJECT": "test"}


@pytest.fixture(params=["s3", "gs"])
def bucket(request, monkeypatch) -> tuple[str, dict[str, str]]:
    """A fresh bucket on a local server speaking the cloud's protocol, as a URI (s3://b-..., gs://b-...), and the
    environment that reaches it (set here too)."""
    import secrets

    from pyarrow import fs

    env = s3_env(request.getfixturevalue("s3_server")) if request.param == "s3" else request.getfixturevalue("gcs_server")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    name = f"b-{secrets.token_hex(4)}"
    if request.param == "s3":
        fs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir(name)
    else:
        fs.GcsFileSystem().create_dir(name)
    return f"{request.param}://{name}", env


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


def test_a_run_folder_goes_to_the_bucket_whole_overwrites_and_deletes_there(bucket, tmp_path):
    uri, here = f"{bucket[0]}/runs/r1", tmp_path / "node_a" / "r1"
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


def test_a_run_started_again_on_a_node_keeps_nothing_the_bucket_lacks(bucket, tmp_path):
    from dl_ray.cluster.mirror import for_run

    uri = f"{bucket[0]}/runs/r1"
    here = tmp_path / "r1"
    write(here, "spec.yaml", b"name: r1\n")
    Mirror(uri, here).push()
    write(here, "checkpoint_epoch_0003/state.pt", b"left by an earlier run whose bucket folder was deleted")
    write(here, "metrics.csv", b"epoch\n1\n2\n3\n")
    assert for_run(here, uri, fresh=True, checkpoints=False) is not None  # whatever that mirror lists: all go
    assert local_tree(here) == {"spec.yaml": b"name: r1\n"} and not (here / "checkpoint_epoch_0003").exists()


def test_another_node_resumes_from_the_bucket_and_follows_its_pruning(bucket, tmp_path):
    from pyarrow import fs

    uri = f"{bucket[0]}/runs/r1"
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
    delete_folder(filesystem, f"{root}/checkpoint_epoch_0001")  # Ray Train prunes a checkpoint in the bucket
    with filesystem.open_output_stream(f"{root}/checkpoint_epoch_0003/state.pt") as out:  # and writes a new one
        out.write(b"three")
    write(second, "spec.yaml", b"name: r1\nepochs: 5\n")  # written here since the last pull: stays
    assert mirror.pull() == 1
    assert local_tree(second) == {"spec.yaml": b"name: r1\nepochs: 5\n", "checkpoint_epoch_0002/state.pt": b"two",
                                  "checkpoint_epoch_0003/state.pt": b"three"}
    assert not (second / "checkpoint_epoch_0001").exists()
    assert mirror.push() == 1 and bucket_tree(uri)["spec.yaml"] == b"name: r1\nepochs: 5\n"


def test_the_driver_never_sends_back_a_checkpoint_pruned_in_the_bucket(bucket, tmp_path):
    from pyarrow import fs

    uri, here = f"{bucket[0]}/runs/r1", tmp_path / "r1"  # one node's folder, written by rank 0 and by the driver
    rank0, driver = Mirror(uri, here), Mirror(uri, here)
    write(here, "checkpoint_epoch_0001/state.pt", b"one")
    write(here, "metrics.csv", b"epoch\n1\n")
    assert rank0.push() == 2
    filesystem, root = fs.FileSystem.from_uri(uri)
    delete_folder(filesystem, f"{root}/checkpoint_epoch_0001")  # Ray Train prunes it after the next checkpoint
    write(here, "spec.yaml", b"name: r1\n")
    driver.pull()
    assert driver.push(checkpoints=False) == 1  # spec.yaml; metrics.csv is rank 0's, as in the bucket
    assert set(bucket_tree(uri)) == {"metrics.csv", "spec.yaml"}


def test_rank_0_never_sends_back_rays_snapshot_or_a_pruned_checkpoint_another_process_fetched_again(bucket, tmp_path):
    """Two workers of one node share its scratch folder. After the last epoch's report rank 0 fetches the bucket
    while Ray has yet to write its new snapshot and prune the older checkpoint; rank 1 then fetches the same files
    again (a new copy, so a new mtime). Rank 0's next push must not take that stale copy for its own write: sent
    back, the old snapshot and a file of the pruned checkpoint made a rerun restore that pruned checkpoint."""
    from pyarrow import fs

    uri, here = f"{bucket[0]}/runs/r1", tmp_path / "r1"
    filesystem, root = fs.FileSystem.from_uri(uri)
    ray_writes = {"checkpoint_manager_snapshot.json": b'{"latest": 1}', "checkpoint_epoch_0001/state.pt": b"one",
                  "checkpoint_epoch_0001/metrics.json": b"{}"}
    for name, data in ray_writes.items():  # Ray Train's writes
        with filesystem.open_output_stream(f"{root}/{name}") as f:
            f.write(data)
    rank0 = Mirror(uri, here)
    rank0.pull()
    with filesystem.open_output_stream(f"{root}/checkpoint_manager_snapshot.json") as f:
        f.write(b'{"latest": 2}')  # Ray registers epoch 2 ...
    delete_folder(filesystem, f"{root}/checkpoint_epoch_0001")  # ... and prunes epoch 1
    for name, data in ray_writes.items():  # rank 1's copies of what rank 0 fetched, made just before
        (here / name).unlink()
        write(here, name, data)
    write(here, "metrics.csv", b"epoch\n2\n")
    assert rank0.push(checkpoints=False) == 1  # its own metrics.csv, nothing of Ray's
    tree = bucket_tree(uri)
    assert tree["checkpoint_manager_snapshot.json"] == b'{"latest": 2}' and set(tree) == {
        "checkpoint_manager_snapshot.json", "metrics.csv"}


def test_a_worker_restoring_a_bucket_checkpoint_reads_it_whole_while_another_deletes_rays_shared_copy(s3, tmp_path):
    """Ray's ``Checkpoint.as_directory`` downloads a bucket checkpoint into one folder per node, and the worker that
    finishes reading first deletes it, holding Ray's lock on it; a worker of the same node that comes in then waits for
    that lock and is handed the folder empty (a rerun's start failed so, now and then, with two workers on a node).
    Here another worker is mid-deletion: Ray's folder is empty and its lock held. ``checkpoints.opened`` still reads
    the whole checkpoint, from a folder of its own, without waiting."""
    from ray.air._internal.filelock import TempFileLock
    from ray.train import Checkpoint

    from dl_ray.train import checkpoints

    saved = {"state.pt": os.urandom(100_000), "metrics.json": b'{"epoch": 2}'}
    for name, data in saved.items():
        write(tmp_path / "checkpoint_epoch_0002", name, data)
    Mirror(f"s3://{s3}/run", tmp_path).push()
    checkpoint = Checkpoint(f"s3://{s3}/run/checkpoint_epoch_0002")
    shared = Path(checkpoint._get_temporary_checkpoint_dir())
    shared.mkdir()
    read = {}

    def restore():
        with checkpoints.opened(checkpoint) as folder:
            read.update(folder=folder, tree=local_tree(folder))

    try:
        with TempFileLock(str(shared), timeout=0):  # the other worker, deleting Ray's copy
            reader = threading.Thread(target=restore)
            reader.start()
            reader.join(timeout=30)  # as_directory would wait here for the lock, then read an empty folder
            assert not reader.is_alive(), "the restore waited on another worker's lock"
    finally:
        shared.rmdir()
    assert read["tree"] == saved and read["folder"] != shared and not read["folder"].exists()


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


def test_autoscaling_clusters_count_as_several_nodes():
    workers = {"scaling": {"num_workers": 2}}
    storage.check_nodes(StorageSpec(path="/data/runs"), "train", workers, nodes=1, address="A")  # fixed, one node
    with pytest.raises(SpecError, match=r"node-local .* has 1 node\(s\) and an autoscaler that adds more and "
                                        r"scaling.num_workers=2 places Ray Train workers"):
        storage.check_nodes(StorageSpec(path="/data/runs"), "train", workers, nodes=1, address="A", autoscaling=True)
    # a bucket holds a run written from any node (Ray Train / Tune write the checkpoints, each writer its own files)
    for command in ("train", "tune", "dqn"):
        storage.check_nodes(StorageSpec(path="s3://b/runs"), command, workers, nodes=3, address="A", autoscaling=True)


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


STATUS = """======== Autoscaler status: 2026-12-05 21:28:50.123456 ========
Node status
---------------------------------------------------------------
Active:
 {active}
Idle:
 {idle}
Pending:
 {pending}
Recent failures:
 (no failures)

Resources
---------------------------------------------------------------
Total Usage:
 0.0/2.0 CPU
 0B/1.00GiB memory
"""


def test_a_cluster_started_by_hand_is_not_taken_for_an_autoscaling_one():
    # `ray start` by hand: Ray's monitor reports each node under a type named after its id
    node = "node_" + "2c9e6f3b0e4d4a0f" * 3 + "9c1d2e3f4a5b6c7d"
    fixed = STATUS.format(active=f"1 {node}", idle=f"1 node_{'ab' * 28}", pending="(no pending nodes)")
    assert not storage.node_types_managed(fixed)
    head = STATUS.format(active="(no active nodes)", idle="1 ray.head.default", pending="(no pending nodes)")
    assert storage.node_types_managed(head)
    growing = STATUS.format(active=f"1 {node}", idle="(no idle nodes)", pending="ray.worker.gpu, 1 launching")
    assert storage.node_types_managed(growing)
    assert not storage.node_types_managed("No cluster status.")  # no monitor has reported (yet): nothing says it grows


FAKE_HEAD = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"  # Ray's fake provider's head node id
FAKE_AUTOSCALER = {  # Ray's own test provider: an autoscaler that "launches" nodes as processes on this machine
    "cluster_name": "fake", "max_workers": 2, "head_node_type": "ray.head.default", "auth": {}, "docker": {},
    "provider": {"type": "external", "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
                 "use_node_id_as_ip": True, "disable_node_updaters": True, "disable_launch_config_check": True},
    "available_node_types": {"ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
                             "ray.worker.cpu": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0,
                                                "max_workers": 2}},
    "upscaling_speed": 1.0, "idle_timeout_minutes": 1, "file_mounts": {}, "cluster_synced_files": [],
    "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
    "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts_sync_continuously": False,
    "rsync_exclude": [], "rsync_filter": []}


def reported(address: str, timeout_s: float = 60) -> str:
    """The status once the monitor has reported the head (it reports every AUTOSCALER_UPDATE_INTERVAL_S)."""
    deadline = time.monotonic() + timeout_s
    while not re.search(r"^ 1 \S+$", text := storage.cluster_status(address), re.M):
        assert time.monotonic() < deadline, f"no node in the cluster status after {timeout_s} s: {text!r}"
        time.sleep(0.5)
    return text


@pytest.mark.slow
@pytest.mark.parametrize("autoscaler", [None, "v1", "v2"])
def test_autoscaling_is_seen_with_rays_autoscaler_v1_and_v2_and_not_on_a_cluster_started_by_hand(
        tmp_path, monkeypatch, autoscaler):
    from dl_ray.cluster import local

    head_args: tuple[str, ...] = ()
    monkeypatch.setenv("AUTOSCALER_UPDATE_INTERVAL_S", "1")
    if autoscaler:
        config = tmp_path / "fake.yaml"
        config.write_text(yaml.safe_dump(FAKE_AUTOSCALER))
        head_args = (f"--autoscaling-config={config}",)
        monkeypatch.setenv("RAY_FAKE_CLUSTER", "1")
        monkeypatch.setenv("RAY_NODE_TYPE_NAME", "ray.head.default")  # what `ray up` sets on the head it starts
    if autoscaler == "v2":
        for name in ("RAY_CLOUD_INSTANCE_ID", "RAY_OVERRIDE_NODE_ID_FOR_TESTING"):
            monkeypatch.setenv(name, FAKE_HEAD)
        monkeypatch.setenv("RAY_enable_autoscaler_v2", "1")
    temp = Path(tempfile.mkdtemp(prefix="dlr", dir="/tmp"))  # Ray's socket paths must stay short
    cluster = local.up(tmp_path / "c", cpus=1, port=0, dashboard_port=0, temp_dir=temp, head_args=head_args)
    try:
        text = reported(cluster.address)
        assert storage.autoscaling(cluster.address) is bool(autoscaler), text
    finally:
        local.down(tmp_path / "c")
        shutil.rmtree(temp, ignore_errors=True)
