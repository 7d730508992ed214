"""``dl-ray submit JOB.yaml``: send a job to a Ray cluster through the Jobs SDK.

The job runs there as the very command you would type here (``dl-ray train|tune|dqn
JOB.yaml --set ...``), in a copy of this project (:mod:`dl_ray.cluster.package`),
with your W&B settings passed as environment variables, never written to a file (the
API key only for ``tracking.wandb: online``: see :mod:`dl_ray.cluster.env`), its output
kept in the run folder's ``job.log`` (:mod:`dl_ray.cluster.joblog`).
Everything that can be checked here is checked before anything is uploaded.
"""
from __future__ import annotations

import os
import secrets
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dl_ray import kinds
from dl_ray.cluster import joblog, mirror, package, storage
from dl_ray.cluster.client import connect, explained
from dl_ray.cluster.env import wandb_env, withheld
from dl_ray.cluster.local import alive_nodes
from dl_ray.spec import SpecError, StorageSpec, apply_override, read_mapping

# A job file's kind shows in a section only that kind has; anything else is a training job.
JOB_ENV = {
    "PYTHONUNBUFFERED": "1", "COLUMNS": "120",  # live, unwrapped logs for `dl-ray jobs logs --follow`
    "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1",  # the job's ray.init(runtime_env=...) passes the same WANDB_* on: merge, not fail
    # `dl-ray jobs stop`: Ray's job supervisor (which runs in this env) SIGKILLs 3 s after SIGTERM by default, too
    # soon for a stopped sweep to write its results, summary and plots
    "RAY_JOB_STOP_WAIT_TIME_S": "30",
}


@dataclass
class Submission:
    job_file: Path
    command: str
    overrides: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    """The job file with the overrides applied (for the checks made here)."""

    @property
    def name(self) -> str:
        return str(self.raw.get("name") or self.job_file.stem)

    @property
    def run_name(self) -> str:
        return str((self.raw.get("storage") or {}).get("name") or self.name)

    @property
    def run_folder(self) -> str:
        """The run folder's name under storage.path: a sweep's is its name, a run's its storage.name or name."""
        return self.name if self.command == "tune" else self.run_name

    @property
    def wandb_online(self) -> bool:
        return (self.raw.get("tracking") or {}).get("wandb") == "online"

    @property
    def storage(self) -> StorageSpec:
        return storage.storage_of(self.raw)

    @property
    def job_overrides(self) -> list[str]:
        """The overrides the job runs with: yours, and a scratch folder in place of a bucket (see mirror)."""
        if self.storage.is_uri:
            return [*self.overrides, f"storage.path={storage.scratch_for(self.storage.path)}"]
        return self.overrides

    @property
    def env(self) -> dict[str, str]:
        """Variables the job's command runs with on the cluster: a training job or sweep sent to a bucket is told
        the bucket (Ray Train and Tune write there, each writer mirrors its files; see :mod:`dl_ray.cluster.mirror`)."""
        return {mirror.STORAGE_ENV: self.storage.path} if self.storage.is_uri and self.command in ("train", "tune") else {}

    def dry_run_argv(self) -> list[str]:
        """The job's own command with ``--dry-run``: validates the job here exactly as the cluster will read it
        (run with :attr:`env` set)."""
        return [self.command, str(self.job_file), *_as_set(self.job_overrides), "--dry-run"]


def prepare(job_file: str, command: str | None, overrides: list[str], known_commands: list[str]) -> Submission:
    path = Path(job_file)
    raw = read_mapping(path)
    base = path.parent / str(raw.get("base", ""))
    if raw.get("base") and base.is_file():  # a sweep over another job file: that file's sections count too
        from dl_ray.tune.spec import merge_job

        raw = merge_job(yaml.safe_load(base.read_text()) or {}, raw)
    for item in overrides:
        apply_override(raw, item)
    command = command or detect_command(raw)
    if command not in known_commands:
        raise SpecError(f"--command: {command!r} is not a dl-ray command that runs a job file; allowed: {', '.join(known_commands)}")
    submission = Submission(path, command, list(overrides), raw)
    storage.check_path(submission.storage)
    return submission


def resource_overrides(command: str, raw: dict[str, Any], gpus: int | None, workers: int | None) -> tuple[list[str], str | None]:
    """``--gpus`` / ``--workers`` as the job's own fields: (the overrides, a line saying what they mean for an RL job).

    A training job or sweep gets N Ray Train workers (one GPU each with --gpus). An RL job has no Ray Train
    workers: its one learner takes a GPU or not (learner.device), and its parallelism is its actors."""
    if command != "dqn":
        if gpus is not None:
            return [f"scaling.num_workers={gpus}", "scaling.use_gpu=true"], None
        return ([f"scaling.num_workers={workers}"] if workers is not None else []), None
    kind = kinds.kind_of(raw)
    if workers is not None:
        raise SpecError(f"--workers: a {kind} job has no Ray Train workers; its parallelism is its actors: "
                        f"--set actors.num_actors={workers}")
    if gpus is None:
        return [], None
    if kind == "q_learning":
        raise SpecError("--gpus: a q_learning job is a table updated on one CPU; it takes no GPU (drop --gpus)")
    if gpus > 1:
        raise SpecError(f"--gpus: {gpus}, but a DQN job trains one learner on one GPU at most; allowed: 1 (the learner "
                        "on a GPU, learner.device=cuda) or 0 (on CPU); the actors' share: --set actors.gpus_per_actor=0.1")
    device = "cuda" if gpus else "cpu"
    return [f"learner.device={device}"], (f"--gpus {gpus}: the DQN learner on {'a GPU' if gpus else 'CPU'} "
                                          f"(learner.device={device}); actors keep actors.gpus_per_actor")


def detect_command(raw: dict[str, Any]) -> str:
    """The command that runs this job file, by its ``kind`` (dl_ray/kinds.py)."""
    return kinds.command_for(raw)


def send(sub: Submission, address: str, say: Callable[[str], None]) -> str:
    """Package, check against the cluster at ``address``, upload and submit; returns the submission id."""
    files = package.collect(sub.job_file, sub.raw)
    base = sub.raw.get("base")  # a sweep file may name its job relative to itself
    if files.job_entry.startswith(package.JOB_FOLDER) and isinstance(base, str) and not Path(base).is_absolute():
        raise SpecError(f"base: {base!r} is relative to {sub.job_file}, which lies outside the project {files.root} and "
                        "travels alone; move the file into the project")
    client = connect(address)
    storage.check_nodes(sub.storage, sub.command, sub.raw, alive_nodes(address), address, storage.autoscaling(address))
    if sub.storage.is_uri:
        storage.check_bucket(sub.storage.path)

    submission_id = f"{sub.command}-{sub.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}".lower()
    log = joblog.destination(sub.storage.path, sub.run_folder)
    inner = entrypoint(sub, files.job_entry)
    command = joblog.wrap(inner, log, submission_id)
    env_vars = wandb_env(os.environ, sub.wandb_online)
    with tempfile.TemporaryDirectory(prefix="dl_ray-submit-") as tmp:
        zip_path = files.write_zip(Path(tmp) / "project.zip")
        say(f"packed {files.where} ({len(files.files)} files, {zip_path.stat().st_size / 1024:.0f} KiB zipped); "
            f"env from your shell: {', '.join(sorted(env_vars)) or 'none'}")
        for line in _secrets_notes(sub.wandb_online, env_vars):
            say(line)
        with explained(address):
            client.submit_job(
                entrypoint=command,
                submission_id=submission_id,
                runtime_env={"working_dir": str(zip_path), "env_vars": {**JOB_ENV, **env_vars}},
                metadata={"dl_ray.job": sub.name, "dl_ray.command": sub.command},
            )
    say(f"submitted to {address}: {inner}")
    say(f"its output is also kept in {log}")
    return submission_id


def _secrets_notes(online: bool, sent: dict[str, str]) -> list[str]:
    """What became of the W&B key: withheld (offline run), sent (readable by token holders), or left to the cluster."""
    if kept := withheld(os.environ, online):
        return [f"not sent: {', '.join(kept)} (tracking.wandb is not online)"]
    if not online:
        return []
    if "WANDB_API_KEY" in sent:
        return ["sent WANDB_API_KEY in the job's runtime_env, which every holder of the cluster token can read; "
                "keep it on the cluster instead (README: secrets) and unset it here"]
    return ["W&B online with no WANDB_API_KEY here: the job uses the cluster's own (a Kubernetes Secret, ~/.netrc "
            "on the nodes), else W&B is off for it"]


def entrypoint(sub: Submission, job_entry: str) -> str:
    """The command the cluster runs: the job's own dl-ray command; in a bucket, training and sweeps are told the
    bucket (Ray Train and Tune write there, each writer mirrors its files), an RL job is wrapped in the mirror (its
    driver is its only writer; see :mod:`dl_ray.cluster.mirror`)."""
    command = ["dl-ray", sub.command, job_entry, *_as_set(sub.job_overrides)]
    if sub.env:
        command = ["env", *(f"{name}={value}" for name, value in sub.env.items()), *command]
    elif sub.storage.is_uri:
        uri = sub.storage.path
        command = ["python", "-m", "dl_ray.cluster.mirror", uri, storage.scratch_for(uri), sub.run_name, "--", *command]
    return shlex.join(command)


def _as_set(overrides: list[str]) -> list[str]:
    return [part for item in overrides for part in ("--set", item)]


def job_commands(subcommands: dict[str, Any]) -> list[str]:
    """The dl-ray subcommands that run a job file (whichever of train / tune / dqn are installed)."""
    return [name for name in ("train", "tune", "dqn") if name in subcommands]


