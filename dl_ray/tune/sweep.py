"""Driver of ``dl-ray tune``: check everything, then ``Tuner.fit`` (or ``Tuner.restore`` + fit).

A trial holds what it really uses: one CPU worker in its own process ({CPU: cpus_per_worker}),
or, when it drives a TorchTrainer, no CPU at all (its workers hold the CPUs and GPUs; a trial
holding even 0.01 CPU leaves 1.99 of 2 and a 2-worker trainer would never be scheduled). So the
default ``max_concurrent_trials`` is derived from the cluster and what one trial's workers hold.

PBT is the exception: a trial can only exploit trials that train at the same time, so the whole
population runs at once, each trial holding ``min(cpus_per_worker, cluster CPUs / population)``
(a fraction of a CPU is fine for Ray). PBT runs asynchronously (Ray's default): a trial exploits at its own
perturbation step instead of waiting there for the whole population (``synch=True`` is not used:
benchmarks/README.md, "Notes from runs").
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from dl_ray.cluster import mirror
from dl_ray.spec import JobSpec, SpecError, parse_spec
from dl_ray.tune.spec import Sweep

TRAINER_DRIVER = {"CPU": 0, "memory": 1 << 20}  # drives a TorchTrainer; Ray refuses an empty bundle, so 1 MiB


def in_process(job: JobSpec) -> bool:
    """One CPU worker: the loop runs in the trial's own process (no TorchTrainer start-up)."""
    return job.scaling.num_workers <= 1 and not job.scaling.use_gpu


def check(sweep: Sweep) -> JobSpec:
    """Everything knowable before Ray starts: the job trains, the metric exists, the parts fit together."""
    from dl_ray.train.runner import prepare_folder, validate

    if sweep.own_kind is not None:
        return sweep.own_kind.check(sweep)
    job, tune = parse_spec(sweep.trial_spec({})), sweep.tune
    if tune.trial == "evaluate" and tune.scheduler.name != "fifo":
        raise SpecError(f"tune.scheduler: {tune.scheduler.name} needs training trials; evaluate trials report once: use fifo")
    if tune.scheduler.name == "pbt" and not in_process(job):
        raise SpecError("tune.scheduler: pbt needs trials that train in their own process (scaling.num_workers <= 1, "
                        "use_gpu: false): exploit copies Tune checkpoints; use asha for multi-worker trials")
    if tune.scheduler.name == "pbt" and (tune.max_concurrent_trials or math.inf) < population(sweep):
        raise SpecError(f"tune.max_concurrent_trials: {tune.max_concurrent_trials} is below the PBT population of "
                        f"{population(sweep)}: a trial only exploits trials that train at the same time; leave it unset "
                        f"(the whole population runs at once, on fractional CPUs) or set it to {population(sweep)}")
    if tune.search == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise SpecError("tune.search: optuna needs the optuna package (pip install 'dl_ray[optuna]'); allowed: random, grid") from None
    if tune.scheduler.name == "asha" and tune.scheduler.grace_period > job.training.epochs:
        raise SpecError(f"tune.scheduler.grace_period: {tune.scheduler.grace_period} is more than training.epochs={job.training.epochs}")
    task = validate(job)  # data loads, the model fits it
    names = reported_metrics(task, tune.scheduler.name == "fifo", tune.split if tune.trial == "evaluate" else None)
    if tune.metric not in names and (tune.trial == "train" or tune.evaluator == "eval_metrics"):
        raise SpecError(f"tune.metric: {tune.metric!r} is not reported by {job.model.name} on {job.data.name}"
                        f"{'' if tune.scheduler.name == 'fifo' else ' every epoch'}; allowed: {', '.join(sorted(names))}")
    if tune.mode is None:  # the task says whether lower or higher is better
        tune.mode = names.get(tune.metric) or ("min" if "loss" in tune.metric else "max")
    sweep.direction = task.reports.get(job.regularization.early_stopping.metric.partition("/")[2], "min")
    prepare_folder(job)  # the last check: it makes the folder
    return job


def reported_metrics(task, final_too: bool, evaluate_split: str | None) -> dict[str, str]:
    """The metrics a trial reports (name -> min | max), as the task declares them."""
    if evaluate_split:
        return {f"{evaluate_split}/{n}": d for n, d in task.reports.items()}
    names = {f"train/{n}": d for n, d in task.train_reports.items()} | {f"val/{n}": d for n, d in task.reports.items()}
    if final_too:
        names |= {f"{split}/{n}": d for split in ("train_eval", "test") for n, d in task.reports.items()}
    return names


def run_sweep(sweep: Sweep, console: Console, resume: bool = False, verbose: bool = False):
    """Start (or resume) the sweep; returns ``(ResultGrid, trials)``: Tune's trial objects by folder name."""
    from ray import tune

    from dl_ray.cluster import storage
    from dl_ray.ray_address import driver_address
    from dl_ray.train.runner import quiet_ray, ensure_ray
    from dl_ray.tune.progress import ProgressCallback, SweepDisplay

    driver_address()  # a bad RAY_ADDRESS is refused before check() makes the trial's run folder
    folder, bucket = sweep.folder, mirror.run_uri(sweep.folder)  # [storage] a sweep sent to a bucket lives there
    kept = bucket or str(folder)
    if bucket:
        mirror.for_run(folder, bucket, fresh=True, checkpoints=False)  # its files so far: sweep.yaml, results
    if resume and not tune.Tuner.can_restore(kept):
        raise SpecError(f"--resume: no sweep to resume in {kept} (run it without --resume to start it)")
    job = check(sweep)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own table instead of Tune's (with verbose=0: silent)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # tiny trials checkpoint often
    restoring = tune.Tuner.can_restore(kept)
    _same_sweep(sweep, folder, restoring)
    quiet_ray(verbose)
    ensure_ray(verbose, job.tracking.wandb)
    storage.check_at_start(job.storage, storage.spreads("tune", {}))  # every trial's node sees the sweep's folder
    import ray

    if sweep.tune.scheduler.name == "pbt":
        concurrency, cpus = sweep.tune.max_concurrent_trials or population(sweep), pbt_cpus(sweep, job, ray.cluster_resources())
        console.print(f"PBT: population of {population(sweep)} runs concurrently, {cpus:g} CPU per trial")
    else:
        concurrency, cpus = (sweep.tune.max_concurrent_trials or
                             derived_concurrency(footprint(sweep, job), ray.cluster_resources(), console)), None
    trainable = _trainable(sweep, job, cpus, bucket)
    where = ("in the trial process" if in_process(job) or sweep.tune.trial == "evaluate"
             else f"{max(job.scaling.num_workers, 1)} Ray workers each")
    console.print(headline(sweep, where, concurrency) + (" (resuming)" if restoring else ""), highlight=False)
    if restoring:
        tuner = tune.Tuner.restore(kept, trainable, resume_unfinished=True, resume_errored=True)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        in_step_with_bucket((folder / "sweep.yaml").write_text, sweep, yaml.safe_dump(_resolved(sweep), sort_keys=False))
        tuner = tune.Tuner(trainable, param_space=_param_space(sweep), tune_config=_tune_config(sweep, job, concurrency),
                           run_config=tune.RunConfig(
                               name=sweep.name, storage_path=mirror.parent_uri(bucket) if bucket else str(folder.parent),
                               verbose=0, callbacks=[ProgressCallback()],
                               failure_config=tune.FailureConfig(max_failures=sweep.tune.max_failures),
                               checkpoint_config=tune.CheckpointConfig(num_to_keep=_checkpoints_kept(sweep))))
    from dl_ray.tune.results import save_progress

    save = functools.partial(in_step_with_bucket, functools.partial(save_progress, sweep=sweep), sweep)
    with SweepDisplay(sweep, console, save=save) as display, stop_on_sigterm(display):
        grid = tuner.fit()
    from dl_ray.tune.trial import trial_folder_name

    return grid, {trial_folder_name(sweep.name, t.trial_id): t for t in display.trials}, display.stop_reason


def in_step_with_bucket(write, sweep: Sweep, *args):
    """``write(*args)``: the sweep's own files; in a bucket, written from the trials' files there and sent there."""
    bucket = mirror.for_run(sweep.folder, checkpoints=False)
    if bucket:
        bucket.pull()
    written = write(*args)
    if bucket:
        bucket.push()
    return written


@contextlib.contextmanager
def stop_on_sigterm(display):
    """SIGTERM (``dl-ray jobs stop``; Ray sends SIGKILL 3 s later) stops the sweep as Ctrl-C does (Tune's graceful
    stop, by its SIGUSR1 handler), after saying so in summary.json and results.csv at once, in case SIGKILL comes first."""
    from dl_ray.statuses import JOBS_STOP

    def stop(signum, frame):
        display.stop_reason = JOBS_STOP
        display.save(display.trials, JOBS_STOP)
        os.kill(os.getpid(), signal.SIGUSR1)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def headline(sweep: Sweep, where: str, concurrency: int) -> str:
    """``sweep NAME: 18 trials (grid of 6 x 3 over beam_width, length_alpha); fifo; ...``: what will run."""
    from dl_ray.tune.progress import short

    t, names = sweep.tune, ", ".join(short(k) for k in sweep.space)
    sizes = [len(d.args) for d in sweep.space.values() if d.kind == "grid" or (t.search == "grid" and d.kind == "choice")]
    grid = f"grid of {' x '.join(map(str, sizes))}" if sizes else ""
    how = (f"{grid}, x {t.num_samples} samples" if grid and t.num_samples > 1 else grid) or f"{t.search} search"
    if grid and t.search != "grid":
        how += f", {t.search} search"
    trials = "up to " if t.time_budget_s else ""
    return (f"sweep {sweep.name}: {trials}{population(sweep)} trials ({how} over {names}); {t.scheduler.name}; "
            f"trials {where}, {concurrency} at a time -> {sweep.folder}")


def _checkpoints_kept(sweep: Sweep) -> int | None:
    """Tune checkpoints kept per trial: PBT keeps all (an exploited trial shares its donor's folder)."""
    return None if sweep.tune.scheduler.name == "pbt" else 2


def footprint(sweep: Sweep, job: JobSpec) -> dict[str, float]:
    """What one trial really holds: its own process (in-process and evaluate trials) or its trainer's workers."""
    s = job.scaling
    if sweep.tune.trial == "evaluate":
        return {"CPU": 1.0, "GPU": 1.0 if s.use_gpu and _cluster_has_gpu() else 0.0}
    workers = max(s.num_workers, 1)
    needs = {"CPU": workers * s.cpus_per_worker, **{k: workers * v for k, v in s.resources_per_worker.items()}}
    return needs | ({"GPU": float(workers)} if s.use_gpu else {})


def pbt_cpus(sweep: Sweep, job: JobSpec, cluster: dict[str, float]) -> float:
    """CPUs one PBT trial holds so that the whole population trains at once (4 decimals, as Ray counts)."""
    share = math.floor(cluster.get("CPU", 0) / population(sweep) * 1e4) / 1e4
    return min(job.scaling.cpus_per_worker, share) if share > 0 else job.scaling.cpus_per_worker


def derived_concurrency(needs: dict[str, float], cluster: dict[str, float], console: Console) -> int:
    """How many trials fit at once: cluster resources / what one trial holds."""
    fits = min(math.floor(cluster.get(k, 0) / v + 1e-9) for k, v in needs.items() if v > 0)
    if fits < 1:
        console.print(f"[yellow]warning[/]: one trial needs {needs}, the cluster has "
                      f"{ {k: cluster.get(k, 0) for k in needs} }; trials wait for the autoscaler")
    return max(fits, 1)


def _trainable(sweep: Sweep, job: JobSpec, cpus: float | None = None, bucket: str | None = None):
    """The trial function with its plan. ``bucket``: the sweep's URI; its trials then keep their folders in their own
    node's scratch folder (the same path on every node) and mirror them there."""
    from ray import tune

    from dl_ray.cluster import storage
    from dl_ray.tune.trial import evaluate_trial, train_trial

    folder = f"{storage.scratch_for(os.environ[mirror.STORAGE_ENV])}/{sweep.name}" if bucket else str(sweep.folder)
    plan = {"sweep": sweep.name, "folder": folder, "bucket": bucket, "job": sweep.trial_spec({}), "in_process": in_process(job),
            "checkpoint_every_epoch": sweep.tune.scheduler.name == "pbt", "direction": sweep.direction}
    if sweep.own_kind is not None:
        return tune.with_resources(tune.with_parameters(sweep.own_kind.trial, plan=plan), footprint(sweep, job))
    if sweep.tune.trial == "evaluate":
        plan |= {"checkpoint": str(sweep.checkpoint), "checkpoint_bucket": sweep.checkpoint_bucket,
                 "evaluator": sweep.tune.evaluator, "split": sweep.tune.split}
        return tune.with_resources(tune.with_parameters(evaluate_trial, plan=plan), footprint(sweep, job))
    resources = {"CPU": cpus or job.scaling.cpus_per_worker} if plan["in_process"] else TRAINER_DRIVER
    return tune.with_resources(tune.with_parameters(train_trial, plan=plan), resources)


def _cluster_has_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def _param_space(sweep: Sweep) -> dict[str, Any]:
    return {key: dist.to_ray(as_grid=sweep.tune.search == "grid") for key, dist in sweep.space.items()}


def _tune_config(sweep: Sweep, job: JobSpec, concurrency: int):
    from ray import tune

    t = sweep.tune
    seed = job.training.seed if t.seed is None else t.seed
    if t.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search, limit = OptunaSearch(metric=t.metric, mode=t.direction, seed=seed), concurrency
    else:
        from ray.tune.search import BasicVariantGenerator

        search, limit = BasicVariantGenerator(random_state=seed, max_concurrent=concurrency), None  # not a Searcher: limits itself
    name = functools.partial(_trial_name, sweep.name)
    return tune.TuneConfig(metric=t.metric, mode=t.direction, num_samples=t.num_samples, search_alg=search,
                           scheduler=_scheduler(sweep, job), max_concurrent_trials=limit, time_budget_s=t.time_budget_s,
                           reuse_actors=in_process(job) or t.trial == "evaluate", trial_name_creator=name, trial_dirname_creator=name)


def _trial_name(sweep_name: str, trial) -> str:
    from dl_ray.tune.trial import trial_folder_name

    return trial_folder_name(sweep_name, trial.trial_id)


def _scheduler(sweep: Sweep, job: JobSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = sweep.tune.scheduler
    if s.name == "asha":  # no rung at the last epoch (stopping there saves nothing): survivors finish and test
        return ASHAScheduler(time_attr="epoch", max_t=max(job.training.epochs - 1, s.grace_period), grace_period=s.grace_period,
                             reduction_factor=s.reduction_factor, stop_last_trials=False)
    if s.name == "pbt":
        from dl_ray.tune.pbt import scheduler

        return scheduler(sweep, job.training.epochs)
    return FIFOScheduler()


def _resolved(sweep: Sweep) -> dict[str, Any]:
    return {"job": sweep.job_raw, "tune": sweep.tune.model_dump(mode="json")}


def _same_sweep(sweep: Sweep, folder: Path, restoring: bool) -> None:
    saved = folder / "sweep.yaml"
    if not (restoring and saved.is_file()):
        return
    before, now = yaml.safe_load(saved.read_text()), yaml.safe_load(yaml.safe_dump(_resolved(sweep), sort_keys=False))
    if before != now:
        changed = sorted(k for k in set(before["tune"]) | set(now["tune"]) if before["tune"].get(k) != now["tune"].get(k))
        what = ", ".join(f"tune.{k}" for k in changed) or "the job"
        raise SpecError(f"name: {folder} holds a sweep with a different spec ({what}); rerun it unchanged to resume, "
                        f"or pick a new --set name=...")


def command(path: str, overrides: list[str], console: Console, resume: bool = False, dry_run: bool = False,
            verbose: bool = False) -> int:
    """``dl-ray tune``: 0 done, 1 no trial finished, 2 bad sweep (SpecError, raised), 130 interrupted."""
    from dl_ray.tune.results import write_outputs
    from dl_ray.tune.spec import load_sweep

    sweep = load_sweep(path, overrides)
    if dry_run:
        check(sweep)
        console.print(yaml.safe_dump(_resolved(sweep), sort_keys=False), highlight=False)
        return 0
    grid, trials, stop_reason = run_sweep(sweep, console, resume=resume, verbose=verbose)
    write = functools.partial(write_outputs, grid, trials, sweep, console, _expected_trials(sweep), stop_reason)
    rows, best, stopped = in_step_with_bucket(write, sweep)
    if stopped:
        done = sum(r["status"] not in ("pending", "interrupted") for r in rows)
        print(f"{'stopped' if stop_reason else 'interrupted'} ({stopped}) with {done} of {population(sweep)} trials finished: "
              f"run the same command again (or add --resume) to continue the sweep in {sweep.folder}", file=sys.stderr)
        return 130
    if best is None:
        print(f"error: no trial of sweep {sweep.name} reported a finite {sweep.tune.metric} (see {sweep.folder / 'results.csv'})",
              file=sys.stderr)
        return 1
    return 0


def population(sweep: Sweep) -> int:
    """Trials the sweep samples: num_samples x the size of the grid."""
    grid = math.prod(len(d.args) for d in sweep.space.values() if d.kind == "grid" or
                     (sweep.tune.search == "grid" and d.kind == "choice"))
    return sweep.tune.num_samples * grid


def _expected_trials(sweep: Sweep) -> int:
    return 0 if sweep.tune.time_budget_s else population(sweep)
