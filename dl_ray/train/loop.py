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

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from dl_ray.data import build_data
from dl_ray.data.augment import shift_rotate
from dl_ray.models import ModelIO, TaskModel, build_model
from dl_ray.spec import JobSpec, parse_spec
from dl_ray.train import checkpoints
from dl_ray.train.optim import make_optimizer, make_scheduler
from dl_ray.train.progress import ProgressSender
from dl_ray.tracking import History, WandbRun, write_summary

FAIL_AT_EPOCH = "DL_RAY_FAIL_AT_EPOCH"  # chaos hook: rank 0 dies once at this epoch (tests)


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
    ctx = ray.train.get_context()  # [Ray]
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()  # [Ray]
    progress = ProgressSender(config.get("progress") if rank == 0 else None)
    cfg_t, es = spec.training, spec.regularization.early_stopping

    torch.manual_seed(cfg_t.seed)
    data = build_data(spec.data)
    model = build_model(spec.model, ModelIO(data.input_shape, data.num_outputs, data.task), spec.regularization.dropout)
    optimizer = make_optimizer(model, spec.optimizer, spec.regularization.l2)
    scheduler = make_scheduler(optimizer, spec.schedule, cfg_t.epochs, spec.optimizer.lr)
    state = {"epoch": 0, "best": None, "best_epoch": None, "bad_epochs": 0, "stopped": False}

    resume = ray.train.get_checkpoint()  # [Ray]
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

    net = ray.train.torch.prepare_model(model)  # [Ray] DDP across workers, moves to the device
    per_worker = math.ceil(len(data.train) / world) if cfg_t.batch_size == "full" else math.ceil(cfg_t.batch_size / world)
    train_loader = DataLoader(Batches(*data.train.tensors), batch_size=per_worker, shuffle=True, collate_fn=as_batch)
    train_loader = ray.train.torch.prepare_data_loader(train_loader)  # [Ray] DistributedSampler + device
    history = History(run_dir / "metrics.csv")
    tracker = WandbRun(spec, run_dir) if rank == 0 else None
    if rank == 0:
        history.load_until(state["epoch"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg_t.precision == "bf16" else nullcontext()
    status = "early_stopped" if state["stopped"] else "completed"

    for epoch in range(state["epoch"], 0 if state["stopped"] else cfg_t.epochs):
        _maybe_fail(epoch + 1, rank, run_dir)
        torch.manual_seed(cfg_t.seed * 100_003 + epoch * 1_009 + rank)  # resumed runs replay the same draws
        if world > 1:
            train_loader.sampler.set_epoch(epoch)
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]

        # ---- train one epoch
        net.train()
        sums = torch.zeros(3, device=device)  # loss * n, correct, n
        for step, (x, y) in enumerate(train_loader, 1):
            if spec.regularization.augment.enabled:
                x = shift_rotate(x, spec.regularization.augment.max_shift, spec.regularization.augment.max_rotation)
            with autocast:
                out = net(x)
            loss = model.loss(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg_t.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg_t.grad_clip)
            optimizer.step()
            sums += torch.stack([loss.detach() * len(y), model.num_correct(out.detach(), y).float(), torch.tensor(len(y), device=device, dtype=torch.float)])
            progress.batch(epoch + 1, cfg_t.epochs, step, len(train_loader))
        metrics = {"epoch": epoch + 1, **_summarise("train", _all_reduce(sums, world), data.task)}
        metrics |= evaluate(net, model, data.val, "val", data.task, rank, world, device)
        scheduler.step()
        elapsed = time.perf_counter() - started
        metrics |= {"lr": lr, "time/epoch_s": elapsed, "perf/samples_per_s": len(data.train) / elapsed}

        if not math.isfinite(metrics["train/loss"]):
            status = "nonfinite_loss"
            ray.train.report(metrics)  # [Ray] no checkpoint: the last good one stays the latest
            break

        # ---- early stopping on a validation metric
        value, improved = metrics.get(es.metric), False
        if es.patience and value is not None:
            best = state["best"]
            improved = best is None or (value < best - es.min_delta if es.mode == "min" else value > best + es.min_delta)
            state |= {"best": value, "best_epoch": epoch + 1, "bad_epochs": 0} if improved else {"bad_epochs": state["bad_epochs"] + 1}
            state["stopped"] = state["bad_epochs"] >= es.patience
        state["epoch"] = epoch + 1

        # ---- checkpoint (rank 0 writes; every rank reports) and our own history
        due = state["epoch"] % cfg_t.checkpoint_every == 0 or state["epoch"] == cfg_t.epochs or improved or state["stopped"]
        if rank == 0:
            history.append(metrics)
            tracker.log(metrics, step=epoch + 1)
            progress.epoch(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if due and rank == 0:
                payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(), "state": state, "spec": spec.to_dict()}
                checkpoints.write(Path(tmp), payload, metrics, spec.to_dict())
                ckpt = ray.train.Checkpoint.from_directory(tmp)  # [Ray]
            name = checkpoints.dir_name(state["epoch"]) if due else None
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)  # [Ray]
            if ckpt is not None and local_mode:
                score = es.metric if es.patience else None
                checkpoints.persist_local(Path(tmp), run_dir, state["epoch"], cfg_t.keep_checkpoints, score, es.mode)
        if state["stopped"]:
            status = "early_stopped"
            break

    # ---- final report: test metrics, and train vs validation error (bias / variance)
    summary: dict[str, Any] = {"status": status, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                               "best_metric": state["best"], "task": data.task}
    if status != "nonfinite_loss":
        if state["best_epoch"] and state["best_epoch"] in checkpoints.saved(run_dir):
            model.load_state_dict(checkpoints.read(checkpoints.saved(run_dir)[state["best_epoch"]])["model"])
        final = {}
        for split, dataset in (("train_eval", data.train), ("val", data.val), ("test", data.test)):
            final |= evaluate(net, model, dataset, split, data.task, rank, world, device)
        summary["final"] = final
        if rank == 0:
            history.update_last({k: v for k, v in final.items() if k.startswith("test/")})
            tracker.log({k: v for k, v in final.items() if k.startswith("test/")}, step=state["epoch"])
        ray.train.report(final | {"epoch": state["epoch"]})  # [Ray] for Tune; kept by us in summary.json
    if rank == 0:
        summary["checkpoint"] = str(checkpoints.latest(run_dir) or "")
        write_summary(run_dir, summary)
        tracker.finish(summary.get("final"))
    return summary


@torch.no_grad()
def evaluate(net, model: TaskModel, dataset, split: str, task: str, rank: int, world: int, device) -> dict[str, float]:
    """Loss and accuracy over ``dataset``, each worker taking every world-th example (no padding)."""
    net.eval()
    sums = torch.zeros(3, device=device)
    for x, y in DataLoader(Batches(*(t[rank::world] for t in dataset.tensors)), batch_size=1024, collate_fn=as_batch):
        x, y = x.to(device), y.to(device)
        out = net(x).float()
        sums += torch.stack([model.loss(out, y) * len(y), model.num_correct(out, y).float(), torch.tensor(len(y), device=device, dtype=torch.float)])
    return _summarise(split, _all_reduce(sums, world), task)


def _all_reduce(sums: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(sums)
    return sums


def _summarise(split: str, sums: torch.Tensor, task: str) -> dict[str, float]:
    loss_sum, correct, n = sums.tolist()
    out = {f"{split}/loss": loss_sum / max(n, 1)}
    if task != "regression":
        out[f"{split}/accuracy"] = correct / max(n, 1)
    return out


def _maybe_fail(epoch: int, rank: int, run_dir: Path) -> None:
    """Chaos hook for the fault-tolerance tests: rank 0 dies once when ``DL_RAY_FAIL_AT_EPOCH`` says."""
    if rank == 0 and os.environ.get(FAIL_AT_EPOCH) == str(epoch):
        marker = run_dir / f".failed_at_epoch_{epoch}"
        if not marker.exists():
            marker.touch()
            os._exit(17)
