"""A Ray cluster on this machine: ``dl-ray cluster up|down``.

``up`` runs ``ray start --head --block`` (and ``ray start --address --block`` for
extra nodes) as background processes, with token authentication on and the
dashboard / Jobs API bound to 127.0.0.1 only. Their ids and the cluster's
addresses go to ``<folder>/cluster.json``; ``down`` stops exactly those
processes (a ``--block`` process takes its Ray processes down with it), never
other Ray clusters on the machine.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import requests

from dl_ray.cluster import ClusterError
from dl_ray.cluster.auth import auth_headers, ensure_token

STATE_FILE = "cluster.json"
DEFAULT_FOLDER = Path.home() / ".cache" / "dl_ray" / "cluster"
LOCALHOST = "127.0.0.1"


@dataclass
class LocalCluster:
    folder: str
    address: str
    """Dashboard / Jobs API URL (what ``--address`` and ``RAY_ADDRESS`` take)."""
    gcs_address: str
    """Ray core address (``ray.init(address=...)``, ``ray start --address``)."""
    token_path: str | None
    nodes: int
    pids: list[int]
    """``ray start --block`` processes, head first."""
    address_files: list[str] = field(default_factory=list)
    """Where each ``ray start`` recorded the cluster as the machine's latest (``<Ray temp folder>/ray_current_cluster``,
    which a bare ``ray.init()`` joins); ``down`` removes the records that still name this cluster."""

    @classmethod
    def load(cls, folder: Path) -> LocalCluster | None:
        path = folder / STATE_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None

    def save(self) -> None:
        (Path(self.folder) / STATE_FILE).write_text(json.dumps(asdict(self), indent=1))


def up(folder: Path = DEFAULT_FOLDER, nodes: int = 1, cpus: int | list[int] | None = None, gpus: int | None = None,
       port: int = 6379, dashboard_port: int = 8265, temp_dir: Path | None = None, timeout_s: float = 120,
       head_args: tuple[str, ...] = ()) -> LocalCluster:
    """Start a head (and ``nodes - 1`` more nodes) on 127.0.0.1; port 0 = any free port; ``cpus``: per node, or
    one figure for each node; ``head_args``: more ``ray start`` options for the head (e.g. an autoscaling config)."""
    folder = folder.absolute()
    folder.mkdir(parents=True, exist_ok=True)
    running = LocalCluster.load(folder)
    if running and any(_alive(pid) for pid in running.pids):
        raise ClusterError(f"a cluster from {folder} is already up at {running.address}; `dl-ray cluster down` first")
    token_file = ensure_token()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # jobs run this env's dl-ray
    if token_file:
        env["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    port, dashboard_port = port or _free_port(), dashboard_port or _free_port()
    gcs_address, address = f"{LOCALHOST}:{port}", f"http://{LOCALHOST}:{dashboard_port}"
    cluster = LocalCluster(str(folder), address, gcs_address, str(token_file) if token_file else None, nodes, [])

    common = ["--block", "--node-ip-address", LOCALHOST, "--disable-usage-stats"]
    node_cpus = cpus if isinstance(cpus, list) else [cpus] * nodes
    if gpus is not None:
        common += ["--num-gpus", str(gpus)]
    head = ["--head", "--port", str(port), "--include-dashboard", "true", "--dashboard-host", LOCALHOST,
            "--dashboard-port", str(dashboard_port), "--ray-client-server-port", str(_free_port()), *head_args]
    try:
        for i in range(nodes):
            role = head if i == 0 else ["--address", gcs_address]
            cpu_flag = ["--num-cpus", str(node_cpus[i])] if node_cpus[i] is not None else []
            node = [*role, *common, *cpu_flag, *_node_ports(), *_temp_dir(temp_dir, i)]
            cluster.address_files.append(_address_file(temp_dir, i))
            proc = _start(folder / f"node{i}.log", node, env)
            cluster.pids.append(proc.pid)
            cluster.save()
            _wait_for_nodes(cluster, i + 1, folder / f"node{i}.log", timeout_s, proc)
    except BaseException:
        down(folder)
        raise
    return cluster


def down(folder: Path = DEFAULT_FOLDER, timeout_s: float = 30) -> LocalCluster | None:
    """Stop the cluster recorded in ``folder`` (extra nodes first); None when there was none."""
    cluster = LocalCluster.load(folder.absolute())
    if cluster is None:
        return None
    for pid in reversed(cluster.pids):
        _stop(pid, timeout_s)
    # Stopping `ray start --block` leaves its record behind (only `ray stop` clears it, and that stops every Ray
    # on the machine): a bare ray.init() would then spend a minute trying to reach this dead cluster.
    for path in map(Path, cluster.address_files or [_address_file(None, 0)]):
        if path.is_file() and _names(path.read_text().strip(), cluster.gcs_address):  # another cluster's record stays
            path.unlink()
    (Path(cluster.folder) / STATE_FILE).unlink(missing_ok=True)
    return cluster


def stop_node(folder: Path, index: int) -> None:
    """Stop node ``index`` (1 = the first node after the head) of the cluster recorded in ``folder`` as a lost
    machine goes: every process of the node killed at once, nothing told (a SIGTERM'd ``ray start`` waits for the
    workers on it, ~30 s, and tells the head it leaves); the rest of the cluster stays up and finds out."""
    cluster = LocalCluster.load(folder.absolute())
    if cluster is None or not 0 < index < len(cluster.pids):
        raise ClusterError(f"no node {index} in the cluster recorded in {folder} (node 0 is the head)")
    if _alive(cluster.pids[index]):
        os.killpg(cluster.pids[index], signal.SIGKILL)  # its own session (start_new_session): only what it started


# ---------------------------------------------------------------- processes


def _start(log: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return proc


def _stop(pid: int, timeout_s: float) -> None:
    """SIGTERM a ``ray start --block`` process (it stops its Ray processes), SIGKILL its group if it hangs."""
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)  # its own session (start_new_session): only what it started


def _alive(pid: int) -> bool:
    """True while ``pid`` is one of our ``ray start`` processes (a recycled pid is not)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "ray.scripts.scripts" in proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


# Ray refuses to start a node whose component ports repeat or fall in its worker range (10002-19999). A probed port
# is free again once its probe closes, so the OS may hand it out twice (seen: two components given 51305), and an
# ephemeral range (ip_local_port_range) may include the worker range.
RAY_WORKER_PORTS = range(10002, 20000)
_handed_out: set[int] = set()


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind((LOCALHOST, 0))
            port = s.getsockname()[1]
        if port not in RAY_WORKER_PORTS and port not in _handed_out:
            _handed_out.add(port)
            return port


def _node_ports() -> list[str]:
    """Ports each node binds: all free ones, so nodes (and other Ray instances) on one machine never collide."""
    flags = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
    return [item for flag in flags for item in (flag, str(_free_port()))]


def _temp_dir(head_dir: Path | None, node: int) -> list[str]:
    """Each node its own session folder: nodes sharing one unpack the same job package into the same place, and
    one node's unpacking deletes files another node's job is importing."""
    if node == 0:
        return ["--temp-dir", str(head_dir)] if head_dir else []
    base = head_dir or Path("/tmp/ray")  # Ray's default
    return ["--temp-dir", str(base.with_name(f"{base.name}_node{node}"))]


def _address_file(head_dir: Path | None, node: int) -> str:
    """Where ``ray start`` records node ``node``'s cluster: its temp folder, or Ray's default one (which follows
    RAY_TMPDIR / TMPDIR, as this process and the ``ray start`` it runs share one environment)."""
    from ray._common.utils import get_ray_address_file  # Ray's own rule (ray is pinned to 2.60.x)

    flags = _temp_dir(head_dir, node)
    return get_ray_address_file(flags[1] if flags else None)


def _names(record: str, gcs_address: str) -> bool:
    """Whether Ray's record names our cluster: Ray writes the GCS address with 127.0.0.1 resolved to one of this
    machine's addresses, so the port must match and the host be this machine."""
    host, _, port = record.rpartition(":")
    here = {"localhost", LOCALHOST} | {a.address for addresses in psutil.net_if_addrs().values() for a in addresses}
    return port == gcs_address.rpartition(":")[2] and host.strip("[]") in here


def _wait_for_nodes(cluster: LocalCluster, count: int, log: Path, timeout_s: float, proc: subprocess.Popen) -> None:
    """Until the cluster shows ``count`` nodes; ``proc``, the ``ray start`` just started, is asked directly (its pid's
    command line, what ``_alive`` reads for a cluster another process started, was seen without it at start)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise ClusterError(f"ray start failed ({log}): {' | '.join(tail)}")
        if alive_nodes(cluster.address) >= count:
            return
        time.sleep(1)
    raise ClusterError(f"the cluster did not show {count} node(s) within {timeout_s:.0f} s (see {log})")


def alive_nodes(address: str) -> int:
    """Nodes the cluster reports alive (0 when its dashboard does not answer yet)."""
    try:
        r = requests.get(f"{address}/api/v0/nodes", params={"limit": 1000}, headers=auth_headers(), timeout=5)
        rows = r.json()["data"]["result"]["result"] if r.ok else []
    except (requests.RequestException, ValueError, KeyError):
        return 0
    return sum(1 for node in rows if node.get("state") == "ALIVE")
