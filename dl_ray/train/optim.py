"""Optimisers, LR decay schedules and the L2 penalty, built from the spec."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from dl_ray.spec import OptimizerSpec, ScheduleSpec


def make_optimizer(params: nn.Module | Iterable[nn.Parameter], opt: OptimizerSpec, l2: float,
                   capturable: bool = False, fused: bool = False) -> torch.optim.Optimizer:
    """An optimizer of a module's parameters (or of the given ones).

    L2 is applied as weight decay on weights only: its gradient is that of (l2/2)*||w||^2.
    ``capturable``: the step may be captured in a CUDA graph (Adam and RMSProp keep their step count on the GPU).
    ``fused``: Adam's one-kernel step (the DQN learner on a CPU: ~10 % of a small network's update)."""
    params = list(params.parameters() if isinstance(params, nn.Module) else params)
    weights = [p for p in params if p.ndim > 1]
    others = [p for p in params if p.ndim <= 1]
    groups = [{"params": weights, "weight_decay": l2}, {"params": others, "weight_decay": 0.0}]
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum)
    if opt.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=opt.lr, alpha=opt.rho, momentum=opt.momentum, capturable=capturable)
    return torch.optim.Adam(groups, lr=opt.lr, betas=opt.betas, capturable=capturable, fused=fused or None)


def lr_factor(sched: ScheduleSpec, epoch: int, epochs: int, base_lr: float) -> float:
    """Multiplier of the initial learning rate during ``epoch`` (0-based)."""
    if sched.name == "step":
        return sched.decay_rate ** (epoch // sched.step_size)
    if sched.name == "exponential":
        return sched.decay_rate**epoch
    if sched.name == "inverse_time":
        return 1.0 / (1.0 + sched.decay_rate * epoch)
    if sched.name == "cosine":
        floor = sched.min_lr / base_lr
        progress = epoch / epochs  # the last epoch still learns a little
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, sched: ScheduleSpec, epochs: int, base_lr: float):
    """A per-epoch ``LambdaLR``: call ``.step()`` once at the end of every epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(sched, e, epochs, base_lr))


def replan(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """After a resume, the learning rate of the next epoch as this job's schedule plans it.

    A checkpoint carries the learning rate its run's plan gave the next epoch; a run extended with
    ``--set training.epochs=N`` plans over the new total instead (a LambdaLR's factor is not saved:
    the restored scheduler has this job's). Only cosine depends on the total: the added epochs take the
    last part of a cosine over N epochs, which never reaches ``min_lr`` before the last epoch ends
    (a finished 30-epoch run at lr 0 extended to 33 trains epochs 31-33 at 2.0 %, 0.9 %, 0.2 % of ``lr``).
    Step, exponential and inverse-time decay go on as they would have."""
    epoch = scheduler.last_epoch
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def extension_note(sched: ScheduleSpec, base_lr: float, done: int, planned: int, epochs: int) -> str | None:
    """One line when a run that planned ``planned`` epochs (``done`` of them trained) resumes with ``epochs``."""
    if planned == epochs or sched.name != "cosine" or done >= epochs:
        return None
    lr = [base_lr * lr_factor(sched, e, epochs, base_lr) for e in (done, epochs - 1)]
    return (f"training.epochs {planned} -> {epochs}: cosine decay re-planned over {epochs} epochs; "
            f"epoch {done + 1} trains at lr {lr[0]:.1e}, epoch {epochs} at {lr[1]:.1e}")


def optimizer_specs(names: tuple[str, ...], single: OptimizerSpec, named: dict[str, OptimizerSpec] | None,
                    model: str) -> dict[str, OptimizerSpec]:
    """The spec of each optimizer a task declares: ``optimizer:`` for a task with one, ``optimizers:`` by name otherwise."""
    from dl_ray.errors import SpecError

    if names == ("main",):
        if named is not None:
            raise SpecError(f"optimizers: {model} has one optimizer: configure it under optimizer: (optimizers: is for "
                            "models with several, e.g. a GAN's generator and discriminator)")
        return {"main": single}
    if named is None or set(named) != set(names):
        got = ", ".join(named) if named else "none"
        raise SpecError(f"optimizers: {model} trains {len(names)} networks with one optimizer each; give exactly "
                        f"{', '.join(names)} (got {got}), e.g. optimizers: {{{names[0]}: {{name: adam, lr: 0.0002}}, ...}}")
    return {name: named[name] for name in names}


def make_optimizers(task, specs: dict[str, OptimizerSpec], l2: float) -> dict[str, torch.optim.Optimizer]:
    if getattr(task, "sparse_gradients", False):
        return {name: sparse_optimizer(task.parameters_for(name), opt, l2) for name, opt in specs.items()}
    return {name: make_optimizer(task.parameters_for(name), opt, l2) for name, opt in specs.items()}


def sparse_optimizer(params: Iterable[nn.Parameter], opt: OptimizerSpec, l2: float) -> torch.optim.Optimizer:
    """For tasks whose gradients are sparse rows (word vectors): plain SGD, or Adam's lazy form (SparseAdam), which
    update only the batch's rows; momentum, RMSProp and L2 would touch every row at every step."""
    from dl_ray.errors import SpecError

    if opt.name == "rmsprop" or opt.momentum or l2:
        raise SpecError("optimizer: this model's gradients are sparse rows; use {name: sgd} (momentum 0) or "
                        "{name: adam}, without regularization.l2")
    if opt.name == "adam":
        return torch.optim.SparseAdam(list(params), lr=opt.lr, betas=opt.betas)
    return torch.optim.SGD(params, lr=opt.lr)
