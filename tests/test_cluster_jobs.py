"""``dl-ray submit`` / ``dl-ray jobs`` against a real 2-node Ray cluster on this machine.

The cluster (head + a node joined with ``ray start --address``, token auth on, dashboard on
127.0.0.1) comes from ``cluster/local-test-cluster.sh``: ``.ci/run`` starts it once and exports
``DL_RAY_TEST_CLUSTER``; run alone, this module starts and stops its own.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import ROOT, write_job

SCRIPT = ROOT / "cluster" / "local-test-cluster.sh"
pytestmark = pytest.mark.slow  # a 2-node Ray cluster and Ray Jobs
DIGITS = {"model": {"name": "mlp", "hidden": [64]}, "data": {"name": "digits"},
          "optimizer": {"name": "adam", "lr": 0.01}, "training": {"epochs": 3, "batch_size": 128}}


@dataclass
class Cluster:
    folder: Path
    address: str
    token_path: str

    def cli(self, *args: str, timeout: float = 180, **env: str) -> tuple[int, str, str]:
        """``dl-ray ARGS`` in a fresh process that reaches this cluster through RAY_ADDRESS and the token file."""
        full_env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
        full_env |= {"RAY_ADDRESS": self.address, "RAY_AUTH_TOKEN_PATH": self.token_path, "COLUMNS": "200", **env}
        proc = subprocess.run([sys.executable, "-m", "dl_ray.cli", *args], capture_output=True, text=True, cwd=ROOT,
                              env=full_env, timeout=timeout, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def client(self):
        from ray.job_submission import JobSubmissionClient

        token = Path(self.token_path).read_text().strip()
        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {token}"})

    def submission_ids(self) -> set[str]:
        return {j.submission_id for j in self.client().list_jobs() if j.submission_id}

    def alive_actors(self, job_id: str) -> int:
        """Actors of this job's driver that Ray reports alive (a sweep's trials, Ray Train workers...)."""
        driver = self.client().get_job_info(job_id).job_id
        params = [("filter_keys", "job_id"), ("filter_predicates", "="), ("filter_values", driver),
                  ("filter_keys", "state"), ("filter_predicates", "="), ("filter_values", "ALIVE"), ("detail", "false")]
        token = Path(self.token_path).read_text().strip()
        reply = requests.get(f"{self.address}/api/v0/actors", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        return len(reply.json()["data"]["result"]["result"])

    def wait_until(self, what: str, check, timeout_s: float = 120) -> None:
        """Poll the cluster's state API: Ray has no event a client can wait on for actors appearing or going."""
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            time.sleep(0.5)

    def wait_for_log(self, job_id: str, text: str, timeout_s: float = 120) -> str:
        """Follow the job's log stream until ``text`` shows (the job is then certainly running it)."""
        import asyncio

        async def follow() -> str:
            seen = ""
            async for chunk in self.client().tail_job_logs(job_id):  # ends when the job ends
                seen += chunk
                if text in seen:
                    return seen
            raise AssertionError(f"{job_id} ended ({self.client().get_job_status(job_id)}) before {text!r} showed:\n{seen}")

        try:
            return asyncio.run(asyncio.wait_for(follow(), timeout_s))
        except TimeoutError:
            raise AssertionError(f"{text!r} never showed in the logs of {job_id} within {timeout_s:.0f} s") from None


@pytest.fixture(scope="module")
def cluster():
    folder = os.environ.get("DL_RAY_TEST_CLUSTER")
    ours = not folder
    if ours:
        env = {**os.environ, "PYTHON": sys.executable}
        up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, env=env, timeout=240, cwd=ROOT, check=False)
        assert up.returncode == 0, up.stderr
        folder = up.stdout.strip().rpartition("DL_RAY_TEST_CLUSTER=")[2]
    state = json.loads((Path(folder) / "cluster.json").read_text())
    yield Cluster(Path(folder), state["address"], state["token_path"])
    if ours:
        subprocess.run(["bash", str(SCRIPT), "down", folder], env={**os.environ, "PYTHON": sys.executable}, timeout=120, check=True)


def test_cluster_has_two_nodes_token_auth_and_a_loopback_dashboard(cluster, monkeypatch):
    from dl_ray.cluster.local import alive_nodes

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", cluster.token_path)
    assert alive_nodes(cluster.address) == 2
    assert requests.get(f"{cluster.address}/api/jobs/", timeout=5).status_code == 401  # no token, no entry
    port = int(cluster.address.rsplit(":", 1)[1])
    listening = [c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]
    assert listening == ["127.0.0.1"]


def test_submit_follows_logs_to_success_and_writes_the_run_folder(cluster, tmp_path):
    job = write_job(tmp_path, "digits_mlp", **DIGITS)
    code, out, err = cluster.cli("submit", str(job), "--follow", WANDB_API_KEY="not-a-real-key", WANDB_ENTITY="someone")
    assert code == 0, err
    job_id = out.splitlines()[0]
    assert job_id.startswith("train-digits_mlp-")
    assert "epoch   3/3" in out and "final metrics" in out  # the job's own output, streamed
    assert f"{job_id}: SUCCEEDED" in err
    run = tmp_path / "runs" / "digits_mlp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final"]["test/accuracy"] > 0.85, summary
    # the job's output outlives the cluster: it is in the run folder too
    kept = (run / "job.log").read_text()
    assert kept.startswith(f"==== dl-ray job {job_id} on ") and "epoch   3/3" in kept and "final metrics" in kept
    assert f"its output is also kept in {run / 'job.log'}" in err
    # Ray's own client lines stay out without --verbose; the job's page in the dashboard is named
    assert "Uploading package" not in err + out and "WebSocket closed" not in err + out and "INFO" not in err, err
    assert f"dashboard: {cluster.address}/#/jobs/{job_id}" in err
    token = Path(cluster.token_path).read_text().strip()
    page = requests.get(f"{cluster.address}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert page.ok and page.json()["submission_id"] == job_id  # what that page loads

    code, out, _ = cluster.cli("jobs", "status", job_id)
    assert code == 0 and f"{job_id}: SUCCEEDED" in out and "command: dl-ray train _dl_ray_job/digits_mlp.yaml" in out
    assert f"output kept in: {run / 'job.log'}" in out
    assert "not-a-real-key" not in out
    code, out, _ = cluster.cli("jobs", "list", COLUMNS="80")
    assert code == 0 and sum(job_id in line for line in out.splitlines()) == 1  # whole, on one line
    assert all(len(line) <= 80 for line in out.splitlines()), out
    code, out, _ = cluster.cli("jobs", "logs", job_id)
    assert code == 0 and "bias/variance" in out
    # W&B settings travel as the job's environment variables; the key only for tracking.wandb: online (this job is not)
    env_vars = cluster.client().get_job_info(job_id).runtime_env["env_vars"]
    assert env_vars["WANDB_ENTITY"] == "someone" and "WANDB_API_KEY" not in env_vars
    assert "not sent: WANDB_API_KEY (tracking.wandb is not online)" in err


def test_a_failing_job_reports_failed_with_the_error_in_its_logs(cluster, tmp_path):
    job = write_job(tmp_path, "diverges", **{**DIGITS, "optimizer": {"name": "sgd", "lr": 1.0e30}})
    code, out, err = cluster.cli("submit", str(job), "--follow")
    assert code == 1, out + err
    job_id = out.splitlines()[0]
    assert f"{job_id}: FAILED" in err
    code, out, _ = cluster.cli("jobs", "logs", job_id)
    assert "the loss became NaN/inf" in out
    assert "the loss became NaN/inf" in (tmp_path / "runs" / "diverges" / "job.log").read_text()
    code, out, _ = cluster.cli("jobs", "status", job_id)
    assert code == 0 and "FAILED" in out


def test_stop_stops_a_running_sweep(cluster, tmp_path):
    sweep = write_job(tmp_path, "long_sweep", kind="sweep", **{**DIGITS, "training": {"epochs": 500, "batch_size": 16}},
                      storage={"path": str(tmp_path / "runs"), "shared": True},  # both nodes see this machine's /tmp
                      tune={"metric": "val/accuracy", "num_samples": 8, "scheduler": "fifo",
                            "space": {"optimizer.lr": {"loguniform": [1.0e-3, 3.0e-2]}}})
    code, out, err = cluster.cli("submit", str(sweep))
    assert code == 0, err
    job_id = out.strip()
    assert job_id.startswith("tune-long_sweep-")
    cluster.wait_for_log(job_id, "sweep long_sweep")
    cluster.wait_until("the sweep runs trials", lambda: cluster.alive_actors(job_id) > 0)
    code, out, err = cluster.cli("jobs", "stop", job_id)
    assert code == 0 and f"{job_id}: STOPPED" in out, out + err
    assert str(cluster.client().get_job_status(job_id)) == "STOPPED"
    cluster.wait_until("the sweep's trials are gone", lambda: cluster.alive_actors(job_id) == 0, timeout_s=60)
    kept = (tmp_path / "runs" / "long_sweep" / "job.log").read_text()  # a stopped job's output is kept too
    assert kept.startswith(f"==== dl-ray job {job_id} on ") and "sweep long_sweep" in kept


def test_multi_node_run_on_node_local_storage_is_refused_before_submitting(cluster, tmp_path):
    job = write_job(tmp_path, "two_workers", **DIGITS, scaling={"num_workers": 2})
    before = cluster.submission_ids()
    code, _, err = cluster.cli("submit", str(job))
    assert code == 2
    assert "node-local" in err and "2 nodes" in err and "storage.shared=true" in err and "Traceback" not in err
    code, _, err = cluster.cli("submit", str(job), "--set", "storage.path=runs")
    assert code == 2 and "is relative" in err
    assert cluster.submission_ids() == before


def test_a_project_over_rays_upload_limit_is_refused_before_upload(cluster, tmp_path):
    job = write_job(tmp_path, "too_big", **DIGITS)
    before = cluster.submission_ids()
    code, _, err = cluster.cli("submit", str(job), RAY_max_grpc_message_size="20000")
    assert code == 2 and "over Ray's upload limit of 19.5 KiB" in err and "biggest: dl_ray" in err, err
    assert cluster.submission_ids() == before


def test_unknown_ids_wrong_tokens_and_unreachable_clusters_are_one_line_errors(cluster, tmp_path):
    for action in ("status", "logs", "stop"):
        code, _, err = cluster.cli("jobs", action, "raysubmit_nope")
        assert code == 2 and err.strip() == f"error: no job 'raysubmit_nope' on {cluster.address}; `dl-ray jobs list` shows its jobs"
    code, _, err = cluster.cli("jobs", "list", RAY_AUTH_TOKEN="wrong-token")
    assert code == 2 and "refused the token" in err and len(err.strip().splitlines()) == 1

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    job = write_job(tmp_path, "nowhere", **DIGITS)
    for args in (("jobs", "list"), ("jobs", "logs", "x", "--follow"), ("submit", str(job))):
        code, _, err = cluster.cli(*args, "--address", dead)
        assert code == 2 and err.startswith(f"error: cannot reach a Ray cluster at {dead} (connection refused)"), err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
