"""The one generic training loop every supervised family runs, on 0..N Ray Train workers.

It reads top to bottom: build data and model, resume, then for each epoch train,
validate, decay the LR, early-stop, checkpoint and report. Ray appears only at
the lines marked ``# [Ray]``.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from dl_ray.data import build_data
from dl_ray.data.augment import shift_rotate
from dl_ray.models import TaskModel, build_model
from dl_ray.spec import JobSpec, parse_spec
from dl_ray.train import checkpoints, session
from dl_ray.train.optim import make_optimizer, make_scheduler
from dl_ray.train.progress import ProgressSender
from dl_ray.tracking import History, WandbRun, write_summary

FAIL_AT = "DL_RAY_FAIL_AT"  # chaos hook "RUN_NAME:EPOCH": rank 0 of that run dies once at that epoch (tests)


class Batches(torch.utils.data.TensorDataset):
    """A TensorDataset that the DataLoader indexes a whole batch at a time (no per-sample collate)."""

    def __getitems__(self, index: list[int]):
        index = torch.as_tensor(index)
        return tuple(t[index] for t in self.tensors)


def as_batch(batch):
    return batch


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    spec: JobSpec = parse_spec(config["spec"])
    run_dir, local_mode = Path(config["run_dir"]), config["local_mode"]
    ray_api = session.for_config(config)  # [Ray] Ray Train workers, or a Tune trial's own process
    rank, world = ray_api.rank_and_world()  # [Ray]
    device = ray_api.device()  # [Ray]
    progress = ProgressSender(config.get("progress") if rank == 0 else None)
    cfg_t, es, augment = spec.training, spec.regularization.early_stopping, spec.regularization.augment

    torch.manual_seed(cfg_t.seed)
    data = build_data(spec.data)
    model = build_model(spec.model, data.io, spec.regularization.dropout)
    optimizer = make_optimizer(model, spec.optimizer, spec.regularization.l2)
    scheduler = make_scheduler(optimizer, spec.schedule, cfg_t.epochs, spec.optimizer.lr)
    state = {"epoch": 0, "best": None, "best_epoch": None, "ref": None, "bad_epochs": 0, "stopped": False}

    resume = ray_api.get_checkpoint()  # [Ray]
    if resume is not None:
        with resume.as_directory() as folder:
            saved = checkpoints.read(folder)
    else:
        folder = checkpoints.latest(run_dir)
        saved = checkpoints.read(folder) if folder else None
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]

    net = ray_api.prepare_model(model)  # [Ray] DDP across workers, moves to the device
    per_worker = math.ceil(len(data.train) / world) if cfg_t.batch_size == "full" else math.ceil(cfg_t.batch_size / world)
    train_loader = DataLoader(Batches(*data.train.tensors), batch_size=per_worker, shuffle=True, collate_fn=as_batch)
    train_loader = ray_api.prepare_data_loader(train_loader)  # [Ray] DistributedSampler + device
    history = History(run_dir / "metrics.csv")
    tracker = WandbRun(spec, run_dir) if rank == 0 else None
    if rank == 0:
        history.load_until(state["epoch"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg_t.precision == "bf16" else nullcontext()
    status = "early_stopped" if state["stopped"] else "completed"
    first_step_at = None  # wall clock of this session's first optimiser step (benchmarks/train_overhead.py)

    for epoch in range(state["epoch"], 0 if state["stopped"] else cfg_t.epochs):
        _maybe_fail(epoch + 1, rank, run_dir)
        torch.manual_seed(cfg_t.seed * 100_003 + epoch * 1_009 + rank)  # resumed runs replay the same draws
        if world > 1:
            train_loader.sampler.set_epoch(epoch)
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]

        # ---- train one epoch
        net.train()
        sums: dict[str, torch.Tensor] = {}
        for step, batch in enumerate(train_loader, 1):
            if augment.enabled:
                batch = (shift_rotate(batch[0], augment.max_shift, augment.max_rotation), *batch[1:])
            with autocast:
                out = net(*model.inputs(batch))
            loss = model.loss(out.float(), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg_t.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg_t.grad_clip)
            optimizer.step()
            first_step_at = first_step_at or time.time()
            _accumulate(sums, model.metrics(out.detach().float(), batch))
            progress.batch(epoch + 1, cfg_t.epochs, step, len(train_loader))
        metrics = {"epoch": epoch + 1, **_summarise("train", sums, world)}
        train_s = time.perf_counter() - started
        metrics |= evaluate(model, data.val, "val", rank, world, device)
        scheduler.step()
        elapsed = time.perf_counter() - started
        metrics |= {"lr": lr, "time/epoch_s": elapsed, "perf/train_samples_per_s": len(data.train) / train_s}

        if not (math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])):
            status = "nonfinite_loss"
            ray_api.report(metrics)  # [Ray] no checkpoint: the last good one stays the latest
            break

        # ---- early stopping on a validation metric; the best epoch is the one whose checkpoint is kept
        value, new_best = metrics.get(es.metric), False
        if es.patience and value is not None:
            sign = 1 if es.mode == "min" else -1
            new_best = state["best"] is None or sign * value <= sign * state["best"]  # a tie goes to the later epoch, as in Ray
            improved = state["ref"] is None or sign * value < sign * state["ref"] - es.min_delta
            state |= {"best": value, "best_epoch": epoch + 1} if new_best else {}
            state |= {"ref": value, "bad_epochs": 0} if improved else {"bad_epochs": state["bad_epochs"] + 1}
            state["stopped"] = state["bad_epochs"] >= es.patience
        state["epoch"] = epoch + 1

        # ---- checkpoint (rank 0 writes; every rank reports) and our own history
        due = state["epoch"] % cfg_t.checkpoint_every == 0 or state["epoch"] == cfg_t.epochs or new_best or state["stopped"]
        if rank == 0:
            history.append(metrics)
            tracker.log(metrics, step=epoch + 1)
            progress.epoch(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None  # rank 0 writes the checkpoint folder; every rank reports
            if due and rank == 0:
                payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(), "state": state, "spec": spec.to_dict()}
                checkpoints.write(Path(tmp), payload, metrics, spec.to_dict())
                ckpt = Path(tmp)
            name = checkpoints.dir_name(state["epoch"]) if due else None
            ray_api.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)  # [Ray]
            if ckpt is not None and local_mode:
                score = es.metric if es.patience else None
                checkpoints.persist_local(Path(tmp), run_dir, state["epoch"], cfg_t.keep_checkpoints, score, es.mode)
        if state["stopped"]:
            status = "early_stopped"
            break

    # ---- final report: test metrics, and train vs validation error (bias / variance)
    summary: dict[str, Any] = {"status": status, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                               "first_step_at": first_step_at,
                               "best_metric": state["best"], "task": data.task}
    if status != "nonfinite_loss":
        if state["best_epoch"] and state["best_epoch"] in checkpoints.saved(run_dir):
            model.load_state_dict(checkpoints.read(checkpoints.saved(run_dir)[state["best_epoch"]])["model"])
        final = {}
        for split, dataset in (("train_eval", data.train), ("val", data.val), ("test", data.test)):
            final |= evaluate(model, dataset, split, rank, world, device)
        summary["final"] = final
        if rank == 0:
            history.update_last({k: v for k, v in final.items() if k.startswith("test/")})
        ray_api.report(final | {"epoch": state["epoch"]})  # [Ray] for Tune; kept by us in summary.json
    if rank == 0:
        summary["checkpoint"] = str(checkpoints.latest(run_dir) or "")
        write_summary(run_dir, summary)
        tracker.finish(summary.get("final"))
    return summary


@torch.no_grad()
def evaluate(model: TaskModel, dataset, split: str, rank: int, world: int, device) -> dict[str, float]:
    """The model's eval metrics over ``dataset``, each worker taking every world-th example (no padding)."""
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    shard = Batches(*(t[rank::world] for t in dataset.tensors))
    for batch in DataLoader(shard, batch_size=1024, collate_fn=as_batch):
        _accumulate(sums, model.eval_metrics(tuple(t.to(device) for t in batch)))
    return _summarise(split, sums, world)


def _accumulate(sums: dict[str, torch.Tensor], batch_sums: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    for name, (total, count) in batch_sums.items():
        pair = torch.stack([total.detach().float(), count.float()])
        sums[name] = sums[name] + pair if name in sums else pair


def _summarise(split: str, sums: dict[str, torch.Tensor], world: int) -> dict[str, float]:
    """Sum (total, count) pairs over workers and divide: ``{split/name: total / count}``."""
    names = sorted(sums)
    stacked = torch.stack([sums[n] for n in names])
    if world > 1:
        dist.all_reduce(stacked)
    return {f"{split}/{n}": (t / max(c, 1.0)) for n, (t, c) in zip(names, stacked.tolist())}


def _maybe_fail(epoch: int, rank: int, run_dir: Path) -> None:
    """Chaos hook for the fault-tolerance tests: rank 0 dies once where ``DL_RAY_FAIL_AT`` says."""
    if rank == 0 and os.environ.get(FAIL_AT) == f"{run_dir.name}:{epoch}":
        marker = run_dir / f".failed_at_epoch_{epoch}"
        if not marker.exists():
            marker.touch()
            os._exit(17)
