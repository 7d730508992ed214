"""Driver side of ``dl-ray train``: check, start Ray if needed, fit a ``TorchTrainer``, report."""
from __future__ import annotations

import logging
import os
import queue
import textwrap
import threading
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from dl_ray.cluster import mirror, storage
from dl_ray.data import build_data
from dl_ray.fmt import shown_path
from dl_ray.models import build_model
from dl_ray.report import plot_curves, print_report
from dl_ray.spec import JobSpec, RunError, SpecError, parse_spec, refuse_other_spec
from dl_ray.statuses import EARLY_STOPPING, INTERRUPTED, NONFINITE_LOSS, STOPPED, status_fields
from dl_ray.tracking import read_summary, write_summary
from dl_ray.train import checkpoints
from dl_ray.train.optim import make_optimizers, optimizer_specs

# Fields that may change when the same run is started again (it resumes); anything else is a new run.
RESUMABLE_CHANGES = ("training.epochs", "training.max_failures", "training.keep_checkpoints", "scaling", "tracking",
                     "storage.path", "storage.shared", "cluster")


def check(spec: JobSpec):
    """Everything that can be known before starting, then the run folder: returns the task built for the check."""
    task = validate(spec)
    prepare_folder(spec)
    return task


MAX_SHIFT_SHARE = 1 / 8
"""Largest random shift as a share of the image's side: MNIST's 28 px take 3 px, 8x8 digits 1 px (2 px moved a
quarter of a digit out of view: 61 % accuracy instead of 97 %)."""


def validate(spec: JobSpec):
    """Data loads, the model fits the data, every named metric and optimizer exists; writes nothing."""
    try:
        data = build_data(spec.data)
    except (OSError, ValueError) as e:
        raise SpecError(f"data ({spec.data.name}): {e}") from None
    try:
        task = build_model(spec.model, data.io, spec.regularization.dropout)
    except ValueError as e:
        raise SpecError(str(e)) from None
    specs = optimizer_specs(task.optimizer_names, spec.optimizer, spec.optimizers, spec.model.name)
    make_optimizers(task, specs, spec.regularization.l2)  # a family may refuse an optimizer (sparse rows: no RMSProp)
    check_metric("regularization.early_stopping.metric", spec.regularization.early_stopping.metric, task, splits=("val",))
    augment = spec.regularization.augment
    if augment.enabled and len(data.input_shape) != 3:
        raise SpecError(f"regularization.augment: needs image data (C,H,W); data.name={spec.data.name} has shape {data.input_shape}")
    if augment.enabled and augment.max_shift > min(data.input_shape[1:]) * MAX_SHIFT_SHARE:
        side = min(data.input_shape[1:])
        raise SpecError(f"regularization.augment.max_shift: {augment.max_shift} px would move a {side}x{side} image of "
                        f"data.name={spec.data.name} by up to {augment.max_shift / side:.0%}; allowed: 0 to "
                        f"{int(side * MAX_SHIFT_SHARE)} px (1/8 of its side), or --set regularization.augment=null")
    return task


def prepare_folder(spec: JobSpec) -> None:
    """Make the run folder, unless it holds another run (rerunning resumes, it never overwrites)."""
    try:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpecError(f"storage.path: cannot create the run folder {spec.run_dir}: {e.strerror}") from None
    refuse_other_spec(spec.run_dir, spec.to_dict(), RESUMABLE_CHANGES, parse_spec)


def check_metric(field: str, metric: str, task, splits: tuple[str, ...] = ("val", "test")) -> str:
    """``metric`` must be one the task reports (val/<name>, ...); returns whether lower or higher is better."""
    allowed = {f"{split}/{name}": d for split in splits for name, d in task.reports.items()}
    if metric not in allowed:
        raise SpecError(f"{field}: {metric!r} is not a metric {type(task).__name__} reports; allowed: {', '.join(allowed)}")
    return allowed[metric]


def run(spec: JobSpec, console: Console, verbose: bool = False) -> dict[str, Any]:
    spec = _absolute_paths(spec)
    bucket = mirror.for_run(spec.run_dir, fresh=True)  # [storage] sent to a bucket: its files so far, to check against and resume
    task = check(spec)
    direction = task.reports.get(spec.regularization.early_stopping.metric.partition("/")[2], "min")
    run_dir = spec.run_dir
    local = spec.scaling.num_workers == 0
    quiet_ray(verbose)
    if not local:
        ensure_ray(verbose, spec.tracking.wandb)
        storage.check_at_start(spec.storage, storage.spreads("train", spec.to_dict()))  # [storage] every worker's node sees it
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    trainer, events = _trainer(spec, local, direction)
    where = "in this process (Ray Train local mode)" if local else f"on {spec.scaling.num_workers} Ray workers"
    header = f"{spec.name}: {spec.model.name} on {spec.data.name}, {spec.training.epochs} epochs {where}"
    for line in textwrap.wrap(header, 80, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False):
        console.print(line, highlight=False, markup=False)  # names never cut, 80 columns
    console.print(folder_line(run_dir, start_plan(run_dir, spec.training.epochs)), highlight=False)
    if latest := checkpoints.latest(run_dir):
        if note := _extension_note(spec, latest):
            console.print(note, highlight=False)

    from dl_ray.train.progress import follow

    # fit() runs in the main thread: in local mode that is where training happens, and torch's CPU
    # kernels run slower from a secondary thread (figures: benchmarks/README.md).
    done = threading.Event()
    drawer = threading.Thread(target=follow, args=(events, done, console), name="dl-ray-progress", daemon=True)
    drawer.start()
    try:
        trainer.fit()
    except KeyboardInterrupt:
        note_interrupted(run_dir)
        raise
    except Exception as e:
        raise RunError(explain_failure(e, run_dir)) from e
    finally:
        done.set()
        drawer.join(timeout=5)
        if bucket:  # [storage] rank 0's files (maybe written on another node) here, ours (spec, error) there
            bucket.pull()
            bucket.push(checkpoints=False)

    summary = read_summary(run_dir) or {}
    plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    if bucket:  # [storage]
        bucket.push(checkpoints=False)
    if summary.get("stop_reason") == NONFINITE_LOSS:
        raise RunError(f"training stopped at epoch {summary['epochs_run'] + 1}: the loss became NaN/inf "
                       f"(lower optimizer.lr or set training.grad_clip); last good checkpoint: {summary['checkpoint'] or 'none'}")
    print_report(summary, run_dir, console)
    return summary


def _extension_note(spec: JobSpec, latest: Path) -> str | None:
    """How the schedule goes on when the run resumes with another ``training.epochs`` (see ``optim.replan``)."""
    from dl_ray.train.optim import extension_note

    saved = yaml.safe_load((latest / "spec.yaml").read_text())
    done = int(checkpoints.PATTERN.match(latest.name).group(1))
    lr = spec.optimizer.lr if spec.optimizers is None else next(iter(spec.optimizers.values())).lr
    return extension_note(spec.schedule, lr, done, saved["training"]["epochs"], spec.training.epochs)


def start_plan(run_dir: Path, epochs: int) -> str:
    """What starting this run does, in words: a new run, resuming from a checkpoint, or (finished) only reporting."""
    saved = checkpoints.saved(run_dir)
    if not saved:
        return "new run, from epoch 1"
    done = max(saved)
    summary = read_summary(run_dir) or {}
    if summary.get("epochs_run") == done and summary.get("stop_reason") == EARLY_STOPPING:
        return f"finished: early stopping at epoch {done} of {epochs}; reporting (nothing to train)"
    if done >= epochs:
        return f"finished: reporting epoch {done} of {done} (nothing to train)"
    return f"resuming from {saved[done].name} (epoch {done} of {epochs} done)"


def dry_run_plan(spec: JobSpec) -> str:
    """What ``dl-ray train`` would do with this job now, as YAML comments: its run folder and whether it starts
    fresh, resumes or only reports. A folder holding another run refuses here as it would there."""
    refuse_other_spec(spec.run_dir, spec.to_dict(), RESUMABLE_CHANGES, parse_spec)
    line = folder_line(spec.run_dir, start_plan(spec.run_dir, spec.training.epochs))
    return "\n".join(f"# {part}" for part in line.splitlines())


def note_interrupted(run_dir: Path) -> None:
    """``summary.json`` of a run stopped by Ctrl-C says so (rerunning resumes from its latest checkpoint), unless
    the run had already finished: then only its report was interrupted and the summary stands."""
    saved, before = checkpoints.saved(run_dir), read_summary(run_dir) or {}
    done = max(saved, default=0)
    if before.get("final") and before.get("epochs_run") == done:
        return
    write_summary(run_dir, {**status_fields(STOPPED, INTERRUPTED), "epochs_run": done,
                            "checkpoint": str(saved.get(done, ""))})


def folder_line(run_dir: Path, plan: str, width: int = 80) -> str:
    """``run folder runs/NAME: <plan>``, the plan on its own line when the path is long (a path is never cut)."""
    line = f"run folder {shown_path(run_dir)}: {plan}"
    return line if len(line) <= width else f"run folder {shown_path(run_dir)}:\n  {plan}"


def ensure_ray(verbose: bool = False, wandb: str = "offline") -> None:
    """Join ``RAY_ADDRESS`` when it is set and not empty, else start a local Ray on this machine.

    "Local" is said explicitly: Ray's default (``address=None``) joins the cluster ``ray start`` last recorded
    in its temp folder (``/tmp/ray/ray_current_cluster``), a running one silently and a dead one after a minute
    of retries."""
    import ray

    from dl_ray.ray_address import driver_address

    quiet_ray(verbose)
    if ray.is_initialized():
        return
    address = driver_address()  # a bad RAY_ADDRESS: one SpecError line
    from dl_ray.cluster.env import driver_env

    forwarded = driver_env(os.environ, wandb, address)  # W&B secrets only where workers need them (online runs)
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=verbose,
             logging_level=logging.INFO if verbose else logging.WARNING,
             runtime_env={"env_vars": forwarded} if forwarded else None)


def _trainer(spec: JobSpec, local: bool, direction: str):
    """The run's TorchTrainer and the queue its rank 0 sends progress events to."""
    if local:
        events: Any = queue.Queue(maxsize=1000)
    else:
        from ray.util.queue import Queue

        events = Queue(maxsize=1000, actor_options={"num_cpus": 0})
    loop_config = {"spec": spec.to_dict(), "run_dir": str(spec.run_dir), "local_mode": local, "progress": events,
                   "bucket": mirror.run_uri(spec.run_dir)}  # [storage]
    if not local:
        loop_config["data"] = ship_data(spec)
    return torch_trainer(spec, loop_config, direction, local=local), events


def ship_data(spec: JobSpec):
    """[launch] The bundle ``check`` built (cached), put into Ray's object store once: the workers take it instead of
    reading and parsing the dataset again before their first step (benchmarks/README.md, launch). Only in-memory
    tensors (a plain DataBundle): families whose bundles make data per epoch or rank build their own. None = not
    shipped."""
    from dl_ray.data import DataBundle

    data = build_data(spec.data)
    if type(data) is not DataBundle:
        return None
    import ray

    return ray.put(data)


def torch_trainer(spec: JobSpec, loop_config: dict[str, Any], direction: str, local: bool = False, callbacks=()):
    """The generic loop as a ``TorchTrainer`` (``dl-ray train``, and sweep trials with several workers or GPUs).

    ``local``: Ray Train local mode (num_workers 0, in this process); ``direction``: min or max of the
    early-stopping metric, by which Ray keeps the best checkpoints."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from dl_ray.train.loop import train_loop_per_worker

    # A worker's result queue holds one report, so each report waits for the controller's next poll of the workers:
    # at Ray's 2 s every epoch of a small job took >= 2 s (digits MLP, 2 workers, 15 epochs: 55 s, at 0.2 s: 26 s).
    # Ray hands the driver's value to the controller it starts; one the user set wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    es, scaling = spec.regularization.early_stopping, spec.scaling
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=0 if local else max(scaling.num_workers, 1), use_gpu=scaling.use_gpu,
            resources_per_worker=None if local else {"CPU": scaling.cpus_per_worker, **scaling.resources_per_worker},
        ),
        run_config=RunConfig(
            name=spec.run_name, storage_path=_storage_path(spec, loop_config.get("bucket")),
            callbacks=list(callbacks),
            failure_config=FailureConfig(max_failures=spec.training.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=spec.training.keep_checkpoints,
                checkpoint_score_attribute=es.metric if es.patience else None,
                checkpoint_score_order=direction,
            ),
        ),
    )


def _storage_path(spec: JobSpec, bucket: str | None) -> str:
    """[storage] Where Ray Train keeps the run's checkpoints: the bucket folder the run is in, else the run folder's."""
    return mirror.parent_uri(bucket) if bucket else str(spec.run_dir.parent)


def _absolute_paths(spec: JobSpec) -> JobSpec:
    raw = spec.to_dict()
    raw["storage"]["path"] = str(Path(raw["storage"]["path"]).absolute())
    if raw["data"].get("path"):
        raw["data"]["path"] = str(Path(raw["data"]["path"]).absolute())
    return parse_spec(raw)


def quiet_ray(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    for name in ("ray", "ray.train", "ray.tune", "ray.data"):
        logging.getLogger(name).setLevel(level)
    # "Token authentication is enabled" is Ray's default (and what we want); say it only when asked.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(level if verbose else logging.ERROR)


def explain_failure(error: BaseException, run_dir: Path) -> str:
    """One line for the terminal; the whole error goes to ``<run_dir>/error.txt``."""
    import traceback

    text = "".join(traceback.format_exception(error))
    (run_dir / "error.txt").write_text(text)
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    last = [line for line in str(root).strip().splitlines() if line.strip()] or [type(root).__name__]
    return f"training failed: {type(root).__name__}: {last[-1][:300]} (full error: {run_dir / 'error.txt'}; --verbose shows Ray's logs)"
