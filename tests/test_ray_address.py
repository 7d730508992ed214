"""RAY_ADDRESS: empty means unset, anything that is not an address is one line (exit 2, nothing written), and
without it dl-ray starts its own local Ray, even where `dl-ray cluster up` recorded a cluster (running or not)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dl_ray.cli import main
from tests.conftest import ROOT, write_job

DIGITS = ROOT / "jobs" / "sweeps" / "digits_tiny.yaml"
CARTPOLE = ROOT / "jobs" / "rl" / "dqn_cartpole.yaml"
DRIVER_FORMS = "allowed: host:port, ray://host:port, auto, local"
NOT_ADDRESSES = ["not an address", "127.0.0.1", "head:port", "localhost:99999", "ray://", "a b:6379", "auto:"]


@pytest.fixture(scope="module")
def no_ray_yet():
    """Ray must not be up in this process: the tests below check that nothing starts it, or that dl-ray does."""
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance is already up in this process")
    yield ray
    ray.shutdown()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


@pytest.mark.parametrize("value", NOT_ADDRESSES)
def test_train_with_workers_refuses_a_ray_address_that_is_no_address(no_ray_yet, tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("RAY_ADDRESS", value)
    job = write_job(tmp_path, "job", model={"name": "mlp", "hidden": [8]}, data={"name": "digits"}, training={"epochs": 1})
    assert main(["train", str(job), "--set", "scaling.num_workers=1"]) == 2
    assert one_error_line(capsys) == f"error: RAY_ADDRESS={value.strip()!r} is not a Ray address; {DRIVER_FORMS} " \
                                     "(unset or empty: a local Ray on this machine)"
    assert not (tmp_path / "runs").exists() and not no_ray_yet.is_initialized()
    # --dry-run starts nothing, so it does not read RAY_ADDRESS (dl-ray submit runs it with RAY_ADDRESS = a dashboard URL)
    assert main(["train", str(job), "--set", "scaling.num_workers=1", "--dry-run"]) == 0


@pytest.mark.parametrize("command, job, run_folder", [("tune", DIGITS, "digits_tiny"), ("dqn", CARTPOLE, "dqn_cartpole")])
def test_tune_and_dqn_refuse_a_ray_address_that_is_no_address(no_ray_yet, tmp_path, capsys, monkeypatch, command, job, run_folder):
    monkeypatch.setenv("RAY_ADDRESS", "not an address")
    assert main([command, str(job), "--set", f"storage.path={tmp_path}"]) == 2
    assert one_error_line(capsys).startswith(f"error: RAY_ADDRESS='not an address' is not a Ray address; {DRIVER_FORMS}")
    assert not (tmp_path / run_folder).exists() and not no_ray_yet.is_initialized()


def test_a_jobs_dashboard_url_is_refused_by_tune_before_anything_is_written(no_ray_yet, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    assert main(["tune", str(DIGITS), "--set", f"storage.path={tmp_path}"]) == 2
    assert "is a Ray Jobs (dashboard) address: send the job with `dl-ray submit`" in one_error_line(capsys)
    assert not (tmp_path / "digits_tiny").exists()


def test_jobs_commands_take_an_empty_ray_address_as_unset_and_refuse_one_that_is_no_address(tmp_path, capsys, monkeypatch):
    from dl_ray.cluster import local

    monkeypatch.setattr(local, "DEFAULT_FOLDER", tmp_path / "no-cluster-here")
    monkeypatch.setenv("RAY_ADDRESS", "  ")
    assert main(["jobs", "list"]) == 2
    assert one_error_line(capsys).startswith("error: no cluster address: pass --address http://127.0.0.1:8265")
    monkeypatch.setenv("RAY_ADDRESS", "not an address")
    assert main(["jobs", "list"]) == 2
    assert one_error_line(capsys) == ("error: RAY_ADDRESS='not an address' is not a Ray dashboard address; "
                                      "allowed: http://host:port, https://host[:port][/path], host:port")


@pytest.mark.parametrize("value, address", [("", None), ("  ", None), (" 10.0.0.5:6379 ", "10.0.0.5:6379"),
                                            ("[::1]:6379", "[::1]:6379"), ("ray://head:10001", "ray://head:10001"),
                                            ("auto", "auto"), ("local", "local")])
def test_ray_address_forms_a_driver_takes(monkeypatch, value, address):
    from dl_ray.ray_address import driver_address

    monkeypatch.setenv("RAY_ADDRESS", value)
    assert driver_address() == address  # None: ensure_ray starts a local Ray (address="local")


@pytest.mark.slow  # a local Ray and a sweep
def test_an_empty_ray_address_is_unset_a_sweep_starts_a_local_ray(no_ray_yet, tmp_path, capsys, monkeypatch):
    """Ray's ray.init(address="") is 'Invalid address format': dl-ray reads empty as unset."""
    monkeypatch.setenv("RAY_ADDRESS", "")
    assert main(["tune", str(DIGITS), "--set", f"storage.path={tmp_path}", "--set", "tune.num_samples=1",
                 "--set", "training.epochs=1", "--set", "tracking.wandb=disabled"]) == 0, capsys.readouterr().err
    assert (tmp_path / "digits_tiny" / "results.csv").is_file() and no_ray_yet.is_initialized()


def own_ray_address(env: dict[str, str]) -> str:
    """The GCS address of the Ray that dl-ray's ensure_ray() joins or starts, in a fresh process."""
    script = ("from dl_ray.train.runner import ensure_ray; ensure_ray(); import ray; "
              "print(ray.get_runtime_context().gcs_address)")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_after_cluster_up_and_down_dl_ray_starts_its_own_local_ray_at_once():
    """Ray's default ray.init() joins the cluster `ray start` last recorded in its temp folder: silently while that
    cluster runs, and after ~80 s of retries once it is gone. dl-ray starts its own Ray unless RAY_ADDRESS says
    otherwise, and `dl-ray cluster down` removes the record. RAY_TMPDIR keeps the record (and every Ray session
    here) out of /tmp/ray, which other Ray instances on this machine use."""
    tmp = Path(tempfile.mkdtemp(prefix="dlr", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env |= {"RAY_TMPDIR": str(tmp), "RAY_AUTH_TOKEN_PATH": str(tmp / "auth_token"), "COLUMNS": "200"}
    folder, record = tmp / "cluster", tmp / "ray" / "ray_current_cluster"

    def dl_ray(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dl_ray.cli", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=240)

    try:
        up = dl_ray("cluster", "up", "--folder", str(folder), "--cpus", "1", "--port", "0", "--dashboard-port", "0")
        try:
            assert up.returncode == 0, up.stderr
            port = json.loads((folder / "cluster.json").read_text())["gcs_address"].rpartition(":")[2]
            cluster = record.read_text().strip()  # what a bare ray.init() would join (Ray writes this machine's IP)
            assert cluster.endswith(f":{port}")
            assert own_ray_address(env) != cluster  # not joined silently
        finally:
            down = dl_ray("cluster", "down", "--folder", str(folder))
        assert down.returncode == 0, down.stderr
        assert not record.exists()  # cluster down leaves no record of a cluster that no longer runs

        record.write_text(cluster)  # as a cluster stopped any other way leaves it: dl-ray still starts its own Ray
        started = time.monotonic()
        assert own_ray_address(env) != cluster
        assert time.monotonic() - started < 60  # a start, not a minute of retries against the dead address
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # Ray's session folders; a leftover socket must not fail the test


def test_free_ports_for_ray_never_repeat_nor_fall_in_rays_worker_range(monkeypatch):
    """The OS may hand out a just-probed port again, or one in 10002-19999: Ray then refuses to start the node."""
    from dl_ray.cluster import local

    offered = iter([51305, 51305, 12000, 51306])

    class Probe:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            self.port = next(offered)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(local.socket, "socket", Probe)
    monkeypatch.setattr(local, "_handed_out", set())
    assert [local._free_port(), local._free_port()] == [51305, 51306]
