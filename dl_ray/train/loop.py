"""The one generic training loop every model family runs, on 0..N Ray Train workers.

It drives a :class:`~dl_ray.models.task.Task` and reads top to bottom as named steps: set up (data,
task, optimizers), resume, then for each epoch train, evaluate, decay the LRs, early-stop, checkpoint
and report; finally score the best weights on every split. What differs between families (a GAN's two
optimizers, a VAE's ELBO, seq2seq's decoding) lives in the task, never here. Ray appears only at the
lines marked ``# [Ray]``; test hooks (fault injection) and timing are callbacks.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dl_ray import statuses
from dl_ray.cluster import mirror
from dl_ray.data import DataBundle, build_data
from dl_ray.models import build_model
from dl_ray.models.task import Ratio, Task
from dl_ray.spec import JobSpec, parse_spec
from dl_ray.train import checkpoints, session
from dl_ray.train.optim import make_optimizers, make_scheduler, optimizer_specs, replan
from dl_ray.train.progress import ProgressSender
from dl_ray.tracking import History, WandbRun, write_summary

FAIL_AT = "DL_RAY_FAIL_AT"  # chaos hook "RUN_NAME:EPOCH": rank 0 of that run dies once at that epoch (tests)
EVAL_BATCH = 1024


@dataclass
class Progress:
    """What a checkpoint must carry besides weights so that a resumed run continues exactly."""

    epoch: int = 0
    """Epochs finished."""
    best: float | None = None
    """Best value of the early-stopping metric so far, and its epoch."""
    best_epoch: int | None = None
    ref: float | None = None
    """Value the next epoch must beat by min_delta to count as an improvement."""
    bad_epochs: int = 0
    stopped: bool = False


@dataclass
class StepContext:
    """What ``Task.training_step`` gets: the prepared networks and the one way to take an optimizer step."""

    nets: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    device: torch.device
    autocast: Any
    grad_clip: float | None
    grad_clip_mode: str = "norm"
    epoch: int = 0
    steps: int = 0
    on_step: list = field(default_factory=list)

    def backward(self, loss: torch.Tensor, optimizer: str = "main") -> None:
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            clip = torch.nn.utils.clip_grad_value_ if self.grad_clip_mode == "value" else torch.nn.utils.clip_grad_norm_
            clip([p for g in opt.param_groups for p in g["params"]], self.grad_clip)
        opt.step()
        self.steps += 1
        for callback in self.on_step:
            callback()


# ---------------------------------------------------------------- callbacks


class FailAt:
    """Chaos hook for the fault-tolerance tests: rank 0 dies once where ``DL_RAY_FAIL_AT`` says."""

    def __init__(self, run_dir: Path, rank: int):
        self.run_dir, self.rank = run_dir, rank

    def epoch_start(self, epoch: int) -> None:
        if self.rank == 0 and os.environ.get(FAIL_AT) == f"{self.run_dir.name}:{epoch}":
            marker = self.run_dir / f".failed_at_epoch_{epoch}"
            if not marker.exists():
                marker.touch()
                os._exit(17)


class FirstStep:
    """Wall clock of this process's first optimizer step, in ``summary.json`` (launch-to-first-step in benchmarks)."""

    def __init__(self):
        self.at: float | None = None

    def __call__(self) -> None:
        self.at = self.at or time.time()


# ---------------------------------------------------------------- the worker


class Worker:
    """One worker's run of a job: the state the named steps below share."""

    def __init__(self, config: dict[str, Any]):
        self.spec: JobSpec = parse_spec(config["spec"])
        self.run_dir, self.local_mode = Path(config["run_dir"]), config["local_mode"]
        self.ray = session.for_config(config)  # [Ray] Ray Train workers, or a Tune trial's own process
        self.rank, self.world = self.ray.rank_and_world()  # [Ray]
        self.device = self.ray.device()  # [Ray]
        self.progress = ProgressSender(config.get("progress") if self.rank == 0 else None)
        spec, cfg_t = self.spec, self.spec.training

        torch.manual_seed(cfg_t.seed)
        shipped = self.ray.shipped_data(config.get("data"))  # [Ray] [launch] the driver's bundle, when it sent one
        self.data: DataBundle = shipped if shipped is not None else build_data(spec.data)
        self.task: Task = build_model(spec.model, self.data.io, spec.regularization.dropout)
        specs = optimizer_specs(self.task.optimizer_names, spec.optimizer, spec.optimizers, spec.model.name)
        self.optimizers = make_optimizers(self.task, specs, spec.regularization.l2)
        self.schedulers = {n: make_scheduler(o, spec.schedule, cfg_t.epochs, specs[n].lr) for n, o in self.optimizers.items()}
        self.state = Progress()
        self.direction = self.task.reports.get(spec.regularization.early_stopping.metric.partition("/")[2], "min")
        self.fail_at, self.first_step = FailAt(self.run_dir, self.rank), FirstStep()
        self.bucket_uri = config.get("bucket")  # [storage] a run kept in a bucket (None: on a filesystem)
        self.bucket = mirror.for_run(self.run_dir, self.bucket_uri) if self.rank == 0 and self.bucket_uri else None

    # ---- resume: Ray's checkpoint (a restarted worker group, a Tune trial), else the run folder's latest
    def resume(self) -> None:
        resume = self.ray.get_checkpoint()  # [Ray]
        if resume is not None:
            with checkpoints.opened(resume) as folder:
                saved = checkpoints.read(folder)
        else:
            folder = checkpoints.latest(self.run_dir)
            saved = checkpoints.read(folder) if folder else None
        if saved:
            checkpoints.restore(saved, self.task, self.optimizers, self.schedulers)
            for name, scheduler in self.schedulers.items():  # an extended run: this job's plan, not the saved lr
                replan(self.optimizers[name], scheduler)
            self.state = Progress(**saved["state"])

    def prepare(self) -> None:
        channels_last = self.spec.training.memory_format == "channels_last"
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format
        self.task.to(memory_format=self.memory_format)  # before DDP, whose gradient buckets copy the weights' strides
        self.nets = {name: self.ray.prepare_model(net) for name, net in self.task.networks().items()}  # [Ray] DDP, device
        self.task.to(self.device)
        self.history = History(self.run_dir / "metrics.csv")
        self.tracker = WandbRun(self.spec, self.run_dir) if self.rank == 0 else None
        if self.rank == 0:
            self.history.load_until(self.state.epoch)
        bf16 = self.spec.training.precision == "bf16"
        self.ctx = StepContext(self.nets, self.optimizers, self.device,
                               torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext(),
                               self.spec.training.grad_clip, self.spec.training.grad_clip_mode, on_step=[self.first_step])

    # ---- one epoch of training
    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg_t = self.spec.training
        torch.manual_seed(cfg_t.seed * 100_003 + epoch * 1_009 + self.rank)  # dropout, augmentation: resumes replay them
        n = len(self.data.train)
        per_worker = math.ceil(n / self.world) if cfg_t.batch_size == "full" else math.ceil(cfg_t.batch_size / self.world)
        batches = self.data.loader("train", per_worker, epoch=epoch, rank=self.rank, world=self.world, seed=cfg_t.seed,
                                   augment=self.spec.regularization.augment)
        started = time.perf_counter()
        self.task.train()
        self.ctx.epoch, sums = epoch, {}
        for step, batch in enumerate(batches, 1):
            out = self.task.training_step(to_device(batch, self.device, self.memory_format), self.ctx)
            for name, value in out.items():
                total, count = value if isinstance(value, tuple) else (value, 1.0)
                if name not in sums:  # Ratio's float64 states, summed here: a Ratio.update per step costs ~16 us
                    sums[name] = (torch.zeros((), dtype=torch.float64, device=self.device),
                                  torch.zeros((), dtype=torch.float64, device=self.device))
                for acc, v in zip(sums[name], (total, count)):
                    acc.add_(v.detach() if isinstance(v, torch.Tensor) else v)
            self.progress.batch(epoch + 1, cfg_t.epochs, step, len(batches))
        metrics = {f"train/{name}": float(epoch_mean(*acc, self.device)) for name, acc in sorted(sums.items())}
        return metrics | {"perf/train_samples_per_s": n / (time.perf_counter() - started)}

    def learning_rates(self) -> dict[str, float]:
        lrs = {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}
        return {"lr": lrs["main"]} if list(lrs) == ["main"] else {f"lr/{name}": lr for name, lr in lrs.items()}

    # ---- early stopping on a validation metric; the best epoch is the one whose checkpoint is kept
    def early_stopping(self, metrics: dict[str, float]) -> bool:
        """Update the best / patience counters; True when this epoch is the best so far."""
        es, s = self.spec.regularization.early_stopping, self.state
        value = metrics.get(es.metric)
        if not es.patience or value is None:
            return False
        sign = 1 if self.direction == "min" else -1
        new_best = s.best is None or sign * value <= sign * s.best  # a tie goes to the later epoch, as in Ray
        if new_best:
            s.best, s.best_epoch = value, s.epoch
        if s.ref is None or sign * value < sign * s.ref - es.min_delta:
            s.ref, s.bad_epochs = value, 0
        else:
            s.bad_epochs += 1
        s.stopped = s.bad_epochs >= es.patience
        return new_best

    # ---- checkpoint (rank 0 writes; every rank reports) and our own history
    def checkpoint_and_report(self, metrics: dict[str, float], new_best: bool) -> None:
        cfg_t, es, epoch = self.spec.training, self.spec.regularization.early_stopping, self.state.epoch
        due = epoch % cfg_t.checkpoint_every == 0 or epoch == cfg_t.epochs or new_best or self.state.stopped
        if self.rank == 0:
            self.history.append(metrics)
            self.tracker.log(metrics, step=epoch)
            self.progress.epoch(metrics)
            if self.task.artifacts_due(epoch, cfg_t.epochs):
                self.draw_artifacts(epoch)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if due and self.rank == 0:
                payload = checkpoints.payload(self.task, self.optimizers, self.schedulers, asdict(self.state),
                                              self.spec.to_dict(), self.data.io)
                checkpoints.write(Path(tmp), payload, metrics, self.spec.to_dict())
                ckpt = Path(tmp)
            name = checkpoints.dir_name(epoch) if due else None
            self.ray.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)  # [Ray]
            if ckpt is not None and self.local_mode:
                score = es.metric if es.patience else None
                checkpoints.persist_local(ckpt, self.run_dir, epoch, cfg_t.keep_checkpoints, score, self.direction)
        if self.bucket:  # [storage] this epoch's files (and local mode's checkpoints: Ray Train sends the others)
            self.bucket.push(checkpoints=self.local_mode)

    @torch.no_grad()
    def draw_artifacts(self, epoch: int) -> None:
        self.task.eval()
        paths = self.task.artifacts(self.run_dir, epoch, self.data)
        self.tracker.log_images(paths, step=epoch)

    # ---- final report: the best weights on every split, and train vs validation error (bias / variance)
    def finish(self, outcome: dict[str, str]) -> dict[str, Any]:
        """``outcome``: the summary's status fields (:func:`dl_ray.statuses.status_fields`)."""
        s = self.state
        summary: dict[str, Any] = {**outcome, "epochs_run": s.epoch, "best_epoch": s.best_epoch,
                                   "first_step_at": self.first_step.at, "best_metric": s.best, "task": self.data.task,
                                   "kind": self.spec.kind}
        if outcome["status"] != statuses.FAILED:
            if self.bucket:  # [storage] the checkpoints Ray Train wrote into the bucket, and the rest
                self.bucket.pull()
            elif self.bucket_uri:  # [storage] the checkpoints only: rank 0 keeps the run's other files
                mirror.Mirror(self.bucket_uri, self.run_dir).pull(prefix=mirror.CHECKPOINTS)
            saved = checkpoints.saved(self.run_dir)
            if s.best_epoch and s.best_epoch in saved:
                self.task.load_state_dict(checkpoints.read(saved[s.best_epoch])["model"])
            final = {}
            for split, name in (("train", "train_eval"), ("val", "val"), ("test", "test")):
                final |= evaluate(self.task, self.data, split, self.rank, self.world, self.device, name)
            summary["final"] = final
            if self.rank == 0:
                self.history.update_last({k: v for k, v in final.items() if k.startswith("test/")})
                self.draw_artifacts(s.epoch)
            self.ray.report(final | {"epoch": s.epoch})  # [Ray] for Tune; kept by us in summary.json
        if self.rank == 0:  # checkpoint: the weights the final figures are of; the latest one is where a rerun resumes
            latest = checkpoints.latest(self.run_dir)
            scored = checkpoints.saved(self.run_dir).get(s.best_epoch) if "final" in summary else None
            summary["checkpoint"], summary["latest_checkpoint"] = str(scored or latest or ""), str(latest or "")
            write_summary(self.run_dir, summary)
            self.tracker.finish(summary.get("final"))
            if self.bucket:  # [storage]
                self.bucket.push(checkpoints=self.local_mode)
        return summary


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    w = Worker(config)
    w.resume()
    w.prepare()
    early = statuses.status_fields(statuses.STOPPED, statuses.EARLY_STOPPING)
    outcome = early if w.state.stopped else statuses.status_fields(statuses.COMPLETED)
    for epoch in range(w.state.epoch, 0 if w.state.stopped else w.spec.training.epochs):
        w.fail_at.epoch_start(epoch + 1)
        started, lrs = time.perf_counter(), w.learning_rates()
        metrics = {"epoch": epoch + 1, **w.train_epoch(epoch)}
        metrics |= evaluate(w.task, w.data, "val", w.rank, w.world, w.device)
        for scheduler in w.schedulers.values():
            scheduler.step()
        metrics |= lrs | {"time/epoch_s": time.perf_counter() - started}
        if not all(math.isfinite(v) for k, v in metrics.items() if k.endswith("loss")):
            outcome = statuses.status_fields(statuses.FAILED, statuses.NONFINITE_LOSS)
            w.ray.report(metrics)  # [Ray] no checkpoint: the last good one stays the latest
            break
        w.state.epoch = epoch + 1
        new_best = w.early_stopping(metrics)
        w.checkpoint_and_report(metrics, new_best)
        if w.state.stopped:
            outcome = early
            break
    return w.finish(outcome)


@torch.no_grad()
def evaluate(task: Task, data: DataBundle, split: str, rank: int, world: int, device: torch.device,
             name: str | None = None) -> dict[str, float]:
    """The task's metrics over ``split``, each worker taking every world-th example; ``compute`` all-reduces them."""
    task.eval()
    metrics = {n: m.to(device) for n, m in task.evaluation().items()}
    nets = task.networks()
    for batch in data.loader(split, EVAL_BATCH, rank=rank, world=world):
        task.eval_step(to_device(batch, device), metrics, nets)
    return {f"{name or split}/{n}": float(m.compute()) for n, m in metrics.items()}


def epoch_mean(total: torch.Tensor, count: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``total / count`` over the epoch's steps on every worker (a :class:`Ratio` updated once: compute all-reduces)."""
    ratio = Ratio().to(device)
    ratio.update(total, count)
    return ratio.compute()


def to_device(batch: Any, device: torch.device, memory_format: torch.memory_format = torch.preserve_format) -> Any:
    """Tensors of a batch (a tensor, or tuples / lists / dicts of them) on ``device``; 4-D ones (image batches)
    in ``memory_format``."""
    if isinstance(batch, torch.Tensor):
        layout = memory_format if batch.dim() == 4 else torch.preserve_format
        return batch.to(device, non_blocking=True, memory_format=layout)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device, memory_format) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device, memory_format) for k, v in batch.items()}
    return batch
