"""How many nodes a cluster has or may grow to (Ray's autoscaler v1 and v2, or none), and an address that answers
but is not a Ray dashboard."""
from __future__ import annotations

import http.server
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from dl_ray.cluster import ClusterError, storage
from dl_ray.cluster.client import connect
from dl_ray.spec import SpecError, StorageSpec


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
