"""Our own metric history (``metrics.csv``, ``summary.json``) and W&B, written by rank 0 only.

Ray keeps only metrics that come with a checkpoint, so the full per-epoch
history is ours. W&B is optional: a missing package, key or network never fails a run.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from dl_ray.spec import JobSpec

log = logging.getLogger("dl_ray")


class History:
    """Rows of per-epoch metrics, rewritten whole to ``metrics.csv`` after each change."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def load_until(self, epoch: int) -> None:
        """Keep the rows of epochs ``<= epoch`` (a resumed run redoes the later ones)."""
        if self.path.is_file():
            with self.path.open() as f:
                rows = [{k: _number(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
            self.rows = [r for r in rows if r.get("epoch", 0) <= epoch]

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.write()

    def update_last(self, values: dict[str, Any]) -> None:
        self.rows[-1].update(values)
        self.write()

    def write(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)


def _number(text: str) -> float | int | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


class WandbRun:
    """Thin wrapper over ``wandb.init/log/finish``; silently off when W&B can't run."""

    def __init__(self, spec: JobSpec, run_dir: Path):
        self.run = None
        if spec.tracking.wandb == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_CONSOLE", "off")
        try:
            import wandb

            id_file = run_dir / "wandb_id.txt"
            run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
            id_file.write_text(run_id)
            self.run = wandb.init(
                project=spec.tracking.project, group=spec.tracking.group,
                name=spec.tracking.run_name or spec.run_name, id=run_id, resume="allow",
                mode=spec.tracking.wandb, dir=str(run_dir), config=spec.to_dict(),
                settings=wandb.Settings(silent=True, console="off"),
            )
        except Exception as e:  # W&B must never fail a training run
            log.warning("W&B disabled for this run: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_images(self, paths: list[Path], step: int) -> None:
        """PNG artifacts of a task (samples, reconstructions) as W&B images, keyed by file name."""
        if self.run is not None and paths:
            import wandb

            self.run.log({f"images/{Path(p).stem}": wandb.Image(str(p)) for p in paths}, step=step)

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        if self.run is not None:
            if summary:
                self.run.summary.update(summary)
            self.run.finish()
            import wandb

            # Shut this process's wandb-core down: it also clears WANDB_SERVICE, which processes started
            # later from here (Ray workers, Tune trials) would otherwise inherit and try to join.
            wandb.teardown()
