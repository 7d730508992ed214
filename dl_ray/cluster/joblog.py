"""Keep a submitted job's output in its run folder: ``python -m dl_ray.cluster.joblog --id ID DEST -- CMD...``.

Ray keeps a job's driver log on the head node only: ``ray down`` and the RayJob's TTL (600 s after the job
ends) take it away. ``dl-ray submit`` wraps the job's command in this, which passes its output on unchanged (so
``dl-ray jobs logs`` works as before) and appends it to ``DEST``, the run folder's ``job.log``: a path, written
as the lines come, or an ``s3://`` / ``gs://`` URI, uploaded through ``pyarrow.fs`` every
``DL_RAY_JOBLOG_EVERY_S`` seconds (30) and when the command ends. Each submission starts with a header line, so
a resumed run's log holds every attempt. The exit code is the command's.

A stop (``dl-ray jobs stop``) needs no forwarding: Ray signals every process of the job, the command included;
this one only keeps reading until the command has said its last words.
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from dl_ray.cluster import signals

LOG_NAME = "job.log"


def destination(storage_path: str, run_folder: str) -> str:
    """Where a job's log goes: ``job.log`` in its run folder, under a path or a bucket URI."""
    return f"{storage_path.rstrip('/')}/{run_folder}/{LOG_NAME}"


def wrap(command: str, dest: str, submission_id: str) -> str:
    """The shell command ``command`` with its output also appended to ``dest``."""
    return shlex.join(["python", "-m", "dl_ray.cluster.joblog", "--id", submission_id, dest, "--"]) + " " + command


def log_of(entrypoint: str) -> str | None:
    """Where a job sent by :func:`wrap` keeps its output (None for a job sent otherwise)."""
    args = _prefix(entrypoint)
    return args[5] if args else None


def unwrap(entrypoint: str) -> str:
    """The command :func:`wrap` wrapped (an entrypoint not wrapped comes back as it is)."""
    args = _prefix(entrypoint)
    return entrypoint[len(shlex.join(args)) + 1:] if args else entrypoint


def _prefix(entrypoint: str) -> list[str] | None:
    try:
        args = shlex.split(entrypoint)[:7]
    except ValueError:
        return None
    wrapped = args[:4] == ["python", "-m", "dl_ray.cluster.joblog", "--id"] and args[6:7] == ["--"]
    return args if wrapped and entrypoint.startswith(shlex.join(args) + " ") else None


def header(submission_id: str) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"==== dl-ray job {submission_id} on {socket.gethostname()}, started {now} ====\n"


class LocalLog:
    """Appends to a file, as the output comes (it survives whatever kills the job later)."""

    def __init__(self, path: str):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "ab")  # noqa: SIM115 - open for the life of the job

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class BucketLog:
    """Appends to an object: what it held before, plus this job's output, uploaded whole now and then."""

    def __init__(self, uri: str, every_s: float):
        from pyarrow import fs

        self.fs, self.path = fs.FileSystem.from_uri(uri)
        found = self.fs.get_file_info(self.path).type == fs.FileType.File
        self.data = bytearray(self._read() if found else b"")
        self.every_s, self.sent_at, self.sent_len = every_s, time.monotonic(), -1

    def _read(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def write(self, data: bytes) -> None:
        self.data += data
        if time.monotonic() - self.sent_at >= self.every_s:
            self.upload()

    def upload(self) -> None:
        if len(self.data) == self.sent_len:
            return
        self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(self.path) as out:
            out.write(bytes(self.data))
        self.sent_at, self.sent_len = time.monotonic(), len(self.data)

    def close(self) -> None:
        self.upload()


def open_log(dest: str) -> LocalLog | BucketLog:
    if "://" in dest:
        return BucketLog(dest, float(os.environ.get("DL_RAY_JOBLOG_EVERY_S", "30")))
    return LocalLog(dest)


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[0] != "--id" or argv[3] != "--":
        print("usage: python -m dl_ray.cluster.joblog --id SUBMISSION_ID DEST -- CMD...", file=sys.stderr)
        return 2
    submission_id, dest, command = argv[1], argv[2], argv[4:]
    log = open_log(dest)
    first = header(submission_id).encode()
    log.write(first)
    sys.stdout.buffer.write(first)
    with signals.handled(lambda *_: None):  # Ray signals the command too: keep reading its last lines
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            for chunk in iter(lambda: os.read(child.stdout.fileno(), 65536), b""):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                log.write(chunk)
        finally:
            code = child.wait()
            log.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
