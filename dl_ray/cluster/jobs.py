"""``dl-ray jobs list | status ID | logs ID [--follow] | stop ID``: follow and manage submitted jobs."""
from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime

from rich.console import Console

from dl_ray.cluster.client import explained
from dl_ray.cluster.joblog import log_of, unwrap
from dl_ray.fmt import fit_table
from dl_ray.run_index import duration

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
COLOURS = {"SUCCEEDED": "green", "FAILED": "red", "STOPPED": "yellow", "RUNNING": "cyan", "PENDING": "blue"}


def list_jobs(client, address: str, console: Console) -> int:
    with explained(address):
        jobs = [j for j in client.list_jobs() if j.submission_id]
    if not jobs:
        console.print(f"no submitted jobs on {address}")
        return 0
    rows = [[job.submission_id, str(job.status), duration(_seconds(job)), _when(job.start_time), command_of(job.entrypoint)]
            for job in sorted(jobs, key=lambda j: j.start_time or 0)]
    # The id is the thing to copy: whole, on one line; the command, then the start time go first when space is short.
    table, dropped = fit_table(["submission id", "status", "ran", "started", "command"], rows, console.width,
                               title=f"jobs on {address}")
    if dropped:
        table.caption = f"not shown: {', '.join(dropped)} (too narrow; `dl-ray jobs status ID` shows them)"
    console.print(table, soft_wrap=False)
    return 0


def command_of(entrypoint: str) -> str:
    """The job's dl-ray command, without the wrappers ``dl-ray submit`` puts around it (job.log, bucket mirror)."""
    inner = unwrap(entrypoint)
    start = inner.find("dl-ray ")
    return inner[start:] if start >= 0 else inner


def dashboard_url(address: str, submission_id: str) -> str:
    """The job's page in the Ray dashboard (its logs, tasks, actors)."""
    return f"{address.rstrip('/')}/#/jobs/{submission_id}"


def status(client, address: str, job_id: str, console: Console) -> int:
    with explained(address, job_id):
        job = client.get_job_info(job_id)
    console.print(f"{job_id}: {_status(str(job.status))} after {_ran(job)} - {_first_line(job.message)}", soft_wrap=True)
    console.print(f"  command: {command_of(job.entrypoint)}", highlight=False, soft_wrap=True)
    if kept := log_of(job.entrypoint):
        console.print(f"  output kept in: {kept}", highlight=False, soft_wrap=True)
    return 0


def logs(client, address: str, job_id: str, follow: bool, console: Console) -> int:
    """Print the job's output; with ``follow``, stream it until the job ends and exit 0 only if it succeeded."""
    with explained(address, job_id):
        if not follow:
            sys.stdout.write(client.get_job_logs(job_id))
            return 0
        client.get_job_info(job_id)  # an unknown id fails here, with the usual message

        async def tail():
            async for chunk in client.tail_job_logs(job_id):
                sys.stdout.write(chunk)
                sys.stdout.flush()

        try:
            asyncio.run(tail())
        except KeyboardInterrupt:
            console.print(f"stopped following; the job goes on (`dl-ray jobs stop {job_id}` stops it)", style="yellow",
                          soft_wrap=True)
            return 130
        job = _wait_terminal(client, job_id, timeout_s=30)
    console.print(f"{job_id}: {_status(str(job.status))} after {_ran(job)} - {_first_line(job.message)}", soft_wrap=True)
    return 0 if str(job.status) == "SUCCEEDED" else 1


def stop(client, address: str, job_id: str, console: Console, timeout_s: float = 60) -> int:
    with explained(address, job_id):
        job = client.get_job_info(job_id)
        if str(job.status) in TERMINAL:
            console.print(f"{job_id} already ended: {_status(str(job.status))}; nothing to stop", soft_wrap=True)
            return 0
        client.stop_job(job_id)
        job = _wait_terminal(client, job_id, timeout_s)
    console.print(f"{job_id}: {_status(str(job.status))} after {_ran(job)}", soft_wrap=True)
    return 0 if str(job.status) in TERMINAL else 1


def _wait_terminal(client, job_id: str, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    job = client.get_job_info(job_id)
    while str(job.status) not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        job = client.get_job_info(job_id)
    return job


def _status(status: str) -> str:
    return f"[{COLOURS.get(status, 'white')}]{status}[/]"


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%m-%d %H:%M") if ms else "-"


def _seconds(job) -> int:
    end = job.end_time or time.time() * 1000
    return max(0, int((end - job.start_time) / 1000)) if job.start_time else 0


def _ran(job) -> str:
    seconds = _seconds(job)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""
