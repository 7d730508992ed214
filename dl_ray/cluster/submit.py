"""``dl-ray submit JOB.yaml``: send a job to a Ray cluster through the Jobs SDK.

The job runs there as the very command you would type here (``dl-ray train|tune|dqn
JOB.yaml --set ...``), in a copy of this project (:mod:`dl_ray.cluster.package`),
with your W&B settings passed as environment variables, never written to a file.
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
from dl_ray.cluster import package, storage
from dl_ray.cluster.client import connect, explained
from dl_ray.cluster.local import alive_nodes
from dl_ray.spec import SpecError, StorageSpec, apply_override, read_mapping

# A job file's kind shows in a section only that kind has; anything else is a training job.
JOB_ENV = {
    "PYTHONUNBUFFERED": "1", "COLUMNS": "120",  # live, unwrapped logs for `dl-ray jobs logs --follow`
    "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1",  # the job's ray.init(runtime_env=...) passes the same WANDB_* on: merge, not fail
}
FORWARDED_ENV = ("WANDB_",)  # W&B key, mode, project, entity, base URL...: from your shell, into the job's env only


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
    def storage(self) -> StorageSpec:
        return storage.storage_of(self.raw)

    @property
    def job_overrides(self) -> list[str]:
        """The overrides the job runs with: yours, and a scratch folder in place of a bucket (see mirror)."""
        if self.storage.is_uri:
            return [*self.overrides, f"storage.path={storage.scratch_for(self.storage.path)}"]
        return self.overrides

    def dry_run_argv(self) -> list[str]:
        """The job's own command with ``--dry-run``: validates the job here exactly as the cluster will read it."""
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


def detect_command(raw: dict[str, Any]) -> str:
    """The command that runs this job file, by its ``kind`` (dl_ray/kinds.py)."""
    return kinds.command_for(raw)


def send(sub: Submission, address: str, say: Callable[[str], None]) -> str:
    """Package, check against the cluster at ``address``, upload and submit; returns the submission id."""
    files = package.collect(sub.job_file)
    base = sub.raw.get("base")  # a sweep file may name its job relative to itself
    if files.job_entry.startswith(package.JOB_FOLDER) and isinstance(base, str) and not Path(base).is_absolute():
        raise SpecError(f"base: {base!r} is relative to {sub.job_file}, which lies outside the project {files.root} and "
                        "travels alone; move the file into the project")
    client = connect(address)
    storage.check_nodes(sub.storage, sub.command, sub.raw, alive_nodes(address), address)

    command = entrypoint(sub, files.job_entry)
    env_vars = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV) and k != "WANDB_SERVICE"}
    submission_id = f"{sub.command}-{sub.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}".lower()
    with tempfile.TemporaryDirectory(prefix="dl_ray-submit-") as tmp:
        zip_path = files.write_zip(Path(tmp) / "project.zip")
        say(f"packed {files.root} ({len(files.files)} files, {zip_path.stat().st_size / 1024:.0f} KiB zipped); "
            f"env from your shell: {', '.join(sorted(env_vars)) or 'none'}")
        with explained(address):
            client.submit_job(
                entrypoint=command,
                submission_id=submission_id,
                runtime_env={"working_dir": str(zip_path), "env_vars": {**JOB_ENV, **env_vars}},
                metadata={"dl_ray.job": sub.name, "dl_ray.command": sub.command},
            )
    say(f"submitted to {address}: {command}")
    return submission_id


def entrypoint(sub: Submission, job_entry: str) -> str:
    """The command the cluster runs: the job's own dl-ray command, wrapped in the mirror when it lives in a bucket."""
    command = ["dl-ray", sub.command, job_entry, *_as_set(sub.job_overrides)]
    if sub.storage.is_uri:
        uri = sub.storage.path
        command = ["python", "-m", "dl_ray.cluster.mirror", uri, storage.scratch_for(uri), sub.run_name, "--", *command]
    return shlex.join(command)


def _as_set(overrides: list[str]) -> list[str]:
    return [part for item in overrides for part in ("--set", item)]


def job_commands(subcommands: dict[str, Any]) -> list[str]:
    """The dl-ray subcommands that run a job file (whichever of train / tune / dqn are installed)."""
    return [name for name in ("train", "tune", "dqn") if name in subcommands]


