"""Training a word-vector task without Ray, as the C tool and gensim do: the tests and the gensim benchmark.

Each epoch's examples come from the task's data (``data.loader``), each batch goes through the same
``training_step`` the generic loop calls, and the learning rate falls linearly step by step. With several
workers, forked processes update the task's tables in shared memory without locks (Hogwild), the scheme of the
C tool's and gensim's worker threads, so the two run on equal terms in benchmarks/word2vec_vs_gensim.py.
"""
from __future__ import annotations

import torch
# torch.optim imports torch._dynamo when the first optimizer is built (~1.5 s): import it once here, not inside
# every forked worker's timed run
import torch._dynamo  # noqa: F401

from dl_ray.models.task import Task


class LinearDecaySteps:
    """The ``StepContext`` of :func:`fit`: plain SGD whose learning rate falls linearly, step by step, from ``lr``
    to ``lr * floor`` over the whole run (the C tool's and gensim's schedule)."""

    def __init__(self, task: Task, lr: float, total_steps: int, floor: float = 1e-4, optimizer: str = "sgd"):
        optimizers = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
                      "adam": lambda params, lr: torch.optim.SparseAdam(list(params), lr=lr)}
        self.optimizer = optimizers[optimizer](task.parameters(), lr=lr)
        self.lr, self.total, self.floor, self.steps = lr, max(total_steps, 1), floor, 0
        self.nets, self.device, self.epoch = task.networks(), torch.device("cpu"), 0

    def backward(self, loss: torch.Tensor, optimizer: str = "main") -> None:
        self.optimizer.param_groups[0]["lr"] = self.lr * max(1.0 - self.steps / self.total, self.floor)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1


def fit(task: Task, data, epochs: int, batch_size: int, lr: float, seed: int = 0, workers: int = 1,
        optimizer: str = "sgd") -> dict[str, float]:
    """Train an embedding task without Ray (tests, the gensim benchmark): each epoch's examples from
    ``data.loader``, ``task.training_step`` per batch, the linear decay of :class:`LinearDecaySteps`.

    ``optimizer``: sgd (word2vec), adagrad (GloVe's own) or adam (SparseAdam), all on the batch's rows only.
    ``workers`` > 1: that many forked processes, worker r taking shard ``r::workers`` of each epoch, all updating
    the task's tables in shared memory without locks (Hogwild, as the C tool's and gensim's worker threads do;
    threads cannot share one ``.grad`` per table). Returns the seconds spent and the last epoch's mean loss."""
    import multiprocessing as mp
    import time

    started = time.perf_counter()
    task.train()
    if workers == 1:
        loss = _fit_shard(task, data, epochs, batch_size, lr, seed, 0, 1, optimizer)
        return {"seconds": time.perf_counter() - started, "loss": loss[0] / max(loss[1], 1.0)}
    task.share_memory()
    context = mp.get_context("fork")  # the children inherit the corpus and the shared tables
    results = context.SimpleQueue()
    children = [context.Process(target=_fit_child, args=(results, task, data, epochs, batch_size, lr, seed, r, workers, optimizer))
                for r in range(workers)]
    for child in children:
        child.start()
    totals = [results.get() for _ in children]
    for child in children:
        child.join()
    if any(child.exitcode for child in children) or any(isinstance(t, str) for t in totals):
        raise RuntimeError(f"a word2vec worker failed: {[t for t in totals if isinstance(t, str)]}")
    total, count = map(sum, zip(*totals))
    return {"seconds": time.perf_counter() - started, "loss": total / max(count, 1.0)}


def _fit_shard(task: Task, data, epochs: int, batch_size: int, lr: float, seed: int, rank: int, world: int,
               optimizer: str = "sgd"):
    """(summed loss, examples) of the last epoch of one worker's shard."""
    first = data.loader("train", batch_size, epoch=0, rank=rank, world=world, seed=seed)
    steps, loss = LinearDecaySteps(task, lr, epochs * len(first), optimizer=optimizer), (0.0, 0.0)
    for epoch in range(epochs):
        batches = first if epoch == 0 else data.loader("train", batch_size, epoch=epoch, rank=rank, world=world, seed=seed)
        steps.epoch, loss = epoch, (0.0, 0.0)
        for batch in batches:
            value, n = task.training_step(batch, steps)["loss"]
            loss = (loss[0] + float(value), loss[1] + n)
    return loss


def _fit_child(results, task: Task, data, epochs: int, batch_size: int, lr: float, seed: int, rank: int, world: int,
               optimizer: str) -> None:
    torch.set_num_threads(1)
    # a forked child starts from its parent's random state: without a seed of its own, every worker would draw the
    # very same negative samples step for step (gensim's worker threads each have their own random state)
    torch.manual_seed(torch.initial_seed() + rank)
    try:
        results.put(_fit_shard(task, data, epochs, batch_size, lr, seed, rank, world, optimizer))
    except Exception as e:  # noqa: BLE001  the parent raises it: a child's traceback would not reach the user
        results.put(f"{type(e).__name__}: {e}")
