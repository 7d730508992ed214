"""What one Tune trial runs. ``config`` holds the sampled values (dotted job paths), ``plan`` the rest.

* ``train_trial``, one CPU worker: the generic loop runs right here, in the trial's process
  (:class:`~dl_ray.train.session.TuneSession`); starting a TorchTrainer would cost tens of seconds a trial.
* ``train_trial``, several workers or GPUs: the trial builds and fits a ``TorchTrainer`` (Ray 2.60
  Train V2 pattern); ``TuneReportCallback`` forwards rank 0's reports to Tune.
* ``evaluate_trial``: one checkpoint, scored by an evaluator with the sampled settings.

Every trial is a run folder ``<sweep>/<sweep>_NNNNN`` (metrics.csv, checkpoints, W&B run in
the sweep's group), so a trial started again resumes there instead of starting over. In a sweep kept
in a bucket (``plan["bucket"]``) that folder is on the trial's node and mirrored to the bucket
(:func:`kept_in_bucket`), so a trial restarted on another node finds it there.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import ray.tune
import torch
import yaml

from dl_ray.spec import JobSpec
from dl_ray.tune.spec import SETTINGS, parse_job, set_path


def trial_folder_name(sweep_name: str, trial_id: str) -> str:
    return f"{sweep_name}_{trial_id.rsplit('_', 1)[-1]}"


def trial_job(config: dict[str, Any], plan: dict[str, Any]) -> tuple[JobSpec, Path]:
    """The base job with this trial's values, its W&B group/name and its run folder."""
    name = trial_folder_name(plan["sweep"], ray.tune.get_context().get_trial_id())
    raw = copy.deepcopy(plan["job"])
    for path, value in config.items():
        if not path.startswith(SETTINGS):
            set_path(raw, path, value)
    raw["tracking"] = {**raw.get("tracking", {}), "group": plan["sweep"], "run_name": name}
    raw["storage"] = {**raw.get("storage", {}), "path": plan["folder"], "name": name}
    if plan.get("checkpoint_every_epoch"):  # PBT exploits the latest checkpoint of the top trials
        raw.setdefault("training", {})["checkpoint_every"] = 1
    spec = parse_job(raw)  # a training job, or one of a kind with its own trials
    return spec, spec.run_dir


@contextlib.contextmanager
def kept_in_bucket(plan: dict[str, Any], run_dir: Path, checkpoints: bool = True):
    """[storage] In a sweep kept in a bucket: the trial's folder as the bucket holds it (a trial restarted on another
    node), sent back when the trial ends however it ends. Yields the run's bucket URI (None: on a filesystem).
    ``checkpoints=False``: the trial drives a TorchTrainer, whose workers own the checkpoint folders."""
    from dl_ray.cluster import mirror

    uri = f"{plan['bucket']}/{run_dir.name}" if plan.get("bucket") else None
    bucket = mirror.for_run(run_dir, uri, fresh=True, checkpoints=checkpoints) if uri else None
    try:
        yield uri
    finally:
        if bucket:
            bucket.push()


def train_trial(config: dict[str, Any], plan: dict[str, Any]) -> None:
    spec, run_dir = trial_job(config, plan)
    run_dir.mkdir(parents=True, exist_ok=True)
    with kept_in_bucket(plan, run_dir, checkpoints=plan["in_process"]) as bucket:
        _train(spec, run_dir, plan, bucket)


def _train(spec: JobSpec, run_dir: Path, plan: dict[str, Any], bucket: str | None) -> None:
    from dl_ray.tracking import read_summary

    saved, done = run_dir / "spec.yaml", read_summary(run_dir)
    if done and done.get("final") and saved.is_file() and yaml.safe_load(saved.read_text()) == spec.to_dict():
        ray.tune.report(done["final"] | {"epoch": done["epochs_run"]})  # it finished before a killed driver noted it
        return
    saved.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    loop_config = {"spec": spec.to_dict(), "run_dir": str(run_dir), "bucket": bucket}
    if plan["in_process"]:
        from dl_ray.train.loop import train_loop_per_worker
        from dl_ray.train.session import TuneSession

        checkpoint = ray.tune.get_checkpoint()
        resume = _exploited(checkpoint, spec, run_dir) if checkpoint is not None else None
        session = TuneSession(resume, history=run_dir / "metrics.csv")
        try:
            train_loop_per_worker(loop_config | {"local_mode": True, "session": session})
        finally:
            _finish_wandb()
    else:
        from ray.tune.integration.ray_train import TuneReportCallback

        from dl_ray.train.runner import torch_trainer

        torch_trainer(spec, loop_config, plan["direction"], callbacks=[TuneReportCallback()]).fit()


def _exploited(checkpoint, spec: JobSpec, run_dir: Path) -> Path | None:
    """A PBT exploit hands this trial another trial's checkpoint and new (explored) values.

    Weights, optimizer moments and the epoch come from the donor; the learning rate and its
    decay are this trial's: the LR is set to ``optimizer.lr * decay factor(epoch)`` of this job.
    The donor's history comes too: this trial's ``metrics.csv`` becomes the donor's rows up to
    the checkpoint's epoch (a copy the checkpoint carries, see ``TuneSession``), so it keeps one
    row per epoch, and that last copied row says where it came from in ``pbt/copied_from``.
    This trial's own checkpoint folders (a lineage it left) are removed. Its W&B run simply
    goes on from there (W&B history is append-only: steps before the exploit keep the old rows).
    ``None`` when the checkpoint is this trial's own (a plain resume).
    """
    import shutil

    from dl_ray.tracking import History
    from dl_ray.train import checkpoints
    from dl_ray.train.optim import lr_factor

    with checkpoints.opened(checkpoint) as folder:
        state = checkpoints.read(folder)
        if state["spec"] == spec.to_dict():
            return None
        donor = state["spec"]["storage"]
        copied = Path(folder) / "metrics.csv"
        history = History(copied if copied.is_file() else Path(donor["path"]) / donor["name"] / "metrics.csv")
        history.load_until(state["state"]["epoch"])
    lr, epoch = spec.optimizer.lr, state["state"]["epoch"]
    if history.rows and history.rows[-1].get("epoch") == epoch:
        history.rows[-1]["pbt/copied_from"] = donor["name"]
    history.path = run_dir / "metrics.csv"
    history.write()
    for own in checkpoints.saved(run_dir).values():
        shutil.rmtree(own, ignore_errors=True)

    now = lr * lr_factor(spec.schedule, epoch, spec.training.epochs, lr)
    optimizer, scheduler = state["optimizers"]["main"], state["schedulers"]["main"]  # PBT explores optimizer.lr
    for group in optimizer["param_groups"]:
        group["lr"], group["initial_lr"] = now, lr
    scheduler["base_lrs"] = [lr] * len(scheduler["base_lrs"])
    scheduler["_last_lr"] = [now] * len(scheduler["base_lrs"])
    state["spec"] = spec.to_dict()
    out = run_dir / ".exploited"
    checkpoints.write(out, state, {"exploited_at_epoch": epoch}, spec.to_dict())
    return out


def _finish_wandb() -> None:
    """A trial stopped by the scheduler leaves the loop mid-epoch: close its W&B run anyway."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.finish()


def evaluate_trial(config: dict[str, Any], plan: dict[str, Any]) -> None:
    from dl_ray.cluster import mirror

    spec, run_dir = trial_job(config, plan)
    run_dir.mkdir(parents=True, exist_ok=True)
    if plan["checkpoint_bucket"]:  # [storage] the evaluated run, fetched to this node (where the driver's copy is on its)
        mirror.fetched(plan["checkpoint_bucket"], "tune.checkpoint")
    with kept_in_bucket(plan, run_dir):
        ray.tune.report(_evaluate(spec, run_dir, config, plan))


def _evaluate(spec: JobSpec, run_dir: Path, config: dict[str, Any], plan: dict[str, Any]) -> dict[str, float]:
    """An evaluate trial's metrics, its folder written (spec.yaml, summary.json) and its W&B run finished."""
    from dl_ray.tracking import WandbRun
    from dl_ray.tune.evaluators import EvalRequest, get_evaluator

    entry = get_evaluator(plan["evaluator"])
    settings = entry.config.model_validate({k.removeprefix(SETTINGS): v for k, v in config.items() if k.startswith(SETTINGS)})
    use_gpu = spec.scaling.use_gpu and torch.cuda.is_available()
    request = EvalRequest(Path(plan["checkpoint"]), spec, settings, plan["split"], torch.device("cuda" if use_gpu else "cpu"))
    metrics = {k: float(v) for k, v in entry.build(request).items()}
    _write_run_files(run_dir, spec, plan, settings.model_dump(), metrics)
    tracker = WandbRun(spec, run_dir)
    tracker.log(metrics, step=1)
    tracker.finish(metrics)
    return metrics


def _write_run_files(run_dir: Path, spec: JobSpec, plan: dict[str, Any], settings: dict[str, Any],
                     metrics: dict[str, float]) -> None:
    """An evaluate trial's folder reads like a run's: the job it scored (spec.yaml) and summary.json."""
    from dl_ray.statuses import COMPLETED, status_fields
    from dl_ray.tracking import write_summary

    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    write_summary(run_dir, {**status_fields(COMPLETED), "kind": "evaluate", "checkpoint": plan["checkpoint"],
                            "evaluator": plan["evaluator"], "split": plan["split"], "settings": settings, "final": metrics})
