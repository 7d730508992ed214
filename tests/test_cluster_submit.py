"""What ``dl-ray submit`` decides before (or without) a cluster: the job log tee, which W&B variables travel,
``--gpus`` on an RL job, Ray's own log lines, and a ``jobs list`` that fits the terminal without wrapping ids.

The real cluster round trip of these (job.log written on the cluster, the dashboard URL, no Ray INFO lines) is in
tests/test_cluster_jobs.py.
"""
from __future__ import annotations

import logging
import socket
import subprocess
import sys

import pytest
from rich.console import Console

from dl_ray.cluster import joblog
from dl_ray.cluster.env import driver_env, wandb_env
from tests.conftest import ROOT

SHELL = {"WANDB_API_KEY": "k-123", "WANDB_ENTITY": "someone", "WANDB_PROJECT": "p", "WANDB_SERVICE": "2-99-tcp",
         "DL_RAY_CHAOS": "1", "HOME": "/root"}


def tee(dest: str, *code: str, submission_id: str = "job-1") -> subprocess.CompletedProcess:
    script = ";".join(code)
    return subprocess.run([sys.executable, "-m", "dl_ray.cluster.joblog", "--id", submission_id, dest, "--",
                           sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_the_job_log_passes_output_on_and_appends_every_attempt(tmp_path, as_uri):
    path = tmp_path / "runs" / "job_a" / "job.log"  # the run folder need not exist yet
    dest = path.as_uri() if as_uri else str(path)
    first = tee(dest, "print('epoch 1/2')", "import sys; print('boom', file=sys.stderr); sys.exit(3)")
    assert first.returncode == 3  # the job's exit code is the wrapper's
    assert first.stdout.splitlines()[1:] == ["epoch 1/2", "boom"]  # passed on, stderr merged in order
    second = tee(dest, "print('epoch 2/2')", submission_id="job-2")
    assert second.returncode == 0
    log = path.read_text().splitlines()
    assert log[0].startswith("==== dl-ray job job-1 on ") and log[1:3] == ["epoch 1/2", "boom"]
    assert log[3].startswith("==== dl-ray job job-2 on ") and log[4:] == ["epoch 2/2"]


def test_the_job_log_goes_into_the_run_folder_and_wraps_the_command_for_a_shell(tmp_path):
    dest = joblog.destination("s3://bucket/runs/", "mnist")
    assert dest == "s3://bucket/runs/mnist/job.log"
    wrapped = joblog.wrap("dl-ray train '_dl_ray_job/my job.yaml'", str(tmp_path / "a b" / "job.log"), "train-x")
    out = subprocess.run(["bash", "-c", wrapped.replace("dl-ray train", "echo", 1)], capture_output=True, text=True,
                         cwd=ROOT, env={"PATH": f"{sys.executable.rsplit('/', 1)[0]}:/usr/bin:/bin"}, timeout=60, check=True)
    assert out.stdout.splitlines()[1] == "_dl_ray_job/my job.yaml"
    assert joblog.log_of(wrapped) == str(tmp_path / "a b" / "job.log") and joblog.log_of("dl-ray train x.yaml") is None
    assert joblog.unwrap(wrapped) == "dl-ray train '_dl_ray_job/my job.yaml'"
    assert (tmp_path / "a b" / "job.log").read_text().splitlines()[1] == "_dl_ray_job/my job.yaml"


def test_wandb_secrets_travel_only_for_online_runs():
    assert wandb_env(SHELL, online=False) == {"WANDB_ENTITY": "someone", "WANDB_PROJECT": "p"}
    assert wandb_env(SHELL, online=True) == {"WANDB_API_KEY": "k-123", "WANDB_ENTITY": "someone", "WANDB_PROJECT": "p"}


@pytest.mark.parametrize("mode, address, in_a_job, key_sent", [
    ("online", "10.0.0.5:6379", False, True),    # a shell joining a cluster: the workers have no other way
    ("offline", "10.0.0.5:6379", False, False),  # offline runs never need it
    ("online", None, False, False),              # a local Ray: its workers inherit this environment
    ("online", "auto", True, False),             # a submitted job: its runtime_env, or the cluster, holds it already
])
def test_a_driver_passes_the_wandb_key_to_its_workers_only_where_they_lack_it(mode, address, in_a_job, key_sent):
    environ = {**SHELL, **({"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"} if in_a_job else {})}
    env = driver_env(environ, mode, address)
    assert ("WANDB_API_KEY" in env) == key_sent
    assert env["DL_RAY_CHAOS"] == "1" and env["WANDB_ENTITY"] == "someone" and "WANDB_SERVICE" not in env


@pytest.fixture
def dead_address():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def submit(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """``dl-ray submit`` in this process: these are refused before any cluster is reached (no process to kill)."""
    from dl_ray.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    code = main(["submit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_gpus_on_a_dqn_job_puts_its_learner_on_a_gpu(tmp_path, dead_address, capsys, monkeypatch):
    code, out, err = submit(capsys, monkeypatch, str(ROOT / "jobs/rl/dqn_cartpole.yaml"), "--gpus", "1",
                            "--address", dead_address, "--set", f"storage.path={tmp_path}")
    lines = err.strip().splitlines()
    # validated by the job's own dry run with learner.device=cuda; then the (dead) cluster is the only problem
    assert lines[0] == "--gpus 1: the DQN learner on a GPU (learner.device=cuda); actors keep actors.gpus_per_actor"
    assert code == 2 and lines[1].startswith(f"error: cannot reach a Ray cluster at {dead_address}") and len(lines) == 2
    assert "scaling" not in err


@pytest.mark.parametrize("job, args, message", [
    ("dqn_cartpole", ("--gpus", "2"), "error: --gpus: 2, but a DQN job trains one learner on one GPU at most; allowed: 1 "
     "(the learner on a GPU, learner.device=cuda) or 0 (on CPU); the actors' share: --set actors.gpus_per_actor=0.1"),
    ("dqn_cartpole", ("--workers", "4"), "error: --workers: a dqn job has no Ray Train workers; its parallelism is its "
     "actors: --set actors.num_actors=4"),
    ("q_learning_frozenlake", ("--gpus", "1"), "error: --gpus: a q_learning job is a table updated on one CPU; "
     "it takes no GPU (drop --gpus)"),
])
def test_what_gpus_cannot_mean_for_an_rl_job_is_one_line(tmp_path, dead_address, capsys, monkeypatch, job, args, message):
    code, out, err = submit(capsys, monkeypatch, str(ROOT / f"jobs/rl/{job}.yaml"), *args, "--address", dead_address,
                            "--set", f"storage.path={tmp_path}")
    assert code == 2 and err.strip() == message and not out  # refused before reaching for the cluster


@pytest.mark.parametrize("verbose", [False, True])
def test_rays_client_lines_show_only_when_verbose(verbose):
    from dl_ray.cluster.commands import RAY_CLIENT_LOGGERS, quiet_ray_client

    quiet_ray_client(verbose)
    # the loggers of "Uploading package ...", "WebSocket closed ...", "Creating a file package ..."
    assert all(logging.getLogger(name).isEnabledFor(logging.INFO) == verbose for name in RAY_CLIENT_LOGGERS)
    quiet_ray_client(False)


def test_jobs_list_fits_80_columns_with_whole_ids(capsys):
    from ray.job_submission import JobDetails, JobStatus, JobType

    from dl_ray.cluster.jobs import list_jobs

    ids = ["train-mnist_lenet_with_augmentation-20261205-195154-ab12", "tune-mnist_lr_decay_dropout-20261205-201500-0f0f"]
    entry = "python -m dl_ray.cluster.joblog --id {id} /mnt/shared/runs/x/job.log -- dl-ray train _dl_ray_job/x.yaml"
    details = [JobDetails(type=JobType.SUBMISSION, submission_id=i, entrypoint=entry.format(id=i), status=JobStatus.SUCCEEDED,
                          start_time=1_796_500_000_000 + n, end_time=1_796_500_100_000) for n, i in enumerate(ids)]

    class Cluster:  # Ray's client answers list_jobs() with JobDetails; that is all list_jobs asks of it
        def list_jobs(self):
            return details

    for width in (80, 200):
        list_jobs(Cluster(), "http://127.0.0.1:8265", Console(width=width, file=sys.stdout))
        lines = capsys.readouterr().out.splitlines()
        assert all(len(line) <= width for line in lines)
        for i in ids:
            assert sum(i in line for line in lines) == 1  # each id whole, on one line
        assert ("dl-ray train _dl_ray_job/x.yaml" in "".join(lines)) == (width == 200)
        assert ("joblog" in "".join(lines)) is False  # the wrappers are not the job's command
