"""The cluster subcommands of ``dl-ray``: ``submit``, ``jobs ...``, ``cluster up|down``.

:func:`add_commands` declares them on the main parser, :func:`run` runs one.
Exit codes as everywhere in dl-ray: 0 done, 1 the job failed, 2 bad input or an
unreachable cluster / unknown job (one line, no traceback), 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console

from dl_ray.cluster import ClusterError

COMMANDS = ("submit", "jobs", "cluster")
RAY_CLIENT_LOGGERS = ("ray", "ray.dashboard.modules.job.sdk", "ray.dashboard.modules.dashboard_sdk",
                      "ray._private.runtime_env.packaging")


def add_commands(sub) -> None:
    submit = sub.add_parser("submit", help="send a job to a Ray cluster (Ray Jobs); prints its submission id")
    submit.add_argument("job", help="job YAML: a training job, a sweep (tune: section) or an RL job")
    submit.add_argument("--address", help="cluster dashboard URL (default: RAY_ADDRESS, the job's cluster.address, "
                                          "or the cluster from `dl-ray cluster up`)")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                        help="override a field, as for the job's own command (repeatable)")
    submit.add_argument("--gpus", type=int, metavar="N", help="train on N GPUs: N Ray Train workers with one GPU each; "
                                                              "an RL job: 1 = its learner on a GPU, 0 = on CPU")
    submit.add_argument("--workers", type=int, metavar="N", help="train on N Ray Train workers (CPU unless --gpus)")
    submit.add_argument("--verbose", action="store_true", help="show Ray's own log lines (uploading, websocket...)")
    submit.add_argument("--command", dest="job_command", help="the dl-ray command that runs the job (default: from the file: "
                                          "its kind: sweep -> tune, dqn/q_learning -> dqn, else train)")
    submit.add_argument("--follow", action="store_true", help="stream the job's logs until it ends (exit 1 unless it succeeds)")

    jobs = sub.add_parser("jobs", help="list, inspect, follow or stop submitted jobs")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--address", help="cluster dashboard URL (default: RAY_ADDRESS or the `dl-ray cluster up` cluster)")
    action = jobs.add_subparsers(dest="action", required=True)
    action.add_parser("list", help="every submitted job, oldest first", parents=[where])
    for name, text in (("status", "a job's state"), ("logs", "a job's output"), ("stop", "stop a running job")):
        p = action.add_parser(name, help=text, parents=[where])
        p.add_argument("id", help="submission id (as printed by `dl-ray submit`)")
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")

    cluster = sub.add_parser("cluster", help="a Ray cluster on this machine: token auth on, dashboard on 127.0.0.1")
    action = cluster.add_subparsers(dest="action", required=True)
    up = action.add_parser("up", help="start it (ray start --head, plus more nodes with --nodes)")
    up.add_argument("--nodes", type=int, default=1, help="nodes to start on this machine (default 1: the head)")
    up.add_argument("--cpus", type=int, help="CPUs each node offers (default: all)")
    up.add_argument("--gpus", type=int, help="GPUs each node offers (default: all)")
    up.add_argument("--port", type=int, default=6379, help="Ray (GCS) port; 0 = any free port")
    up.add_argument("--dashboard-port", type=int, default=8265, help="dashboard / Jobs port on 127.0.0.1; 0 = any free port")
    up.add_argument("--temp-dir", type=Path, help="Ray's session folder (default: Ray's own, /tmp/ray)")
    down = action.add_parser("down", help="stop the cluster `dl-ray cluster up` started")
    for p in (up, down):
        p.add_argument("--folder", type=Path, default=None, help="where its state and logs live (default ~/.cache/dl_ray/cluster)")


def run(args: argparse.Namespace, main: Callable[[list[str]], int], subcommands: dict, console: Console) -> int:
    """Run a cluster subcommand; ``main`` is dl-ray's entry point (for the job's own dry run)."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        if args.command in ("submit", "jobs"):
            quiet_ray_client(getattr(args, "verbose", False))
        if args.command == "submit":
            return _submit(args, main, subcommands, err)
        if args.command == "jobs":
            return _jobs(args, console)
        return _cluster(args, console)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _submit(args, main, subcommands, err: Console) -> int:
    from dl_ray.cluster import jobs
    from dl_ray.cluster.submit import job_commands, prepare, resource_overrides, send

    sub = prepare(args.job, args.job_command, args.overrides, job_commands(subcommands))
    extra, meaning = resource_overrides(sub.command, sub.raw, args.gpus, args.workers)
    if extra:
        sub = prepare(args.job, sub.command, [*args.overrides, *extra], job_commands(subcommands))
    if meaning:
        print(meaning, file=sys.stderr)
    with contextlib.redirect_stdout(io.StringIO()), _environment(sub.env):  # the dry run prints the job: its verdict only
        code = main(sub.dry_run_argv())
    if code:
        return code
    address = _address(args, sub.raw)
    submission_id = send(sub, address, lambda line: print(line, file=sys.stderr))
    print(submission_id, flush=True)  # alone on stdout: ID=$(dl-ray submit job.yaml)
    print(f"dashboard: {jobs.dashboard_url(address, submission_id)}\n"
          f"follow: dl-ray jobs logs {submission_id} --follow\nstatus: dl-ray jobs status {submission_id}\n"
          f"stop:   dl-ray jobs stop {submission_id}", file=sys.stderr, flush=True)
    if not args.follow:
        return 0
    from dl_ray.cluster.client import connect

    return jobs.logs(connect(address), address, submission_id, follow=True, console=err)


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """These variables set while the block runs, as they were after it."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def _jobs(args, console: Console) -> int:
    from dl_ray.cluster import jobs
    from dl_ray.cluster.client import connect

    address = _address(args)
    client = connect(address)
    if args.action == "list":
        return jobs.list_jobs(client, address, console)
    if args.action == "status":
        return jobs.status(client, address, args.id, console)
    if args.action == "logs":
        return jobs.logs(client, address, args.id, args.follow, Console(stderr=True, soft_wrap=True))
    return jobs.stop(client, address, args.id, console)


def _cluster(args, console: Console) -> int:
    from dl_ray.cluster import local

    folder = args.folder or local.DEFAULT_FOLDER
    if args.action == "down":
        stopped = local.down(folder)
        console.print(f"stopped the cluster at {stopped.address}" if stopped else f"no cluster recorded in {folder}")
        return 0
    with console.status(f"starting {args.nodes} Ray node(s) on 127.0.0.1..."):
        c = local.up(folder, args.nodes, args.cpus, args.gpus, args.port, args.dashboard_port, args.temp_dir)
    console.print(f"[green]Ray cluster up[/]: {c.nodes} node(s), dashboard and Jobs API at {c.address} (this machine only), "
                  f"token auth on (token in {c.token_path or 'RAY_AUTH_TOKEN'})", highlight=False, soft_wrap=True)
    here = folder == local.DEFAULT_FOLDER  # dl-ray finds this one by itself
    console.print(f"  submit:  dl-ray submit jobs/mnist_lenet.yaml --set storage.path=$PWD/runs{'' if here else ' --address ' + c.address}\n"
                  f"  Python:  ray.init(address='{c.gcs_address}')  (with RAY_AUTH_MODE=token)\n"
                  f"  stop:    dl-ray cluster down{'' if here else f' --folder {folder}'}", highlight=False, soft_wrap=True)
    return 0


def quiet_ray_client(verbose: bool) -> None:
    """Ray's Jobs SDK logs INFO lines ("Uploading package...", "WebSocket closed...") on loggers it sets to INFO
    itself when imported: dl-ray shows them only with --verbose."""
    import logging

    import ray.job_submission  # noqa: F401 - importing it sets those levels, so ours come after

    for name in RAY_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def _address(args, raw: dict | None = None) -> str:
    """--address, RAY_ADDRESS, the job's cluster.address, else the cluster `dl-ray cluster up` started here."""
    from dl_ray.cluster import local
    from dl_ray.cluster.auth import resolve_address
    from dl_ray.ray_address import from_env

    spec_address = ((raw or {}).get("cluster") or {}).get("address")
    if not (args.address or from_env() or spec_address):  # an empty RAY_ADDRESS is unset
        here = local.LocalCluster.load(local.DEFAULT_FOLDER)
        spec_address = here.address if here else None
    return resolve_address(args.address, spec_address)
