"""Live progress from rank 0 to the terminal: a queue of small events, drawn with rich.

In local mode the queue is a plain ``queue.Queue``; with Ray workers it is a
``ray.util.queue.Queue`` actor. Rank 0 sends at most ~5 events a second.
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from dl_ray.fmt import num, pct


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


WIDTH = 80
"""Epoch lines fit an 80-column terminal: metrics that do not fit are left out of the line (never cut)."""
SHORT = {"accuracy": "acc", "exact_match": "exact"}


class EpochLines:
    """One header, then one fixed-width line per epoch, right-aligned so no column moves when a value widens::

                     train loss  train acc  val loss  val acc       lr     time
        epoch   1/30     1.3548     52.3 %    0.4925   84.6 %  2.0e-03    4.6 s

    The columns are chosen from the first epoch's metrics: loss first, then accuracy, then the rest, a train and a
    validation metric at a time while the line fits ``width``; the learning rate(s) and the epoch time always show.
    (All metrics of every epoch are in metrics.csv.)
    """

    def __init__(self, first: dict[str, Any], epochs: int, width: int = WIDTH):
        self.epochs = epochs
        lead = [(k, k if k == "lr" else k.split("/", 1)[1], 7) for k in first if k == "lr" or k.startswith("lr/")]
        tail = lead + [("time/epoch_s", "time", 7)]
        by_split = [[(k, f"{split} {_short(k)}", max(len(split) + 1 + len(_short(k)), 7)) for k in _ordered(first, split)]
                    for split in ("train", "val")]
        self.columns = [c for cols in by_split for c in cols[:1]]
        budget = width - len(self._epoch(epochs)) - sum(w + 2 for _, _, w in self.columns + tail)
        for pair in itertools.zip_longest(*(cols[1:] for cols in by_split)):  # train and val side by side
            pair = [c for c in pair if c is not None]
            cost = sum(w + 2 for _, _, w in pair)
            if cost > budget:
                break
            self.columns += pair
            budget -= cost
        order = {k: i for i, k in enumerate(k for cols in by_split for k, _, _ in cols)}
        self.columns = sorted(self.columns, key=lambda c: order[c[0]]) + tail

    def header(self) -> str:
        return " " * len(self._epoch(self.epochs)) + "".join(f"  {h:>{w}}" for _, h, w in self.columns)

    def line(self, m: dict[str, Any]) -> str:
        return self._epoch(m["epoch"]) + "".join(f"  {_cell(k, m.get(k)):>{w}}" for k, _, w in self.columns)

    def _epoch(self, epoch: int) -> str:
        return f"epoch {epoch:>3}/{self.epochs}"


def _ordered(m: dict[str, Any], split: str) -> list[str]:
    names = [k.split("/", 1)[1] for k in m if k.startswith(f"{split}/")]
    return [f"{split}/{n}" for n in sorted(names, key=lambda n: (n != "loss", n != "accuracy", n))]


def _short(key: str) -> str:
    name = key.split("/", 1)[1]
    return SHORT.get(name, name.replace("accuracy", "acc"))


def _cell(key: str, value: Any) -> str:
    """A value in at most 7 characters: percentages for accuracies, 4 decimals (fewer above 10), else scientific."""
    if value is None or value == "":
        return "-"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if key == "time/epoch_s":
        return f"{value:.1f} s"
    if key == "lr" or key.startswith("lr/"):
        return f"{value:.1e}"
    if key.endswith("accuracy"):
        return pct(value)
    if value == 0 or 1e-3 <= abs(value) < 1e3:
        return f"{value:.{4 if abs(value) < 10 else 5 - len(str(int(abs(value))))}f}"  # 1.2345, 12.345, 123.45
    return num(value)


def follow(events: Any, done: threading.Event, console: Console) -> None:
    """A transient bar over the batches of the current epoch, and one line per finished epoch."""
    bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                   disable=not console.is_terminal)  # logs and pipes get the epoch lines only
    task, current, epochs, lines = None, None, 0, None
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
                if lines is None:
                    lines = EpochLines(event["metrics"], epochs)
                    bar.console.print(lines.header(), highlight=False)
                bar.console.print(lines.line(event["metrics"]), highlight=False)
