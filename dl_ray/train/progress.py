"""Live progress from rank 0 to the terminal: a queue of small events, drawn with rich.

In local mode the queue is a plain ``queue.Queue``; with Ray workers it is a
``ray.util.queue.Queue`` actor. Rank 0 sends at most ~5 events a second.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressSender:
    def __init__(self, sink: Any, every_s: float = 0.2):
        self.sink, self.every_s, self._last = sink, every_s, 0.0

    def batch(self, epoch: int, epochs: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if self.sink is None or (now - self._last < self.every_s and step < steps):
            return
        self._last = now
        self._send({"kind": "batch", "epoch": epoch, "epochs": epochs, "step": step, "steps": steps})

    def epoch(self, metrics: dict[str, Any]) -> None:
        self._send({"kind": "epoch", "metrics": metrics})

    def _send(self, event: dict[str, Any]) -> None:
        if self.sink is not None:
            try:
                self.sink.put_nowait(event)
            except Exception:  # a full or dead queue must never stop training
                pass


def epoch_line(m: dict[str, Any], epochs: int, per_split: int = 4) -> str:
    """``epoch 3/30 │ train loss 0.1 acc 97.0% │ val loss ... │ lr 1.0e-03 │ 0.8s``: a task's first metrics per split."""
    parts = [f"epoch {m['epoch']:>3}/{epochs}"]
    for split in ("train", "val"):
        names = sorted((k.split("/", 1)[1] for k in m if k.startswith(f"{split}/")), key=lambda n: (n != "loss", n != "accuracy", n))
        if names:
            parts.append(" ".join([split, *(_value(n, m[f"{split}/{n}"]) for n in names[:per_split])]))
    lrs = " ".join(f"{k} {v:.1e}" for k, v in m.items() if k == "lr" or k.startswith("lr/"))
    parts.append(f"{lrs} │ {m['time/epoch_s']:.1f}s")
    return " │ ".join(parts)


def _value(name: str, value: float) -> str:
    if name.endswith("accuracy"):
        return f"{'acc' if name == 'accuracy' else name} {100 * value:.1f}%"
    return f"{name} {value:.4f}"


def follow(events: Any, done: threading.Event, console: Console) -> None:
    """A transient bar over the batches of the current epoch, and one line per finished epoch."""
    bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                   disable=not console.is_terminal)  # logs and pipes get the epoch lines only
    task, current, epochs = None, None, 0
    with bar:
        while True:
            try:
                event = events.get(timeout=0.1)
            except Exception:  # queue.Empty or ray.util.queue.Empty
                if done.is_set():
                    break
                continue
            if event["kind"] == "batch":
                epochs = event["epochs"]
                label = f"{event['epoch']}/{epochs}"
                if label != current:
                    if task is not None:
                        bar.remove_task(task)
                    task, current = bar.add_task("", total=event["steps"], epoch=label), label
                bar.update(task, completed=event["step"])
            else:
                bar.console.print(epoch_line(event["metrics"], epochs), highlight=False)
